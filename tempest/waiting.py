"""The registry of requests waiting for their answer, and the timeout sweeper.

A request registers a ``Pending``; whoever settles it (the answer endpoint, the pusher on a
Redis error, the sweeper on timeout) stores an ``Outcome`` and calls its ``notify`` callback
from the hub. One sweeper greenlet handles every timeout, instead of a timer per request: it
scans the jobs in flight a few times a second, which costs little since only unanswered jobs
are kept (settled ones are forgotten at once, so memory follows the number in flight).

A streamed answer (``stream`` head, ``chunk``s, ``end``) settles its request with
``Outcome.STREAM`` and keeps the job registered until its end: the chunks queue on the
``Pending``, ended by a ``StreamEnd``, and each one pushes the deadline back by the route's
timeout (an idle timeout between chunks).
"""

from __future__ import annotations

import collections
import enum
import logging
import time
from typing import TYPE_CHECKING, Callable

import gevent

from tempest.stats import Stats

if TYPE_CHECKING:
    from tempest.config import Config

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 0.1  # seconds; a timeout fires at most this late


class Outcome(enum.Enum):
    """What a waiting request receives."""

    ANSWER = "answer"  # the worker's answer: ``Pending.payload``
    STREAM = "stream"  # a streamed answer's head (``payload``); its chunks follow
    TIMEOUT = "timeout"  # no answer within the route's timeout: 504
    QUEUE_FULL = "queue_full"  # the queue was at max_queue_length: 503
    UNAVAILABLE = "unavailable"  # the job could not be pushed (Redis error): 503


class StreamEnd(enum.Enum):
    """How a stream's chunks ended: the last item of ``Pending.chunks``."""

    END = "end"  # the worker ended the body
    TIMEOUT = "timeout"  # no chunk within the route's timeout
    OVERFLOW = "overflow"  # the client reads slower than the worker writes: over the limit queued
    ABORTED = "aborted"  # the worker failed in the middle


class Ledger:
    """Bytes of streamed answers queued for their clients, in all, and the most allowed."""

    __slots__ = ("value", "limit")

    def __init__(self, limit: int = 0) -> None:
        self.value = 0
        self.limit = limit  # 0: no bound


class Pending:
    """One job waiting for its answer."""

    __slots__ = ("job_id", "action", "deadline", "timeout", "outcome", "payload", "notify", "chunks",
                 "buffered", "ledger")

    def __init__(self, job_id: str, action: str, timeout: float, deadline: float,
                 notify: Callable[[], None], ledger: Ledger) -> None:
        self.job_id = job_id
        self.action = action
        self.timeout = timeout
        self.deadline = deadline
        self.outcome: Outcome | None = None
        self.payload = b""  # the answer's JSON (ANSWER), or the stream's head (STREAM)
        self.notify = notify
        self.chunks: collections.deque[bytes | StreamEnd] | None = None  # a stream's body
        self.buffered = 0  # bytes in chunks
        self.ledger = ledger

    def take(self) -> bytes | StreamEnd | None:
        """The next item of a stream (bytes or how it ended), or None when none is queued."""
        if not self.chunks:
            return None
        item = self.chunks.popleft()
        if not isinstance(item, StreamEnd):
            self.buffered -= len(item)
            self.ledger.value -= len(item)
        return item

    def drop_chunks(self) -> None:
        """Nobody will read the chunks still queued: give their bytes back to the ledger."""
        self.ledger.value -= self.buffered
        self.buffered = 0
        if self.chunks:
            self.chunks.clear()


class Registry:
    def __init__(self, stats: Stats, clock: Callable[[], float] = time.monotonic, max_buffered: int = 0) -> None:
        self._jobs: dict[str, Pending] = {}
        self.ledger = Ledger(max_buffered)
        self._stats = stats
        self._clock = clock
        self._loop = gevent.get_hub().loop

    def __len__(self) -> int:
        return len(self._jobs)

    def add(self, job_id: str, action: str, timeout: float, notify: Callable[[], None]) -> Pending:
        pending = Pending(job_id, action, timeout, self._clock() + timeout, notify, self.ledger)
        self._jobs[job_id] = pending
        return pending

    def waiting(self, pending: Pending) -> bool:
        return self._jobs.get(pending.job_id) is pending

    def settle(self, pending: Pending, outcome: Outcome, payload: bytes = b"") -> bool:
        """Give ``pending`` its outcome and wake its request; False if already settled."""
        if self._jobs.pop(pending.job_id, None) is None:
            return False
        pending.payload = payload
        pending.outcome = outcome
        self._loop.run_callback(pending.notify)
        return True

    def answer(self, job_id: str, action: str, payload: bytes) -> bool:
        """An answer arrived; False when nobody waits for it (it is dropped and counted). Its
        action may differ from the job's: a forwarded job is answered by the last worker's."""
        pending = self._jobs.get(job_id)
        if pending is None:
            self._stats.answers_dropped += 1
            log.debug("dropped answer %s %s: no request waits for it", action, job_id)
            return False
        self._stats.answers += 1
        return self.settle(pending, Outcome.ANSWER, payload)

    def start_stream(self, job_id: str, action: str, head: bytes) -> bool:
        """A streamed answer begins; False when nobody waits for it (dropped and counted)."""
        pending = self._jobs.get(job_id)
        if pending is None or pending.action != action or pending.chunks is not None:
            self._stats.answers_dropped += 1
            log.debug("dropped stream head %s %s: no request waits for it", action, job_id)
            return False
        self._stats.answers += 1
        pending.chunks = collections.deque()
        pending.payload = head
        pending.outcome = Outcome.STREAM
        pending.deadline = self._clock() + pending.timeout
        self._loop.run_callback(pending.notify)
        return True

    def chunk(self, job_id: str, data: bytes | None, limit: int) -> bool:
        """A piece of a stream's body (``data`` None: its end); False when dropped."""
        pending = self._jobs.get(job_id)
        if pending is None or pending.chunks is None:
            self._stats.answers_dropped += 1
            log.debug("dropped stream chunk for %s: no stream waits for it", job_id)
            return False
        if data is None:
            return self._finish(pending, StreamEnd.END)
        if not data:
            return True
        if pending.buffered + len(data) > limit:
            log.warning("stream %s: client too slow, over %d bytes queued: closed", job_id, limit)
            self._stats.slow_clients_dropped += 1
            return self._finish(pending, StreamEnd.OVERFLOW)
        ledger = self.ledger
        if ledger.limit and ledger.value + len(data) > ledger.limit:
            log.warning("stream %s closed: streams hold %d bytes for slow clients, max_stream_buffer is %d",
                        job_id, ledger.value, ledger.limit)
            self._stats.slow_clients_dropped += 1
            return self._finish(pending, StreamEnd.OVERFLOW)
        pending.chunks.append(data)
        pending.buffered += len(data)
        ledger.value += len(data)
        pending.deadline = self._clock() + pending.timeout
        if len(pending.chunks) == 1:  # the request may sleep: wake it (once per batch of chunks)
            self._loop.run_callback(pending.notify)
        return True

    def abort_stream(self, job_id: str) -> bool:
        """The worker gave up on a stream: the client's connection is closed, its body cut."""
        pending = self._jobs.get(job_id)
        if pending is None or pending.chunks is None:
            self._stats.answers_dropped += 1
            return False
        log.info("stream %s aborted by its worker", job_id)
        return self._finish(pending, StreamEnd.ABORTED)

    def _finish(self, pending: Pending, how: StreamEnd) -> bool:
        assert pending.chunks is not None
        self._jobs.pop(pending.job_id, None)
        pending.chunks.append(how)
        self._loop.run_callback(pending.notify)
        return how is StreamEnd.END

    def forget(self, pending: Pending) -> None:
        """Stop waiting for more of ``pending`` (a stream whose body cannot be sent): what
        comes later is dropped, what was queued too."""
        self._jobs.pop(pending.job_id, None)
        pending.drop_chunks()

    def abandon(self, pending: Pending) -> None:
        """The client left: forget the job, so that a late answer is dropped."""
        pending.drop_chunks()
        if self._jobs.pop(pending.job_id, None) is not None:
            self._stats.clients_gone += 1

    def apply(self, config: Config) -> None:
        """Take a (re)loaded configuration: the bound of all streams' queued bytes."""
        self.ledger.limit = config.front.max_stream_buffer

    def sweep(self) -> None:
        """Settle every pending job whose deadline has passed."""
        now = self._clock()
        expired = [p for p in self._jobs.values() if p.deadline <= now]
        for pending in expired:
            if pending.chunks is not None:  # a stream that stopped coming
                self._stats.timeouts += 1
                self._finish(pending, StreamEnd.TIMEOUT)
            elif self.settle(pending, Outcome.TIMEOUT):
                self._stats.timeouts += 1

    def run_sweeper(self) -> None:
        while True:
            gevent.sleep(SWEEP_INTERVAL)
            self.sweep()
