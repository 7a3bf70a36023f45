"""A gevent RESP server that any Redis client can talk to: the base of the answer endpoint
and of the control socket.

It reads whole buffers, runs every complete command and writes all replies in one send. It
answers what Redis clients send when they connect (HELLO, AUTH, CLIENT SETINFO/SETNAME,
SELECT, PING, ECHO, COMMAND, RESET, QUIT) as Redis would, so that redis-py, redis-cli and the
2012 clients work unchanged. A subclass adds ``cmd_<name>`` methods and may handle the rest in
``unknown``.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import TYPE_CHECKING, Any

from gevent.server import StreamServer

from tempest import redisconn, resp
from tempest.sockets import close_with
from tempest.errors import ProtocolError

if TYPE_CHECKING:
    from gevent.socket import socket as GeventSocket

log = logging.getLogger(__name__)

REDIS_VERSION = "7.0.0"  # what we claim to be; clients check it for features
RECV_SIZE = 256 * 1024
NOAUTH = resp.error("NOAUTH Authentication required.")
MAX_CLIENTS = resp.error("ERR max number of clients reached")
AUTH_TIMEOUT = 10.0  # seconds a client of a password-protected server has to authenticate
UNAUTHENTICATED_MAX = 4096  # bytes of a command before AUTH (AUTH, HELLO, PING are small)
WRONGPASS = resp.error("WRONGPASS invalid username-password pair or user is disabled.")


class ClientState:
    """One client connection: its protocol version, name and authentication."""

    __slots__ = ("id", "protocol", "authenticated", "name", "quit")

    def __init__(self, client_id: int, authenticated: bool) -> None:
        self.id = client_id
        self.protocol = 2
        self.authenticated = authenticated
        self.name: bytes | None = None
        self.quit = False


class RespServer:
    what = "RESP server"  # for log lines

    def __init__(self, listener: tuple[str, int] | GeventSocket, password: str = "",
                 backlog: int | None = 1024, max_connections: int = 0, idle_timeout: float = 0,
                 max_command: int = 0) -> None:
        self.password = password
        self.max_connections = max_connections  # 0: no bound
        self.idle_timeout = idle_timeout  # seconds a connection may stay silent; 0: for ever
        self.max_command = max_command  # bytes an incomplete command may hold; 0: no bound
        self._clients = 0
        self._open = 0
        if not isinstance(listener, tuple):  # a bound socket brings its own backlog
            backlog = None
        self.server = StreamServer(listener, self._handle, backlog=backlog)

    @property
    def address(self) -> str | tuple[str, int]:
        return self.server.address

    @property
    def open_connections(self) -> int:
        return self._open

    def start(self) -> None:
        self.server.start()

    def stop(self, timeout: float = 1) -> None:
        self.server.stop(timeout=timeout)

    def connected(self) -> None:
        """Called for each new connection."""

    def refused(self) -> None:
        """Called for each connection refused over ``max_connections``."""

    def closed(self) -> None:
        """Called for each connection the server closes (idle, no AUTH in time, bad input)."""

    def _handle(self, sock: GeventSocket, address: Any) -> None:
        peer = address[0] if isinstance(address, tuple) else "unix socket"
        if self.max_connections and self._open >= self.max_connections:
            self.refused()
            log.warning("%s: connection from %s refused: %d open (the most allowed)", self.what, peer, self._open)
            close_with(sock, MAX_CLIENTS)
            return
        if sock.family in (socket.AF_INET, socket.AF_INET6):  # replies go out at once (no Nagle)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connected()
        self._clients += 1
        self._open += 1
        client = ClientState(self._clients, authenticated=not self.password)
        try:
            self._serve(sock, client, peer)
        except OSError as exc:
            log.debug("%s: connection from %s lost: %s", self.what, peer, exc)
        finally:
            self._open -= 1
            sock.close()

    def _serve(self, sock: GeventSocket, client: ClientState, peer: str) -> None:
        """Read commands and write their replies until the client quits or leaves. Before
        AUTH, a client has AUTH_TIMEOUT seconds and commands of UNAUTHENTICATED_MAX bytes."""
        reader = resp.CommandReader(UNAUTHENTICATED_MAX if not client.authenticated else self.max_command)
        deadline = time.monotonic() + AUTH_TIMEOUT
        while not client.quit:
            if client.authenticated:
                sock.settimeout(self.idle_timeout or None)
            else:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                data = sock.recv(RECV_SIZE if client.authenticated else UNAUTHENTICATED_MAX)
            except socket.timeout:
                self.closed()
                why = f"silent for {self.idle_timeout:g}s" if client.authenticated else f"no AUTH within {AUTH_TIMEOUT:g}s"
                log.info("%s: connection from %s closed: %s", self.what, peer, why)
                return
            if not data:
                return
            try:
                commands = reader.feed(data)
            except ProtocolError as exc:
                self.closed()
                log.warning("%s: protocol error from %s: %s", self.what, peer, exc)
                close_with(sock, resp.error(f"ERR Protocol error: {exc}"))
                return
            was_authenticated = client.authenticated
            replies: list[bytes] = []
            for command in commands:
                replies.append(self.execute(client, command))
                if client.quit:
                    break
            if replies:
                redisconn.send_all(sock, b"".join(replies))
            if client.authenticated and not was_authenticated:
                reader.limit(self.max_command)

    def execute(self, client: ClientState, command: list[bytes]) -> bytes:
        """Run one command; return its encoded reply."""
        name = command[0].decode("utf-8", "replace").lower()
        args = command[1:]
        handler = getattr(self, "cmd_" + name, None) if name.isidentifier() else None
        if handler is None:
            if not client.authenticated:
                return NOAUTH
            return self.unknown(client, name, args)
        if not client.authenticated and name not in ("auth", "hello", "quit"):
            return NOAUTH
        return handler(client, args)

    def unknown(self, client: ClientState, name: str, args: list[bytes]) -> bytes:
        shown = " ".join(f"'{a.decode('utf-8', 'replace')[:32]}'" for a in args[:3])
        return resp.error(f"ERR unknown command '{name[:64]}', with args beginning with: {shown}")

    # what Redis clients send on connect, answered as Redis would

    def cmd_ping(self, client: ClientState, args: list[bytes]) -> bytes:
        return resp.bulk(args[0]) if args else resp.PONG

    def cmd_echo(self, client: ClientState, args: list[bytes]) -> bytes:
        return resp.bulk(args[0]) if len(args) == 1 else arity("echo")

    def cmd_quit(self, client: ClientState, args: list[bytes]) -> bytes:
        client.quit = True
        return resp.OK

    def cmd_select(self, client: ClientState, args: list[bytes]) -> bytes:
        return resp.OK if len(args) == 1 and args[0].isdigit() else resp.error("ERR invalid DB index")

    def cmd_auth(self, client: ClientState, args: list[bytes]) -> bytes:
        if len(args) not in (1, 2):
            return arity("auth")
        return self._authenticate(client, args)

    def _authenticate(self, client: ClientState, args: list[bytes]) -> bytes:
        if not self.password:
            client.authenticated = True
            return resp.OK
        user, password = (b"default", args[0]) if len(args) == 1 else args
        if user == b"default" and password.decode("utf-8", "replace") == self.password:
            client.authenticated = True
            return resp.OK
        log.warning("%s: wrong password (client %d)", self.what, client.id)
        return WRONGPASS

    def cmd_hello(self, client: ClientState, args: list[bytes]) -> bytes:
        protocol = client.protocol
        if args:
            if args[0] not in (b"2", b"3"):
                return resp.error("NOPROTO unsupported protocol version")
            protocol = int(args[0])
        rest = list(args[1:])
        while rest:
            option = rest.pop(0).lower()
            if option == b"auth" and len(rest) >= 2:
                reply = self._authenticate(client, rest[:2])
                if reply != resp.OK:
                    return reply
                del rest[:2]
            elif option == b"setname" and rest:
                client.name = rest.pop(0)
            else:
                return resp.error(f"ERR Syntax error in HELLO option '{option.decode('utf-8', 'replace')}'")
        if not client.authenticated:
            return resp.error("NOAUTH HELLO must be called with the client already authenticated, "
                              "otherwise the HELLO <proto> AUTH <user> <pass> option can be used")
        client.protocol = protocol
        return resp.encode({"server": "redis", "version": REDIS_VERSION, "proto": protocol,
                            "id": client.id, "mode": "standalone", "role": "master",
                            "modules": []}, protocol)

    def cmd_client(self, client: ClientState, args: list[bytes]) -> bytes:
        sub = args[0].lower() if args else b""
        if sub in (b"setinfo", b"setname"):
            if sub == b"setname" and len(args) == 2:
                client.name = args[1]
            return resp.OK
        if sub == b"getname":
            return resp.encode(client.name, client.protocol)
        if sub == b"id":
            return resp.integer(client.id)
        return resp.error(f"ERR unknown subcommand '{sub.decode('utf-8', 'replace')}'")

    def cmd_command(self, client: ClientState, args: list[bytes]) -> bytes:
        return resp.encode([], client.protocol)

    def cmd_reset(self, client: ClientState, args: list[bytes]) -> bytes:
        client.protocol = 2
        client.authenticated = not self.password
        return resp.simple("RESET")


def arity(name: str) -> bytes:
    return resp.error(f"ERR wrong number of arguments for '{name}' command")

