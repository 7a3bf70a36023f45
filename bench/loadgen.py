"""A closed-loop HTTP/1.1 load generator that records the latency of every request.

C keep-alive connections to 127.0.0.1:PORT, each issuing ``GET PATH`` back-to-back (the next
request leaves when the previous response has been read in full) for D seconds. Unlike wrk it
applies no coordinated-omission correction: a percentile here is a percentile of the latencies
the connections actually saw. Prints one JSON object on stdout::

    {"count": ..., "errors": {...}, "p50_ms": ..., "p99_ms": ..., "max_ms": ...,
     "per_connection": [...], "rps": ..., ...}

Only loopback is reachable: the host is fixed to 127.0.0.1.

    python bench/loadgen.py --port 8080 --connections 100 --duration 10
"""

import argparse
import json
import math
import statistics
import sys
import time

import gevent
from gevent import socket

HOST = "127.0.0.1"
RECV_SIZE = 64 * 1024


class ResponseError(Exception):
    pass


def read_response(sock, buf):
    """Read one response from ``sock``; return (status, keep_alive, leftover bytes)."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            break
        data = sock.recv(RECV_SIZE)
        if not data:
            raise ResponseError("closed before a response head" if not buf else "closed in a response head")
        buf += data
    head = buf[:end].decode("latin-1").split("\r\n")
    parts = head[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ResponseError(f"bad status line {head[0][:80]!r}")
    status = int(parts[1])
    length = None
    keep_alive = parts[0] == "HTTP/1.1"
    for line in head[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "connection":
            token = value.strip().lower()
            keep_alive = token == "keep-alive" or (keep_alive and token != "close")
    if length is None:
        raise ResponseError("no Content-Length")  # both servers under test always send one
    buf = buf[end + 4:]
    while len(buf) < length:
        data = sock.recv(RECV_SIZE)
        if not data:
            raise ResponseError("closed in a response body")
        buf += data
    return status, keep_alive, buf[length:]


class Connection:
    def __init__(self, index, port, request, timeout):
        self.index = index
        self.port = port
        self.request = request
        self.timeout = timeout
        self.sock = None
        self.count = 0  # responses with a 2xx status
        self.latencies = []

    def connect(self):
        self.sock = socket.create_connection((HOST, self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def run(self, start_at, end_at, errors):
        gevent.sleep(max(0.0, start_at - time.perf_counter()))
        buf = b""
        while time.perf_counter() < end_at:
            try:
                if self.sock is None:
                    buf = b""
                    self.connect()
                t0 = time.perf_counter()
                self.sock.sendall(self.request)
                status, keep_alive, buf = read_response(self.sock, buf)
                elapsed = time.perf_counter() - t0
            except socket.timeout:
                errors["timeout"] += 1
                self.close()
                continue
            except ResponseError:
                errors["protocol"] += 1
                self.close()
                continue
            except OSError:
                errors["socket"] += 1
                self.close()
                gevent.sleep(0.01)  # a refused connect must not spin
                continue
            if 200 <= status < 300:
                self.count += 1
                self.latencies.append(elapsed)
            else:
                errors["status"] += 1
                errors.setdefault(f"status_{status}", 0)
                errors[f"status_{status}"] += 1
            if not keep_alive:
                self.close()
        self.close()


def percentile(ordered, p):
    if not ordered:
        return None
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def run(port, connections, duration, path="/", timeout=10.0):
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUser-Agent: tempest-bench\r\n\r\n".encode()
    conns = [Connection(i, port, request, timeout) for i in range(connections)]
    errors = {"socket": 0, "timeout": 0, "protocol": 0, "status": 0}
    # connect everyone first, so that every connection starts the clock together
    connecting = [gevent.spawn(c.connect) for c in conns]
    gevent.joinall(connecting, timeout=timeout + 1)
    for conn, job in zip(conns, connecting):
        if not job.successful():
            errors["socket"] += 1
            conn.close()
    start = time.perf_counter() + 0.05
    end = start + duration
    workers = [gevent.spawn(c.run, start, end, errors) for c in conns]
    gevent.joinall(workers, timeout=duration + timeout + 5)
    finished = time.perf_counter()
    gevent.killall(workers, timeout=1)
    for conn in conns:
        conn.close()
    latencies = sorted(lat for c in conns for lat in c.latencies)
    counts = [c.count for c in conns]
    elapsed = finished - start
    ms = lambda value: None if value is None else round(value * 1000, 3)  # noqa: E731
    return {
        "client": "python-closed-loop",
        "connections": connections,
        "duration_s": round(elapsed, 3),
        "count": len(latencies),
        "rps": round(len(latencies) / elapsed, 1) if elapsed > 0 else None,
        "errors": errors,
        "error_total": errors["socket"] + errors["timeout"] + errors["protocol"] + errors["status"],
        "p50_ms": ms(percentile(latencies, 50)),
        "p90_ms": ms(percentile(latencies, 90)),
        "p99_ms": ms(percentile(latencies, 99)),
        "max_ms": ms(latencies[-1] if latencies else None),
        "mean_ms": ms(statistics.fmean(latencies) if latencies else None),
        "per_connection": counts,
        "per_connection_min": min(counts) if counts else 0,
        "per_connection_median": statistics.median(counts) if counts else 0,
        "per_connection_max": max(counts) if counts else 0,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    parser.add_argument("--connections", "-c", type=int, default=100)
    parser.add_argument("--duration", "-d", type=float, default=10.0, help="seconds")
    parser.add_argument("--path", default="/")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds a connect or a response may take before it counts as an error")
    args = parser.parse_args(argv)
    if args.connections < 1 or args.duration <= 0:
        parser.error("--connections and --duration must be positive")
    result = run(args.port, args.connections, args.duration, args.path, args.timeout)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
