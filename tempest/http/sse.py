"""Server-Sent Events: ``GET /sub/<channel>[,<channel>...]`` relays the channels' messages.

The response head goes out at once (EventSource's ``open`` fires before any message). On a
durable channel each event carries its stream id; a client reconnecting with ``Last-Event-ID``
first receives what it missed (after an ``event: gap`` if some of it is no longer kept), then
the live feed: the subscription is made before the replay is read, and live messages already
replayed are skipped, so there is neither a hole nor a duplicate between the two.
"""

import logging
import re
import urllib.parse

from tempest import events
from tempest.relay import HEARTBEAT, Subscriber

log = logging.getLogger(__name__)

_CHANNEL = re.compile(r"^[^\x00-\x20,\x7f]+$")
HEARTBEAT_FRAME = b": heartbeat\n\n"


def channels_of(path, prefix, limit):
    """The channels named in the path after ``prefix``, or None if malformed."""
    names = urllib.parse.unquote(path[len(prefix):]).split(",")
    if not names or len(names) > limit or not all(_CHANNEL.match(n) for n in names):
        return None
    return list(dict.fromkeys(names))


def cors_headers(request, allowed):
    origin = request.header("origin")
    if origin and ("*" in allowed or origin in allowed):
        return [(b"Access-Control-Allow-Origin", origin.encode("latin-1")), (b"Vary", b"Origin")]
    return []


def serve(conn, request, path):
    settings = conn.front.config.pubsub
    relay = conn.front.relay
    channels = channels_of(path, settings.sub_prefix, settings.max_channels)
    if channels is None:
        return conn.error(400, request)
    last_event_id = request.header("last-event-id") or _query(request, "lastEventId")
    durable = [c for c in channels if relay.durable(c)]
    subscriber = Subscriber(channels, settings.client_buffer, conn.notify, conn.abort)
    relay.subscribe(subscriber)
    try:
        head = (b"HTTP/1.1 200 OK\r\nServer: tempest\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
                b"Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\nConnection: close\r\n")
        head += b"".join(b"%s: %s\r\n" % pair for pair in cors_headers(request, settings.allow_origins))
        conn.sock.sendall(head + b"\r\n: ok\n\n")
        if request.method == "HEAD":
            return False
        positions = {}
        if last_event_id and durable:
            _replay(conn, relay, subscriber, durable, last_event_id, positions)
        _stream(conn, subscriber, durable, positions)
    except OSError as exc:
        log.debug("%s: SSE client gone: %s", conn.address[0], exc)
    finally:
        relay.unsubscribe(subscriber)
    return False


def _query(request, name):
    query = request.url.decode("latin-1").partition("?")[2]
    values = urllib.parse.parse_qs(query).get(name)
    return values[0] if values else ""


def _replay(conn, relay, subscriber, durable, last_event_id, positions):
    wanted = _positions(last_event_id, durable)
    frames = []
    for channel in durable:
        gap, messages = relay.replay(channel, wanted.get(channel, ""))
        if gap:
            frames.append(b"event: gap\ndata: %s\n\n" % channel.encode())
        for message in messages:
            positions[channel] = message.id
            frames.append(message.sse(_event_id(message, durable, positions)))
        if messages:
            subscriber.skip[channel] = events.parse_stream_id(messages[-1].id)
        elif channel in wanted:
            positions[channel] = wanted[channel]
    if frames:
        conn.sock.sendall(b"".join(frames))


def _positions(last_event_id, durable):
    """Last-Event-ID as {channel: stream id}: a bare id (one durable channel) or
    ``channel=id,channel=id`` (several)."""
    if "=" not in last_event_id:
        return {durable[0]: last_event_id} if len(durable) == 1 else {c: "" for c in durable}
    found = {}
    for part in last_event_id.split(","):
        channel, _, stream_id = part.rpartition("=")
        found[channel] = stream_id
    return found


def _event_id(message, durable, positions):
    """The SSE id: the stream id, or every durable channel's position when there are several."""
    if message.id is None or len(durable) < 2:
        return None
    positions[message.channel] = message.id
    return ",".join(f"{c}={positions[c]}" for c in durable if c in positions)


def _stream(conn, subscriber, durable, positions):
    conn.idle = True  # a stream has no end to wait for at shutdown
    direct = _direct_writer(conn, subscriber) if len(durable) < 2 else None
    while True:
        frames = []
        for item in subscriber.take():
            if item is HEARTBEAT:
                frames.append(HEARTBEAT_FRAME)
                continue
            if isinstance(item, bytes):  # the rest of a frame the direct writer began
                frames.append(item)
                continue
            frames.append(item.sse(_event_id(item, durable, positions)))
            if item.end:
                conn.sock.sendall(b"".join(frames))
                return
        if frames:
            conn.sock.sendall(b"".join(frames))
        if subscriber.overflow:
            log.info("%s: slow SSE client disconnected (buffer over %d bytes)", conn.address[0], subscriber.limit)
            return
        if subscriber.items:
            continue  # pushed while we were writing: its wake-up found nobody asleep
        subscriber.direct = direct
        try:
            readable = conn.sleep(stream=True)
        finally:
            subscriber.direct = None
        if readable and not conn.read_ahead(feed=False):
            return
        conn.extra.clear()  # whatever an SSE client sends is ignored


def _direct_writer(conn, subscriber):
    """Write a message straight from the relay's fan-out while the stream's greenlet sleeps
    (one frame per message, shared by every client), or return False to queue it."""
    raw = conn.sock._sock

    def direct(item):
        if item is HEARTBEAT:
            frame = HEARTBEAT_FRAME
        elif item.end:
            return False  # the stream's greenlet ends the stream
        else:
            last = subscriber.skip.get(item.channel)
            if last is not None and item.id is not None:
                if events.parse_stream_id(item.id) <= last:
                    return True  # already replayed
                del subscriber.skip[item.channel]
            frame = item.sse()
        try:
            sent = raw.send(frame)
        except OSError:  # would block, or the client is gone: the greenlet deals with it
            return False
        if sent < len(frame):
            subscriber.items.append(frame[sent:])
            subscriber.size += len(frame) - sent
            subscriber.wake()
        return True

    return direct
