"""Requests waiting for their answer: the registry by job id and the timeout sweeper.

A request registers a ``Pending``; whoever settles it (the answer endpoint, the pusher on a
Redis error, the sweeper on timeout) stores the outcome and calls its ``notify`` callback from
the hub. One sweeper greenlet handles every timeout, instead of a timer per request: it scans
the jobs in flight a few times a second, which costs little since only unanswered jobs are kept
(settled ones are forgotten at once, so memory follows the number in flight).

A streamed answer (``stream`` head, ``chunk``s, ``end``) settles its request with a
``StreamHead`` and keeps the job registered until its end: the chunks queue on the ``Pending``
and each one pushes the deadline back by the route's timeout (an idle timeout between chunks).
"""

import collections
import logging
import time

import gevent

log = logging.getLogger(__name__)

# outcomes besides an answer's payload (bytes)
TIMEOUT = "timeout"
QUEUE_FULL = "queue_full"
UNAVAILABLE = "unavailable"
SWEEP_INTERVAL = 0.1  # seconds; a timeout fires at most this late
# the end of a stream's chunks: how it ended
END = "end"
OVERFLOW = "overflow"  # the client reads slower than the worker writes: more than the limit queued
ABORTED = "aborted"  # the worker failed in the middle


class StreamHead(bytes):
    """The outcome of a streamed answer: its head, the JSON ``[status, headers]``."""


class Pending:
    """One job waiting for its answer."""

    __slots__ = ("job_id", "action", "deadline", "timeout", "outcome", "notify", "chunks", "buffered")

    def __init__(self, job_id, action, timeout, deadline, notify):
        self.job_id = job_id
        self.action = action
        self.timeout = timeout
        self.deadline = deadline
        self.outcome = None
        self.notify = notify
        self.chunks = None  # a stream's body: bytes, then END, TIMEOUT, OVERFLOW or ABORTED
        self.buffered = 0  # bytes in chunks

    def take(self):
        """The next item of a stream (bytes or how it ended), or None when none is queued."""
        if not self.chunks:
            return None
        item = self.chunks.popleft()
        if isinstance(item, bytes):
            self.buffered -= len(item)
        return item


class Registry:
    def __init__(self, stats, clock=time.monotonic):
        self._jobs = {}
        self._stats = stats
        self._clock = clock
        self._loop = gevent.get_hub().loop

    def __len__(self):
        return len(self._jobs)

    def add(self, job_id, action, timeout, notify):
        pending = Pending(job_id, action, timeout, self._clock() + timeout, notify)
        self._jobs[job_id] = pending
        return pending

    def waiting(self, pending):
        return self._jobs.get(pending.job_id) is pending

    def settle(self, pending, outcome):
        """Give ``pending`` its outcome and wake its request; False if already settled."""
        if self._jobs.pop(pending.job_id, None) is None:
            return False
        pending.outcome = outcome
        self._loop.run_callback(pending.notify)
        return True

    def answer(self, job_id, action, payload):
        """An answer arrived; False when nobody waits for it (it is dropped and counted)."""
        pending = self._jobs.get(job_id)
        if pending is None or pending.action != action:
            self._stats.answers_dropped += 1
            log.debug("dropped answer %s %s: no request waits for it", action, job_id)
            return False
        self._stats.answers += 1
        return self.settle(pending, payload)

    def start_stream(self, job_id, action, head):
        """A streamed answer begins; False when nobody waits for it (dropped and counted)."""
        pending = self._jobs.get(job_id)
        if pending is None or pending.action != action or pending.chunks is not None:
            self._stats.answers_dropped += 1
            log.debug("dropped stream head %s %s: no request waits for it", action, job_id)
            return False
        self._stats.answers += 1
        pending.chunks = collections.deque()
        pending.outcome = StreamHead(head)
        pending.deadline = self._clock() + pending.timeout
        self._loop.run_callback(pending.notify)
        return True

    def chunk(self, job_id, data, limit):
        """A piece of a stream's body (``data`` None: its end); False when dropped."""
        pending = self._jobs.get(job_id)
        if pending is None or pending.chunks is None:
            self._stats.answers_dropped += 1
            log.debug("dropped stream chunk for %s: no stream waits for it", job_id)
            return False
        if data is None:
            return self._finish(pending, END)
        if not data:
            return True
        if pending.buffered + len(data) > limit:
            log.warning("stream %s: client too slow, over %d bytes queued: closed", job_id, limit)
            self._stats.slow_clients_dropped += 1
            return self._finish(pending, OVERFLOW)
        pending.chunks.append(data)
        pending.buffered += len(data)
        pending.deadline = self._clock() + pending.timeout
        if len(pending.chunks) == 1:  # the request may sleep: wake it (once per batch of chunks)
            self._loop.run_callback(pending.notify)
        return True

    def abort_stream(self, job_id):
        """The worker gave up on a stream: the client's connection is closed, its body cut."""
        pending = self._jobs.get(job_id)
        if pending is None or pending.chunks is None:
            self._stats.answers_dropped += 1
            return False
        log.info("stream %s aborted by its worker", job_id)
        return self._finish(pending, ABORTED)

    def _finish(self, pending, how):
        self._jobs.pop(pending.job_id, None)
        pending.chunks.append(how)
        self._loop.run_callback(pending.notify)
        return how == END

    def forget(self, pending):
        """Stop waiting for more of ``pending`` (a stream whose body cannot be sent): what
        comes later is dropped."""
        self._jobs.pop(pending.job_id, None)

    def abandon(self, pending):
        """The client left: forget the job, so that a late answer is dropped."""
        if self._jobs.pop(pending.job_id, None) is not None:
            self._stats.clients_gone += 1

    def sweep(self):
        """Settle every pending job whose deadline has passed."""
        now = self._clock()
        expired = [p for p in self._jobs.values() if p.deadline <= now]
        for pending in expired:
            if pending.chunks is not None:  # a stream that stopped coming
                self._stats.timeouts += 1
                self._finish(pending, TIMEOUT)
            elif self.settle(pending, TIMEOUT):
                self._stats.timeouts += 1

    def run_sweeper(self):
        while True:
            gevent.sleep(SWEEP_INTERVAL)
            self.sweep()
