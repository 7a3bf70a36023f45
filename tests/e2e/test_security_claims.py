"""Claims of docs/security.md that no other test proves: the default listen addresses, what
happens to X-Tempest-* headers in requests and answers (gaps included, as they are today),
and that a start-up error does not show the Redis password."""

import json
import os
import subprocess

import pytest
import redis

from support import free_port, http, in_thread, render_ini, tempestd_command

from tempest import config


def take_job(redis_client, queue):
    item = redis_client.blpop([queue], timeout=10)
    assert item is not None, f"no job on {queue}"
    return json.loads(item[1])


def answer(daemon, redis_client, queue, headers, request_headers=None):
    """One request; the job taken from Redis and answered [200, headers, "ok"] by hand.
    Returns (the job's env, the response's headers)."""
    thread, result = in_thread(http, "GET", daemon.base + "/claim", headers=request_headers or {})
    _, args, respond_to, job_id = take_job(redis_client, queue)
    host, port = respond_to.rsplit(":", 1)
    payload = json.dumps([200, headers, "ok"])
    assert redis.Redis(host=host, port=int(port)).execute_command("url", job_id, payload) == b"OK"
    thread.join(10)
    status, response_headers, body = result["value"]
    assert (status, body) == (200, b"ok")
    return args[0], response_headers


def test_every_listener_is_on_loopback_by_default(tmp_path):
    ini = render_ini(tmp_path / "t.ini", {"tempest": {"name": "t"}})
    loaded = config.load(ini)
    assert loaded.front.listen == ("127.0.0.1", 1337)
    assert loaded.front.answer_listen == ("127.0.0.1", 0)  # a free port, on loopback
    assert loaded.redis.url == "redis://127.0.0.1:6379/0"  # also where an embedded Redis binds
    assert loaded.front.answer_password == ""


def test_x_tempest_headers_of_a_request_never_reach_the_worker(tempestd_factory, redis_client):
    """Reserved for tempest: a client cannot pose as the front or as a worker with them."""
    daemon = tempestd_factory(front={"queue": "claims-req"})
    env, _ = answer(daemon, redis_client, "claims-req", {},
                    {"X-Tempest-Session": "A" * 22, "X-Tempest-Anything": "1", "X-Other": "kept"})
    assert not [name for name in env["headers"] if name.startswith("x-tempest-")]
    assert env["headers"]["x-other"] == "kept"


def test_x_tempest_headers_of_an_answer_never_reach_the_client(tempestd_factory, redis_client):
    daemon = tempestd_factory(front={"queue": "claims-ans", "session_cookie": "sid",
                                     "session_secret": "claims-secret-0123456789"})
    _, headers = answer(daemon, redis_client, "claims-ans",
                        {"X-Tempest-Session": "B" * 22, "X-Tempest-Other": "dropped", "X-Other": "kept"})
    assert "x-tempest-session" not in headers  # turned into the cookie
    assert headers["set-cookie"].startswith("sid=" + "B" * 22 + ".")
    assert "x-tempest-other" not in headers and headers["x-other"] == "kept"


def test_x_tempest_session_of_an_answer_is_dropped_without_sessions_too(tempestd_factory, redis_client):
    daemon = tempestd_factory(front={"queue": "claims-nosess"})
    _, headers = answer(daemon, redis_client, "claims-nosess", {"X-Tempest-Session": "C" * 22})
    assert "x-tempest-session" not in headers and "set-cookie" not in headers


def test_a_start_up_error_does_not_show_the_redis_password(tmp_path):
    ini = render_ini(tmp_path / "t.ini", {
        "tempest": {"run_dir": "run"},
        "redis": {"url": f"redis://:leaky-Password-42@127.0.0.1:{free_port()}/0"},
        "front": {"listen": "127.0.0.1:0"}})
    done = subprocess.run(tempestd_command() + ["-c", ini], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL, env=dict(os.environ))
    assert done.returncode == 1, done.stderr  # Redis does not answer
    assert "leaky-Password-42" not in done.stdout + done.stderr
