"""The Go worker client (clients/go) against a real tempestd and redis-server: the hello world
run from a [worker:] section, streams, sessions, publishing, routing to and from Python
workers, failing handlers, reliable delivery (the default), low-priority jobs, deadlines, SIGTERM, a
Redis restart, and request bodies spooled to a file or to Redis read with Context.Body.

The binaries are built once per session with ``make -C clients/go`` (offline: redigo from
Debian's golang-github-gomodule-redigo-dev); the test worker is tests/clients/go/main.go."""

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

import support
from support import REPO, RedisServer, http, in_thread, kill_groups, registered, start_worker, wait_until
from sseclient import SSE

pytest.register_assert_rewrite("client_cases")
import client_cases  # noqa: E402
from client_cases import log_of  # noqa: E402

CLIENT = os.path.join(REPO, "clients", "go")
HELLO = os.path.join(CLIENT, "bin", "hello")
APP = os.path.join(CLIENT, "bin", "testworker")
ROUTING = os.path.join(REPO, "tests", "workers", "routing.py")
REDIGO = "/usr/share/gocode/src/github.com/gomodule/redigo/redis"
TEXT = "text/plain"


@pytest.fixture(scope="session")
def go_build():
    """Build the hello world and the test worker once; a failed build fails loudly."""
    if shutil.which("go") is None:
        support.missing_runtime("go is not installed (Debian's golang-go)")
    if not os.path.isdir(REDIGO):
        support.missing_runtime(f"redigo is missing ({REDIGO}: Debian's golang-github-gomodule-redigo-dev)")
    if shutil.which("make") is None:
        support.missing_runtime("make is not installed")
    done = subprocess.run(["make", "-C", CLIENT], capture_output=True, text=True, timeout=600)
    if done.returncode != 0 or not (os.path.exists(HELLO) and os.path.exists(APP)):
        pytest.fail(f"make -C clients/go failed ({done.returncode}):\n{done.stdout}\n{done.stderr}", pytrace=False)
    return CLIENT



@pytest.fixture
def started(go_build):
    """The worker processes a test starts, stopped (their whole group) at teardown."""
    procs = []
    yield procs
    kill_groups(procs)  # what a test stops gracefully (reliable workers, SIGTERM) it stops itself


def start_go(started, args, redis_url, directory, name="go", extra_env=None):
    """A Go worker in its own session, its output in <directory>/<name>.log."""
    env = {**os.environ, "TEMPEST_REDIS_URL": redis_url, **(extra_env or {})}
    with open(os.path.join(str(directory), f"{name}.log"), "ab") as log:
        proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    started.append(proc)
    return proc


def queue_name(request):
    return "go-" + re.sub(r"[^a-z0-9]", "", request.node.name[5:].lower())[:30]


@pytest.fixture
def app(started, redis_server, tmp_path):
    """The Go test worker for client_cases: its reliable option is -plain (Options{NoReliable:
    true}) or -reliable (Options{Reliable: true})."""
    def start(queues, name, option=None, env=None):
        flags = [f"-{option}"] if option else []
        return start_go(started, [APP, *flags, queues], redis_server.url, tmp_path, name, env)

    return client_cases.App(start, tmp_path)


# 1. the hello world, run by tempestd from a [worker:] section


def test_hello_world_from_a_worker_section(go_build, tempestd_factory, request):
    queue = queue_name(request)
    # with an answer password, which tempestd passes to its workers (TEMPEST_ANSWER_PASSWORD)
    daemon = tempestd_factory(front={"queue": queue, "timeout": "5", "answer_password": "go-s3cret"},
                              **{"worker:hello": {"command": f"{HELLO} {queue}", "numprocs": "2"}})
    wait_until(lambda: all(daemon.status().get(f"hello:{i}", {}).get("state") == "RUNNING" for i in (0, 1)),
               timeout=15, message="both hello processes running")
    status, headers, body = http("GET", daemon.base + "/")
    assert (status, headers["content-type"], body) == (200, TEXT, b"Hello from go #1")
    counts = [1]
    for _ in range(5):
        status, headers, body = http("GET", daemon.base + "/again")
        assert status == 200 and headers["content-type"] == TEXT
        match = re.fullmatch(rb"Hello from go #(\d+)", body)
        assert match, body
        counts.append(int(match.group(1)))
    # each of the two processes counts its own answers from 1
    seen = sorted(counts)
    firsts = seen.count(1)
    assert 1 <= firsts <= 2 and all(seen.count(n) <= 2 for n in seen), counts
    info = daemon.answer_client(password="go-s3cret").info()
    assert info["bad_answers"] == 0 and info["answers"] == 6


# sites served by the Go test worker


@pytest.fixture
def site(go_build, tempestd_factory, redis_server, tmp_path, started, request):
    """tempestd on this test's queue and a Go test worker serving it (and QUEUE-greet, for
    routing)."""
    queue = queue_name(request)
    front = {"queue": queue, "timeout": "5"}
    front.update(getattr(request, "param", {}))
    daemon = tempestd_factory(front=front, pubsub={"heartbeat": "0.5", "durable": "go-news.*"},
                              **{"route:/py/": {"queue": queue + "-pyfront"}})
    daemon.queue = queue
    daemon.worker = start_go(started, [APP, f"{queue},{queue}-greet"], redis_server.url, tmp_path, "app")
    status, _, body = http("GET", daemon.base + "/ping")
    assert (status, body) == (200, f"go worker {daemon.worker.pid}: /ping".encode())
    return daemon


# 2. streamed answers


def raw_get(port, path, timeout=4.0):
    """GET path, read until the server closes (or timeout): (bytes, seconds it took)."""
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except socket.timeout:
            received += b"<silence>"
        return received, time.monotonic() - began


def test_a_streamed_answer(site):
    status, headers, body = http("GET", site.base + "/stream")
    assert status == 200 and headers["content-type"] == TEXT
    assert headers["transfer-encoding"] == "chunked"
    assert body == b"one\ntwo\nthree\n"
    with socket.create_connection(("127.0.0.1", site.port), timeout=4) as sock:  # the pieces, as chunks
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while not received.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
    assert b"4\r\none\n\r\n4\r\ntwo\n\r\n6\r\nthree\n\r\n0\r\n\r\n" in received


def test_an_aborted_stream_is_cut(site):
    received, took = raw_get(site.port, "/abort")
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
    assert b"partial\n" in body
    assert not body.endswith(b"0\r\n\r\n") and b"<silence>" not in body  # cut at once, no last chunk
    assert took < 3
    status, _, body = http("GET", site.base + "/next")
    assert status == 200  # the worker lives on


# 3. sessions


COOKIE = re.compile(r"^sid=(([A-Za-z0-9_-]{22})\.[A-Za-z0-9_-]{22}); Path=/; Max-Age=600; HttpOnly; SameSite=Lax$")


@pytest.mark.parametrize("site", [{"session_cookie": "sid", "session_ttl": "600", "session_secret": "client-tests-secret-0123456789"}], indirect=True)
def test_sessions_written_read_back_and_regenerated(site, redis_client):
    status, headers, body = http("GET", site.base + "/session/set?color=blue")
    assert status == 200, body
    value, session_id = COOKIE.match(headers["set-cookie"]).groups()
    assert body == f"set {session_id}".encode()
    key = f"session:{session_id}"
    assert redis_client.hgetall(key) == {b"color": b'["blue"]'}  # the 2012 format
    assert 590 <= redis_client.ttl(key) <= 600
    cookie = {"Cookie": f"sid={value}"}
    status, headers, body = http("GET", site.base + "/session/get?k=color", headers=cookie)
    assert (status, body) == (200, b"blue true") and "set-cookie" not in headers
    redis_client.hset(key, "color", '["red"]')  # written by another worker: reads go to Redis
    assert http("GET", site.base + "/session/get?k=color", headers=cookie)[2] == b"red true"
    assert http("GET", site.base + "/session/get?k=size", headers=cookie)[2] == b"<nil> false"

    status, headers, body = http("GET", site.base + "/session/login?user=bob", headers=cookie)
    assert status == 200
    old, new = body.decode().split()
    assert old == session_id and new != old
    new_value, new_id = COOKIE.match(headers["set-cookie"]).groups()
    assert new_id == new  # X-Tempest-Session became the (signed) cookie
    assert "x-tempest-session" not in headers
    assert not redis_client.exists(key)
    assert redis_client.hgetall(f"session:{new}") == {b"color": b'["red"]', b"user": b'["bob"]'}
    assert 590 <= redis_client.ttl(f"session:{new}") <= 600
    status, _, body = http("GET", site.base + "/session/get?k=user", headers={"Cookie": f"sid={new_value}"})
    assert (status, body) == (200, b"bob true")


def test_without_session_cookie_there_is_no_session(site):
    status, _, _ = http("GET", site.base + "/session/get?k=color")
    assert status == 500  # Session() is nil: the handler panics, the worker answers 500


# 4. publish


def test_publish_reaches_an_sse_client(site, redis_server):
    client = SSE(site.port, "/sub/go-plain")
    try:
        assert client.next() == {"comment": "ok"}
        redis = redis_server.client()
        wait_until(lambda: redis.pubsub_numsub("go-plain")[0][1] >= 1, message="the relay subscribed")
        status, _, body = http("GET", site.base + "/publish?c=go-plain")
        assert (status, body) == (200, b"1")  # one Redis subscriber: the relay
        assert client.next_message() == {"data": "hello from go"}
    finally:
        client.close()


def test_publish_to_a_durable_channel_carries_its_stream_id(site, redis_server):
    client = SSE(site.port, "/sub/go-news.a")
    try:
        assert client.next() == {"comment": "ok"}
        redis = redis_server.client()
        wait_until(lambda: redis.pubsub_numsub("go-news.a")[0][1] >= 1, message="the relay subscribed")
        status, _, body = http("GET", site.base + "/publish?c=go-news.a&event=greeting")
        assert status == 200 and re.fullmatch(rb"\d+-\d+", body), body
        assert client.next_message() == {"event": "greeting", "id": body.decode(), "data": "hello from go"}
        [(_, fields)] = redis.xrange("tempest:stream:{go-news.a}")
        assert json.loads(fields[b"m"]) == ["greeting", "hello from go"]  # the legacy message
    finally:
        client.close()


# 5. routing: forward to and from Python workers, gather


@pytest.fixture
def python_workers(site, redis_server, tmp_path):
    queue = site.queue
    procs = [start_worker([ROUTING, "front", queue + "-pyfront", queue + "-greet"], redis_server.url, tmp_path, "pyfront"),
             start_worker([ROUTING, "greeter", queue + "-pygreet"], redis_server.url, tmp_path, "pygreet"),
             start_worker([ROUTING, "squarer", queue + "-pysq"], redis_server.url, tmp_path, "pysq")]
    yield procs
    kill_groups(procs)  # plain workers: their stop is not under test


def test_forward_to_a_python_worker(site, python_workers):
    status, headers, body = http("GET", site.base + f"/forward?to={site.queue}-pygreet")
    assert (status, body) == (200, f"greeted /forward from {site.worker.pid}".encode())  # answered by Python


def test_forward_from_a_python_worker(site, python_workers):
    status, _, body = http("GET", site.base + "/py/hello")
    assert status == 200, body  # the Go worker answers the greet job under its own action (ACTIONS)
    assert body == f"go greeted /py/hello from {site.worker.pid}".encode()
    status, _, body = http("GET", site.base + "/py/fail", timeout=4)  # the route's timeout is 5 s
    assert (status, body) == (500, b"500 Internal Server Error\n")  # under greet, at once
    assert site.info()["answers_dropped"] == 0


def test_gather_from_two_parts(site, python_workers, redis_client, redis_server, tmp_path, started):
    # part 0 squared by the Python squarer, part 1 by another Go worker (the gatherer is busy)
    start_go(started, [APP, site.queue + "-gosq"], redis_server.url, tmp_path, "gosq")
    status, headers, body = http("GET", site.base + f"/gather?q={site.queue}-pysq,{site.queue}-gosq")
    assert (status, body, headers["x-missing"]) == (200, b"5", "")  # 1 + 4
    silent = site.queue + "-silent"  # nobody serves it
    began = time.monotonic()
    status, headers, body = http("GET", site.base + f"/gather?q={site.queue}-pysq,{silent}&timeout=0.5")
    assert (status, body, headers["x-missing"]) == (200, b"1", "1")
    assert time.monotonic() - began < 3
    assert not redis_client.keys("tempest:gather:*")  # the gatherer removed its stream
    redis_client.delete(silent)


# 6. failing handlers


def test_a_failing_handler_answers_500_and_the_worker_serves_on(site, redis_client):
    for path in ("/fail", "/error"):  # a panic, an error
        began = time.monotonic()
        status, headers, body = http("GET", site.base + path, timeout=4)
        assert (status, headers["content-type"], body) == (500, TEXT, b"500 Internal Server Error\n")
        assert time.monotonic() - began < 2  # at once, not after the route's timeout
    redis_client.rpush(site.queue, b"not a job", b'["url", "not a list", null, "x"]')  # logged, dropped
    status, _, body = http("GET", site.base + "/after")
    assert (status, body) == (200, f"go worker {site.worker.pid}: /after".encode())
    assert site.worker.poll() is None


def test_a_job_without_a_handler_answers_501_and_numeric_ids_come_back(site, redis_client):
    # a job pushed by hand with a number for its id, for an action nobody handles
    commands = client_cases.answer_commands(redis_client, site.queue, "nothing", [], job_id=12345)
    # on connecting: ACTIONS for the handlers' actions (greet, square), then the 501 under url
    assert commands[0] == [b"ACTIONS", b"greet", b"square"]
    assert commands[-1] == [b"url", b"12345", b'[501,{"Content-Type":"text/plain"},"501 Not Implemented\\n"]']


# 7. reliable delivery


def test_the_job_of_a_killed_reliable_worker_is_answered_by_another(go_build, tempestd_factory, redis_server,
                                                                    redis_client, tmp_path, started, request):
    queue = queue_name(request)
    daemon = tempestd_factory(front={"queue": queue, "timeout": "20", "redeliver_interval": "0.5"})
    args = [APP, "-reliable", "-heartbeat", "1s", queue]
    first = start_go(started, args, redis_server.url, tmp_path, "first")
    wait_until(lambda: len(registered(redis_client, queue)) == 1, timeout=10, message="the first registered")
    thread, result = in_thread(http, "GET", daemon.base + "/hold", timeout=25)
    assert wait_until(lambda: redis_client.lpop("holding:" + queue), timeout=10) == str(first.pid).encode()
    processing = f"tempest:processing:{{{queue}}}:*"
    assert [redis_client.llen(k) for k in redis_client.keys(processing)] == [1]
    second = start_go(started, args, redis_server.url, tmp_path, "second")
    wait_until(lambda: len(registered(redis_client, queue)) == 2, timeout=10, message="the second registered")
    os.killpg(first.pid, signal.SIGKILL)  # in the middle of the job
    first.wait(10)
    # its heartbeat expires (1 s), tempestd gives the job back, the second worker takes it
    wait_until(lambda: redis_client.hvals(f"tempest:deliveries:{{{queue}}}") == [b"1"], timeout=15,
               message="the job given back (once)")
    assert wait_until(lambda: redis_client.lpop("holding:" + queue), timeout=10) == str(second.pid).encode()
    redis_client.rpush("gate:" + queue, 1)
    thread.join(15)
    status, _, body = result["value"]
    assert (status, body) == (200, f"done by {second.pid}".encode())
    wait_until(lambda: len(registered(redis_client, queue)) == 1, timeout=5, message="the dead one forgotten")
    # a clean stop: exit 0, nothing left behind
    os.killpg(second.pid, signal.SIGTERM)
    assert second.wait(10) == 0
    assert registered(redis_client, queue) == [] and not redis_client.keys(processing)
    assert not redis_client.keys("tempest:alive:*:%d:*" % second.pid)


def test_reliable_is_the_default_and_tempest_reliable_0_opts_out(app, redis_client, request):
    client_cases.reliable_is_the_default(redis_client, app, queue_name(request))


@pytest.mark.parametrize("mode", ["reliable", "plain"])
def test_low_priority_jobs_are_taken_once_the_queues_are_empty(app, redis_client, request, mode):
    client_cases.low_jobs_after_the_queues(redis_client, app, queue_name(request), mode)


def test_a_job_past_its_deadline_is_dropped_without_running(app, redis_client, request):
    # the worker's Log.Printf: no level in its line
    client_cases.late_jobs_are_dropped(redis_client, app, queue_name(request), logged=client_cases.DROPPED)


# 8. SIGTERM while a job runs


def test_sigterm_finishes_the_job_in_hand_then_exits_0(go_build, tempestd_factory, redis_server, redis_client,
                                                       tmp_path, started, request):
    queue = queue_name(request)
    daemon = tempestd_factory(front={"queue": queue, "timeout": "15"})
    worker = start_go(started, [APP, queue], redis_server.url, tmp_path, "app")
    thread, result = in_thread(http, "GET", daemon.base + "/hold", timeout=20)
    assert wait_until(lambda: redis_client.lpop("holding:" + queue), timeout=10) == str(worker.pid).encode()
    os.killpg(worker.pid, signal.SIGTERM)
    wait_until(lambda: "stopping after the job in hand" in log_of(tmp_path, "app"), timeout=5,
               message="the signal seen")
    assert worker.poll() is None  # still in the job
    redis_client.rpush("gate:" + queue, 1)
    thread.join(15)
    assert result["value"][0] == 200 and result["value"][2] == f"done by {worker.pid}".encode()
    assert worker.wait(10) == 0


# 9. Redis restarted under the worker


def test_the_worker_serves_again_after_a_redis_restart(go_build, tempestd_factory, tmp_path, started, request):
    queue = queue_name(request)
    own = RedisServer(tmp_path / "own-redis").start()
    try:
        daemon = tempestd_factory(redis_url=own.url, front={"queue": queue, "timeout": "3"})
        worker = start_go(started, [HELLO, queue], own.url, tmp_path, "hello")
        assert http("GET", daemon.base + "/")[2] == b"Hello from go #1"
        own.stop()
        wait_until(lambda: "Redis unreachable" in log_of(tmp_path, "hello"), timeout=10,
                   message="the worker saw Redis go")
        own = RedisServer(tmp_path / "own-redis", port=own.port).start()

        def served():
            status, _, body = http("GET", daemon.base + "/again", timeout=5)
            return body if status == 200 else None

        body = wait_until(served, timeout=30, interval=0.2, message="served again")
        assert re.fullmatch(rb"Hello from go #\d+", body) and body != b"Hello from go #1"
        assert worker.poll() is None  # the same process, reconnected
    finally:
        own.stop()


# 10. spooled request bodies (issue 11, item 3)


@pytest.fixture
def spooling(app, tempestd_factory):
    """tempestd with a file-spooling and a Redis-spooling route, one Go test worker on them."""
    daemon = client_cases.spooling_front(tempestd_factory, "go")
    daemon.worker = app.start(daemon.queue, "app")
    assert http("GET", daemon.base + "/ping")[0] == 200
    return daemon


@pytest.mark.parametrize("reader", ["copy", "readall"])
@pytest.mark.parametrize("route, form", client_cases.SPOOLED)
def test_a_spooled_upload_is_read_by_the_handler(spooling, route, form, reader):
    client_cases.a_spooled_upload_is_read(spooling, route, form, reader)


@pytest.mark.parametrize("reader", ["copy", "readall"])
def test_an_inline_body_is_read_the_same_way(spooling, reader):
    client_cases.inline_bodies_are_read(spooling, reader)


@pytest.mark.parametrize("reader", ["copy", "readall"])
def test_a_spooled_body_gone_or_not_as_its_token_says_is_body_gone(spooling, redis_client, tmp_path, reader):
    client_cases.a_body_gone_is_410(redis_client, spooling.queue, tmp_path, reader)


def test_the_redis_password_stays_out_of_logs_and_argv(app, tempestd_factory, tmp_path):
    client_cases.the_redis_password_stays_out_of_logs_and_argv(app, tempestd_factory, tmp_path, "go-secret")


# 11. a Redis Cluster (docs/protocol.md, section 7): jobs pushed by hand (tempestd's own cluster
# mode is not there yet), the worker given the shared cluster's redis+cluster:// URL


def on_different_masters(cluster, names):
    """A prefix for which the queues ``names(prefix)`` are each served by a different master."""
    for n in range(100):
        prefix = f"go-cluster{n}"
        masters = [cluster.master_of(name).port for name in names(prefix)]
        if len(set(masters)) == len(masters):
            return prefix
    raise AssertionError("no prefix puts the queues on different masters")


@pytest.fixture
def cluster_app(started, shared_cluster, tmp_path):
    """client_cases' App of the Go test worker, on the shared Redis Cluster."""
    def start(queues, name, option=None, env=None):
        flags = [f"-{option}"] if option else []
        return start_go(started, [APP, *flags, queues], shared_cluster.url, tmp_path, name, env)

    return client_cases.App(start, tmp_path)


@pytest.mark.parametrize("mode", ["reliable", "plain"])
def test_on_a_cluster_queues_in_several_slots_are_served_in_order(cluster_app, shared_cluster, mode):
    # the two queues and their low lists on two masters: no BLPOP names them all (CROSSSLOT)
    prefix = on_different_masters(shared_cluster, lambda p: [f"{p}-{mode}-a", f"{p}-{mode}-b"])
    client = shared_cluster.client()
    try:
        client_cases.low_jobs_after_the_queues(client, cluster_app, prefix, mode)
        assert "redis+cluster://127.0.0.1:" in cluster_app.log("prio")  # its start line
    finally:
        client.close()


def test_on_a_cluster_reliable_delivery_sessions_publish_and_bodies(cluster_app, shared_cluster, started, tmp_path):
    prefix = on_different_masters(shared_cluster, lambda p: [f"{p}-a", f"{p}-b"])
    a, b = f"{prefix}-a", f"{prefix}-b"
    client = shared_cluster.client()
    durable, channel, holding, ran = "tempest:pubsub:durable", f"{prefix}-news.x", f"holding:{a},{b}", f"{prefix}-ran"
    subscriber = None
    try:
        worker = start_go(started, [APP, "-reliable", "-heartbeat", "1s", f"{a},{b}"], shared_cluster.url, tmp_path,
                          "first")
        wait_until(lambda: registered(client, a) and registered(client, b), 15, message="registered on both queues")
        [entry] = registered(client, b)
        worker_id = entry.decode().partition(" ")[2]
        assert client.exists(f"tempest:alive:{worker_id}")

        # a session regenerated: copied to the new id (its keys in other slots), the old one deleted
        old = "S" * 21 + "a"
        client.hset(f"session:{old}", "color", '["red"]')
        client.sadd(f"tempest:grants:{old}", "user.42.*")
        env = {"method": "GET", "url": "/session/login?user=bob", "headers": {}, "session": {"id": old, "ttl": 600}}
        status, headers, body = client_cases.answer_of(client, b, env)
        assert status == 200, body
        was, new = body.split()
        assert was == old and headers["X-Tempest-Session"] == new != old
        assert client.hgetall(f"session:{new}") == {b"color": b'["red"]', b"user": b'["bob"]'}
        assert client.smembers(f"tempest:grants:{new}") == {b"user.42.*"}
        assert 590 <= client.ttl(f"session:{new}") <= 600 and 590 <= client.ttl(f"tempest:grants:{new}") <= 600
        assert not client.exists(f"session:{old}") and not client.exists(f"tempest:grants:{old}")

        # a durable publish: the script on its stream's master; the message reaches a subscriber
        # on another node (the cluster forwards PUBLISH to every node), as a plain publish does
        stream = f"tempest:stream:{{{channel}}}"
        client.set(durable, json.dumps([[f"{prefix}-news.*", 10]]))
        elsewhere = next(n for n in shared_cluster.masters if n.port != shared_cluster.master_of(stream).port)
        subscriber = elsewhere.client().pubsub(ignore_subscribe_messages=True)
        subscriber.subscribe(channel, f"{prefix}-plain")
        env = {"method": "GET", "url": f"/publish?c={channel}", "headers": {}}
        status, _, stream_id = client_cases.answer_of(client, a, env)
        assert status == 200 and re.fullmatch(r"\d+-\d+", stream_id), stream_id
        [(entry_id, fields)] = client.xrange(stream)
        assert (entry_id.decode(), json.loads(fields[b"m"])) == (stream_id, ["hello from go"])
        message = wait_until(lambda: subscriber.get_message(timeout=0.2), 5, message="the durable message")
        assert json.loads(message["data"]) == ["$durable", stream_id, '["hello from go"]']
        env["url"] = f"/publish?c={prefix}-plain"
        assert client_cases.answer_of(client, b, env)[0] == 200
        message = wait_until(lambda: subscriber.get_message(timeout=0.2), 5, message="the plain message")
        assert (message["channel"].decode(), json.loads(message["data"])) == (f"{prefix}-plain", ["hello from go"])

        # a body spooled to Redis, read chunk by chunk from its key's master
        data = os.urandom(client_cases.CHUNK + 1000)
        body_key = f"tempest:body:{{{prefix}-upload}}"
        client.rpush(body_key, data[:client_cases.CHUNK], data[client_cases.CHUNK:])
        token = {"key": body_key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "chunks": 2}
        env = {"method": "POST", "url": "/redis/digest?reader=copy", "headers": {}, "body_key": token}
        status, _, body = client_cases.answer_of(client, a, env)
        assert (status, json.loads(body)) == (200, client_cases.digest_of(data, "body_key"))

        # killed in the middle of a job of the second queue: the job stays in its processing
        # list, on that queue's master, for tempestd to give back
        client.rpush(b, support.hand_job("url", [{"method": "GET", "url": "/hold", "headers": {}}]))
        assert wait_until(lambda: client.lpop(holding), 10) == str(worker.pid).encode()
        processing = f"tempest:processing:{{{b}}}:{worker_id}"
        master = shared_cluster.master_of(b)
        assert master.port == shared_cluster.master_of(processing).port != shared_cluster.master_of(a).port
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
        [held] = master.client().lrange(processing, 0, -1)  # asked of that node itself
        assert json.loads(held)[1][0]["url"] == "/hold" and not client.llen(b)
        wait_until(lambda: not client.exists(f"tempest:alive:{worker_id}"), 5, message="the heartbeat expired")

        # a clean stop on the cluster: nothing left behind
        second = cluster_app.start(f"{a},{b}", "second", "reliable")
        client.rpush(a, client_cases.record_job("on-a", ran))
        wait_until(lambda: client.llen(ran) == 1, 10, message="the second worker ran a job")
        assert client_cases.terminate_group(second) == 0
        second_ids = [e for e in client.smembers("tempest:workers") if f":{second.pid}:".encode() in e]
        assert second_ids == [] and not client.keys(f"tempest:alive:*:{second.pid}:*")
        assert not [k for k in client.keys(f"tempest:processing:{{{prefix}-*") if f":{second.pid}:".encode() in k]
        log = cluster_app.log("first") + cluster_app.log("second")
        assert "CROSSSLOT" not in log and "MOVED" not in log, log
    finally:
        if subscriber is not None:
            subscriber.close()
        client.delete(durable, ran, holding)
        support.forget_dead_workers(client)
        client.close()
