"""Concurrency: many clients, several workers, every answer goes to the right request."""

import json
from concurrent.futures import ThreadPoolExecutor

from support import http, kill_groups, start_worker
from test_front import ECHO


def test_200_concurrent_requests_over_4_workers(tempestd_factory, redis_server, tmp_path):
    daemon = tempestd_factory(front={"queue": "load"})
    workers = [start_worker(ECHO + ["load"], redis_server.url, tmp_path, name=f"w{i}") for i in range(4)]
    try:
        def one(i):
            status, _, body = http("GET", daemon.base + f"/sleep/0.02?n={i}", timeout=60)
            return i, status, json.loads(body)

        with ThreadPoolExecutor(200) as pool:
            results = list(pool.map(one, range(200)))
        assert all(status == 200 for _, status, _ in results)
        assert all(answer["env"]["url"] == f"/sleep/0.02?n={i}" for i, _, answer in results)
        assert len({answer["job_id"] for _, _, answer in results}) == 200
        assert {answer["pid"] for _, _, answer in results} == {w.pid for w in workers}
        info = daemon.info()
        assert info["answers"] == 200 and info["answers_dropped"] == 0 and info["pending_jobs"] == 0
    finally:
        kill_groups(workers)
