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

from tempest import memory, spool
from tempest.logformat import CLIENT_LEFT
from tempest.sockets import close_with
from tempest.http.connection import Connection
from tempest.http.request import Request
from tempest.http.response import HttpDate
from tempest.stats import Stats

if TYPE_CHECKING:
    from tempest.accesslog import AccessLog
    from tempest.config import Config
    from tempest.metrics import Requests
    from tempest.http.forward import Forwarder
    from tempest.http.sse import EventStreams
    from tempest.http.static import StaticFiles
    from tempest.http.websocket import WebSockets

log = logging.getLogger(__name__)

REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\nServer: tempest\r\nContent-Type: text/plain; charset=utf-8\r\n"
           b"Content-Length: 24\r\nRetry-After: 1\r\nConnection: close\r\n\r\n503 Service Unavailable\n")
REAP_INTERVAL = 0.5  # seconds; read timeouts fire at most this late (10,000 idle: ~1% CPU)


class Handler(Protocol):
    route: tuple[str, str]  # (handler, route): the labels of its requests' metrics

    def serve(self, conn: Connection, request: Request, path: str) -> bool: ...

    def apply(self, config: Config) -> None: ...


class Listener:
    """A listening socket and its connections: accepting under ``max_connections``, the
    reaper, the end of each request (metrics, access log) and the stop. Subclasses route:
    ``handler_for(request, path)``.

    Args:
        address, backlog: where to listen.
        stats: the counters this listener adds to.
        requests: the request metrics (None: not measured).
        access_log: where each request is logged (None: not logged).
        room: the most connections the open-file limit leaves room for (None: no limit);
            ``max_connections`` is lowered to it.
        sock: a socket already listening to accept on instead (a front process's, inherited).
    """

    spools: spool.Spools  # where spooled bodies go (the front's; never asked by a listener without routes)

    def __init__(self, address: tuple[str, int], backlog: int, stats: Stats, requests: Requests | None = None,
                 access_log: AccessLog | None = None, room: int | None = None, sock: Any = None) -> None:
        self.stats = stats
        self.requests = requests
        self.access_log = access_log
        self.connections: set[Connection] = set()
        self.room = room
        self._refused_logged = 0.0  # when a refusal was last logged (at most one line a second)
        self.closing = False
        self.date = HttpDate()
        self.parked: set[Any] = set()  # the sockets of parked streams, which outlive their first greenlet
        # sock: a socket already listening (a front process's, inherited), else one bound to address
        self.server = (_StreamServer(self, sock, self._handle) if sock is not None
                       else _StreamServer(self, address, self._handle, backlog=backlog))

    def set_limits(self, limits: Any, max_connections: int) -> None:
        """The limits of new connections (a FrontSection, or its like)."""
        self.limits = limits
        self.max_connections = max_connections
        if self.room is not None and self.max_connections > self.room:
            log.warning("max_connections lowered from %d to %d: the open-file limit leaves room for no more "
                        "(raise it, e.g. LimitNOFILE= in the systemd unit)", self.max_connections, self.room)
            self.max_connections = max(1, self.room)

    def handler_for(self, request: Request, path: str) -> Handler:
        raise NotImplementedError

    def body_route(self, request: Request, path: str) -> Any:
        """The route whose max_body and spool a request's body has; None: [front]'s max_body."""
        return None

    def finished(self, conn: Connection, request: Request) -> None:
        """A request's exchange is over (answered, streamed to its end, or cut): measured, logged."""
        duration = time.monotonic() - request.started
        status = request.status or CLIENT_LEFT
        size = conn.sent - request.sent_from if request.status else 0
        if self.requests is not None:
            self.requests.observe(request.route, status, duration)
        if self.access_log is not None and self.access_log.on:
            self.access_log.write(conn, request, status, size, duration)

    @property
    def address(self) -> str | tuple[str, int]:
        return self.server.address

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
        """Stop accepting; idle keep-alive connections close, busy ones after their response,
        new ones after their first (within the head's deadline)."""
        self.closing = True
        self.server.close()
        for conn in list(self.connections):
            if conn.idle and conn.served:
                conn.kill()

    def busy(self) -> int:
        """Connections waited for at shutdown: a request in hand, or none served yet."""
        return sum(1 for conn in self.connections if not conn.idle or not conn.served)

    def close_all(self) -> None:
        for conn in list(self.connections):
            conn.kill()

    def park(self, conn: Connection) -> None:
        """``conn`` goes on after its greenlet (Connection.park): its socket stays open."""
        self.parked.add(conn.sock)

    def release(self, conn: Connection) -> None:
        """A parked connection is over (Connection._resume, at its end)."""
        self.parked.discard(conn.sock)
        if conn in self.connections:
            self.connections.discard(conn)
            self.stats.connections_open -= 1

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
            if not conn.detached:  # a parked stream is forgotten when it ends (release)
                self.connections.discard(conn)
                self.stats.connections_open -= 1


class _StreamServer(StreamServer):
    """gevent's StreamServer, which closes each socket when its handler returns, but for the
    sockets of parked streams (Listener.parked)."""

    def __init__(self, listener: Listener, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self.listener = listener

    def do_close(self, sock: Any, *args: Any) -> None:
        if sock not in self.listener.parked:
            sock.close()


class Server(Listener):
    """The front: routes each request to its handler.

    Args:
        config: the configuration; ``apply`` replaces it on reload (routes and limits hold for
            new requests, a connection keeps the limits it opened with).
        forwarder: the handler of requests for the workers.
        static: the handler of ``[static:]`` prefixes.
        events, websockets: the pub/sub handlers, or None without a relay.
        spools: where the bodies of routes with ``spool`` go (tempest.spool).
        requests, access_log, room, sock: as for ``Listener``.
    """

    def __init__(self, config: Config, stats: Stats, forwarder: Forwarder, static: StaticFiles,
                 events: EventStreams | None = None, websockets: WebSockets | None = None,
                 room: int | None = None, requests: Requests | None = None,
                 access_log: AccessLog | None = None, spools: spool.Spools | None = None, sock: Any = None) -> None:
        super().__init__(config.front.listen, config.front.backlog, stats, requests, access_log, room, sock)
        self.spools = spools or spool.Spools(config.tempest.name, None)  # None: files only
        self.forwarder = forwarder
        self.static = static
        self.events = events
        self.websockets = websockets
        self.apply(config)

    def apply(self, config: Config) -> None:
        """Take a (re)loaded configuration: for new connections and requests."""
        self.set_limits(config.front, config.front.max_connections)
        self._config = config
        try:  # the directories of new spooling routes (tempestd made those of its start)
            spool.prepare([config.default_route, *config.routes], config.tempest.name, clean=False)
        except OSError as exc:
            log.error("cannot make a spool directory: %s; uploads to its routes get 500", exc)
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

    def body_route(self, request: Request, path: str) -> Any:
        """The route of a request for the workers (its body's max_body and spool), else None."""
        return self._config.route_for(path) if self.handler_for(request, path) is self.forwarder else None
