"""Per-queue push counters in Redis, for ``tempest queues``' jobs-in rate.

Every second, what the Pusher pushed to each queue since the last second is added to the hash
``tempest:queue-stats:{<queue>}``, field ``pushed`` (``HINCRBY``; the hash expires a day after
its last push). Every tempestd on the same Redis adds to the same hash, so the count is the
queue's, whichever front pushed. The increments are never retried (a retried HINCRBY could
count twice): when Redis is away, that second's counts are lost, which only makes a rate read
across it too low.
"""

from __future__ import annotations

import logging

import gevent
import hiredis

from tempest import redisconn
from tempest.redisconn import ConnectionFailed

log = logging.getLogger(__name__)

INTERVAL = 1.0  # seconds between two flushes: the resolution of the rate tempest queues reads
TTL = 86400  # seconds a queue's hash outlives its last push
PUSHED = "pushed"  # the hash field: jobs pushed to the queue, all priorities, since the hash was made


def stats_key(queue: str) -> str:
    """The hash of a queue's counters (the queue as a Cluster hash tag, in its own slot)."""
    return "tempest:queue-stats:{" + queue + "}"


class QueueStats:
    """Sends the deltas of ``pushed`` (queue -> jobs pushed, all priorities, cumulative: the
    Pusher's ``pushed``) to Redis every ``interval`` seconds, over a connection of its own."""

    def __init__(self, url: str, pushed: dict[str, int], interval: float = INTERVAL) -> None:
        self.connection = redisconn.connect(url)
        self.pushed = pushed
        self.interval = interval
        self._sent: dict[str, int] = {}  # what was already sent (or lost), per queue

    def run(self) -> None:
        while True:
            gevent.sleep(self.interval)
            self.flush()

    def flush(self) -> None:
        """Send what was pushed since the last flush; never raises for Redis being away."""
        deltas: dict[str, int] = {}
        for queue, count in list(self.pushed.items()):
            if count != self._sent.get(queue, 0):
                deltas[queue] = count - self._sent.get(queue, 0)
                self._sent[queue] = count  # taken as sent before the write: never sent twice
        if not deltas:
            return
        commands: list[list[str | int]] = []
        for queue, delta in deltas.items():
            commands += [["HINCRBY", stats_key(queue), PUSHED, delta], ["EXPIRE", stats_key(queue), TTL]]
        try:
            replies = self.connection.execute(commands)
        except ConnectionFailed as exc:
            log.debug("cannot add the queues' push counts (%d queues): %s", len(deltas), exc)
            return
        for command, reply in zip(commands, replies):
            if isinstance(reply, hiredis.ReplyError):
                log.debug("cannot add the push count of %s: %s", command[1], reply)
