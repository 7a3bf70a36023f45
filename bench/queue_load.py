#!/usr/bin/env python3
"""A closed-loop keep-alive GET load that records every request, for bench/queues.py --kill.

C connections to 127.0.0.1:PORT, each sending ``GET /?r=<connection>-<n>`` when the previous
answer has been read, for D seconds; then no new request leaves, and the ones in flight get
up to ``--timeout`` seconds to be answered. Every request is recorded as
``[r, sent, answered, status, pid, error]``: ``sent`` and ``answered`` from ``time.monotonic()``
(CLOCK_MONOTONIC, the same clock in every process of the machine, so that they compare with the
times at which bench/queues.py killed workers), ``pid`` the ``pid=`` of the answer's body
(bench/queue_worker.py's), ``error`` None or what went wrong (timeout, socket, protocol). Prints
one JSON object on stdout: ``{"records": [...], "connections": C, ...}``.

    python bench/queue_load.py --port 8080 --connections 50 --duration 13 --timeout 60
"""

import argparse
import json
import sys
import time

import gevent
from gevent import socket

HOST = "127.0.0.1"
RECV_SIZE = 64 * 1024


class ResponseError(Exception):
    pass


def read_answer(sock, buf):
    """One response from ``sock``: (status, body, keep_alive, leftover bytes)."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(RECV_SIZE)
        if not data:
            raise ResponseError("closed before a whole response head")
        buf += data
    end = buf.index(b"\r\n\r\n")
    head = buf[:end].decode("latin-1").split("\r\n")
    parts = head[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ResponseError(f"bad status line {head[0][:80]!r}")
    length, keep_alive = None, parts[0] == "HTTP/1.1"
    for line in head[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection":
            keep_alive = value == "keep-alive" or (keep_alive and value != "close")
    if length is None:
        raise ResponseError("no Content-Length")
    buf = buf[end + 4:]
    while len(buf) < length:
        data = sock.recv(RECV_SIZE)
        if not data:
            raise ResponseError("closed in a response body")
        buf += data
    return int(parts[1]), buf[:length], keep_alive, buf[length:]


def answering_pid(body):
    text = body.decode("latin-1", "replace").strip()
    return int(text[4:]) if text.startswith("pid=") and text[4:].isdigit() else None


def connection(index, port, end_at, timeout, records):
    """One connection's closed loop until ``end_at``; its requests go to ``records``."""
    sock, buf, n = None, b"", 0
    while time.monotonic() < end_at:
        rid = f"{index}-{n}"
        n += 1
        request = f"GET /?r={rid} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUser-Agent: tempest-bench\r\n\r\n".encode()
        sent = time.monotonic()
        try:
            if sock is None:
                sock = socket.create_connection((HOST, port), timeout=timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buf = b""
            sock.sendall(request)
            status, body, keep_alive, buf = read_answer(sock, buf)
        except (socket.timeout, ResponseError, OSError) as exc:
            kind = "timeout" if isinstance(exc, socket.timeout) else (
                "protocol" if isinstance(exc, ResponseError) else "socket")
            records.append([rid, sent, time.monotonic(), None, None, f"{kind}: {exc}"[:200]])
            if sock is not None:
                sock.close()
            sock = None
            gevent.sleep(0.01)  # a refused connect must not spin
            continue
        records.append([rid, sent, time.monotonic(), status, answering_pid(body), None])
        if not keep_alive:
            sock.close()
            sock = None
    if sock is not None:
        sock.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    parser.add_argument("--connections", "-c", type=int, default=50)
    parser.add_argument("--duration", "-d", type=float, default=13.0, help="seconds during which requests leave")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a connect or an answer may take")
    args = parser.parse_args(argv)
    records = []
    start = time.monotonic()
    end_at = start + args.duration
    loops = [gevent.spawn(connection, i, args.port, end_at, args.timeout, records) for i in range(args.connections)]
    gevent.joinall(loops, timeout=args.duration + args.timeout + 5)
    gevent.killall(loops, timeout=1)
    json.dump({"connections": args.connections, "start": start, "end": time.monotonic(),
               "duration_s": args.duration, "records": records}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
