"""The HTTP server: accepting connections, the reaper of slow reads, and routing each request
to its handler.

Most requests go to the ``Forwarder`` (a job for the workers); those under the pub/sub
prefixes to ``EventStreams`` (SSE) and ``WebSockets``, those under a ``[static:]`` prefix to
``StaticFiles``. A handler is any object with ``serve(conn, request, path) -> keep_alive``
and ``apply(config)``; it uses only the connection's public interface (``connection.py``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

import gevent
from gevent.server import StreamServer

from tempest import memory
from tempest.sockets import close_with
from tempest.http.connection import Connection
from tempest.http.request import Request
from tempest.http.response import HttpDate
from tempest.stats import Stats

if TYPE_CHECKING:
    from tempest.config import Config
    from tempest.http.forward import Forwarder
    from tempest.http.sse import EventStreams
    from tempest.http.static import StaticFiles
    from tempest.http.websocket import WebSockets

log = logging.getLogger(__name__)

REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\nServer: tempest\r\nContent-Type: text/plain; charset=utf-8\r\n"
           b"Content-Length: 24\r\nRetry-After: 1\r\nConnection: close\r\n\r\n503 Service Unavailable\n")
REAP_INTERVAL = 0.5  # seconds; read timeouts fire at most this late (10,000 idle: ~1% CPU)


class Handler(Protocol):
    def serve(self, conn: Connection, request: Request, path: str) -> bool: ...

    def apply(self, config: Config) -> None: ...


class Server:
    """The front's listening socket and its connections.

    Args:
        config: the configuration; ``apply`` replaces it on reload (routes and limits hold for
            new requests, a connection keeps the limits it opened with).
        forwarder: the handler of requests for the workers.
        static: the handler of ``[static:]`` prefixes.
        events, websockets: the pub/sub handlers, or None without a relay.
        room: the most connections the open-file limit leaves room for (None: no limit);
            ``[front] max_connections`` is lowered to it.
    """

    def __init__(self, config: Config, stats: Stats, forwarder: Forwarder, static: StaticFiles,
                 events: EventStreams | None = None, websockets: WebSockets | None = None,
                 room: int | None = None) -> None:
        self.stats = stats
        self.forwarder = forwarder
        self.static = static
        self.events = events
        self.websockets = websockets
        self.connections: set[Connection] = set()
        self.room = room
        self._refused_logged = 0.0  # when a refusal was last logged (at most one line a second)
        self.closing = False
        self.date = HttpDate()
        self.server = StreamServer(config.front.listen, self._handle, backlog=config.front.backlog)
        self.apply(config)

    def apply(self, config: Config) -> None:
        """Take a (re)loaded configuration: for new connections and requests."""
        self.limits = config.front
        self.max_connections = config.front.max_connections
        if self.room is not None and self.max_connections > self.room:
            log.warning("max_connections lowered from %d to %d: the open-file limit leaves room for no more "
                        "(raise it, e.g. LimitNOFILE= in the systemd unit)", self.max_connections, self.room)
            self.max_connections = max(1, self.room)
        self._pubsub = config.pubsub
        prefixes = [static_dir.prefix for static_dir in config.statics]
        if self.events is not None:
            prefixes += [config.pubsub.sub_prefix, config.pubsub.ws_prefix]
        self._prefixes = tuple(prefixes)
        # a static prefix without its slash (/examples for [static:/examples/]): redirected to it
        self._bare = frozenset(st.prefix.rstrip("/") for st in config.statics if st.prefix != "/")
        for handler in self._handlers():
            handler.apply(config)

    def _handlers(self) -> list[Handler]:
        handlers: tuple[Handler | None, ...] = (self.forwarder, self.static, self.events, self.websockets)
        return [h for h in handlers if h is not None]

    @property
    def address(self) -> str | tuple[str, int]:
        return self.server.address

    def handler_for(self, request: Request, path: str) -> Handler:
        """The handler of a request."""
        if not path.startswith(self._prefixes):  # most requests: one test (and one set lookup)
            return self.static if path in self._bare else self.forwarder
        if self.events is not None and request.method in ("GET", "HEAD"):
            if path.startswith(self._pubsub.sub_prefix):
                return self.events
            if path.startswith(self._pubsub.ws_prefix) and self.websockets is not None:
                return self.websockets
        if self.static.match(path) is not None:
            return self.static
        return self.forwarder

    def _refuse(self, sock: Any, address: Any) -> None:
        """Over max_connections: a 503 without reading the request, then close."""
        self.stats.connections_refused += 1
        now = time.monotonic()
        if now - self._refused_logged >= 1.0:
            self._refused_logged = now
            log.warning("%s: connection refused: %d open, max_connections (%d refused so far)",
                        address[0] if isinstance(address, tuple) else "unix socket", len(self.connections),
                        self.stats.connections_refused)
        close_with(sock, REFUSED, seconds=0.2, limit=64 * 1024)

    def reap(self) -> None:
        """Wake the reads that waited too long (keep-alive, slow heads and bodies); one pass
        over the connections every REAP_INTERVAL instead of a timer per read."""
        loop = gevent.get_hub().loop
        trimmer = memory.Trimmer()
        while True:
            gevent.sleep(REAP_INTERVAL)
            now = time.monotonic()
            for conn in list(self.connections):
                if conn.read_deadline is not None and now >= conn.read_deadline:
                    loop.run_callback(conn.expire)
            trimmer.observe(len(self.connections))

    def stop_accepting(self) -> None:
        """Stop accepting; idle keep-alive connections close, busy ones after their response."""
        self.closing = True
        self.server.close()
        for conn in list(self.connections):
            if conn.idle:
                conn.greenlet.kill(block=False)

    def busy(self) -> int:
        return sum(1 for conn in self.connections if not conn.idle)

    def close_all(self) -> None:
        for conn in list(self.connections):
            conn.greenlet.kill(block=False)

    def _handle(self, sock: Any, address: Any) -> None:
        if len(self.connections) >= self.max_connections:
            self._refuse(sock, address)
            return
        conn = Connection(self, sock, address)
        self.connections.add(conn)
        self.stats.connections_total += 1
        self.stats.connections_open += 1
        try:
            conn.run()
        finally:
            self.connections.discard(conn)
            self.stats.connections_open -= 1
