"""The access log's line format: gunicorn's ``access_log_format`` atoms (``%(h)s``...), and
the escaping of what the client sent, as nginx does (``"`` and ``\\`` with a backslash,
control and non-ASCII bytes as ``\\xHH``), so that a line cannot be split or forged.
Kept apart from ``accesslog`` so that the configuration can check a format (it imports
nothing of the front)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from typing import Any

OFF, LOGGER = "", "log"  # the values of [front] access_log that are not files
COMBINED = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
DEFAULT_FORMAT = COMBINED + " %(L)s"  # + the request time in seconds, as nginx's $request_time
CLIENT_LEFT = 499  # the status logged for a request whose client left before any response (nginx's)

_UNSAFE = re.compile(r'[\x00-\x1f\x7f-\U0010ffff"\\]')


def escape(text: str) -> str:
    """``text`` safe in a log line: quotes and backslashes escaped, control and non-ASCII
    characters (the latin-1 bytes of the request) as \\xHH."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return _UNSAFE.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if char in '"\\':
        return "\\" + char
    code = ord(char)
    if code < 256:  # the request's bytes, decoded as latin-1
        return "\\x%02x" % code
    return "".join("\\x%02x" % byte for byte in char.encode("utf-8"))


class Entry:
    """The atoms of one request's line, computed only when the format names them."""

    __slots__ = ("conn", "request", "status", "size", "duration")

    def __init__(self, conn: Any, request: Any, status: int, size: int, duration: float) -> None:
        # conn: the Connection (its peer), request: the Request (tempest.http)
        self.conn = conn
        self.request = request
        self.status = status
        self.size = size
        self.duration = duration

    def __getitem__(self, key: str) -> str:
        atom = ATOMS.get(key)
        if atom is not None:
            return atom(self)
        if key[:1] == "{" and key[-2:] == "}i":
            return escape(self.request.headers.get(key[1:-2].lower(), "-"))
        raise KeyError(key)


def _request_line(e: Entry) -> str:
    return escape(f"{e.request.method} {e.request.target} HTTP/{e.request.version}")


_clock: list[Any] = [0, ""]  # the second last formatted, and its text


def _time(e: Entry) -> str:
    now = int(time.time())
    if _clock[0] != now:
        _clock[:] = [now, time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(now))]
    return str(_clock[1])


ATOMS: dict[str, Callable[[Entry], str]] = {
    "h": lambda e: e.conn.peer,  # the client's address
    "l": lambda e: "-",  # identd: never known
    "u": lambda e: "-",  # the authenticated user: the workers know it, not the front
    "t": _time,  # the time the line is written, [02/Dec/2026:19:00:00 +0000]
    "r": _request_line,  # the request line, GET /path?q HTTP/1.1
    "m": lambda e: e.request.method,
    "U": lambda e: escape(e.request.target.partition("?")[0]),  # the path
    "q": lambda e: escape(e.request.target.partition("?")[2]),  # the query string
    "H": lambda e: "HTTP/" + e.request.version,
    "s": lambda e: str(e.status),
    "B": lambda e: str(e.size),  # the body's bytes sent (with chunked framing)
    "b": lambda e: str(e.size) if e.size else "-",  # the same, "-" for none (CLF)
    "f": lambda e: escape(e.request.headers.get("referer", "-")),
    "a": lambda e: escape(e.request.headers.get("user-agent", "-")),
    "T": lambda e: str(int(e.duration)),  # the request time in whole seconds
    "M": lambda e: str(int(e.duration * 1000)),  # in milliseconds
    "D": lambda e: str(int(e.duration * 1_000_000)),  # in microseconds
    "L": lambda e: "%.3f" % e.duration,  # in seconds, to the millisecond
    "p": lambda e: str(os.getpid()),
}


SECRET_HEADERS = ("authorization", "proxy-authorization", "cookie")  # never logged


class _Checker:
    """Formats a format with placeholder atoms: a KeyError names an unknown one."""

    def __getitem__(self, key: str) -> str:
        if key in ATOMS:
            return "x"
        if key[:1] == "{" and key[-2:] == "}i" and len(key) > 3:
            if key[1:-2].lower() in SECRET_HEADERS:
                raise ValueError(f"%({key})s would write a secret (a password, a session) to the log")
            return "x"
        raise KeyError(key)


def check_format(raw: str) -> str:
    """``raw`` if it is a valid format (the converter of access_log_format), else ValueError."""
    fmt = raw.strip()
    try:
        fmt % _Checker()
    except KeyError as exc:
        raise ValueError(f"unknown atom %({exc.args[0]})s in {fmt!r}; known: "
                         f"{' '.join(ATOMS)} and {{header}}i") from None
    except ValueError as exc:
        if "secret" in str(exc):
            raise
        raise ValueError(f"not a format of %(atom)s placeholders ({exc}): {fmt!r}") from None
    except TypeError as exc:
        raise ValueError(f"not a format of %(atom)s placeholders ({exc}): {fmt!r}") from None
    return fmt
