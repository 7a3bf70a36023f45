"""Routing between workers: a job forwarded from worker to worker, a fan-out gathered, and the
answer endpoint's side of both (answers of other actions, gather results relayed to Redis)."""

import os

import pytest

from support import REPO, http, kill_groups, raw_exchange, start_worker, wait_until

APP = os.path.join(REPO, "tests", "workers", "routing.py")


@pytest.fixture
def site(tempestd_factory, redis_server, tmp_path, request):
    prefix = "route-" + request.node.name[5:30]
    daemon = tempestd_factory(front={"queue": prefix, "timeout": "5"})
    workers = [start_worker([APP, "front", prefix, prefix + "-greet"], redis_server.url, tmp_path, "front"),
               start_worker([APP, "greeter", prefix + "-greet"], redis_server.url, tmp_path, "greeter")]
    workers += [start_worker([APP, "squarer", f"{prefix}-sq{i}"], redis_server.url, tmp_path, f"sq{i}") for i in range(3)]
    daemon.prefix = prefix
    yield daemon
    kill_groups(workers)  # plain workers: their stop is not under test


def test_a_forwarded_job_is_answered_by_the_next_worker(site):
    status, headers, body = http("GET", site.base + "/hello")
    assert status == 200
    text = body.decode()
    assert text.startswith("greeted /hello from ")  # answered by the greeter, under its action
    assert site.info()["answers_dropped"] == 0


def test_a_failing_handler_of_a_forwarded_job_answers_500_at_once(site):
    status, _, body = http("GET", site.base + "/fail", timeout=4)  # the route's timeout is 5 s
    assert status == 500 and body == b"500 Internal Server Error\n"


def test_a_fan_out_is_gathered(site):
    queues = ",".join(f"{site.prefix}-sq{i}" for i in range(3))
    status, headers, body = http("GET", site.base + f"/gather?q={queues}")
    assert status == 200
    assert body == b"14" and headers["x-missing"] == ""  # 1 + 4 + 9


def test_a_part_that_misses_the_deadline_is_missing_not_a_hang(site, redis_client):
    queues = f"{site.prefix}-sq0,silent,{site.prefix}-sq2"  # nobody serves "silent"
    status, headers, body = http("GET", site.base + f"/gather?q={queues}&timeout=2", timeout=8)
    assert status == 200 and body == b"10" and headers["x-missing"] == "1"  # 1 + 9
    assert not redis_client.keys("tempest:gather:*")  # the gatherer removed its stream
    redis_client.delete("silent")


def test_gathered_answers_go_to_an_existing_stream_only(site, redis_client):
    key = "tempest:gather:{abc}"
    redis_client.xadd(key, {"part": "-1"})
    command = b"*3\r\n$6\r\nsquare\r\n$14\r\ngather:abc:7xy\r\n$1\r\n1\r\n"  # not gather:<gid>:<index>
    command += b"*3\r\n$6\r\nsquare\r\n$12\r\ngather:abc:2\r\n$4\r\n[42]\r\n"
    command += b"*3\r\n$6\r\nsquare\r\n$12\r\ngather:zzz:0\r\n$1\r\n1\r\n"  # nobody gathers zzz
    assert raw_exchange(site.answer_port, command, until_close=False).startswith(b"+OK\r\n+OK\r\n+OK\r\n")
    wait_until(lambda: redis_client.xlen(key) == 2, message="the answer added")
    assert [fields for _, fields in redis_client.xrange(key)][1] == {b"part": b"2", b"answer": b"[42]"}
    assert not redis_client.exists("tempest:gather:{zzz}")
    wait_until(lambda: site.info()["answers_dropped"] == 2, message="the two others dropped and counted")
    redis_client.delete(key)
