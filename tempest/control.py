"""The control socket: a unix socket in run_dir, owner-only, speaking RESP.

Commands: STATUS [target...], START / STOP / RESTART <target>, SIGNAL <sig> <target>,
PID [target...], TAIL <NAME:INDEX> stdout|stderr <offset>, RELOAD, SHUTDOWN, INFO, plus
the greetings of any Redis client, so ``redis-cli -s <socket> status`` works as well as
``tempest status``.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING

import gevent.socket

from tempest import fronts, resp, roles
from tempest.converters import to_signal
from tempest.errors import StartupError
from tempest.respserver import ClientState, RespServer, arity

if TYPE_CHECKING:
    from tempest.config import Config
    from tempest.daemon import Daemon
    from tempest.supervisor import Child, Supervisor

log = logging.getLogger(__name__)

CONTROL_MAX_COMMAND = 64 * 1024  # bytes of a command: control commands are a few words
SPAWN_WAIT = 10.0  # seconds START and RESTART wait for the processes to be spawned
STATUS_FIELDS = ("name", "state", "pid", "uptime", "restarts", "last_exit")


def socket_path(config: Config) -> str:
    return os.path.join(config.tempest.run_dir, f"{config.tempest.name}.sock")


def bind_unix(path: str) -> gevent.socket.socket:
    """A listening unix socket at ``path``, readable and writable by its owner only."""
    if len(path.encode()) > 107:
        raise StartupError(f"control socket path too long for a unix socket: {path}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # left by a tempestd that died
        else:
            raise StartupError(f"control socket {path} is in use: is another tempestd running?")
        finally:
            probe.close()
    listener = gevent.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        listener.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    listener.listen(64)
    return listener


class ControlServer(RespServer):
    what = "control socket"

    def __init__(self, path: str, daemon: Daemon) -> None:
        self.path = path
        self.daemon = daemon
        super().__init__(bind_unix(path), max_command=CONTROL_MAX_COMMAND)

    def stop(self, timeout: float = 1) -> None:
        super().stop(timeout)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def _supervisor(self) -> Supervisor:
        supervisor = self.daemon.supervisor
        assert supervisor is not None  # the control socket opens once tempestd has started
        return supervisor

    def _children(self, targets: list[bytes]) -> list[Child]:
        """The children the targets name (every one without targets); KeyError names a bad one."""
        supervisor = self._supervisor()
        if not targets:
            return supervisor.every_child()
        found: dict[str, Child] = {}
        for target in targets:
            found.update((c.name, c) for c in supervisor.children(target.decode("utf-8", "replace")))
        return list(found.values())

    def cmd_status(self, client: ClientState, args: list[bytes]) -> bytes:
        """``STATUS [target...]``: one row per child."""
        try:
            children = self._children(args)
        except KeyError as exc:
            return resp.error(f"ERR no such process: {exc.args[0]}")
        rows = [[row[field] for field in STATUS_FIELDS] for row in (c.status() for c in children)]
        return resp.encode(rows, client.protocol)

    def cmd_pid(self, client: ClientState, args: list[bytes]) -> bytes:
        """``PID``: tempestd's pid; ``PID target...``: its children's (0 when not running)."""
        if not args:
            return resp.integer(os.getpid())
        try:
            return resp.encode([c.pid or 0 for c in self._children(args)], client.protocol)
        except KeyError as exc:
            return resp.error(f"ERR no such process: {exc.args[0]}")

    def cmd_signal(self, client: ClientState, args: list[bytes]) -> bytes:
        """``SIGNAL <sig> <target>``: the names of the children signalled (those running)."""
        if len(args) != 2:
            return arity("signal")
        try:
            sig = to_signal(args[0].decode("utf-8", "replace"))
            children = self._children(args[1:])
        except ValueError as exc:
            return resp.error(f"ERR {exc}")
        except KeyError as exc:
            return resp.error(f"ERR no such process: {exc.args[0]}")
        sent = [c.name for c in children if c.signal(sig)]
        log.info("control: signal %s to %s", sig.name, ", ".join(sent) or "nobody (none running)")
        return resp.encode(sent, client.protocol)

    def cmd_tail(self, client: ClientState, args: list[bytes]) -> bytes:
        """``TAIL <NAME:INDEX> stdout|stderr <offset>``: [offset now, what came after
        ``offset`` of what is kept]."""
        if len(args) != 3 or args[1] not in (b"stdout", b"stderr") or not args[2].isdigit():
            return resp.error("ERR usage: TAIL <NAME[:INDEX]> stdout|stderr <offset>")
        try:
            children = self._children(args[:1])
        except KeyError as exc:
            return resp.error(f"ERR no such process: {exc.args[0]}")
        if len(children) != 1:
            return resp.error(f"ERR {args[0].decode('utf-8', 'replace')} names {len(children)} processes: say which (NAME:INDEX)")
        offset, data = children[0].recent[args[1].decode()].since(int(args[2]))
        return resp.encode([offset, data], client.protocol)

    def _each(self, args: list[bytes], verb: str) -> bytes:
        if len(args) != 1:
            return arity(verb)
        target = args[0].decode("utf-8", "replace")
        supervisor = self._supervisor()
        try:
            if verb == "restart" and target.partition(":")[0] == fronts.NAME and fronts.NAME in supervisor.programs:
                if not self.daemon.restart_fronts(target):  # one after the other: no moment without a front
                    return resp.error("ERR a front process did not serve again (see tempestd's log)")
            else:
                getattr(supervisor, verb)(target)
        except KeyError:
            return resp.error(f"ERR no such process: {target}")
        log.info("control: %s %s", verb, target)
        if verb != "stop":  # reply once spawned (STARTING), not while still STOPPED
            supervisor.wait_spawned(SPAWN_WAIT)
        return resp.OK

    def cmd_start(self, client: ClientState, args: list[bytes]) -> bytes:
        return self._each(args, "start")

    def cmd_stop(self, client: ClientState, args: list[bytes]) -> bytes:
        return self._each(args, "stop")

    def cmd_restart(self, client: ClientState, args: list[bytes]) -> bytes:
        return self._each(args, "restart")

    def cmd_reload(self, client: ClientState, args: list[bytes]) -> bytes:
        problem = self.daemon.reload()
        return resp.error(f"ERR reload refused: {problem}") if problem else resp.OK

    def cmd_shutdown(self, client: ClientState, args: list[bytes]) -> bytes:
        self.daemon.request_shutdown("control socket")
        return resp.OK

    def cmd_instance(self, client: ClientState, args: list[bytes]) -> bytes:
        """``INSTANCE``: [this run's instance id, its role (front, workers, front+workers)]."""
        config = self.daemon.config
        return resp.encode([self.daemon.instance_id, roles.role_name(config.has_front, len(config.programs))],
                           client.protocol)

    def cmd_info(self, client: ClientState, args: list[bytes]) -> bytes:
        lines = [f"{name}:{value}" for name, value in self.daemon.stats.as_dict().items()]
        return resp.bulk("# Tempest\r\n" + "\r\n".join(lines) + "\r\n")
