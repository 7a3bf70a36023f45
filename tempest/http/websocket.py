"""WebSocket on ``/ws/<channel>`` (RFC 6455 through wsproto): published messages go to the
browser as text frames, the browser's messages become ``ws`` jobs, and a worker can answer
one socket through the answer endpoint (``ws <socket_id> <json>``).

The Origin header is checked before the upgrade: with ``allow_origins`` set, only those
origins (or any, with ``*``); without it, only pages of the same host (or clients that send no
Origin, which browsers always send). Messages from the browser are bounded by ``max_frame``
(closed with 1009 above); a ping every ``heartbeat`` seconds keeps proxies and NATs open, and
a client that has sent nothing (not even the pong browsers send by themselves) between one
ping and the next is taken for gone and disconnected: a dead peer is found within two
heartbeats, not after the system's TCP keepalive (hours). A socket naming a private channel
is admitted before the upgrade (tempest.grants: 403 when the session does not allow it) and
closed with 4403 once the session no longer does.
"""

from __future__ import annotations

import base64
import logging
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Event, Message, Ping, TextMessage
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from tempest import jobs
from tempest.http.connection import Connection
from tempest.http.request import Request
from tempest.http.sse import channels_of
from tempest.relay import HEARTBEAT, Relay, Revoked, Subscriber

if TYPE_CHECKING:
    from tempest.config import Config
    from tempest.grants import Access
    from tempest.pusher import Pusher
    from tempest.stats import Stats

log = logging.getLogger(__name__)

WS_ACTION = "ws"
MESSAGE_TOO_BIG = 1009
GOING_AWAY = 1001
REVOKED = 4403  # the session no longer allows a private channel of the socket (tempest.grants)


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def origin_allowed(request: Request, allowed: tuple[str, ...], local: tuple[str, int] | None) -> bool:
    """Whether a browser page of the request's Origin may open this WebSocket: with
    ``allow_origins``, one of them (or any, with ``*``); without, only a page served from the
    address the client connected to (``local``: host and port), where a loopback address also
    goes by localhost. The Host header is not trusted for this: a page of a hostile name that
    resolves to this server (DNS rebinding) sends a matching Host. A client that sends no
    Origin is not a browser, and is let in."""
    origin = request.header("origin")
    if "*" in allowed:
        return True
    if allowed:
        return origin in allowed
    if not origin:
        return True
    if local is None:
        return False
    return urllib.parse.urlsplit(origin).netloc.lower() in _own_origins(*local[:2])


def _own_origins(host: str, port: int) -> set[str]:
    names = {f"[{host}]" if ":" in host else host}
    if host in ("127.0.0.1", "::1") or host.startswith("127."):
        names.update(LOOPBACK_NAMES)
    return {f"{name}:{port}" for name in names} | (names if port == 80 else set())


class Direct:
    """A text frame a worker sends to one socket."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class Sockets:
    """The open WebSockets by id, for the answer endpoint's ``ws <socket_id> <json>``."""

    def __init__(self) -> None:
        self._open: dict[str, WebSocket] = {}

    def __len__(self) -> int:
        return len(self._open)

    def add(self, socket: WebSocket) -> None:
        self._open[socket.id] = socket

    def remove(self, socket: WebSocket) -> None:
        self._open.pop(socket.id, None)

    def push(self, socket_id: str, text: str) -> bool:
        """Queue a text frame for one socket; False when no such socket is open."""
        socket = self._open.get(socket_id)
        if socket is None:
            return False
        socket.push(text)
        return True


class WebSockets:
    """The handler of ``<ws_prefix><channel>``: the upgrade, then one ``WebSocket``."""

    def __init__(self, relay: Relay, pusher: Pusher, stats: Stats, respond_to: str, sockets: Sockets,
                 access: Access | None = None) -> None:
        self.relay = relay
        self.pusher = pusher
        self.stats = stats
        self.respond_to = respond_to
        self.sockets = sockets
        self.access = access  # who may subscribe to private channels (tempest.grants); None: anyone

    route = ("websocket", "")

    def apply(self, config: Config) -> None:
        self.settings = config.pubsub
        self.route = ("websocket", config.pubsub.ws_prefix)

    def serve(self, conn: Connection, request: Request, path: str) -> bool:
        settings = self.settings
        if not request.upgrade or request.header("upgrade").lower() != "websocket":
            return conn.error(400, request)
        channels = channels_of(path, settings.ws_prefix, settings.max_channels)
        if channels is None:
            return conn.error(400, request)
        if not origin_allowed(request, settings.allow_origins, conn.local_address):
            log.warning("%s: WebSocket from origin %r refused", conn.peer, request.header("origin"))
            return conn.error(403, request)
        ws = WSConnection(ConnectionType.SERVER)
        try:
            ws.initiate_upgrade_connection(
                [(n.encode("latin-1"), v.encode("latin-1")) for n, v in request.headers.items()], request.url)
            next(ws.events())  # the Request
            accept = ws.send(AcceptConnection())
        except (LocalProtocolError, RemoteProtocolError, StopIteration) as exc:
            log.info("%s: bad WebSocket handshake: %s", conn.peer, exc)
            return conn.error(400, request)
        admission = self.access.admit(request, conn.peer, channels) if self.access is not None else None
        if admission is not None:  # refused before the upgrade, as a bad Origin is
            if admission.status == 400:
                return conn.error(400, request)
            if admission.status != 200:
                return conn.respond(request, *admission.refusal())
            channels = admission.channels
        socket = WebSocket(self, conn, ws, channels, request, admission)
        self.sockets.add(socket)
        confirmed = self.relay.subscribe(socket.subscriber)  # the upgrade only once Redis subscribed
        parked = False
        try:
            if not confirmed:
                log.warning("%s: Redis did not confirm the subscription to %s: 503", conn.peer, ",".join(channels))
                return conn.error(503, request)
            conn.switch_protocols(request, accept)
            if admission is not None and self.access is not None:
                self.access.watch(admission.watch, socket.subscriber)  # closed 4403 once no longer allowed
            parked = socket.start()
        except OSError as exc:
            log.debug("%s: WebSocket client gone: %s", conn.peer, exc)
        finally:
            if not parked:
                self.end(socket)
        return False

    def end(self, socket: WebSocket) -> None:
        self.relay.unsubscribe(socket.subscriber)
        self.sockets.remove(socket)
        if socket.admission is not None and self.access is not None:
            self.access.unwatch(socket.admission.watch)

    def job(self, socket: WebSocket, data: str | bytes) -> None:
        """A browser's message becomes a ``ws`` job."""
        args: dict[str, Any] = {"channel": socket.channels[0], "socket": socket.id}
        if isinstance(data, str):
            args["data"] = data
        else:
            args["data_base64"] = base64.b64encode(data).decode("ascii")
        self.stats.ws_messages += 1
        self.pusher.submit(self.settings.ws_queue, jobs.encode_job(WS_ACTION, [args], self.respond_to, socket.id), None)


class WebSocket:
    """One open WebSocket."""

    def __init__(self, handler: WebSockets, conn: Connection, ws: WSConnection, channels: list[str],
                 request: Request, admission: Any) -> None:
        self.handler = handler
        self.conn = conn
        self.request, self.admission = request, admission
        self.ws = ws
        self.channels = channels
        self.settings = settings = handler.settings
        self.id = jobs.new_job_id()
        self.subscriber = Subscriber(channels, settings.client_buffer, conn.notify, conn.abort, handler.relay.ledger,
                                     kind="websocket")
        self._partial: list[Any] = []
        self._partial_size = 0
        self.closed = False
        self.last_heard = time.monotonic()  # when the client last sent anything (a pong counts)
        self.ping_sent: float | None = None  # when the last heartbeat ping went out

    def push(self, text: str) -> bool:
        """Queue a text frame for this socket (from the answer endpoint)."""
        return self.subscriber.push(Direct(text), len(text))

    def start(self) -> bool:
        """After the upgrade: True once parked (it goes on), False when it is over."""
        self.conn.begin_stream()
        if not self._step(self.conn.take_received()):  # what came right after the upgrade request
            return False
        self.conn.park(self.request, self._step, lambda: self.handler.end(self))
        return True

    def _step(self, received: bytes) -> bool:
        """Take what the client sent, write what is queued; True when there is nothing left
        (the connection is parked: no greenlet while idle), False when the socket is over."""
        if received:
            self._received(received)
        while not self.closed:
            self._flush()
            if self.closed or self.subscriber.items:
                continue
            if self.subscriber.overflow:
                log.info("%s: slow WebSocket client disconnected", self.conn.peer)
                self._close(GOING_AWAY, "too slow")
                return False
            return True
        return False

    def _flush(self) -> None:
        out = []
        for item in self.subscriber.take():
            if item is HEARTBEAT:
                if self.ping_sent is not None and self.last_heard < self.ping_sent:
                    self._gone()
                    return
                self.ping_sent = time.monotonic()
                out.append(self.ws.send(Ping()))
            elif isinstance(item, Direct):
                out.append(self.ws.send(Message(data=item.text)))
            elif isinstance(item, Revoked):
                out.append(self.ws.send(CloseConnection(code=REVOKED, reason="revoked")))
                self.closed = True
                break
            elif item.end:
                out.append(self.ws.send(CloseConnection(code=1000, reason="unsubscribed")))
                self.closed = True
                break
            else:
                out.append(self.ws.send(Message(data=item.text())))
        if out:
            self.conn.send(b"".join(out))

    def _gone(self) -> None:
        """No pong, nor anything else, since the last ping: the peer is dead or cut off."""
        log.info("%s: WebSocket client silent since the last ping (%ss): disconnected",
                 self.conn.peer, self.settings.heartbeat)
        self.handler.stats.silent_clients_dropped += 1
        self.closed = True

    def _received(self, data: bytes) -> None:
        self.last_heard = time.monotonic()
        try:
            self.ws.receive_data(data)
            for event in self.ws.events():
                self._event(event)
                if self.closed:
                    return
        except RemoteProtocolError as exc:
            log.info("%s: WebSocket protocol error: %s", self.conn.peer, exc)
            self._close(1002, "protocol error")

    def _event(self, event: Event) -> None:
        if isinstance(event, (TextMessage, BytesMessage)):
            self._partial_size += len(event.data)
            if self._partial_size > self.settings.max_frame:
                log.info("%s: WebSocket message over max_frame (%d bytes): closed",
                         self.conn.peer, self.settings.max_frame)
                self._close(MESSAGE_TOO_BIG, "message too big")
                return
            self._partial.append(event.data)
            if event.message_finished:
                data: str | bytes
                data = "".join(self._partial) if isinstance(event, TextMessage) else b"".join(self._partial)
                self._partial, self._partial_size = [], 0
                self.handler.job(self, data)
        elif isinstance(event, Ping):
            self.conn.send(self.ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            if self.ws.state.name not in ("CLOSED", "LOCAL_CLOSING"):
                self.conn.send(self.ws.send(event.response()))
            self.closed = True

    def _close(self, code: int, reason: str) -> None:
        try:
            self.conn.send(self.ws.send(CloseConnection(code=code, reason=reason)))
        except (OSError, LocalProtocolError):
            pass
        self.closed = True
