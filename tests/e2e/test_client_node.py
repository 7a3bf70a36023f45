"""The Node.js worker client (clients/node) end to end, under a real tempestd and redis-server:
hello world from a [worker:] section, streams, sessions, publish, routing with Python workers,
failures, reliable delivery (the default), low-priority jobs, deadlines, SIGTERM, a Redis
restart, and request bodies spooled to a file or to Redis read with context.bodyStream()."""

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

from support import REPO, RedisServer, http, in_thread, kill_groups, missing_runtime, session_cookie, start_worker, stop_group, wait_until

from sseclient import SSE

CLIENT = os.path.join(REPO, "clients", "node")
HELLO = os.path.join(CLIENT, "examples", "hello.js")
ROLES = os.path.join(REPO, "tests", "clients", "node", "roles.js")
ROUTING = os.path.join(REPO, "tests", "workers", "routing.py")


@pytest.fixture
def node():
    found = shutil.which("node")
    if not found:
        missing_runtime("node (Node.js 20)")
    if not os.path.isdir(os.path.join(CLIENT, "node_modules", "redis")):
        missing_runtime("clients/node/node_modules (npm install in clients/node)")
    return found


@pytest.fixture
def prefix(request):
    return "node-" + re.sub(r"[^a-z0-9]+", "-", request.node.name[5:40].lower())



@pytest.fixture
def started():
    """Node processes started by a test, stopped (by process group) at its end."""
    procs = []
    yield procs
    kill_groups(procs)  # what a test stops gracefully (reliable workers, SIGTERM) it stops itself


def start_node(node, started, args, redis_url, directory, name="node", extra_env=None):
    env = dict(os.environ, TEMPEST_REDIS_URL=redis_url)
    env.update(extra_env or {})
    with open(os.path.join(str(directory), f"{name}.log"), "ab") as log:
        proc = subprocess.Popen([node, ROLES, *args], env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    started.append(proc)
    return proc


def log_of(directory, name):
    with open(os.path.join(str(directory), f"{name}.log"), encoding="utf-8", errors="replace") as handle:
        return handle.read()


@pytest.fixture
def site(node, started, tempestd_factory, redis_server, tmp_path, prefix):
    """tempestd on the queue <prefix>, one node app worker on it."""
    daemon = tempestd_factory(front={"queue": prefix, "timeout": "5", "session_cookie": "sid", "session_secret": "client-tests-secret-0123456789"})
    start_node(node, started, ["app", prefix], redis_server.url, tmp_path, "app")
    daemon.prefix = prefix
    assert http("GET", daemon.base + "/warm-up")[0] == 200  # the worker serves: later timings are its own
    return daemon


def read_chunked(sock_file):
    """Read a chunked body piece by piece: (chunks, complete)."""
    chunks = []
    while True:
        size_line = sock_file.readline()
        if not size_line:
            return chunks, False
        size = int(size_line.strip(), 16)
        if size == 0:
            sock_file.readline()
            return chunks, True
        data = sock_file.read(size)
        sock_file.readline()
        if len(data) < size:
            return chunks + [data], False
        chunks.append(data)


def raw_get(port, path, headers=""):
    import socket

    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode())
    sock_file = sock.makefile("rb")
    status = sock_file.readline()
    head = {}
    while True:
        line = sock_file.readline().decode("latin-1").strip()
        if not line:
            break
        name, _, value = line.partition(":")
        head[name.lower()] = value.strip()
    return sock, sock_file, status, head


# 1. hello world


def test_hello_world_from_a_worker_section(node, tempestd_factory, redis_client, prefix):
    daemon = tempestd_factory(front={"queue": prefix, "timeout": "5"},
                              **{"worker:hello": {"command": f"{node} {HELLO} {prefix}", "numprocs": "2"}})
    wait_until(lambda: [s["state"] for s in daemon.status().values()] == ["RUNNING", "RUNNING"], 15,
               message="two node workers running")
    status, headers, body = http("GET", daemon.base + "/")
    assert status == 200 and headers["content-type"] == "text/plain"
    assert body == b"Hello from node #1"  # the first answer of whichever process took it
    bodies = [http("GET", daemon.base + f"/{i}")[2].decode() for i in range(6)]
    assert all(re.fullmatch(r"Hello from node #[1-7]", b) for b in bodies)
    assert len({s["pid"] for s in daemon.status().values()}) == 2
    # the hello world is reliable (the default): both register, each at its first pop
    wait_until(lambda: len(registered(redis_client, prefix)) == 2, 10, message="both node workers registered")


def test_answers_authenticate_with_the_answer_password(node, tempestd_factory, prefix):
    daemon = tempestd_factory(front={"queue": prefix, "timeout": "5", "answer_password": "node-s3cret"},
                              **{"worker:hello": {"command": f"{node} {HELLO} {prefix}"}})
    status, _, body = http("GET", daemon.base + "/")
    assert (status, body) == (200, b"Hello from node #1")


def test_a_job_id_pushed_as_a_number_is_sent_back_as_its_decimal_text(site, redis_client):
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(10)
    received = bytearray()

    def endpoint():  # a minimal RESP endpoint: +OK to every command, keeps what it got
        conn, _ = server.accept()
        conn.settimeout(10)
        with conn:
            while b"12345678901234567890" not in received:
                data = conn.recv(65536)
                if not data:
                    return
                received.extend(data)
                conn.sendall(b"+OK\r\n" * data.count(b"\r\n*") + (b"+OK\r\n" if data.startswith(b"*") else b""))

    thread = threading.Thread(target=endpoint, daemon=True)
    thread.start()
    respond_to = "127.0.0.1:%d" % server.getsockname()[1]
    redis_client.rpush(site.prefix, '["url", [{"method": "GET", "url": "/n"}], "%s", 12345678901234567890]' % respond_to)
    thread.join(10)
    server.close()
    assert b"$3\r\nurl\r\n$20\r\n12345678901234567890\r\n" in received


# 2. streams


def test_a_streamed_answer_arrives_in_chunks(site):
    sock, sock_file, status, head = raw_get(site.port, "/stream?pause=200")
    try:
        assert status.startswith(b"HTTP/1.1 200") and head["transfer-encoding"] == "chunked"
        chunks, complete = read_chunked(sock_file)
        assert complete and b"".join(chunks) == b"chunk 0\nchunk 1\nchunk 2\n"
        assert len(chunks) == 3  # each write() arrived as its own chunk
    finally:
        sock.close()
    status, _, body = http("GET", site.base + "/stream?pause=1")
    assert (status, body) == (200, b"chunk 0\nchunk 1\nchunk 2\n")


def test_a_stream_whose_handler_raises_is_cut(site):
    sock, sock_file, status, head = raw_get(site.port, "/abort")
    try:
        assert status.startswith(b"HTTP/1.1 200")
        chunks, complete = read_chunked(sock_file)
        assert not complete and b"".join(chunks) == b"partial\n"
    finally:
        sock.close()
    assert http("GET", site.base + "/after")[0] == 200  # the worker serves on


# 3. sessions


def test_session_write_cookie_round_trip_and_regenerate(site, redis_client):
    status, headers, body = http("GET", site.base + "/session/set?user=bob&n=1")
    assert (status, body) == (200, b"stored")
    sid, value = session_cookie(headers)
    key = f"session:{sid}"
    assert redis_client.hgetall(key) == {b"user": b'["bob"]', b"n": b'["1"]'}
    assert 0 < redis_client.ttl(key) <= 14 * 24 * 3600
    status, headers, body = http("GET", site.base + "/session/get?field=user", headers={"Cookie": f"sid={value}"})
    assert (status, body) == (200, b'"bob"') and "set-cookie" not in headers
    redis_client.hset(key, "user", '["alice"]')  # written by another worker: read from Redis each time
    assert http("GET", site.base + "/session/get?field=user", headers={"Cookie": f"sid={value}"})[2] == b'"alice"'

    status, headers, body = http("GET", site.base + "/session/regenerate", headers={"Cookie": f"sid={value}"})
    new, new_value = session_cookie(headers)
    assert status == 200 and new != sid and body.decode() == f"{sid} -> {new}"
    assert "x-tempest-session" not in headers  # the front turned it into the cookie
    assert not redis_client.exists(key) and redis_client.hget(f"session:{new}", "user") == b'["alice"]'
    assert http("GET", site.base + "/session/get?field=user", headers={"Cookie": f"sid={new_value}"})[2] == b'"alice"'
    redis_client.delete(f"session:{new}")


# 4. publish


def test_publish_reaches_an_sse_client(site, redis_client):
    channel = site.prefix + "-news"
    client = SSE(site.port, f"/sub/{channel}")
    try:
        wait_until(lambda: redis_client.pubsub_numsub(channel)[0][1] >= 1, message="the relay subscribed")
        status, _, body = http("GET", site.base + f"/publish?channel={channel}&data=hello%20sse&event=note")
        assert status == 200 and int(body) >= 1
        assert client.next_message() == {"event": "note", "data": "hello sse"}
    finally:
        client.close()


def test_publish_to_a_durable_channel(node, started, tempestd_factory, tmp_path, prefix):
    own = RedisServer(tmp_path / "own-redis").start()  # its own tempest:pubsub:durable
    try:
        daemon = tempestd_factory(redis_url=own.url, front={"queue": prefix, "timeout": "5"},
                                  pubsub={"durable": "nodedur.*", "history": "10"})
        start_node(node, started, ["app", prefix], own.url, tmp_path, "app")
        client = SSE(daemon.port, "/sub/nodedur.a")
        try:
            wait_until(lambda: own.client().pubsub_numsub("nodedur.a")[0][1] >= 1, message="subscribed")
            status, _, body = http("GET", daemon.base + "/publish?channel=nodedur.a&data=kept")
            assert status == 200 and re.fullmatch(rb"\d+-\d+", body)
            assert client.next_message() == {"id": body.decode(), "data": "kept"}
            [(_, fields)] = own.client().xrange("tempest:stream:{nodedur.a}")
            assert json.loads(fields[b"m"]) == ["kept"]
        finally:
            client.close()
    finally:
        own.stop()


# 5. routing with Python workers


def test_forward_to_a_python_worker(site, redis_server, tmp_path):
    greeter = start_worker([ROUTING, "greeter", site.prefix + "-py"], redis_server.url, tmp_path, "pygreeter")
    try:
        status, _, body = http("GET", site.base + f"/forward?to={site.prefix}-py")
        assert status == 200 and body.decode().startswith("greeted /forward from ")
        assert site.info()["answers_dropped"] == 0
    finally:
        kill_groups([greeter])


def test_forward_from_a_python_worker_and_failure_of_the_last_one(node, started, tempestd_factory, redis_server,
                                                                  tmp_path, prefix):
    daemon = tempestd_factory(front={"queue": prefix, "timeout": "5"})
    front = start_worker([ROUTING, "front", prefix, prefix + "-greet"], redis_server.url, tmp_path, "pyfront")
    try:
        start_node(node, started, ["greeter", prefix + "-greet"], redis_server.url, tmp_path, "greeter")
        status, _, body = http("GET", daemon.base + "/hi")
        assert status == 200 and re.fullmatch(r"node greeted /hi from \d+", body.decode())
        status, _, body = http("GET", daemon.base + "/fail", timeout=4)  # 500 at once, under `greet`
        assert (status, body) == (500, b"500 Internal Server Error\n")
        assert daemon.info()["answers_dropped"] == 0
    finally:
        kill_groups([front])


def test_gather_from_two_parts(site, node, started, redis_server, tmp_path, redis_client):
    python_part = start_worker([ROUTING, "squarer", site.prefix + "-sq0"], redis_server.url, tmp_path, "pysq")
    try:
        start_node(node, started, ["squarer", site.prefix + "-sq1"], redis_server.url, tmp_path, "nodesq")
        status, headers, body = http("GET", site.base + f"/gather?q={site.prefix}-sq0,{site.prefix}-sq1")
        assert (status, body, headers["x-missing"]) == (200, b"5", "")  # 1 + 4
        silent = site.prefix + "-silent"
        status, headers, body = http("GET", site.base + f"/gather?q={site.prefix}-sq0,{silent}&timeout=0.5")
        assert (status, body, headers["x-missing"]) == (200, b"1", "1")  # the missing part is null
        redis_client.delete(silent)
    finally:
        kill_groups([python_part])


# 6. failures


def test_a_raising_handler_answers_500_at_once_and_the_worker_serves_on(site):
    status, headers, body = http("GET", site.base + "/fail", timeout=3)  # the route's timeout is 5 s
    assert (status, body) == (500, b"500 Internal Server Error\n")
    assert headers["content-type"] == "text/plain"
    status, _, body = http("GET", site.base + "/next")
    assert status == 200 and body.decode().endswith("GET /next")


def test_a_malformed_job_is_dropped_and_a_missing_handler_answers_501(site, redis_client, tmp_path):
    redis_client.rpush(site.prefix, "not json", json.dumps(["url", "not a list", None, "x"]))
    respond_to = f"127.0.0.1:{site.answer_port}"
    redis_client.rpush(site.prefix, json.dumps(["nothing", [], respond_to, "nohandler"]))
    wait_until(lambda: "no handler for action" in log_of(tmp_path, "app"), message="the 501 logged")
    assert log_of(tmp_path, "app").count("dropped malformed job") == 2
    assert http("GET", site.base + "/still")[0] == 200


# 7. reliable delivery


def test_reliable_the_job_of_a_killed_worker_is_answered_by_the_other(node, started, tempestd_factory, redis_server,
                                                                      tmp_path, prefix):
    daemon = tempestd_factory(front={"queue": prefix, "timeout": "20", "redeliver_interval": "0.5"})
    client = redis_server.client()
    args = ["app", prefix, "--reliable", "--heartbeat", "1"]
    workers = [start_node(node, started, args, redis_server.url, tmp_path, f"rel{i}") for i in range(2)]
    mine = lambda: {m.decode() for m in client.smembers("tempest:workers") if m.decode().startswith(prefix + " ")}
    wait_until(lambda: len(mine()) == 2, message="two reliable workers registered")
    thread, result = in_thread(http, "GET", daemon.base + "/slow?ms=3000", timeout=25)

    def holder():
        for key in client.keys("tempest:processing:{" + prefix + "}:*"):
            if client.llen(key):
                return int(key.decode().rsplit(":", 2)[1])  # <host>:<pid>:<hex>
        return None

    pid = wait_until(holder, message="the job in a processing list")
    [victim] = [w for w in workers if w.pid == pid]
    [other] = [w for w in workers if w.pid != pid]
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(10)
    thread.join(25)
    status, _, body = result["value"]
    assert (status, body) == (200, f"slow done by {other.pid}".encode())
    assert client.hvals("tempest:deliveries:{" + prefix + "}") == [b"1"]  # given back once (this queue's count)
    wait_until(lambda: len(mine()) == 1, message="the dead worker forgotten")
    stop_group(other)
    assert other.returncode == 0
    assert not mine() and not client.keys("tempest:processing:{" + prefix + "}:*")  # a clean stop unregisters


def record_job(tag, ran, deadline=None):
    """A url job pushed by hand (no answer wanted) for the app's /record: its handler RPUSHes
    "<tag> <length of its processing list>" to the list ``ran``."""
    env = {"method": "GET", "url": f"/record?list={ran}&tag={tag}", "headers": {"host": "x"}}
    if deadline is not None:
        env["deadline"] = deadline
    return json.dumps(["url", [env], None, f"id-{tag}"])


def registered(client, queue):
    return {m.decode() for m in client.smembers("tempest:workers") if m.decode().startswith(queue + " ")}


def test_reliable_is_the_default_and_tempest_reliable_0_opts_out(node, started, redis_server, redis_client, tmp_path,
                                                                 prefix):
    ran = prefix + "-ran"
    cases = {  # name: (flags, environment, reliable?)
        "default": ([], {}, True),
        "env-0": ([], {"TEMPEST_RELIABLE": "0"}, False),
        "env-false": ([], {"TEMPEST_RELIABLE": "false"}, False),
        "env-no": ([], {"TEMPEST_RELIABLE": "No"}, False),
        "env-off": ([], {"TEMPEST_RELIABLE": " off "}, False),
        "option": (["--plain"], {}, False),  # new Worker(q, {reliable: false})
        "option-wins": (["--reliable"], {"TEMPEST_RELIABLE": "0"}, True),
    }
    for name, (flags, env, _) in cases.items():
        redis_client.rpush(f"{prefix}-{name}", record_job(name, ran))
        start_node(node, started, ["app", f"{prefix}-{name}", *flags], redis_server.url, tmp_path, name, env)
    wait_until(lambda: redis_client.llen(ran) == len(cases), 20, message="every worker ran its job")
    recorded = dict(item.decode().split() for item in redis_client.lrange(ran, 0, -1))
    # a reliable worker runs the job from its processing list, a plain one (BLPOP) holds nothing
    assert recorded == {name: "1" if reliable else "0" for name, (_, _, reliable) in cases.items()}
    for name, (_, _, reliable) in cases.items():
        assert bool(registered(redis_client, f"{prefix}-{name}")) is reliable, name
    redis_client.delete(ran)


@pytest.mark.parametrize("mode", ["reliable", "plain"])
def test_low_priority_jobs_are_taken_once_the_queue_is_empty(node, started, redis_server, redis_client, tmp_path,
                                                             prefix, mode):
    queue, ran, low = prefix, prefix + "-ran", "tempest:low:{" + prefix + "}"
    redis_client.rpush(low, record_job("low1", ran), record_job("low2", ran))
    redis_client.rpush(queue, record_job("normal1", ran), record_job("normal2", ran))
    redis_client.lpush(queue, record_job("high", ran))  # a high job, as tempestd pushes it: the head
    env = {"TEMPEST_RELIABLE": "0"} if mode == "plain" else {}
    start_node(node, started, ["app", queue], redis_server.url, tmp_path, "prio", env)
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


def test_a_job_past_its_deadline_is_dropped_without_running(node, started, redis_server, redis_client, tmp_path, prefix):
    queue, ran = prefix, prefix + "-ran"
    worker = start_node(node, started, ["app", queue], redis_server.url, tmp_path, "deadline")
    wait_until(lambda: registered(redis_client, queue), message="the worker registered")
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


def test_sigterm_finishes_the_job_in_hand_and_exits_0(node, started, tempestd_factory, redis_server, tmp_path, prefix):
    daemon = tempestd_factory(front={"queue": prefix, "timeout": "10"})
    worker = start_node(node, started, ["app", prefix], redis_server.url, tmp_path, "term")
    thread, result = in_thread(http, "GET", daemon.base + "/slow?ms=1500")
    wait_until(lambda: "slow job started" in log_of(tmp_path, "term"), message="the job in hand")
    os.killpg(worker.pid, signal.SIGTERM)
    assert worker.wait(10) == 0
    thread.join(10)
    assert result["value"][0] == 200 and result["value"][2] == f"slow done by {worker.pid}".encode()


# 9. Redis restarted under the worker


def test_the_worker_serves_again_after_a_redis_restart(node, started, tempestd_factory, tmp_path, prefix):
    own = RedisServer(tmp_path / "restart-redis").start()
    try:
        daemon = tempestd_factory(redis_url=own.url, front={"queue": prefix, "timeout": "5"})
        worker = start_node(node, started, ["app", prefix], own.url, tmp_path, "restart")
        assert http("GET", daemon.base + "/before")[0] == 200  # the job waits in the queue for the worker
        own.stop()
        wait_until(lambda: log_of(tmp_path, "restart").count("Redis unreachable") >= 3, 10,
                   message="the worker retrying while Redis is away")
        own = RedisServer(tmp_path / "restart-redis", port=own.port).start()
        wait_until(lambda: http("GET", daemon.base + "/after", timeout=10)[0] == 200, 40, 0.2,
                   message="served again after the restart")
        assert worker.poll() is None  # never crashed
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
def spooling(node, started, tempestd_factory, redis_server, tmp_path, prefix):
    """tempestd with a file-spooling and a Redis-spooling route, one node app worker on them
    (a queue of its own: the prefix of parametrized tests is the same)."""
    queue = f"{prefix}-{uuid.uuid4().hex[:8]}"
    daemon = tempestd_factory(front={"queue": queue, "timeout": "20"}, **spool_routes(queue))
    start_node(node, started, ["app", queue], redis_server.url, tmp_path, "app")
    daemon.prefix = queue
    assert http("GET", daemon.base + "/warm-up")[0] == 200
    return daemon


@pytest.mark.parametrize("reader", ["stream", "whole"])
@pytest.mark.parametrize("route, form", [("/file/", "body_file"), ("/redis/", "body_key")])
def test_a_spooled_upload_is_read_by_the_handler(spooling, route, form, reader):
    data = os.urandom(3 * MiB + 4321)
    status, _, body = http("POST", f"{spooling.base}{route}digest?reader={reader}", data, timeout=30)
    assert status == 200, body
    assert json.loads(body) == {"form": form, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@pytest.mark.parametrize("reader", ["stream", "whole"])
def test_an_inline_body_is_read_the_same_way(spooling, reader):
    cases = [("/file/", b"small \xc3\xa9 text", "body"), ("/redis/", b"\xff\x00 not UTF-8", "body_base64"),
             ("/redis/", os.urandom(64 * 1024), "body_base64"), ("/file/", b"", "none")]  # 64K: spool_over, inline
    for route, data, form in cases:
        status, _, body = http("POST", f"{spooling.base}{route}digest?reader={reader}", data)
        assert status == 200, body
        assert json.loads(body) == {"form": form, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@pytest.mark.parametrize("reader", ["stream", "whole"])
def test_a_spooled_body_gone_or_not_as_its_token_says_is_body_gone(spooling, redis_client, tmp_path, reader):
    data = os.urandom(CHUNK + 1000)
    digest = hashlib.sha256(data).hexdigest()
    kept = tmp_path / "kept.body"
    kept.write_bytes(data)
    partial = f"tempest:body:{{{spooling.prefix}-partial}}"
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
            status, _, body = answer_of(redis_client, spooling.prefix, {**env, **token})
            assert (status, body.split(":")[0]) == (410, "BodyGone"), (case, body)
        # the same file with its true token is read
        status, _, body = answer_of(redis_client, spooling.prefix,
                                    {**env, "body_file": {"path": str(kept), "size": len(data), "sha256": digest}})
        assert (status, json.loads(body)) == (200, {"form": "body_file", "size": len(data), "sha256": digest})
    finally:
        redis_client.delete(partial)
