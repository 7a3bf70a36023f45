"""Redis Sentinel end to end: tempestd, a worker and tempest publish on a redis+sentinel:// URL
(a master, a replica and one Sentinel, all real redis-server processes), then a failover."""

import os
import signal
import subprocess
import threading
import time

import pytest

from support import (REPO, RedisServer, client_hello, free_port, http, kill_groups, redis_server_binary, start_worker,
                     stop_group, wait_until)

ECHO = [os.path.join(REPO, "tests", "workers", "echo.py")]


class SentinelServer:
    def __init__(self, directory, master_port):
        self.directory = str(directory)
        self.port = free_port()
        os.makedirs(self.directory, exist_ok=True)
        conf = os.path.join(self.directory, "sentinel.conf")
        with open(conf, "w") as handle:
            handle.write(f"port {self.port}\nbind 127.0.0.1\ndir {self.directory}\n"
                         f"sentinel monitor mymaster 127.0.0.1 {master_port} 1\n"
                         "sentinel down-after-milliseconds mymaster 2000\nsentinel failover-timeout mymaster 10000\n")
        self.proc = subprocess.Popen([redis_server_binary(), conf, "--sentinel", "--logfile",
                                      os.path.join(self.directory, "sentinel.log")],
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def client(self):
        import redis

        return redis.Redis(port=self.port, socket_timeout=5)

    def master(self):
        try:
            reply = self.client().execute_command("SENTINEL", "get-master-addr-by-name", "mymaster")
        except OSError:
            return None
        except Exception:  # redis errors while it starts
            return None
        return int(reply[1]) if reply else None


@pytest.fixture
def cluster(tmp_path):
    master = RedisServer(tmp_path / "master").start()
    replica = RedisServer(tmp_path / "replica", extra=["--replicaof", "127.0.0.1", str(master.port)]).start()
    sentinel = SentinelServer(tmp_path / "sentinel", master.port)
    try:
        wait_until(lambda: sentinel.master() == master.port, timeout=10, message="the Sentinel")
        wait_until(lambda: replica.client().info("replication")["master_link_status"] == "up", timeout=10,
                   message="the replica")
        # the Sentinel must know the replica before it can fail over to it
        wait_until(lambda: sentinel.client().execute_command("SENTINEL", "replicas", "mymaster"), timeout=15,
                   message="the Sentinel finding the replica")
        yield master, replica, sentinel
    finally:
        stop_group(sentinel.proc)
        replica.stop()
        master.stop()


def test_requests_through_sentinel_and_a_failover(cluster, tempestd_factory, tmp_path):
    master, replica, sentinel = cluster
    url = f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster/0"
    daemon = tempestd_factory(redis_url=url, front={"queue": "sentinel", "timeout": "10"})
    worker = start_worker(ECHO + ["sentinel"], url, tmp_path)
    try:
        assert http("GET", daemon.base + "/before")[0] == 200
        assert master.client().get("tempest:pubsub:durable") is not None  # tempestd wrote to the master
        sentinel.client().execute_command("SENTINEL", "FAILOVER", "mymaster")
        wait_until(lambda: sentinel.master() == replica.port, timeout=20, message="the failover")
        wait_until(lambda: replica.client().info("replication")["role"] == "master", timeout=20)
        wait_until(lambda: master.client().info("replication")["role"] == "slave", timeout=20,
                   message="the old master turned replica")
        # the old master is now a replica and the Sentinel closed its clients: tempestd's and the
        # worker's connections are found closed and replaced by ones to the new master
        for i in range(5):
            status, _, body = http("GET", daemon.base + f"/after/{i}")
            assert status == 200, body
        assert daemon.info()["push_errors"] == 0
    finally:
        kill_groups([worker])


def test_a_master_killed_under_load_fails_over_and_the_requests_recover(cluster, tempestd_factory, tmp_path):
    """SIGKILL of the master while four clients send requests: the Sentinel promotes the replica
    (down-after 2 s), tempestd and the worker follow it, and requests succeed again. The failed
    requests and the time to recovery are printed (they depend on the Sentinel's timing), not
    asserted; that every request succeeds again is."""
    master, replica, sentinel = cluster
    url = f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster/0"
    daemon = tempestd_factory(redis_url=url, front={"queue": "sentinel-load", "timeout": "5"})
    worker = start_worker(ECHO + ["sentinel-load"], url, tmp_path, ready="worker on ")
    results, stop = [], threading.Event()

    def load():
        while not stop.is_set():
            try:
                status = http("GET", daemon.base + "/load", timeout=10)[0]
            except OSError:
                status = 0
            results.append((time.monotonic(), status))

    clients = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    try:
        for client in clients:
            client.start()
        wait_until(lambda: sum(s == 200 for _, s in results) >= 20, timeout=20, message="load before the kill")
        killed = time.monotonic()
        os.killpg(master.proc.pid, signal.SIGKILL)
        master.proc.wait(10)
        wait_until(lambda: sentinel.master() == replica.port, timeout=30, message="the failover")
        # recovered: the last 40 answers, all after the failover, are 200s
        wait_until(lambda: len(results) > 40 and results[-40][0] > killed and all(s == 200 for _, s in results[-40:]),
                   timeout=40, message="every request succeeding again")
    finally:
        stop.set()
        for client in clients:
            client.join(15)
        kill_groups([worker])
    failed = [t for t, s in results if s != 200]
    recovered = max(failed) - killed if failed else 0.0
    print(f"failover under load: {len(results)} requests, {len(failed)} failed "
          f"({sorted({s for _, s in results if s != 200})}), all succeeding again {recovered:.2f} s after the kill")
    assert all(s == 200 for t, s in results if t < killed)


def test_a_bad_sentinel_url_is_a_config_error(tmp_path):
    from tempest import config

    path = tmp_path / "bad.ini"
    path.write_text("[redis]\nurl = redis+sentinel://127.0.0.1:26379\n")
    with pytest.raises(config.ConfigError, match="service"):
        config.load(str(path))


CLIENT_HELLO = ("go", "node", "php", "ruby")  # the clients that take redis+sentinel:// (the shell one does not)


def test_the_clients_follow_a_failover_through_the_sentinel(cluster, tempestd_factory):
    """The Go, Node, PHP and Ruby clients take redis+sentinel:// URLs: the hello worker of each,
    under one tempestd on the Sentinel's URL (a route and a queue each), answers before and
    after a failover (each new connection asks the Sentinel where the master is)."""
    master, replica, sentinel = cluster
    sections = {}
    for language in CLIENT_HELLO:
        queue = f"sentinel-{language}"
        sections[f"route:/{language}/"] = {"queue": queue}
        sections[f"worker:{language}"] = {"command": client_hello(language, queue)}
    url = f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster/0"
    daemon = tempestd_factory(redis_url=url, front={"queue": "sentinel-none", "timeout": "5"}, **sections)
    wait_until(lambda: daemon.log().count("worker on sentinel-") == len(CLIENT_HELLO), 30,
               message="the hello workers")

    def answered(language, path):
        status, _, body = http("GET", f"{daemon.base}/{language}/{path}", timeout=10)
        return status == 200 and body.startswith(b"Hello")

    for language in CLIENT_HELLO:
        assert answered(language, "before"), language
    sentinel.client().execute_command("SENTINEL", "FAILOVER", "mymaster")
    wait_until(lambda: sentinel.master() == replica.port, timeout=20, message="the failover")
    wait_until(lambda: master.client().info("replication")["role"] == "slave", timeout=20,
               message="the old master turned replica")
    for language in CLIENT_HELLO:
        wait_until(lambda: answered(language, "after"), 30, interval=0.5,
                   message=f"the {language} worker answering after the failover")
        for i in range(3):
            assert answered(language, f"after/{i}"), language
