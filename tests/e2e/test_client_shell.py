"""The shell client (clients/shell: bash and redis-cli, no library) against a real tempestd and
redis-server: hello world from a [worker:] section, streams, sessions, publish, forward both
ways, a failing handler, reliable delivery (the default) and its opt-outs, low-priority jobs,
deadlines, SIGTERM mid-job, Redis restarted under the worker, request bodies spooled to a file or
to Redis written out by tempest_body."""

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid

import pytest

from sseclient import SSE
from support import REPO, RedisServer, http, in_thread, kill_groups, session_cookie, start_worker, stop_group, wait_until

HELLO = os.path.join(REPO, "clients", "shell", "hello.sh")
APP = os.path.join(REPO, "tests", "clients", "shell", "app.sh")
ROUTING = os.path.join(REPO, "tests", "workers", "routing.py")


@pytest.fixture(autouse=True)
def runtime():
    for program in ("bash", "redis-cli"):
        if shutil.which(program) is None:
            from support import missing_runtime

            missing_runtime(f"{program} is needed by the shell client")



def shell_worker(script, args, redis_url, directory, name="shell", extra_env=None):
    """bash SCRIPT ARGS... in its own session, output to NAME.log."""
    env = dict(os.environ, TEMPEST_REDIS_URL=redis_url, **(extra_env or {}))
    with open(os.path.join(str(directory), f"{name}.log"), "ab") as log:
        return subprocess.Popen(["bash", script, *args], env=env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def log_of(directory, name="shell"):
    with open(os.path.join(str(directory), f"{name}.log"), encoding="utf-8", errors="replace") as handle:
        return handle.read()


@pytest.fixture
def site(tempestd_factory, redis_server, tmp_path, request):
    """tempestd on queue shell-<test>, the test app of the shell client serving it."""
    queue = "shell-" + request.node.name[5:40]
    front = {"queue": queue, "timeout": "5"}
    front.update(getattr(request, "param", {}))
    daemon = tempestd_factory(front=front)
    worker = shell_worker(APP, [queue, queue + "-next"], redis_server.url, tmp_path)
    daemon.queue = queue
    wait_until(lambda: http("GET", daemon.base + "/ping", timeout=5)[0] == 200, 15, interval=0.1,
               message="the shell worker serving")
    yield daemon
    kill_groups([worker])  # a plain worker: its stop is not under test


def test_hello_world_under_tempestd(tempestd_factory):
    daemon = tempestd_factory(front={"queue": "shell-hello", "timeout": "5"},
                              **{"worker:hello": {"command": f"bash {HELLO} shell-hello", "numprocs": "2"}})
    bodies = set()
    for _ in range(6):
        status, headers, body = wait_until(lambda: http("GET", daemon.base + "/"), 15, interval=0.1)
        assert status == 200
        assert headers["content-type"] == "text/plain"
        bodies.add(body.decode())
    assert all(body.startswith("Hello from shell #") for body in bodies)
    assert "Hello from shell #1" in bodies
    assert len(bodies) >= 2  # the count goes up (two processes: each counts its own)
    assert daemon.info()["answers_dropped"] == 0


def raw_get(port, path, timeout=5):
    """GET over a raw socket; everything received until the server closed (or silence)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except socket.timeout:
            received += b"<silence>"
        return received


def test_a_streamed_answer_arrives_in_chunks(site):
    received = raw_get(site.port, "/stream")
    assert b"Transfer-Encoding: chunked" in received
    assert received.endswith(b"4\r\none\n\r\n4\r\ntwo\n\r\n0\r\n\r\n")  # both pieces, then the end


def test_a_failing_stream_is_aborted(site):
    received = raw_get(site.port, "/abort")
    assert b"200 OK" in received
    assert received.endswith(b"4\r\npart\r\n")  # cut: no last chunk, no silence


@pytest.mark.parametrize("site", [{"session_cookie": "sid", "session_secret": "client-tests-secret-0123456789"}], indirect=True)
def test_session_write_read_and_regenerate(site, redis_client):
    status, headers, body = http("GET", site.base + "/session/set?v=bob")
    assert status == 200 and body == b"stored"
    sid, value = session_cookie(headers)
    assert redis_client.hget(f"session:{sid}", "user") == b'["bob"]'
    assert 0 < redis_client.ttl(f"session:{sid}") <= 14 * 24 * 3600

    status, headers, body = http("GET", site.base + "/session/get", headers={"Cookie": f"sid={value}"})
    assert body == b"user=bob" and "set-cookie" not in headers  # the cookie round trip

    redis_client.hset(f"session:{sid}", "user", '["caf\\u00e9 \\"x\\""]')  # written by another client
    status, headers, body = http("GET", site.base + "/session/get", headers={"Cookie": f"sid={value}"})
    assert body == 'user=café "x"'.encode()

    status, headers, body = http("GET", site.base + "/session/regenerate", headers={"Cookie": f"sid={value}"})
    assert status == 200 and "x-tempest-session" not in headers
    new, new_value = session_cookie(headers)
    assert new != sid and len(new) == 22
    assert not redis_client.exists(f"session:{sid}")
    assert redis_client.hget(f"session:{new}", "user") == '["caf\\u00e9 \\"x\\""]'.encode()
    status, headers, body = http("GET", site.base + "/session/get", headers={"Cookie": f"sid={new_value}"})
    assert body == 'user=café "x"'.encode()
    redis_client.delete(f"session:{new}")


def test_publish_reaches_an_sse_client(site):
    channel = "shell-news"
    sse = SSE(site.port, f"/sub/{channel}")
    assert sse.next()["comment"] == "ok"
    status, _, body = http("GET", site.base + f"/publish?c={channel}")
    assert status == 200 and body.startswith(b"published ")
    event = sse.next()
    assert event["data"] == "hello from shell"
    sse.sock.close()


def test_publish_to_a_durable_channel_keeps_it(tempestd_factory, site, redis_client):
    # the site's tempestd has no durable channels; this one writes tempest:pubsub:durable
    durable = tempestd_factory(front={"queue": "shell-durable-unused"}, pubsub={"durable": "shell-kept.*"})
    channel = "shell-kept.a"
    sse = SSE(durable.port, f"/sub/{channel}")
    assert sse.next()["comment"] == "ok"
    status, _, body = http("GET", site.base + f"/publish?c={channel}")
    assert status == 200
    stream_id = body.decode().split()[1]
    event = sse.next()
    assert event["data"] == "hello from shell" and event["id"] == stream_id
    assert redis_client.xlen(f"tempest:stream:{{{channel}}}") == 1
    sse.sock.close()
    redis_client.delete(f"tempest:stream:{{{channel}}}")


def test_forward_to_a_python_worker(site, redis_server, tmp_path):
    greeter = start_worker([ROUTING, "greeter", site.queue + "-next"], redis_server.url, tmp_path, "greeter")
    try:
        status, _, body = http("GET", site.base + "/forward")
        assert status == 200
        assert body.decode().startswith("greeted /forward from ")  # the Python greeter answered
    finally:
        kill_groups([greeter])


def test_forward_from_a_python_worker(tempestd_factory, redis_server, tmp_path):
    queue = "shell-from-python"
    daemon = tempestd_factory(front={"queue": queue, "timeout": "5"})
    front = start_worker([ROUTING, "front", queue, queue + "-greet"], redis_server.url, tmp_path, "front")
    shell = shell_worker(APP, [queue + "-greet"], redis_server.url, tmp_path)
    try:
        status, _, body = http("GET", daemon.base + "/somewhere")
        assert status == 200 and body == b"greeted /somewhere by shell"  # under the greet action
        assert daemon.info()["answers_dropped"] == 0
    finally:
        kill_groups([front, shell])


def test_gather_from_two_parts_and_a_missing_one(site, redis_server, redis_client, tmp_path):
    queues = [f"{site.queue}-sq{i}" for i in range(2)]
    squarers = [start_worker([ROUTING, "squarer", queue], redis_server.url, tmp_path, f"sq{i}")
                for i, queue in enumerate(queues)]
    try:
        status, headers, body = http("GET", site.base + f"/gather?q={','.join(queues)}&timeout=5")
        assert status == 200 and body == b"5" and headers["x-missing"] == ""  # 1 + 4
        silent = f"{site.queue}-silent"  # nobody serves it
        status, headers, body = http("GET", site.base + f"/gather?q={queues[0]},{silent}&timeout=0.5", timeout=4)
        assert status == 200 and body == b"1" and headers["x-missing"] == "1"
        assert not redis_client.keys("tempest:gather:*")  # the gatherer removed its streams
        redis_client.delete(silent)
    finally:
        kill_groups(squarers)


def test_a_failing_handler_answers_500_and_the_worker_goes_on(site):
    status, headers, body = http("GET", site.base + "/fail", timeout=4)  # the route's timeout is 5 s
    assert status == 500 and body == b"500 Internal Server Error\n"
    assert headers["content-type"] == "text/plain"
    status, _, body = http("GET", site.base + "/after")
    assert status == 200 and body == b"hello /after"


# reliable delivery (the default), priorities, deadlines


def record_job(tag, ran, deadline=None):
    """A url job pushed by hand (no answer wanted) for the app's /record: its handler RPUSHes
    "<tag> <length of its processing list of each queue>" to the list ``ran``."""
    env = {"method": "GET", "url": f"/record?list={ran}&tag={tag}", "headers": {"host": "x"}}
    if deadline is not None:
        env["deadline"] = deadline
    return json.dumps(["url", [env], None, f"id-{tag}"])


def registered(client, queue):
    return [m for m in client.smembers("tempest:workers") if m.decode().startswith(queue + " ")]


def test_reliable_is_the_default_and_tempest_reliable_0_opts_out(redis_server, redis_client, tmp_path):
    ran = "shell-default-ran"
    cases = {  # name: (flags, environment, reliable?)
        "default": ([], {}, True),
        "env-0": ([], {"TEMPEST_RELIABLE": "0"}, False),
        "env-false": ([], {"TEMPEST_RELIABLE": "False"}, False),
        "env-no": ([], {"TEMPEST_RELIABLE": "no"}, False),
        "env-off": ([], {"TEMPEST_RELIABLE": " off "}, False),
        "option": (["--plain"], {}, False),  # tempest_run --plain QUEUE
        "option-wins": (["--reliable"], {"TEMPEST_RELIABLE": "0"}, True),
    }
    procs = []
    try:
        for name, (flags, env, _) in cases.items():
            redis_client.rpush(f"shell-default-{name}", record_job(name, ran))
            procs.append(shell_worker(APP, [*flags, f"shell-default-{name}"], redis_server.url, tmp_path, name, env))
        wait_until(lambda: redis_client.llen(ran) == len(cases), 20, message="every worker ran its job")
        recorded = dict(item.decode().split() for item in redis_client.lrange(ran, 0, -1))
        # a reliable worker runs the job from its processing list, a plain one (BLPOP) holds nothing
        assert recorded == {name: "1" if reliable else "0" for name, (_, _, reliable) in cases.items()}
        for name, (_, _, reliable) in cases.items():
            assert bool(registered(redis_client, f"shell-default-{name}")) is reliable, name
        # a clean stop gives back nothing, unregisters and deletes the heartbeat
        stop_group(procs[0])
        assert procs[0].returncode == 0
        assert not registered(redis_client, "shell-default-default")
        assert not redis_client.keys("tempest:processing:{shell-default-*")
        assert not redis_client.keys(f"tempest:alive:*:{procs[0].pid}:*")
    finally:
        kill_groups(procs)
        redis_client.delete(ran)


@pytest.mark.parametrize("mode", ["reliable", "plain"])
def test_low_priority_jobs_are_taken_once_the_queues_are_empty(redis_server, redis_client, tmp_path, mode):
    a, b, ran = f"shell-prio-{mode}-a", f"shell-prio-{mode}-b", f"shell-prio-{mode}-ran"
    low = lambda queue: "tempest:low:{" + queue + "}"
    redis_client.rpush(low(b), record_job("low-b1", ran), record_job("low-b2", ran))
    redis_client.rpush(low(a), record_job("low-a", ran))
    redis_client.rpush(b, record_job("normal-b", ran))
    redis_client.rpush(a, record_job("normal-a1", ran), record_job("normal-a2", ran))
    redis_client.lpush(a, record_job("high-a", ran))  # a high job, as tempestd pushes it: the head
    env = {"TEMPEST_RELIABLE": "0"} if mode == "plain" else {}
    worker = shell_worker(APP, [f"{a},{b}"], redis_server.url, tmp_path, "prio", env)
    try:
        wait_until(lambda: redis_client.llen(ran) == 7, 20, message="the seven jobs run")
        # the queues in order, then their low lists in order; a low job runs from the processing
        # list of its own queue (reliable), a plain worker holds nothing
        held = {"a": "1/0", "b": "0/1"} if mode == "reliable" else {"a": "0/0", "b": "0/0"}
        order = ["high-a", "normal-a1", "normal-a2", "normal-b", "low-a", "low-b1", "low-b2"]
        expected = [f"{tag} {held[tag.split('-')[1][0]]}" for tag in order]
        assert [item.decode() for item in redis_client.lrange(ran, 0, -1)] == expected
        # idle, blocked on the queues: a low job pushed now is taken within about a second
        redis_client.rpush(low(b), record_job("low-b3", ran))
        wait_until(lambda: redis_client.llen(ran) == 8, 5, message="the low job taken by the idle worker")
        assert redis_client.lindex(ran, -1).decode() == f"low-b3 {held['b']}"
        wait_until(lambda: not redis_client.keys(f"tempest:processing:{{shell-prio-{mode}-*"),
                   message="every job released")
        assert not redis_client.exists(a, b, low(a), low(b))
    finally:
        kill_groups([worker])
        redis_client.delete(ran)


def test_a_job_past_its_deadline_is_dropped_without_running(redis_server, redis_client, tmp_path):
    queue, ran = "shell-deadline", "shell-deadline-ran"
    worker = shell_worker(APP, [queue], redis_server.url, tmp_path, "deadline")
    try:
        wait_until(lambda: registered(redis_client, queue), 15, message="the worker registered")
        now = time.time()
        late = [record_job(f"late{i}", ran, deadline=now - 5) for i in range(2)]
        late.append(record_job("late2", ran, deadline=int(now) - 5))  # an integer deadline too
        redis_client.rpush(queue, *late)
        wait_until(lambda: "dropped job id-late0" in log_of(tmp_path, "deadline"), message="the late job dropped")
        # released like an answered job, not left in the processing list (nor given back)
        wait_until(lambda: not redis_client.keys("tempest:processing:{shell-deadline}:*") and not redis_client.llen(queue),
                   message="the late jobs released")
        redis_client.rpush(queue, record_job("due", ran, deadline=time.time() + 60),
                           record_job("due-int", ran, deadline=int(time.time()) + 60), record_job("undated", ran))
        wait_until(lambda: redis_client.llen(ran) == 3, message="the jobs within their deadline run")
        assert redis_client.lrange(ran, 0, -1) == [b"due 1", b"due-int 1", b"undated 1"]  # the late ones never ran
        os.killpg(worker.pid, signal.SIGTERM)
        assert worker.wait(10) == 0
        log = log_of(tmp_path, "deadline")
        assert "worker stopped after 3 jobs (3 dropped past their deadline)" in log
        [line] = [line for line in log.splitlines() if "past its deadline" in line]  # one line for 3 jobs, at info
        assert " info: dropped job id-late0 taken past its deadline (1 dropped so far)" in line
    finally:
        kill_groups([worker])
        redis_client.delete(ran)


def loop_of(shell):
    """The worker loop of a shell worker: the child of its shell that leads a process group of
    its own (tempest_run's set -m), with the heartbeat process and the job in hand in it."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == shell.pid and int(fields[2]) == int(entry):  # ppid, pgrp
                return int(entry)
    return None


def test_reliable_the_job_of_a_killed_worker_is_answered_by_another(tempestd_factory, redis_server, redis_client,
                                                                    tmp_path):
    queue = "shell-killed"
    daemon = tempestd_factory(front={"queue": queue, "timeout": "20", "redeliver_interval": "0.5"})
    env = {"TEMPEST_HEARTBEAT": "1"}
    first = shell_worker(APP, [queue], redis_server.url, tmp_path, "first", env)
    second = None
    try:
        wait_until(lambda: len(registered(redis_client, queue)) == 1, 15, message="the first registered")
        thread, result = in_thread(http, "GET", daemon.base + "/hold?s=3", timeout=25)
        wait_until(lambda: "hold started" in log_of(tmp_path, "first"), 10, message="the job in hand")
        [key] = redis_client.keys("tempest:processing:{shell-killed}:*")
        assert redis_client.llen(key) == 1 and f":{first.pid}:" in key.decode()
        assert 0 < redis_client.pttl(f"tempest:alive:{key.decode().split(':', 3)[3]}") <= 1000
        second = shell_worker(APP, [queue], redis_server.url, tmp_path, "second", env)
        wait_until(lambda: len(registered(redis_client, queue)) == 2, 15, message="the second registered")
        os.killpg(wait_until(lambda: loop_of(first), message="the first's loop"), signal.SIGKILL)  # mid-job
        thread.join(25)
        status, _, body = result["value"]
        assert (status, body) == (200, f"held by {second.pid}".encode())
        assert redis_client.hvals("tempest:deliveries:{shell-killed}") == [b"1"]  # given back once
        wait_until(lambda: len(registered(redis_client, queue)) == 1, 10, message="the dead one forgotten")
        os.killpg(second.pid, signal.SIGTERM)  # a clean stop: exit 0, nothing left behind
        assert second.wait(10) == 0
        assert not registered(redis_client, queue) and not redis_client.keys("tempest:processing:{shell-killed}:*")
    finally:
        kill_groups([first] + ([second] if second else []))


def test_sigterm_finishes_the_job_in_hand_and_exits_0(tempestd_factory, redis_server, tmp_path):
    queue = "shell-sigterm"
    daemon = tempestd_factory(front={"queue": queue, "timeout": "5"})
    worker = shell_worker(APP, [queue], redis_server.url, tmp_path)
    try:
        thread, result = in_thread(http, "GET", daemon.base + "/slow")
        wait_until(lambda: "slow job started" in log_of(tmp_path), 10, message="the slow job taken")
        os.killpg(worker.pid, signal.SIGTERM)  # the whole group, as tempestd stops its workers
        thread.join(10)
        assert result["value"][0] == 200 and result["value"][2] == b"slow done"
        assert worker.wait(10) == 0
        assert "worker stopped after 1 jobs" in log_of(tmp_path)
    finally:
        stop_group(worker)


def test_the_worker_serves_again_after_redis_restarts(tempestd_factory, tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    daemon = tempestd_factory(redis_url=server.url, front={"queue": "shell-restart", "timeout": "3"})
    worker = shell_worker(APP, ["shell-restart"], server.url, tmp_path)
    try:
        assert wait_until(lambda: http("GET", daemon.base + "/one", timeout=4), 15)[2] == b"hello /one"
        server.stop()
        wait_until(lambda: "Redis unreachable" in log_of(tmp_path), 10, message="the worker noticing")
        server = RedisServer(tmp_path / "redis", port=server.port).start()

        def served():
            try:
                status, _, body = http("GET", daemon.base + "/two", timeout=4)
            except OSError:
                return None
            return status == 200 and body == b"hello /two"

        wait_until(served, 30, interval=0.2, message="served again")
        assert worker.poll() is None
    finally:
        stop_group(worker)
        server.stop()


# spooled request bodies (issue 11, item 3)

MiB = 1 << 20
CHUNK = 256 * 1024  # a Redis body's chunk (docs/protocol.md, "body_key")


def spool_routes(queue):
    """/file/ spools a body over 64K to a file, /redis/ to Redis in chunks: both to ``queue``."""
    return {"route:/file/": {"queue": queue, "spool": "yes", "spool_over": "64K", "max_body": "16M"},
            "route:/redis/": {"queue": queue, "spool": "redis", "spool_over": "64K", "max_body": "16M"}}


def answer_of(redis_client, queue, env, timeout=15):
    """Push a url job with ``env`` by hand, its respond_to a minimal answer endpoint here (+OK
    to every command, on as many connections as come: redis-cli makes one per command), and
    return the answer its worker sends ([status, headers, body])."""
    import hiredis

    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(timeout)
        redis_client.rpush(queue, json.dumps(["url", [env], "127.0.0.1:%d" % server.getsockname()[1], "by-hand"]))
        while True:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(timeout)
                reader = hiredis.Reader()
                while data := conn.recv(65536):
                    reader.feed(data)
                    while (command := reader.gets()) is not False:
                        conn.sendall(b"+OK\r\n")  # to ACTIONS too
                        if command[0] == b"url":
                            return json.loads(command[2])


@pytest.fixture
def spooling(tempestd_factory, redis_server, tmp_path):
    """tempestd with a file-spooling and a Redis-spooling route, the shell test app on them (a
    queue of its own per test)."""
    queue = f"shell-spool-{uuid.uuid4().hex[:8]}"
    daemon = tempestd_factory(front={"queue": queue, "timeout": "30"}, **spool_routes(queue))
    worker = shell_worker(APP, [queue], redis_server.url, tmp_path)
    daemon.queue = queue
    wait_until(lambda: http("GET", daemon.base + "/ping", timeout=5)[0] == 200, 15, interval=0.1,
               message="the shell worker serving")
    yield daemon
    kill_groups([worker])


@pytest.mark.parametrize("reader", ["stdout", "file"])
@pytest.mark.parametrize("route, form", [("/file/", "body_file"), ("/redis/", "body_key")])
def test_a_spooled_upload_is_read_by_the_handler(spooling, route, form, reader):
    data = os.urandom(3 * MiB + 4321)
    status, _, body = http("POST", f"{spooling.base}{route}digest?reader={reader}", data, timeout=30)
    assert status == 200, body
    assert json.loads(body) == {"form": form, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@pytest.mark.parametrize("reader", ["stdout", "file"])
def test_an_inline_body_is_read_the_same_way(spooling, reader):
    cases = [("/file/", b"small \xc3\xa9 text", "body"), ("/redis/", b"\xff\x00 not UTF-8", "body_base64"),
             ("/redis/", os.urandom(64 * 1024), "body_base64"), ("/file/", b"", "none")]  # 64K: spool_over, inline
    for route, data, form in cases:
        status, _, body = http("POST", f"{spooling.base}{route}digest?reader={reader}", data)
        assert status == 200, body
        assert json.loads(body) == {"form": form, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@pytest.mark.parametrize("reader", ["stdout", "file"])
def test_a_spooled_body_gone_or_not_as_its_token_says_is_status_2(spooling, redis_client, tmp_path, reader):
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
            if reader == "file":  # tempest_body ran in the handler's shell: TEMPEST_BODY_ERROR says why
                assert body.startswith("BodyGone: spooled body "), (case, body)
        # the same file with its true token is read
        status, _, body = answer_of(redis_client, spooling.queue,
                                    {**env, "body_file": {"path": str(kept), "size": len(data), "sha256": digest}})
        assert (status, json.loads(body)) == (200, {"form": "body_file", "size": len(data), "sha256": digest})
        assert log_of(tmp_path).count("tempest_body: BodyGone: spooled body ") == len(gone)  # and on stderr
    finally:
        redis_client.delete(partial)
