"""tempest queues and tempest dead end to end: the CLI as a subprocess on a rendered INI file,
reading a real redis-server; real tempestd and workers where the numbers come from them (the
push counts, reliable workers busy and idle, a dead letter made by a worker's death)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

from support import REPO, free_port, http, in_thread, start_worker, stop_group, stop_groups, wait_until

from tempest import keys
from tempest.queuestats import QueueStats, stats_key

PY = sys.executable
RELIABLE = [os.path.join(REPO, "tests", "workers", "reliable.py")]
ECHO = [os.path.join(REPO, "tests", "workers", "echo.py")]


def tempest_cli(daemon, *args):
    command = [os.path.join(os.path.dirname(PY), "tempest")]
    if not os.path.exists(command[0]):
        command = [PY, "-c", "import sys; from tempest.cli import tempest_main; sys.exit(tempest_main())"]
    return subprocess.run(command + [args[0], "-c", daemon.ini, *args[1:]], capture_output=True, text=True, timeout=60)


def queue_rows(daemon, *args):
    out = tempest_cli(daemon, "queues", "--json", *args)
    assert out.returncode == 0, out.stderr
    return {row["queue"]: row for row in json.loads(out.stdout)}


def url_job(job_id, url, queued=None, method="GET", **env):
    env = {"method": method, "url": url, "headers": {}, **env}
    if queued is not None:
        env["queued"] = queued
    return json.dumps(["url", [env], "127.0.0.1:1", job_id])


def test_depths_per_list_oldest_job_and_dead_letters(tempestd_factory, redis_client):
    # the CLI reads Redis alone: the INI file is enough, no tempestd runs
    daemon = tempestd_factory(start=False, front={"queue": "qdepth"}, pubsub={"ws_queue": "qdepth-ws"},
                              **{"route:/b/": {"queue": "qdepth-b"}})
    now = time.time()
    redis_client.rpush("qdepth", url_job("n1", "/a", now - 50), url_job("n2", "/b", now - 10),
                       url_job("n3", "/c", now - 100))  # a job with an old clock, at the tail
    redis_client.lpush("qdepth", url_job("h1", "/high", now - 5))  # a high job at the head
    redis_client.rpush("tempest:low:{qdepth}", url_job("l1", "/low", now - 30), url_job("l2", "/low"))
    redis_client.rpush(keys.dead("qdepth"), url_job("d1", "/dead"))
    redis_client.rpush(keys.dead("qdepth-b"), url_job("d2", "/dead"), url_job("d3", "/dead"))
    redis_client.rpush("qdepth-b", json.dumps(["other", [], None, "o1"]))  # no queued: age unknown
    rows = queue_rows(daemon, "--interval", "0")
    assert {"qdepth", "qdepth-b", "qdepth-ws"} <= set(rows)
    first, other, ws = rows["qdepth"], rows["qdepth-b"], rows["qdepth-ws"]
    assert (first["queued"], first["low"], first["dead"]) == (4, 2, 1)
    assert 100 <= first["oldest_age"] < 130  # the tail's job, older than the head's
    assert (other["queued"], other["low"], other["dead"], other["oldest_age"]) == (1, 0, 2, None)
    assert (ws["queued"], ws["low"], ws["dead"], ws["oldest_age"]) == (0, 0, 0, None)
    assert first["in_per_second"] is None and first["out_per_second"] is None  # --interval 0: no rates
    redis_client.lpush("tempest:low:{qdepth}", url_job("l0", "/low", now - 500))  # the oldest, at the low list's head
    assert 500 <= queue_rows(daemon, "--interval", "0")["qdepth"]["oldest_age"] < 530

    table = tempest_cli(daemon, "queues", "--interval", "0")
    assert table.returncode == 0 and table.stderr == ""
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["QUEUE", "QUEUED", "LOW", "LIVE", "BUSY", "IDLE", "IN/S", "OUT/S", "OLDEST", "DEAD"]
    row = next(line.split() for line in lines if line.startswith("qdepth "))
    assert row[:6] == ["qdepth", "4", "3", "0", "0", "0"] and row[6:8] == ["-", "-"]
    assert row[8].startswith("0:08:") and row[9] == "1"  # 500 s as an uptime
    assert next(line.split() for line in lines if line.startswith("qdepth-b "))[8:] == ["-", "2"]


def test_live_busy_and_idle_reliable_workers(tempestd_factory, redis_server, redis_client, tmp_path):
    # no check of the heartbeats while the test runs: the ghost below stays registered
    daemon = tempestd_factory(front={"queue": "qbusy", "timeout": "20", "redeliver_interval": "3600"})
    ghost = "ghost-host:1:qbusy"  # registered, its heartbeat gone (a dead worker not yet noticed)
    redis_client.sadd(keys.WORKERS, f"qbusy {ghost}")
    redis_client.rpush(keys.processing("qbusy", ghost), url_job("g1", "/held"))
    workers = [start_worker(RELIABLE + ["qbusy"], redis_server.url, tmp_path, f"busy{i}") for i in range(2)]
    try:
        wait_until(lambda: queue_rows(daemon, "--interval", "0")["qbusy"]["live"] == 2, timeout=20,
                   message="two live workers")
        thread, result = in_thread(http, "GET", daemon.base + "/hold")  # held until gate:qbusy gets an item
        row = wait_until(lambda: (r := queue_rows(daemon, "--interval", "0")["qbusy"])["busy"] and r, timeout=10)
        assert (row["live"], row["busy"], row["idle"], row["queued"]) == (2, 1, 1, 0)
        table = tempest_cli(daemon, "queues", "--interval", "0").stdout
        assert next(line.split() for line in table.splitlines() if line.startswith("qbusy "))[3:6] == ["2", "1", "1"]
        # both busy, a third request waits: its age from the queued time tempestd wrote
        held = [in_thread(http, "GET", daemon.base + "/hold") for _ in range(2)]
        row = wait_until(lambda: (r := queue_rows(daemon, "--interval", "0")["qbusy"])["busy"] == 2 and r["queued"] and r,
                         timeout=10)
        assert (row["live"], row["busy"], row["idle"], row["queued"]) == (2, 2, 0, 1)
        assert 0 <= row["oldest_age"] < 15
        redis_client.rpush("gate:qbusy", 1, 1, 1)
        for request, answer in [(thread, result), *held]:
            request.join(15)
            assert answer["value"][0] == 200
        row = wait_until(lambda: (r := queue_rows(daemon, "--interval", "0")["qbusy"])["busy"] == 0 and r, timeout=10)
        assert (row["live"], row["idle"]) == (2, 2)
    finally:
        stop_groups(workers)
        redis_client.srem(keys.WORKERS, f"qbusy {ghost}")
        redis_client.delete(keys.processing("qbusy", ghost))
    assert queue_rows(daemon, "--interval", "0")["qbusy"]["live"] == 0  # a clean stop unregisters


def test_rates_while_requests_flow(tempestd_factory, redis_server, redis_client, tmp_path):
    daemon = tempestd_factory(front={"queue": "qrate"})
    worker = start_worker(ECHO + ["qrate"], redis_server.url, tmp_path, "rate", ready="worker on ")
    statuses, stop = [], threading.Event()

    def load():
        while not stop.is_set():
            statuses.append(http("GET", daemon.base + "/r")[0])

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(statuses) > 20, message="requests flowing")
        row = queue_rows(daemon, "--interval", "1.5")["qrate"]
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    try:
        assert row["in_per_second"] > 0 and row["out_per_second"] > 0, row
        assert statuses and set(statuses) == {200}
        # tempestd's counts reach Redis within a second or so, each push counted once
        wait_until(lambda: int(redis_client.hget(stats_key("qrate"), "pushed") or 0) == len(statuses), timeout=5,
                   message=f"{len(statuses)} pushes counted")
        assert 0 < redis_client.ttl(stats_key("qrate")) <= 86400
        quiet = queue_rows(daemon, "--interval", "1")["qrate"]  # nothing pushed meanwhile
        assert (quiet["in_per_second"], quiet["out_per_second"]) == (0, 0)
    finally:
        stop_group(worker, signal.SIGKILL)


def test_queue_stats_sends_each_push_once(redis_server, redis_client):
    pushed = {}
    stats = QueueStats(redis_server.url, pushed)
    stats.flush()  # nothing pushed: nothing written
    assert not redis_client.exists(stats_key("qstats"))
    pushed["qstats"] = 3
    stats.flush()
    stats.flush()  # no new push: no second increment
    assert redis_client.hget(stats_key("qstats"), "pushed") == b"3"
    pushed["qstats"] = 5
    pushed["qstats-2"] = 1
    stats.flush()
    assert redis_client.hget(stats_key("qstats"), "pushed") == b"5"
    assert redis_client.hget(stats_key("qstats-2"), "pushed") == b"1"
    away = QueueStats(f"redis://127.0.0.1:{free_port()}/0", {"qstats": 1})
    away.flush()  # Redis away: no exception, the count of that second is lost
    stats.connection.close()


def test_dead_letters_listed_and_requeued(tempestd_factory, redis_client):
    daemon = tempestd_factory(start=False, front={"queue": "qdead"})
    letters = [url_job("first", "/one", method="POST", deadline=time.time() - 60, queued=time.time() - 70),
               json.dumps(["mail", [{"to": "x"}], None, "second"]), "not json", url_job("-third", "/three")]
    redis_client.rpush(keys.dead("qdead"), *letters)
    out = tempest_cli(daemon, "dead", "qdead", "--json")
    assert out.returncode == 0 and out.stderr == ""
    assert json.loads(out.stdout) == [
        {"index": 0, "id": "first", "action": "url", "size": len(letters[0]), "method": "POST", "url": "/one"},
        {"index": 1, "id": "second", "action": "mail", "size": len(letters[1]), "method": None, "url": None},
        {"index": 2, "id": None, "action": None, "size": 8, "method": None, "url": None},
        {"index": 3, "id": "-third", "action": "url", "size": len(letters[3]), "method": "GET", "url": "/three"}]
    table = tempest_cli(daemon, "dead", "qdead", "--limit", "2")
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["INDEX", "ID", "ACTION", "SIZE", "METHOD", "URL"] and len(lines) == 3
    assert lines[1].split() == ["0", "first", "url", str(len(letters[0])), "POST", "/one"]
    assert lines[2].split() == ["1", "second", "mail", str(len(letters[1])), "-", "-"]
    assert "2 of 4 dead letters shown" in table.stderr

    # an id may begin with '-' (URL-safe base64): --requeue=ID
    some = tempest_cli(daemon, "dead", "qdead", "--requeue", "first", "nope", "--requeue=-third")
    assert some.returncode == 1 and "no dead letter with id 'nope'" in some.stderr and "Traceback" not in some.stderr
    assert "2 dead letters put back on queue qdead" in some.stdout
    first, third = [json.loads(raw) for raw in redis_client.lrange("qdead", 0, -1)]
    env = first[1][0]
    assert first[3] == "first" and "deadline" not in env and time.time() - env["queued"] < 30  # runs again, fresh
    assert third[3] == "-third" and redis_client.llen(keys.dead("qdead")) == 2

    everything = tempest_cli(daemon, "dead", "qdead", "--requeue", "--json")
    assert everything.returncode == 0 and json.loads(everything.stdout) == {"requeued": 2, "missing": []}
    assert redis_client.lrange("qdead", 2, -1) == [letters[1].encode(), b"not json"]  # in order, as they were
    assert redis_client.llen(keys.dead("qdead")) == 0
    assert tempest_cli(daemon, "dead", "qdead").stdout.strip() == "tempest: no dead letters in tempest:dead:{qdead}"


def test_a_requeue_that_redis_refuses_moves_nothing(tempestd_factory, redis_client):
    daemon = tempestd_factory(start=False, front={"queue": "qwrong"})
    redis_client.rpush(keys.dead("qwrong"), url_job("w1", "/x"))
    redis_client.set("qwrong", "not a list")
    out = tempest_cli(daemon, "dead", "qwrong", "--requeue")
    assert out.returncode == 1 and "WRONGTYPE" in out.stderr and "Traceback" not in out.stderr
    assert redis_client.llen(keys.dead("qwrong")) == 1  # still a dead letter, not lost
    assert queue_rows(daemon, "--interval", "0")["qwrong"]["queued"] is None  # not a list: unknown


def test_a_letter_of_a_dead_worker_is_requeued_and_run(tempestd_factory, redis_server, redis_client, tmp_path):
    # the worker dies holding the job; with max_redeliveries 0 it goes straight to the dead letters
    daemon = tempestd_factory(front={"queue": "qkill", "timeout": "3", "redeliver_interval": "0.3",
                                     "max_redeliveries": "0"})
    victim = start_worker(RELIABLE + ["qkill"], redis_server.url, tmp_path, "victim", ready="worker on ")
    try:
        thread, result = in_thread(http, "GET", daemon.base + "/hold")
        wait_until(lambda: any(redis_client.llen(k) for k in redis_client.keys(keys.processing("qkill", "*"))),
                   timeout=10, message="the job held")
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(10)
    finally:
        stop_group(victim)
    wait_until(lambda: redis_client.llen(keys.dead("qkill")) == 1, timeout=10, message="the dead letter")
    thread.join(10)
    assert result["value"][0] == 504  # its client was told; nobody waits for it any more
    assert queue_rows(daemon, "--interval", "0")["qkill"]["dead"] == 1
    [letter] = json.loads(tempest_cli(daemon, "dead", "qkill", "--json").stdout)
    assert (letter["method"], letter["url"], letter["action"]) == ("GET", "/hold", "url")
    dropped = daemon.info()["answers_dropped"]
    redis_client.rpush("gate:qkill", 1)  # the next run of /hold answers at once
    worker = start_worker(RELIABLE + ["qkill"], redis_server.url, tmp_path, "second", ready="worker on ")
    try:
        out = tempest_cli(daemon, "dead", "qkill", "--requeue", letter["id"])
        assert out.returncode == 0 and "1 dead letter put back on queue qkill" in out.stdout
        # run again (its deadline, long past, removed): the answer reaches tempestd, which drops it
        wait_until(lambda: daemon.info()["answers_dropped"] == dropped + 1, timeout=10, message="the job run again")
        assert redis_client.llen(keys.dead("qkill")) == 0 and redis_client.llen("qkill") == 0
    finally:
        stop_group(worker)


def test_an_unreachable_redis_is_one_line_and_exit_1(tempestd_factory):
    daemon = tempestd_factory(redis_url=f"redis://127.0.0.1:{free_port()}/0", start=False)
    for args in (("queues",), ("queues", "--json"), ("dead", "tempest"), ("dead", "tempest", "--requeue", "x")):
        out = tempest_cli(daemon, *args)
        assert out.returncode == 1, args
        assert out.stdout == "" and len(out.stderr.splitlines()) == 1, out.stderr
        assert out.stderr.startswith("tempest: cannot reach Redis at redis://127.0.0.1:")


def test_bad_arguments_are_usage_errors(tempestd_factory):
    daemon = tempestd_factory(start=False)
    for args in (("queues", "--interval", "-1"), ("queues", "--interval", "nan"), ("dead", "a b"),
                 ("dead", "q", "--limit", "-3")):
        out = tempest_cli(daemon, *args)
        assert out.returncode == 2 and "Traceback" not in out.stderr, (args, out.stderr)
