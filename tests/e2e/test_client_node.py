"""The Node.js worker client (clients/node) end to end, under a real tempestd and redis-server:
hello world from a [worker:] section, streams, sessions, publish, routing with Python workers,
failures, reliable delivery (the default), low-priority jobs, deadlines, SIGTERM, a Redis
restart, and request bodies spooled to a file or to Redis read with context.bodyStream()."""

import json
import os
import re
import shutil
import signal
import subprocess
import uuid

import pytest

from support import (REPO, RedisServer, hand_job, http, in_thread, kill_groups, missing_runtime, registered, session_cookie,
                     start_worker, stop_group, wait_until)

from sseclient import SSE

pytest.register_assert_rewrite("client_cases")
import client_cases  # noqa: E402
from client_cases import log_of  # noqa: E402

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


@pytest.fixture
def app(node, started, redis_server, tmp_path):
    """The node app for client_cases: its reliable option is --plain (new Worker(q, {reliable:
    false})) or --reliable."""
    def start(queues, name, option=None, env=None):
        flags = [f"--{option}"] if option else []
        return start_node(node, started, ["app", queues, *flags], redis_server.url, tmp_path, name, env)

    return client_cases.App(start, tmp_path)


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
    commands = client_cases.answer_commands(redis_client, site.prefix, "url", [{"method": "GET", "url": "/n"}],
                                            job_id=12345678901234567890)
    assert commands[-1][:2] == [b"url", b"12345678901234567890"]


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


GRANTS_APP = r"""
'use strict';
// A test worker of the grants: node grants-app.js QUEUE; url jobs with a session, by path:
//   /grant?p=P&p=..., /revoke?p=P&p=..., /regenerate, /logout (clear), anything else: nothing;
//   then the answer: the session's grants, a sorted JSON list
const { Worker } = require(process.env.TEMPEST_NODE_CLIENT);
const worker = new Worker(process.argv[2], { reliable: false });
worker.on('url', async (context, env) => {
  const url = new URL(env.url, 'http://localhost');
  const patterns = url.searchParams.getAll('p');
  const session = context.session;
  if (url.pathname === '/grant') await session.grant(...patterns);
  else if (url.pathname === '/revoke') await session.revoke(...patterns);
  else if (url.pathname === '/regenerate') await session.regenerate();
  else if (url.pathname === '/logout') await session.clear();
  return [200, { 'Content-Type': 'application/json' }, JSON.stringify([...await session.grants()].sort())];
});
worker.run().then(() => process.exit(0), (error) => { console.error(error.message); process.exit(1); });
"""


def grants_worker(node, started, tmp_path, url, queue, name="grants"):
    script = tmp_path / "grants-app.js"
    script.write_text(GRANTS_APP)
    env = dict(os.environ, TEMPEST_REDIS_URL=url, TEMPEST_NODE_CLIENT=CLIENT)
    with open(tmp_path / f"{name}.log", "ab") as log:
        proc = subprocess.Popen([node, str(script), queue], env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    started.append(proc)
    return proc


def grants_job(client, queue, sid, path):
    """(status, headers, body) of the grants app's answer to ``path`` for the session ``sid`` (ttl 600)."""
    env = {"method": "GET", "url": path, "headers": {}, "session": {"id": sid, "ttl": 600}}
    return client_cases.answer_of(client, queue, env)


def test_session_grants_follow_a_regenerate_and_a_logout_removes_them(node, started, redis_client, redis_server,
                                                                      tmp_path, prefix):
    grants_worker(node, started, tmp_path, redis_server.url, prefix)
    sid = "G" * 11 + uuid.uuid4().hex[:11]
    grants = f"tempest:grants:{sid}"
    status, _, body = grants_job(redis_client, prefix, sid, "/grant?p=user.42.*&p=team.7")
    assert (status, json.loads(body)) == (200, ["team.7", "user.42.*"])
    assert redis_client.smembers(grants) == {b"user.42.*", b"team.7"} and 0 < redis_client.ttl(grants) <= 600
    status, _, _ = grants_job(redis_client, prefix, sid, "/grant?p=news.*&p=bad%01")  # all checked, then written
    assert status == 500 and redis_client.smembers(grants) == {b"user.42.*", b"team.7"}
    assert json.loads(grants_job(redis_client, prefix, sid, "/revoke?p=team.7")[2]) == ["user.42.*"]

    # regenerated without a hash (never written: "no such key" ignored), then with one: the grants move, TTL kept
    redis_client.expire(grants, 300)
    status, headers, body = grants_job(redis_client, prefix, sid, "/regenerate")
    new = headers["X-Tempest-Session"]
    assert (status, json.loads(body)) == (200, ["user.42.*"]) and new != sid
    assert not redis_client.exists(grants, f"session:{sid}") and 290 < redis_client.ttl(f"tempest:grants:{new}") <= 300
    redis_client.hset(f"session:{new}", "user", '["bob"]')
    redis_client.expire(f"session:{new}", 500)
    status, headers, _ = grants_job(redis_client, prefix, new, "/regenerate")
    newer = headers["X-Tempest-Session"]
    assert status == 200 and not redis_client.exists(f"session:{new}", f"tempest:grants:{new}")
    assert redis_client.hgetall(f"session:{newer}") == {b"user": b'["bob"]'}
    assert 490 < redis_client.ttl(f"session:{newer}") <= 500
    assert redis_client.smembers(f"tempest:grants:{newer}") == {b"user.42.*"}
    assert 290 < redis_client.ttl(f"tempest:grants:{newer}") <= 300

    # a logout: the hash and the grants gone
    status, _, body = grants_job(redis_client, prefix, newer, "/logout")
    assert (status, body) == (200, "[]")
    assert not redis_client.exists(f"session:{newer}", f"tempest:grants:{newer}")


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
    redis_client.rpush(site.prefix, hand_job("nothing", [], respond_to, "nohandler"))
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
    mine = lambda: registered(client, prefix)
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


def test_reliable_is_the_default_and_tempest_reliable_0_opts_out(app, redis_client, prefix):
    client_cases.reliable_is_the_default(redis_client, app, prefix)


@pytest.mark.parametrize("mode", ["reliable", "plain"])
def test_low_priority_jobs_are_taken_once_the_queue_is_empty(app, redis_client, prefix, mode):
    client_cases.low_jobs_after_the_queue(redis_client, app, prefix, mode)


def test_a_job_past_its_deadline_is_dropped_without_running(app, redis_client, prefix):
    client_cases.late_jobs_are_dropped(redis_client, app, prefix)


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


@pytest.mark.parametrize("mode", ["plain", "reliable"])
def test_an_error_reply_to_the_take_is_a_refusal_not_an_outage(app, redis_client, prefix, mode):
    """The queue's key a string: BLPOP (plain) or the take script's LMOVE (reliable) answers
    WRONGTYPE, node-redis' ErrorReply: logged at ERROR as a refusal, retried every 2 s, never
    "Redis unreachable"; the key deleted, a job pushed by hand is run within a few seconds."""
    queue, ran = f"{prefix}-{mode}", f"{prefix}-{mode}-ran"
    redis_client.set(queue, "x")
    try:
        app.start(queue, "refused", mode)
        wait_until(lambda: app.log("refused").count("Redis refused to give jobs") >= 2, 15,
                   message="the refusal logged twice")
        log = app.log("refused")
        assert re.search(r" ERROR tempest-worker\[\d+\]: Redis refused to give jobs: WRONGTYPE .*; retrying in 2\.0s$",
                         log, re.M), log
        assert "Redis unreachable" not in log
        redis_client.delete(queue)
        redis_client.rpush(queue, client_cases.record_job("fixed", ran))
        wait_until(lambda: redis_client.llen(ran) == 1, 5, message="the job run once the key is a list again")
        assert "Redis unreachable" not in app.log("refused")
    finally:
        redis_client.delete(queue, ran)


# 10. spooled request bodies (issue 11, item 3)


@pytest.fixture
def spooling(app, tempestd_factory):
    """tempestd with a file-spooling and a Redis-spooling route, one node app worker on them."""
    daemon = client_cases.spooling_front(tempestd_factory, "node")
    app.start(daemon.queue, "app")
    assert http("GET", daemon.base + "/warm-up")[0] == 200
    return daemon


@pytest.mark.parametrize("reader", ["stream", "whole"])
@pytest.mark.parametrize("route, form", client_cases.SPOOLED)
def test_a_spooled_upload_is_read_by_the_handler(spooling, route, form, reader):
    client_cases.a_spooled_upload_is_read(spooling, route, form, reader)


@pytest.mark.parametrize("reader", ["stream", "whole"])
def test_an_inline_body_is_read_the_same_way(spooling, reader):
    client_cases.inline_bodies_are_read(spooling, reader)


@pytest.mark.parametrize("reader", ["stream", "whole"])
def test_a_spooled_body_gone_or_not_as_its_token_says_is_body_gone(spooling, redis_client, tmp_path, reader):
    client_cases.a_body_gone_is_410(redis_client, spooling.queue, tmp_path, reader)


def test_the_redis_password_stays_out_of_logs_and_argv(app, tempestd_factory, tmp_path):
    client_cases.the_redis_password_stays_out_of_logs_and_argv(app, tempestd_factory, tmp_path, "node-secret")


# 11. Redis Cluster (docs/protocol.md, section 7), on the session's shared_cluster: no tempestd
# (its cluster mode is not there yet), jobs pushed by hand

CLUSTER_APP = r"""
'use strict';
// A test worker on a Redis Cluster: node cluster-app.js QUEUE[,QUEUE...] [reliable|plain]
//   /record?list=L&tag=T: RPUSH L "T <length of this worker's processing list of each queue, /-joined>"
//   /hold?ms=N: logs "hold started", waits N ms, answers
const { Worker, keys } = require(process.env.TEMPEST_NODE_CLIENT);
const [queues, option] = [process.argv[2].split(','), process.argv[3]];
const reliable = option === 'reliable' ? true : option === 'plain' ? false : undefined;
const worker = new Worker(queues, { reliable, heartbeat: Number(process.env.TEST_HEARTBEAT || 15) });
worker.on('url', async (context, env) => {
  const url = new URL(env.url, 'http://localhost');
  const q = Object.fromEntries(url.searchParams);
  if (url.pathname === '/record') {
    const held = [];
    for (const queue of queues) held.push(await worker.redis.sendCommand(['LLEN', keys.processing(queue, worker.workerId)]));
    await worker.redis.sendCommand(['RPUSH', q.list, `${q.tag} ${held.join('/')}`]);
  } else if (url.pathname === '/hold') {
    process.stderr.write('hold started\n');
    await new Promise((resolve) => setTimeout(resolve, Number(q.ms)));
  }
  return [200, { 'Content-Type': 'text/plain' }, 'done'];
});
worker.run().then(() => process.exit(0), (error) => { console.error(error.message); process.exit(1); });
"""


def apart(cluster, name):
    """``name(i)`` for the first i whose two queues (a tuple) are served by different masters."""
    for i in range(100):
        a, b = name(i)
        if cluster.master_of(a).port != cluster.master_of(b).port:
            return name(i)
    raise AssertionError("no two queue names on different masters")


def cluster_worker(node, started, tmp_path, url, queues, name, option=None, env=None):
    script = tmp_path / "cluster-app.js"
    script.write_text(CLUSTER_APP)
    environment = dict(os.environ, TEMPEST_REDIS_URL=url, TEMPEST_NODE_CLIENT=CLIENT, **(env or {}))
    with open(tmp_path / f"{name}.log", "ab") as log:
        proc = subprocess.Popen([node, str(script), queues, *([option] if option else [])], env=environment,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    started.append(proc)
    return proc


def test_cluster_queues_in_several_slots_and_a_killed_workers_job_on_its_master(node, started, shared_cluster,
                                                                                 tmp_path):
    client = shared_cluster.client()
    tag = uuid.uuid4().hex[:6]
    app = client_cases.App(lambda queues, name, option=None, env=None: cluster_worker(
        node, started, tmp_path, shared_cluster.url, queues, name, option, env), tmp_path)
    for mode in ("reliable", "plain"):  # one worker on two queues of two masters: in order, low lists last
        a, _ = apart(shared_cluster, lambda i: (f"node-cl{tag}{i}-{mode}-a", f"node-cl{tag}{i}-{mode}-b"))
        client_cases.low_jobs_after_the_queues(client, app, a[:-len(f"-{mode}-a")], mode)
    assert "CROSSSLOT" not in app.log("prio")
    kill_groups(started)

    # reliable delivery: the job of a killed worker stays in its processing list, on its queue's master
    a, b = apart(shared_cluster, lambda i: (f"node-cl{tag}-kill{i}-a", f"node-cl{tag}-kill{i}-b"))
    worker = app.start(f"{a},{b}", "killed", None, {"TEST_HEARTBEAT": "1"})
    worker_id = None
    try:
        wait_until(lambda: registered(client, b), 15, message="the worker registered")
        [entry] = registered(client, b)
        worker_id = entry.decode().split(" ", 1)[1]
        job = hand_job("url", [{"method": "GET", "url": "/hold?ms=60000", "headers": {}}])
        client.rpush(b, job)
        wait_until(lambda: "hold started" in log_of(tmp_path, "killed"), 10, message="the job in hand")
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
        processing = "tempest:processing:{" + b + "}:" + worker_id
        master = shared_cluster.master_of(b)
        assert shared_cluster.master_of(processing).port == master.port != shared_cluster.master_of(a).port
        assert master.client().lrange(processing, 0, -1) == [job.encode()]  # read on that node itself
        assert not client.exists(b)
        wait_until(lambda: not client.exists(f"tempest:alive:{worker_id}"), 5, message="the heartbeat expired")
    finally:
        if worker_id is not None:  # what tempestd would have given back
            client.delete(f"tempest:processing:{{{b}}}:{worker_id}")
            client.srem("tempest:workers", f"{a} {worker_id}", f"{b} {worker_id}")


def test_cluster_session_regenerate_publish_and_the_password(node, started, shared_cluster, tmp_path):
    client = shared_cluster.client()
    tag = uuid.uuid4().hex[:6]
    queue, user, secret = f"node-cl{tag}", f"node-cl{tag}", f"cluster-secret-{tag}"
    plain, durable = f"node-cl{tag}.plain", f"nodecldur{tag}.news"
    for master in shared_cluster.masters:  # a user of its own: the session's cluster keeps its default one
        master.client().execute_command("ACL", "SETUSER", user, "on", f">{secret}", "~*", "&*", "+@all")
    client.set("tempest:pubsub:durable", json.dumps([[f"nodecldur{tag}.*", 10]]))
    url = shared_cluster.url.replace("redis+cluster://", f"redis+cluster://{user}:{secret}@")
    subscriber = shared_cluster.masters[0].client().pubsub()  # any node hears every PUBLISH
    worker = start_node(node, started, ["app", queue], url, tmp_path, "clapp")
    try:
        subscriber.subscribe(plain, durable)
        # a session regenerated: copied to the new id, whose slot is another, and the old one deleted
        # (and its grants, the bytes as they are)
        sid = "S" * 11 + tag + "s" * 5
        client.hset(f"session:{sid}", mapping={"user": '["bob"]', "n": '["2"]'})
        client.sadd(f"tempest:grants:{sid}", "user.42.*", b"team.\xff7")
        env = {"method": "GET", "url": "/session/regenerate", "headers": {}, "session": {"id": sid, "ttl": 600}}
        status, headers, body = client_cases.answer_of(client, queue, env)
        new = headers["X-Tempest-Session"]
        assert (status, body) == (200, f"{sid} -> {new}") and re.fullmatch(r"[A-Za-z0-9_-]{22}", new)
        assert client.hgetall(f"session:{new}") == {b"user": b'["bob"]', b"n": b'["2"]'}
        assert 0 < client.ttl(f"session:{new}") <= 600 and not client.exists(f"session:{sid}")
        assert client.smembers(f"tempest:grants:{new}") == {b"user.42.*", b"team.\xff7"}
        assert 0 < client.ttl(f"tempest:grants:{new}") <= 600 and not client.exists(f"tempest:grants:{sid}")
        # a grant and a logout on the cluster: one DEL per key (two slots)
        grants_worker(node, started, tmp_path, url, queue + "-grants", "clgrants")
        status, _, body = grants_job(client, queue + "-grants", new, "/grant?p=news.*")
        assert status == 200 and client.smembers(f"tempest:grants:{new}") == {b"news.*", b"user.42.*", b"team.\xff7"}
        assert grants_job(client, queue + "-grants", new, "/logout")[0] == 200
        assert not client.exists(f"session:{new}") and not client.exists(f"tempest:grants:{new}")
        # publish: plain (to any node), then durable (the script on its stream's master)
        for channel, data in ((plain, "hello"), (durable, "kept")):
            env = {"method": "GET", "url": f"/publish?channel={channel}&data={data}", "headers": {}}
            assert client_cases.answer_of(client, queue, env)[0] == 200
        stream = f"tempest:stream:{{{durable}}}"
        [(stream_id, fields)] = shared_cluster.master_of(stream).client().xrange(stream)
        assert json.loads(fields[b"m"]) == ["kept"]
        messages = []
        wait_until(lambda: messages.extend(m for m in [subscriber.get_message(timeout=0.1)] if m and m["type"] == "message")
                   or len(messages) == 2, 10, message="both messages heard")
        assert [(m["channel"].decode(), json.loads(m["data"])) for m in messages] == [
            (plain, ["hello"]), (durable, ["$durable", stream_id.decode(), '["kept"]'])]
        # the password: *** in the log, never in a command line
        log = log_of(tmp_path, "clapp")
        assert f"redis+cluster://{user}:***@127.0.0.1:" in log and secret not in log, log
        assert not [c for c in client_cases._session_commands(worker.pid) if secret in c]
        stop_group(worker)
        assert worker.returncode == 0 and not registered(client, queue)
    finally:
        subscriber.close()
        client.delete("tempest:pubsub:durable", f"tempest:stream:{{{durable}}}")
        for master in shared_cluster.masters:
            master.client().execute_command("ACL", "DELUSER", user)
