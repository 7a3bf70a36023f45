"""Streamed answers end to end: a library worker sends a head and pieces, tempestd relays them
as they come (chunked encoding), cuts a stream that stops, drops what comes after the client left."""

import os
import socket
import time

import pytest

from support import REPO, http, kill_groups, start_worker, wait_until

APP = [os.path.join(REPO, "tests", "workers", "streamer.py")]


@pytest.fixture
def site(tempestd_factory, redis_server, tmp_path, request):
    queue = "stream-" + request.node.name[5:40]
    daemon = tempestd_factory(front={"queue": queue, "timeout": "2"})
    # up before the first job: its route's 2 s timeout would take a job back (503) from a worker
    # still starting (the cause of test_a_bad_stream_head_is_502's failures on a loaded machine)
    worker = start_worker(APP + [queue], redis_server.url, tmp_path, ready="worker on ")
    daemon.queue = queue
    yield daemon
    kill_groups([worker])  # a plain worker: its stop is not under test


def read_until(sock, marker, buffer=b"", timeout=10):
    deadline = time.monotonic() + timeout
    while marker not in buffer:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
    return buffer


def dechunk(body):
    out = b""
    while True:
        size, _, rest = body.partition(b"\r\n")
        size = int(size, 16)
        if size == 0:  # the last chunk, then the (empty) trailer's CRLF
            assert rest.startswith(b"\r\n")
            return out, rest[2:]
        out, body = out + rest[:size], rest[size + 2:]


def test_pieces_arrive_as_they_are_written_then_keep_alive(site, redis_server):
    with socket.create_connection(("127.0.0.1", site.port), timeout=10) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        got = read_until(sock, b"first ")
        head, _, body = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Transfer-Encoding: chunked" in head and b"Content-Length" not in head
        assert b"second" not in got  # the worker waits at the gate: the first piece came alone
        redis_server.client().rpush(f"gate:{site.queue}", 1)
        got = read_until(sock, b"0\r\n\r\n", got)
        assert dechunk(got.partition(b"\r\n\r\n")[2]) == (b"first second", b"")
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")  # the same connection
        got = read_until(sock, b"\r\n0\r\n\r\n")
        body, rest = dechunk(got.partition(b"\r\n\r\n")[2])
        assert body == b"".join(bytes([i]) * 10_000 for i in range(100)) and rest == b""


def test_http10_client_gets_the_body_until_close(site, redis_server):
    redis_server.client().rpush(f"gate:{site.queue}", 1)
    with socket.create_connection(("127.0.0.1", site.port), timeout=10) as sock:
        sock.sendall(b"GET /stream HTTP/1.0\r\n\r\n")
        got = read_until(sock, b"never there")  # until tempestd closes
    head, _, body = got.partition(b"\r\n\r\n")
    assert b"Connection: close" in head and b"Transfer-Encoding" not in head
    assert body == b"first second"


def test_a_stream_that_stops_is_cut_after_the_timeout(site):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", site.port), timeout=10) as sock:
        sock.sendall(b"GET /unfinished HTTP/1.1\r\nHost: x\r\n\r\n")
        got = read_until(sock, b"never there")
    assert 1.5 < time.monotonic() - started < 8
    assert got.endswith(b"\r\n\r\n1\r\nx\r\n")  # the piece, then the cut: no terminating chunk
    assert site.info()["timeouts"] >= 1


def test_a_handler_failing_mid_stream_cuts_the_body_at_once(site):
    with socket.create_connection(("127.0.0.1", site.port), timeout=10) as sock:
        sock.sendall(b"GET /fails HTTP/1.1\r\nHost: x\r\n\r\n")
        got = read_until(sock, b"never there")
    assert got.startswith(b"HTTP/1.1 200 OK\r\n") and got.endswith(b"\r\n\r\n1\r\nx\r\n")
    # cut by the worker's abort, not by the 2 s timeout (which counts before it closes)
    assert site.info()["timeouts"] == 0


def test_a_bad_stream_head_is_502(site):
    assert http("GET", site.base + "/badhead")[0] == 502
    # counted before the 502 went out; the stream's end, sent right after the head, may come
    # before the 502 or after it (then dropped): either way no client is counted gone
    assert site.info()["clients_gone"] == 0 and site.info()["bad_answers"] == 1


def test_pieces_after_the_client_left_are_dropped(site, redis_server):
    with socket.create_connection(("127.0.0.1", site.port), timeout=10) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        read_until(sock, b"first ")
    wait_until(lambda: site.info()["clients_gone"] >= 1, timeout=5)
    redis_server.client().rpush(f"gate:{site.queue}", 1)  # the worker sends "second" and the end
    wait_until(lambda: site.info()["answers_dropped"] >= 2, timeout=5)
    assert http("GET", site.base + "/big")[0] == 200  # the worker carries on
