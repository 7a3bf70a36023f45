"""Spooled request bodies: a large upload written out of memory as it arrives, and read back.

On a route with ``spool = yes`` or ``spool = redis``, the front hands each body above
``spool_over`` to a ``Spools`` store instead of keeping it: ``FileBody`` streams it to a new
file in ``spool_dir`` (``O_EXCL``, mode 0600, an unguessable name), ``RedisBody`` to a Redis
list in chunks of CHUNK bytes under a key with a TTL; both hash it (SHA-256) on the way and
never hold more than one read (or one chunk) of it. The job's env then carries a token,
``body_file`` or ``body_key`` (docs/protocol.md, section 2), instead of ``body``. The front
removes the body when its exchange ends (answered, timed out, client gone, refused), and
``prepare`` removes at start what a crash left in the spool directories.

The reading side, for workers: ``open_body(env, redis)`` gives a binary file for any url
job's body (the spooled file, the Redis chunks read lazily, or the inline body). Nothing here
imports gevent: the worker library uses this module too.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import logging
import os
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, BinaryIO


from tempest import keys
from tempest.errors import TempestError

if TYPE_CHECKING:  # imported where used: the worker library loads this module without redis-py
    import redis

log = logging.getLogger(__name__)

CHUNK = 256 * 1024  # bytes per Redis list element (the last one may be shorter)
TTL_MARGIN = 60  # seconds a Redis body outlives the route's timeout (its job's longest wait)
SUFFIX = ".body"
_TOKEN_BYTES = 16  # 128 random bits in each file name and key
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # the spool has no room: 507
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
Submit = Callable[..., Any]  # submit(function, *args) -> a result whose get() is function(*args)


class _Done:
    """The result of a function called at once (FileBody without a thread pool)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def get(self) -> Any:
        return self.value


def _now(function: Callable[..., Any], *args: Any) -> _Done:
    return _Done(function(*args))


class SpoolError(TempestError):
    """A body could not be stored; ``status`` is what the client gets (507 when the store is
    full, 503 when Redis cannot be reached, 500 for any other failure)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class BodyGone(TempestError, OSError):
    """A spooled body is no longer there (removed after its job was answered or timed out, or
    expired), or shorter than its token says."""


# writing (the front)


class FileBody:
    """A body streamed to a new file of ``directory``, each read written as it comes.

    Args:
        directory, prefix: where the file is made, and the start of its name.
        submit: ``submit(function, *args)`` runs ``function(*args)`` and returns a result whose
            ``get()`` waits for it; the front passes a thread pool's ``spawn`` for the removal
            (unlinking a 1 GiB file takes the kernel some 0.1 s, which its event loop must not
            wait for). None: at once. Writes stay on the caller's thread: handing each to a
            thread halved the throughput (the GIL passed back and forth).
    """

    store = "yes"

    def __init__(self, directory: str, prefix: str, submit: Submit | None = None) -> None:
        self.path = os.path.join(directory, f"{prefix}.{secrets.token_hex(_TOKEN_BYTES)}{SUFFIX}")
        self.size = 0
        self._hash = hashlib.sha256()
        self._submit = submit or _now
        try:
            self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                                           | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise _file_error(exc, "cannot create", self.path) from None

    def write(self, data: bytes) -> None:
        """Append ``data`` (a read from the client: the only part of the body in memory)."""
        assert self._fd is not None, "write after finish"
        self._hash.update(data)
        self.size += len(data)
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            raise _file_error(exc, "cannot write", self.path) from None

    def finish(self) -> None:
        """The whole body is written: the file is closed (its errors are the write's)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError as exc:
                raise _file_error(exc, "cannot write", self.path) from None

    def token(self) -> dict[str, Any]:
        return {"body_file": {"path": self.path, "size": self.size, "sha256": self._hash.hexdigest()}}

    def discard(self) -> None:
        """Remove the file (never raises: a failure is logged; the next start removes it)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass  # it is being removed: what it held does not matter
        self._submit(_unlink, self.path).get()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.error("spool: cannot remove %s: %s", path, exc.strerror)


class RedisBody:
    """A body pushed to a Redis list, CHUNK bytes an element, under a key that expires."""

    store = "redis"

    def __init__(self, client: redis.Redis, ttl: int, final_ttl: int, budget: Budget | None = None) -> None:
        self.client = client
        self.key = keys.body(secrets.token_hex(_TOKEN_BYTES))
        self.size = 0
        self.chunks = 0
        self.budget = budget  # the bytes this tempestd may hold in Redis at once, all bodies together
        self.held = 0  # bytes of this body pushed to Redis
        self._ttl = ttl  # while the body arrives: the upload's time and the job's
        self._final_ttl = final_ttl  # once it is whole: the job's wait
        self._hash = hashlib.sha256()
        self._buffer = bytearray()

    def write(self, data: bytes) -> None:
        self._hash.update(data)
        self.size += len(data)
        self._buffer += data
        while len(self._buffer) >= CHUNK:
            chunk = bytes(self._buffer[:CHUNK])
            del self._buffer[:CHUNK]
            self._push([chunk], self._ttl)

    def finish(self) -> None:
        """Push what is left, and give the key the TTL of the job's wait."""
        rest, self._buffer = bytes(self._buffer), bytearray()
        self._push([rest] if rest else [], self._final_ttl)

    def _push(self, chunks: list[bytes], ttl: int) -> None:
        import redis

        size = sum(len(chunk) for chunk in chunks)
        if self.budget is not None and not self.budget.take(size):
            raise SpoolError(507, f"spool_redis_max ({self.budget.limit} bytes) reached: cannot push a chunk of {self.key}")
        self.held += size
        pipe = self.client.pipeline(transaction=False)
        for chunk in chunks:
            pipe.rpush(self.key, chunk)
        pipe.expire(self.key, ttl)
        try:
            pipe.execute()
        except redis.exceptions.OutOfMemoryError:
            raise SpoolError(507, f"Redis full (maxmemory): cannot push a chunk of {self.key}") from None
        except redis.ResponseError as exc:
            raise SpoolError(500, f"Redis refused a chunk of {self.key}: {exc}") from None
        except (redis.RedisError, OSError) as exc:
            raise SpoolError(503, f"cannot push a chunk of {self.key} to Redis: {exc}") from None
        self.chunks += len(chunks)

    def token(self) -> dict[str, Any]:
        return {"body_key": {"key": self.key, "size": self.size, "sha256": self._hash.hexdigest(),
                             "chunks": self.chunks}}

    def discard(self) -> None:
        """DEL the key (never raises: on failure it expires by its TTL)."""
        import redis

        if self.budget is not None:
            self.budget.give(self.held)
        self.held = 0
        try:
            self.client.delete(self.key)
        except (redis.RedisError, OSError) as exc:
            log.warning("spool: cannot delete %s (it expires by its TTL): %s", self.key, exc)


Body = FileBody | RedisBody


class Budget:
    """Bytes that bodies may hold at once (``[front] spool_redis_max`` for the Redis store):
    a body over it is refused (507) rather than filling Redis' memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used = max(0, self.used - size)


class Spools:
    """Where the front stores spooled bodies: files, or the Redis of ``client``.

    Args:
        name: the [tempest] name, the first part of each file's name (what ``prepare``
            removes at start is this tempestd's only).
        client: a redis-py client that many greenlets may share (``spool = redis``).
        submit: how FileBody removes its files (see FileBody); None: at once.
    """

    def __init__(self, name: str, client: redis.Redis | None, submit: Submit | None = None,
                 redis_max: int | None = None) -> None:
        self.prefix = file_prefix(name)
        self.client = client
        self.submit = submit
        self.redis_budget = Budget(redis_max) if redis_max is not None else None

    def open(self, route: Any, body_timeout: float) -> Body:
        """A new store for a body of ``route`` (spool yes or redis).

        Raises:
            SpoolError: the file cannot be created.
        """
        if route.spool == "redis":
            assert self.client is not None, "spool = redis needs a Redis client"
            final = int(route.timeout) + TTL_MARGIN
            return RedisBody(self.client, final + int(body_timeout), final, self.redis_budget)
        return FileBody(route.spool_dir, self.prefix, self.submit)


def file_prefix(name: str) -> str:
    """The start of the spool files' names: the [tempest] name, made safe for a file name."""
    return _UNSAFE.sub("_", name) or "tempest"


def directories(routes: Iterable[Any]) -> list[str]:
    """The spool directories of the routes that spool to files."""
    return sorted({route.spool_dir for route in routes if route.spool == "yes"})


def prepare(routes: Iterable[Any], name: str, clean: bool = True) -> int:
    """Make each spool directory of ``routes`` (mode 0700) and, with ``clean``, remove the
    bodies a crashed tempestd of this name left there; returns how many were removed.

    Raises:
        OSError: a directory cannot be made or read.
    """
    pattern = re.compile(re.escape(file_prefix(name)) + r"\.[0-9a-f]{%d}%s$" % (2 * _TOKEN_BYTES, re.escape(SUFFIX)))
    removed = 0
    for directory in directories(routes):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if clean:
            removed += _remove_bodies(directory, pattern)
    return removed


def _remove_bodies(directory: str, pattern: re.Pattern[str]) -> int:
    removed = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            if pattern.match(entry.name) and entry.is_file(follow_symlinks=False):
                try:
                    os.unlink(entry.path)
                    removed += 1
                except FileNotFoundError:
                    pass
    if removed:
        log.info("spool: removed %d bodies left in %s by an earlier run", removed, directory)
    return removed


def _file_error(exc: OSError, what: str, path: str) -> SpoolError:
    if exc.errno in _FULL:
        return SpoolError(507, f"spool full: {what} {path}: {exc.strerror}")
    return SpoolError(500, f"spool: {what} {path}: {exc.strerror}")


# reading (the workers)


def stored(env: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The token of a spooled body (``body_file`` or ``body_key``), None for an inline one."""
    token = env.get("body_file") or env.get("body_key")
    return token if isinstance(token, Mapping) else None


def open_body(env: Mapping[str, Any], client: redis.Redis | None = None) -> BinaryIO:
    """The body of a url job as a binary file open for reading.

    Args:
        env: the job's env.
        client: a redis-py client of the Redis holding the queues (for ``body_key``).

    Returns:
        The spooled file opened read-only, a reader of the Redis chunks (fetched one at a
        time, as they are read), or the inline body (``body``, ``body_base64``) in memory.

    Raises:
        BodyGone: the spooled body was removed (its job answered or timed out) or expired.
        ValueError: a ``body_key`` without a Redis client.
    """
    if isinstance(env.get("body_file"), Mapping):
        token = env["body_file"]
        path = token["path"]
        try:
            raw: io.RawIOBase = open(path, "rb", buffering=0)
        except FileNotFoundError:
            raise BodyGone(errno.ENOENT, f"spooled body {path} is gone") from None
        return io.BufferedReader(Checked(raw, path, token), buffer_size=CHUNK)
    if isinstance(env.get("body_key"), Mapping):
        if client is None:
            raise ValueError("a body in Redis (body_key) needs a Redis client")
        token = env["body_key"]
        raw = RedisChunks(client, token["key"], int(token["size"]), int(token["chunks"]))
        return io.BufferedReader(Checked(raw, token["key"], token), buffer_size=CHUNK)
    if "body_base64" in env:
        return io.BytesIO(base64.b64decode(env["body_base64"]))
    body = env.get("body")
    return io.BytesIO(body.encode("utf-8") if body else b"")


class Checked(io.RawIOBase):
    """A spooled body read through: its bytes counted and hashed as they pass, and, at the end,
    checked against its token's ``size`` and ``sha256`` (as every shipped client checks them):
    a body that is not the one tempestd received raises BodyGone instead of ending quietly."""

    def __init__(self, raw: io.RawIOBase, name: str, token: Mapping[str, Any]) -> None:
        super().__init__()
        self.raw, self.name = raw, name
        self.size, self.sha256 = int(token["size"]), str(token.get("sha256", ""))
        self._hash = hashlib.sha256()
        self._read = 0
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)
        if n:
            self._read += n
            if self._read > self.size:
                raise BodyGone(errno.EIO, f"spooled body {self.name} is longer than its {self.size} bytes")
            self._hash.update(memoryview(buffer)[:n])
        elif n == 0 and not self._checked:
            self._checked = True
            if self._read != self.size:
                raise BodyGone(errno.EIO, f"spooled body {self.name}: {self._read} of {self.size} bytes")
            if self.sha256 and self._hash.hexdigest() != self.sha256:
                raise BodyGone(errno.EIO, f"spooled body {self.name}: its sha256 is not its token's")
        return n or 0

    def close(self) -> None:
        try:
            self.raw.close()
        finally:
            super().close()


class RedisChunks(io.RawIOBase):
    """The chunks of a body in Redis, read in order: one LINDEX per chunk, as the reader
    gets to it, so that no more than one chunk is in memory."""

    def __init__(self, client: redis.Redis, key: str, size: int, chunks: int) -> None:
        super().__init__()
        self.client, self.key, self.size, self.chunks = client, key, size, chunks
        self._index = 0  # the next chunk to fetch
        self._chunk = memoryview(b"")
        self._read = 0  # bytes given out so far

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._chunk:
            if self._read >= self.size:
                return 0  # the end
            self._chunk = memoryview(self._fetch())
        target = memoryview(buffer).cast("B")
        n = min(len(target), len(self._chunk))
        target[:n] = self._chunk[:n]
        self._chunk = self._chunk[n:]
        self._read += n
        return n

    def _fetch(self) -> bytes:
        chunk = self.client.lindex(self.key, self._index) if self._index < self.chunks else None
        if not isinstance(chunk, bytes) or not chunk:
            raise BodyGone(errno.ENOENT, f"spooled body {self.key}: chunk {self._index} of {self.chunks} is gone "
                           f"({self._read} of {self.size} bytes read)")
        self._index += 1
        return chunk
