"""Queues for production (issue 11) end to end: priorities, the redelivery rule (a POST is not
run twice), the jobs of a supervised worker given back when it is reaped, deadlines, abandoned
jobs taken back, reliable delivery by default."""

import json
import os
import socket
import sys
import time

from support import REPO, http, in_thread, kill_groups, start_worker, stop_groups, wait_until

from tempest import jobs, keys

APP = [os.path.join(REPO, "tests", "workers", "queues.py")]


def hand_job(url, deadline=None, respond_to=None, job_id=None):
    """A url job as a worker would find it, pushed by hand (nobody waits for it)."""
    env = {"method": "GET", "url": url, "headers": {}}
    if deadline is not None:
        env["deadline"] = deadline
    return jobs.encode_job("url", [env], respond_to, job_id or jobs.new_job_id())


def registered(client, queue):
    return [m for m in client.smembers(keys.WORKERS) if m.decode().startswith(queue + " ")]


def test_a_high_request_goes_before_2000_low_jobs_and_normal_ones(tempestd_factory, redis_server, tmp_path):
    queue = "prio"
    daemon = tempestd_factory(front={"queue": queue, "timeout": "20"},
                              **{"route:/hi/": {"queue": queue, "priority": "high"},
                                 "route:/lo/": {"queue": queue, "priority": "low"}})
    client = redis_server.client()
    client.rpush(keys.low(queue), *[hand_job(f"/low/{i}") for i in range(2000)])
    client.rpush(queue, *[hand_job(f"/normal/{i}") for i in range(20)])
    # a request of each priority, pushed before any worker runs
    low = in_thread(http, "GET", daemon.base + "/lo/request")
    wait_until(lambda: client.llen(keys.low(queue)) == 2001, message="the low request on the low list")
    high = in_thread(http, "GET", daemon.base + "/hi/request")
    wait_until(lambda: client.llen(queue) == 21, message="the high request on the queue")
    assert json.loads(client.lindex(queue, 0))[1][0]["url"] == "/hi/request"  # at the head
    worker = start_worker(APP + [queue], redis_server.url, tmp_path)
    try:
        high[0].join(20)
        assert high[1]["value"][0] == 200
        ran = [u.decode() for u in client.lrange(f"ran:{queue}", 0, -1)]
        assert ran[0] == "/hi/request"  # the first job the free worker took
        low[0].join(20)
        assert low[1]["value"][0] == 200
        ran = [u.decode() for u in client.lrange(f"ran:{queue}", 0, -1)]
        # every normal job before any low one; the low request after the 2,000 pushed before it
        assert all(u.startswith("/normal/") for u in ran[1:21]) and ran[21] == "/low/0"
        assert ran.index("/lo/request") == 2021
    finally:
        kill_groups([worker])


def test_a_post_whose_worker_dies_gets_502_at_once_and_is_not_run_again(tempestd_factory, redis_server, tmp_path):
    queue = "post-once"
    daemon = tempestd_factory(front={"queue": queue, "timeout": "20", "redeliver_interval": "0.2"})
    client = redis_server.client()
    workers = [start_worker(APP + [queue, "1"], redis_server.url, tmp_path, f"w{i}", ready="worker on ")
               for i in range(3)]
    try:
        wait_until(lambda: len(registered(client, queue)) == 3, message="three reliable workers")
        status, _, body = http("POST", daemon.base + "/crash", body=b"x")
        assert status == 502 and b"not run twice" in body
        assert [u.decode() for u in client.lrange(f"ran:{queue}", 0, -1)] == ["/crash"]  # run once
        info = daemon.info()
        assert info["jobs_refused"] == 1 and info["jobs_redelivered"] == 0
        # a GET whose worker dies is given to another worker, which answers it
        status, _, body = http("GET", daemon.base + "/crash?get")
        assert status == 200 and daemon.info()["jobs_redelivered"] == 1
        assert [u.decode() for u in client.lrange(f"ran:{queue}", 0, -1)] == ["/crash", "/crash?get", "/crash?get"]
    finally:
        kill_groups(workers)


def test_redeliver_always_gives_a_post_to_another_worker(tempestd_factory, redis_server, tmp_path):
    queue = "post-again"
    daemon = tempestd_factory(front={"queue": queue, "timeout": "20", "redeliver_interval": "0.2",
                                     "redeliver": "always"})
    client = redis_server.client()
    workers = [start_worker(APP + [queue, "1"], redis_server.url, tmp_path, f"w{i}", ready="worker on ")
               for i in range(2)]
    try:
        wait_until(lambda: len(registered(client, queue)) == 2, message="two reliable workers")
        status, _, body = http("POST", daemon.base + "/crash", body=b"x")
        assert status == 200 and daemon.info()["jobs_redelivered"] == 1
    finally:
        kill_groups(workers)


def test_the_jobs_of_a_reaped_worker_go_back_before_its_heartbeat_expires(tempestd_factory, redis_server):
    """Two supervised workers with a 60 s heartbeat and a 10 s route timeout: only the reaping
    can give the job back in time for a 200 (the heartbeat path would leave the client a 504)."""
    queue = "reaped"
    command = f"{sys.executable} {APP[0]} {queue} 60"
    daemon = tempestd_factory(front={"queue": queue, "timeout": "10", "redeliver_interval": "30"},
                              **{"worker:q": {"command": command, "numprocs": "2", "startsecs": "0.3"}})
    client = redis_server.client()
    wait_until(lambda: len(registered(client, queue)) == 2, timeout=20, message="two reliable workers")
    started = time.monotonic()
    status, _, body = http("GET", daemon.base + "/crash")
    assert status == 200 and daemon.info()["jobs_redelivered"] == 1
    dead = int(client.get(f"crashed:{queue}:/crash"))
    assert body.decode().startswith("/crash by ") and int(body.split()[-1]) != dead  # the other one
    # the dead worker is forgotten: registered again are the survivor and its restarted sibling
    wait_until(lambda: not any(m.decode().split(" ", 1)[1].split(":")[1] == str(dead)
                               for m in registered(client, queue)), message="the dead worker unregistered")
    print(f"answered {time.monotonic() - started:.2f} s after the request")


def test_a_job_past_its_deadline_is_not_run(tempestd_factory, redis_server, tmp_path):
    queue = "deadline"
    client = redis_server.client()
    client.rpush(queue, hand_job("/late", deadline=time.time() - 1), hand_job("/in-time", deadline=time.time() + 60),
                 hand_job("/no-deadline"))
    worker = start_worker(APP + [queue], redis_server.url, tmp_path)
    try:
        wait_until(lambda: client.llen(f"ran:{queue}") == 2, message="two jobs run")
        assert [u.decode() for u in client.lrange(f"ran:{queue}", 0, -1)] == ["/in-time", "/no-deadline"]
    finally:
        stop_groups([worker])
    with open(tmp_path / "worker.log") as log:
        text = log.read()
    assert "1 dropped past their deadline" in text  # the stop line's count
    assert "taken past its deadline (nobody waits for it): 1 so far" in text  # said when it happens


def test_a_job_whose_client_left_is_taken_back_from_its_queue(tempestd_factory, redis_server):
    queue = "left"
    daemon = tempestd_factory(front={"queue": queue, "timeout": "20"})
    client = redis_server.client()
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as sock:
        sock.sendall(b"GET /gone HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: client.llen(queue) == 1, message="the job on its queue")
    wait_until(lambda: daemon.info()["jobs_withdrawn"] == 1, message="the job taken back")
    assert client.llen(queue) == 0 and daemon.info()["clients_gone"] == 1


def test_workers_are_reliable_by_default_and_plain_with_tempest_reliable_0(redis_server, tmp_path):
    client = redis_server.client()
    default = start_worker(APP + ["by-default"], redis_server.url, tmp_path, "default", ready="worker on ")
    plain = start_worker(APP + ["plain"], redis_server.url, tmp_path, "plain", extra_env={"TEMPEST_RELIABLE": "0"},
                         ready="worker on ")
    try:
        wait_until(lambda: registered(client, "by-default"), message="the default worker registered")
        client.rpush("plain", hand_job("/p"))
        wait_until(lambda: client.llen("ran:plain") == 1, message="the plain worker ran its job")
        assert registered(client, "plain") == []
    finally:
        stop_groups([default, plain])


def test_a_post_whose_handler_exits_gets_502_and_leaves_nothing_to_run_again(tempestd_factory, redis_server, tmp_path):
    """sys.exit in a handler: the POST's client gets a 502 at once, the job is not given back."""
    queue = "exits"
    daemon = tempestd_factory(front={"queue": queue, "timeout": "20", "redeliver_interval": "0.2"})
    client = redis_server.client()
    worker = start_worker(APP + [queue], redis_server.url, tmp_path, ready="worker on ")
    try:
        wait_until(lambda: registered(client, queue), message="the worker registered")
        status, _, body = http("POST", daemon.base + "/exit", body=b"x")
        assert status == 502 and b"not run twice" in body and worker.wait(10) == 4
        assert registered(client, queue) == [] and client.keys(keys.processing(queue, "*")) == []
        assert client.llen(queue) == 0 and [u.decode() for u in client.lrange(f"ran:{queue}", 0, -1)] == ["/exit"]
        info = daemon.info()
        assert info["jobs_redelivered"] == 0 and info["jobs_refused"] == 0
    finally:
        kill_groups([worker])
