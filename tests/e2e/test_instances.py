"""The instance registry end to end (tempest/instances.py): what each tempestd writes to Redis,
its expiry after SIGKILL and removal at a clean stop, `tempest status --all` over several
tempestds, the names of tempestd's connections in CLIENT LIST (and an ACL that refuses them),
and three redeliverers on one Redis giving a killed worker's jobs back exactly once.

Each test that counts connections or entries has a redis-server of its own: the session's is
shared with other tests' tempestds."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from support import (REPO, RedisServer, Tempestd, hand_job, http, in_thread, render_ini, start_worker, stop_group,
                     wait_until)

import tempest
from tempest import instances, keys

PY = sys.executable
ECHO = f"{PY} {os.path.join(REPO, 'tests', 'workers', 'echo.py')}"
RELIABLE = [os.path.join(REPO, "tests", "workers", "reliable.py")]
TABLE_HEADER = ["INSTANCE", "HOST", "ROLE", "NAME", "STATE", "PID", "UPTIME", "RESTARTS", "LAST_EXIT"]


class Named(Tempestd):
    """A tempestd with a [tempest] name of its own (its control socket is named after it)."""

    def __init__(self, directory, redis_url, name, **sections):
        super().__init__(directory, redis_url, tempest={"name": name}, **sections)
        self.name = name

    @property
    def control_path(self):
        return os.path.join(self.directory, "run", f"{self.name}.sock")


@pytest.fixture
def own_redis(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def daemons():
    started = []
    yield started
    Tempestd.stop_all(started)


def cli(ini, *args):
    command = [PY, "-c", "import sys; from tempest.cli import tempest_main; sys.exit(tempest_main())"]
    return subprocess.run(command + [args[0], "-c", ini, *args[1:]], capture_output=True, text=True, timeout=60)


def entries(client):
    """{id: entry} of the live instances, read as tempest status --all reads them."""
    return {entry["id"]: entry for entry in instances.live_instances(client)}


def entry_of(client, pid):
    return next((e for e in entries(client).values() if e["pid"] == pid), None)


def test_the_entry_says_what_the_instance_is(own_redis, daemons, tmp_path):
    daemon = Named(tmp_path / "a", own_redis.url, "alpha", front={"queue": "reg"},
                      admin={"listen": "127.0.0.1:0"},
                      **{"worker:echo": {"command": f"{ECHO} reg", "numprocs": "2", "startsecs": "0.3"}})
    daemons.append(daemon.start())
    client = own_redis.client()
    running = lambda: all(r["state"] == "RUNNING" for r in daemon.status().values())  # noqa: E731
    wait_until(running, message="both workers RUNNING")
    assert http("GET", daemon.base + "/hello")[0] == 200
    # the next refresh (every 2 s) carries the programs' RUNNING and the request's counters
    entry = wait_until(lambda: (e := entry_of(client, daemon.proc.pid)) and e["counters"]["answers"] >= 1
                       and all(r["state"] == "RUNNING" for r in e["programs"]) and e, timeout=10)
    host, pid, random = entry["id"].split(":")
    assert (host, int(pid), len(random)) == (socket.gethostname(), daemon.proc.pid, 6)
    assert entry["name"] == "alpha" and entry["host"] == socket.gethostname()
    assert entry["role"] == "front+workers" and entry["version"] == tempest.__version__
    assert entry["state"] == "RUNNING" and 0 <= entry["uptime"] < 60 and entry["ttl"] == instances.TTL
    addresses = entry["addresses"]
    assert addresses["front"] == f"127.0.0.1:{daemon.port}"
    assert addresses["answers"] == addresses["respond_to"] == f"127.0.0.1:{daemon.answer_port}"
    assert addresses["control"] == daemon.control_path
    assert addresses["admin"].startswith("127.0.0.1:") and addresses["admin"] in daemon.log()
    status = daemon.status()
    assert [(r["name"], r["state"], r["pid"]) for r in entry["programs"]] == \
        [(name, "RUNNING", status[name]["pid"]) for name in ("echo:0", "echo:1")]
    counters = entry["counters"]
    assert counters["requests"] >= 1 and counters["jobs_pushed"] >= 1 and counters["answers"] >= 1
    assert counters["subscribers"] == 0
    # the key's TTL is the registry's, refreshed: never more than TTL, and not about to expire
    key = keys.instance(entry["id"])
    assert 0 < client.pttl(key) <= instances.TTL * 1000
    assert client.zscore(keys.INSTANCES, entry["id"]) is not None
    assert daemon.stop() == 0
    # a clean stop removes the entry and its id at once, without waiting for the TTL
    assert not client.exists(key) and client.zscore(keys.INSTANCES, entry["id"]) is None


def test_a_killed_instance_expires_and_readers_unindex_it(own_redis, daemons, tmp_path):
    daemon = Tempestd(tmp_path / "k", own_redis.url, tempest={"name": "victim"})
    daemons.append(daemon.start())
    client = own_redis.client()
    entry = wait_until(lambda: entry_of(client, daemon.proc.pid), message="registered")
    os.killpg(daemon.proc.pid, signal.SIGKILL)
    daemon.proc.wait(10)
    killed = time.monotonic()
    assert client.exists(keys.instance(entry["id"]))  # a killed tempestd cannot withdraw: its TTL does
    wait_until(lambda: not client.exists(keys.instance(entry["id"])), timeout=instances.TTL + 2, interval=0.1)
    assert time.monotonic() - killed <= instances.TTL + 1
    assert client.zscore(keys.INSTANCES, entry["id"]) is not None  # still indexed, until a reader looks
    out = cli(daemon.ini, "status", "--all")
    assert out.returncode == 3 and "no live tempestd" in out.stderr
    assert out.stdout.split() == TABLE_HEADER and "Traceback" not in out.stderr
    assert client.zscore(keys.INSTANCES, entry["id"]) is None  # the reader removed the expired id


def worker_host(directory, redis_url, **sections):
    """A tempestd without [front]: a worker host (tempest/roles.py), named ``workers``."""
    daemon = Named(directory, redis_url, "workers")
    config = {"tempest": {"run_dir": "run", "log_level": "debug", "name": "workers"}, "redis": {"url": redis_url}}
    config.update((name.replace("__", ":"), values) for name, values in sections.items())
    render_ini(daemon.ini, config)
    return daemon


def test_status_all_lists_every_instance_and_its_processes(own_redis, daemons, tmp_path):
    front = Tempestd(tmp_path / "f", own_redis.url, tempest={"name": "front"}, front={"queue": "sa"})
    both = Tempestd(tmp_path / "b", own_redis.url, tempest={"name": "both"}, front={"queue": "sa"},
                    **{"worker:echo": {"command": f"{ECHO} sa", "startsecs": "0.3"},
                       "worker:off": {"command": f"{ECHO} sa", "autostart": "no"}})
    workers = worker_host(tmp_path / "w", own_redis.url,
                          **{"worker:echo": {"command": f"{ECHO} sa", "numprocs": "2", "startsecs": "0.3"}})
    daemons.extend([front.start(), both.start(), workers.start(wait=False)])
    client = own_redis.client()
    wait_until(lambda: len(entries(client)) == 3 and all(
        r["state"] in ("RUNNING", "STOPPED") for e in entries(client).values() for r in e["programs"]), timeout=20,
        message="three instances registered, their workers RUNNING")
    # tempest status on the local control socket, front-only and worker-only alike
    registered = {e["name"]: e["id"] for e in entries(client).values()}
    alone = cli(front.ini, "status")
    assert alone.returncode == 0 and registered["front"] in alone.stdout and "Traceback" not in alone.stderr
    local = cli(workers.ini, "status")
    assert local.returncode == 0 and registered["workers"] in local.stdout
    assert [line.split()[0] for line in local.stdout.splitlines() if line.startswith("echo:")] == ["echo:0", "echo:1"]
    out = cli(workers.ini, "status", "--all")  # any INI file naming the Redis will do
    assert out.returncode == 3, out.stderr  # off:0 is STOPPED
    lines = out.stdout.splitlines()
    assert lines[0].split() == TABLE_HEADER
    rows = [line.split() for line in lines[1:]]
    by_instance = {}
    for row in rows:
        by_instance.setdefault(row[0], []).append(row)
    assert sorted(name.split("/")[0] for name in by_instance) == ["both", "front", "workers"]
    summary = {name.split("/")[0]: [(r[2], r[3], r[4]) for r in found] for name, found in by_instance.items()}
    assert summary == {
        "front": [("front", "tempestd", "RUNNING")],
        "both": [("front+workers", "tempestd", "RUNNING"), ("front+workers", "echo:0", "RUNNING"),
                 ("front+workers", "off:0", "STOPPED")],
        "workers": [("workers", "tempestd", "RUNNING"), ("workers", "echo:0", "RUNNING"),
                    ("workers", "echo:1", "RUNNING")],
    }
    host = socket.gethostname()
    assert all(row[1] == host for row in rows)
    pids = {name.split("/")[0]: int(found[0][5]) for name, found in by_instance.items()}
    assert pids == {"front": front.proc.pid, "both": both.proc.pid, "workers": workers.proc.pid}
    assert [r for r in rows if r[3] == "off:0"][0][5:7] == ["-", "-"]  # no pid, no uptime
    # --json: the entries themselves; targets select the processes shown
    listed = json.loads(cli(front.ini, "status", "--all", "--json").stdout)
    assert sorted(e["name"] for e in listed) == ["both", "front", "workers"]
    worker_entry = next(e for e in listed if e["name"] == "workers")
    assert worker_entry["role"] == "workers" and worker_entry["addresses"]["front"] is None
    assert worker_entry["addresses"]["control"] == os.path.join(workers.directory, "run", "workers.sock")
    assert all(0 <= e["age"] <= instances.TTL for e in listed)
    only = cli(front.ini, "status", "--all", "echo")
    assert only.returncode == 0, only.stdout  # off:0 is not shown
    assert sorted(line.split()[3] for line in only.stdout.splitlines()[1:]) == \
        ["echo:0", "echo:0", "echo:1", "tempestd", "tempestd", "tempestd"]
    assert both.stop() == 0
    after = json.loads(cli(front.ini, "status", "--all", "--json").stdout)
    assert sorted(e["name"] for e in after) == ["front", "workers"]  # withdrawn at once


def client_names(client):
    """(name, last command) of every connection to Redis but ``client``'s own."""
    own = client.client_id()
    return [(c["name"], c.get("cmd")) for c in client.client_list() if int(c["id"]) != own]


def test_every_connection_of_tempestd_is_named(own_redis, daemons, tmp_path):
    daemon = Tempestd(tmp_path / "n", own_redis.url, tempest={"name": "named"},
                      front={"queue": "named", "timeout": "0.5", "redeliver_interval": "0.1"},
                      pubsub={"durable": "news"})
    daemons.append(daemon.start())
    admin = own_redis.client()
    entry = wait_until(lambda: entry_of(admin, daemon.proc.pid), message="registered")
    assert http("GET", daemon.base + "/nobody-answers")[0] in (503, 504)  # the pusher connects, QueueStats too
    expected = f"tempest:front:named:{instances.short_id(entry['id'])}"
    # the registration, start-up's client, the relay, the pusher, the redeliverer, the push counts
    seen = wait_until(lambda: (found := client_names(admin)) and len(found) >= 6 and found, timeout=10,
                      message="tempestd's connections")
    assert {name for name, _ in seen} == {expected}, seen
    assert daemon.stop() == 0
    assert client_names(admin) == []


def test_a_refused_client_setname_is_harmless(own_redis, daemons, tmp_path):
    admin = own_redis.client()
    admin.execute_command("ACL", "SETUSER", "plain", "on", ">plain-Secret-1", "~*", "&*", "+@all", "-client|setname")
    url = f"redis://plain:plain-Secret-1@127.0.0.1:{own_redis.port}/0"
    daemon = Named(tmp_path / "p", url, "plain", front={"queue": "plain", "timeout": "5"},
                      **{"worker:echo": {"command": f"{ECHO} plain", "startsecs": "0.3",
                                         "environment": f"TEMPEST_REDIS_URL={own_redis.url}"}})
    daemons.append(daemon.start())
    wait_until(lambda: daemon.status()["echo:0"]["state"] == "RUNNING")
    assert http("GET", daemon.base + "/still-served")[0] == 200
    assert entry_of(admin, daemon.proc.pid)["name"] == "plain"
    users = wait_until(lambda: (found := [c for c in admin.client_list() if c.get("user") == "plain"])
                       and len(found) >= 4 and found, message="tempestd's connections")
    assert all(c["name"] == "" for c in users)
    log = daemon.log()
    assert "no permissions to run the 'client|setname' command" in log and "Traceback" not in log


def dead_workers(client, queue, count, jobs_each, round_):
    """Leave in Redis what ``count`` reliable workers killed holding ``jobs_each`` jobs each
    leave: registered, their processing lists full, no heartbeat. Returns the job ids."""
    ids, pipe = [], client.pipeline(transaction=True)
    for worker in range(count):
        worker_id = f"gone-host:{round_}{worker:03d}:dead"
        jobs = [hand_job("url", [{"method": "GET", "url": f"/{round_}/{worker}/{n}", "headers": {}}],
                         None, f"r{round_}w{worker}j{n}") for n in range(jobs_each)]
        ids += [json.loads(job)[3] for job in jobs]
        pipe.rpush(keys.processing(queue, worker_id), *jobs)
        pipe.sadd(keys.WORKERS, f"{queue} {worker_id}")
    pipe.execute()
    return ids


def test_three_redeliverers_give_each_job_back_exactly_once(own_redis, daemons, tmp_path):
    client = own_redis.client()
    trio = [Tempestd(tmp_path / f"t{n}", own_redis.url, tempest={"name": f"t{n}"},
                     front={"queue": "trio", "timeout": "30", "redeliver_interval": "0.02", "max_redeliveries": "5"})
            for n in range(3)]
    for daemon in trio:
        daemons.append(daemon.start())
    # a real reliable worker, killed in the middle of a job
    worker = start_worker(RELIABLE + ["trio"], own_redis.url, tmp_path, "reliable")
    try:
        wait_until(lambda: client.scard(keys.WORKERS) == 1, timeout=15, message="the worker registered")
        client.rpush("trio", hand_job("url", [{"method": "GET", "url": "/hold", "headers": {}}], None, "held"))
        wait_until(lambda: any(client.llen(k) for k in client.keys(keys.processing("trio", "*"))), timeout=10)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
    finally:
        stop_group(worker)
    wait_until(lambda: client.llen("trio") == 1, timeout=10, message="the job given back")
    wait_until(lambda: client.scard(keys.WORKERS) == 0, timeout=10)
    [job] = client.lrange("trio", 0, -1)
    assert client.hgetall(keys.deliveries("trio")) == {json.loads(job)[3].encode(): b"1"}
    # then many workers dead at once, several times: the three check every 20 ms
    expected = []
    for round_ in range(4):
        expected += dead_workers(client, "trio", 40, 10, round_)
        wait_until(lambda: client.scard(keys.WORKERS) == 0, timeout=15, message="every dead worker handled")
    given_back = [json.loads(j)[3] for j in client.lrange("trio", 0, -1)]  # each to the head of the queue
    assert len(given_back) == len(expected) + 1 == 1601
    assert sorted(given_back) == sorted(expected + ["held"])  # each once: none lost, none twice
    deliveries = client.hgetall(keys.deliveries("trio"))
    assert len(deliveries) == 1601 and set(deliveries.values()) == {b"1"}
    assert not client.keys(keys.processing("trio", "*"))
    counts = [daemon.info()["jobs_redelivered"] for daemon in trio]
    print("jobs given back by each of the three redeliverers:", counts)
    assert sum(counts) == 1601


def test_a_worker_host_gives_back_the_jobs_of_the_workers_it_reaps(own_redis, daemons, tmp_path):
    """The reaping path on a worker host, which runs no redeliverer: the front checks
    heartbeats only once an hour here, so only the worker host's reaping can give the job back."""
    client = own_redis.client()
    front = Tempestd(tmp_path / "f", own_redis.url, front={"queue": "reap", "timeout": "30",
                                                          "redeliver_interval": "3600"})
    workers = worker_host(tmp_path / "w", own_redis.url,
                          **{"worker:rel": {"command": f"{PY} {RELIABLE[0]} reap", "startsecs": "0.3"}})
    daemons.extend([front.start(), workers.start(wait=False)])
    wait_until(lambda: client.scard(keys.WORKERS) == 1, timeout=20, message="the supervised worker registered")
    thread, result = in_thread(http, "GET", front.base + "/hold", None, None, 40)
    wait_until(lambda: any(client.llen(k) for k in client.keys(keys.processing("reap", "*"))), timeout=10)
    victim = workers.status()["rel:0"]["pid"]
    os.kill(victim, signal.SIGKILL)  # its tempestd reaps it, gives the job back, starts another
    wait_until(lambda: (row := workers.status()["rel:0"])["state"] == "RUNNING" and row["pid"] != victim, timeout=15)
    wait_until(lambda: any(client.llen(k) for k in client.keys(keys.processing("reap", "*"))), timeout=10,
               message="the job given back and taken by the new worker")
    client.rpush("gate:reap", 1)
    thread.join(20)
    status, _, body = result["value"]
    assert status == 200 and body == f"done by {workers.status()['rel:0']['pid']}".encode()
    assert front.info()["jobs_redelivered"] == 0  # not the front's check
    wait_until(lambda: entry_of(client, workers.proc.pid)["counters"]["jobs_redelivered"] == 1, timeout=10)
    assert client.hgetall(keys.deliveries("reap")) and set(client.hgetall(keys.deliveries("reap")).values()) == {b"1"}
