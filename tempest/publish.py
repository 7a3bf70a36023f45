"""Publishing to pub/sub channels, durable or not: the worker library and ``tempest publish``.

A plain channel gets a plain ``PUBLISH`` of the legacy message. A durable channel (one that
matches a pattern of ``[pubsub] durable``, which tempestd stores in Redis under
``tempest:pubsub:durable``) gets, atomically, an ``XADD`` to its stream (trimmed to its
history) and a ``PUBLISH`` of ``["$durable", stream_id, message]``, so that live subscribers
learn the id they can resume from. Plain blocking redis-py: no gevent here.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import simplejson as json

from tempest import events, keys

if TYPE_CHECKING:
    import redis

# XADD and PUBLISH in one step: no subscriber can see a message the stream does not hold
PUBLISH_DURABLE = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], '*', 'm', ARGV[1])
redis.call('PUBLISH', ARGV[3], cjson.encode({'$durable', id, ARGV[1]}))
return id
"""
CACHE_SECONDS = 5.0  # how long a publisher trusts its copy of the durable patterns


Patterns = Sequence[tuple[str, int]]  # (channel pattern, history length) of [pubsub] durable


def durable_history(patterns: Iterable[tuple[str, int]], channel: str) -> int | None:
    """The history length of ``channel`` if it is durable, else None."""
    for pattern, history in patterns:
        if fnmatch.fnmatchcase(channel, pattern):
            return history
    return None


class Publisher:
    """Publishes legacy messages through ``client`` (a redis-py client)."""

    def __init__(self, client: redis.Redis, patterns: Patterns | None = None) -> None:
        self.client = client
        self._patterns = patterns  # None: read them from Redis, cached
        self._cached: tuple[float, Patterns] = (0.0, [])
        self._script = client.register_script(PUBLISH_DURABLE)

    def patterns(self) -> Patterns:
        if self._patterns is not None:
            return self._patterns
        stamp, patterns = self._cached
        if time.monotonic() - stamp > CACHE_SECONDS:
            raw = self.client.get(keys.DURABLE_CONFIG)
            patterns = [tuple(p) for p in json.loads(raw)] if raw else []
            self._cached = (time.monotonic(), patterns)
        return patterns

    def publish(self, channel: str, data: object, event: str | None = None) -> str | int:
        """Publish ``data`` (any JSON value) to ``channel``, as an event named ``event``.

        Returns:
            The stream id (str) on a durable channel, else the number of Redis subscribers.
        """
        message = events.encode_message(data, event)
        history = durable_history(self.patterns(), channel)
        if history is None:
            return self.client.publish(channel, message)
        stream_id = self._script(keys=[keys.stream(channel)], args=[message, history, channel])
        return stream_id.decode() if isinstance(stream_id, bytes) else stream_id

    def end(self, channel: str) -> int:
        """End every stream subscribed to ``channel`` (the ``["$unsubscribe"]`` message)."""
        return self.client.publish(channel, json.dumps(["$unsubscribe"]))
