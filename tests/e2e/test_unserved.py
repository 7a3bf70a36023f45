"""A queue nobody serves is answered 503 at once, after the first request that waited; one
probe at a time still goes through, and a worker's answer ends the 503s (2012 workers too)."""

import json
import time

from support import http, in_thread, wait_until


def test_a_queue_nobody_serves_gets_503_at_once_until_a_worker_answers(tempestd_factory, redis_client):
    daemon = tempestd_factory(front={"queue": "nobody-here", "timeout": "1"})
    started = time.monotonic()
    status, headers, body = http("GET", daemon.base + "/first")
    assert status == 503 and b"no worker took the request in time" in body and headers["retry-after"]
    assert time.monotonic() - started >= 1  # the first one waited the route's timeout
    assert redis_client.llen("nobody-here") == 0  # and its job was taken back: nobody starts it late
    probe, probed = in_thread(http, "GET", daemon.base + "/probe")  # the next one is the probe: it waits
    wait_until(lambda: redis_client.llen("nobody-here") == 1, timeout=10)
    started = time.monotonic()
    status, _, body = http("GET", daemon.base + "/refused")
    assert status == 503 and b"no worker is serving this path" in body
    assert time.monotonic() - started < 0.5  # at once
    # a 2012-style worker, plain BLPOP and RPUSH, takes the probe and answers it
    _, raw = redis_client.blpop(["nobody-here"], timeout=5)
    kind, [env], respond_to, job_id = json.loads(raw)
    assert env["url"] == "/probe"
    host, port = respond_to.split(":")
    import redis

    redis.Redis(host=host, port=int(port)).execute_command("url", job_id, json.dumps([200, {}, "served"]))
    probe.join(10)
    assert probed["value"][0] == 200
    thread, result = in_thread(http, "GET", daemon.base + "/again")  # served again: pushed as usual
    _, raw = redis_client.blpop(["nobody-here"], timeout=5)
    redis.Redis(host=host, port=int(port)).execute_command("url", json.loads(raw)[3], json.dumps([200, {}, "ok"]))
    thread.join(10)
    assert result["value"][:3:2] == (200, b"ok")
    info = daemon.info()
    assert info["not_taken"] == 1 and info["unserved"] == 1
    assert "queue nobody-here is served again" in daemon.log()
