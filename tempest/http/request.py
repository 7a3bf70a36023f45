"""One parsed HTTP request, as the connection's parser fills it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tempest.spool import Body

NO_ROUTE = ("none", "")  # a request refused before it reached a handler (malformed, too big)
METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}


class Request:
    """A request: method, URL and headers, its body in pieces, and how it was framed.

    ``error`` is a status (400, 408, 413, 431) when the request was refused while it was
    read; the connection answers it without handing it to a handler.
    """

    __slots__ = ("method", "url", "headers", "body", "body_size", "keep_alive", "version",
                 "error", "head_size", "raw_head", "started", "upgrade", "hosts", "body_started",
                 "status", "sent_from", "route", "max_body", "spool_route", "spool_over", "stored")

    def __init__(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}  # lower-case name -> value; repeats joined as in the job's env
        self.body: list[bytes] = []
        self.body_size = 0
        self.head_size = 0  # the request line and headers httptools completed
        self.raw_head = 0  # bytes of reads that fell wholly inside the head
        self.keep_alive = False
        self.error: int | None = None
        self.method = "GET"
        self.version = "1.1"
        self.started = time.monotonic()
        self.upgrade = False  # an Upgrade request (WebSocket): the connection changes protocol
        self.hosts = 0  # Host headers seen: HTTP/1.1 needs exactly one
        self.body_started = 0.0  # when the head was complete: the body has body_timeout from then
        self.status = 0  # the response's status, once its head is sent (0: none yet)
        self.sent_from = 0  # the connection's bytes sent when the response's body began
        self.route = NO_ROUTE  # (handler, route) for the metrics: set by the handler that serves it
        self.max_body = 0  # the bound of its body: its route's max_body, set with the head
        self.spool_route: Any = None  # the route whose spool takes the body once it passes spool_over
        self.spool_over = 0  # -1: spooled from the first byte (a declared length over the threshold)
        self.stored: Body | None = None  # the spooled body (tempest.spool), once it is out of memory

    def header(self, name: str, default: str = "") -> str:
        """The value of header ``name`` (lower case); a repeated header's values joined."""
        return self.headers.get(name, default)

    @property
    def target(self) -> str:
        """The request target (path and query) as a str."""
        return self.url.decode("latin-1")

    def query(self) -> str:
        return self.target.partition("?")[2]
