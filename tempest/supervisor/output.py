"""Where children's output goes: drained from their pipes continuously, split into lines for
tempestd's log or appended to size-rotated files.

A child never blocks on a full pipe, because a greenlet always reads it; and a child that never
writes a newline cannot make tempestd buffer without bound, since a partial line is cut at
MAX_LINE bytes.
"""

import logging
import os
from typing import Protocol

import gevent
import gevent.os

READ_SIZE = 64 * 1024
MAX_LINE = 8 * 1024

log = logging.getLogger("tempest.child")  # the children's own output, not tempestd's words


RECENT_BYTES = 32 * 1024  # of each stream of each child, kept for tempest tail


class Sink(Protocol):
    """Where one stream of a child's output is written."""

    def write(self, data: bytes) -> object: ...


class LogLines:
    """Writes a child's output to tempestd's log, one record per line, prefixed [NAME:INDEX]."""

    def __init__(self, prefix: str, logger: logging.Logger = log) -> None:
        self.prefix = prefix
        self.logger = logger
        self._partial = b""

    def write(self, data: bytes) -> None:
        *lines, self._partial = (self._partial + data).split(b"\n")
        while len(self._partial) > MAX_LINE:
            lines.append(self._partial[:MAX_LINE])
            self._partial = self._partial[MAX_LINE:]
        for line in lines:
            for start in range(0, max(len(line), 1), MAX_LINE):  # long lines cut alike, however read
                text = line[start:start + MAX_LINE].rstrip(b"\r").decode("utf-8", "replace")
                self.logger.info("[%s] %s", self.prefix, text)

    def close(self) -> None:
        if self._partial:
            self.write(b"\n")


class RotatingFile:
    """Appends bytes to ``path``; past ``maxbytes`` renames it to path.1 (path.1 to path.2...)
    and keeps ``backups`` of them. Shared by every child writing to the same path."""

    def __init__(self, path: str, maxbytes: int, backups: int) -> None:
        self.path = path
        self.maxbytes = maxbytes
        self.backups = backups
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = os.fstat(self._fd).st_size

    def write(self, data: bytes) -> None:
        if self.maxbytes and self._size + len(data) > self.maxbytes and self._size:
            self._rotate()
        os.write(self._fd, data)
        self._size += len(data)

    def _rotate(self) -> None:
        """Rename the files, then reopen; the old descriptor stays valid until the new one is
        open, so a failure (disk full, permissions) never leaves a closed number behind."""
        if self.backups:
            for n in range(self.backups - 1, 0, -1):
                if os.path.exists(f"{self.path}.{n}"):
                    os.replace(f"{self.path}.{n}", f"{self.path}.{n + 1}")
            os.replace(self.path, f"{self.path}.1")
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        else:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        new = os.open(self.path, flags, 0o644)
        os.close(self._fd)
        self._fd = new
        self._size = 0

    def reopen(self) -> None:
        """Open the file again under its name (logrotate moved it): on SIGUSR1."""
        new = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.close(self._fd)
        self._fd = new
        self._size = os.fstat(new).st_size

    def close(self) -> None:
        os.close(self._fd)


def drain(fd: int, sink: Sink) -> None:
    """Read ``fd`` until EOF (the child and all it forked closed it), writing to ``sink``."""
    gevent.os.make_nonblocking(fd)
    failing = False
    try:
        while True:
            data = gevent.os.nb_read(fd, READ_SIZE)
            if not data:
                break
            try:
                sink.write(data)
                failing = False
            except OSError as exc:  # disk full...: drop this output, keep the pipe drained
                if not failing:
                    log.error("cannot write a child's output (dropped until it works again): %s", exc)
                failing = True
    except OSError as exc:
        log.warning("reading a child's output failed: %s", exc)
    finally:
        os.close(fd)
        if isinstance(sink, (LogLines, Tee)):
            sink.close()  # a Tee closes only a LogLines


def spawn_drain(fd: int, sink: Sink) -> "gevent.Greenlet[[int, Sink], None]":
    """Drain ``fd`` into ``sink`` in a greenlet of its own."""
    return gevent.spawn(drain, fd, sink)


class Recent:
    """The last ``limit`` bytes a child wrote to one of its streams, for ``tempest tail``,
    whatever its sink; ``offset`` counts every byte ever written, so that a reader asks for
    what came after the offset it saw last."""

    def __init__(self, limit: int = RECENT_BYTES) -> None:
        self.limit = limit
        self.offset = 0
        self._data = bytearray()

    def add(self, data: bytes) -> None:
        self.offset += len(data)
        self._data += data
        if len(self._data) > self.limit:
            del self._data[:len(self._data) - self.limit]

    def since(self, offset: int) -> tuple[int, bytes]:
        """(the current offset, the bytes written after ``offset`` that are still kept)."""
        missing = self.offset - max(0, offset)
        return self.offset, bytes(self._data[-missing:]) if missing > 0 else b""


class Tee:
    """A sink that also keeps what it writes in a Recent."""

    def __init__(self, sink: Sink, recent: Recent) -> None:
        self.sink = sink
        self.recent = recent

    def write(self, data: bytes) -> object:
        self.recent.add(data)
        return self.sink.write(data)

    def close(self) -> None:
        """Flush a LogLines' last partial line; a RotatingFile is shared by the children
        writing to it, and stays open."""
        if isinstance(self.sink, LogLines):
            self.sink.close()
