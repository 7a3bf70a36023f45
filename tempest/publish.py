"""Publishing to pub/sub channels, durable or not: the worker library and ``tempest publish``.

A plain channel gets a plain ``PUBLISH`` of the legacy message. A durable channel (one that
matches a pattern of ``[pubsub] durable``, which tempestd stores in Redis under
``tempest:pubsub:durable``) gets, atomically, an ``XADD`` to its stream (trimmed to its
history) and a ``PUBLISH`` of ``["$durable", stream_id, message]``, so that live subscribers
learn the id they can resume from. Plain blocking redis-py: no gevent here.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import simplejson as json

from tempest import events, keys

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

# XADD and PUBLISH in one step: no subscriber can see a message the stream does not hold
PUBLISH_DURABLE = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], '*', 'm', ARGV[1])
redis.call('PUBLISH', ARGV[3], cjson.encode({'$durable', id, ARGV[1]}))
return id
"""
# the same with sharded pub/sub ([pubsub] sharded): the channel is in the stream's slot
SPUBLISH_DURABLE = PUBLISH_DURABLE.replace("'PUBLISH'", "'SPUBLISH'")
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

    def __init__(self, client: redis.Redis, patterns: Patterns | None = None, sharded: bool | None = None) -> None:
        self.client = client
        self._patterns = patterns  # None: read them from Redis, cached
        self._sharded = sharded  # None: read it from Redis, cached
        self._warned = False
        self._cached: tuple[float, Patterns, bool] = (0.0, [], False)
        self._script = client.register_script(PUBLISH_DURABLE)
        self._sharded_script = client.register_script(SPUBLISH_DURABLE)

    def patterns(self) -> Patterns:
        if self._patterns is not None:
            return self._patterns
        return self._config()[0]

    def sharded(self) -> bool:
        """Whether tempestd relays sharded pub/sub ([pubsub] sharded): then SPUBLISH."""
        return self._config()[1]

    def _config(self) -> tuple[Patterns, bool]:
        """What tempestd stored for publishers (the durable patterns, sharded or not), cached."""
        if self._patterns is not None and self._sharded is not None:
            return self._patterns, self._sharded
        stamp, patterns, sharded = self._cached
        if time.monotonic() - stamp > CACHE_SECONDS:
            if self._patterns is None:
                raw = self.client.get(keys.DURABLE_CONFIG)
                patterns = [tuple(p) for p in json.loads(raw)] if raw else []
            if self._sharded is None:
                sharded = self._sharded_flag()
            self._cached = (time.monotonic(), patterns, sharded)
        return (self._patterns if self._patterns is not None else patterns,
                self._sharded if self._sharded is not None else sharded)

    def publish(self, channel: str, data: object, event: str | None = None) -> str | int:
        """Publish ``data`` (any JSON value) to ``channel``, as an event named ``event``.

        Returns:
            The stream id (str) on a durable channel, else the number of Redis subscribers.
        """
        message = events.encode_message(data, event)
        patterns, sharded = self._config()
        history = durable_history(patterns, channel)
        if history is None:
            return self._plain(channel, message, sharded)
        script = self._sharded_script if sharded else self._script
        stream_id = script(keys=[keys.stream(channel)], args=[message, history, channel])
        return stream_id.decode() if isinstance(stream_id, bytes) else stream_id

    def end(self, channel: str) -> int:
        """End every stream subscribed to ``channel`` (the ``["$unsubscribe"]`` message)."""
        return self._plain(channel, json.dumps(["$unsubscribe"]), self._config()[1])

    def _sharded_flag(self) -> bool:
        """tempestd's word on sharded pub/sub; not sharded when an ACL forbids the key (an ACL
        written before it existed: docs/security.md), said once."""
        import redis

        try:
            return self.client.get(keys.SHARDED_CONFIG) in (b"1", "1")
        except redis.ResponseError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot read %s (%s): publishing with PUBLISH, as without [pubsub] sharded",
                            keys.SHARDED_CONFIG, exc)
            return False

    def _plain(self, channel: str, message: str | bytes, sharded: bool) -> int:
        if sharded:
            return int(self.client.execute_command("SPUBLISH", channel, message))
        return self.client.publish(channel, message)
