"""Which queues have no worker, as far as the front can tell: their requests get 503 at once.

A queue is taken for unserved when a job of it sat on the queue, untaken, for its route's
whole timeout (the forwarder takes such a job back with LREM, and answers 503: nobody has
started it, the client may retry), or when its last registered reliable worker is gone (the
redeliverer's check of the registry). While a queue is unserved, one request at a time is
still pushed, as a probe, and waits as usual; the others get 503 with Retry-After at once.
The first answer to any job of the queue, or a live reliable worker registered on it, makes it
served again. A 2012 worker, which does not register, needs nothing more: it takes the probe,
and its answer ends the 503s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from tempest.stats import Stats

log = logging.getLogger(__name__)

PUSH, PROBE, REFUSE = "push", "probe", "refuse"  # what admit() says of a request


class Serving:
    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self._since: dict[str, float] = {}  # unserved queue -> since when (monotonic)
        self._probing: set[str] = set()  # unserved queues with a probe pending
        self.registered: dict[str, int] = {}  # queue -> live reliable workers, at the last check

    def unserved(self, queue: str) -> bool:
        return queue in self._since

    def unserved_queues(self) -> list[str]:
        return sorted(self._since)

    def admit(self, queue: str) -> str:
        """PUSH (served, or not known to be unserved), PROBE (unserved, and this request is
        its probe: call ``probed`` when it is settled) or REFUSE (503 now)."""
        if not self._since or queue not in self._since:
            return PUSH
        if queue in self._probing:
            self.stats.unserved += 1
            return REFUSE
        self._probing.add(queue)
        return PROBE

    def probed(self, queue: str) -> None:
        self._probing.discard(queue)

    def not_taken(self, queue: str, timeout: float) -> None:
        """A job of ``queue`` was on it, untaken, for ``timeout`` seconds."""
        self.stats.not_taken += 1
        if queue not in self._since and not self.registered.get(queue):
            self._since[queue] = time.monotonic()
            log.warning("queue %s: no worker took a job in %ss: its requests get 503 at once, but for one probe "
                        "at a time, until a worker answers one", queue, timeout)

    def served(self, queue: str) -> None:
        """A job of ``queue`` was answered."""
        if self._since and self._since.pop(queue, None) is not None:
            log.warning("queue %s is served again", queue)

    def workers(self, live: Mapping[str, int]) -> None:
        """The live reliable workers per queue, from the registry (every redeliver_interval)."""
        for queue, count in live.items():
            if count:
                self.served(queue)
        for queue, before in self.registered.items():
            if before and not live.get(queue) and queue not in self._since:
                self._since[queue] = time.monotonic()
                log.warning("queue %s: its last registered worker is gone: its requests get 503 at once, but for "
                            "one probe at a time, until a worker answers one", queue)
        self.registered = dict(live)

    def forget(self, queues: set[str]) -> None:
        """After a reload: queues no route uses any more are forgotten."""
        for queue in [q for q in self._since if q not in queues]:
            del self._since[queue]
