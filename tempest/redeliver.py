"""Giving back the jobs of reliable workers that died (the design's reliable delivery).

A reliable worker (``Worker(reliable=True)``) moves each job it takes into its own processing
list and removes it once answered, and keeps a heartbeat key alive. tempestd checks the
registered workers every ``[front] redeliver_interval`` seconds: the processing list of a worker
whose heartbeat expired goes back to the head of its queue, each job's delivery counted; a job
given back more than ``max_redeliveries`` times goes to the dead-letter list instead, since it
is what kills its workers. Delivery is at least once: a worker that was only frozen may still
answer a job another worker got too (the second answer is dropped by the front).

A job that is not safe to run twice (its env says ``"redeliver": false``: POST and PATCH by
default) is not given back but answered 502 at once, sent to its answer endpoint as a worker
would. When tempestd's supervisor reaps one of its workers, ``reaped(pid)`` gives back the
jobs of that process at once, without waiting for its heartbeat to expire.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

import gevent
import gevent.lock
import hiredis

from tempest import jobs, keys, redisconn, reliable
from tempest.redisurl import answer_endpoint
from tempest.redisconn import RawConnection, ConnectionFailed
from tempest.stats import Stats

log = logging.getLogger(__name__)

REFUSED_ANSWER = jobs.dumps([502, {"Content-Type": "text/plain; charset=utf-8"},
                             "502 Bad Gateway: the worker died during the request, which is not run twice\n"])
Answer = Callable[[str, bytes], object]  # (job id, payload): an answer to a job of this front


class Redeliverer:
    def __init__(self, url: str, stats: Stats, interval: float, max_redeliveries: int,
                 on_workers: Callable[[dict[str, int]], None] | None = None, respond_to: str | None = None,
                 answer: Answer | None = None, answer_password: str | None = None) -> None:
        self.connection = redisconn.connect(url)
        self.stats = stats
        self.interval = interval
        self.max_redeliveries = max_redeliveries
        self.on_workers = on_workers  # given the live workers per queue after each check
        self.respond_to = respond_to  # this front's answer endpoint: its jobs are answered through
        self.answer = answer  # ... this, the others' over the Redis protocol (with this password)
        self.answer_password = answer_password
        self.hostname = socket.gethostname()  # a worker id is <hostname>:<pid>:<random>
        self._lock = gevent.lock.Semaphore()  # one user of the connection at a time

    def run(self) -> None:
        while True:
            gevent.sleep(self.interval)
            try:
                with self._lock:
                    self.check()
            except ConnectionFailed as exc:
                log.debug("cannot check the reliable workers: %s", exc)

    def reaped(self, pid: int) -> None:
        """A worker process this tempestd supervised exited: the jobs its reliable workers held
        go back (or are answered 502) now, whatever their heartbeat says."""
        start = f"{self.hostname}:{pid}:"
        try:
            with self._lock:
                [entries] = self.connection.execute([["SMEMBERS", keys.WORKERS]])
                if isinstance(entries, hiredis.ReplyError):
                    return
                for entry in entries or ():
                    parsed = reliable.parse_entry(entry.decode("utf-8", "replace"))
                    if parsed is not None and parsed[1].startswith(start):
                        self._give_back(entry, *parsed)
                        self.connection.execute([["DEL", keys.alive(parsed[1])]])
        except ConnectionFailed as exc:
            log.debug("cannot give back the jobs of worker process %d now: %s (its heartbeat's expiry will)", pid, exc)

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
        moved, dead, refused = reply
        self.stats.jobs_redelivered += moved
        self.stats.jobs_dead += dead
        self.stats.jobs_refused += len(refused)
        if moved or dead or refused:
            log.warning("worker %s died holding %d job(s) of queue %s: %d given back, %d to %s, %d answered 502 "
                        "(not run twice)", worker_id, moved + dead + len(refused), queue, moved, dead,
                        keys.dead(queue), len(refused))
        if refused:
            gevent.spawn(self._refuse, refused)

    def _refuse(self, refused: list[bytes]) -> None:
        """Answer 502 to each job: through ``answer`` for this front's, else to its endpoint."""
        by_endpoint: dict[str, list[list[bytes | str]]] = {}
        for raw in refused:
            try:
                action, _, respond_to, job_id = jobs.decode_job(raw)
            except ValueError:
                continue
            if not respond_to:
                continue
            if respond_to == self.respond_to and self.answer is not None:
                self.answer(str(job_id), REFUSED_ANSWER)
            else:
                by_endpoint.setdefault(respond_to, []).append([jobs.HTTP_ACTION, str(job_id), REFUSED_ANSWER])
        for respond_to, answers in by_endpoint.items():
            try:
                connection = RawConnection(answer_endpoint(respond_to, self.answer_password), timeout=5, connect_timeout=2)
                try:
                    connection.execute(answers)
                finally:
                    connection.close()
            except (ConnectionFailed, ValueError) as exc:
                log.warning("cannot send the 502 answers of %d job(s) to %s: %s", len(answers), respond_to, exc)
