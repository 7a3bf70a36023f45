"""The control socket: a unix socket in run_dir, owner-only, speaking RESP.

Commands: STATUS, START / STOP / RESTART <NAME|NAME:INDEX|all>, RELOAD, SHUTDOWN, INFO, plus
the greetings of any Redis client, so ``redis-cli -s <socket> status`` works as well as
``tempest status``.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING

import gevent.socket

from tempest import resp
from tempest.errors import StartupError
from tempest.respserver import ClientState, RespServer, arity

if TYPE_CHECKING:
    from tempest.config import Config
    from tempest.daemon import Daemon

log = logging.getLogger(__name__)

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
        super().__init__(bind_unix(path))

    def stop(self, timeout: float = 1) -> None:
        super().stop(timeout)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def cmd_status(self, client: ClientState, args: list[bytes]) -> bytes:
        supervisor = self.daemon.supervisor
        assert supervisor is not None  # the control socket opens once tempestd has started
        rows = [[row[field] for field in STATUS_FIELDS] for row in supervisor.status()]
        return resp.encode(rows, client.protocol)

    def _each(self, args: list[bytes], verb: str) -> bytes:
        if len(args) != 1:
            return arity(verb)
        target = args[0].decode("utf-8", "replace")
        try:
            getattr(self.daemon.supervisor, verb)(target)
        except KeyError:
            return resp.error(f"ERR no such process: {target}")
        log.info("control: %s %s", verb, target)
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

    def cmd_info(self, client: ClientState, args: list[bytes]) -> bytes:
        lines = [f"{name}:{value}" for name, value in self.daemon.stats.as_dict().items()]
        return resp.bulk("# Tempest\r\n" + "\r\n".join(lines) + "\r\n")
