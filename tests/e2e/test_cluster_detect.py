"""tempestd pointed at a Redis Cluster node by a plain redis:// URL: it refuses to start with
one line that says to write redis+cluster://, and exit status 2, never "ready" followed by
MOVED errors; a redis+cluster:// URL naming a Redis that is not a cluster is refused the same
way. A single node started with --cluster-enabled yes says cluster_enabled:1 in INFO cluster,
which is what tempestd reads."""

import random
import socket
import subprocess

import pytest

from support import RedisServer, Tempestd, tempestd_command


def cluster_port():
    """A free port at most 55535 whose cluster bus port (10,000 above) is free too: Redis refuses
    cluster mode on a higher one."""
    for _ in range(100):
        port = random.randint(20000, 55535)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise AssertionError("no free port pair for a cluster node")


@pytest.fixture
def cluster_node(tmp_path):
    node = RedisServer(tmp_path / "node", port=cluster_port(), extra=["--cluster-enabled", "yes",
                                                 "--cluster-config-file", str(tmp_path / "node" / "nodes.conf")])
    node.start()
    yield node
    node.stop()


def test_a_cluster_node_is_refused_at_start(cluster_node, tmp_path):
    assert cluster_node.client().info("cluster")["cluster_enabled"] == 1  # what tempestd reads
    daemon = Tempestd(tmp_path / "t", cluster_node.url, front={"queue": "clustered"},
                      **{"worker:sleeper": {"command": "sleep 60"}})
    run = subprocess.run(tempestd_command() + ["-c", daemon.ini], capture_output=True, text=True, timeout=60,
                         start_new_session=True)
    assert run.returncode == 2
    output = run.stdout + run.stderr
    errors = [line for line in output.splitlines() if " ERROR " in line]
    assert len(errors) == 1, output
    assert errors[0].endswith(
        f"cannot start: Redis at {cluster_node.url} is a Redis Cluster node (INFO cluster: cluster_enabled:1): "
        f"write [redis] url = redis+cluster://127.0.0.1:{cluster_node.port} (other nodes after commas) to run on "
        "the cluster (docs/operations.md, \"Redis Cluster\")")
    assert "Traceback" not in output and "ready" not in output
    assert "spawned:" not in output  # refused before any worker was started


def test_a_cluster_url_naming_a_standalone_redis_is_refused(redis_server, tmp_path):
    url = f"redis+cluster://127.0.0.1:{redis_server.port}"
    daemon = Tempestd(tmp_path / "t", url, front={"queue": "not-clustered"})
    run = subprocess.run(tempestd_command() + ["-c", daemon.ini], capture_output=True, text=True, timeout=60,
                         start_new_session=True)
    assert run.returncode == 2
    output = run.stdout + run.stderr
    errors = [line for line in output.splitlines() if " ERROR " in line]
    assert len(errors) == 1, output
    assert f"cannot start: Redis at {url} cannot be used as a Redis Cluster: " in errors[0]
    assert "Cluster mode is not enabled" in errors[0]
    assert "Traceback" not in output and "ready" not in output


def test_a_standalone_redis_with_cluster_disabled_starts(tmp_path):
    """The same check passes on a plain Redis (the suite's tempestds all start on one; this
    one says so in INFO cluster explicitly)."""
    plain = RedisServer(tmp_path / "plain").start()
    try:
        assert plain.client().info("cluster")["cluster_enabled"] == 0
        daemon = Tempestd(tmp_path / "t", plain.url).start()
        try:
            assert "Cluster" not in daemon.log()
        finally:
            assert daemon.stop() == 0
    finally:
        plain.stop()
