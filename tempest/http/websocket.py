"""WebSocket on ``/ws/<channel>`` (RFC 6455 through wsproto): published messages go to the
browser as text frames, the browser's messages become ``ws`` jobs, and a worker can answer
one socket through the answer endpoint (``ws <socket_id> <json>``).

The Origin header is checked before the upgrade: with ``allow_origins`` set, only those
origins (or any, with ``*``); without it, only pages of the same host (or clients that send no
Origin, which browsers always send). Messages from the browser are bounded by ``max_frame``
(closed with 1009 above); a ping every ``heartbeat`` seconds keeps proxies and NATs open, and
a client that has sent nothing (not even the pong browsers send by themselves) between one
ping and the next is taken for gone and disconnected: a dead peer is found within two
heartbeats, not after the system's TCP keepalive (hours).
"""

import base64
import logging
import time
import urllib.parse

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Message, Ping, TextMessage
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from tempest import jobs
from tempest.relay import HEARTBEAT, Subscriber
from tempest.sse import channels_of

log = logging.getLogger(__name__)

WS_ACTION = "ws"
MESSAGE_TOO_BIG = 1009
GOING_AWAY = 1001


def origin_allowed(request, allowed):
    origin = request.header("origin")
    if "*" in allowed:
        return True
    if allowed:
        return origin in allowed
    if not origin:
        return True
    return urllib.parse.urlsplit(origin).netloc.lower() == request.header("host").lower()


class Direct:
    """A text frame a worker sends to one socket."""

    __slots__ = ("text",)

    def __init__(self, text):
        self.text = text


def serve(conn, request, path):
    front = conn.front
    settings = front.config.pubsub
    if not request.upgrade or request.header("upgrade").lower() != "websocket":
        return conn.error(400, request)
    channels = channels_of(path, settings.ws_prefix, settings.max_channels)
    if channels is None:
        return conn.error(400, request)
    if not origin_allowed(request, settings.allow_origins):
        log.warning("%s: WebSocket from origin %r refused", conn.address[0], request.header("origin"))
        return conn.error(403, request)
    ws = WSConnection(ConnectionType.SERVER)
    try:
        ws.initiate_upgrade_connection([(n.encode("latin-1"), v.encode("latin-1")) for n, v in request.headers.items()],
                                       request.url)
        next(ws.events())  # the Request
        conn.sock.sendall(ws.send(AcceptConnection()))
    except (LocalProtocolError, RemoteProtocolError, StopIteration) as exc:
        log.info("%s: bad WebSocket handshake: %s", conn.address[0], exc)
        return conn.error(400, request)
    session = Session(conn, ws, channels, settings)
    front.websockets[session.id] = session
    front.relay.subscribe(session.subscriber)
    try:
        session.run()
    except OSError as exc:
        log.debug("%s: WebSocket client gone: %s", conn.address[0], exc)
    finally:
        front.relay.unsubscribe(session.subscriber)
        front.websockets.pop(session.id, None)
    return False


class Session:
    """One open WebSocket."""

    def __init__(self, conn, ws, channels, settings):
        self.conn = conn
        self.ws = ws
        self.channels = channels
        self.settings = settings
        self.id = jobs.new_job_id()
        self.subscriber = Subscriber(channels, settings.client_buffer, conn.notify, conn.abort)
        self._partial = []
        self._partial_size = 0
        self.closed = False
        self.last_heard = time.monotonic()  # when the client last sent anything (a pong counts)
        self.ping_sent = None  # when the last heartbeat ping went out

    def push(self, text):
        """Queue a text frame for this socket (from the answer endpoint)."""
        return self.subscriber.push(Direct(text), len(text))

    def run(self):
        conn = self.conn
        conn.idle = True  # a stream has no end to wait for at shutdown
        if conn.extra:
            self._received(b"".join(conn.extra))
            conn.extra.clear()
        while not self.closed:
            self._flush()
            if self.closed or self.subscriber.items:
                continue
            if self.subscriber.overflow:
                log.info("%s: slow WebSocket client disconnected", conn.address[0])
                self._close(GOING_AWAY, "too slow")
                return
            if conn.sleep(stream=True):
                if not conn.read_ahead(feed=False):
                    return
                data = b"".join(conn.extra)
                conn.extra.clear()
                self._received(data)

    def _flush(self):
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
            elif item.end:
                out.append(self.ws.send(CloseConnection(code=1000, reason="unsubscribed")))
                self.closed = True
                break
            else:
                out.append(self.ws.send(Message(data=item.text())))
        if out:
            self.conn.sock.sendall(b"".join(out))

    def _gone(self):
        """No pong, nor anything else, since the last ping: the peer is dead or cut off."""
        log.info("%s: WebSocket client silent since the last ping (%ss): disconnected",
                 self.conn.address[0], self.settings.heartbeat)
        self.conn.front.stats.silent_clients_dropped += 1
        self.closed = True

    def _received(self, data):
        self.last_heard = time.monotonic()
        try:
            self.ws.receive_data(data)
            for event in self.ws.events():
                self._event(event)
                if self.closed:
                    return
        except RemoteProtocolError as exc:
            log.info("%s: WebSocket protocol error: %s", self.conn.address[0], exc)
            self._close(1002, "protocol error")

    def _event(self, event):
        if isinstance(event, (TextMessage, BytesMessage)):
            self._partial_size += len(event.data)
            if self._partial_size > self.settings.max_frame:
                log.info("%s: WebSocket message over max_frame (%d bytes): closed",
                         self.conn.address[0], self.settings.max_frame)
                self._close(MESSAGE_TOO_BIG, "message too big")
                return
            self._partial.append(event.data)
            if event.message_finished:
                data = "".join(self._partial) if isinstance(event, TextMessage) else b"".join(self._partial)
                self._partial, self._partial_size = [], 0
                self._job(data)
        elif isinstance(event, Ping):
            self.conn.sock.sendall(self.ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            if self.ws.state.name not in ("CLOSED", "LOCAL_CLOSING"):
                self.conn.sock.sendall(self.ws.send(event.response()))
            self.closed = True

    def _close(self, code, reason):
        try:
            self.conn.sock.sendall(self.ws.send(CloseConnection(code=code, reason=reason)))
        except (OSError, LocalProtocolError):
            pass
        self.closed = True

    def _job(self, data):
        front = self.conn.front
        args = {"channel": self.channels[0], "socket": self.id}
        if isinstance(data, str):
            args["data"] = data
        else:
            args["data_base64"] = base64.b64encode(data).decode("ascii")
        front.stats.ws_messages += 1
        job = jobs.encode_job(WS_ACTION, [args], front.respond_to, self.id)
        front.pusher.submit(self.settings.ws_queue, job, None)

