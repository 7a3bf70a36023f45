"""The answer endpoint as the clients of 2012 and of today see it."""

import socket
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from support import kill_groups, wait_until


@pytest.fixture
def daemon(tempestd_factory):
    """A tempestd of the test's own: for tests that count answers or declare actions (kept
    for good)."""
    return tempestd_factory(front={"queue": "answers"})


@pytest.fixture(scope="module")
def shared_daemon(module_tempestd_factory):
    """One tempestd for the tests that neither count nor declare: they read only their replies."""
    return module_tempestd_factory(front={"queue": "answers"})


def raw(port, data):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
        return reply


def command(*args):
    args = [a.encode() if isinstance(a, str) else a for a in args]
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def test_redis_py_8_resp3_greeting(shared_daemon):
    client = shared_daemon.answer_client(protocol=3, client_name="w1")
    assert client.ping() is True
    assert client.execute_command("url", "unknown-job", "[200, {}, \"x\"]") in (b"OK", "OK", True)
    assert client.client_getname() == b"w1"


def test_node_style_lowercase_info_gets_redis_version(shared_daemon):
    reply = raw(shared_daemon.answer_port, b"*1\r\n$4\r\ninfo\r\n")
    assert reply.startswith(b"$")
    assert b"redis_version:" in reply


def test_unknown_job_gets_ok_never_err(daemon):
    reply = raw(daemon.answer_port, command("url", "17", '[200, {}, "Hi"]'))
    assert reply == b"+OK\r\n"
    assert daemon.info()["answers_dropped"] == 1


def test_unknown_command_is_an_error_and_connection_survives(shared_daemon):
    reply = raw(shared_daemon.answer_port, b"*1\r\n$5\r\nBOGUS\r\n*1\r\n$4\r\nPING\r\n")
    assert reply.startswith(b"-ERR unknown command 'bogus'")
    assert reply.endswith(b"+PONG\r\n")


def test_a_mistyped_answer_command_is_an_error_not_a_dropped_answer(daemon):
    reply = raw(daemon.answer_port, command("ulr", "17", '[200, {}, "Hi"]'))
    assert reply.startswith(b"-ERR unknown command 'ulr', with args beginning with: '17'")
    assert daemon.info()["answers_dropped"] == 0


def test_declared_actions_are_answers_and_get_ok(daemon):
    before = raw(daemon.answer_port, command("thumbnail", "17", "[1]"))
    assert before.startswith(b"-ERR unknown command 'thumbnail'")
    reply = raw(daemon.answer_port, command("ACTIONS", "thumbnail", "Resize") + command("thumbnail", "17", "[1]")
                + command("resize", "18", "[2]"))
    assert reply == b"+OK\r\n+OK\r\n+OK\r\n"  # no job waits for them: dropped and counted, never -ERR
    assert daemon.info()["answers_dropped"] == 2


@pytest.mark.parametrize("names", [[], ["ping"], ["has space"], ["x" * 65]])
def test_bad_action_declarations_are_refused(shared_daemon, names):
    reply = raw(shared_daemon.answer_port, command("ACTIONS", *names))
    assert reply.startswith(b"-ERR")


def test_declared_actions_are_bounded(daemon):
    many = [f"a{i}" for i in range(300)]
    reply = raw(daemon.answer_port, command("ACTIONS", *many[:200]) + command("ACTIONS", *many[200:]))
    assert reply.startswith(b"+OK\r\n-ERR too many actions")


def test_greetings_of_other_clients(shared_daemon):
    commands = [[b"SELECT", b"0"], [b"CLIENT", b"SETNAME", b"ruby"], [b"CLIENT", b"SETINFO", b"lib-name", b"x"],
                [b"HELLO", b"2"], [b"ECHO", b"hi"], [b"QUIT"], [b"PING"]]
    data = b"".join(command(*c) for c in commands)
    reply = raw(shared_daemon.answer_port, data)
    assert reply.startswith(b"+OK\r\n+OK\r\n+OK\r\n*14\r\n")
    assert reply.endswith(b"$2\r\nhi\r\n+OK\r\n")  # nothing after QUIT


def test_inline_commands_for_telnet(shared_daemon):
    assert raw(shared_daemon.answer_port, b"PING\r\nping hello\r\n") == b"+PONG\r\n$5\r\nhello\r\n"


def test_protocol_garbage_closes_with_error(shared_daemon):
    reply = raw(shared_daemon.answer_port, b"*1\r\n:oops\r\n")
    assert reply.startswith(b"-ERR Protocol error")
    assert shared_daemon.info()["redis_version"]  # still serving


def test_password_required_when_configured(tempestd_factory, redis_client):
    daemon = tempestd_factory(front={"queue": "secret", "answer_password": "s3cret"})
    once = Retry(NoBackoff(), 0)  # redis-py retries a refused AUTH for about 4 s by default
    with pytest.raises(redis.AuthenticationError):
        daemon.answer_client(password="wrong", retry=once).ping()
    with pytest.raises(redis.AuthenticationError):  # HELLO 3 without AUTH, as Redis refuses it
        daemon.answer_client(retry=once).execute_command("url", "x", "[]")
    assert raw(daemon.answer_port, command("url", "x", "[]")).startswith(b"-NOAUTH")
    assert raw(daemon.answer_port, command("AUTH", "s3cret") + command("url", "x", "[]")) == b"+OK\r\n+OK\r\n"
    assert daemon.answer_client(password="s3cret").ping() is True
    assert daemon.answer_client(password="s3cret", protocol=3).ping() is True


def test_worker_library_answers_with_password(tempestd_factory, redis_server, tmp_path):
    import os

    from support import REPO, http, start_worker

    daemon = tempestd_factory(front={"queue": "secret2", "answer_password": "pw"})
    worker = start_worker([os.path.join(REPO, "tests", "workers", "echo.py"), "secret2"], redis_server.url,
                          tmp_path, extra_env={"TEMPEST_ANSWER_PASSWORD": "pw"})
    try:
        assert http("GET", daemon.base + "/pw")[0] == 200
    finally:
        kill_groups([worker])
    wait_until(lambda: worker.poll() is not None)


def test_the_worker_library_declares_the_actions_it_answers(daemon, redis_server, caplog):
    from tempest import Worker, jobs

    worker = Worker("answers-thumbs", redis_url=redis_server.url)

    @worker.on("thumbnail")
    def thumbnail(context, size):
        return {"size": size}

    job = jobs.encode_job("thumbnail", [64], f"127.0.0.1:{daemon.answer_port}", "t1")
    with caplog.at_level("WARNING", logger="tempest.worker"):
        worker.process(job)
        worker.flush()
    assert "refused" not in caplog.text  # without ACTIONS: "refused 1 of 1 answers: ERR unknown command"
    assert daemon.info()["answers_dropped"] == 1  # an answer, dropped since no request waits for it


def test_a_huge_bulk_is_refused_before_it_is_buffered(tempestd_factory):
    daemon = tempestd_factory(front={"queue": "answers-huge", "max_answer": "1M"})
    with socket.create_connection(("127.0.0.1", daemon.answer_port), timeout=5) as conn:
        conn.sendall(b"*3\r\n$3\r\nurl\r\n$2\r\n17\r\n$999999999999\r\n")
        chunk = b"x" * 65536
        reply = b""
        try:
            for _ in range(64):  # 4 MiB, four times max_answer: refused at the header, before
                conn.sendall(chunk)
        except OSError:  # closed by the endpoint while we write
            pass
        try:
            while part := conn.recv(65536):
                reply += part
        except OSError:
            pass
    assert reply.startswith(b"-ERR Protocol error: invalid bulk length: over ")
    assert daemon.info()["answer_connections_closed"] == 1


def test_before_auth_only_small_commands_within_a_deadline(tempestd_factory):
    daemon = tempestd_factory(front={"queue": "answers-noauth", "answer_password": "s3cret"})
    reply = raw(daemon.answer_port, b"*2\r\n$4\r\nAUTH\r\n$100000\r\n" + b"x" * 20000)
    assert reply.startswith(b"-ERR Protocol error: invalid bulk length: over 4096 bytes")
    with socket.create_connection(("127.0.0.1", daemon.answer_port), timeout=15) as conn:
        started = time.monotonic()
        assert conn.recv(100) == b""  # closed, without a word, after AUTH_TIMEOUT
        assert 9 < time.monotonic() - started < 14
    info = lambda: raw(daemon.answer_port, command("AUTH", "s3cret") + command("INFO"))  # noqa: E731
    wait_until(lambda: b"answer_connections_closed:2\r\n" in info())


def test_idle_connections_are_closed_and_the_count_is_capped(tempestd_factory):
    daemon = tempestd_factory(front={"queue": "answers-cap", "answer_max_connections": "3",
                                     "answer_idle_timeout": "1"})
    held = [socket.create_connection(("127.0.0.1", daemon.answer_port), timeout=5) for _ in range(3)]
    try:
        for conn in held:  # all three served
            conn.sendall(command("PING"))
            assert conn.recv(100) == b"+PONG\r\n"
        assert raw(daemon.answer_port, command("PING")) == b"-ERR max number of clients reached\r\n"
        for conn in held:  # silent for a second: closed
            assert conn.recv(100) == b""
        assert raw(daemon.answer_port, command("PING")) == b"+PONG\r\n"  # room again
    finally:
        for conn in held:
            conn.close()
    info = daemon.info()
    assert info["answer_connections_refused"] == 1 and info["answer_connections_closed"] == 3
