#!/usr/bin/env python3
"""Idle keep-alive connections: open N, make each a real keep-alive connection, hold them.

Opens N connections to 127.0.0.1:PORT (at most ``--connect-concurrency`` handshakes at a time)
and sends one ``GET / HTTP/1.1`` on each, reading its response in full (Content-Length): a
connection counts as opened when that response is a 2xx that keeps the connection alive. Then
every connection stays open and silent (nothing sent, nothing read) until the process is told
to stop: stdin closed (or a line ``stop``), SIGTERM, SIGINT, or its own deadline
(``--deadline``, seconds from start, which bounds the whole process). Then it looks at each
connection without blocking (``MSG_PEEK``) to count those still open, closes them all and exits.

Protocol on stdout, one JSON object a line::

    {"ready": {"opened": N, "failed": F, "errors": {...}, "seconds": S, "nofile": [soft, hard]}}
    {"result": {"opened": N, "open_at_end": M, "closed_by_server": ..., "reset": ...,
                "unexpected_data": ..., "held_seconds": ..., "stopped_by": "stdin"|"signal"|"deadline",
                ...}}

The first line comes once every connection is opened or has failed (or at the deadline), the
second when it stops. The open-file soft limit is raised to the hard limit (one descriptor per
connection). Only loopback is reachable: the host is fixed to 127.0.0.1.

    python bench/idle.py --port 8080 --connections 10000 --deadline 300
"""

import argparse
import json
import os
import resource
import signal
import socket
import sys
import time

import gevent
import gevent.event
import gevent.lock
import gevent.select
from gevent import socket as gsocket

import loadgen  # bench/: the response reader shared with the closed-loop client

HOST = "127.0.0.1"


def raise_nofile():
    """Raise the open-file soft limit to the hard limit; return (soft, hard) now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return list(resource.getrlimit(resource.RLIMIT_NOFILE))


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Refused(Exception):
    """The server answered, but not with a 2xx keep-alive response."""


def read_response(sock):
    """Read one response in full; raise Refused unless it is a 2xx that keeps the connection."""
    try:
        status, keep_alive, rest = loadgen.read_response(sock, b"")
    except loadgen.ResponseError as exc:
        raise Refused(str(exc)) from None
    if not 200 <= status < 300:
        raise Refused(f"status {status}")
    if not keep_alive:
        raise Refused("not keep-alive (Connection: close or HTTP/1.0)")
    if rest:
        raise Refused("more bytes than the response")


def check(sock):
    """State of a held connection, without blocking: open, closed, reset or unexpected_data."""
    try:
        sock.setblocking(False)
        data = sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return "open"
    except OSError:
        return "reset"
    return "closed_by_server" if not data else "unexpected_data"


class Holder:
    """Opens the connections, holds them, reports on them: the state shared by the greenlets."""

    def __init__(self, args):
        self.args = args
        self.started = time.monotonic()
        self.deadline = self.started + args.deadline
        self.nofile = raise_nofile()
        self.request = f"GET / HTTP/1.1\r\nHost: {HOST}:{args.port}\r\nUser-Agent: tempest-bench-idle\r\n\r\n".encode()
        self.handshakes = gevent.lock.BoundedSemaphore(args.connect_concurrency)
        self.held = []  # sockets of the opened connections
        self.errors = {}
        self.stop = gevent.event.Event()
        self.stopped_by = None  # the first reason to stop
        self.pending = args.connections  # connections not tried to the end yet
        self.all_tried = gevent.event.Event()
        self.opened_at = None

    def stop_on(self, reason):
        if self.stopped_by is None:
            self.stopped_by = reason
        self.stop.set()

    def count_error(self, kind):
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def open_one(self):
        """One connection (a greenlet): at most ``--connect-concurrency`` handshakes at a time."""
        try:
            with self.handshakes:
                timeout = self._connect_timeout()
                if timeout is not None:
                    self._handshake(timeout)
        finally:
            self.pending -= 1
            if self.pending == 0:
                self.all_tried.set()

    def _connect_timeout(self):
        """The time one handshake may take, None (an error counted) if it is not to start."""
        if self.stop.is_set():
            self.count_error("stopped before connecting")
            return None
        timeout = min(self.args.timeout, self.deadline - time.monotonic())
        if timeout <= 0:
            self.count_error("deadline passed before connecting")
            return None
        return timeout

    def _handshake(self, timeout):
        """Connect, send one GET / and read its response: held if a 2xx keep-alive one."""
        sock = gsocket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect((HOST, self.args.port))
            sock.sendall(self.request)
            read_response(sock)
        except TimeoutError:  # socket.timeout
            self.count_error("timeout (connect or response)")
        except Refused as exc:
            self.count_error(str(exc))
        except OSError as exc:
            self.count_error(f"{type(exc).__name__}: {exc.strerror or exc}")
        else:
            self.held.append(sock)
            sock = None
        finally:
            if sock is not None:
                sock.close()

    def watch_stdin(self):
        fd = sys.stdin.fileno()
        while True:
            readable, _, _ = gevent.select.select([fd], [], [], 1.0)
            if readable:
                try:
                    line = os.read(fd, 1024)
                except OSError:
                    line = b""
                if not line or b"stop" in line:
                    self.stop_on("stdin")
                    return

    def open_all(self):
        """Open every connection (or give up at the deadline, or when told to stop)."""
        greenlets = [gevent.spawn(self.open_one) for _ in range(self.args.connections)]
        gevent.wait([self.all_tried, self.stop], timeout=max(0.0, self.deadline - time.monotonic()), count=1)
        unfinished = sum(1 for g in greenlets if not g.ready())
        gevent.killall(greenlets, block=True, timeout=5)
        if unfinished:
            self.errors["unfinished (stopped or deadline)"] = unfinished
        self.opened_at = time.monotonic()

    def ready(self):
        return {"opened": len(self.held), "failed": self.args.connections - len(self.held), "errors": self.errors,
                "seconds": round(self.opened_at - self.started, 3), "nofile": self.nofile}

    def hold(self):
        """Until told to stop, or the deadline."""
        if not self.stop.wait(max(0.0, self.deadline - time.monotonic())):
            self.stop_on("deadline")

    def result(self):
        """How many are still open (checked without blocking), and how the others ended."""
        held_seconds = time.monotonic() - self.opened_at
        states = {"open": 0, "closed_by_server": 0, "reset": 0, "unexpected_data": 0}
        for sock in self.held:
            states[check(sock)] += 1
        requested = self.args.connections
        return {"requested": requested, "opened": len(self.held), "open_at_end": states["open"],
                "closed_by_server": states["closed_by_server"], "reset": states["reset"],
                "unexpected_data": states["unexpected_data"], "failed": requested - len(self.held),
                "errors": self.errors, "connect_seconds": round(self.opened_at - self.started, 3),
                "held_seconds": round(held_seconds, 3), "stopped_by": self.stopped_by,
                "nofile": self.nofile}


def run(args):
    holder = Holder(args)
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, holder.stop_on, "signal")
    watcher = gevent.spawn(holder.watch_stdin)  # also while connecting: the harness may give up early
    holder.open_all()
    emit({"ready": holder.ready()})
    holder.hold()
    watcher.kill(block=False)
    emit({"result": holder.result()})
    for sock in holder.held:
        sock.close()
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    parser.add_argument("--connections", "-n", type=int, required=True, help="idle connections to open")
    parser.add_argument("--deadline", type=float, required=True,
                        help="seconds from start after which the process stops in any case")
    parser.add_argument("--connect-concurrency", type=int, default=200,
                        help="handshakes (connect + first request) in flight at a time (default: 200)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds one connect + first response may take (default: 30)")
    args = parser.parse_args(argv)
    if args.connections < 1 or args.deadline <= 0 or args.connect_concurrency < 1:
        parser.error("--connections, --deadline and --connect-concurrency must be positive")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
