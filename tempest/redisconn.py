"""A lean pipelined Redis connection: the pusher, the workers' jobs and answers, the redeliverer.

redis-py checks a connection's health at every pool checkout and builds several objects per
command; under gevent that cost a third of an RPUSH. This connection packs commands with
``resp.pack``, writes a whole batch in one send and reads the replies with one hiredis
Reader. It never retries: after any error it is closed, and the next batch reconnects; a
connection that Redis closed while it was idle is noticed before a batch and replaced (after a
Sentinel failover the Sentinel closes the clients of the demoted master, and the new connection
asks the Sentinels for the master). Also here: the redis+sentinel:// URL, for this connection
and for redis-py clients, and ``connect``, which gives a tempest.clusterconn.ClusterConnection
(the same interface, one RawConnection per master) for a redis+cluster:// URL.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import hiredis

if TYPE_CHECKING:  # imported by client(): redis-py costs a worker's start 0.2 s of CPU (it imports its asyncio side)
    import redis

from tempest import resp, tls
from tempest.errors import TempestError
from tempest.redisurl import CLUSTER, SENTINEL, cluster_parts, sentinel_parts

RECV_SIZE = 256 * 1024
GEVENT_SOCKETS = "gevent._socket3"  # the module of gevent's plain sockets (its TLS ones are gevent._ssl3's)

log = logging.getLogger(__name__)


class ConnectionFailed(TempestError):
    """The lean connection failed (the batch's outcome is unknown) or Redis refused AUTH/SELECT."""


class RawConnection:
    """A lean connection to the Redis (or RESP server) of ``url``; ``greeting`` commands are
    sent after AUTH and SELECT on each (re)connection, their replies ignored (an answer
    endpoint's ``ACTIONS``, which a Redis would refuse)."""

    def __init__(self, url: str, timeout: float = 10.0, connect_timeout: float = 2.0,
                 greeting: Iterable[resp.Command] = ()) -> None:
        self.url = urllib.parse.urlparse(url)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.greeting = list(greeting)
        self._sock: socket.socket | None = None
        self._reader: hiredis.Reader | None = None
        self.connects = 0  # connections made (the metrics' reconnects: all but the first)

    def execute(self, commands: Sequence[resp.Command]) -> list[Any]:
        """Send every command (a list of str/bytes/int) in one write; return their replies in
        order (a hiredis.ReplyError for a command Redis refused).

        Raises:
            ConnectionFailed: the connection failed; the connection is closed.
        """
        self.send(commands)
        return self.receive(len(commands))

    def send(self, commands: Sequence[resp.Command]) -> None:
        """The first half of ``execute``: send every command in one write (connecting first
        if need be); ``receive`` reads their replies.

        Raises:
            ConnectionFailed: the connection failed; the connection is closed.
        """
        try:
            sock, reader = self._sock, self._reader
            if sock is not None and _readable(sock):
                # between two batches Redis sends nothing: a readable socket was closed (a
                # Redis restart, an idle timeout) or is out of step; a new one, not a failed batch
                self.close()
                sock = None
            if sock is None or reader is None:
                sock, reader = self._connect()
            send_all(sock, b"".join(map(resp.pack, commands)))
        except (OSError, hiredis.ProtocolError) as exc:
            self.close()
            raise ConnectionFailed(str(exc) or type(exc).__name__) from None

    def receive(self, count: int) -> list[Any]:
        """The replies of the ``count`` commands sent last, in order.

        Raises:
            ConnectionFailed: the connection failed; the connection is closed.
        """
        try:
            sock, reader = self._sock, self._reader
            if sock is None or reader is None:
                raise ConnectionError("not connected")
            return [read_reply(sock, reader) for _ in range(count)]
        except (OSError, hiredis.ProtocolError) as exc:
            self.close()
            raise ConnectionFailed(str(exc) or type(exc).__name__) from None

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _connect(self) -> tuple[socket.socket, hiredis.Reader]:
        url = self.url
        sock = open_socket(url, self.connect_timeout)
        self.connects += 1
        sock.settimeout(self.timeout)
        reader = hiredis.Reader()
        self._sock, self._reader = sock, reader
        setup: list[resp.Command] = []
        if url.password:
            password = urllib.parse.unquote(url.password)
            setup.append(["AUTH", urllib.parse.unquote(url.username), password] if url.username else ["AUTH", password])
        if url.scheme == SENTINEL:
            database = str(sentinel_parts(url.geturl())[2])
        elif url.scheme == "unix":
            database = dict(urllib.parse.parse_qsl(url.query)).get("db", "0")
        else:
            database = (url.path or "/0").strip("/")
        if database and database != "0":
            setup.append(["SELECT", database])
        if setup or self.greeting:
            sock.sendall(b"".join(map(resp.pack, setup + self.greeting)))
            replies = [read_reply(sock, reader) for _ in setup + self.greeting]
            for reply in replies[:len(setup)]:
                if isinstance(reply, hiredis.ReplyError):
                    self.close()
                    raise ConnectionFailed(f"Redis refused the connection set-up: {reply}")
            for command, reply in zip(self.greeting, replies[len(setup):]):
                if isinstance(reply, hiredis.ReplyError):  # CLIENT SETNAME without +client|setname, say
                    log.debug("%s refused on connection: %s", " ".join(map(str, command[:2])), reply)
        return sock, reader


def connect(url: str, timeout: float = 10.0, connect_timeout: float = 2.0,
            greeting: Iterable[resp.Command] = ()) -> RawConnection:
    """The lean connection of ``url``: a RawConnection, or for ``redis+cluster://`` a
    tempest.clusterconn.ClusterConnection (the same interface)."""
    if urllib.parse.urlsplit(url).scheme == CLUSTER:
        from tempest.clusterconn import ClusterConnection

        return ClusterConnection(url, timeout, connect_timeout, greeting)  # type: ignore[return-value]
    return RawConnection(url, timeout, connect_timeout, greeting)


def send_all(sock: socket.socket, data: bytes) -> None:
    """``sock.sendall(data)``; on a plain gevent socket, first a send on the non-blocking
    system socket under it, which takes it all in the usual case (gevent's sendall costs a
    getsockopt and several calls per write)."""
    raw = getattr(sock, "_sock", None) if type(sock).__module__ == GEVENT_SOCKETS else None  # never under TLS
    if raw is not None:
        try:
            sent = raw.send(data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return
        sock.sendall(memoryview(data)[sent:])
        return
    sock.sendall(data)


def read_reply(sock: socket.socket, reader: hiredis.Reader) -> Any:
    """The next reply on ``sock``, read through ``reader`` (a hiredis.Reader that may hold
    replies already).

    Raises:
        ConnectionError: the peer closed the connection first.
    """
    while (reply := reader.gets()) is False:
        data = sock.recv(RECV_SIZE)
        if not data:
            raise ConnectionError("connection closed by Redis")
        reader.feed(data)
    return reply


def master_address(url: str, timeout: float) -> tuple[str, int]:
    """(host, port) of the master the Sentinels of ``url`` know now, asking them in turn.

    Raises:
        ConnectionError: no Sentinel answered with a master.
    """
    sentinels, service, _, _, _ = sentinel_parts(url)
    params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    auth = [params[k] for k in ("sentinel_username", "sentinel_password") if params.get(k)]
    setup = [["AUTH", *auth]] if params.get("sentinel_password") else []
    problems: list[str] = []
    for host, port in sentinels:
        try:
            with socket.create_connection((host, port), timeout=timeout) as plain:
                sock = _wrap(plain, url, host) if tls.sentinel_tls(url) else plain
                sock.sendall(b"".join(map(resp.pack, [*setup, ["SENTINEL", "get-master-addr-by-name", service]])))
                reader = hiredis.Reader()
                replies = [read_reply(sock, reader) for _ in range(len(setup) + 1)]
                reply = replies[-1]
        except (OSError, hiredis.ProtocolError) as exc:
            problems.append(f"{host}:{port}: {exc}")
            continue
        if setup and isinstance(replies[0], hiredis.ReplyError):
            problems.append(f"{host}:{port}: the Sentinel refused AUTH ({replies[0]})")
            continue
        if isinstance(reply, list) and len(reply) == 2:
            return reply[0].decode(), int(reply[1])
        problems.append(f"{host}:{port}: no master named {service!r} ({reply})")
    raise ConnectionError("no Sentinel gave a master: " + "; ".join(problems))


def client(url: str, **options: Any) -> redis.Redis:
    """A redis-py client of ``url``; for redis+sentinel, one that follows the master the
    Sentinels name (redis-py's Sentinel support)."""
    import redis
    from redis.sentinel import Sentinel

    scheme = urllib.parse.urlsplit(url).scheme
    if scheme == CLUSTER:
        from redis.cluster import ClusterNode, RedisCluster

        nodes, username, password = cluster_parts(url)
        if tls.master_tls(url):
            options = {**tls.redis_py_options(url), **options}
        return RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in nodes],  # type: ignore[return-value]
                            username=username, password=password, **options)
    if scheme != SENTINEL:
        return redis.Redis.from_url(url, **options)
    sentinels, service, db, username, password = sentinel_parts(url)
    params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    asked: dict[str, Any] = {k: options[k] for k in ("socket_timeout", "socket_connect_timeout") if k in options}
    if params.get("sentinel_password"):
        asked.update(username=params.get("sentinel_username") or None, password=params["sentinel_password"])
    if tls.sentinel_tls(url):
        asked.update(tls.redis_py_options(url))
    if tls.master_tls(url):
        options = {**tls.redis_py_options(url), **options}
    return Sentinel(sentinels, sentinel_kwargs=asked).master_for(service, db=db, username=username,
                                                                 password=password, **options)


def open_socket(url: urllib.parse.ParseResult, connect_timeout: float) -> socket.socket:
    """A socket connected to the Redis of ``url`` (parsed: unix, redis, rediss or
    redis+sentinel, whose master is asked from the Sentinels at each connection), with
    TCP_NODELAY and keepalive on TCP, wrapped in TLS for rediss."""
    if url.scheme == "unix":
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(connect_timeout)
        sock.connect(url.path)
        return sock
    address: tuple[str | None, int]
    if url.scheme == SENTINEL:
        address = master_address(url.geturl(), connect_timeout)
    elif url.scheme == CLUSTER:  # any node will do (the relay's SUBSCRIBE: every node has every message)
        sock, address = _any_node(cluster_parts(url.geturl())[0], connect_timeout)
    else:
        address = (url.hostname, url.port or 6379)
    if url.scheme != CLUSTER:
        sock = socket.create_connection(address, timeout=connect_timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if tls.master_tls(url.geturl()):
        sock = _wrap(sock, url.geturl(), address[0])
    return sock


def open_node(url: urllib.parse.ParseResult, address: tuple[str, int], connect_timeout: float) -> socket.socket:
    """A socket connected to one node of the Redis Cluster of ``url`` (parsed), with
    TCP_NODELAY and keepalive, in TLS when ``url`` says ``ssl=yes``."""
    sock = socket.create_connection(address, timeout=connect_timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if tls.master_tls(url.geturl()):
        sock = _wrap(sock, url.geturl(), address[0])
    return sock


def _any_node(nodes: list[tuple[str, int]], connect_timeout: float) -> tuple[socket.socket, tuple[str, int]]:
    """A socket connected to the first of ``nodes`` that takes a connection, and its address.

    Raises:
        OSError: none did (the last one's error).
    """
    problem: OSError = ConnectionError("no cluster node")
    for address in nodes:
        try:
            return socket.create_connection(address, timeout=connect_timeout), address
        except OSError as exc:
            problem = exc
    raise problem


def _wrap(sock: socket.socket, url: str, host: str | None) -> ssl.SSLSocket:
    """``sock`` in TLS as the parameters of ``url`` say (closed if the handshake fails)."""
    try:
        return tls.context(url).wrap_socket(sock, server_hostname=host)
    except (OSError, ValueError) as exc:
        sock.close()
        raise ssl.SSLError(str(exc)) if isinstance(exc, ValueError) else exc


def _readable(sock: socket.socket) -> bool:
    """True if ``sock`` has something to read (an EOF, a reset, stray bytes), without waiting
    (gevent's select first polls without waiting, like the system's)."""
    return bool(select.select([sock], [], [], 0)[0])
