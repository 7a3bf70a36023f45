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


def run(args):
    import gevent
    import gevent.event
    import gevent.lock
    import gevent.select
    from gevent import socket as gsocket

    started = time.monotonic()
    deadline = started + args.deadline
    nofile = raise_nofile()
    request = f"GET / HTTP/1.1\r\nHost: {HOST}:{args.port}\r\nUser-Agent: tempest-bench-idle\r\n\r\n".encode()
    handshakes = gevent.lock.BoundedSemaphore(args.connect_concurrency)
    held = []  # sockets of the opened connections
    errors = {}
    stop = gevent.event.Event()
    stopped_by = []

    def stop_on(reason):
        if not stopped_by:
            stopped_by.append(reason)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stop_on, "signal")

    def count_error(kind):
        errors[kind] = errors.get(kind, 0) + 1

    pending = [args.connections]
    all_tried = gevent.event.Event()

    def one():
        try:
            with handshakes:
                if stop.is_set():
                    count_error("stopped before connecting")
                    return
                timeout = min(args.timeout, deadline - time.monotonic())
                if timeout <= 0:
                    count_error("deadline passed before connecting")
                    return
                sock = gsocket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    sock.settimeout(timeout)
                    sock.connect((HOST, args.port))
                    sock.sendall(request)
                    read_response(sock)
                except TimeoutError:  # socket.timeout
                    count_error("timeout (connect or response)")
                except Refused as exc:
                    count_error(str(exc))
                except OSError as exc:
                    count_error(f"{type(exc).__name__}: {exc.strerror or exc}")
                else:
                    held.append(sock)
                    sock = None
                finally:
                    if sock is not None:
                        sock.close()
        finally:
            pending[0] -= 1
            if pending[0] == 0:
                all_tried.set()

    def watch_stdin():
        fd = sys.stdin.fileno()
        while True:
            readable, _, _ = gevent.select.select([fd], [], [], 1.0)
            if readable:
                try:
                    line = os.read(fd, 1024)
                except OSError:
                    line = b""
                if not line or b"stop" in line:
                    stop_on("stdin")
                    return

    watcher = gevent.spawn(watch_stdin)  # also while connecting: the harness may give up early
    greenlets = [gevent.spawn(one) for _ in range(args.connections)]
    gevent.wait([all_tried, stop], timeout=max(0.0, deadline - time.monotonic()), count=1)
    unfinished = sum(1 for g in greenlets if not g.ready())
    gevent.killall(greenlets, block=True, timeout=5)
    if unfinished:
        errors["unfinished (stopped or deadline)"] = unfinished
    opened_at = time.monotonic()
    emit({"ready": {"opened": len(held), "failed": args.connections - len(held), "errors": errors,
                    "seconds": round(opened_at - started, 3), "nofile": nofile}})
    if not stop.wait(max(0.0, deadline - time.monotonic())):
        stop_on("deadline")
    watcher.kill(block=False)
    held_seconds = time.monotonic() - opened_at
    states = {"open": 0, "closed_by_server": 0, "reset": 0, "unexpected_data": 0}
    for sock in held:
        states[check(sock)] += 1
    emit({"result": {"requested": args.connections, "opened": len(held), "open_at_end": states["open"],
                     "closed_by_server": states["closed_by_server"], "reset": states["reset"],
                     "unexpected_data": states["unexpected_data"], "failed": args.connections - len(held),
                     "errors": errors, "connect_seconds": round(opened_at - started, 3),
                     "held_seconds": round(held_seconds, 3), "stopped_by": stopped_by[0],
                     "nofile": nofile}})
    for sock in held:
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
