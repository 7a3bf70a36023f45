"""Pushing jobs to Redis in batches: every job submitted during one turn of the event loop
goes out in one pipeline, one RPUSH (or bounded push) per queue.

Pushes are never retried: a retried RPUSH can enqueue a job twice. A push that fails settles
its requests with UNAVAILABLE (503), and the next batch reconnects.
"""

import logging

import gevent
import gevent.event
import redis

from tempest import pending as outcomes

log = logging.getLogger(__name__)

# Push as many jobs as the queue has room for; return how many were pushed.
BOUNDED_PUSH = """
local room = tonumber(ARGV[1]) - redis.call('LLEN', KEYS[1])
local n = math.min(room, #ARGV - 1)
if n <= 0 then return 0 end
return redis.call('RPUSH', KEYS[1], unpack(ARGV, 2, n + 1)) and n
"""
MAX_BATCH = 1000  # jobs per pipeline; bounds the size of one write to Redis


class Pusher:
    def __init__(self, client, registry, stats, max_queue_length=0):
        self.client = client
        self._registry = registry
        self._stats = stats
        self.max_queue_length = max_queue_length
        self._bounded = client.register_script(BOUNDED_PUSH)
        self._batch = []
        self._wake = gevent.event.Event()
        self._failing = False

    def submit(self, queue, job, pending):
        """Queue ``job`` for the next push; ``pending`` (or None: nobody waits) is settled
        with UNAVAILABLE or QUEUE_FULL if the push fails."""
        self._batch.append((queue, job, pending))
        if not self._wake.is_set():
            self._wake.set()

    def run(self):
        while True:
            self._wake.wait()
            self._wake.clear()
            while self._batch:
                batch, self._batch = self._batch[:MAX_BATCH], self._batch[MAX_BATCH:]
                self._push(batch)

    def _push(self, batch):
        by_queue = {}
        for queue, job, pending in batch:
            if pending is not None and (pending.outcome is not None or not self._registry.waiting(pending)):
                continue  # its client left or it timed out before the push: skip it
            jobs, waiting = by_queue.setdefault(queue, ([], []))
            jobs.append(job)
            waiting.append(pending)
        if not by_queue:
            return
        pipe = self.client.pipeline(transaction=False)
        for queue, (jobs, _) in by_queue.items():
            if self.max_queue_length:
                self._bounded(keys=[queue], args=[self.max_queue_length, *jobs], client=pipe)
            else:
                pipe.rpush(queue, *jobs)
        try:
            results = pipe.execute(raise_on_error=False)
        except redis.RedisError as exc:
            results = [exc] * len(by_queue)
        for (queue, (jobs, waiting)), result in zip(by_queue.items(), results):
            self._settle(queue, waiting, result)

    def _settle(self, queue, waiting, result):
        if isinstance(result, Exception):
            self._stats.push_errors += len(waiting)
            if not self._failing:
                log.warning("cannot push to queue %s: %s", queue, result)
            self._failing = True
            for pending in waiting:
                if pending is not None:
                    self._registry.settle(pending, outcomes.UNAVAILABLE)
            return
        if self._failing:
            log.warning("pushing to Redis again")
            self._failing = False
        pushed = result if self.max_queue_length else len(waiting)
        self._stats.jobs_pushed += pushed
        if pushed < len(waiting):
            log.warning("queue %s is full (%d jobs): %d requests refused",
                        queue, self.max_queue_length, len(waiting) - pushed)
        for pending in waiting[pushed:]:
            self._stats.queue_full += 1
            if pending is not None:
                self._registry.settle(pending, outcomes.QUEUE_FULL)
