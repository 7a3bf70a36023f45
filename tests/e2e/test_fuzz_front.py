"""Raw bytes to a real tempestd's HTTP port (and its answer endpoint): every connection gets a
well-formed HTTP response or is closed, within a deadline; tempestd stays up, serves a normal
request afterwards, and logs no traceback. The long runs are tests/fuzz/fuzz_front.py."""

import os
import sys

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/

from fuzz import targets  # noqa: E402
from fuzz.fuzz_front import ANSWER_SEEDS, HTTP_SEEDS, HTTP_TOKENS  # noqa: E402
from support import Tempestd, http  # noqa: E402

# derandomized: the same 80 examples every run, so that the suite's time does not depend on
# how many of them wait for a timeout (one run took 34 s, another 6); tests/fuzz explores
FAST = settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

lines = st.sampled_from(HTTP_TOKENS) | st.binary(max_size=6) | st.sampled_from([s[1:] for s in HTTP_SEEDS])
requests = st.lists(lines, max_size=14).map(b"".join)
request_like = st.sampled_from([s[1:] for s in HTTP_SEEDS]).flatmap(
    lambda seed: st.tuples(st.integers(0, len(seed)), st.integers(0, 8), st.binary(max_size=8)).map(
        lambda cut: seed[:cut[0]] + cut[2] + seed[cut[0] + cut[1]:]))


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory, redis_server):
    daemon = Tempestd(tmp_path_factory.mktemp("fuzzfront"), redis_server.url,
                      front={"timeout": "0.1", "header_timeout": "1", "keepalive_timeout": "1",
                             "queue": "fuzz-e2e", "max_body": "64K"}).start()
    yield daemon
    daemon.stop()


def exchange_ok(daemon, data, half_close):
    received, closed = targets.exchange(daemon.port, data, half_close, deadline=6.0)
    targets.check_http_response(data, received, closed)


def check_after(daemon):
    """tempestd is up, serves a normal request and logged no traceback."""
    assert daemon.proc.poll() is None, daemon.log()[-3000:]
    status, headers, _ = http("GET", daemon.base + "/after-fuzzing", timeout=10)
    assert status == 503 and headers["server"] == "tempest"  # no worker on fuzz-e2e: at once, or after the timeout
    assert "Traceback" not in daemon.log(), daemon.log()[-5000:]


def test_raw_bytes_get_a_response_or_a_close(fuzzed):
    @FAST
    @given(requests | request_like | st.binary(max_size=200), st.sampled_from([True] * 7 + [False]))
    @example(b"GET /static/%00 HTTP/1.1\r\nHost: x\r\n\r\n", True)
    @example(b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", True)
    @example(b"GET http://h/raw/x HTTP/1.1\r\nHost: h\r\n\r\n", True)
    @example(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", True)
    @example(b"GET / HTTP/1.1\r\nHost: x\r\n", False)  # an incomplete head: the header timeout closes it
    @example(b"\x00\xff\r\n\r\n", False)
    def run(data, half_close):
        exchange_ok(fuzzed, data, half_close)

    run()
    check_after(fuzzed)


def test_raw_bytes_to_the_answer_endpoint_get_replies_or_a_close(fuzzed):
    @FAST
    @given(st.sampled_from([s[1:] for s in ANSWER_SEEDS]).flatmap(
        lambda seed: st.tuples(st.integers(0, len(seed)), st.binary(max_size=10)).map(
            lambda cut: seed[:cut[0]] + cut[1] + seed[cut[0]:])) | st.binary(max_size=100))
    @example(b"*1\r\n$999999999999\r\nxx")
    @example(b"%1\r\n*1\r\n:1\r\n:2\r\n")
    def run(data):
        received, closed = targets.exchange(fuzzed.answer_port, data, True, deadline=6.0)
        assert closed, f"still open after the client closed its side: {data!r}"
        targets.check_answer_reply(data, received, closed)

    run()
    check_after(fuzzed)


def test_a_published_lone_surrogate_does_not_stop_the_relay(fuzzed, redis_server):
    """Found by test_fuzz_events: ``["\\ud800"]`` (a JSON escape of a lone surrogate) made the
    SSE encoder raise in the relay's fan-out, which killed the relay's greenlet: no subscriber of
    any channel got another message. It is sent as "?" now, and what follows arrives."""
    import socket
    import time

    with socket.create_connection(("127.0.0.1", fuzzed.port), timeout=10) as conn:
        conn.sendall(b"GET /sub/fuzz-surrogate HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        received = b""
        deadline = time.monotonic() + 10
        while b": ok" not in received and time.monotonic() < deadline:
            received += conn.recv(4096)
        client = redis_server.client()
        client.publish("fuzz-surrogate", b'["\\ud800"]')
        client.publish("fuzz-surrogate", b'["$durable", "1-1\\n", "x"]')  # LF in the id: refused
        client.publish("fuzz-surrogate", b'["after"]')
        while b"data: after" not in received and time.monotonic() < deadline:
            received += conn.recv(4096)
    events_seen = received.split(b": ok", 1)[1]
    assert events_seen.strip(b"\n").split(b"\n\n") == [b"data: ?", b"data: after"]
    assert "Traceback" not in fuzzed.log()
