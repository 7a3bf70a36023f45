"""The HTTP front end to end: tempestd as a subprocess, real Redis, real HTTP clients."""

import json
import os
import socket
import time

import pytest
import redis

from support import REPO, http, in_thread, kill_groups, raw_exchange, start_worker, wait_until

ECHO = [os.path.join(REPO, "tests", "workers", "echo.py")]


@pytest.fixture(scope="module")
def echo_daemon(module_tempestd_factory, redis_server, tmp_path_factory):
    """tempestd and an echo worker that the module's tests share: each reads only its own
    responses (a test that counts gets its own daemon, own_echo_daemon)."""
    daemon = module_tempestd_factory(front={"queue": "echo-shared"})
    worker = start_worker(ECHO + ["echo-shared"], redis_server.url, tmp_path_factory.mktemp("echo"))
    yield daemon
    kill_groups([worker])  # a plain worker: its stop is not under test


@pytest.fixture
def own_echo_daemon(tempestd_factory, redis_server, tmp_path, request):
    queue = f"echo-{request.node.name}"[:60]
    daemon = tempestd_factory(front={"queue": queue})
    worker = start_worker(ECHO + [queue], redis_server.url, tmp_path)
    yield daemon
    kill_groups([worker])  # a plain worker: its stop is not under test


def take_job(client, queue, timeout=10):
    item = client.blpop([queue], timeout=timeout)
    assert item is not None, f"no job on {queue}"
    job = json.loads(item[1])
    assert len(job) == 4
    return job


def test_get_through_library_worker(echo_daemon):
    status, headers, body = http("GET", echo_daemon.base + "/hello/world?x=1", headers={"X-Thing": "yes"})
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert headers["x-count"] == "1"
    assert int(headers["content-length"]) == len(body)
    env = json.loads(body)["env"]
    assert env["method"] == "GET"
    assert env["url"] == "/hello/world?x=1"
    assert env["headers"]["x-thing"] == "yes"
    assert "body" not in env


def test_post_body_reaches_worker(echo_daemon):
    payload = "héllo wörld".encode()
    status, _, body = http("POST", echo_daemon.base + "/form", body=payload)
    assert status == 200
    assert json.loads(body)["env"]["body"] == "héllo wörld"


def test_binary_body_travels_base64(echo_daemon):
    status, _, body = http("PUT", echo_daemon.base + "/bin", body=b"\xff\x00\xfe")
    env = json.loads(body)["env"]
    assert status == 200
    assert env["body_base64"] == "/wD+"
    assert "body" not in env


def test_chunked_request_body(echo_daemon):
    raw = (b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
           b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    reply = raw_exchange(echo_daemon.port, raw)
    assert reply.startswith(b"HTTP/1.1 200 OK")
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["env"]["body"] == "hello world"


def test_keep_alive_and_pipelining_answer_in_order(echo_daemon):
    raw = b"".join(b"GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5))
    raw += b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    reply = raw_exchange(echo_daemon.port, raw)
    assert reply.count(b"HTTP/1.1 200 OK") == 6
    urls = [json.loads(part.split(b"\r\n\r\n", 1)[1].split(b"HTTP/1.1")[0])["env"]["url"]
            for part in reply.split(b"HTTP/1.1 200 OK")[1:]]
    assert urls == ["/p0", "/p1", "/p2", "/p3", "/p4", "/last"]


def test_request_split_across_many_segments(echo_daemon):
    raw = b"GET /split HTTP/1.1\r\nHost: x\r\nX-Long: " + b"y" * 300 + b"\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", echo_daemon.port), timeout=10) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(raw), 7):
            conn.sendall(raw[i:i + 7])
            time.sleep(0.001)
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 OK")
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["env"]["headers"]["x-long"] == "y" * 300


def test_expect_100_continue(echo_daemon):
    with socket.create_connection(("127.0.0.1", echo_daemon.port), timeout=10) as conn:
        conn.sendall(b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n"
                     b"Connection: close\r\n\r\n")
        assert conn.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        conn.sendall(b"data")
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 OK")
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["env"]["body"] == "data"


def test_head_has_no_body(echo_daemon):
    reply = raw_exchange(echo_daemon.port, b"HEAD /h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Content-Length: " in head and body == b""


def test_http10_closes_unless_keep_alive(echo_daemon):
    reply = raw_exchange(echo_daemon.port, b"GET /old HTTP/1.0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in reply


def test_handler_exception_is_500_and_worker_survives(echo_daemon):
    status, _, body = http("GET", echo_daemon.base + "/fail")
    assert status == 500
    assert http("GET", echo_daemon.base + "/after")[0] == 200


def test_second_answer_is_dropped_and_counted(own_echo_daemon):
    assert http("GET", own_echo_daemon.base + "/twice")[0] == 200
    wait_until(lambda: own_echo_daemon.info()["answers_dropped"] >= 1, message="a dropped answer")


def test_raw_redis_worker_like_2012(tempestd_factory, redis_client):
    """A worker with nothing but redis-py commands: BLPOP, then a raw command to respond_to."""
    daemon = tempestd_factory(front={"queue": "raw2012", "timeout": "7"})
    thread, result = in_thread(http, "POST", daemon.base + "/raw?q=1", body=b"abc")
    action, args, respond_to, job_id = take_job(redis_client, "raw2012")
    assert action == "url" and isinstance(job_id, str) and len(job_id) >= 16
    env = args[0]
    assert args == [{"method": "POST", "url": "/raw?q=1", "body": "abc", "remote_addr": "127.0.0.1",
                     "headers": env["headers"], "queued": env["queued"], "deadline": env["deadline"],
                     "redeliver": False}]  # a POST is not run twice when its worker dies
    assert env["headers"]["content-length"] == "3"
    assert abs(env["queued"] - time.time()) < 5 and abs(env["deadline"] - env["queued"] - 7) < 0.01  # the route timeout
    host, port = respond_to.rsplit(":", 1)
    answer = redis.Redis(host=host, port=int(port))
    reply = answer.execute_command("url", job_id, json.dumps([200, {"Content-length": 99}, "Hello \u00e9"]))
    assert reply == b"OK"
    thread.join(10)
    status, headers, body = result["value"]
    assert status == 200
    assert body == "Hello é".encode()  # the front frames the body, whatever the worker's length
    assert headers["content-length"] == str(len(body))


def test_a_head_answer_keeps_the_content_length_its_worker_declared(tempestd_factory, redis_client):
    """A HEAD's Content-Length is the GET's (RFC 9110, 9.3.2): the worker's, since the body it
    sends for a HEAD is empty; none when it declares none, never a 0 that is not the GET's."""
    daemon = tempestd_factory(front={"queue": "head-length"})
    for declared, expected in (({"Content-Length": "1234"}, b"Content-Length: 1234\r\n"), ({}, None)):
        thread, result = in_thread(raw_exchange, daemon.port, b"HEAD /h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        _, _, respond_to, job_id = take_job(redis_client, "head-length")
        host, port = respond_to.rsplit(":", 1)
        answer = json.dumps([200, {"Content-Type": "text/plain", **declared}, ""])
        assert redis.Redis(host=host, port=int(port)).execute_command("url", job_id, answer) == b"OK"
        thread.join(10)
        head = result["value"]
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
        if expected is None:
            assert b"Content-Length" not in head
        else:
            assert expected in head and head.count(b"Content-Length") == 1


def test_repeated_headers_reach_the_worker_joined(tempestd_factory, redis_client):
    daemon = tempestd_factory(front={"queue": "repeat"})
    head = (b"GET /r HTTP/1.1\r\nHost: x\r\nX-Tag: a\r\nCookie: s=1\r\nx-tag: b\r\n"
            b"Cookie: t=2\r\nConnection: close\r\n\r\n")
    thread, result = in_thread(raw_exchange, daemon.port, head)
    _, args, respond_to, job_id = take_job(redis_client, "repeat")
    assert args[0]["headers"] == {"host": "x", "x-tag": "a, b", "cookie": "s=1; t=2", "connection": "close"}
    host, port = respond_to.rsplit(":", 1)
    assert redis.Redis(host=host, port=int(port)).execute_command("url", job_id, b'[200, {}, "ok"]') == b"OK"
    thread.join(10)
    assert result["value"].startswith(b"HTTP/1.1 200 OK\r\n") and result["value"].endswith(b"\r\n\r\nok")


def answer_job(job, payload=b'[200, {}, "ok"]'):
    """Answer a job taken with take_job, as a worker does (so that its client need not wait
    for the route's timeout)."""
    _, _, respond_to, job_id = job
    host, port = respond_to.rsplit(":", 1)
    assert redis.Redis(host=host, port=int(port)).execute_command("url", job_id, payload) == b"OK"


def answer_with(daemon, redis_client, queue, payload, path="/x"):
    thread, result = in_thread(http, "GET", daemon.base + path)
    _, _, respond_to, job_id = take_job(redis_client, queue)
    host, port = respond_to.rsplit(":", 1)
    assert redis.Redis(host=host, port=int(port)).execute_command("url", job_id, payload) == b"OK"
    thread.join(10)
    return result["value"]


@pytest.mark.parametrize("payload", [
    b"not json", b'{"status": 200}', b'["abc", {}, "x"]', b'[200, {"X-Evil": "a\\r\\nSet-Cookie: x=1"}, "x"]',
    b'[200, {"Bad Name": "v"}, "x"]', b'[200, {}, {"not": "a string"}]', b"[99, {}, \"x\"]",
])
def test_malformed_answer_is_502(tempestd_factory, redis_client, payload):
    daemon = tempestd_factory(front={"queue": "bad"})
    status, _, body = answer_with(daemon, redis_client, "bad", payload)
    assert status == 502
    assert body == b"502 Bad Gateway\n"
    assert "bad answer to url job" in daemon.log()
    assert daemon.info()["bad_answers"] == 1


def test_a_job_taken_but_not_answered_is_504(tempestd_factory, redis_client):
    daemon = tempestd_factory(front={"queue": "nobody", "timeout": "0.5"})
    started = time.monotonic()
    thread, result = in_thread(http, "GET", daemon.base + "/")
    take_job(redis_client, "nobody")  # a worker took it, and never answers
    thread.join(10)
    status, _, body = result["value"]
    assert status == 504 and body == b"504 Gateway Timeout\n"
    assert time.monotonic() - started < 5
    assert daemon.info()["timeouts"] == 1 and daemon.info()["not_taken"] == 0


def test_route_longest_prefix_picks_queue_and_timeout(tempestd_factory, redis_client):
    daemon = tempestd_factory(**{"front": {"queue": "r-default"},
                                 "route:/api/": {"queue": "r-api"},
                                 "route:/api/slow/": {"queue": "r-slow", "timeout": "0.3"}})
    assert answer_with(daemon, redis_client, "r-api", b'[201, {}, "api"]', "/api/thing")[0] == 201
    assert answer_with(daemon, redis_client, "r-default", b'[202, {}, "other"]', "/apix")[0] == 202
    thread, result = in_thread(http, "GET", daemon.base + "/api/slow/x")
    take_job(redis_client, "r-slow")  # the route's queue
    thread.join(10)
    assert result["value"][0] == 504  # the route's timeout: 0.3 s, not the default 30


def test_full_queue_is_503(tempestd_factory, redis_client):
    daemon = tempestd_factory(front={"queue": "full", "max_queue_length": "2", "timeout": "3"})
    waiting = [in_thread(http, "GET", daemon.base + f"/{i}") for i in range(2)]
    wait_until(lambda: redis_client.llen("full") == 2, message="two queued jobs")
    status, _, body = http("GET", daemon.base + "/third")
    assert status == 503 and body == b"503 Service Unavailable\n"
    assert redis_client.llen("full") == 2
    assert daemon.info()["queue_full"] == 1
    for _ in waiting:  # answered, rather than left to the route's timeout
        answer_job(take_job(redis_client, "full"))
    for thread, result in waiting:
        thread.join(10)
        assert result["value"][0] == 200


def test_malformed_http_is_400(echo_daemon):
    reply = raw_exchange(echo_daemon.port, b"NOT HTTP AT ALL\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 Bad Request")
    assert b"Connection: close" in reply


def test_content_length_and_transfer_encoding_is_400(echo_daemon):
    reply = raw_exchange(echo_daemon.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                                           b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 Bad Request")


def test_body_over_max_body_is_413(tempestd_factory):
    daemon = tempestd_factory(front={"queue": "big", "max_body": "1K"})
    reply = raw_exchange(daemon.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 413 Content Too Large")
    chunked = (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               + (b"200\r\n" + b"x" * 512 + b"\r\n") * 3 + b"0\r\n\r\n")
    assert raw_exchange(daemon.port, chunked).startswith(b"HTTP/1.1 413")
    assert daemon.info()["jobs_pushed"] == 0


def test_huge_headers_are_431(tempestd_factory):
    daemon = tempestd_factory(front={"queue": "hdr", "max_header_size": "4K"})
    reply = raw_exchange(daemon.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 431")


def test_slowloris_is_dropped_after_header_timeout(tempestd_factory):
    daemon = tempestd_factory(front={"queue": "slow", "header_timeout": "0.5"})
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        for _ in range(3):
            time.sleep(0.2)
            try:
                conn.sendall(b"X-A: b\r\n")  # trickle, never finish
            except OSError:
                break
        reply = conn.recv(1024)
        assert reply.startswith(b"HTTP/1.1 408")
        assert conn.recv(1024) == b""
        assert time.monotonic() - started < 3


def test_client_leaving_frees_its_job_and_late_answer_is_dropped(tempestd_factory, redis_client):
    daemon = tempestd_factory(front={"queue": "gone"})
    conn = socket.create_connection(("127.0.0.1", daemon.port), timeout=5)
    conn.sendall(b"GET /bye HTTP/1.1\r\nHost: x\r\n\r\n")
    _, _, respond_to, job_id = take_job(redis_client, "gone")
    conn.close()
    wait_until(lambda: daemon.info()["clients_gone"] == 1, message="the client counted as gone")
    assert daemon.info()["pending_jobs"] == 0
    host, port = respond_to.rsplit(":", 1)
    assert redis.Redis(host=host, port=int(port)).execute_command("url", job_id, "[200, {}, \"late\"]") == b"OK"
    assert daemon.info()["answers_dropped"] == 1


def test_redis_down_is_503_then_recovers(tempestd_factory, tmp_path):
    from support import RedisServer

    own = RedisServer(tmp_path / "own-redis").start()
    try:
        daemon = tempestd_factory(redis_url=own.url, front={"queue": "flaky", "timeout": "5"})
        own.stop()
        status, _, _ = http("GET", daemon.base + "/")
        assert status == 503
        assert daemon.info()["push_errors"] >= 1
        own = RedisServer(tmp_path / "own-redis", port=own.port).start()
        thread, result = in_thread(http, "GET", daemon.base + "/again")
        job = take_job(own.client(), "flaky")
        assert job[0] == "url"
        answer_job(job)
        thread.join(10)
        assert result["value"][0] == 200
    finally:
        own.stop()


def test_first_request_after_a_redis_restart_is_pushed_not_refused(tempestd_factory, tmp_path):
    """The pusher's connection went stale while Redis restarted between two requests: it is
    found closed before the push and replaced, instead of failing the push with a 503."""
    from support import RedisServer

    own = RedisServer(tmp_path / "own-redis").start()
    try:
        daemon = tempestd_factory(redis_url=own.url, front={"queue": "restart", "timeout": "5"})
        thread, result = in_thread(http, "GET", daemon.base + "/before")
        job = take_job(own.client(), "restart")
        assert job[0] == "url"
        answer_job(job)
        thread.join(10)
        assert result["value"][0] == 200
        own.stop()
        own = RedisServer(tmp_path / "own-redis", port=own.port).start()
        thread, result = in_thread(http, "GET", daemon.base + "/after")
        job = take_job(own.client(), "restart")
        assert job[1][0]["url"] == "/after"
        answer_job(job)
        thread.join(10)
        assert result["value"][0] == 200
        assert daemon.info()["push_errors"] == 0
    finally:
        own.stop()


def test_head_under_the_limit_is_accepted_even_in_many_segments(echo_daemon):
    # 40 KB of headers under the 64 KB default, sent in pieces: each byte counts once
    head = b"GET /big HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(40))
    with socket.create_connection(("127.0.0.1", echo_daemon.port), timeout=10) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(head), 4096):
            conn.sendall(head[i:i + 4096])
            time.sleep(0.005)
        conn.sendall(b"Connection: close\r\n\r\n")
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 OK"), reply[:100]


def test_a_client_that_never_reads_is_dropped_after_the_timeout(tempestd_factory, redis_client):
    daemon = tempestd_factory(front={"queue": "noreader", "keepalive_timeout": "1"})
    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn.connect(("127.0.0.1", daemon.port))
    conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    _, _, respond_to, job_id = take_job(redis_client, "noreader")
    host, port = respond_to.rsplit(":", 1)
    big = json.dumps([200, {}, "z" * 8_000_000])  # far more than the socket buffers hold
    redis.Redis(host=host, port=int(port)).execute_command("url", job_id, big)
    wait_until(lambda: daemon.info()["connections_open"] == 0, 15, 0.1, message="the stuck writer dropped")
    conn.close()


def test_wsgi_application_behind_tempestd(tempestd_factory, redis_server, tmp_path):
    """python -m tempest.wsgi serving a PEP 3333 application (wrapped in wsgiref's validator)."""
    daemon = tempestd_factory(front={"queue": "wsgi"})
    worker = start_worker(["-m", "tempest.wsgi", "wsgiapp:application", "--queue", "wsgi",
                           "--chdir", os.path.join(REPO, "tests", "workers")], redis_server.url, tmp_path, "wsgi")
    try:
        status, headers, body = http("POST", daemon.base + "/echo/x%20y?a=1", body="h\u00e9".encode(),
                                     headers={"X-Thing": "yes", "Content-Type": "text/plain"})
        assert status == 200
        seen = json.loads(body)
        assert (seen["REQUEST_METHOD"], seen["PATH_INFO"], seen["QUERY_STRING"]) == ("POST", "/echo/x y", "a=1")
        assert seen["body"].encode("latin-1") == "h\u00e9".encode() and seen["CONTENT_TYPE"] == "text/plain"
        assert seen["HTTP_X_THING"] == "yes" and seen["REMOTE_ADDR"] == "127.0.0.1"
        status, headers, body = http("GET", daemon.base + "/binary")
        assert status == 200 and headers["content-type"] == "image/png"
        assert body == b"\x89PNG\r\n\x1a\n" + bytes(range(256))
        assert http("GET", daemon.base + "/boom")[0] == 500
        assert http("GET", daemon.base + "/missing")[0] == 404
        # a generator without Content-Length is streamed; with one, sent whole
        status, headers, body = http("GET", daemon.base + "/stream")
        assert (status, body) == (200, "one tw\u00f6 three".encode()) and headers["transfer-encoding"] == "chunked"
        status, headers, body = http("GET", daemon.base + "/sized")
        assert (status, body) == (200, b"sized") and headers["content-length"] == "5"
        # a late start_response(exc_info) once the stream's head is out re-raises (PEP 3333):
        # the stream is cut, the error page never appended to the 200
        got = raw_exchange(daemon.port, b"GET /late-error HTTP/1.1\r\nHost: x\r\n\r\n", timeout=10)
        assert got.startswith(b"HTTP/1.1 200 OK\r\n") and b"begun " in got
        assert b"error page" not in got and not got.endswith(b"0\r\n\r\n")
    finally:
        kill_groups([worker])


@pytest.mark.parametrize("head", [
    b"GET / HTTP/1.1\r\n\r\n",  # no Host
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",  # two
])
def test_http11_needs_exactly_one_host(tempestd_factory, head):
    daemon = tempestd_factory(front={"queue": "host-check"})
    reply = raw_exchange(daemon.port, head)
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"Connection: close" in reply


def test_http10_without_host_is_served(tempestd_factory, redis_client):
    daemon = tempestd_factory(front={"queue": "host-10", "timeout": "0.5"})
    thread, result = in_thread(raw_exchange, daemon.port, b"GET / HTTP/1.0\r\n\r\n")
    assert take_job(redis_client, "host-10")[1][0]["url"] == "/"  # a job was made
    thread.join(10)
    assert result["value"].startswith(b"HTTP/1.1 504")  # nobody answers it


def test_an_absolute_target_is_routed_by_its_path(tempestd_factory, redis_client):
    daemon = tempestd_factory(front={"queue": "abs-default", "timeout": "0.5"},
                              **{"route:/raw/": {"queue": "abs-raw"}})
    thread, result = in_thread(raw_exchange, daemon.port, b"GET http://elsewhere:81/raw/x?a=1 HTTP/1.1\r\n"
                               b"Host: elsewhere:81\r\nConnection: close\r\n\r\n")
    assert take_job(redis_client, "abs-raw")[1][0]["url"] == "/raw/x?a=1"  # the route's queue, the path
    thread.join(10)
    assert result["value"].startswith(b"HTTP/1.1 504")
    assert redis_client.llen("abs-default") == 0
    reply = raw_exchange(daemon.port, b"GET ftp://h/raw/x HTTP/1.1\r\nHost: h\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400")


def test_connections_over_max_connections_get_503_and_are_closed(tempestd_factory):
    daemon = tempestd_factory(front={"queue": "cap", "max_connections": "3"})
    held = [socket.create_connection(("127.0.0.1", daemon.port), timeout=5) for _ in range(3)]
    try:
        wait_until(lambda: daemon.info()["connections_open"] == 3)
        reply = raw_exchange(daemon.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b"Retry-After: 1\r\n" in reply and b"Connection: close\r\n" in reply
        held.pop().close()
        wait_until(lambda: daemon.info()["connections_open"] == 2)
        status = http("GET", daemon.base + "/sub/x,", timeout=5)[0]  # room again: served (a 400 from the relay)
        assert status == 400
    finally:
        for conn in held:
            conn.close()
    assert daemon.info()["connections_refused"] == 1


def test_a_body_trickled_in_gets_408_after_body_timeout(tempestd_factory):
    daemon = tempestd_factory(front={"queue": "trickle", "body_timeout": "1", "header_timeout": "5"})
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as conn:
        conn.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        reply = b""
        for _ in range(40):  # a byte every 0.2 s: each pause is short, the whole body is slow
            try:
                conn.sendall(b"x")
            except OSError:
                break
            conn.settimeout(0.2)
            try:
                reply += conn.recv(65536)
            except socket.timeout:
                continue
            if reply:
                break
    assert reply.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert time.monotonic() - started < 8  # long before 100 bytes at 5 a second (20 s)
