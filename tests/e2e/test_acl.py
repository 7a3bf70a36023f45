"""Redis ACL users per role (docs/security.md): tempestd, the workers and `tempest publish` each
run as a Redis user that may do what its role needs and nothing more.

The rules below are the ones docs/security.md gives (copied from here). Each test starts its
own redis-server, creates the users through the default user, runs tempestd as ``front`` and
library workers as ``worker``, and checks that everything the role needs works with no ACL
denial at all (Redis' ``ACL LOG`` stays empty: a command or key tempest needs and the rules
forget shows up there, even one a client swallows, such as redis-py's CLIENT SETINFO), then
that what the role must not do is refused (NOPERM). No process logs a password.

Queues of this deployment: ``aclq`` (HTTP requests, reliable workers), ``aclparts`` (the parts
of a fan-out), ``aclws`` (WebSocket messages); durable channels ``news.*``.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import redis

from sseclient import SSE, WS
from support import RedisServer, Tempestd, http, in_thread, kill_groups, start_worker, wait_until

from tempest import keys

FRONT_PASSWORD = "front-Secret-7c1e"
WORKER_PASSWORD = "worker-Secret-93ab"
PUBLISHER_PASSWORD = "publisher-Secret-5d20"

# What every client sends on connect: redis-py HELLO 3 AUTH <user> <password> (AUTH with RESP2),
# CLIENT SETINFO LIB-NAME / LIB-VER (errors ignored, but a denial lands in ACL LOG), SELECT for a
# database other than 0; tempest's lean connections AUTH and SELECT. AUTH and HELLO need no
# permission. On Redis 7.2 and later add "+client|setinfo" (SETINFO_7_2): Redis 7.0 refuses the
# name, which it does not know, and 6.2 accepts it but refuses the command all the same.
CONNECT = ["+ping", "+select"]
SETINFO_7_2 = ["+client|setinfo"]

FRONT = [
    "on", ">" + FRONT_PASSWORD, "resetkeys", "resetchannels", "-@all", *CONNECT,
    # jobs: RPUSH, or with [front] max_queue_length the bounded push script (EVALSHA, SCRIPT
    # LOAD on first use, LLEN and RPUSH inside); one key per queue: [front] queue, every
    # [route:] queue, [pubsub] ws_queue
    "+rpush", "+evalsha", "+script|load", "+llen", "~aclq", "~aclparts", "~aclws",
    # priorities (a high job LPUSHed, a low one on the queue's low list); a job nobody took by
    # its timeout, or whose client left, taken back (LREM); the push counts of tempest queues
    "+lpush", "+lrem", "~tempest:low:{aclq}", "+hincrby", "+expire", "~tempest:queue-stats:{*}",
    # pub/sub relay: any channel a browser asks for (narrow &* to your channels' patterns)
    "+subscribe", "+unsubscribe", "&*",
    # durable channels: the patterns for publishers, the history for Last-Event-ID
    "+set", "~tempest:pubsub:durable", "~tempest:pubsub:sharded", "+xrange", "+xrevrange", "~tempest:stream:{*}",
    # the answers of a fan-out's parts, added to their gatherer's stream
    "+xadd", "~tempest:gather:{*}",
    # reliable delivery: the dead workers' jobs given back (a Lua script: RPOP, LPUSH, RPUSH,
    # HINCRBY, HDEL, EXPIRE), a reaped worker's heartbeat deleted
    "+smembers", "+exists", "+srem", "+eval", "+rpop", "+lpush", "+hincrby", "+hdel", "+expire", "+del",
    "~tempest:workers", "~tempest:alive:*", "~tempest:processing:{*}:*", "~tempest:deliveries:{*}",
    "~tempest:dead:{*}",
    # sessions: each answer refreshes its session's TTL (EXPIRE, reply ignored); no command
    # that reads a hash is allowed, so the front cannot read them
    "~session:*",
    # private channels ([pubsub] private): a session's grants read (SMEMBERS) and their TTL
    # refreshed; EXISTS of the session (a logout); with [pubsub] user_field add +hget, which
    # reads that field of the session (docs/pubsub.md)
    "~tempest:grants:*",
    # the instance registry (tempest status --all): its entry with a TTL, the index of ids;
    # its connections named (CLIENT SETNAME: a refusal is harmless, but lands in ACL LOG);
    # INFO cluster at start, which refuses a Redis Cluster node
    "+zadd", "+zremrangebyscore", "+zrem", "~tempest:instance:*", "~tempest:instances", "+client|setname", "+info",
]

WORKER = [
    "on", ">" + WORKER_PASSWORD, "resetkeys", "resetchannels", "-@all", *CONNECT,
    # jobs: BLPOP, LPOP (prefetch), RPUSH (forward, the parts of a fan-out) on its queues
    "+blpop", "+lpop", "+rpush", "~aclq", "~aclparts",
    # priorities: the low lists of its queues (a high forward is an LPUSH)
    "+lpush", "~tempest:low:{aclq}", "~tempest:low:{aclparts}",
    # reliable delivery (the default): heartbeat, registration, processing lists (BLMOVE, and
    # LMOVE in scripts)
    "+set", "+sadd", "+srem", "+del", "+blmove", "+lmove", "+eval",
    "~tempest:workers", "~tempest:alive:*", "~tempest:processing:{aclq}:*", "~tempest:processing:{aclparts}:*",
    # fan-out and gather: the gatherer's stream
    "+xadd", "+xread", "+expire", "~tempest:gather:{*}",
    # sessions: HSET and EXPIRE in MULTI/EXEC, reads, RENAME (regenerate), DEL (clear); their
    # grants (SADD, SREM, SMEMBERS; renamed and deleted with the session)
    "+hget", "+hset", "+hdel", "+hexists", "+hgetall", "+rename", "+multi", "+exec", "~session:*",
    "+smembers", "~tempest:grants:*",
    # publishing: the durable patterns, PUBLISH, the durable script (XADD and PUBLISH inside)
    "+get", "~tempest:pubsub:durable", "~tempest:pubsub:sharded", "+publish", "+evalsha", "+script|load", "~tempest:stream:{news.*}",
    "&news.*",
]

# `tempest publish -c <a file whose [redis] url names this user>`; the [pubsub] durable patterns
# come from that file, so it reads no key
PUBLISHER = [
    "on", ">" + PUBLISHER_PASSWORD, "resetkeys", "resetchannels", "-@all", *CONNECT,
    "+publish", "+evalsha", "+script|load", "+xadd", "~tempest:stream:{news.*}", "&news.*",
]

# the test worker: reliable on aclq; /count and /login use the session, /publish/<channel>/<text>
# publishes, /gather fans out to aclparts, /crash dies holding its job when CRASH is set
WORKER_APP = textwrap.dedent("""
    import logging, os, sys
    from tempest import Worker

    logging.basicConfig(level=logging.INFO)

    queue = sys.argv[1]
    worker = Worker(queue, reliable=(queue == "aclq"), heartbeat=1.0)

    @worker.on("url")
    def handle(context, env):
        path = env["url"]
        if path == "/crash":
            if os.environ.get("CRASH"):
                os._exit(3)
            return [200, {}, "survived by " + str(os.getpid())]
        if path == "/count":
            context.session["count"] = context.session.get("count", 0) + 1
            return [200, {}, str(context.session["count"])]
        if path == "/login":
            context.session["user"] = "bob"
            context.session.regenerate()
            return [200, {}, "logged in"]
        if path == "/whoami":
            return [200, {}, context.session.get("user", "nobody")]
        if path.startswith("/publish/"):
            _, _, channel, text = path.split("/", 3)
            return [200, {}, str(worker.publish(channel, text))]
        if path == "/gather":
            return [200, {}, repr(context.gather([("aclparts", "part", [1]), ("aclparts", "part", [2])]))]
        return [200, {}, "hello " + path]

    @worker.on("part")
    def part(context, n):
        return n * 10

    worker.run()
""")


def version(client):
    return tuple(int(n) for n in client.info("server")["redis_version"].split(".")[:2])


def acl(client, name, rules):
    client.execute_command("ACL", "SETUSER", name, "reset", *rules, *(SETINFO_7_2 if version(client) >= (7, 2) else []))


def user_url(server, name, password):
    return f"redis://{name}:{password}@127.0.0.1:{server.port}/0"


def denials(client):
    """What Redis refused (ACL LOG), but for CLIENT SETINFO before Redis 7.2 (see CONNECT)."""
    old = version(client) < (7, 2)
    return [(e["username"], e["reason"], e["object"]) for e in client.acl_log()
            if not (old and e["reason"] == "command" and e["object"] == "client")]


@pytest.fixture
def stack(tmp_path):
    """Redis with the three users, tempestd as ``front``; start workers with ``stack.worker()``."""
    server = RedisServer(tmp_path / "redis").start()
    admin = server.client()
    acl(admin, "front", FRONT)
    acl(admin, "worker", WORKER)
    acl(admin, "publisher", PUBLISHER)
    admin.execute_command("ACL", "LOG", "RESET")
    daemon = Tempestd(tmp_path / "tempestd", user_url(server, "front", FRONT_PASSWORD),
                      front={"queue": "aclq", "session_cookie": "sid", "redeliver_interval": "0.3",
                             "session_secret": "acl-test-secret-0123456789abcdef",
                             "max_queue_length": "1000", "timeout": "15"},
                      pubsub={"durable": "news.*", "ws_queue": "aclws", "heartbeat": "0.5"})
    workers = []

    class Stack:
        pass

    stack = Stack()
    stack.server, stack.admin, stack.daemon, stack.dir = server, admin, daemon, tmp_path
    app = tmp_path / "acl_worker.py"
    app.write_text(WORKER_APP)

    def worker(queue="aclq", name=None, **env):
        proc = start_worker([str(app), queue], user_url(server, "worker", WORKER_PASSWORD), tmp_path,
                            name or f"worker{len(workers)}", extra_env=env)
        workers.append(proc)
        return proc

    stack.worker = worker
    try:
        daemon.start()
        yield stack
        assert FRONT_PASSWORD not in daemon.log(), "tempestd logged its Redis password"
    finally:
        kill_groups(workers)  # their registrations go with this stack's own Redis
        daemon.stop()
        server.stop()


def front_client(stack):
    return redis.Redis.from_url(user_url(stack.server, "front", FRONT_PASSWORD), socket_timeout=5)


def worker_client(stack):
    return redis.Redis.from_url(user_url(stack.server, "worker", WORKER_PASSWORD), socket_timeout=5)


def get(stack, path, cookie=None):
    status, headers, body = http("GET", stack.daemon.base + path, headers={"Cookie": f"sid={cookie}"} if cookie else {})
    assert status == 200, (status, body, denials(stack.admin))
    set_cookie = headers.get("set-cookie", "")
    return body.decode(), set_cookie.split(";")[0].partition("=")[2] or None  # <id>.<mac>


def test_a_request_is_answered_and_sessions_work(stack):
    stack.worker()
    assert get(stack, "/hi")[0] == "hello /hi"
    body, sid = get(stack, "/count")
    assert body == "1" and sid
    assert get(stack, "/count", sid) == ("2", None)
    key = keys.session(sid.split(".")[0])
    assert stack.admin.hgetall(key) == {b"count": b"[2]"}
    stack.admin.persist(key)  # as a 2012 worker leaves it: the front's EXPIRE sets the TTL again
    assert get(stack, "/count", sid) == ("3", None)
    wait_until(lambda: stack.admin.ttl(key) > 0, message="the session's TTL refreshed by the front")
    body, new = get(stack, "/login", sid)
    assert body == "logged in" and new and new != sid  # RENAMEd to the new id
    assert get(stack, "/whoami", new)[0] == "bob" and get(stack, "/whoami", sid)[0] == "nobody"
    assert denials(stack.admin) == []


def test_fan_out_and_gather(stack):
    stack.worker()
    stack.worker("aclparts")
    assert get(stack, "/gather")[0] == "[10, 20]"  # the front XADDs the parts' answers
    assert denials(stack.admin) == []


def test_sse_resume_websocket_and_publishing(stack):
    stack.worker()
    first, _ = get(stack, "/publish/news.acl/one")  # the worker's durable publish: EVALSHA, XADD, PUBLISH
    client = SSE(stack.daemon.port, "/sub/news.acl", headers={"Last-Event-ID": "0-0"})
    try:
        event = client.next_message()
        assert (event["data"], event["id"]) == ("one", first)  # replayed by the front (XRANGE)
        second, _ = get(stack, "/publish/news.acl/two")
        event = client.next_message()
        assert (event["data"], event["id"]) == ("two", second)  # live, through the front's SUBSCRIBE
        ini = os.path.join(stack.dir, "publisher.ini")
        with open(ini, "w") as handle:
            handle.write(f"[redis]\nurl = {user_url(stack.server, 'publisher', PUBLISHER_PASSWORD)}\n"
                         "[pubsub]\ndurable = news.*\n")
        done = subprocess.run([sys.executable, "-c", "import sys; from tempest.cli import tempest_main; "
                               "sys.exit(tempest_main())", "publish", "-c", ini, "news.acl", "three"],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        event = client.next_message()
        assert event["data"] == "three" and done.stdout.strip() == f"id {event['id']}"
        assert PUBLISHER_PASSWORD not in done.stdout + done.stderr
    finally:
        client.close()
    socket = WS(stack.daemon.port, "/ws/room")
    try:
        assert socket.accepted
        socket.send("from the browser")  # pushed by the front to aclws
        raw = wait_until(lambda: stack.admin.lpop("aclws"), message="the ws job")
        assert json.loads(raw)[1][0]["data"] == "from the browser"
    finally:
        socket.close()
    assert denials(stack.admin) == []


def test_redelivery_runs_as_the_front_user(stack):
    doomed = stack.worker(name="doomed", CRASH="1")
    wait_until(lambda: stack.admin.scard(keys.WORKERS) == 1, message="the reliable worker registered")
    thread, result = in_thread(http, "GET", stack.daemon.base + "/crash")
    assert doomed.wait(15) == 3  # died holding the job, in its processing list
    info = stack.daemon.answer_client().info
    wait_until(lambda: info()["jobs_redelivered"] == 1, timeout=10, message="the job given back")
    survivor = stack.worker(name="survivor")
    thread.join(20)
    assert result["value"][0] == 200 and result["value"][2] == f"survived by {survivor.pid}".encode()
    assert denials(stack.admin) == []


def _refused(call):
    with pytest.raises(redis.exceptions.NoPermissionError):
        call()


def test_what_the_front_user_cannot_do(stack):
    front = front_client(stack)
    stack.admin.hset(keys.session("A" * 22), "user", '["bob"]')
    _refused(lambda: front.blpop(["aclq"], timeout=0.1))  # take jobs
    _refused(lambda: front.hgetall(keys.session("A" * 22)))  # read sessions
    _refused(lambda: front.hget(keys.session("A" * 22), "user"))
    with pytest.raises(redis.ResponseError, match="permission|can't run"):  # not from a script either
        front.eval("return redis.call('HGETALL', KEYS[1])", 1, keys.session("A" * 22))
    _refused(lambda: front.publish("news.acl", '["forged"]'))
    _refused(lambda: front.rpush("other-queue", "job"))  # only its own queues
    _refused(lambda: front.flushall())
    _refused(lambda: front.keys("*"))
    _refused(lambda: front.config_get("*"))


def test_what_the_worker_user_cannot_do(stack):
    worker = worker_client(stack)
    _refused(lambda: worker.publish("other", '["forged"]'))  # only its channels
    _refused(lambda: worker.flushall())
    _refused(lambda: worker.keys("*"))
    _refused(lambda: worker.hgetall(keys.deliveries("aclq")))  # tempestd's bookkeeping
    _refused(lambda: worker.rpush(keys.dead("aclq"), "job"))
    _refused(lambda: worker.blpop(["aclws"], timeout=0.1))  # a queue it does not serve
    _refused(lambda: worker.set("app:config", "x"))  # keys outside its patterns
    _refused(lambda: worker.execute_command("SUBSCRIBE", "news.acl"))  # listening is the front's
    _refused(lambda: worker.config_set("requirepass", "x"))
    _refused(lambda: worker.execute_command("ACL", "SETUSER", "worker", "+@all"))


def test_what_the_publisher_user_cannot_do(stack):
    publisher = redis.Redis.from_url(user_url(stack.server, "publisher", PUBLISHER_PASSWORD), socket_timeout=5)
    assert publisher.publish("news.ok", '["x"]') == 0
    _refused(lambda: publisher.publish("room", '["x"]'))
    _refused(lambda: publisher.rpush("aclq", "job"))
    _refused(lambda: publisher.get(keys.DURABLE_CONFIG))


def test_a_worker_does_not_log_its_password(stack):
    proc = stack.worker(name="chatty")
    log = os.path.join(stack.dir, "chatty.log")
    wait_until(lambda: os.path.exists(log) and "worker on" in open(log).read(), message="the worker's start line")
    proc.send_signal(signal.SIGTERM)
    proc.wait(15)
    assert WORKER_PASSWORD not in open(log).read()


# on a Redis Cluster (docs/security.md): the lean connections read the map of slots and follow
# ASK; redis-py's cluster client reads the command table and the nodes when it starts
CLUSTER_EXTRA = ["+cluster|slots", "+asking", "+command", "+cluster|shards", "+cluster|nodes"]


def test_the_same_users_on_a_redis_cluster(shared_cluster, tmp_path):
    """The front and worker users, with CLUSTER_EXTRA, on every master of a real cluster:
    tempestd (redis+cluster://front:...) and a reliable worker (redis+cluster://worker:...)
    serve a request and a session regenerated (copied across slots on a cluster) with no ACL
    denial on any node. The users are removed afterwards (the cluster is the session's)."""
    nodes = [node.client() for node in shared_cluster.masters]
    for client in nodes:
        acl(client, "front", FRONT + CLUSTER_EXTRA)
        acl(client, "worker", WORKER + CLUSTER_EXTRA)
        client.execute_command("ACL", "LOG", "RESET")
    seeds = ",".join(f"127.0.0.1:{node.port}" for node in shared_cluster.masters)
    app = tmp_path / "acl_worker.py"
    app.write_text(WORKER_APP)
    daemon = Tempestd(tmp_path / "tempestd", f"redis+cluster://front:{FRONT_PASSWORD}@{seeds}",
                      front={"queue": "aclq", "session_cookie": "sid", "session_secret": "acl-test-secret-0123456789abcdef",
                             "timeout": "15"}, pubsub={"durable": "news.*"})
    worker = None
    try:
        daemon.start()
        worker = start_worker([str(app), "aclq"], f"redis+cluster://worker:{WORKER_PASSWORD}@{seeds}", tmp_path, "w")

        class Stack:
            pass

        stack = Stack()
        stack.daemon = daemon
        assert get(stack, "/hi")[0] == "hello /hi"
        body, sid = get(stack, "/count")
        assert body == "1" and sid
        body, new = get(stack, "/login", sid)
        assert body == "logged in" and new and new != sid
        assert get(stack, "/whoami", new)[0] == "bob"
        refused = [(e["username"], e["reason"], e["object"]) for client in nodes for e in client.acl_log()
                   if e["username"] in ("front", "worker")]
        assert refused == []
        assert FRONT_PASSWORD not in daemon.log() and WORKER_PASSWORD not in daemon.log()
    finally:
        if worker is not None:
            kill_groups([worker])
        daemon.stop()
        for client in nodes:
            client.execute_command("ACL", "DELUSER", "front", "worker")
