import os
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from support import LocalCluster, RedisServer, Tempestd, forget_dead_workers  # noqa: E402

# With PYTHONDONTWRITEBYTECODE (set on some machines, this one included), every tempestd, worker
# and CLI that the tests start compiles tempest from source: 0.1 s of CPU each, some 400 times a
# run. Their bytecode goes to a cache outside the tree instead (the tests' own process is left
# as it was started).
if os.environ.pop("PYTHONDONTWRITEBYTECODE", None):
    os.environ.setdefault("PYTHONPYCACHEPREFIX", os.path.join(tempfile.gettempdir(), f"tempest-tests-pycache-{os.getuid()}"))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One real redis-server for the session, on a free port; tests use their own queues."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def shared_cluster(tmp_path_factory):
    """One real Redis Cluster for the session (3 masters, no replicas: nothing to fail over);
    tests use their own queues and keys, and never stop a node (a fail-over test makes its own
    support.LocalCluster with replicas)."""
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"), masters=3, replicas=0).start()
    yield cluster
    cluster.stop()


@pytest.fixture(autouse=True)
def _forget_dead_workers(request):
    """After each test that used the session's Redis: what its killed reliable workers left
    there is removed (support.forget_dead_workers), so that no later test counts it."""
    server = request.getfixturevalue("redis_server") if "redis_server" in request.fixturenames else None
    yield
    if server is not None:
        client = server.client()
        try:
            forget_dead_workers(client)
        finally:
            client.close()


@pytest.fixture
def redis_client(redis_server):
    client = redis_server.client()
    yield client
    client.close()


def _tempestd_factory(directory, redis_server):
    started = []

    def factory(redis_url=None, start=True, env=None, **sections):
        daemon = Tempestd(directory / f"tempestd{len(started)}", redis_url or redis_server.url, env, **sections)
        started.append(daemon)
        return daemon.start() if start else daemon

    return factory, started


@pytest.fixture
def tempestd_factory(tmp_path, redis_server):
    """Start tempestd processes on rendered INI files; all are stopped at teardown."""
    factory, started = _tempestd_factory(tmp_path, redis_server)
    yield factory
    Tempestd.stop_all(started)


@pytest.fixture(scope="module")
def module_tempestd_factory(tmp_path_factory, redis_server):
    """tempestd_factory for a tempestd that a module's tests share, stopped after the last of
    them: only for tests that read what no test changes (static files, a fresh session each),
    never for ones that count or read its log."""
    factory, started = _tempestd_factory(tmp_path_factory.mktemp("module-tempestd"), redis_server)
    yield factory
    Tempestd.stop_all(started)


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (setup.cfg): two test processes per core, not one. The end-to-end tests
    mostly wait on the processes they start: with one per core, half the CPU stayed idle (on 2
    cores, the suite took 3:00-3:30 with 2 processes, 2:27 with 4). PYTEST_XDIST_AUTO_NUM_WORKERS
    still overrides it."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # xdist's own reading of it
    return 2 * (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
