"""tempestd and the Python worker library on a real Redis Cluster (redis+cluster://, three
masters): requests on queues whose slots live on different masters, a plain worker on queues
in several slots, a job forwarded and a fan-out gathered, sessions (a regenerated id copied
across slots), a body spooled to Redis, a durable channel resumed from its stream, the CLI
(status --all, queues, publish); a reliable worker killed in the
middle of a job; a master killed under load, its replica taking over (counts printed); the lean
connection's MOVED and ASK while a slot migrates."""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from sseclient import SSE

from support import (REPO, LocalCluster, client_hello, http, in_thread, session_cookie, start_worker, stop_group,
                     wait_until)

from tempest import keys, slots

PY = sys.executable
ECHO = os.path.join(REPO, "tests", "workers", "echo.py")
RELIABLE = os.path.join(REPO, "tests", "workers", "reliable.py")
SESSIONS = os.path.join(REPO, "tests", "workers", "sessions_app.py")
SPOOL = os.path.join(REPO, "tests", "workers", "spool_worker.py")
ROUTING = os.path.join(REPO, "tests", "workers", "routing.py")
SECRET = "cluster-test-secret-0123456789abcdef"


def cli():
    found = os.path.join(os.path.dirname(PY), "tempest")
    return [found] if os.path.exists(found) else [PY, "-c", "import sys; from tempest.cli import tempest_main; sys.exit(tempest_main())"]


def spread(cluster, prefix, count=None):
    """Queue names starting with ``prefix``, one per master (each in another master's slots)."""
    count = count or len(cluster.masters)
    found, owners = [], set()
    for n in range(10000):
        name = f"{prefix}{n}"
        owner = cluster.master_of(name).port
        if owner not in owners:
            found.append(name)
            owners.add(owner)
        if len(found) == count:
            return found
    raise AssertionError("no names for every master")


def subscribed(cluster, channel):
    """Some node has a subscriber of ``channel`` (the relay subscribes on one node)."""
    return any(node.client().pubsub_numsub(channel)[0][1] for node in cluster.masters)


def test_requests_sessions_channels_and_the_cli_on_a_cluster(shared_cluster, tempestd_factory, tmp_path):
    cluster = shared_cluster
    first, second, third = spread(cluster, "clu-a")
    session_queue = spread(cluster, "clu-s", 1)[0]
    spool_queue = spread(cluster, "clu-u", 1)[0]
    (fan, greet), squares = spread(cluster, "clu-g", 2), spread(cluster, "clu-q", 2)  # on other masters
    routes = {"route:/upload/": {"queue": spool_queue, "spool": "redis", "max_body": "8M"},
              "route:/gather": {"queue": fan}, "route:/hello": {"queue": fan},"route:/b/": {"queue": second}, "route:/c/": {"queue": third}, "route:/count": {"queue": session_queue},
              "route:/login/": {"queue": session_queue}, "route:/whoami": {"queue": session_queue}}
    workers = {
        "worker:reliable": {"command": f"{PY} {ECHO} {first} {second}"},  # reliable, the default
        "worker:plain": {"command": f"{PY} {ECHO} {third} {second}", "environment": "TEMPEST_RELIABLE=0"},
        "worker:sessions": {"command": f"{PY} {SESSIONS} {session_queue}"},
        "worker:spool": {"command": f"{PY} {SPOOL} {spool_queue}"},
        "worker:fan": {"command": f"{PY} {ROUTING} front {fan} {greet}"},
        "worker:greet": {"command": f"{PY} {ROUTING} greeter {greet}"},
        **{f"worker:sq{i}": {"command": f"{PY} {ROUTING} squarer {queue}"} for i, queue in enumerate(squares)},
    }
    daemon = tempestd_factory(redis_url=cluster.url, front={"queue": first, "timeout": "10", "session_cookie": "sid",
                                                            "max_queue_length": "1000",  # EVALSHA, loaded on each master
                                                            "session_secret": SECRET},
                              pubsub={"durable": "clu.*", "history": "100"}, **routes, **workers)
    wait_until(lambda: daemon.log().count("worker on ") == 8, 20, message="eight workers")
    client = cluster.client()
    assert len({slots.key_slot(q) for q in (first, second, third)}) == 3
    for path in ("/one", "/b/two", "/c/three", "/b/four"):
        status, _, body = http("GET", daemon.base + path)
        assert status == 200, body
        assert json.loads(body)["env"]["url"] == path
    registry = {m.decode().split(" ")[0] for m in client.smembers(keys.WORKERS)}
    assert {first, second} <= registry  # the reliable worker registered on the master of tempest:workers

    # sessions: written, regenerated at login (copied to the new id's slots), read back
    status, headers, _ = http("GET", daemon.base + "/count")
    assert status == 200
    old_id, cookie = session_cookie(headers)
    status, headers, body = http("GET", daemon.base + "/login/ada", headers={"Cookie": f"sid={cookie}"})
    assert (status, body) == (200, b"logged in")
    new_id, renewed = session_cookie(headers)
    assert new_id != old_id and not client.exists(keys.session(old_id))
    assert client.ttl(keys.session(new_id)) > 0
    assert http("GET", daemon.base + "/whoami", headers={"Cookie": f"sid={renewed}"})[2] == b"ada"
    assert http("GET", daemon.base + "/count", headers={"Cookie": f"sid={renewed}"})[2] == b"2"  # kept

    # a job forwarded to another queue, and a fan-out gathered through tempest:gather:{<gid>}
    status, _, body = http("GET", daemon.base + "/hello")
    assert status == 200, body
    status, headers, body = http("GET", daemon.base + "/gather?q=" + ",".join(squares))
    assert (status, body, headers["x-missing"]) == (200, b"5", "")  # 1 + 4

    # a body spooled to Redis in chunks (tempest:body:{<token>}, its own slot), read by the worker
    upload = os.urandom(3 * 1024 * 1024 + 17)
    status, _, body = http("POST", daemon.base + "/upload/x", body=upload)
    assert status == 200, body
    seen = json.loads(body)
    assert (seen["sha256"], seen["size"]) == (hashlib.sha256(upload).hexdigest(), len(upload)), seen
    assert seen["body_key"]["key"].startswith("tempest:body:{") and seen["ttl"] > 0
    wait_until(lambda: not client.exists(seen["body_key"]["key"]), 5, message="the body deleted once answered")

    # a durable channel: live, then resumed from its stream on the stream's master
    stream = SSE(daemon.port, "/sub/clu.news")
    wait_until(lambda: subscribed(cluster, "clu.news"), 10, message="the relay's subscription")
    ids = []
    for text in ("one", "two"):
        done = subprocess.run(cli() + ["publish", "-c", daemon.ini, "clu.news", text], capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        ids.append(done.stdout.split()[-1])
        event = stream.next_message()
        assert (event["data"], event["id"]) == (text, ids[-1])
    stream.close()
    assert client.xlen(keys.stream("clu.news")) == 2
    resumed = SSE(daemon.port, "/sub/clu.news", headers={"Last-Event-ID": ids[0]})
    assert resumed.next_message()["data"] == "two"
    resumed.close()

    # the CLI sees the cluster
    def status_all():
        return subprocess.run(cli() + ["status", "--all", "-c", daemon.ini], capture_output=True, text=True, timeout=30)

    wait_until(lambda: status_all().returncode == 0, 20, interval=0.5, message="status --all: every program RUNNING")
    listed = status_all()
    instance_id = re.search(r" id (\S+) role ", daemon.log()).group(1)
    assert f"/{instance_id.rsplit(':', 1)[1]} " in listed.stdout and "reliable:0" in listed.stdout, listed.stdout
    queues = subprocess.run(cli() + ["queues", "-c", daemon.ini], capture_output=True, text=True, timeout=30)
    assert queues.returncode == 0, queues.stderr
    for queue in (first, second, third):
        assert queue in queues.stdout
    info = daemon.info()
    assert info["push_errors"] == 0


def test_a_reliable_worker_killed_mid_job_on_a_cluster(shared_cluster, tempestd_factory, tmp_path):
    cluster = shared_cluster
    queue = spread(cluster, "clu-r", 1)[0]
    client = cluster.client()
    daemon = tempestd_factory(redis_url=cluster.url, front={"queue": queue, "timeout": "20", "redeliver_interval": "0.3"})
    first = start_worker([RELIABLE, queue], cluster.url, tmp_path, "first")
    second = None
    try:
        wait_until(lambda: f"{queue} " in str(client.smembers(keys.WORKERS)), 10, message="the first worker")
        thread, result = in_thread(http, "GET", daemon.base + "/hold")
        owner = cluster.master_of(queue).client()
        wait_until(lambda: any(owner.llen(k) for k in owner.keys(keys.processing(queue, "*"))), 10,
                   message="the job in the processing list, on its queue's master")
        second = start_worker([RELIABLE, queue], cluster.url, tmp_path, "second")
        wait_until(lambda: str(client.smembers(keys.WORKERS)).count(f"{queue} ") == 2, 10, message="the second worker")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
        wait_until(lambda: daemon.info()["jobs_redelivered"] == 1, 15, message="the job given back")
        client.rpush(f"gate:{queue}", 1)
        thread.join(15)
        assert result["value"][0] == 200 and result["value"][2] == f"done by {second.pid}".encode()
    finally:
        stop_group(first)
        if second is not None:
            stop_group(second)


def test_a_master_killed_under_load_fails_over_on_a_cluster(tempestd_factory, tmp_path):
    """SIGKILL of the master that serves one of three queues while clients send requests to all
    three: its replica takes over (node timeout 1 s), tempestd and the workers read the slots
    again, and every queue is answered again. The failed requests, on the killed master's queue
    and on the others, and the recovery time are printed; that every queue recovers is asserted.
    The cluster has a password (requirepass on every node): it is in no log line."""
    password = "cluster-secret-7f3a9"
    cluster = LocalCluster(tmp_path / "cluster", masters=3, replicas=1, password=password).start()
    load_threads, stop, results, took_over = [], threading.Event(), [], 0.0
    try:
        names = spread(cluster, "clu-f")
        routes = {f"route:/{i}/": {"queue": name} for i, name in enumerate(names)}
        daemon = tempestd_factory(redis_url=cluster.url, front={"queue": names[0], "timeout": "5"}, **routes,
                                  **{"worker:echo": {"command": f"{PY} {ECHO} {' '.join(names)}", "numprocs": "2"}})
        wait_until(lambda: daemon.log().count("worker on ") == 2, 20, message="the workers")

        def load(index):
            while not stop.is_set():
                try:
                    status = http("GET", f"{daemon.base}/{index}/x", timeout=10)[0]
                except OSError:
                    status = 0
                results.append((time.monotonic(), index, status))

        load_threads = [threading.Thread(target=load, args=(i % 3,), daemon=True) for i in range(6)]
        for thread in load_threads:
            thread.start()
        wait_until(lambda: sum(s == 200 for _, _, s in results) >= 60, 20, message="load before the kill")
        victim = cluster.master_of(names[1])
        killed = time.monotonic()
        cluster.kill(victim)
        wait_until(lambda: cluster.master_of(names[1]).port != victim.port, 30, message="the replica's takeover")
        took_over = time.monotonic() - killed

        def recovered():
            after = [(t, i, s) for t, i, s in results if t > killed]
            return all(sum(1 for t, i, s in after[-60:] if i == index and s == 200) >= 5 for index in range(3)) \
                and all(s == 200 for _, _, s in after[-30:])

        wait_until(recovered, 40, interval=0.2, message="every queue answered again")
        log = daemon.log()
        assert password not in log and "redis+cluster://:***@127.0.0.1:" in log
    finally:
        stop.set()
        for thread in load_threads:
            thread.join(15)
        cluster.stop()
    failed = [(t, i) for t, i, s in results if s != 200]
    on_victim = sum(1 for _, i in failed if i == 1)
    recovery = max(t for t, _ in failed) - killed if failed else 0.0
    print(f"cluster failover under load: {len(results)} requests, {len(failed)} failed "
          f"({on_victim} on the killed master's queue, {len(failed) - on_victim} on the others), "
          f"the replica took over {took_over:.2f} s after the kill, every queue was answered again {recovery:.2f} s "
          "after the kill")
    assert all(s == 200 for t, _, s in results if t < killed)


def test_sharded_pub_sub_on_a_cluster_follows_a_failover(tempestd_factory, tmp_path):
    """[pubsub] sharded = yes: the relay SSUBSCRIBEs each channel on its own master (a link to
    each), `tempest publish` and the Python library SPUBLISH (tempestd told them so in Redis),
    plain and durable channels on three masters reach their SSE streams; the master of one
    durable channel is killed, its replica takes over, the relay moves the channel to it and a
    message published after the takeover reaches the same open stream."""
    cluster = LocalCluster(tmp_path / "cluster", masters=3, replicas=1).start()
    streams = []
    try:
        channels = spread(cluster, "clu.sh")  # durable: clu.* below
        daemon = tempestd_factory(redis_url=cluster.url, front={"queue": "clu-sharded"},
                                  pubsub={"sharded": "yes", "durable": "clu.*", "history": "100"})
        assert cluster.client().get(keys.SHARDED_CONFIG) == b"1"
        streams = [SSE(daemon.port, "/sub/" + channel) for channel in channels]

        def sharded_subscribers(channel):
            owner = cluster.master_of(channel).client()
            return owner.execute_command("PUBSUB", "SHARDNUMSUB", channel)[1]

        for channel in channels:
            wait_until(lambda: sharded_subscribers(channel) == 1, 10, message=f"the relay's SSUBSCRIBE of {channel}")
        assert not any(subscribed(cluster, channel) for channel in channels)  # no classic SUBSCRIBE
        links = {cluster.master_of(c).port for c in channels}
        assert len(links) == 3
        for stream, channel in zip(streams, channels):
            done = subprocess.run(cli() + ["publish", "-c", daemon.ini, channel, f"to {channel}"], capture_output=True,
                                  text=True, timeout=30)
            assert done.returncode == 0, done.stderr
            assert stream.next_message()["data"] == f"to {channel}"
        from tempest import redisconn
        from tempest.publish import Publisher

        library = Publisher(redisconn.client(cluster.url))  # reads the patterns and the sharded flag from Redis
        library.publish(channels[0], "from the library")
        assert streams[0].next_message()["data"] == "from the library"

        victim = cluster.master_of(channels[1])
        cluster.kill(victim)
        wait_until(lambda: cluster.master_of(channels[1]).port != victim.port, 30, message="the replica's takeover")
        wait_until(lambda: sharded_subscribers(channels[1]) == 1, 20, message="the relay's SSUBSCRIBE on the new master")
        done = subprocess.run(cli() + ["publish", "-c", daemon.ini, channels[1], "after the takeover"],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        event = streams[1].next_message(timeout=15)
        while event.get("data") != "after the takeover":  # a message replayed from the stream may come first
            event = streams[1].next_message(timeout=15)
        library.publish(channels[2], "the others kept going")
        assert streams[2].next_message()["data"] == "the others kept going"
        assert "pub/sub: 1 channels move to the masters that serve them now" in daemon.log()
        assert "Traceback" not in daemon.log()
    finally:
        for stream in streams:
            stream.close()
        cluster.stop()


def test_a_sharded_channel_follows_its_slot_to_another_master(shared_cluster, tempestd_factory):
    """Sharded: the slot of a channel is given to another master (no keys in it: CLUSTER SETSLOT
    NODE on every master); Redis ends the relay's SSUBSCRIBE there (sunsubscribe), the relay
    subscribes on the new master, and the open stream gets the next message."""
    cluster = shared_cluster
    channel = spread(cluster, "clu-mv.", 1)[0]
    slot = slots.key_slot(channel)
    source = cluster.master_of(channel)
    target = next(node for node in cluster.masters if node.port != source.port)
    daemon = tempestd_factory(redis_url=cluster.url, front={"queue": "clu-mv"}, pubsub={"sharded": "yes"})
    stream = SSE(daemon.port, "/sub/" + channel)

    def shard_subscribers(node):
        return node.client().execute_command("PUBSUB", "SHARDNUMSUB", channel)[1]

    try:
        wait_until(lambda: shard_subscribers(source) == 1, 10, message="the SSUBSCRIBE on the source")
        for node in cluster.masters:
            node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", cluster.node_id(target))
        wait_until(lambda: shard_subscribers(target) == 1, 10, message="the SSUBSCRIBE on the slot's new master")
        target.client().execute_command("SPUBLISH", channel, "after the move")
        assert stream.next_message()["data"] == "after the move"
        assert "Redis ended the sharded subscription of" in daemon.log()
    finally:
        stream.close()
        for node in cluster.masters:  # the shared cluster as it was
            node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", cluster.node_id(source))


CLIENTS = ("go", "node", "php", "ruby", "shell")


def test_every_client_follows_a_master_killed_on_a_cluster(tempestd_factory, tmp_path):
    """The hello worker of each client, under one tempestd on a cluster with a password (a
    route each), on queues that all live on one master: they answer, that master is killed,
    its replica takes over, and every client answers again on the same queue (each reads the
    slots again after its failed connection). The password is in no log line."""
    password = "cluster-clients-5e1d"
    commands = {language: client_hello(language, "x") for language in CLIENTS}  # runtimes checked first
    cluster = LocalCluster(tmp_path / "cluster", masters=3, replicas=1, password=password).start()
    try:
        victim = cluster.master_of("clu-client-go")
        queues = {}
        for language in CLIENTS:  # a queue of each on the victim's slots
            queues[language] = next(name for name in (f"clu-{language}-{n}" for n in range(10000))
                                    if cluster.master_of(name).port == victim.port)
        sections = {f"route:/{lang}/": {"queue": queue} for lang, queue in queues.items()}
        sections.update({f"worker:{lang}": {"command": commands[lang].removesuffix(" x") + f" {queue}"}
                         for lang, queue in queues.items()})
        daemon = tempestd_factory(redis_url=cluster.url, front={"queue": "clu-none", "timeout": "5"}, **sections)
        wait_until(lambda: daemon.log().count("worker on clu-") == len(CLIENTS), 30, message="the hello workers")

        def answered(language, path):
            status, _, body = http("GET", f"{daemon.base}/{language}/{path}", timeout=10)
            return status == 200 and body.startswith(b"Hello")

        for language in CLIENTS:
            assert answered(language, "before"), language
        killed = time.monotonic()
        cluster.kill(victim)
        wait_until(lambda: cluster.master_of(queues["go"]).port != victim.port, 30, message="the replica's takeover")
        took_over = time.monotonic() - killed
        again = {}
        for language in CLIENTS:
            wait_until(lambda: answered(language, "after"), 30, interval=0.3,
                       message=f"the {language} worker answering after the failover")
            again[language] = time.monotonic() - killed
            for i in range(3):
                assert answered(language, f"after/{i}"), language
        print(f"clients after a cluster failover (takeover {took_over:.2f} s after the kill): " +
              ", ".join(f"{language} answering {seconds:.2f} s after" for language, seconds in again.items()))
        log = daemon.log()
        assert password not in log and log.count(":***@127.0.0.1:") >= len(CLIENTS)
    finally:
        cluster.stop()


def test_the_lean_connection_follows_ask_and_moved(shared_cluster):
    """A slot migrated from one master to another while the lean connection uses it: ASK while
    it is migrating (a new key goes to the importing node, an old one still answers where it
    was), MOVED once the slot is given to the new master, and the map learnt."""
    from tempest import redisconn

    cluster = shared_cluster
    key = spread(cluster, "clu-m", 1)[0]
    slot = slots.key_slot(key)
    source = cluster.master_of(key)
    target = next(node for node in cluster.masters if node.port != source.port)
    connection = redisconn.connect(cluster.url)
    neighbour = next(f"clu-n{n}" for n in range(200000) if slots.key_slot(f"clu-n{n}") == slot)
    try:
        assert connection.execute([["RPUSH", key, "a"], ["PING"]]) == [1, b"PONG"]
        source_id, target_id = cluster.node_id(source), cluster.node_id(target)
        target.client().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        source.client().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        try:
            assert connection.execute([["RPUSH", neighbour, "b"], ["LLEN", key]]) == [1, 1]  # ASK for the new key
            source.client().execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", key)
            assert connection.execute([["RPUSH", key, "c"]]) == [2]  # ASK: the key moved already
        finally:
            for node in cluster.masters:
                node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        assert connection.execute([["LRANGE", key, 0, -1], ["LLEN", neighbour]]) == [[b"a", b"c"], 1]  # MOVED
        assert connection.execute([["LLEN", key]]) == [2]
        assert target.client().llen(key) == 2 and target.client().llen(neighbour) == 1  # both were written there
    finally:
        connection.close()
        cluster.client().delete(key, neighbour)


def test_a_batch_survives_a_dead_master_for_the_other_masters(tmp_path):
    """One master down: a batch's commands for the live masters are done and answered, those for
    the dead one get a NodeFailed reply (outcome unknown), not the whole batch failed."""
    from tempest import clusterconn, redisconn

    cluster = LocalCluster(tmp_path / "cluster", masters=3, replicas=0, node_timeout=60000).start()
    try:
        names = spread(cluster, "clu-d")
        connection = redisconn.connect(cluster.url)
        assert connection.execute([["RPUSH", name, "x"] for name in names]) == [1, 1, 1]
        dead = cluster.master_of(names[2])
        cluster.kill(dead)
        replies = connection.execute([["RPUSH", name, "y"] for name in names])
        assert replies[:2] == [2, 2]
        assert isinstance(replies[2], clusterconn.NodeFailed) and f":{dead.port}" in str(replies[2])
        with pytest.raises(redisconn.ConnectionFailed, match="tried again in"):  # not tried again at once
            connection.execute([["RPUSH", names[2], "z"]])  # all of the batch on the dead master
        connection.close()
    finally:
        cluster.stop()
