"""Server-Sent Events: ``GET /sub/<channel>[,<channel>...]`` relays the channels' messages.

The response head goes out at once (EventSource's ``open`` fires before any message). On a
durable channel each event carries its stream id; a client reconnecting with ``Last-Event-ID``
first receives what it missed (after an ``event: gap`` if some of it is no longer kept), then
the live feed: the subscription is made before the replay is read, and live messages already
replayed are skipped, so there is neither a hole nor a duplicate between the two. A stream
naming a private channel is admitted first (tempest.grants: 403 when the session does not
allow it) and ends with ``event: revoked`` once the session no longer does.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from typing import TYPE_CHECKING, Any, Callable

from tempest import events
from tempest.http.connection import Connection
from tempest.http.request import Request
from tempest.http.response import Framing
from tempest.relay import HEARTBEAT, Relay, Revoked, Subscriber

if TYPE_CHECKING:
    from tempest.config import Config
    from tempest.grants import Access
    from tempest.stats import Stats

log = logging.getLogger(__name__)

_CHANNEL = re.compile(r"^[^\x00-\x20,\x7f]+$")
HEARTBEAT_FRAME = b": heartbeat\n\n"
HEAD = [(b"Content-Type", b"text/event-stream; charset=utf-8"), (b"Cache-Control", b"no-cache"),
        (b"X-Accel-Buffering", b"no")]


def channels_of(path: str, prefix: str, limit: int) -> list[str] | None:
    """The channels named in the path after ``prefix``, or None if malformed."""
    names = urllib.parse.unquote(path[len(prefix):]).split(",")
    if not names or len(names) > limit or not all(_CHANNEL.match(n) for n in names):
        return None
    return list(dict.fromkeys(names))


def cors_headers(request: Request, allowed: tuple[str, ...]) -> list[tuple[bytes, bytes]]:
    origin = request.header("origin")
    if origin and ("*" in allowed or origin in allowed):
        return [(b"Access-Control-Allow-Origin", origin.encode("latin-1")), (b"Vary", b"Origin")]
    return []


class EventStreams:
    """The handler of ``GET <sub_prefix><channels>``."""

    def __init__(self, relay: Relay, stats: Stats, access: Access | None = None) -> None:
        self.relay = relay
        self.stats = stats
        self.access = access  # who may subscribe to private channels (tempest.grants); None: anyone

    route = ("sse", "")

    def apply(self, config: Config) -> None:
        self.settings = config.pubsub
        self.route = ("sse", config.pubsub.sub_prefix)

    def serve(self, conn: Connection, request: Request, path: str) -> bool:
        settings, relay = self.settings, self.relay
        channels = channels_of(path, settings.sub_prefix, settings.max_channels)
        if channels is None:
            return conn.error(400, request)
        admission = self.access.admit(request, conn.peer, channels) if self.access is not None else None
        if admission is not None:
            if admission.status == 400:
                return conn.error(400, request)
            if admission.status != 200:
                return conn.respond(request, *admission.refusal())
            channels = admission.channels
        last_event_id = request.header("last-event-id") or _query(request, "lastEventId")
        durable = [c for c in channels if relay.durable(c)]
        subscriber = Subscriber(channels, settings.client_buffer, conn.notify, conn.abort, relay.ledger)
        confirmed = relay.subscribe(subscriber)  # the head (EventSource's open) only once Redis subscribed
        parked = False
        try:
            if not confirmed:
                log.warning("%s: Redis did not confirm the subscription to %s: 503", conn.peer, ",".join(channels))
                return conn.error(503, request)
            conn.respond_head(request, 200, HEAD + cors_headers(request, settings.allow_origins),
                              Framing.UNTIL_CLOSE, b"" if request.method == "HEAD" else b": ok\n\n")
            if request.method == "HEAD":
                return False
            conn.begin_stream()
            if admission is not None and self.access is not None:
                self.access.watch(admission.watch, subscriber)  # ended once no longer allowed
            positions: dict[str, str] = {}
            if last_event_id and durable:
                _replay(conn, relay, subscriber, durable, last_event_id, positions)
            stream = Stream(self, conn, request, subscriber, durable, positions, admission)
            parked = stream.run()
        except OSError as exc:
            log.debug("%s: SSE client gone: %s", conn.peer, exc)
        finally:
            if not parked:
                self.end(subscriber, admission)
        return False

    def end(self, subscriber: Subscriber, admission: Any) -> None:
        self.relay.unsubscribe(subscriber)
        if admission is not None and self.access is not None:
            self.access.unwatch(admission.watch)


class Stream:
    """An SSE stream after its head: it writes what the subscriber has, then parks the
    connection (no greenlet while idle: Connection.park) until the subscriber or the client
    wakes it, and so on until the stream is over."""

    def __init__(self, streams: EventStreams, conn: Connection, request: Request, subscriber: Subscriber,
                 durable: list[str], positions: dict[str, str], admission: Any) -> None:
        self.streams, self.conn, self.request, self.subscriber = streams, conn, request, subscriber
        self.durable, self.positions, self.admission = durable, positions, admission
        self.direct = _direct_writer(conn, subscriber) if len(durable) < 2 else None

    def run(self) -> bool:
        """Write what is there; True: parked (the stream goes on), False: it is over."""
        if not self._step(b""):
            return False
        self.conn.park(self.request, self._step, self._end)
        return True

    def _step(self, received: bytes) -> bool:
        """Write what the subscriber holds (what an SSE client sends is ignored); True when
        there is nothing left to write: the relay writes to the socket itself meanwhile."""
        self.subscriber.direct = None
        if not _stream(self.conn, self.subscriber, self.durable, self.positions):
            return False
        self.subscriber.direct = self.direct
        return True

    def _end(self) -> None:
        self.subscriber.direct = None
        self.streams.end(self.subscriber, self.admission)


def _query(request: Request, name: str) -> str:
    values = urllib.parse.parse_qs(request.query()).get(name)
    return values[0] if values else ""


def _replay(conn: Connection, relay: Relay, subscriber: Subscriber, durable: list[str], last_event_id: str,
            positions: dict[str, str]) -> None:
    wanted = _positions(last_event_id, durable)
    frames = []
    for channel in durable:
        gap, messages = relay.replay(channel, wanted.get(channel, ""))
        if gap:
            frames.append(b"event: gap\ndata: %s\n\n" % channel.encode())
        for message in messages:
            assert message.id is not None  # a message replayed from the stream has its id
            positions[channel] = message.id
            frames.append(message.sse(_event_id(message, durable, positions)))
        if messages:
            last = events.parse_stream_id(messages[-1].id)
            if last is not None:  # a stream id, as every id Redis gives
                subscriber.skip[channel] = last
        elif channel in wanted:
            positions[channel] = wanted[channel]
    if frames:
        conn.send(b"".join(frames))


def _positions(last_event_id: str, durable: list[str]) -> dict[str, str]:
    """Last-Event-ID as {channel: stream id}: a bare id (one durable channel) or
    ``channel=id,channel=id`` (several)."""
    if "=" not in last_event_id:
        return {durable[0]: last_event_id} if len(durable) == 1 else {c: "" for c in durable}
    found = {}
    for part in last_event_id.split(","):
        channel, _, stream_id = part.rpartition("=")
        found[channel] = stream_id
    return found


def _event_id(message: events.Message, durable: list[str], positions: dict[str, str]) -> str | None:
    """The SSE id: the stream id, or every durable channel's position when there are several."""
    if message.id is None or len(durable) < 2:
        return None
    positions[message.channel] = message.id
    return ",".join(f"{c}={positions[c]}" for c in durable if c in positions)


def _stream(conn: Connection, subscriber: Subscriber, durable: list[str], positions: dict[str, str]) -> bool:
    """Write what the subscriber holds; True: nothing left (wait for more), False: the stream
    is over (its end, a revocation, a slow client)."""
    while True:
        frames = []
        for item in subscriber.take():
            if item is HEARTBEAT:
                frames.append(HEARTBEAT_FRAME)
                continue
            if isinstance(item, bytes):  # the rest of a frame the direct writer began
                frames.append(item)
                continue
            if isinstance(item, Revoked):  # the session no longer allows it (tempest.grants)
                frames.append(b"event: revoked\ndata: %s\n\n" % ",".join(item.channels).encode())
                conn.send(b"".join(frames))
                return False
            frames.append(item.sse(_event_id(item, durable, positions)))
            if item.end:
                conn.send(b"".join(frames))
                return False
        if frames:
            conn.send(b"".join(frames))
        if subscriber.overflow:
            log.info("%s: slow SSE client disconnected (buffer over %d bytes)", conn.peer, subscriber.limit)
            return False
        if subscriber.items:
            continue  # pushed while we were writing: its wake-up found nobody asleep
        return True


def _direct_writer(conn: Connection, subscriber: Subscriber) -> Callable[[Any], bool]:
    """Write a message straight from the relay's fan-out while the stream's greenlet sleeps
    (one frame per message, shared by every client), or return False to queue it."""
    def direct(item: Any) -> bool:
        if item is HEARTBEAT:
            frame = HEARTBEAT_FRAME
        elif isinstance(item, Revoked) or item.end:
            return False  # the stream's greenlet ends the stream
        else:
            last = subscriber.skip.get(item.channel)
            if last is not None and item.id is not None:
                position = events.parse_stream_id(item.id)
                if position is not None and position <= last:
                    return True  # already replayed
                del subscriber.skip[item.channel]
            frame = item.sse()
        sent = conn.send_nowait(frame)
        if sent is None:  # would block, or the client is gone: the greenlet deals with it
            return False
        if sent < len(frame):
            subscriber.queue_rest(frame[sent:])
        return True

    return direct
