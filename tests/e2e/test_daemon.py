"""tempestd as a program: command line, configuration errors, embedded Redis, signals."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from support import (REPO, RedisServer, free_port, http, kill_groups, render_ini, start_worker, stop_group,
                     tempestd_command, wait_until)
from test_front import ECHO, in_thread, take_job


def run_tempestd(*args, timeout=30):
    return subprocess.run(tempestd_command() + list(args), capture_output=True, text=True, timeout=timeout)


def test_version_from_console_script():
    import tempest

    result = run_tempestd("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"tempestd {tempest.__version__}"


def test_sample_conf_passes_check():
    result = run_tempestd("--check", "-c", os.path.join(REPO, "conf", "tempest.ini"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("OK")


@pytest.mark.parametrize("sections, expected", [
    ({"front": {"timout": "3"}}, "[front] timout: unknown key (did you mean 'timeout'?)"),
    ({"frnt": {"timeout": "3"}}, "[frnt]: unknown section (did you mean 'front'?)"),
    ({"front": {"max_body": "lots"}}, "[front] max_body: not a size in bytes (like 512, 64K, 10M, 1G): 'lots'"),
    ({"redis": {"embedded": "perhaps"}}, "[redis] embedded: not a boolean (yes/no): 'perhaps'"),
    ({"route:/api/": {"timeout": "2"}}, "[route:/api/] queue: required key is missing"),
])
def test_bad_ini_is_one_line_and_exit_2(tmp_path, sections, expected):
    path = render_ini(tmp_path / "bad.ini", sections)
    for args in (["-c", path], ["--check", "-c", path]):
        result = run_tempestd(*args)
        assert result.returncode == 2
        assert result.stderr == f"tempestd: {path} {expected}\n"
        assert "Traceback" not in result.stderr


def test_missing_ini_file(tmp_path):
    result = run_tempestd("-c", str(tmp_path / "nope.ini"))
    assert result.returncode == 2
    assert result.stderr.startswith(f"tempestd: {tmp_path / 'nope.ini'}: cannot read")


def test_unreachable_redis_is_exit_1(tmp_path):
    path = render_ini(tmp_path / "t.ini", {"redis": {"url": f"redis://127.0.0.1:{free_port()}/0"},
                                          "front": {"listen": "127.0.0.1:0"}})
    result = run_tempestd("-c", path)
    assert result.returncode == 1
    assert "cannot start: Redis at" in result.stderr
    assert "Traceback" not in result.stderr


def test_front_port_in_use_is_exit_1(tmp_path, redis_server):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = render_ini(tmp_path / "t.ini", {"redis": {"url": redis_server.url},
                                              "front": {"listen": f"127.0.0.1:{port}"}})
        result = run_tempestd("-c", path)
    assert result.returncode == 1
    assert f"front: 127.0.0.1:{port} is already in use" in result.stderr


def embedded_config(tmp_path, port):
    return {"redis": {"url": f"redis://127.0.0.1:{port}/0", "embedded": "yes", "data_dir": "data"},
            "front": {"queue": "emb"}}


def test_embedded_redis_serves_keeps_jobs_and_stops_last(tempestd_factory, tmp_path):
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    port = free_port()
    daemon = tempestd_factory(redis_url=f"redis://127.0.0.1:{port}/0",
                              redis={"embedded": "yes", "data_dir": "data"}, front={"queue": "emb", "timeout": "1"})
    client = redis.Redis(port=port)
    assert client.ping()
    assert "spawned: redis:0 pid=" in daemon.log()
    client.rpush("emb", b'["url", [{}], "nobody:0", "queued-job"]')  # a job no worker took yet
    assert client.config_get("appendonly")["appendonly"] in ("yes", b"yes")
    assert daemon.stop() == 0
    log = daemon.log()
    assert log.index("stopped: redis:0") < log.index("tempestd stopped")
    with pytest.raises(redis.ConnectionError):  # once: redis-py would retry a refused connection for seconds
        redis.Redis(port=port, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)).ping()
    daemon.start()  # the append-only file brings the queued job back
    assert redis.Redis(port=port).llen("emb") == 1


def test_embedded_redis_port_in_use_is_a_clear_error(tmp_path, redis_server):
    path = render_ini(tmp_path / "t.ini", {"redis": {"url": redis_server.url, "embedded": "yes", "data_dir": "d"},
                                          "front": {"listen": "127.0.0.1:0"}})
    result = run_tempestd("-c", path)
    assert result.returncode == 1
    assert f"embedded Redis: 127.0.0.1:{redis_server.port} is already in use" in result.stderr


def test_sigterm_lets_in_flight_requests_finish(tempestd_factory, redis_client):
    import redis

    daemon = tempestd_factory(front={"queue": "term"})
    thread, result = in_thread(http, "GET", daemon.base + "/inflight")
    _, _, respond_to, job_id = take_job(redis_client, "term")
    os.kill(daemon.proc.pid, signal.SIGTERM)
    wait_until(lambda: "SIGTERM: shutting down" in daemon.log(), message="SIGTERM seen")
    with pytest.raises(OSError):  # no longer accepting
        http("GET", daemon.base + "/new", timeout=2)
    host, port = respond_to.rsplit(":", 1)
    redis.Redis(host=host, port=int(port)).execute_command("url", job_id, json.dumps([200, {}, "finished"]))
    thread.join(10)
    assert result["value"][0] == 200 and result["value"][2] == b"finished"
    assert daemon.proc.wait(10) == 0


def test_a_connection_accepted_before_sigterm_gets_its_first_request_served(tempestd_factory, redis_client):
    """At shutdown, idle keep-alive connections close between two requests, but one accepted
    just before (no request yet: its client does not retry, as it would on a reused one) is
    served its first request, with Connection: close."""
    import redis

    daemon = tempestd_factory(front={"queue": "fresh"})
    fresh = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
    used = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
    try:
        used.sendall(b"GET /before HTTP/1.1\r\nHost: x\r\n\r\n")  # a keep-alive connection that served one
        _, _, respond_to, used_id = take_job(redis_client, "fresh")
        host, port = respond_to.rsplit(":", 1)
        answers = redis.Redis(host=host, port=int(port))
        answers.execute_command("url", used_id, json.dumps([200, {}, "before"]))
        assert used.recv(4096).endswith(b"before")
        thread, result = in_thread(http, "GET", daemon.base + "/inflight")  # keeps the shutdown waiting
        _, _, respond_to, job_id = take_job(redis_client, "fresh")
        os.kill(daemon.proc.pid, signal.SIGTERM)
        wait_until(lambda: "SIGTERM: shutting down" in daemon.log(), message="SIGTERM seen")
        fresh.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        assert used.recv(4096) == b""  # the idle keep-alive one is closed
        _, _, _, fresh_id = take_job(redis_client, "fresh")
        answers.execute_command("url", fresh_id, json.dumps([200, {}, "first"]))
        reply = b""
        while not reply.endswith(b"first"):
            chunk = fresh.recv(4096)
            assert chunk, reply
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 200") and b"Connection: close" in reply
        answers.execute_command("url", job_id, json.dumps([200, {}, "finished"]))
        thread.join(10)
        assert result["value"][0] == 200
    finally:
        fresh.close()
        used.close()
    assert daemon.proc.wait(15) == 0


def test_worker_finishes_its_job_on_sigterm_and_exits_0(tempestd_factory, redis_server, tmp_path):
    daemon = tempestd_factory(front={"queue": "wterm"})
    worker = start_worker(ECHO + ["wterm"], redis_server.url, tmp_path)
    try:
        thread, result = in_thread(http, "GET", daemon.base + "/sleep/1")
        wait_until(lambda: daemon.info()["jobs_pushed"] == 1 and redis_server.client().llen("wterm") == 0,
                   message="the worker took the job")
        os.kill(worker.pid, signal.SIGTERM)
        assert worker.wait(10) == 0
        thread.join(10)
        assert result["value"][0] == 200
    finally:
        stop_group(worker)


def test_hello_example_counts(tempestd_factory, redis_server, tmp_path):
    daemon = tempestd_factory(front={"queue": "hello"})
    worker = start_worker(["-m", "tempest.examples.hello", "hello"], redis_server.url, tmp_path)
    try:
        bodies = [http("GET", daemon.base + "/")[2] for _ in range(3)]
        assert bodies == [b"Hello world! #1", b"Hello world! #2", b"Hello world! #3"]
    finally:
        kill_groups([worker])


def test_worker_reconnects_after_redis_restart(tempestd_factory, tmp_path):
    own = RedisServer(tmp_path / "r").start()
    worker = start_worker(ECHO + ["reco"], own.url, tmp_path)
    try:
        daemon = tempestd_factory(redis_url=own.url, front={"queue": "reco"})
        assert http("GET", daemon.base + "/1")[0] == 200
        own.stop()
        own = RedisServer(tmp_path / "r", port=own.port).start()
        assert wait_until(lambda: http("GET", daemon.base + "/2", timeout=5)[0] == 200, 20, interval=0.2)
        assert worker.poll() is None
    finally:
        kill_groups([worker])
        own.stop()


def test_worker_import_has_no_gevent():
    code = "import sys, tempest.worker; print('gevent' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_an_ini_file_that_is_not_utf8_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "latin1.ini"
    path.write_bytes("[tempest]\nname = caf\u00e9\n".encode("latin-1"))
    result = run_tempestd("-c", str(path))
    assert result.returncode == 2
    assert result.stderr == f"tempestd: {path}: line 2: not UTF-8 text (byte 0xe9)\n"


def test_the_embedded_redis_password_is_not_on_a_command_line(tmp_path):
    from support import Tempestd, free_port

    port = free_port()
    daemon = Tempestd(tmp_path / "t", f"redis://:s3cret%40pw@127.0.0.1:{port}/0",
                      redis={"embedded": "yes", "data_dir": str(tmp_path / "data")}).start()
    try:
        pid = daemon.control("PID", "redis")[0]
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read()
        assert b"s3cret" not in cmdline
        conf = tmp_path / "data" / "tempest-auth.conf"
        assert os.stat(conf).st_mode & 0o077 == 0  # owner only
        import redis as redis_py
        assert redis_py.Redis(port=port, password="s3cret@pw").ping()  # the URL's password, decoded
        assert "s3cret" not in daemon.log()
    finally:
        daemon.stop()
