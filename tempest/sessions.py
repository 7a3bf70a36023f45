"""Sessions shared by the front and every worker through Redis.

A session is the Redis hash ``session:<id>`` of the 2012 protocol, each field's value the JSON
list ``[value]``. The front only reads and sets the cookie (``[front] session_cookie``): it
gives a request without a valid session id a new one and passes it to the worker in
``env["session"]``; it never touches Redis for it. Workers read and write the hash
(``Session``, the worker library's ``context.session``), each write refreshing its TTL.
After a login a worker should ``regenerate()`` the id (against session fixation): the answer
then carries ``X-Tempest-Session: <new id>``, which the front turns into the new cookie.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any

import redis

from tempest import jobs, keys

DEFAULT_TTL = 14 * 24 * 3600  # seconds: [front] session_ttl's default
REGENERATED_HEADER = "X-Tempest-Session"  # answer header: the session's new id (the front sets the cookie)
_ID = re.compile(r"[A-Za-z0-9_-]{22}\Z")  # 128 random bits, URL-safe base64


def new_id() -> str:
    return secrets.token_urlsafe(16)


def valid_id(value: object) -> bool:
    return isinstance(value, str) and _ID.match(value) is not None


def id_from_cookies(cookie_header: str, name: str) -> str | None:
    """The session id in a ``Cookie`` header (several joined with '; '), or None if it has
    none that is well formed."""
    for part in cookie_header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            value = value.strip().strip('"')
            if _ID.match(value):
                return value
    return None


def set_cookie(name: str, session_id: str, ttl: float, secure: bool) -> str:
    """The ``Set-Cookie`` value for a session id."""
    return (f"{name}={session_id}; Path=/; Max-Age={int(ttl)}; HttpOnly; SameSite=Lax"
            + ("; Secure" if secure else ""))


class Session:
    """A session as a worker sees it: a dict-like view of its Redis hash.

    Values are any JSON value; reads go to Redis every time (another worker may have changed
    the session), each write refreshes the hash's TTL.

    Args:
        client: a redis-py client of the Redis holding the sessions.
        session_id: the id (``env["session"]["id"]``).
        ttl: seconds the session lives after a write (``env["session"]["ttl"]``).
    """

    def __init__(self, client: redis.Redis, session_id: str, ttl: float) -> None:
        self.redis = client
        self.id = session_id
        self.ttl = int(ttl)
        self.regenerated = False

    @property
    def key(self) -> str:
        return keys.session(self.id)

    def get(self, field: str, default: Any = None) -> Any:
        raw = self.redis.hget(self.key, field)
        return default if raw is None else _value(raw, default)

    def __getitem__(self, field: str) -> Any:
        raw = self.redis.hget(self.key, field)
        if raw is None:
            raise KeyError(field)
        return _value(raw, None)

    def __setitem__(self, field: str, value: object) -> None:
        self.update({field: value})

    def __delitem__(self, field: str) -> None:
        self.redis.hdel(self.key, field)

    def __contains__(self, field: str) -> bool:
        return bool(self.redis.hexists(self.key, field))

    def update(self, values: Mapping[str, object]) -> None:
        """Write several fields in one round trip."""
        if not values:
            return
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.key, mapping={field: jobs.dumps([value]) for field, value in values.items()})
        pipe.expire(self.key, self.ttl)
        pipe.execute()

    def all(self) -> dict[str, Any]:
        """Every field, as a dict."""
        return {_text(field): _value(raw, None) for field, raw in self.redis.hgetall(self.key).items()}

    def clear(self) -> None:
        """Forget every field (logout); the id stays, regenerate() it too."""
        self.redis.delete(self.key)

    def regenerate(self) -> str:
        """Give the session a new id, keeping its fields (call it at login): the old id, which
        the client had before it authenticated, stops working."""
        old, self.id = self.key, new_id()
        try:
            self.redis.rename(old, self.key)
        except redis.ResponseError:  # no such key: nothing written yet, nothing to move
            pass
        self.regenerated = True
        return self.id


def _value(raw: bytes | str, default: Any) -> Any:
    try:
        value = jobs.loads(raw)
    except ValueError:
        return default
    return value[0] if isinstance(value, list) and value else default


def _text(field: bytes | str) -> str:
    return field.decode("utf-8", "replace") if isinstance(field, bytes) else field
