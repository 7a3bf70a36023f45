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
import uuid

import pytest

import support
from support import REPO, RedisServer, http, in_thread, kill_groups, start_worker, wait_until
from sseclient import SSE

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
    env = dict(os.environ, TEMPEST_REDIS_URL=redis_url, **(extra_env or {}))
    with open(os.path.join(str(directory), f"{name}.log"), "ab") as log:
        proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    started.append(proc)
    return proc


def read_log(directory, name):
    with open(os.path.join(str(directory), f"{name}.log"), encoding="utf-8", errors="replace") as handle:
        return handle.read()


def queue_name(request):
    return "go-" + re.sub(r"[^a-z0-9]", "", request.node.name[5:].lower())[:30]


def registered(client, queue):
    """The reliable workers registered on ``queue``."""
    return [m for m in client.smembers("tempest:workers") if m.decode().startswith(queue + " ")]


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


def fake_endpoint():
    """A one-connection answer endpoint that replies +OK to everything: (port, thread, what it got)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve():
        with listener:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(10)
                received = b""
                while not (b"Not Implemented" in received and received.endswith(b"\r\n")):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    received += chunk
                    conn.sendall(b"+OK\r\n" * chunk.count(b"*"))  # a reply per command (no * in their arguments)
                return received

    thread, result = in_thread(serve)
    return listener.getsockname()[1], thread, result


def test_a_job_without_a_handler_answers_501_and_numeric_ids_come_back(site, redis_client):
    port, thread, result = fake_endpoint()
    # a job pushed by hand with a number for its id, for an action nobody handles
    redis_client.rpush(site.queue, f'["nothing", [], "127.0.0.1:{port}", 12345]')
    thread.join(10)
    received = result["value"]
    # on connecting: ACTIONS for the handlers' actions (greet, square), then the 501 under url
    assert received.startswith(b"*3\r\n$7\r\nACTIONS\r\n$5\r\ngreet\r\n$6\r\nsquare\r\n")
    answer = b'[501,{"Content-Type":"text/plain"},"501 Not Implemented\\n"]'
    assert received.endswith(b"*3\r\n$3\r\nurl\r\n$5\r\n12345\r\n$%d\r\n%s\r\n" % (len(answer), answer))


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


def record_job(tag, ran, deadline=None):
    """A url job pushed by hand (no answer wanted) for the test worker's /record: its handler
    RPUSHes "<tag> <length of its processing list of each queue>" to the list ``ran``."""
    env = {"method": "GET", "url": f"/record?list={ran}&tag={tag}", "headers": {"host": "x"}}
    if deadline is not None:
        env["deadline"] = deadline
    return json.dumps(["url", [env], None, f"id-{tag}"])


def test_reliable_is_the_default_and_tempest_reliable_0_opts_out(go_build, redis_server, redis_client, tmp_path,
                                                                 started, request):
    queue = queue_name(request)
    ran = queue + "-ran"
    cases = {  # name: (flags, environment, reliable?)
        "default": ([], {}, True),
        "env-0": ([], {"TEMPEST_RELIABLE": "0"}, False),
        "env-false": ([], {"TEMPEST_RELIABLE": "false"}, False),
        "env-no": ([], {"TEMPEST_RELIABLE": "no"}, False),
        "env-off": ([], {"TEMPEST_RELIABLE": " off "}, False),
        "option": (["-plain"], {}, False),  # Options{NoReliable: true}
        "option-wins": (["-reliable"], {"TEMPEST_RELIABLE": "0"}, True),  # Options{Reliable: true}
    }
    for name, (flags, env, _) in cases.items():
        redis_client.rpush(f"{queue}-{name}", record_job(name, ran))
        start_go(started, [APP, *flags, f"{queue}-{name}"], redis_server.url, tmp_path, name, env)
    wait_until(lambda: redis_client.llen(ran) == len(cases), 20, message="every worker ran its job")
    recorded = dict(item.decode().split() for item in redis_client.lrange(ran, 0, -1))
    # a reliable worker runs the job from its processing list, a plain one (BLPOP) holds nothing
    assert recorded == {name: "1" if reliable else "0" for name, (_, _, reliable) in cases.items()}
    for name, (_, _, reliable) in cases.items():
        assert bool(registered(redis_client, f"{queue}-{name}")) is reliable, name
    redis_client.delete(ran)


@pytest.mark.parametrize("mode", ["reliable", "plain"])
def test_low_priority_jobs_are_taken_once_the_queues_are_empty(go_build, redis_server, redis_client, tmp_path,
                                                               started, request, mode):
    queue = queue_name(request)
    a, b, ran = queue + "-a", queue + "-b", queue + "-ran"
    low = lambda name: "tempest:low:{" + name + "}"
    redis_client.rpush(low(b), record_job("low-b1", ran), record_job("low-b2", ran))
    redis_client.rpush(low(a), record_job("low-a", ran))
    redis_client.rpush(b, record_job("normal-b", ran))
    redis_client.rpush(a, record_job("normal-a1", ran), record_job("normal-a2", ran))
    redis_client.lpush(a, record_job("high-a", ran))  # a high job, as tempestd pushes it: the head
    env = {"TEMPEST_RELIABLE": "0"} if mode == "plain" else {}
    start_go(started, [APP, f"{a},{b}"], redis_server.url, tmp_path, "prio", env)
    wait_until(lambda: redis_client.llen(ran) == 7, 20, message="the seven jobs run")
    # the queues in order, then their low lists in order; a low job runs from the processing
    # list of its own queue (reliable), a plain worker holds nothing
    held = {"a": "1/0", "b": "0/1"} if mode == "reliable" else {"a": "0/0", "b": "0/0"}
    order = ["high-a", "normal-a1", "normal-a2", "normal-b", "low-a", "low-b1", "low-b2"]
    expected = [f"{tag} {held[tag.split('-')[1][0]]}" for tag in order]
    assert [item.decode() for item in redis_client.lrange(ran, 0, -1)] == expected
    # idle, blocked on the queues: a low job pushed now is taken within about a second
    redis_client.rpush(low(a), record_job("low-a2", ran))
    wait_until(lambda: redis_client.llen(ran) == 8, 5, message="the low job taken by the idle worker")
    assert redis_client.lindex(ran, -1).decode() == f"low-a2 {held['a']}"
    wait_until(lambda: not redis_client.keys("tempest:processing:{" + queue + "-*"), message="every job released")
    assert not redis_client.exists(a, b, low(a), low(b))
    redis_client.delete(ran)


def test_a_job_past_its_deadline_is_dropped_without_running(go_build, redis_server, redis_client, tmp_path, started,
                                                            request):
    queue = queue_name(request)
    ran = queue + "-ran"
    worker = start_go(started, [APP, queue], redis_server.url, tmp_path, "deadline")
    wait_until(lambda: registered(redis_client, queue), 15, message="the worker registered")
    now = time.time()
    redis_client.rpush(queue, *[record_job(f"late{i}", ran, deadline=now - 5) for i in range(3)])
    wait_until(lambda: "dropped job id-late0" in read_log(tmp_path, "deadline"), message="the late job dropped")
    # released like an answered job, not left in the processing list (nor given back)
    wait_until(lambda: not redis_client.keys("tempest:processing:{" + queue + "}:*") and not redis_client.llen(queue),
               message="the late jobs released")
    redis_client.rpush(queue, record_job("due", ran, deadline=time.time() + 60), record_job("undated", ran))
    wait_until(lambda: redis_client.llen(ran) == 2, message="the jobs within their deadline run")
    assert redis_client.lrange(ran, 0, -1) == [b"due 1", b"undated 1"]  # the late ones never ran
    os.killpg(worker.pid, signal.SIGTERM)
    assert worker.wait(10) == 0
    log = read_log(tmp_path, "deadline")
    assert "worker stopped after 2 jobs (3 dropped past their deadline)" in log
    [line] = [line for line in log.splitlines() if "past its deadline" in line]  # one line for 3 jobs
    assert "dropped job id-late0 taken" in line and line.endswith("(1 dropped so far)")
    redis_client.delete(ran)


# 8. SIGTERM while a job runs


def test_sigterm_finishes_the_job_in_hand_then_exits_0(go_build, tempestd_factory, redis_server, redis_client,
                                                       tmp_path, started, request):
    queue = queue_name(request)
    daemon = tempestd_factory(front={"queue": queue, "timeout": "15"})
    worker = start_go(started, [APP, queue], redis_server.url, tmp_path, "app")
    thread, result = in_thread(http, "GET", daemon.base + "/hold", timeout=20)
    assert wait_until(lambda: redis_client.lpop("holding:" + queue), timeout=10) == str(worker.pid).encode()
    os.killpg(worker.pid, signal.SIGTERM)
    wait_until(lambda: "stopping after the job in hand" in read_log(tmp_path, "app"), timeout=5,
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
        wait_until(lambda: "Redis unreachable" in read_log(tmp_path, "hello"), timeout=10,
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

MiB = 1 << 20
CHUNK = 256 * 1024  # a Redis body's chunk (docs/protocol.md, "body_key")


def spool_routes(queue):
    """/file/ spools a body over 64K to a file, /redis/ to Redis in chunks: both to ``queue``."""
    return {"route:/file/": {"queue": queue, "spool": "yes", "spool_over": "64K", "max_body": "16M"},
            "route:/redis/": {"queue": queue, "spool": "redis", "spool_over": "64K", "max_body": "16M"}}


def answer_of(redis_client, queue, env, timeout=10):
    """Push a url job with ``env`` by hand, its respond_to a minimal answer endpoint here (+OK
    to every command), and return the answer its worker sends ([status, headers, body])."""
    import hiredis

    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(timeout)
        redis_client.rpush(queue, json.dumps(["url", [env], "127.0.0.1:%d" % server.getsockname()[1], "by-hand"]))
        conn, _ = server.accept()
        with conn:
            conn.settimeout(timeout)
            reader = hiredis.Reader()
            while True:
                command = reader.gets()
                if command is False:
                    data = conn.recv(65536)
                    assert data, "the worker closed the answer connection without answering"
                    reader.feed(data)
                    continue
                conn.sendall(b"+OK\r\n")  # to AUTH and ACTIONS too
                if command[0] == b"url":
                    return json.loads(command[2])


@pytest.fixture
def spooling(go_build, tempestd_factory, redis_server, tmp_path, started):
    """tempestd with a file-spooling and a Redis-spooling route, one Go test worker on them (a
    queue of its own: parametrized tests' queue_name is the same)."""
    queue = f"go-spool-{uuid.uuid4().hex[:8]}"
    daemon = tempestd_factory(front={"queue": queue, "timeout": "20"}, **spool_routes(queue))
    daemon.queue = queue
    daemon.worker = start_go(started, [APP, queue], redis_server.url, tmp_path, "app")
    assert http("GET", daemon.base + "/ping")[0] == 200
    return daemon


@pytest.mark.parametrize("reader", ["copy", "readall"])
@pytest.mark.parametrize("route, form", [("/file/", "body_file"), ("/redis/", "body_key")])
def test_a_spooled_upload_is_read_by_the_handler(spooling, route, form, reader):
    data = os.urandom(3 * MiB + 4321)
    status, _, body = http("POST", f"{spooling.base}{route}digest?reader={reader}", data, timeout=30)
    assert status == 200, body
    assert json.loads(body) == {"form": form, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@pytest.mark.parametrize("reader", ["copy", "readall"])
def test_an_inline_body_is_read_the_same_way(spooling, reader):
    cases = [("/file/", b"small \xc3\xa9 text", "body"), ("/redis/", b"\xff\x00 not UTF-8", "body_base64"),
             ("/redis/", os.urandom(64 * 1024), "body_base64"), ("/file/", b"", "none")]  # 64K: spool_over, inline
    for route, data, form in cases:
        status, _, body = http("POST", f"{spooling.base}{route}digest?reader={reader}", data)
        assert status == 200, body
        assert json.loads(body) == {"form": form, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@pytest.mark.parametrize("reader", ["copy", "readall"])
def test_a_spooled_body_gone_or_not_as_its_token_says_is_body_gone(spooling, redis_client, tmp_path, reader):
    data = os.urandom(CHUNK + 1000)
    digest = hashlib.sha256(data).hexdigest()
    kept = tmp_path / "kept.body"
    kept.write_bytes(data)
    partial = f"tempest:body:{{{spooling.queue}-partial}}"
    redis_client.rpush(partial, data[:CHUNK])  # chunk 1 of 2 missing
    env = {"method": "POST", "url": f"/file/digest?reader={reader}", "headers": {}}
    gone = {
        "missing file": {"body_file": {"path": str(tmp_path / "no-such.body"), "size": len(data), "sha256": digest}},
        "missing key": {"body_key": {"key": partial + "-none", "size": len(data), "sha256": digest, "chunks": 2}},
        "missing chunk": {"body_key": {"key": partial, "size": len(data), "sha256": digest, "chunks": 2}},
        "short file": {"body_file": {"path": str(kept), "size": len(data) + 1, "sha256": digest}},
        "another sha256": {"body_file": {"path": str(kept), "size": len(data), "sha256": "0" * 64}},
    }
    try:
        for case, token in gone.items():
            status, _, body = answer_of(redis_client, spooling.queue, {**env, **token})
            assert (status, body.split(":")[0]) == (410, "BodyGone"), (case, body)
        # the same file with its true token is read
        status, _, body = answer_of(redis_client, spooling.queue,
                                    {**env, "body_file": {"path": str(kept), "size": len(data), "sha256": digest}})
        assert (status, json.loads(body)) == (200, {"form": "body_file", "size": len(data), "sha256": digest})
    finally:
        redis_client.delete(partial)
