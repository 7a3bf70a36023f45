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

from __future__ import annotations

import collections
import time
import logging
import socket
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

import gevent
import gevent.event
import gevent.lock
import hiredis

from tempest import events, keys, redisconn, resp
from tempest.clusterconn import Address
from tempest.publish import durable_history
from tempest.waiting import Ledger
from tempest.stats import Stats

if TYPE_CHECKING:
    import redis

    from tempest.clusterconn import ClusterConnection
    from tempest.config import Config

log = logging.getLogger(__name__)

PING_INTERVAL = 5.0  # seconds between PINGs on the subscription connection
READ_TIMEOUT = 3 * PING_INTERVAL  # no byte for this long: the connection is dead
CONFIRM_TIMEOUT = 5.0  # how long a new subscriber waits for Redis to confirm SUBSCRIBE
RECONNECT_MAX = 5.0
RECHECK_DELAY = 0.2  # seconds before a refused sharded subscription's slot is looked up again
HEARTBEAT = object()  # pushed to every subscriber every [pubsub] heartbeat seconds


class Revoked:
    """Pushed to a private stream its session no longer allows (tempest.grants): its writer
    ends it (SSE: ``event: revoked``; WebSocket: close code 4403)."""

    __slots__ = ("channels",)

    def __init__(self, channels: list[str]) -> None:
        self.channels = channels

StreamEntries = list[tuple[bytes, dict[bytes, bytes]]]  # XRANGE's reply: (id, fields) pairs


class Subscriber:
    """One SSE or WebSocket client: its channels and its bounded buffer of messages."""

    __slots__ = ("channels", "items", "size", "limit", "notify", "drop", "direct", "overflow", "skip",
                 "ledger", "kind", "_scheduled", "_loop")

    def __init__(self, channels: list[str], limit: int, notify: Callable[[], None],
                 drop: Callable[[], None] | None = None, ledger: Ledger | None = None, kind: str = "sse") -> None:
        self.channels = channels
        self.kind = kind  # "sse" or "websocket": for the metrics
        self.ledger = ledger or Ledger()  # the bytes queued for every slow client, with their bound
        self.drop = drop  # called (from the hub) when the buffer overflows: its writer may be stuck
        # set by an idle writer: writes an item straight to the socket, True when it did; this
        # spares a greenlet switch per client and message, the bulk of a fan-out's cost
        self.direct: Callable[[Any], bool] | None = None
        # events.Message, HEARTBEAT, Revoked, a WebSocket's websocket.Direct, or the bytes left of a frame
        self.items: collections.deque[Any] = collections.deque()
        self.size = 0
        self.limit = limit
        self.notify = notify
        self.overflow = False
        self.skip: dict[str, tuple[int, int]] = {}  # channel -> stream id: drop live messages up to it (replayed)
        self._scheduled = False
        self._loop = gevent.get_hub().loop

    def push(self, item: object, size: int = 0) -> bool:
        """Queue ``item``; False only when this push overflowed the buffer (count it once)."""
        if self.overflow:
            return True  # already dropped: its writer is closing the connection
        if self.direct is not None and not self.items and self.direct(item):
            return True
        self.size += size
        ledger = self.ledger
        ledger.value += size
        if self.size > self.limit or (ledger.limit and ledger.value > ledger.limit):
            self.overflow = True
            self.release()
            if self.drop is not None:
                self._loop.run_callback(self.drop)
        else:
            self.items.append(item)
        self.wake()
        return not self.overflow

    def queue_rest(self, data: bytes) -> None:
        """Queue what the socket did not take of a frame written directly."""
        self.items.append(data)
        self.size += len(data)
        self.ledger.value += len(data)
        self.wake()

    def release(self) -> None:
        """Forget what is queued (the client is gone, or too slow): its bytes leave the ledger."""
        self.ledger.value -= self.size
        self.size = 0
        self.items.clear()

    def wake(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.run_callback(self._run_notify)

    def _run_notify(self) -> None:
        self._scheduled = False
        self.notify()

    def take(self) -> Sequence[Any]:
        """Every queued item, oldest first, minus durable messages already replayed."""
        self.ledger.value -= self.size
        items, self.items, self.size = self.items, collections.deque(), 0
        if self.skip:
            return [m for m in items if not isinstance(m, events.Message) or not _replayed(m, self.skip)]
        return items


def _replayed(message: events.Message, skip: dict[str, tuple[int, int]]) -> bool:
    last = skip.get(message.channel)
    if last is None or message.id is None:
        return False
    position = events.parse_stream_id(message.id)
    return position is not None and position <= last


class Relay:
    def __init__(self, url: str, client: redis.Redis, stats: Stats, settings: Any, ledger: Ledger | None = None) -> None:
        self.url = url
        self.ledger = ledger or Ledger()  # shared with the streamed answers: [front] max_stream_buffer
        self.client = client  # a regular client for XRANGE
        self.stats = stats
        self.settings = settings  # [pubsub]
        self.subscribers: set[Subscriber] = set()
        self._channels: dict[str, set[Subscriber]] = {}  # channel -> its subscribers
        self._confirmed: dict[str, gevent.event.Event] = {}  # channel -> set once Redis confirmed SUBSCRIBE
        self._last_ids: dict[str, str] = {}  # durable channel -> last stream id relayed
        # durable channel -> live messages held while its hole is filled
        self._holding: dict[str, list[events.Message]] = {}
        self._greenlets: list[gevent.Greenlet[..., Any]] = []
        self.client_name: str | None = None  # CLIENT SETNAME of the subscription connections
        # sharded pub/sub ([pubsub] sharded): SSUBSCRIBE, on a cluster a link to each master
        # that serves a channel's slot, found with the lean connection's map of slots
        self.sharded = bool(getattr(settings, "sharded", False))
        self._slots: ClusterConnection | None = None
        if self.sharded and urllib.parse.urlsplit(url).scheme == redisconn.CLUSTER:
            from tempest.clusterconn import ClusterConnection

            self._slots = ClusterConnection(url, timeout=5, connect_timeout=2)
        self._links: dict[Address | None, Link] = {}
        self._link_of: dict[str, Link] = {}  # channel -> the link that carries it
        self.link = Link(self, None)  # the one link, but on a cluster with sharded pub/sub
        if self._slots is None:
            self._links[None] = self.link

    def apply(self, config: Config) -> None:
        """Take a (re)loaded configuration: heartbeat, history and durable channels."""
        self.settings = config.pubsub

    # subscribers

    def durable(self, channel: str) -> bool:
        patterns = [(p, self.settings.history) for p in self.settings.durable]
        return durable_history(patterns, channel) is not None

    def subscribe(self, subscriber: Subscriber) -> bool:
        """Register ``subscriber`` and wait until Redis confirmed each of its channels (when
        Redis is away, until the reconnection did); False if that took over CONFIRM_TIMEOUT:
        the subscriber is registered all the same, and must be unsubscribed."""
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
            self._subscribe(new)
        deadline = time.monotonic() + CONFIRM_TIMEOUT
        for channel in subscriber.channels:
            if not self._confirmed[channel].wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    def _subscribe(self, channels: list[str]) -> None:
        by_link: dict[Link, list[str]] = {}
        for channel in channels:
            link = self._carrier(channel)
            by_link.setdefault(link, []).append(channel)
        for link, theirs in by_link.items():
            link.subscribe(theirs)

    def _carrier(self, channel: str) -> Link:
        """The link of a newly subscribed channel: the one link, or its master's (sharded, on
        a cluster), started when it is the first of its master's."""
        if self._slots is None:
            link = self.link
        else:
            try:
                address = self._slots.master_of(channel)
            except redisconn.ConnectionFailed:  # Redis is away: a seed's link, moved once the map is read
                address = self._slots.seeds[0]
            link = self._links.get(address) or self._start_link(address)
        self._link_of[channel] = link
        link.channels.add(channel)
        return link

    def _start_link(self, address: Address | None) -> Link:
        link = self._links[address] = Link(self, address)
        link.start()
        return link

    def unsubscribe(self, subscriber: Subscriber) -> None:
        subscriber.release()
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
        by_link: dict[Link, list[str]] = {}
        for channel in gone:
            link = self._link_of.pop(channel, self.link)
            link.channels.discard(channel)
            by_link.setdefault(link, []).append(channel)
        for link, theirs in by_link.items():
            link.unsubscribe(theirs)

    def replay(self, channel: str, after: str) -> tuple[bool, list[events.Message]]:
        """Messages of durable ``channel`` after stream id ``after`` (a string, maybe bogus).

        Returns:
            (gap, messages): gap is True when messages may have been lost, because ``after``
            is unknown or older than the history kept.
        """
        position = events.parse_stream_id(after)
        first = self._range(channel)
        if position is None:
            start, gap = "-", True
        else:
            start = "(" + after
            oldest = events.parse_stream_id(first[0][0].decode()) if first else None
            gap = oldest is not None and oldest > position and position != (0, 0)
            last = self._range(channel, newest=True)
            newest = events.parse_stream_id(last[0][0].decode()) if last else None
            if newest is not None and newest < position:
                start, gap = "-", True  # an id from the future: the stream was reset
        entries = self._range(channel, start, count=self.settings.history)
        return gap, [self._entry(channel, entry_id, fields) for entry_id, fields in entries]

    def _range(self, channel: str, start: str = "-", count: int = 1, newest: bool = False) -> StreamEntries:
        """XRANGE of a durable channel's stream from ``start``, or XREVRANGE from its end
        (``newest``): (id, fields) pairs."""
        key = keys.stream(channel)
        entries = self.client.xrevrange(key, count=count) if newest else self.client.xrange(key, min=start, count=count)
        return cast(StreamEntries, entries)  # redis-py types both decode_responses; this client's are bytes

    def _entry(self, channel: str, entry_id: bytes, fields: dict[bytes, bytes]) -> events.Message:
        message = events.decode(channel, fields.get(b"m", b""))
        message.id = entry_id.decode()
        return message

    # the subscription connections

    def start(self) -> None:
        self._greenlets = [gevent.spawn(self._heartbeats)]
        for link in self._links.values():
            link.start()

    def stop(self) -> None:
        gevent.killall(self._greenlets)
        for link in list(self._links.values()):
            link.stop()

    def connected(self, link: Link) -> None:
        """``link`` (re)connected: it subscribes its channels again (holding the live messages
        of each durable one until the hole is filled from its stream)."""
        channels = list(self._channels) if self._slots is None else sorted(link.channels)
        for channel in channels:
            if channel in self._confirmed:
                self._confirmed[channel].clear()
        if channels:
            self._holding.update((c, []) for c in channels if c in self._last_ids)
            link.subscribe(channels)
        log.info("pub/sub connected to Redis%s (%d channels)", f" {link.address[0]}:{link.address[1]}"
                 if link.address else "", len(channels))

    def lost(self, link: Link) -> None:
        """``link``'s connection failed. Sharded, on a cluster: the map of slots is read again
        and each of its channels that another master serves now moves to that master's link."""
        if self._slots is None:
            return
        try:
            self._slots.refresh()
        except redisconn.ConnectionFailed as exc:
            log.debug("pub/sub: cannot read the cluster's slots: %s", exc)
            return
        self._move(sorted(link.channels), link)

    def evicted(self, link: Link, channel: str) -> None:
        """Redis ended a sharded subscription itself (its slot moved to another master)."""
        if self._link_of.get(channel) is not link or channel not in self._channels:
            return  # the reply to our own SUNSUBSCRIBE
        log.info("pub/sub: Redis ended the sharded subscription of %s (its slot moved)", channel)
        if self._slots is not None:
            try:
                self._slots.refresh()
            except redisconn.ConnectionFailed as exc:
                log.debug("pub/sub: cannot read the cluster's slots: %s", exc)
        self._move([channel], link, force=True)

    def _recheck(self, link: Link) -> None:
        """A sharded subscription was refused (its slot is elsewhere, or moving): the map is
        read again, each of the link's channels that another master serves moves there, and
        those still here but not confirmed are subscribed again."""
        link.rechecking = False
        try:
            assert self._slots is not None
            self._slots.refresh()
        except redisconn.ConnectionFailed as exc:
            log.debug("pub/sub: cannot read the cluster's slots: %s", exc)
        self._move(sorted(link.channels), link)
        again = [c for c in link.channels if c in self._confirmed and not self._confirmed[c].is_set()]
        if again and not link.stopped:
            link.subscribe(sorted(again))

    def _move(self, channels: list[str], link: Link, force: bool = False) -> None:
        moving = [c for c in channels if force or self._slots is not None and self._slots.master_of(c) != link.address]
        for channel in moving:
            link.channels.discard(channel)
            self._link_of.pop(channel, None)
            if channel in self._confirmed:
                self._confirmed[channel].clear()
            if channel in self._last_ids:
                self._holding.setdefault(channel, [])
        if moving:
            log.info("pub/sub: %d channels move to the masters that serve them now", len(moving))
            self._subscribe(moving)
        if not link.channels and link is not self.link and self._links.get(link.address) is link:
            del self._links[link.address]
            link.stop()

    def _handle(self, reply: Any, link: Link | None = None) -> None:
        link = link or self.link
        if isinstance(reply, hiredis.ReplyError):
            if self._slots is not None and str(reply).startswith(("MOVED ", "ASK ", "CLUSTERDOWN", "TRYAGAIN")):
                log.info("pub/sub: Redis replied %s: the channels of that link are looked at again", reply)
                if not link.rechecking:
                    link.rechecking = True
                    gevent.spawn_later(RECHECK_DELAY, self._recheck, link)
                return
            log.error("pub/sub: Redis replied %s", reply)
            return
        kind = reply[0]
        if kind == b"message" or kind == b"smessage":
            self._dispatch(reply[1].decode("utf-8", "replace"), reply[2])
        elif kind == b"subscribe" or kind == b"ssubscribe":
            channel = reply[1].decode("utf-8", "replace")
            if link.confirm(channel) and (event := self._confirmed.get(channel)) is not None:
                event.set()
            if channel in self._holding:
                gevent.spawn(self._fill_hole, channel)
        elif kind == b"sunsubscribe":
            self.evicted(link, reply[1].decode("utf-8", "replace"))

    def _dispatch(self, channel: str, payload: bytes) -> None:
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

    def _fan_out(self, message: events.Message, subscribers: Iterable[Subscriber]) -> None:
        if message.id is not None:
            self._last_ids[message.channel] = message.id
        self.stats.messages_relayed += 1
        size = len(message.sse())
        for subscriber in list(subscribers):
            if not subscriber.push(message, size):
                self.stats.slow_clients_dropped += 1

    def _fill_hole(self, channel: str) -> None:
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
            position = events.parse_stream_id(message.id)  # None without an id
            if last is None or position is None or position > last:
                self._fan_out(message, self._channels.get(channel, ()))

    def _heartbeats(self) -> None:
        while True:
            gevent.sleep(self.settings.heartbeat)
            for subscriber in list(self.subscribers):
                subscriber.push(HEARTBEAT)


class Link:
    """One subscription connection: to any node (classic pub/sub: every node has every
    message), or, sharded on a cluster, to the master at ``address`` for the channels it
    serves. A plain socket read by one greenlet with hiredis, pinged every PING_INTERVAL so
    that a half-open connection is found by the read timeout; when it breaks, it reconnects
    with backoff and the relay subscribes its channels again."""

    def __init__(self, relay: Relay, address: Address | None) -> None:
        self.relay = relay
        self.address = address
        self.channels: set[str] = set()  # sharded on a cluster: the channels it carries
        self.verbs = ("SSUBSCRIBE", "SUNSUBSCRIBE") if relay.sharded else ("SUBSCRIBE", "UNSUBSCRIBE")
        self.sock: socket.socket | None = None
        self._write = gevent.lock.Semaphore()
        # channel -> SUBSCRIBE replies still to come on this connection: a channel is confirmed by
        # the reply to its latest SUBSCRIBE, not by that of one sent before an UNSUBSCRIBE
        self._awaiting: dict[str, int] = {}
        self._greenlet: gevent.Greenlet[..., Any] | None = None
        self.stopped = False
        self.rechecking = False  # a _recheck is scheduled

    def start(self) -> None:
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        """Close the link for good (from its own greenlet too: its read then ends quietly)."""
        self.stopped = True
        greenlet, self._greenlet = self._greenlet, None
        if greenlet is not None and greenlet is not gevent.getcurrent():
            greenlet.kill(block=False)
        self._close()

    def subscribe(self, channels: list[str]) -> None:
        if self.sock is None:
            return  # not connected: the reconnection subscribes every channel
        for channel in channels:
            self._awaiting[channel] = self._awaiting.get(channel, 0) + 1
        self._command(self.verbs[0], channels)

    def unsubscribe(self, channels: list[str]) -> None:
        self._command(self.verbs[1], channels)

    def _command(self, verb: str, channels: list[str]) -> None:
        """One SUBSCRIBE for all the channels; sharded, one each (a cluster refuses channels of
        several slots in one), in one write."""
        if self.relay.sharded:
            self.send_all([[verb, channel] for channel in channels])
        else:
            self.send_all([[verb, *channels]])

    def confirm(self, channel: str) -> bool:
        """A SUBSCRIBE's reply came: True when it is the reply to the latest one."""
        awaiting = self._awaiting.pop(channel, 1) - 1
        if awaiting > 0:
            self._awaiting[channel] = awaiting  # a later SUBSCRIBE of it is still to be confirmed
            return False
        return True

    def send(self, *command: str) -> None:
        self.send_all([list(command)])

    def send_all(self, commands: list[list[str]]) -> None:
        sock = self.sock
        if sock is None:
            return  # not connected: the reconnection subscribes every channel
        data = b"".join(resp.pack(command) for command in commands)
        try:
            with self._write:
                sock.sendall(data)
        except OSError as exc:
            log.debug("pub/sub write failed: %s", exc)

    def _run(self) -> None:
        delay = 0.1
        relay = self.relay
        while True:
            try:
                sock, reader = self._connect()
                delay = 0.1
                self._read(sock, reader)
            except (OSError, hiredis.ProtocolError, ConnectionError) as exc:
                if self.stopped:
                    return  # its channels went to other links
                log.warning("pub/sub connection to Redis lost (%s); reconnecting in %.1fs", exc, delay)
            self._close()
            relay.stats.relay_reconnects += 1
            relay.lost(self)
            if self.address is not None and not self.channels:
                return  # its channels moved to other masters: no link is needed here any more
            gevent.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    def _connect(self) -> tuple[socket.socket, hiredis.Reader]:
        relay = self.relay
        url = urllib.parse.urlparse(relay.url)
        if self.address is None:
            sock = redisconn.open_socket(url, connect_timeout=5)
        else:
            sock = redisconn.open_node(url, self.address, connect_timeout=5)
        sock.settimeout(READ_TIMEOUT)
        reader = hiredis.Reader()
        if url.password:
            auth = [url.username, url.password] if url.username else [url.password]
            sock.sendall(resp.pack(["AUTH", *[urllib.parse.unquote(a) for a in auth]]))
            reply = redisconn.read_reply(sock, reader)
            if isinstance(reply, hiredis.ReplyError):
                raise ConnectionError(f"AUTH refused: {reply}")
        if relay.client_name:
            sock.sendall(resp.pack(["CLIENT", "SETNAME", relay.client_name]))
            reply = redisconn.read_reply(sock, reader)
            if isinstance(reply, hiredis.ReplyError):  # an ACL without +client|setname: harmless
                log.debug("Redis refused to name the pub/sub connection: %s", reply)
        self.sock = sock
        self._awaiting = {}  # a new connection: no reply of the old one will come
        relay.connected(self)
        return sock, reader

    def _close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()

    def _read(self, sock: socket.socket, reader: hiredis.Reader) -> None:
        pinger = gevent.spawn(self._ping)
        handle = self.relay._handle
        try:
            while True:
                data = sock.recv(256 * 1024)
                if not data:
                    raise ConnectionError("closed by Redis")
                reader.feed(data)
                while (reply := reader.gets()) is not False:
                    handle(reply, self)
        finally:
            pinger.kill(block=False)

    def _ping(self) -> None:
        while True:
            gevent.sleep(PING_INTERVAL)
            self.send("PING")
