"""The subscriber process of bench/sse.py (``python bench/sse.py --subscriber-process ...``).

Opens N SSE streams, says when they are connected, records every message's arrival.

Protocol on stdout (one JSON object a line): {"connected": ...} when every connection has
either read the stream's opening comment (tempest's ``: ok``, Nchan's ``: hi``) or failed, then
{"result": ...} when every connected stream got ``messages`` messages, or ``stop`` was read on
stdin, or the deadline passed. The result has every latency (``raw``), so that the harness can
merge the results of several subscriber processes.
"""

import gc
import json
import os
import socket
import sys
import time

import gevent
import gevent.event
import gevent.lock
import gevent.select
from gevent import socket as gsocket

from latency import summarize

HOST = "127.0.0.1"
CHANNEL = "bench"


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Subscribers:
    """The streams and what they received: the state shared by their greenlets."""

    def __init__(self, args, limits):
        self.args = args
        self.limits = limits  # the open-file limits (soft, hard) in force
        self.deadline = time.monotonic() + args.deadline
        self.request = (f"GET /sub/{CHANNEL} HTTP/1.1\r\nHost: {HOST}:{args.port}\r\n"
                        "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n").encode()
        self.handshakes = gevent.lock.BoundedSemaphore(args.connect_concurrency)
        self.connected = []  # indexes of the streams that read the opening comment
        self.errors = {}  # kind -> count
        self.received = {}  # seq -> [latency, ...]
        self.complete = 0  # subscribers that received every message
        self.closed_early = 0
        self.keep = []  # sockets of finished streams, closed at exit so that no stream ends early
        self.done = gevent.event.Event()
        self.connect_done = gevent.event.Event()
        self.pending = args.subscribers  # handshakes not finished yet

    def count_error(self, kind):
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def handshake_finished(self):
        self.pending -= 1
        if self.pending == 0:
            self.connect_done.set()

    def one(self, index):
        """One stream (a greenlet): its handshake (at most ``--connect-concurrency`` at a time),
        then its messages."""
        sock = None
        self.handshakes.acquire()
        released = False
        try:
            try:
                sock = gsocket.socket(socket.AF_INET, socket.SOCK_STREAM)
                buffer = self._handshake(sock)
            except socket.timeout:
                self.count_error("connect/head timeout")
                return
            except OSError as exc:
                self.count_error(f"{type(exc).__name__}: {exc.strerror or exc}")
                return
            self.connected.append(index)
            self.handshakes.release()
            released = True
            self.handshake_finished()
            sock.settimeout(None)
            self._receive(sock, buffer)
        finally:
            if not released:
                self.handshakes.release()
                self.handshake_finished()
            if sock is not None:
                self.keep.append(sock)

    def _handshake(self, sock):
        """Connect, send the request, read the head and the opening comment (an event of ':'
        lines); return what came after them."""
        sock.settimeout(self.args.connect_timeout)
        sock.connect((HOST, self.args.port))
        sock.sendall(self.request)
        data = b""
        while b"\r\n\r\n" not in data or b"\n\n" not in data.split(b"\r\n\r\n", 1)[1]:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before the opening comment")
            data += chunk
        head, rest = data.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 200"):
            raise ConnectionError("status " + head.split(b"\r\n", 1)[0].decode("latin-1"))
        first, rest = rest.split(b"\n\n", 1)
        if not all(line.startswith(b":") for line in first.split(b"\n")):
            raise ConnectionError(f"the stream began with {first[:40]!r}, not a comment")
        return rest

    def _receive(self, sock, buffer):
        """Record every message's arrival until the stream got them all or was closed."""
        seen = 0
        while True:
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                seen += self._record(event)
                if seen >= self.args.messages:
                    self.complete += 1
                    if self.complete == len(self.connected) and self.connect_done.is_set():
                        self.done.set()
                    return
            try:
                chunk = sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                self.closed_early += 1
                return
            buffer += chunk

    def _record(self, event):
        """The latency of each message of one event; return how many it held."""
        arrived = time.time()
        count = 0
        for line in event.split(b"\n"):
            if line.startswith(b"data: "):
                message = json.loads(line[6:])
                if message["seq"] < 0:  # the harness' warm-up of a relay (Nchan's publisher)
                    continue
                self.received.setdefault(message["seq"], []).append(arrived - message["t"])
                count += 1
        return count

    def watch_stdin(self, finished):
        """"stop" on stdin: report now; "exit" (or EOF): the harness measured all, exit."""
        while True:
            readable, _, _ = gevent.select.select([sys.stdin.fileno()], [], [], 1.0)
            if readable:
                line = os.read(sys.stdin.fileno(), 1024)
                if not line or b"stop" in line:
                    self.done.set()
                if not line or b"exit" in line:
                    self.done.set()
                    finished.set()
                    return

    def run(self):
        started = time.monotonic()
        greenlets = [gevent.spawn(self.one, i) for i in range(self.args.subscribers)]
        while not self.connect_done.wait(0.5):
            if time.monotonic() > self.deadline:
                break
        gc.collect()
        gc.freeze()  # the streams' objects live to the end: no collection walks them again
        emit({"connected": len(self.connected), "failed": sum(self.errors.values()), "errors": self.errors,
              "seconds": round(time.monotonic() - started, 3), "nofile": list(self.limits)})
        finished = gevent.event.Event()  # "exit" (or EOF) on stdin: the harness measured all
        gevent.spawn(self.watch_stdin, finished)
        if self.connected and self.complete == len(self.connected):
            self.done.set()
        self.done.wait(max(0.0, self.deadline - time.monotonic()))
        self.done.set()
        emit({"result": self.result()})
        finished.wait(max(0.0, self.deadline - time.monotonic()))  # the streams stay open until then
        gevent.killall(greenlets, block=False)
        return 0

    def result(self):
        per_message = {str(seq): summarize(values) for seq, values in sorted(self.received.items())}
        return {"per_message": per_message,
                "overall": summarize([v for values in self.received.values() for v in values]),
                "complete": self.complete, "closed_early": self.closed_early,
                "raw": {str(seq): [round(v, 6) for v in values] for seq, values in self.received.items()}}
