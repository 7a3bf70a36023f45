"""Requests waiting for their answer: the registry by job id and the timeout sweeper.

A request registers a ``Pending``; whoever settles it (the answer endpoint, the pusher on a
Redis error, the sweeper on timeout) stores the outcome and calls its ``notify`` callback from
the hub. One sweeper greenlet handles every timeout, instead of a timer per request: it scans
the jobs in flight a few times a second, which costs little since only unanswered jobs are kept
(settled ones are forgotten at once, so memory follows the number in flight).
"""

import logging
import time

import gevent

log = logging.getLogger(__name__)

# outcomes besides an answer's payload (bytes)
TIMEOUT = "timeout"
QUEUE_FULL = "queue_full"
UNAVAILABLE = "unavailable"
SWEEP_INTERVAL = 0.1  # seconds; a timeout fires at most this late


class Pending:
    """One job waiting for its answer."""

    __slots__ = ("job_id", "action", "deadline", "outcome", "notify")

    def __init__(self, job_id, action, deadline, notify):
        self.job_id = job_id
        self.action = action
        self.deadline = deadline
        self.outcome = None
        self.notify = notify


class Registry:
    def __init__(self, stats, clock=time.monotonic):
        self._jobs = {}
        self._stats = stats
        self._clock = clock
        self._loop = gevent.get_hub().loop

    def __len__(self):
        return len(self._jobs)

    def add(self, job_id, action, timeout, notify):
        pending = Pending(job_id, action, self._clock() + timeout, notify)
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

    def abandon(self, pending):
        """The client left: forget the job, so that a late answer is dropped."""
        if self._jobs.pop(pending.job_id, None) is not None:
            self._stats.clients_gone += 1

    def sweep(self):
        """Settle every pending job whose deadline has passed."""
        now = self._clock()
        expired = [p for p in self._jobs.values() if p.deadline <= now]
        for pending in expired:
            if self.settle(pending, TIMEOUT):
                self._stats.timeouts += 1

    def run_sweeper(self):
        while True:
            gevent.sleep(SWEEP_INTERVAL)
            self.sweep()
