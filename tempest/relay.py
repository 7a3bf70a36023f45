"""The pub/sub relay: one subscription connection per process, fanned out in memory to every
SSE and WebSocket client.

Channels are reference-counted: the first subscriber of a channel sends SUBSCRIBE, the last
one to leave sends UNSUBSCRIBE. Each message is decoded once and pushed to each subscriber's
bounded buffer; a subscriber whose buffer overflows is disconnected and counted (it reconnects
and resumes). The connection is a plain socket read by one greenlet with hiredis, pinged every
PING_INTERVAL so that a half-open connection is found by the read timeout; when it breaks, the
relay reconnects with backoff, subscribes every live channel again, and fills the hole of each
durable channel from its stream. Clients stay connected throughout.
"""

import collections
import logging
import urllib.parse

import gevent
import gevent.event
import gevent.lock
import hiredis

from tempest import events, keys, redisconn, resp
from tempest.publish import durable_history

log = logging.getLogger(__name__)

PING_INTERVAL = 5.0  # seconds between PINGs on the subscription connection
READ_TIMEOUT = 3 * PING_INTERVAL  # no byte for this long: the connection is dead
CONFIRM_TIMEOUT = 5.0  # how long a new subscriber waits for Redis to confirm SUBSCRIBE
RECONNECT_MAX = 5.0
HEARTBEAT = object()  # pushed to every subscriber every [pubsub] heartbeat seconds


class Subscriber:
    """One SSE or WebSocket client: its channels and its bounded buffer of messages."""

    __slots__ = ("channels", "items", "size", "limit", "notify", "drop", "direct", "overflow", "skip",
                 "_scheduled", "_loop")

    def __init__(self, channels, limit, notify, drop=None):
        self.channels = channels
        self.drop = drop  # called (from the hub) when the buffer overflows: its writer may be stuck
        # set by an idle writer: writes an item straight to the socket, True when it did; this
        # spares a greenlet switch per client and message, the bulk of a fan-out's cost
        self.direct = None
        self.items = collections.deque()
        self.size = 0
        self.limit = limit
        self.notify = notify
        self.overflow = False
        self.skip = {}  # channel -> stream id (tuple): drop live messages up to it (replayed)
        self._scheduled = False
        self._loop = gevent.get_hub().loop

    def push(self, item, size=0):
        """Queue ``item``; False only when this push overflowed the buffer (count it once)."""
        if self.overflow:
            return True  # already dropped: its writer is closing the connection
        if self.direct is not None and not self.items and self.direct(item):
            return True
        self.size += size
        if self.size > self.limit:
            self.overflow = True
            self.items.clear()
            if self.drop is not None:
                self._loop.run_callback(self.drop)
        else:
            self.items.append(item)
        self.wake()
        return not self.overflow

    def wake(self):
        if not self._scheduled:
            self._scheduled = True
            self._loop.run_callback(self._run_notify)

    def _run_notify(self):
        self._scheduled = False
        self.notify()

    def take(self):
        """Every queued item, oldest first, minus durable messages already replayed."""
        items, self.items, self.size = self.items, collections.deque(), 0
        if self.skip:
            items = [m for m in items if m is HEARTBEAT or not _replayed(m, self.skip)]
        return items


def _replayed(message, skip):
    last = skip.get(message.channel)
    return last is not None and message.id is not None and events.parse_stream_id(message.id) <= last


class Relay:
    def __init__(self, url, client, stats, settings):
        self.url = url
        self.client = client  # a regular client for XRANGE
        self.stats = stats
        self.settings = settings
        self.subscribers = set()
        self._channels = {}  # channel -> set of subscribers
        self._confirmed = {}  # channel -> Event set once Redis confirmed SUBSCRIBE
        self._last_ids = {}  # durable channel -> last stream id relayed
        self._holding = {}  # durable channel -> live messages held while its hole is filled
        self._sock = None
        self._write = gevent.lock.Semaphore()
        self._greenlets = []

    def apply(self, config):
        """Take a (re)loaded configuration: heartbeat, history and durable channels."""
        self.settings = config.pubsub

    # subscribers

    def durable(self, channel):
        patterns = [(p, self.settings.history) for p in self.settings.durable]
        return durable_history(patterns, channel) is not None

    def subscribe(self, subscriber):
        """Register ``subscriber``; wait (bounded) until Redis confirmed its channels."""
        self.subscribers.add(subscriber)
        self.stats.subscribers += 1
        new = []
        for channel in subscriber.channels:
            if channel not in self._channels:
                self._channels[channel] = set()
                self._confirmed[channel] = gevent.event.Event()
                new.append(channel)
            self._channels[channel].add(subscriber)
        if new:
            self._send("SUBSCRIBE", *new)
        if self._sock is not None:  # when Redis is away, the reconnection subscribes
            for channel in subscriber.channels:
                self._confirmed[channel].wait(CONFIRM_TIMEOUT)

    def unsubscribe(self, subscriber):
        if subscriber not in self.subscribers:
            return
        self.subscribers.discard(subscriber)
        self.stats.subscribers -= 1
        gone = []
        for channel in subscriber.channels:
            members = self._channels.get(channel)
            if members is not None:
                members.discard(subscriber)
                if not members:
                    del self._channels[channel]
                    self._confirmed.pop(channel, None)
                    self._last_ids.pop(channel, None)
                    gone.append(channel)
        if gone:
            self._send("UNSUBSCRIBE", *gone)

    def replay(self, channel, after):
        """Messages of durable ``channel`` after stream id ``after`` (a string, maybe bogus).

        Returns:
            (gap, messages): gap is True when messages may have been lost, because ``after``
            is unknown or older than the history kept.
        """
        position = events.parse_stream_id(after)
        first = self.client.xrange(keys.stream(channel), count=1)
        if position is None:
            start, gap = "-", True
        else:
            start = "(" + after
            oldest = events.parse_stream_id(first[0][0].decode()) if first else None
            gap = oldest is not None and oldest > position and position != (0, 0)
            last = self.client.xrevrange(keys.stream(channel), count=1)
            if last and events.parse_stream_id(last[0][0].decode()) < position:
                start, gap = "-", True  # an id from the future: the stream was reset
        entries = self.client.xrange(keys.stream(channel), min=start, count=self.settings.history)
        return gap, [self._entry(channel, entry_id, fields) for entry_id, fields in entries]

    def _entry(self, channel, entry_id, fields):
        message = events.decode(channel, fields.get(b"m", b""))
        message.id = entry_id.decode()
        return message

    # the subscription connection

    def start(self):
        self._greenlets = [gevent.spawn(self._run), gevent.spawn(self._heartbeats)]

    def stop(self):
        gevent.killall(self._greenlets)
        self._close()

    def _send(self, *command):
        sock = self._sock
        if sock is None:
            return  # not connected: _connect subscribes every channel
        data = resp.pack(command)
        try:
            with self._write:
                sock.sendall(data)
        except OSError as exc:
            log.debug("pub/sub write failed: %s", exc)

    def _run(self):
        delay = 0.1
        while True:
            try:
                self._connect()
                delay = 0.1
                self._read()
            except (OSError, hiredis.ProtocolError, ConnectionError) as exc:
                log.warning("pub/sub connection to Redis lost (%s); reconnecting in %.1fs", exc, delay)
            self._close()
            self.stats.relay_reconnects += 1
            gevent.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    def _connect(self):
        url = urllib.parse.urlparse(self.url)
        sock = redisconn.open_socket(url, connect_timeout=5)
        sock.settimeout(READ_TIMEOUT)
        reader = hiredis.Reader()
        if url.password:
            auth = [url.username, url.password] if url.username else [url.password]
            sock.sendall(resp.pack(["AUTH", *[urllib.parse.unquote(a) for a in auth]]))
            reply = redisconn.read_reply(sock, reader)
            if isinstance(reply, hiredis.ReplyError):
                raise ConnectionError(f"AUTH refused: {reply}")
        self._reader = reader
        self._sock = sock
        channels = list(self._channels)
        for channel in channels:
            self._confirmed[channel].clear()
        if channels:
            self._holding.update((c, []) for c in channels if c in self._last_ids)
            self._send("SUBSCRIBE", *channels)
        log.info("pub/sub connected to Redis (%d channels)", len(channels))

    def _close(self):
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _read(self):
        sock, reader = self._sock, self._reader
        pinger = gevent.spawn(self._ping)
        try:
            while True:
                data = sock.recv(256 * 1024)
                if not data:
                    raise ConnectionError("closed by Redis")
                reader.feed(data)
                while (reply := reader.gets()) is not False:
                    self._handle(reply)
        finally:
            pinger.kill(block=False)

    def _ping(self):
        while True:
            gevent.sleep(PING_INTERVAL)
            self._send("PING")

    def _handle(self, reply):
        if isinstance(reply, hiredis.ReplyError):
            log.error("pub/sub: Redis replied %s", reply)
            return
        kind = reply[0]
        if kind == b"message":
            self._dispatch(reply[1].decode("utf-8", "replace"), reply[2])
        elif kind == b"subscribe":
            channel = reply[1].decode("utf-8", "replace")
            event = self._confirmed.get(channel)
            if event is not None:
                event.set()
            if channel in self._holding:
                gevent.spawn(self._fill_hole, channel)

    def _dispatch(self, channel, payload):
        subscribers = self._channels.get(channel)
        if not subscribers:
            return
        try:
            message = events.decode(channel, payload)
        except events.BadMessage as exc:
            self.stats.bad_messages += 1
            log.warning("dropped message: %s", exc)
            return
        if channel in self._holding:
            self._holding[channel].append(message)
            return
        self._fan_out(message, subscribers)

    def _fan_out(self, message, subscribers):
        if message.id is not None:
            self._last_ids[message.channel] = message.id
        self.stats.messages_relayed += 1
        size = len(message.sse())
        for subscriber in list(subscribers):
            if not subscriber.push(message, size):
                self.stats.slow_clients_dropped += 1

    def _fill_hole(self, channel):
        """After a reconnection: relay what a durable channel got while we were away."""
        held = self._holding.get(channel, [])
        try:
            after = self._last_ids.get(channel)
            if after is not None:
                _, missed = self.replay(channel, after)
                for message in missed:
                    self._fan_out(message, self._channels.get(channel, ()))
                if missed:
                    log.info("pub/sub: %d messages of %s relayed after reconnection", len(missed), channel)
        except Exception as exc:  # Redis went away again: the next reconnection retries
            log.warning("pub/sub: cannot fill the hole of %s: %s", channel, exc)
        finally:
            self._holding.pop(channel, None)
        last = events.parse_stream_id(self._last_ids.get(channel))
        for message in held:
            if last is None or message.id is None or events.parse_stream_id(message.id) > last:
                self._fan_out(message, self._channels.get(channel, ()))

    def _heartbeats(self):
        while True:
            gevent.sleep(self.settings.heartbeat)
            for subscriber in list(self.subscribers):
                subscriber.push(HEARTBEAT)
