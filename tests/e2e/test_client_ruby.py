"""The Ruby worker client (clients/ruby) against a real tempestd and redis-server: the hello
world run from a [worker:] section, streams, sessions, publishing, routing to and from Python
workers, failing handlers, reliable delivery, SIGTERM and a Redis restart."""

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from support import REPO, RedisServer, free_port, http, in_thread, start_worker, stop_group, wait_until
from sseclient import SSE

HELLO = os.path.join(REPO, "clients", "ruby", "examples", "hello.rb")
APP = os.path.join(REPO, "tests", "clients", "ruby", "app.rb")
ROUTING = os.path.join(REPO, "tests", "workers", "routing.py")


@pytest.fixture(autouse=True)
def ruby_runtime():
    if shutil.which("ruby") is None:
        support_missing("ruby is not installed")
    check = subprocess.run(["ruby", "-e", 'require "redis"'], capture_output=True, timeout=30)
    if check.returncode != 0:
        support_missing("the redis gem is missing (ruby -e 'require \"redis\"' failed)")


def support_missing(reason):
    import support

    support.missing_runtime(reason)


def start_ruby(args, redis_url, directory, name="ruby", extra_env=None):
    """A Ruby worker in its own session, its output in <directory>/<name>.log."""
    env = dict(os.environ, TEMPEST_REDIS_URL=redis_url, **(extra_env or {}))
    with open(os.path.join(str(directory), f"{name}.log"), "ab") as log:
        return subprocess.Popen(["ruby", *args], env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def queue_name(request):
    return "ruby-" + re.sub(r"[^a-z0-9]", "", request.node.name[5:].lower())[:30]


@pytest.fixture
def workers():
    started = []
    yield started
    for proc in started:
        stop_group(proc)


def serve(tempestd_factory, redis_server, tmp_path, workers, request, front=None, count=1, **sections):
    """tempestd on a queue of this test and ``count`` Ruby site workers on it."""
    queue = queue_name(request)
    daemon = tempestd_factory(front={"queue": queue, "timeout": "5", **(front or {})}, **sections)
    for i in range(count):
        workers.append(start_ruby([APP, "site", queue, queue + "-greet"], redis_server.url, tmp_path, f"site{i}"))
    daemon.queue = queue
    wait_until(lambda: http("GET", daemon.base + "/pid", timeout=5)[0] == 200, timeout=20, interval=0.1,
               message="the ruby worker serving")
    return daemon


# 1. the hello world under tempestd


def test_hello_world_from_a_worker_section(tempestd_factory, request):
    queue = queue_name(request)
    daemon = tempestd_factory(front={"queue": queue, "timeout": "15"},
                              **{"worker:hello": {"command": f"ruby {HELLO} {queue}", "numprocs": "2"}})
    # the job waits in the queue until a worker takes it: the first answer is its worker's first
    status, headers, body = http("GET", daemon.base + "/", timeout=20)
    assert (status, body) == (200, b"Hello from ruby #1")
    assert headers["content-type"] == "text/plain"
    wait_until(lambda: [row["state"] for row in daemon.status().values()] == ["RUNNING", "RUNNING"],
               timeout=20, message="two hello workers running")
    pids = {row["pid"] for row in daemon.status().values()}
    assert len(pids) == 2
    counts = []
    for _ in range(6):
        status, _, body = http("GET", daemon.base + "/")
        assert status == 200
        counts.append(int(re.fullmatch(rb"Hello from ruby #(\d+)", body).group(1)))
    assert all(1 <= n <= 7 for n in counts)  # each process counts its own answers
    assert daemon.info()["responses_2xx"] == 7


def test_hello_world_counts_its_answers(tempestd_factory, redis_server, tmp_path, workers, request):
    queue = queue_name(request)
    daemon = tempestd_factory(front={"queue": queue, "timeout": "15"})
    workers.append(start_ruby([HELLO, queue], redis_server.url, tmp_path, "hello"))
    bodies = [http("GET", daemon.base + "/", timeout=20)[2] for _ in range(3)]
    assert bodies == [b"Hello from ruby #1", b"Hello from ruby #2", b"Hello from ruby #3"]
