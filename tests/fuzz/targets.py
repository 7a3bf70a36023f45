"""The functions the fuzzers run, shared by the atheris targets, the plain random driver and the
hypothesis tests. Each raises AssertionError (or lets an unexpected exception out) on a bug."""

from __future__ import annotations

import os
import re
import socket
import sys
import tempfile
import time

from tempest import resp
from tempest.errors import ProtocolError

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/, for support

from fuzz.reference import Invalid, parse_commands  # noqa: E402


# the RESP reader


def feed_all(chunks: list[bytes], max_pending: int = 0) -> tuple[list[list[bytes]], ProtocolError | None]:
    """Feed chunks to a new CommandReader: (commands read, the ProtocolError that stopped it)."""
    reader = resp.CommandReader(max_pending)
    commands: list[list[bytes]] = []
    for chunk in chunks:
        try:
            got = reader.feed(chunk)
        except ProtocolError as exc:
            return commands, exc
        for command in got:
            assert isinstance(command, list) and command, f"not a command: {command!r}"
            assert all(type(arg) is bytes for arg in command), f"not bytes: {command!r}"
        commands += got
    return commands, None


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


def check_resp(data: bytes, cuts: list[int]) -> None:
    """Any bytes, fed whole and in any split: commands or ProtocolError, never another exception;
    the split changes nothing; on strictly well-formed RESP, the exact parser's commands."""
    whole, whole_error = feed_all([data])
    parts, parts_error = feed_all(split(data, cuts))
    if whole_error is None and parts_error is None:
        assert parts == whole, f"split changed the commands: {whole!r} vs {parts!r}"
    elif whole_error is None:
        # a split may only fail where the whole did not if an inline line grew past MAX_INLINE
        assert len(data) > resp.MAX_INLINE, f"fed in parts, {parts_error} (whole: {whole!r})"
    else:
        assert parts_error is not None or len(data) > resp.MAX_INLINE, \
            f"fed whole: {whole_error}; fed in parts: no error but {parts!r}"
        assert whole == [], "a feed that raised returned commands"
    if data[:1] == b"*":
        try:
            expected, _, _ = parse_commands(data)
        except Invalid:
            return
        assert whole_error is None, f"well-formed RESP refused: {whole_error} for {data[:200]!r}"
        assert whole == expected, f"differs from the exact parser: {whole!r} vs {expected!r}"


def check_resp_bounded(data: bytes, cuts: list[int], max_pending: int) -> None:
    """With max_pending, what the reader has been fed past its last complete command never
    exceeds max_pending plus the last chunk before it says ProtocolError."""
    reader = resp.CommandReader(max_pending)
    fed = 0
    done = 0  # bytes of the stream used by the commands read so far (known for strict RESP only)
    strict = data[:1] == b"*"
    for chunk in split(data, cuts):
        try:
            reader.feed(chunk)
        except ProtocolError:
            return
        fed += len(chunk)
        if strict:
            try:
                _, done, _ = parse_commands(data[:fed])
            except Invalid:
                strict = False
                continue
            held = fed - done
            assert held <= max_pending + len(chunk), \
                f"holds {held} bytes of an incomplete command (max_pending {max_pending})"


def resp_one_input(data: bytes) -> None:
    """The atheris/driver entry: the first bytes choose the split points and max_pending."""
    if len(data) < 4:
        check_resp(data, [])
        return
    cuts = list(data[1:1 + data[0] % 8])
    body = data[1 + data[0] % 8:]
    check_resp(body, [c * 7 for c in cuts])
    check_resp_bounded(body, [c * 7 for c in cuts], 16 + data[0] * 4)


# a real tempestd (the HTTP front and the answer endpoint)


STATUS_LINE = re.compile(rb"HTTP/1\.[01] [1-5][0-9][0-9] [^\r\n]*\r\n")
RESP_REPLY = re.compile(rb"[-+:$*%_#,(=>~|!]")


class LiveDaemon:
    """redis-server and tempestd on free 127.0.0.1 ports, in a temporary directory, with short
    timeouts so every exchange ends quickly."""

    def __init__(self, directory: str | None = None) -> None:
        from support import RedisServer, Tempestd

        self.directory = directory or tempfile.mkdtemp(prefix="tempest-fuzz-")
        self.redis = RedisServer(os.path.join(self.directory, "redis")).start()
        self.daemon = Tempestd(os.path.join(self.directory, "tempestd"), self.redis.url,
                               front={"timeout": "0.5", "header_timeout": "1", "keepalive_timeout": "1",
                                      "queue": "fuzz", "max_body": "64K"}).start()
        self._watchdog()

    def _watchdog(self) -> None:
        """libFuzzer ends a run with exit() (no Python cleanup) and a fuzzer may be killed: a
        small shell stops our redis-server and tempestd groups once this process is gone."""
        import subprocess

        groups = " ".join(f"-{proc.pid}" for proc in (self.daemon.proc, self.redis.proc))
        subprocess.Popen(["sh", "-c", f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; "
                          f"kill -TERM {groups} 2>/dev/null; sleep 5; kill -KILL {groups} 2>/dev/null"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)

    def stop(self) -> None:
        self.daemon.stop()
        self.redis.stop()

    def alive(self) -> None:
        assert self.daemon.proc.poll() is None, f"tempestd exited:\n{self.daemon.log()[-3000:]}"

    def log_clean(self) -> None:
        text = self.daemon.log()
        assert "Traceback" not in text, f"a traceback in tempestd's log:\n{text[text.index('Traceback') - 500:][:4000]}"


def exchange(port: int, data: bytes, half_close: bool, deadline: float = 6.0) -> tuple[bytes, bool]:
    """Send ``data``, optionally shut down writing, read until closed or ``deadline`` seconds:
    (received bytes, closed by the server)."""
    end = time.monotonic() + deadline
    with socket.create_connection(("127.0.0.1", port), timeout=deadline) as conn:
        try:
            conn.sendall(data)
            if half_close:
                conn.shutdown(socket.SHUT_WR)
        except OSError:  # the server refused and closed while we were still sending
            pass
        received = []
        while True:
            conn.settimeout(max(0.01, end - time.monotonic()))
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                return b"".join(received), False
            except OSError:  # reset: closed
                return b"".join(received), True
            if not chunk:
                return b"".join(received), True
            received.append(chunk)


def check_http_response(data: bytes, received: bytes, closed: bool) -> None:
    """Every connection gets a well-formed HTTP response (a status line, headers without bare
    CR or LF or NUL, the empty line) or is closed; one left open has sent a complete head."""
    if not received:
        assert closed, f"no response and not closed for {data[:300]!r}"
        return
    assert STATUS_LINE.match(received), f"not an HTTP status line: {received[:200]!r} for {data[:300]!r}"
    head, sep, _ = received.partition(b"\r\n\r\n")
    assert sep, f"an incomplete response head: {received[:500]!r} for {data[:300]!r}"
    for line in head.split(b"\r\n")[1:]:
        assert b"\n" not in line and b"\r" not in line and b"\x00" not in line, f"bad header line {line!r}"
        name, colon, _ = line.partition(b":")
        assert colon and re.fullmatch(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name), f"bad header line {line!r}"


def check_answer_reply(data: bytes, received: bytes, closed: bool) -> None:
    """The answer endpoint answers RESP replies or closes; it never stays silent and open when
    the client has finished sending a complete inline or RESP command stream... it may wait for
    more of an incomplete one, so only the shape of what it sends is checked."""
    if received:
        assert RESP_REPLY.match(received), f"not a RESP reply: {received[:200]!r} for {data[:300]!r}"
        assert received.endswith(b"\r\n") or not closed, f"a reply cut short: {received[-200:]!r}"


_STATUSES = [b"%d" % code for code in range(100, 600)]


def feedback(received: bytes) -> int:
    """Branch on what the server answered, so that atheris, which sees no coverage of tempestd
    (another process), keeps inputs that got a new status or a new first header: the loop's
    trip count is a coverage feature."""
    status = received[9:12]
    for rank, code in enumerate(_STATUSES):
        if status == code:
            break
    else:
        rank = -1
    line = received.split(b"\r\n", 2)[1:2]
    name = line[0].partition(b":")[0].lower() if line else b""
    for extra, known in enumerate((b"content-type", b"content-length", b"date", b"connection", b"server",
                                   b"cache-control", b"upgrade", b"allow", b"retry-after", b"location")):
        if name == known:
            return rank * 16 + extra
    return rank * 16 + 15


class FrontTarget:
    """One live tempestd for a whole fuzzing run; each input is one connection."""

    def __init__(self) -> None:
        self.live = LiveDaemon()
        self.count = 0

    def __call__(self, data: bytes) -> None:
        mode = data[:1]
        body = data[1:]
        half_close = not mode or mode[0] & 7 != 1  # else the server's header_timeout closes it
        if mode and mode[0] & 2 and b"\r\n\r\n" not in body:
            body = body + b"\r\n\r\n"  # more often a complete head
        if mode and mode[0] & 4:  # more often a well-formed request line to mutate from
            body = b"GET / HTTP/1.1\r\nHost: x\r\n" + body
        received, closed = exchange(self.live.daemon.port, body, half_close)
        check_http_response(body, received, closed)
        feedback(received)
        self.count += 1
        if self.count % 200 == 0:
            self.live.alive()
            self.live.log_clean()

    def finish(self) -> None:
        self.live.alive()
        self.live.log_clean()
        received, _ = exchange(self.live.daemon.port, b"GET /fuzz-done HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", False)
        assert STATUS_LINE.match(received), f"tempestd no longer serves HTTP: {received[:200]!r}"


class AnswerTarget(FrontTarget):
    """Raw bytes to the answer endpoint (no password): RESP replies or a close, never a
    traceback, and tempestd stays up."""

    def __call__(self, data: bytes) -> None:
        # the endpoint waits answer_idle_timeout for the rest of an incomplete command: mostly
        # close our side; otherwise give it a moment to answer
        half_close = not data[:1] or data[0] & 7 != 1
        received, closed = exchange(self.live.daemon.answer_port, data[1:], half_close, deadline=3.0 if half_close else 0.3)
        check_answer_reply(data[1:], received, closed)
        self.count += 1
        if self.count % 200 == 0:
            self.live.alive()
            self.live.log_clean()
