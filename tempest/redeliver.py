"""Giving back the jobs of reliable workers that died (the design's reliable delivery).

A reliable worker (``Worker(reliable=True)``) moves each job it takes into its own processing
list and removes it once answered, and keeps a heartbeat key alive. tempestd checks the
registered workers every ``[front] redeliver_interval`` seconds: the processing list of a worker
whose heartbeat expired goes back to the head of its queue, each job's delivery counted; a job
given back more than ``max_redeliveries`` times goes to the dead-letter list instead, since it
is what kills its workers. Delivery is at least once: a worker that was only frozen may still
answer a job another worker got too (the second answer is dropped by the front).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import gevent
import hiredis

from tempest import keys, reliable
from tempest.redisconn import RawConnection, ConnectionFailed
from tempest.stats import Stats

log = logging.getLogger(__name__)

class Redeliverer:
    def __init__(self, url: str, stats: Stats, interval: float, max_redeliveries: int,
                 on_workers: Callable[[dict[str, int]], None] | None = None) -> None:
        self.connection = RawConnection(url)
        self.stats = stats
        self.interval = interval
        self.max_redeliveries = max_redeliveries
        self.on_workers = on_workers  # given the live workers per queue after each check

    def run(self) -> None:
        while True:
            gevent.sleep(self.interval)
            try:
                self.check()
            except ConnectionFailed as exc:
                log.debug("cannot check the reliable workers: %s", exc)

    def check(self) -> None:
        """Give back the jobs of every registered worker whose heartbeat expired."""
        [entries] = self.connection.execute([["SMEMBERS", keys.WORKERS]])
        if isinstance(entries, hiredis.ReplyError):
            return
        parsed = [(e, reliable.parse_entry(e.decode("utf-8", "replace"))) for e in entries or ()]
        found = [(e, entry) for e, entry in parsed if entry is not None]
        living = self.connection.execute([["EXISTS", keys.alive(worker_id)] for _, (_, worker_id) in found]) if found else []
        live: dict[str, int] = {}
        for (entry, (queue, worker_id)), alive in zip(found, living):
            if alive == 0:
                self._give_back(entry, queue, worker_id)
            else:
                live[queue] = live.get(queue, 0) + 1
        if self.on_workers is not None:
            self.on_workers(live)

    def _give_back(self, entry: bytes, queue: str, worker_id: str) -> None:
        [reply] = self.connection.execute([reliable.give_back(queue, worker_id, self.max_redeliveries)])
        if isinstance(reply, hiredis.ReplyError):  # the worker stays registered: tried again next time
            log.error("cannot give back the jobs of worker %s on %s: %s", worker_id, queue, reply)
            return
        self.connection.execute([["SREM", keys.WORKERS, entry]])
        moved, dead = reply
        self.stats.jobs_redelivered += moved
        self.stats.jobs_dead += dead
        if moved or dead:
            log.warning("worker %s died holding %d job(s) of queue %s: %d given back, %d to %s",
                        worker_id, moved + dead, queue, moved, dead, keys.dead(queue))
