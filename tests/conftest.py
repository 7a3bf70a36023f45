import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from support import RedisServer, Tempestd  # noqa: E402


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One real redis-server for the session, on a free port; tests use their own queues."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server):
    client = redis_server.client()
    yield client
    client.close()


@pytest.fixture
def tempestd_factory(tmp_path, redis_server):
    """Start tempestd processes on rendered INI files; all are stopped at teardown."""
    started = []

    def factory(redis_url=None, start=True, env=None, **sections):
        daemon = Tempestd(tmp_path / f"tempestd{len(started)}", redis_url or redis_server.url, env, **sections)
        started.append(daemon)
        return daemon.start() if start else daemon

    yield factory
    Tempestd.stop_all(started)
