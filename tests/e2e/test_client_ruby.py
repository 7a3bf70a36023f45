"""The Ruby worker client (clients/ruby) against a real tempestd and redis-server: the hello
world run from a [worker:] section, streams, sessions, publishing, routing to and from Python
workers, failing handlers, reliable delivery (the default), low-priority jobs, deadlines, SIGTERM, a
Redis restart, and request bodies spooled to a file or to Redis read with context.body."""

from http.client import IncompleteRead
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

from support import REPO, RedisServer, free_port, http, in_thread, kill_groups, session_cookie, start_worker, stop_group, wait_until
from sseclient import SSE

HELLO = os.path.join(REPO, "clients", "ruby", "examples", "hello.rb")
APP = os.path.join(REPO, "tests", "clients", "ruby", "app.rb")
ROUTING = os.path.join(REPO, "tests", "workers", "routing.py")


@pytest.fixture(autouse=True, scope="module")
def ruby_runtime():  # checked once: it starts a ruby
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
    kill_groups(started)  # what a test stops gracefully (reliable workers, SIGTERM) it stops itself


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


def test_hello_world_authenticates_to_the_answer_endpoint(tempestd_factory, request):
    queue = queue_name(request)
    daemon = tempestd_factory(front={"queue": queue, "timeout": "15", "answer_password": "s3cret"},
                              **{"worker:hello": {"command": f"ruby {HELLO} {queue}"}})
    assert http("GET", daemon.base + "/", timeout=20)[::2] == (200, b"Hello from ruby #1")


# 2. streamed answers


def read_chunked(port, path, timeout=5):
    """GET path over a raw socket: (the bytes received until the server closed, the times
    the pieces arrived)."""
    import socket

    received, times = b"", []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        start = time.monotonic()
        try:
            while chunk := sock.recv(65536):
                received += chunk
                times.append(time.monotonic() - start)
        except socket.timeout:
            received += b"<silence>"
    return received, times


def test_a_streamed_answer_arrives_in_pieces(tempestd_factory, redis_server, tmp_path, workers, request):
    daemon = serve(tempestd_factory, redis_server, tmp_path, workers, request)
    received, times = read_chunked(daemon.port, "/stream")
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Transfer-Encoding: chunked" in head
    assert body == b"4\r\none\n\r\n4\r\ntwo\n\r\n6\r\nthree\n\r\n0\r\n\r\n"  # complete
    assert len(times) >= 2 and times[-1] - times[0] >= 0.15  # the pieces came as they were written
    status, _, whole = http("GET", daemon.base + "/stream")
    assert (status, whole) == (200, b"one\ntwo\nthree\n")


def test_a_stream_whose_handler_fails_is_cut(tempestd_factory, redis_server, tmp_path, workers, request):
    daemon = serve(tempestd_factory, redis_server, tmp_path, workers, request)
    started = time.monotonic()
    received, _ = read_chunked(daemon.port, "/abort")
    assert time.monotonic() - started < 3  # at once, not after the route's timeout
    assert received.endswith(b"8\r\npartial\n\r\n")  # cut: no last chunk
    with pytest.raises(IncompleteRead):
        http("GET", daemon.base + "/abort")
    assert http("GET", daemon.base + "/pid")[0] == 200  # the worker lives on


# 3. sessions


def test_sessions_are_written_read_and_regenerated(tempestd_factory, redis_server, tmp_path, workers, request,
                                                    redis_client):
    daemon = serve(tempestd_factory, redis_server, tmp_path, workers, request,
                   front={"session_cookie": "sid", "session_ttl": "600", "session_secret": "client-tests-secret-0123456789"})
    status, headers, body = http("GET", daemon.base + "/session/write?v=alice")
    sid, value = session_cookie(headers)
    assert status == 200 and sid and body == f"written {sid}".encode()
    key = f"session:{sid}"
    assert redis_client.hget(key, "user") == b'["alice"]'  # the 2012 format
    assert 0 < redis_client.ttl(key) <= 600
    redis_client.hset(key, "color", json.dumps(["blue"]))  # written by someone else
    cookie = {"Cookie": f"sid={value}"}
    status, headers, body = http("GET", daemon.base + "/session/read", headers=cookie)
    assert status == 200 and json.loads(body) == {"user": "alice", "color": "blue"}
    assert "set-cookie" not in headers  # the id is known already

    status, headers, body = http("GET", daemon.base + "/session/regenerate", headers=cookie)
    old, new = body.decode().split()
    assert status == 200 and old == sid and new != sid
    new_id, new_value = session_cookie(headers)
    assert new_id == new and "x-tempest-session" not in headers
    assert not redis_client.exists(key) and redis_client.hget(f"session:{new}", "user") == b'["alice"]'
    status, _, body = http("GET", daemon.base + "/session/read", headers={"Cookie": f"sid={new_value}"})
    assert json.loads(body) == {"user": "alice", "color": "blue"}
    status, headers, body = http("GET", daemon.base + "/session/read", headers=cookie)
    assert json.loads(body) == {}  # the old id no longer works (its cookie still verifies: an empty session)


# 4. publish


def test_published_messages_reach_sse_clients(tempestd_factory, redis_server, tmp_path, workers, request,
                                              redis_client):
    daemon = serve(tempestd_factory, redis_server, tmp_path, workers, request,
                   pubsub={"durable": "rubydur.*", "history": "10"})
    channel = daemon.queue + "-news"
    sse = SSE(daemon.port, f"/sub/{channel},rubydur.{daemon.queue}")
    assert sse.status_line.startswith("HTTP/1.1 200")
    assert sse.next() == {"comment": "ok"}
    wait_until(lambda: redis_client.pubsub_numsub(channel)[0][1] >= 1, message="the relay subscribed")
    status, _, body = http("GET", daemon.base + f"/publish?ch={channel}&data=hello+from+ruby")
    assert status == 200 and int(body) >= 1
    event = sse.next_message()
    assert event == {"data": "hello from ruby"}
    # a durable channel: kept in its stream, with an id
    status, _, body = http("GET", daemon.base + f"/publish?ch=rubydur.{daemon.queue}&data=kept&event=note")
    stream_id = body.decode()
    assert status == 200 and re.fullmatch(r"\d+-\d+", stream_id)
    [(entry_id, fields)] = redis_client.xrange(f"tempest:stream:{{rubydur.{daemon.queue}}}")
    assert entry_id.decode() == stream_id and json.loads(fields[b"m"]) == ["note", "kept"]
    event = sse.next_message()
    sse.close()
    assert event["data"] == "kept" and event["event"] == "note" and stream_id in event["id"]


# 5. routing between Ruby and Python workers


def test_forward_to_a_python_worker(tempestd_factory, redis_server, tmp_path, workers, request):
    daemon = serve(tempestd_factory, redis_server, tmp_path, workers, request)
    workers.append(start_worker([ROUTING, "greeter", daemon.queue + "-greet"], redis_server.url, tmp_path, "greeter"))
    status, _, body = http("GET", daemon.base + "/forward")
    ruby_pid = int(http("GET", daemon.base + "/pid")[2].split()[1])
    assert (status, body) == (200, f"greeted /forward from {ruby_pid}".encode())


def test_forward_from_a_python_worker(tempestd_factory, redis_server, tmp_path, workers, request):
    queue = queue_name(request)
    daemon = tempestd_factory(front={"queue": queue, "timeout": "5"})
    workers.append(start_worker([ROUTING, "front", queue, queue + "-greet"], redis_server.url, tmp_path, "front"))
    greeter = start_ruby([APP, "greeter", queue + "-greet"], redis_server.url, tmp_path, "greeter")
    workers.append(greeter)
    status, _, body = http("GET", daemon.base + "/hello", timeout=10)
    assert status == 200 and re.fullmatch(rb"ruby greeted /hello from \d+", body)
    started = time.monotonic()
    status, _, body = http("GET", daemon.base + "/fail")  # the Ruby greeter raises: 500 under greet
    assert (status, body) == (500, b"500 Internal Server Error\n") and time.monotonic() - started < 3
    assert daemon.info()["answers_dropped"] == 0


def test_gather_from_two_python_parts(tempestd_factory, redis_server, tmp_path, workers, request, redis_client):
    daemon = serve(tempestd_factory, redis_server, tmp_path, workers, request)
    squares = [f"{daemon.queue}-sq{i}" for i in range(2)]
    workers += [start_worker([ROUTING, "squarer", q], redis_server.url, tmp_path, q) for q in squares]
    status, headers, body = http("GET", daemon.base + f"/gather?q={','.join(squares)}")
    assert (status, body, headers["x-missing"]) == (200, b"5", "")  # 1 + 4
    status, headers, body = http("GET", daemon.base + f"/gather?q={squares[0]},silent&timeout=0.5")
    assert (status, body, headers["x-missing"]) == (200, b"1", "1")  # the silent part is nil
    assert not redis_client.keys("tempest:gather:*")  # the gatherer removed its stream
    redis_client.delete("silent")


# 6. a failing handler


def test_a_failing_handler_answers_500_and_the_worker_serves_on(tempestd_factory, redis_server, tmp_path, workers,
                                                                request, redis_client):
    daemon = serve(tempestd_factory, redis_server, tmp_path, workers, request)
    started = time.monotonic()
    status, headers, body = http("GET", daemon.base + "/boom")
    assert (status, body) == (500, b"500 Internal Server Error\n") and headers["content-type"] == "text/plain"
    assert time.monotonic() - started < 3  # at once, not after the route's 5 s
    redis_client.rpush(daemon.queue, b"not json", json.dumps(["nope", [], None, "x"]))  # dropped, and no handler
    assert http("GET", daemon.base + "/pid")[0] == 200
    # a job pushed by hand with a number for its id: answered under its decimal string
    dropped = daemon.info()["answers_dropped"]
    env = {"method": "GET", "url": "/pid", "headers": {}}
    redis_client.rpush(daemon.queue, json.dumps(["url", [env], f"127.0.0.1:{daemon.answer_port}", 17]))
    wait_until(lambda: daemon.info()["answers_dropped"] == dropped + 1, timeout=10)  # no such job: dropped
    assert "dropped answer url 17:" in daemon.log()
    assert http("GET", daemon.base + "/pid")[0] == 200
    assert workers[0].poll() is None
    with open(tmp_path / "site0.log") as log:
        text = log.read()
    assert "asked to fail" in text and "dropped malformed job" in text


# 7. reliable delivery


def registered(redis_client, queue):
    return [m for m in redis_client.smembers("tempest:workers") if m.decode().startswith(queue + " ")]


def test_the_job_of_a_killed_reliable_worker_is_answered_by_another(tempestd_factory, redis_server, tmp_path,
                                                                    workers, request, redis_client):
    queue = queue_name(request)
    daemon = tempestd_factory(front={"queue": queue, "timeout": "20", "redeliver_interval": "0.5"})
    args, env = [APP, "site", queue, "--reliable"], {"TEMPEST_TEST_HEARTBEAT": "1"}
    first = start_ruby(args, redis_server.url, tmp_path, "first", env)
    workers.append(first)
    wait_until(lambda: len(registered(redis_client, queue)) == 1, timeout=15)
    thread, result = in_thread(http, "GET", daemon.base + "/slow?s=1.5", timeout=30)
    wait_until(lambda: redis_client.llen(f"started:{queue}") == 1, timeout=10)
    first_id = registered(redis_client, queue)[0].decode().split(" ", 1)[1]
    assert redis_client.llen(f"tempest:processing:{{{queue}}}:{first_id}") == 1  # the job in hand
    assert redis_client.pttl(f"tempest:alive:{first_id}") <= 1000
    second = start_ruby(args, redis_server.url, tmp_path, "second", env)
    workers.append(second)
    wait_until(lambda: len(registered(redis_client, queue)) == 2, timeout=15)
    os.killpg(first.pid, signal.SIGKILL)  # in the middle of the job
    first.wait(10)
    thread.join(25)
    status, _, body = result["value"]
    assert (status, body) == (200, f"done by {second.pid}".encode())
    assert redis_client.hvals(f"tempest:deliveries:{{{queue}}}") == [b"1"]  # given back once (this queue's count)
    wait_until(lambda: len(registered(redis_client, queue)) == 1, timeout=10)  # the dead one is forgotten
    stop_group(second)
    assert second.returncode == 0
    assert registered(redis_client, queue) == [] and not redis_client.keys(f"tempest:processing:{{{queue}}}:*")


def log_of(directory, name):
    with open(os.path.join(str(directory), f"{name}.log"), encoding="utf-8", errors="replace") as handle:
        return handle.read()


def record_job(tag, ran, deadline=None):
    """A url job pushed by hand (no answer wanted) for the app's /record: its handler RPUSHes
    "<tag> <length of its processing list>" to the list ``ran``."""
    env = {"method": "GET", "url": f"/record?list={ran}&tag={tag}", "headers": {"host": "x"}}
    if deadline is not None:
        env["deadline"] = deadline
    return json.dumps(["url", [env], None, f"id-{tag}"])


def test_reliable_is_the_default_and_tempest_reliable_0_opts_out(redis_server, redis_client, tmp_path, workers,
                                                                 request):
    queue = queue_name(request)
    ran = queue + "-ran"
    cases = {  # name: (flags, environment, reliable?)
        "default": ([], {}, True),
        "env-0": ([], {"TEMPEST_RELIABLE": "0"}, False),
        "env-false": ([], {"TEMPEST_RELIABLE": "FALSE"}, False),
        "env-no": ([], {"TEMPEST_RELIABLE": "no"}, False),
        "env-off": ([], {"TEMPEST_RELIABLE": " off "}, False),
        "option": (["--plain"], {}, False),  # Tempest::Worker.new(q, reliable: false)
        "option-wins": (["--reliable"], {"TEMPEST_RELIABLE": "0"}, True),
    }
    for name, (flags, env, _) in cases.items():
        redis_client.rpush(f"{queue}-{name}", record_job(name, ran))
        workers.append(start_ruby([APP, "site", f"{queue}-{name}", *flags], redis_server.url, tmp_path, name, env))
    wait_until(lambda: redis_client.llen(ran) == len(cases), 20, message="every worker ran its job")
    recorded = dict(item.decode().split() for item in redis_client.lrange(ran, 0, -1))
    # a reliable worker runs the job from its processing list, a plain one (BLPOP) holds nothing
    assert recorded == {name: "1" if reliable else "0" for name, (_, _, reliable) in cases.items()}
    for name, (_, _, reliable) in cases.items():
        assert bool(registered(redis_client, f"{queue}-{name}")) is reliable, name
    redis_client.delete(ran)


@pytest.mark.parametrize("mode", ["reliable", "plain"])
def test_low_priority_jobs_are_taken_once_the_queue_is_empty(redis_server, redis_client, tmp_path, workers, request,
                                                             mode):
    queue = queue_name(request)
    ran, low = queue + "-ran", "tempest:low:{" + queue + "}"
    redis_client.rpush(low, record_job("low1", ran), record_job("low2", ran))
    redis_client.rpush(queue, record_job("normal1", ran), record_job("normal2", ran))
    redis_client.lpush(queue, record_job("high", ran))  # a high job, as tempestd pushes it: the head
    env = {"TEMPEST_RELIABLE": "0"} if mode == "plain" else {}
    workers.append(start_ruby([APP, "site", queue], redis_server.url, tmp_path, "prio", env))
    wait_until(lambda: redis_client.llen(ran) == 5, 20, message="the five jobs run")
    held = "1" if mode == "reliable" else "0"  # a low job too runs from the processing list of its queue
    order = ["high", "normal1", "normal2", "low1", "low2"]
    assert [item.decode() for item in redis_client.lrange(ran, 0, -1)] == [f"{tag} {held}" for tag in order]
    # idle, blocked on the queue: a low job pushed now is taken within about a second
    redis_client.rpush(low, record_job("low3", ran))
    wait_until(lambda: redis_client.llen(ran) == 6, 5, message="the low job taken by the idle worker")
    assert redis_client.lindex(ran, -1).decode() == f"low3 {held}"
    wait_until(lambda: not redis_client.keys("tempest:processing:{" + queue + "}:*"), message="every job released")
    assert not redis_client.exists(queue, low)
    redis_client.delete(ran)


def test_a_job_past_its_deadline_is_dropped_without_running(redis_server, redis_client, tmp_path, workers, request):
    queue = queue_name(request)
    ran = queue + "-ran"
    worker = start_ruby([APP, "site", queue], redis_server.url, tmp_path, "deadline")
    workers.append(worker)
    wait_until(lambda: registered(redis_client, queue), 15, message="the worker registered")
    now = time.time()
    redis_client.rpush(queue, *[record_job(f"late{i}", ran, deadline=now - 5) for i in range(3)])
    wait_until(lambda: "dropped job id-late0" in log_of(tmp_path, "deadline"), message="the late job dropped")
    # released like an answered job, not left in the processing list (nor given back)
    wait_until(lambda: not redis_client.keys("tempest:processing:{" + queue + "}:*") and not redis_client.llen(queue),
               message="the late jobs released")
    redis_client.rpush(queue, record_job("due", ran, deadline=time.time() + 60), record_job("undated", ran))
    wait_until(lambda: redis_client.llen(ran) == 2, message="the jobs within their deadline run")
    assert redis_client.lrange(ran, 0, -1) == [b"due 1", b"undated 1"]  # the late ones never ran
    stop_group(worker)
    assert worker.returncode == 0
    log = log_of(tmp_path, "deadline")
    assert "worker stopped after 2 jobs (3 dropped past their deadline)" in log
    [line] = [line for line in log.splitlines() if "past its deadline" in line]  # one line for 3 jobs, at info
    assert " INFO " in line and "dropped job id-late0" in line
    redis_client.delete(ran)


# 8. SIGTERM


def test_sigterm_finishes_the_job_then_exits_0(tempestd_factory, redis_server, tmp_path, workers, request,
                                               redis_client):
    daemon = serve(tempestd_factory, redis_server, tmp_path, workers, request)
    worker = workers[0]
    thread, result = in_thread(http, "GET", daemon.base + "/slow?s=1.5")
    wait_until(lambda: redis_client.llen(f"started:{daemon.queue}") == 1, timeout=10)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(10) == 0
    thread.join(10)
    assert result["value"][0] == 200 and result["value"][2] == f"done by {worker.pid}".encode()


# 9. Redis restarted under the worker


def test_the_worker_serves_again_after_redis_restarts(tempestd_factory, tmp_path, workers, request):
    server = RedisServer(tmp_path / "own-redis").start()
    try:
        queue = queue_name(request)
        daemon = tempestd_factory(redis_url=server.url, front={"queue": queue, "timeout": "3"})
        worker = start_ruby([APP, "site", queue], server.url, tmp_path, "site")
        workers.append(worker)
        status, _, body = http("GET", daemon.base + "/pid", timeout=10)
        assert status == 200
        server.stop()
        wait_until(lambda: http("GET", daemon.base + "/pid")[0] == 503, timeout=10, interval=0.1)
        server = RedisServer(tmp_path / "own-redis", port=server.port).start()

        def served():
            answer = http("GET", daemon.base + "/pid")
            return answer if answer[0] == 200 else None

        again = wait_until(served, timeout=20, interval=0.2, message="served again")
        assert again[2] == body  # the same process
        assert worker.poll() is None
        with open(tmp_path / "site.log") as log:
            assert "Redis unreachable" in log.read()
    finally:
        server.stop()


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
def spooling(tempestd_factory, redis_server, tmp_path, workers):
    """tempestd with a file-spooling and a Redis-spooling route, one Ruby site worker on them
    (a queue of its own: parametrized tests' queue_name is the same)."""
    queue = f"ruby-spool-{uuid.uuid4().hex[:8]}"
    daemon = tempestd_factory(front={"queue": queue, "timeout": "20"}, **spool_routes(queue))
    workers.append(start_ruby([APP, "site", queue], redis_server.url, tmp_path, "site"))
    daemon.queue = queue
    wait_until(lambda: http("GET", daemon.base + "/pid", timeout=5)[0] == 200, timeout=20, interval=0.1,
               message="the ruby worker serving")
    return daemon


@pytest.mark.parametrize("reader", ["each", "read", "whole"])
@pytest.mark.parametrize("route, form", [("/file/", "body_file"), ("/redis/", "body_key")])
def test_a_spooled_upload_is_read_by_the_handler(spooling, route, form, reader):
    data = os.urandom(3 * MiB + 4321)
    status, _, body = http("POST", f"{spooling.base}{route}digest?reader={reader}", data, timeout=30)
    assert status == 200, body
    assert json.loads(body) == {"form": form, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@pytest.mark.parametrize("reader", ["each", "read", "whole"])
def test_an_inline_body_is_read_the_same_way(spooling, reader):
    cases = [("/file/", b"small \xc3\xa9 text", "body"), ("/redis/", b"\xff\x00 not UTF-8", "body_base64"),
             ("/redis/", os.urandom(64 * 1024), "body_base64"), ("/file/", b"", "none")]  # 64K: spool_over, inline
    for route, data, form in cases:
        status, _, body = http("POST", f"{spooling.base}{route}digest?reader={reader}", data)
        assert status == 200, body
        assert json.loads(body) == {"form": form, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@pytest.mark.parametrize("reader", ["each", "whole"])
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
