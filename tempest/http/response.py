"""Response heads: the one table of reason phrases and the one head builder that every
response of the front uses (answers, errors, streamed answers, static files, Server-Sent
Events).

A head is built from parts cached per status (the status line and the ``Server`` header) and
per second (the ``Date`` header); the front frames every body itself (``Content-Length``,
chunked, or until the connection closes), so a worker's framing headers never reach a client.
"""

from __future__ import annotations

import email.utils
import enum
import http
import time

# RFC 9110's phrases (Python 3.11's table still has some of RFC 7231's)
REASONS = {status.value: status.phrase for status in http.HTTPStatus} | {
    413: "Content Too Large", 422: "Unprocessable Content"}
_STATUS_LINES: dict[int, bytes] = {}  # status -> b"HTTP/1.1 <status> <reason>\r\nServer: tempest\r\nDate: "


class Framing(enum.Enum):
    """How the body after a head is delimited."""

    LENGTH = "length"  # Content-Length: the whole body is known
    CHUNKED = "chunked"  # Transfer-Encoding: chunked (HTTP/1.1 streams)
    UNTIL_CLOSE = "until_close"  # the body ends when the connection closes (HTTP/1.0 streams, SSE)


def reason(status: int) -> str:
    return REASONS.get(status, "Unknown")


def status_line(status: int) -> bytes:
    """The status line and the fixed headers up to the ``Date`` value (cached; statuses are
    100-599, checked before they get here)."""
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d %s\r\nServer: tempest\r\nDate: " % (status, reason(status).encode())
        _STATUS_LINES[status] = line
    return line


class HttpDate:
    """The ``Date`` header's value, formatted once a second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = 0
        self._value = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if self._second != now:
            self._second, self._value = now, email.utils.formatdate(now, usegmt=True).encode()
        return self._value


def head(status: int, headers: list[tuple[bytes, bytes]], date: bytes, framing: Framing,
         length: int | None, keep_alive: bool, http10: bool) -> list[bytes]:
    """The parts of a response head, to be joined (with the body, if any, appended);
    ``length`` None with Framing.LENGTH: no Content-Length (a HEAD's answer that declared none)."""
    parts = [status_line(status), date, b"\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    if status in (204, 304) or 100 <= status < 200:
        pass  # no body, and no framing header for one
    elif framing is Framing.LENGTH:
        if length is not None:
            parts += (b"Content-Length: ", b"%d" % length, b"\r\n")
    elif framing is Framing.CHUNKED:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    elif http10:
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    return parts
