"""The PHP worker client (clients/php) against a real tempestd and a real redis-server: the hello
world under tempestd, streams, sessions, publish, routing with Python workers, failures,
reliable delivery (the default), low-priority jobs, deadlines, SIGTERM, a Redis restart, and request
bodies spooled to a file or to Redis read with $context->body() and bodyStream()."""

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

from sseclient import SSE
from support import (REPO, RedisServer, hand_job, http, in_thread, kill_groups, missing_runtime, raw_exchange,
                     registered, session_cookie, start_worker, wait_until)

pytest.register_assert_rewrite("client_cases")
import client_cases  # noqa: E402

HELLO = os.path.join(REPO, "clients", "php", "examples", "hello.php")
APP = os.path.join(REPO, "tests", "clients", "php", "app.php")
ROUTING = os.path.join(REPO, "tests", "workers", "routing.py")
TEXT = "text/plain"


@pytest.fixture(scope="module")
def php():
    """The php binary, with the redis and pcntl extensions (checked once: it starts a php)."""
    found = shutil.which("php")
    if not found:
        missing_runtime("php (Debian's php-cli) is not installed")
    check = subprocess.run([found, "-r", 'exit(class_exists("Redis") && function_exists("pcntl_signal") ? 0 : 1);'],
                           capture_output=True, timeout=30)
    if check.returncode != 0:
        missing_runtime("php's redis or pcntl extension is missing (Debian's php-redis, php-cli)")
    return found



@pytest.fixture
def workers(php, tmp_path):
    """Start PHP test workers (tests/clients/php/app.php) in their own sessions; stopped at teardown."""
    started = []

    def start(queues, redis_url, *args, name="php", reliable=None, env=None):
        """reliable: True (a 1 s heartbeat), False ('reliable' => false), None (the default)."""
        env = {**os.environ, "TEMPEST_REDIS_URL": redis_url, **(env or {})}
        if reliable is not None:
            env["TEMPEST_TEST_RELIABLE"] = "1" if reliable else "0"
        with open(tmp_path / f"{name}.log", "ab") as log:
            proc = subprocess.Popen([php, APP, queues, *args], env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        proc.log_path = tmp_path / f"{name}.log"
        started.append(proc)
        return proc

    yield start
    kill_groups(started)  # what a test stops gracefully (reliable workers, SIGTERM) it stops itself


def terminate(proc):
    """A clean stop of a PHP worker: SIGTERM to the worker alone (its handler stops its heartbeat
    process); its exit status."""
    proc.send_signal(signal.SIGTERM)
    return proc.wait(10)


@pytest.fixture
def app(workers, redis_server, tmp_path):
    """The PHP test app for client_cases: its reliable option is TEMPEST_TEST_RELIABLE=0
    (new Worker($q, ['reliable' => false])) or =1."""
    def start(queues, name, option=None, env=None):
        reliable = {None: None, "plain": False, "reliable": True}[option]
        return workers(queues, redis_server.url, name=name, reliable=reliable, env=env)

    return client_cases.App(start, tmp_path, terminate)


def read_until(conn, end):
    """Read from a socket until ``end`` was received (or the peer closed): what came."""
    data = b""
    while end not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def log_of(proc):
    return proc.log_path.read_text(errors="replace")


# 1. the hello world, run by tempestd from a [worker:] section


def test_hello_world_under_tempestd(php, tempestd_factory):
    daemon = tempestd_factory(front={"queue": "php-hello", "timeout": "5"},
                              **{"worker:hello": {"command": f"{php} {HELLO} php-hello", "numprocs": "2"}})
    wait_until(lambda: [s["state"] for s in daemon.status().values()] == ["RUNNING", "RUNNING"], timeout=15,
               message="two PHP workers running")
    status, headers, body = http("GET", daemon.base + "/")
    assert (status, headers["content-type"], body) == (200, TEXT, b"Hello from php #1")
    bodies = [body] + [http("GET", daemon.base + f"/{i}")[2] for i in range(6)]
    assert all(re.fullmatch(rb"Hello from php #[1-9][0-9]*", b) for b in bodies)
    counts = [int(b.rpartition(b"#")[2]) for b in bodies]
    seen = [counts.count(n) for n in range(1, max(counts) + 1)]
    # two counters, each from 1: every number up to the highest seen once or twice, never more
    assert all(1 <= c <= 2 for c in seen) and seen == sorted(seen, reverse=True)
    pids = {s["pid"] for s in daemon.status().values()}
    assert len(pids) == 2


def test_hello_world_authenticates_to_the_answer_endpoint(php, tempestd_factory):
    daemon = tempestd_factory(front={"queue": "php-auth", "timeout": "5", "answer_password": "s3cr:et"},
                              **{"worker:hello": {"command": f"{php} {HELLO} php-auth"}})
    status, _, body = http("GET", daemon.base + "/")  # TEMPEST_ANSWER_PASSWORD comes from tempestd
    assert (status, body) == (200, b"Hello from php #1")


# 2. streamed answers


def test_a_streamed_answer_and_an_aborted_one(tempestd_factory, redis_server, redis_client, workers):
    daemon = tempestd_factory(front={"queue": "php-stream", "timeout": "5"})
    workers("php-stream", redis_server.url)
    status, headers, body = http("GET", daemon.base + "/stream")
    assert (status, headers["transfer-encoding"], body) == (200, "chunked", b"one\ntwo\nthree\n")
    # each chunk arrives as it is written: "one" before the worker writes "two"
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=8) as conn:
        conn.sendall(b"GET /gated HTTP/1.1\r\nHost: x\r\n\r\n")
        received = wait_until(lambda: read_until(conn, b"one\n"), timeout=8, message="the first chunk")
        assert b"two" not in received
        redis_client.rpush("gate:/gated", 1)
        rest = read_until(conn, b"0\r\n\r\n")
        assert b"two\n" in rest
    started = time.monotonic()
    raw = raw_exchange(daemon.port, b"GET /abort HTTP/1.1\r\nHost: x\r\n\r\n", timeout=8)
    assert time.monotonic() - started < 4  # cut by the abort, not by the route's timeout
    assert raw.startswith(b"HTTP/1.1 200") and b"partial\n" in raw
    assert not raw.endswith(b"0\r\n\r\n")  # no last chunk: the client can tell the body is incomplete
    assert http("GET", daemon.base + "/after")[0] == 200  # the worker lives on


# 3. sessions


def test_sessions_written_read_back_and_regenerated(tempestd_factory, redis_server, redis_client, workers):
    daemon = tempestd_factory(front={"queue": "php-session", "timeout": "5", "session_cookie": "sid", "session_secret": "client-tests-secret-0123456789"})
    workers("php-session", redis_server.url)
    status, headers, body = http("GET", daemon.base + "/session/set?v=bob")
    sid = body.decode()
    cookie_id, value = session_cookie(headers)
    assert status == 200 and cookie_id == sid
    key = f"session:{sid}"
    assert redis_client.hgetall(key) == {b"user": b'["bob"]', b"n": b"[42]", b"list": b'[[1,"two"]]'}
    assert 0 < redis_client.ttl(key) <= 14 * 24 * 3600
    status, _, body = http("GET", daemon.base + "/session/get", headers={"Cookie": f"sid={value}"})
    assert status == 200 and json.loads(body) == {"user": "bob", "n": 42, "list": [1, "two"]}
    status, headers, body = http("GET", daemon.base + "/session/regenerate", headers={"Cookie": f"sid={value}"})
    old, new = body.decode().split()
    assert status == 200 and old == sid and new != sid and len(new) == 22
    new_id, new_value = session_cookie(headers)
    assert new_id == new and "x-tempest-session" not in headers
    assert not redis_client.exists(key)
    assert redis_client.hgetall(f"session:{new}") == {b"user": b'["bob"]', b"n": b"[42]", b"list": b'[[1,"two"]]',
                                                       b"after": b'["login"]'}
    _, _, body = http("GET", daemon.base + "/session/get", headers={"Cookie": f"sid={new_value}"})
    assert json.loads(body)["after"] == "login"
    redis_client.delete(f"session:{new}")


# 4. publish


def test_publish_reaches_sse_and_redis_subscribers(tempestd_factory, redis_server, redis_client, workers):
    daemon = tempestd_factory(front={"queue": "php-pub", "timeout": "5"},
                              pubsub={"durable": "phpnews.*", "history": "10"})
    workers("php-pub", redis_server.url)
    pubsub = redis_client.pubsub()
    pubsub.subscribe("php-plain")
    wait_until(lambda: pubsub.get_message(timeout=0.1), message="subscribed")
    status, _, body = http("GET", daemon.base + "/publish?channel=php-plain&data=hi")
    assert (status, body) == (200, b"1")
    message = wait_until(lambda: pubsub.get_message(timeout=0.1), message="the published message")
    assert message["data"] == b'["hi"]'
    pubsub.close()
    # a durable channel: XADD + PUBLISH, the SSE event carries the stream id
    sse = SSE(daemon.port, "/sub/phpnews.a")
    try:
        assert sse.next()["comment"] == "ok"
        wait_until(lambda: daemon.info()["subscribers"] == 1, message="the SSE client subscribed")
        status, _, body = http("GET", daemon.base + "/publish?channel=phpnews.a&data=hello&event=update")
        stream_id = body.decode()
        assert status == 200 and "-" in stream_id
        assert sse.next_message() == {"event": "update", "id": stream_id, "data": "hello"}
        assert redis_client.xlen("tempest:stream:{phpnews.a}") == 1
    finally:
        sse.close()
        redis_client.delete("tempest:stream:{phpnews.a}")


# 5. routing: forward to and from Python workers, gather


def test_forward_to_and_from_python_workers_and_gather(tempestd_factory, redis_server, workers, tmp_path):
    daemon = tempestd_factory(front={"queue": "php-route", "timeout": "5"},
                              **{"route:/py/": {"queue": "php-route-py"}})
    python = [
        start_worker([ROUTING, "greeter", "php-route-pygreet"], redis_server.url, tmp_path, "pygreeter"),
        start_worker([ROUTING, "front", "php-route-py", "php-route-phpgreet"], redis_server.url, tmp_path, "pyfront"),
        start_worker([ROUTING, "squarer", "php-route-pysq"], redis_server.url, tmp_path, "pysq"),
    ]
    try:
        front = workers("php-route", redis_server.url, "php-route-pygreet", name="front")
        workers("php-route-phpgreet,php-route-phpsq", redis_server.url, name="parts")
        # PHP forwards a url job to the Python greeter, which answers the client
        status, _, body = http("GET", daemon.base + "/forward")
        assert (status, body) == (200, f"greeted /forward from {front.pid}".encode())
        # a Python worker forwards to a PHP worker (its answer under `greet`, declared with ACTIONS)
        status, _, body = http("GET", daemon.base + "/py/hello")
        assert status == 200 and body.decode().startswith("php greeted /py/hello from ")
        # PHP gathers a Python part and a PHP part; then with a part nobody answers
        status, headers, body = http("GET", daemon.base + "/gather?q=php-route-pysq,php-route-phpsq")
        assert (status, body, headers["x-missing"]) == (200, b"5", "")  # 1 + 4
        status, headers, body = http("GET", daemon.base + "/gather?q=php-route-pysq,silent&timeout=0.5", timeout=4)
        assert (status, body, headers["x-missing"]) == (200, b"1", "1")
        assert daemon.info()["answers_dropped"] == 0
    finally:
        kill_groups(python)
        import redis

        redis.Redis(port=redis_server.port).delete("silent")


# 6. a handler that raises


def test_a_failing_handler_answers_500_at_once_and_the_worker_lives_on(tempestd_factory, redis_server, workers):
    daemon = tempestd_factory(front={"queue": "php-fail", "timeout": "5"})
    worker = workers("php-fail", redis_server.url)
    started = time.monotonic()
    status, headers, body = http("GET", daemon.base + "/fail")
    assert (status, headers["content-type"], body) == (500, TEXT, b"500 Internal Server Error\n")
    assert time.monotonic() - started < 3
    assert http("GET", daemon.base + "/next")[2] == f"php {worker.pid} /next".encode()
    assert "asked to fail" in log_of(worker)
    # a malformed job is dropped, a job without handler gets 501 under url, a numeric job id is answered
    import redis

    client = redis.Redis(port=redis_server.port)
    client.rpush("php-fail", b"not json", hand_job("nope", [], f"127.0.0.1:{daemon.answer_port}", 12345))
    wait_until(lambda: "no handler for action 'nope' (job 12345)" in log_of(worker), message="the 501 logged")
    assert "dropped malformed job not json" in log_of(worker)
    assert http("GET", daemon.base + "/again")[0] == 200 and worker.poll() is None


# 7. reliable delivery


def test_reliable_the_job_of_a_killed_worker_is_answered_by_another(tempestd_factory, redis_server, redis_client,
                                                                    workers):
    daemon = tempestd_factory(front={"queue": "php-rel", "timeout": "20", "redeliver_interval": "0.5"})
    first = workers("php-rel", redis_server.url, name="first", reliable=True)
    members = lambda: {m.decode().split(" ", 1)[1].split(":")[1] for m in redis_client.smembers("tempest:workers")
                       if m.startswith(b"php-rel ")}
    wait_until(lambda: members() == {str(first.pid)}, timeout=10, message="the first worker registered")
    thread, result = in_thread(http, "GET", daemon.base + "/slow?ms=2500", timeout=20)
    wait_until(lambda: any(redis_client.llen(k) for k in redis_client.keys("tempest:processing:{php-rel}:*")),
               timeout=10, message="the job in the first worker's processing list")
    second = workers("php-rel", redis_server.url, name="second", reliable=True)
    wait_until(lambda: members() == {str(first.pid), str(second.pid)}, timeout=10, message="the second registered")
    os.kill(first.pid, signal.SIGKILL)  # the worker alone: its heartbeat process must notice and stop
    first.wait(10)
    wait_until(lambda: redis_client.hvals("tempest:deliveries:{php-rel}") == [b"1"], timeout=10,
               message="the job given back (once)")
    thread.join(20)
    status, _, body = result["value"]
    assert (status, body) == (200, f"slow done by {second.pid}".encode())
    wait_until(lambda: members() == {str(second.pid)}, timeout=5, message="the dead worker forgotten")
    # a clean stop gives back nothing, unregisters and deletes the heartbeat
    second.send_signal(signal.SIGTERM)
    assert second.wait(10) == 0
    assert members() == set() and not redis_client.keys("tempest:processing:{php-rel}:*")
    assert not [k for k in redis_client.keys("tempest:alive:*") if f":{second.pid}:".encode() in k]


def test_reliable_is_the_default_and_tempest_reliable_0_opts_out(app, redis_client):
    client_cases.reliable_is_the_default(redis_client, app, "php-default")


@pytest.mark.parametrize("mode", ["reliable", "plain"])
def test_low_priority_jobs_are_taken_once_the_queues_are_empty(app, redis_client, mode):
    client_cases.low_jobs_after_the_queues(redis_client, app, "php-prio", mode)


def test_a_job_past_its_deadline_is_dropped_without_running(app, redis_client):
    client_cases.late_jobs_are_dropped(redis_client, app, "php-deadline")


# 8. SIGTERM while a job runs


def test_sigterm_finishes_the_job_in_hand_then_exits_0(tempestd_factory, redis_server, redis_client, workers):
    daemon = tempestd_factory(front={"queue": "php-term", "timeout": "10"})
    worker = workers("php-term", redis_server.url)
    assert http("GET", daemon.base + "/warm")[0] == 200  # the worker is up
    thread, result = in_thread(http, "GET", daemon.base + "/slow?ms=1500")
    wait_until(lambda: daemon.info()["jobs_pushed"] == 2 and redis_client.llen("php-term") == 0,
               message="the slow job taken")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(10) == 0
    thread.join(10)
    assert result["value"][0] == 200 and result["value"][2] == f"slow done by {worker.pid}".encode()


# 9. Redis restarted under the worker


def test_the_worker_serves_again_after_a_redis_restart(tempestd_factory, workers, tmp_path):
    server = RedisServer(tmp_path / "redis9").start()
    try:
        daemon = tempestd_factory(redis_url=server.url, front={"queue": "php-restart", "timeout": "5"})
        worker = workers("php-restart", server.url)
        assert http("GET", daemon.base + "/before")[0] == 200
        server.stop()
        wait_until(lambda: "Redis unreachable" in log_of(worker), timeout=10, message="the worker saw Redis go")
        server = RedisServer(tmp_path / "redis9", port=server.port).start()
        wait_until(lambda: http("GET", daemon.base + "/after", timeout=6)[0] == 200, timeout=30, interval=0.2,
                   message="served again")
        assert worker.poll() is None
        assert http("GET", daemon.base + "/again")[2] == f"php {worker.pid} /again".encode()
    finally:
        server.stop()


# 10. spooled request bodies (issue 11, item 3)


@pytest.fixture
def spooling(app, tempestd_factory):
    """tempestd with a file-spooling and a Redis-spooling route, one PHP worker on them."""
    daemon = client_cases.spooling_front(tempestd_factory, "php")
    app.start(daemon.queue, "php")
    assert http("GET", daemon.base + "/warm-up")[0] == 200
    return daemon


@pytest.mark.parametrize("reader", ["generator", "stream", "hash"])
@pytest.mark.parametrize("route, form", client_cases.SPOOLED)
def test_a_spooled_upload_is_read_by_the_handler(spooling, route, form, reader):
    client_cases.a_spooled_upload_is_read(spooling, route, form, reader)


@pytest.mark.parametrize("reader", ["generator", "stream"])
def test_an_inline_body_is_read_the_same_way(spooling, reader):
    client_cases.inline_bodies_are_read(spooling, reader)


@pytest.mark.parametrize("reader", ["generator", "stream"])
def test_a_spooled_body_gone_or_not_as_its_token_says_is_body_gone(spooling, redis_client, tmp_path, reader):
    client_cases.a_body_gone_is_410(redis_client, spooling.queue, tmp_path, reader)


def test_the_redis_password_stays_out_of_logs_and_argv(app, tempestd_factory, tmp_path):
    client_cases.the_redis_password_stays_out_of_logs_and_argv(app, tempestd_factory, tmp_path, "php-secret")


# 11. Redis Cluster (docs/protocol.md, section 7): jobs pushed by hand (tempestd's own cluster
# mode is not used here), answers caught by client_cases.answer_of


@pytest.fixture
def cluster_app(workers, shared_cluster, tmp_path):
    """The PHP test app on the session's cluster, for client_cases."""
    def start(queues, name, option=None, env=None):
        reliable = {None: None, "plain": False, "reliable": True}[option]
        return workers(queues, shared_cluster.url, name=name, reliable=reliable, env=env)

    return client_cases.App(start, tmp_path, terminate)


def in_different_slots(cluster, names):
    """A tag such that the names made by ``names(tag)`` have each their own master."""
    for _ in range(100):
        tag = os.urandom(3).hex()
        if len({cluster.master_of(name).port for name in names(tag)}) == len(names(tag)):
            return tag
    raise AssertionError("no names with a master each")


@pytest.mark.parametrize("mode", ["reliable", "plain"])
def test_on_a_cluster_one_worker_takes_from_queues_in_different_slots(shared_cluster, cluster_app, mode):
    """Two queues on two masters: a plain worker cannot BLPOP them together (CROSSSLOT), it takes
    from each in turn; both modes take the queues in order, then their low lists."""
    client = shared_cluster.client()
    tag = in_different_slots(shared_cluster, lambda tag: [f"phpcl{tag}-{mode}-a", f"phpcl{tag}-{mode}-b"])
    client_cases.low_jobs_after_the_queues(client, cluster_app, f"phpcl{tag}", mode)
    assert "Redis refused" not in cluster_app.log("prio") and "unreachable" not in cluster_app.log("prio")


def test_on_a_cluster_reliable_delivery_sessions_publish_and_bodies(shared_cluster, cluster_app):
    """One reliable worker on two queues of two masters: a session regenerated (its hash and
    grants copied to the new id's slots, then written), a durable publish (routed by its
    stream's key, heard on another node), a body spooled to Redis, and, killed mid-job, its job
    left in its processing list on the queue's master."""
    client = shared_cluster.client()
    tag = in_different_slots(shared_cluster, lambda tag: [f"phpcl{tag}-a", f"phpcl{tag}-b",
                                                          f"tempest:stream:{{phpcl{tag}.news}}"])
    a, b, channel = f"phpcl{tag}-a", f"phpcl{tag}-b", f"phpcl{tag}.news"
    worker = cluster_app.start(f"{a},{b}", "reliable", "reliable")  # a 1 s heartbeat
    wait_until(lambda: len(registered(client, a)) == len(registered(client, b)) == 1, 15, message="registered")
    worker_id = registered(client, a)[0].decode().split(" ", 1)[1]
    old, new = ("P" * 16 + tag)[:22], None
    client.hset(f"session:{old}", "user", json.dumps(["alice"]))
    client.sadd(f"tempest:grants:{old}", "user.alice.*")
    client.set("tempest:pubsub:durable", json.dumps([[f"phpcl{tag}.*", 10]]))
    listener = shared_cluster.nodes[-1].client().pubsub()  # any node hears every PUBLISH
    body_key = f"tempest:body:{{phpcl{tag}}}"
    processing = f"tempest:processing:{{{b}}}:{worker_id}"
    try:
        status, _, answer = client_cases.answer_of(client, a, {"method": "GET", "url": "/session/regenerate",
                                                              "headers": {}, "session": {"id": old, "ttl": 600}})
        assert status == 200 and answer.split()[0] == old
        new = answer.split()[1]
        assert client.hgetall(f"session:{new}") == {b"user": b'["alice"]', b"after": b'["login"]'}
        assert 0 < client.ttl(f"session:{new}") <= 600
        assert client.smembers(f"tempest:grants:{new}") == {b"user.alice.*"}
        assert not client.exists(f"session:{old}") and not client.exists(f"tempest:grants:{old}")

        listener.subscribe(channel)
        wait_until(lambda: listener.get_message(timeout=0.1), message="subscribed")
        status, _, stream_id = client_cases.answer_of(client, b, {"method": "GET", "headers": {},
                                                                 "url": f"/publish?channel={channel}&data=kept"})
        assert status == 200 and re.fullmatch(r"\d+-\d+", stream_id)
        [(entry_id, fields)] = client.xrange(f"tempest:stream:{{{channel}}}")
        assert (entry_id.decode(), json.loads(fields[b"m"])) == (stream_id, ["kept"])
        heard = wait_until(lambda: listener.get_message(timeout=0.1), message="the durable message heard")
        assert json.loads(heard["data"]) == ["$durable", stream_id, '["kept"]']

        data = os.urandom(client_cases.CHUNK + 1000)
        client.rpush(body_key, data[:client_cases.CHUNK], data[client_cases.CHUNK:])
        token = {"key": body_key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "chunks": 2}
        status, _, answer = client_cases.answer_of(client, b, {"method": "POST", "url": "/redis/digest",
                                                              "headers": {}, "body_key": token})
        assert (status, json.loads(answer)) == (200, client_cases.digest_of(data, "body_key"))

        client.rpush(b, hand_job("url", [{"method": "GET", "url": "/slow?ms=30000", "headers": {}}], job_id="slow"))
        master = shared_cluster.master_of(b).client()  # a plain client of that node: no redirection
        wait_until(lambda: master.llen(processing) == 1, 10, message="the slow job in the processing list")
        assert shared_cluster.master_of(a).port != shared_cluster.master_of(b).port
        os.killpg(worker.pid, signal.SIGKILL)  # the worker and its heartbeat process
        worker.wait(10)
        wait_until(lambda: not client.exists(f"tempest:alive:{worker_id}"), 5, message="the heartbeat expired")
        assert json.loads(master.lindex(processing, 0))[3] == "slow"  # still there, for tempestd to give back
    finally:
        listener.close()
        client.delete(f"session:{old}", f"tempest:grants:{old}", f"session:{new}", f"tempest:grants:{new}",
                      "tempest:pubsub:durable", body_key, f"tempest:stream:{{{channel}}}", processing,
                      f"tempest:processing:{{{a}}}:{worker_id}")
        client.srem("tempest:workers", f"{a} {worker_id}", f"{b} {worker_id}")
