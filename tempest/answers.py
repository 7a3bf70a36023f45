"""The answer endpoint: a RESP server that receives workers' answers.

A worker connects to the ``respond_to`` address of a job as to a Redis server and sends
``<action> <job_id> <json>``; the endpoint hands the JSON to the request waiting for that job
and always replies ``+OK`` (the 2012 workers exit on an error, so an answer for an unknown or
expired job is dropped and counted, not refused). Greetings that Redis clients send on connect
(HELLO, CLIENT SETINFO, SELECT, AUTH...) are answered as Redis would. Commands are read a whole
buffer at a time and their replies written in one send.
"""

import logging

from gevent.server import StreamServer

from tempest import __version__, resp
from tempest.errors import ProtocolError

log = logging.getLogger(__name__)

REDIS_VERSION = "7.0.0"  # what we claim to be; clients check it for features
RECV_SIZE = 256 * 1024
NOAUTH = resp.error("NOAUTH Authentication required.")
WRONGPASS = resp.error("WRONGPASS invalid username-password pair or user is disabled.")


class Session:
    """One worker's connection: its protocol version, name and authentication."""

    __slots__ = ("id", "protocol", "authenticated", "name", "quit")

    def __init__(self, session_id, authenticated):
        self.id = session_id
        self.protocol = 2
        self.authenticated = authenticated
        self.name = None
        self.quit = False


class AnswerServer:
    def __init__(self, address, registry, stats, password="", max_answer=64 << 20, backlog=1024):
        self._registry = registry
        self._stats = stats
        self._password = password
        self._max_answer = max_answer
        self._sessions = 0
        self.server = StreamServer(address, self._handle, backlog=backlog)

    @property
    def address(self):
        return self.server.address

    def start(self):
        self.server.start()

    def stop(self, timeout=1):
        self.server.stop(timeout=timeout)

    def _handle(self, sock, address):
        self._stats.answer_connections += 1
        self._sessions += 1
        session = Session(self._sessions, authenticated=not self._password)
        reader = resp.CommandReader()
        try:
            while not session.quit:
                data = sock.recv(RECV_SIZE)
                if not data:
                    break
                try:
                    commands = reader.feed(data)
                except ProtocolError as exc:
                    log.warning("answer endpoint: protocol error from %s: %s", address[0], exc)
                    sock.sendall(resp.error(f"ERR Protocol error: {exc}"))
                    break
                replies = []
                for command in commands:
                    replies.append(self.execute(session, command))
                    if session.quit:
                        break
                if replies:
                    sock.sendall(b"".join(replies))
        except OSError as exc:
            log.debug("answer endpoint: connection from %s lost: %s", address[0], exc)
        finally:
            sock.close()

    def execute(self, session, command):
        """Run one command; return its encoded reply."""
        name = command[0].decode("utf-8", "replace").lower()
        args = command[1:]
        handler = getattr(self, "cmd_" + name, None) if name.isidentifier() else None
        if handler is not None:
            if not session.authenticated and name not in ("auth", "hello", "quit"):
                return NOAUTH
            return handler(session, args)
        if len(args) == 2:  # <action> <job_id> <json>
            return self.answer(session, name, args) if session.authenticated else NOAUTH
        shown = " ".join(f"'{a.decode('utf-8', 'replace')[:32]}'" for a in args[:3])
        return resp.error(f"ERR unknown command '{name[:64]}', with args beginning with: {shown}")

    def answer(self, session, action, args):
        job_id = args[0].decode("utf-8", "replace")
        payload = args[1]
        if len(payload) > self._max_answer:
            log.warning("answer to %s %s is %d bytes, over max_answer", action, job_id, len(payload))
            payload = b'"answer over max_answer"'  # not a list: the request gets a 502
        self._registry.answer(job_id, action, payload)
        return resp.OK

    # Redis commands that clients send, answered as Redis would

    def cmd_ping(self, session, args):
        return resp.bulk(args[0]) if args else resp.PONG

    def cmd_echo(self, session, args):
        return resp.bulk(args[0]) if len(args) == 1 else _arity("echo")

    def cmd_quit(self, session, args):
        session.quit = True
        return resp.OK

    def cmd_select(self, session, args):
        return resp.OK if len(args) == 1 and args[0].isdigit() else resp.error("ERR invalid DB index")

    def cmd_auth(self, session, args):
        if len(args) not in (1, 2):
            return _arity("auth")
        return self._authenticate(session, args)

    def _authenticate(self, session, args):
        if not self._password:
            session.authenticated = True
            return resp.OK
        user, password = (b"default", args[0]) if len(args) == 1 else args
        if user == b"default" and password.decode("utf-8", "replace") == self._password:
            session.authenticated = True
            return resp.OK
        log.warning("answer endpoint: wrong password (session %d)", session.id)
        return WRONGPASS

    def cmd_hello(self, session, args):
        protocol = session.protocol
        if args:
            if args[0] not in (b"2", b"3"):
                return resp.error("NOPROTO unsupported protocol version")
            protocol = int(args[0])
        rest = list(args[1:])
        while rest:
            option = rest.pop(0).lower()
            if option == b"auth" and len(rest) >= 2:
                reply = self._authenticate(session, rest[:2])
                if reply != resp.OK:
                    return reply
                del rest[:2]
            elif option == b"setname" and rest:
                session.name = rest.pop(0)
            else:
                return resp.error(f"ERR Syntax error in HELLO option '{option.decode('utf-8', 'replace')}'")
        if not session.authenticated:
            return resp.error("NOAUTH HELLO must be called with the client already authenticated, "
                              "otherwise the HELLO <proto> AUTH <user> <pass> option can be used")
        session.protocol = protocol
        return resp.encode({"server": "redis", "version": REDIS_VERSION, "proto": protocol,
                            "id": session.id, "mode": "standalone", "role": "master",
                            "modules": []}, protocol)

    def cmd_client(self, session, args):
        sub = args[0].lower() if args else b""
        if sub in (b"setinfo", b"setname"):
            if sub == b"setname" and len(args) == 2:
                session.name = args[1]
            return resp.OK
        if sub == b"getname":
            return resp.encode(session.name, session.protocol)
        if sub == b"id":
            return resp.integer(session.id)
        return resp.error(f"ERR unknown subcommand '{sub.decode('utf-8', 'replace')}'")

    def cmd_command(self, session, args):
        return resp.encode([], session.protocol)

    def cmd_reset(self, session, args):
        session.protocol = 2
        session.authenticated = not self._password
        return resp.simple("RESET")

    def cmd_info(self, session, args):
        lines = ["# Server", f"redis_version:{REDIS_VERSION}", f"tempest_version:{__version__}",
                 "redis_mode:standalone", "", "# Tempest", f"pending_jobs:{len(self._registry)}"]
        lines += [f"{name}:{value}" for name, value in self._stats.as_dict().items()]
        return resp.bulk("\r\n".join(lines) + "\r\n")


def _arity(name):
    return resp.error(f"ERR wrong number of arguments for '{name}' command")
