"""The admin listener: /metrics (Prometheus text, checked by promtool), /healthz, /readyz."""

import shutil
import socket
import subprocess
import time

import pytest

from tempest import keys

from operator_support import ECHO, STREAMER, admin, admin_port, sample, samples, worker
from support import RedisServer, http, in_thread, missing_runtime, wait_until


@pytest.fixture
def observed(tempestd_factory):
    # the streamer on the default queue (it reads the whole path), the echo worker under /e/
    return tempestd_factory(front={"queue": "met-stream", "timeout": "5"}, admin={"listen": "127.0.0.1:0"},
                            pubsub={"ws_queue": "met-ws"}, **{"route:/e/": {"queue": "met"}, "worker:echo": worker(ECHO, "met", 2),
                               "worker:streamer": worker(STREAMER, "met-stream")})


def scrape(daemon):
    status, headers, body = admin(daemon, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    return body.decode(), samples(body.decode())


def test_metrics_count_requests_by_route_and_status_and_pass_promtool(observed, redis_client):
    wait_until(lambda: sum(1 for s in observed.status().values() if s["state"] == "RUNNING") == 3, timeout=20)
    for _ in range(3):
        assert http("GET", observed.base + "/e/hello")[0] == 200
    assert http("GET", observed.base + "/nothing")[0] == 404  # the streamer's own 404
    assert http("GET", observed.base + "/big")[0] == 200
    redis_client.rpush("met-ws", b"queued")  # [pubsub] ws_queue, which no worker serves here
    redis_client.rpush(keys.dead("met"), b"dead")
    text, page = scrape(observed)
    assert sample(page, "tempest_http_requests_total", handler="forward", route="/e/", code="200") == 3
    assert sample(page, "tempest_http_requests_total", handler="forward", route="/", code="404") == 1
    assert sample(page, "tempest_http_request_duration_seconds_count", handler="forward", route="/") == 2
    assert sample(page, "tempest_http_request_duration_seconds_bucket", handler="forward", route="/e/",
                  le="+Inf") == 3
    assert sample(page, "tempest_answers_total") == 5
    assert sample(page, "tempest_jobs_pushed_total") == 5
    assert sample(page, "tempest_queue_length", queue="met-ws") == 1
    assert sample(page, "tempest_queue_length", queue="met") == 0
    assert sample(page, "tempest_queue_dead_letter_length", queue="met") == 1
    assert sample(page, "tempest_processes", program="echo", state="RUNNING") == 2
    assert sample(page, "tempest_process_restarts_total", program="streamer") == 0
    assert sample(page, "tempest_redis_up") == 1
    assert sample(page, "tempest_http_connections_open") >= 0
    assert sample(page, "process_open_fds") > 0
    promtool = shutil.which("promtool")
    if promtool is None:
        missing_runtime("promtool (Debian's prometheus package) checks the metrics' names")
    check = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()


def test_a_stream_is_measured_when_it_ends(observed, redis_client):
    wait_until(lambda: observed.status()["streamer:0"]["state"] == "RUNNING", timeout=20)
    thread, result = in_thread(http, "GET", observed.base + "/stream")
    wait_until(lambda: sample(scrape(observed)[1], "tempest_jobs_pending") == 1, timeout=10)
    time.sleep(0.3)
    redis_client.rpush("gate:met-stream", "go")
    thread.join(10)
    assert result["value"][2] == b"first second"
    page = scrape(observed)[1]
    assert sample(page, "tempest_http_request_duration_seconds_count", handler="forward", route="/") == 1
    assert sample(page, "tempest_http_request_duration_seconds_sum", handler="forward", route="/") >= 0.3


def test_health_and_readiness(tempestd_factory, tmp_path):
    own = RedisServer(tmp_path / "own-redis").start()  # this test stops it
    daemon = tempestd_factory(redis_url=own.url, front={"queue": "ready", "timeout": "0.3"},
                              admin={"listen": "127.0.0.1:0"})
    assert admin(daemon, "/healthz")[:3:2] == (200, b"ok\n")
    status, _, body = admin(daemon, "/readyz")
    assert status == 200 and b"ok redis" in body and b"ok front" in body and b"ok queue ready" in body
    assert http("GET", daemon.base + "/")[0] == 503  # nobody took the job in 0.3 s: the queue has no worker
    status, _, body = admin(daemon, "/readyz")
    assert status == 503 and b"fail queue ready: no worker serves it" in body
    own.stop()
    status, _, body = admin(daemon, "/readyz")
    assert status == 503 and b"fail redis" in body
    assert sample(scrape(daemon)[1], "tempest_redis_up") == 0
    assert admin(daemon, "/healthz")[0] == 200  # alive all the same


def test_the_admin_listener_refuses_what_it_does_not_serve(tempestd_factory):
    daemon = tempestd_factory(admin={"listen": "127.0.0.1:0", "max_connections": "2"})
    assert admin(daemon, "/")[0] == 404
    assert admin(daemon, "/metrics", method="POST")[0] == 405
    port = admin_port(daemon)
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as third:
            assert third.recv(4096).startswith(b"HTTP/1.1 503")  # over max_connections, at once
    finally:
        for conn in held:
            conn.close()
    assert admin(daemon, "/healthz")[0] == 200
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        assert conn.recv(4096).startswith(b"HTTP/1.1 431")  # the admin head limit is 8 KiB
