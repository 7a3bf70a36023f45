"""The access log: one line per request, when its exchange ends, in the Combined Log Format
by default, with the request time appended.

A line is written when the response is complete: a streamed answer, an SSE stream and a
WebSocket are logged when they end, with the bytes sent and the time they lasted. The format
is gunicorn's ``access_log_format``: ``%(atom)s`` placeholders (``logformat.ATOMS``, and
``%({name}i)s`` for a request header), what the client sent escaped.

The destination is ``[front] access_log``: a file (buffered, flushed every second and at
exit, reopened on SIGUSR1 for logrotate), or ``log`` for the ``tempest.access`` logger
(tempestd's own log).
"""

from __future__ import annotations

import logging
import os
from typing import IO, TYPE_CHECKING

from tempest.logformat import DEFAULT_FORMAT, LOGGER, OFF, Entry

if TYPE_CHECKING:
    from tempest.http.connection import Connection
    from tempest.http.request import Request

log = logging.getLogger(__name__)
access_logger = logging.getLogger("tempest.access")
BUFFER = 64 * 1024  # bytes buffered before a write (and flushed every second anyway)


class AccessLog:
    """Where the lines go; ``apply`` follows a reload, ``reopen`` SIGUSR1."""

    def __init__(self) -> None:
        self.destination = OFF
        self.format = DEFAULT_FORMAT
        self._file: IO[bytes] | None = None
        self._buffer: list[bytes] = []
        self._buffered = 0

    @property
    def on(self) -> bool:
        return self.destination != OFF

    def apply(self, destination: str, fmt: str) -> None:
        """Take the configured destination and format; a file that cannot be opened raises
        OSError, and the destination in use stays."""
        self.format = fmt
        if destination == self.destination:
            return
        new = _open(destination) if destination not in (OFF, LOGGER) else None
        self.close()
        self._file, self.destination = new, destination

    def write(self, conn: Connection, request: Request, status: int, size: int, duration: float) -> None:
        line = self.format % Entry(conn, request, status, size, duration)
        if self._file is None:
            access_logger.info("%s", line)
            return
        data = line.encode("utf-8", "replace") + b"\n"
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered >= BUFFER:
            self.flush()

    def flush(self) -> None:
        if self._file is None or not self._buffer:
            return
        data, self._buffer, self._buffered = b"".join(self._buffer), [], 0
        try:
            self._file.write(data)
        except OSError as exc:  # a full disk loses these lines, never a request
            log.error("cannot write the access log %s: %s (%d bytes lost)", self.destination, exc.strerror, len(data))

    def reopen(self) -> None:
        """Open the file again (logrotate renamed it): the lines so far go to the old one."""
        if self._file is None:
            return
        try:
            new = _open(self.destination)
        except OSError as exc:
            log.error("cannot reopen the access log %s: %s; writing to the old file", self.destination, exc.strerror)
            return
        self.flush()
        self._file.close()
        self._file = new

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None


def _open(path: str) -> IO[bytes]:
    """The file, opened for appending, unbuffered (this module buffers): its directory made."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return open(path, "ab", buffering=0)
