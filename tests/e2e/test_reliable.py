"""Reliable delivery end to end: a reliable worker killed with SIGKILL in the middle of a job,
its job given back by tempestd to another worker; a job that kills every worker ends in the
dead-letter list; a clean stop leaves nothing behind."""

import json
import os
import signal

from support import REPO, http, in_thread, start_worker, stop_group, stop_groups, wait_until

from tempest import keys

APP = [os.path.join(REPO, "tests", "workers", "reliable.py")]


def registered(client, *queues):
    """The registry's entries of these queues (every library worker registers now: other
    tests' workers share this Redis)."""
    return [m for m in client.smembers(keys.WORKERS) if m.decode().split(" ", 1)[0] in queues]


def test_the_job_of_a_killed_worker_is_answered_by_another(tempestd_factory, redis_server, tmp_path):
    daemon = tempestd_factory(front={"queue": "rel", "timeout": "20", "redeliver_interval": "0.3"})
    client = redis_server.client()
    first = start_worker(APP + ["rel"], redis_server.url, tmp_path, "first")
    try:
        wait_until(lambda: len(registered(client, "rel")) == 1, timeout=10)
        thread, result = in_thread(http, "GET", daemon.base + "/hold")
        processing = keys.processing("rel", "*")
        wait_until(lambda: any(client.llen(k) for k in client.keys(processing)), timeout=10)
        second = start_worker(APP + ["rel"], redis_server.url, tmp_path, "second")
        try:
            wait_until(lambda: len(registered(client, "rel")) == 2, timeout=10)
            os.killpg(first.pid, signal.SIGKILL)  # in the middle of the job
            first.wait(10)
            # the heartbeat expires (1 s), tempestd gives the job back, the second worker takes it
            wait_until(lambda: daemon.info()["jobs_redelivered"] == 1, timeout=10)
            client.rpush("gate:rel", 1)
            thread.join(15)
            status, _, body = result["value"]
            assert (status, body) == (200, f"done by {second.pid}".encode())
            assert len(registered(client, "rel")) == 1  # the dead one is forgotten
        finally:
            stop_group(second)
    finally:
        stop_group(first)


def test_a_job_that_kills_its_workers_goes_to_the_dead_letters(tempestd_factory, redis_server, tmp_path):
    # a job still on its queue at the route's timeout is taken back (a 503): each worker is up
    # before the job reaches it, and the timeout is longer than both deliveries
    daemon = tempestd_factory(front={"queue": "killer", "timeout": "5", "redeliver_interval": "0.3",
                                     "max_redeliveries": "1"})
    client = redis_server.client()
    workers = [start_worker(APP + ["killer"], redis_server.url, tmp_path, "w0")]
    try:
        wait_until(lambda: len(registered(client, "killer")) == 1, timeout=10, message="the first worker registered")
        thread, result = in_thread(http, "GET", daemon.base + "/crash")
        for attempt in range(2):  # the first delivery, then the one redelivery allowed
            assert workers[attempt].wait(15) == 3  # os._exit(3) in the handler
            if attempt == 0:  # the next one starts while the dead one's heartbeat expires
                workers.append(start_worker(APP + ["killer"], redis_server.url, tmp_path, "w1"))
            wait_until(lambda: daemon.info()["jobs_redelivered"] + daemon.info()["jobs_dead"] == attempt + 1,
                       timeout=10)
    finally:
        stop_groups(workers)
    assert daemon.info()["jobs_redelivered"] == 1 and daemon.info()["jobs_dead"] == 1
    [dead] = client.lrange(keys.dead("killer"), 0, -1)
    assert json.loads(dead)[1][0]["url"] == "/crash"
    assert client.llen("killer") == 0 and len(registered(client, "killer")) == 0
    thread.join(10)
    assert result["value"][0] == 504  # the client was answered in time, the job lived on


def test_a_reliable_worker_serves_several_queues(tempestd_factory, redis_server, tmp_path):
    daemon = tempestd_factory(front={"queue": "rela"}, **{"route:/b/": {"queue": "relb"}})
    client = redis_server.client()
    worker = start_worker(APP + ["rela,relb"], redis_server.url, tmp_path)
    try:
        client.rpush("gate:rela,relb", 1, 1)
        for path in ("/b/second-queue", "/first-queue"):  # the second is polled, the first blocks
            status, _, body = http("GET", daemon.base + path)
            assert (status, body) == (200, f"done by {worker.pid}".encode())
        assert len(registered(client, "rela", "relb")) == 2  # one member per queue
    finally:
        stop_group(worker)


def test_a_worker_taken_for_dead_registers_again(tempestd_factory, redis_server, tmp_path):
    daemon = tempestd_factory(front={"queue": "frozen", "redeliver_interval": "0.3"})
    client = redis_server.client()
    worker = start_worker(APP + ["frozen"], redis_server.url, tmp_path)
    try:
        wait_until(lambda: len(registered(client, "frozen")) == 1, timeout=10)
        os.killpg(worker.pid, signal.SIGSTOP)  # frozen past its 1 s heartbeat
        wait_until(lambda: len(registered(client, "frozen")) == 0, timeout=10)  # tempestd gave it up
        os.killpg(worker.pid, signal.SIGCONT)
        wait_until(lambda: len(registered(client, "frozen")) == 1, timeout=5)  # its next beat registers it
        client.rpush("gate:frozen", 1)
        assert http("GET", daemon.base + "/x")[0] == 200
    finally:
        stop_group(worker)


def test_a_clean_stop_leaves_nothing_behind(tempestd_factory, redis_server, tmp_path):
    tempestd_factory(front={"queue": "tidy"})
    client = redis_server.client()
    worker = start_worker(APP + ["tidy"], redis_server.url, tmp_path)
    try:
        wait_until(lambda: len(registered(client, "tidy")) == 1, timeout=10)
        [entry] = registered(client, "tidy")
        worker_id = entry.decode().split(" ", 1)[1]
        assert client.exists(keys.alive(worker_id))
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(10) == 0
    finally:
        stop_group(worker)  # not left registered for the next tests if this one fails
    assert len(registered(client, "tidy")) == 0 and not client.exists(keys.alive(worker_id))
    assert not client.keys(keys.processing("tidy", "*"))
