"""Sessions shared by the front and every worker through Redis.

A session is the Redis hash ``session:<id>`` of the 2012 protocol, each field's value the JSON
list ``[value]``. The front reads and sets the cookie (``[front] session_cookie``): the cookie's
value is the id and an HMAC of it (``Signer``), so that a client can neither choose its id
(session fixation) nor guess another's; a request without a cookie that verifies gets a new
session. The front passes the bare id to the worker in ``env["session"]`` and, after the
answer, refreshes the hash's TTL (an EXPIRE sent with its next batch of jobs: sessions written
by workers that set none, as the 2012 clients, expire too). Workers read and write the hash
(``Session``, the worker library's ``context.session``), each write refreshing its TTL.
After a login a worker should ``regenerate()`` the id (against session fixation): the answer
then carries ``X-Tempest-Session: <new id>``, which the front signs into the new cookie.
A session's grants (``tempest:grants:<id>``, the private channels it may subscribe to: see
tempest.grants) are a set beside the hash: ``grant``/``revoke`` write it, ``regenerate``
renames it with the hash, ``clear`` deletes both.
"""

from __future__ import annotations

import base64
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from tempest import jobs, keys

if TYPE_CHECKING:  # not imported: the configuration, loaded before gevent patches, uses this module
    import redis

DEFAULT_TTL = 14 * 24 * 3600  # seconds: [front] session_ttl's default
REGENERATED_HEADER = "X-Tempest-Session"  # answer header: the session's new id (the front sets the cookie)
MIN_SECRET = 16  # bytes: a shorter session secret is refused
_ID = re.compile(r"[A-Za-z0-9_-]{22}\Z")  # 128 random bits, URL-safe base64
_SIGNED = re.compile(r"([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{22})\Z")  # <id>.<mac>: the cookie's value
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def new_id() -> str:
    return secrets.token_urlsafe(16)


def valid_id(value: object) -> bool:
    return isinstance(value, str) and _ID.match(value) is not None


class Secrets(tuple[bytes, ...]):
    """Session secrets, the first one signing: a tuple whose repr never shows them (it may
    end up in a log line with the configuration that holds it)."""

    def __repr__(self) -> str:
        return f"<{len(self)} session secret{'s' if len(self) != 1 else ''}>"


def to_secrets(text: str) -> Secrets:
    """``[front] session_secret``: secrets separated by commas or spaces. An error never
    quotes them."""
    return _checked(part for part in re.split(r"[,\s]+", text) if part)


def read_secrets(path: str) -> Secrets:
    """``[front] session_secret_file``: one secret per line (blank lines skipped).

    Raises:
        ValueError: the file cannot be read, has none, or one is too short (never quoted).
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(1 << 20)
    except OSError as exc:
        raise ValueError(f"cannot read {path!r}: {exc.strerror}") from None
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{path!r}: not UTF-8 text") from None
    return _checked(line.strip() for line in lines if line.strip())


def _checked(parts: Iterable[str]) -> Secrets:
    found = Secrets(part.encode("utf-8") for part in parts)
    if not found:
        raise ValueError("no secret given")
    for number, secret in enumerate(found, 1):
        if len(secret) < MIN_SECRET:
            raise ValueError(f"secret {number} of {len(found)} is {len(secret)} bytes: "
                             f"at least {MIN_SECRET} are needed (try: openssl rand -base64 32)")
    return found


def mac(keyed: hmac.HMAC, session_id: str) -> str:
    """The mac of a cookie: HMAC-SHA256(secret, id) cut to 128 bits, URL-safe base64 without
    padding (22 characters). ``keyed``: ``hmac.new(secret, digestmod="sha256")``, copied (the
    key's set-up, done once, is half the cost of an HMAC this short)."""
    h = keyed.copy()
    h.update(session_id.encode("ascii"))
    return base64.urlsafe_b64encode(h.digest()[:16])[:22].decode("ascii")


class Signer:
    """Signs session ids into cookie values (``<id>.<mac>``, with the first secret) and
    verifies them (with any secret: the others are the previous ones, kept while cookies
    signed with them are still out there)."""

    def __init__(self, configured: Secrets) -> None:
        if not configured:
            raise ValueError("no session secret")
        self._secrets = configured
        self._keyed = [hmac.new(secret, digestmod="sha256") for secret in configured]

    def __repr__(self) -> str:
        return f"Signer({self._secrets!r})"

    def sign(self, session_id: str) -> str:
        return f"{session_id}.{mac(self._keyed[0], session_id)}"

    def verify(self, value: str) -> str | None:
        """The id of a cookie's value, or None if it is not one this server signed."""
        match = _SIGNED.match(value)
        if match is None:
            return None
        session_id, given = match.group(1), match.group(2).encode("ascii")
        good = False
        for keyed in self._keyed:  # every one, in constant time: which one matched does not show
            good |= hmac.compare_digest(mac(keyed, session_id).encode("ascii"), given)
        return session_id if good else None


def id_from_cookies(cookie_header: str, name: str, signer: Signer) -> tuple[str | None, bool]:
    """(the session id of the first cookie ``name`` that verifies or None, whether a cookie
    ``name`` was there but none verified) in a ``Cookie`` header (several joined with '; ')."""
    refused = False
    for part in cookie_header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            session_id = signer.verify(value.strip().strip('"'))
            if session_id is not None:
                return session_id, False
            refused = True
    return None, refused


def set_cookie(name: str, value: str, ttl: float, secure: bool) -> str:
    """The ``Set-Cookie`` value for a session cookie's value (``Signer.sign``'s)."""
    return (f"{name}={value}; Path=/; Max-Age={int(ttl)}; HttpOnly; SameSite=Lax"
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
        """Forget every field and every grant (logout), in one command; the id stays,
        regenerate() it too. Private streams of the session end within [pubsub] grant_check."""
        self.redis.delete(self.key, keys.grants(self.id))

    def regenerate(self) -> str:
        """Give the session a new id, keeping its fields and grants (call it at login): the old
        id, which the client had before it authenticated, stops working. Both keys are renamed
        in one transaction (MULTI/EXEC); on a Redis Cluster, where RENAME cannot cross slots,
        they are copied, then the old ones deleted (docs/protocol.md, section 7)."""
        old_id, self.id = self.id, new_id()
        from redis.cluster import RedisCluster

        if isinstance(self.redis, RedisCluster):
            self._copy(old_id)
            self.regenerated = True
            return self.id
        pipe = self.redis.pipeline(transaction=True)
        pipe.rename(keys.session(old_id), self.key)
        pipe.rename(keys.grants(old_id), keys.grants(self.id))
        for reply in pipe.execute(raise_on_error=False):
            if isinstance(reply, Exception) and "no such key" not in str(reply).lower():
                raise reply  # "no such key": nothing written yet, nothing to move
        self.regenerated = True
        return self.id

    def _copy(self, old_id: str) -> None:
        """Regenerate on a cluster: the old id's fields and grants written under the new id
        (each key with its TTL, in one transaction of its own slot), then the old keys deleted."""
        fields = self.redis.hgetall(keys.session(old_id))
        patterns = self.redis.smembers(keys.grants(old_id))
        if fields:
            pipe = self.redis.pipeline(transaction=True)
            pipe.hset(self.key, mapping=dict(fields))  # type: ignore[arg-type]
            pipe.expire(self.key, self.ttl)
            pipe.execute()
        if patterns:
            pipe = self.redis.pipeline(transaction=True)
            pipe.sadd(keys.grants(self.id), *patterns)
            pipe.expire(keys.grants(self.id), self.ttl)
            pipe.execute()
        self.redis.delete(keys.session(old_id), keys.grants(old_id))

    # grants: the private channels ([pubsub] private) this session may subscribe to

    def grant(self, *patterns: str) -> None:
        """Let this session subscribe to the private channels matching ``patterns`` (fnmatch:
        ``user.42.*``), at once, for the session's lifetime: SADD and EXPIRE in one transaction.

        A pattern is matched as it is: ``*`` grants every private channel. Build one from
        untrusted text (a user name) with ``glob.escape(text)``, so that a name such as ``*``
        or ``[a-z]`` matches only itself.

        Raises:
            ValueError: an empty pattern, or one with control characters.
        """
        checked = [_pattern(p) for p in patterns]
        if not checked:
            return
        pipe = self.redis.pipeline(transaction=True)
        pipe.sadd(keys.grants(self.id), *checked)
        pipe.expire(keys.grants(self.id), self.ttl)
        pipe.execute()

    def revoke(self, *patterns: str) -> None:
        """Take grants back (SREM): a live stream they allowed ends within [pubsub]
        grant_check. A pattern never granted is ignored; revoke a pattern as it was granted
        (``revoke("user.42.*")`` does not take back part of a ``*``)."""
        if patterns:
            self.redis.srem(keys.grants(self.id), *patterns)

    def grants(self) -> set[str]:
        """The patterns granted to this session (SMEMBERS)."""
        return {_text(p) for p in self.redis.smembers(keys.grants(self.id))}


def _pattern(pattern: object) -> str:
    if not isinstance(pattern, str) or not pattern or _CONTROL.search(pattern):
        raise ValueError(f"not a channel pattern (a non-empty string without control characters): {pattern!r}")
    return pattern


def short(session_id: str | None) -> str:
    """A session id as a log line shows it: its first 6 characters (of 22), never the whole."""
    return "none" if session_id is None else session_id[:6] + "…"


def _value(raw: bytes | str, default: Any) -> Any:
    try:
        value = jobs.loads(raw)
    except ValueError:
        return default
    return value[0] if isinstance(value, list) and value else default


def _text(field: bytes | str) -> str:
    return field.decode("utf-8", "replace") if isinstance(field, bytes) else field
