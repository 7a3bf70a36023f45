"""The shell client (clients/shell: bash and redis-cli, no library) against a real tempestd and
redis-server: hello world from a [worker:] section, streams, sessions, publish, forward both
ways, a failing handler, reliable delivery (the default) and its opt-outs, low-priority jobs,
deadlines, SIGTERM mid-job, Redis restarted under the worker, request bodies spooled to a file or
to Redis written out by tempest_body."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import uuid

import pytest

from sseclient import SSE
from support import (REPO, RedisServer, hand_job, http, in_thread, kill_groups, registered, session_cookie, start_worker,
                     stop_group, wait_until)

pytest.register_assert_rewrite("client_cases")
import client_cases  # noqa: E402

HELLO = os.path.join(REPO, "clients", "shell", "hello.sh")
APP = os.path.join(REPO, "tests", "clients", "shell", "app.sh")
ROUTING = os.path.join(REPO, "tests", "workers", "routing.py")


@pytest.fixture(autouse=True)
def runtime():
    for program in ("bash", "redis-cli"):
        if shutil.which(program) is None:
            from support import missing_runtime

            missing_runtime(f"{program} is needed by the shell client")



def shell_worker(script, args, redis_url, directory, name="shell", extra_env=None):
    """bash SCRIPT ARGS... in its own session, output to NAME.log."""
    env = {**os.environ, "TEMPEST_REDIS_URL": redis_url, **(extra_env or {})}
    with open(os.path.join(str(directory), f"{name}.log"), "ab") as log:
        return subprocess.Popen(["bash", script, *args], env=env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def log_of(directory, name="shell"):
    with open(os.path.join(str(directory), f"{name}.log"), encoding="utf-8", errors="replace") as handle:
        return handle.read()


@pytest.fixture
def app(redis_server, tmp_path):
    """The shell test app for client_cases, killed at teardown: its reliable option is --plain
    (tempest_run --plain QUEUE) or --reliable."""
    started = []

    def start(queues, name, option=None, env=None):
        flags = [f"--{option}"] if option else []
        started.append(shell_worker(APP, [*flags, queues], redis_server.url, tmp_path, name, env))
        return started[-1]

    yield client_cases.App(start, tmp_path)
    kill_groups(started)


@pytest.fixture
def site(tempestd_factory, redis_server, tmp_path, request):
    """tempestd on queue shell-<test>, the test app of the shell client serving it."""
    queue = "shell-" + request.node.name[5:40]
    front = {"queue": queue, "timeout": "5"}
    front.update(getattr(request, "param", {}))
    daemon = tempestd_factory(front=front)
    worker = shell_worker(APP, [queue, queue + "-next"], redis_server.url, tmp_path)
    daemon.queue = queue
    wait_until(lambda: http("GET", daemon.base + "/ping", timeout=5)[0] == 200, 15, interval=0.1,
               message="the shell worker serving")
    yield daemon
    kill_groups([worker])  # a plain worker: its stop is not under test


def test_hello_world_under_tempestd(tempestd_factory):
    daemon = tempestd_factory(front={"queue": "shell-hello", "timeout": "5"},
                              **{"worker:hello": {"command": f"bash {HELLO} shell-hello", "numprocs": "2"}})
    bodies = set()
    for _ in range(6):
        status, headers, body = wait_until(lambda: http("GET", daemon.base + "/"), 15, interval=0.1)
        assert status == 200
        assert headers["content-type"] == "text/plain"
        bodies.add(body.decode())
    assert all(body.startswith("Hello from shell #") for body in bodies)
    assert "Hello from shell #1" in bodies
    assert len(bodies) >= 2  # the count goes up (two processes: each counts its own)
    assert daemon.info()["answers_dropped"] == 0


def raw_get(port, path, timeout=5):
    """GET over a raw socket; everything received until the server closed (or silence)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except socket.timeout:
            received += b"<silence>"
        return received


def test_a_streamed_answer_arrives_in_chunks(site):
    received = raw_get(site.port, "/stream")
    assert b"Transfer-Encoding: chunked" in received
    assert received.endswith(b"4\r\none\n\r\n4\r\ntwo\n\r\n0\r\n\r\n")  # both pieces, then the end


def test_a_failing_stream_is_aborted(site):
    received = raw_get(site.port, "/abort")
    assert b"200 OK" in received
    assert received.endswith(b"4\r\npart\r\n")  # cut: no last chunk, no silence


@pytest.mark.parametrize("site", [{"session_cookie": "sid", "session_secret": "client-tests-secret-0123456789"}], indirect=True)
def test_session_write_read_and_regenerate(site, redis_client):
    status, headers, body = http("GET", site.base + "/session/set?v=bob")
    assert status == 200 and body == b"stored"
    sid, value = session_cookie(headers)
    assert redis_client.hget(f"session:{sid}", "user") == b'["bob"]'
    assert 0 < redis_client.ttl(f"session:{sid}") <= 14 * 24 * 3600

    status, headers, body = http("GET", site.base + "/session/get", headers={"Cookie": f"sid={value}"})
    assert body == b"user=bob" and "set-cookie" not in headers  # the cookie round trip

    redis_client.hset(f"session:{sid}", "user", '["caf\\u00e9 \\"x\\""]')  # written by another client
    status, headers, body = http("GET", site.base + "/session/get", headers={"Cookie": f"sid={value}"})
    assert body == 'user=café "x"'.encode()

    status, headers, body = http("GET", site.base + "/session/regenerate", headers={"Cookie": f"sid={value}"})
    assert status == 200 and "x-tempest-session" not in headers
    new, new_value = session_cookie(headers)
    assert new != sid and len(new) == 22
    assert not redis_client.exists(f"session:{sid}")
    assert redis_client.hget(f"session:{new}", "user") == '["caf\\u00e9 \\"x\\""]'.encode()
    status, headers, body = http("GET", site.base + "/session/get", headers={"Cookie": f"sid={new_value}"})
    assert body == 'user=café "x"'.encode()
    redis_client.delete(f"session:{new}")


GRANTS_APP = r"""
# A test worker of the grants: bash grants-app.sh QUEUE; url jobs with a session, by path:
#   /grant?p=P&p=..., /revoke?p=P&p=... (P percent-encoded), /regenerate, /logout (clear),
#   anything else: nothing; then the answer: the session's grants, sorted, comma-separated
source "$TEMPEST_SHELL_CLIENT"
site() {
    local url path query pairs pair value patterns=()
    url=$(tempest_env_get url)
    path=${url%%\?*}
    query=${url#"$path"}; query=${query#\?}
    IFS='&' read -ra pairs <<<"$query"
    for pair in "${pairs[@]}"; do
        value=${pair#p=}
        [[ $pair == p=* ]] && patterns+=("$(printf '%b' "${value//%/\\x}")")
    done
    case $path in
    /grant) tempest_session_grant "${patterns[@]}" || return 1 ;;
    /revoke) tempest_session_revoke "${patterns[@]}" || return 1 ;;
    /regenerate) tempest_session_regenerate || return 1 ;;
    /logout) tempest_session_clear || return 1 ;;
    esac
    tempest_http 200 "$(tempest_session_grants | LC_ALL=C sort | paste -sd, -)" Content-Type text/plain
}
tempest_on url site
tempest_run --plain "$1"
"""


def grants_worker(tmp_path, url, queue, name="grants"):
    script = tmp_path / "grants-app.sh"
    script.write_text(GRANTS_APP)
    env = {"TEMPEST_SHELL_CLIENT": os.path.join(REPO, "clients", "shell", "tempest-worker.sh")}
    return shell_worker(str(script), [queue], url, tmp_path, name, env)


def grants_job(client, queue, sid, path):
    """(status, headers, body) of the grants app's answer to ``path`` for the session ``sid`` (ttl 600)."""
    env = {"method": "GET", "url": path, "headers": {}, "session": {"id": sid, "ttl": 600}}
    answer = client_cases.answer_commands(client, queue, "url", [env], connections=10, timeout=15)[-1][2]
    return json.loads(answer.decode("utf-8", "replace"))  # a grant's bytes as they are (not always UTF-8)


def test_session_grants_follow_a_regenerate_and_a_logout_removes_them(redis_server, redis_client, tmp_path):
    queue = "shell-grants"
    worker = grants_worker(tmp_path, redis_server.url, queue)
    try:
        sid = "G" * 11 + uuid.uuid4().hex[:11]
        grants = f"tempest:grants:{sid}"
        status, _, body = grants_job(redis_client, queue, sid, "/grant?p=user.42.*&p=team%207")
        assert (status, body) == (200, "team 7,user.42.*")
        assert redis_client.smembers(grants) == {b"user.42.*", b"team 7"} and 0 < redis_client.ttl(grants) <= 600
        status, _, _ = grants_job(redis_client, queue, sid, "/grant?p=news.*&p=bad%01")  # all checked, then written
        assert status == 500 and redis_client.smembers(grants) == {b"user.42.*", b"team 7"}
        assert grants_job(redis_client, queue, sid, "/revoke?p=team%207")[2] == "user.42.*"

        # regenerated without a hash (never written: "no such key" ignored), then with one: the grants move, TTL kept
        redis_client.expire(grants, 300)
        status, headers, body = grants_job(redis_client, queue, sid, "/regenerate")
        new = headers["X-Tempest-Session"]
        assert (status, body) == (200, "user.42.*") and new != sid
        assert not redis_client.exists(grants, f"session:{sid}")
        assert 290 < redis_client.ttl(f"tempest:grants:{new}") <= 300
        redis_client.hset(f"session:{new}", "user", '["bob"]')
        redis_client.expire(f"session:{new}", 500)
        status, headers, _ = grants_job(redis_client, queue, new, "/regenerate")
        newer = headers["X-Tempest-Session"]
        assert status == 200 and not redis_client.exists(f"session:{new}", f"tempest:grants:{new}")
        assert redis_client.hgetall(f"session:{newer}") == {b"user": b'["bob"]'}
        assert 490 < redis_client.ttl(f"session:{newer}") <= 500
        assert redis_client.smembers(f"tempest:grants:{newer}") == {b"user.42.*"}
        assert 290 < redis_client.ttl(f"tempest:grants:{newer}") <= 300

        # a logout: the hash and the grants gone
        status, _, body = grants_job(redis_client, queue, newer, "/logout")
        assert (status, body) == (200, "")
        assert not redis_client.exists(f"session:{newer}", f"tempest:grants:{newer}")
    finally:
        kill_groups([worker])


def test_publish_reaches_an_sse_client(site):
    channel = "shell-news"
    sse = SSE(site.port, f"/sub/{channel}")
    assert sse.next()["comment"] == "ok"
    status, _, body = http("GET", site.base + f"/publish?c={channel}")
    assert status == 200 and body.startswith(b"published ")
    event = sse.next()
    assert event["data"] == "hello from shell"
    sse.sock.close()


def test_publish_to_a_durable_channel_keeps_it(tempestd_factory, site, redis_client):
    # the site's tempestd has no durable channels; this one writes tempest:pubsub:durable
    durable = tempestd_factory(front={"queue": "shell-durable-unused"}, pubsub={"durable": "shell-kept.*"})
    channel = "shell-kept.a"
    sse = SSE(durable.port, f"/sub/{channel}")
    assert sse.next()["comment"] == "ok"
    status, _, body = http("GET", site.base + f"/publish?c={channel}")
    assert status == 200
    stream_id = body.decode().split()[1]
    event = sse.next()
    assert event["data"] == "hello from shell" and event["id"] == stream_id
    assert redis_client.xlen(f"tempest:stream:{{{channel}}}") == 1
    sse.sock.close()
    redis_client.delete(f"tempest:stream:{{{channel}}}")


def test_forward_to_a_python_worker(site, redis_server, tmp_path):
    greeter = start_worker([ROUTING, "greeter", site.queue + "-next"], redis_server.url, tmp_path, "greeter")
    try:
        status, _, body = http("GET", site.base + "/forward")
        assert status == 200
        assert body.decode().startswith("greeted /forward from ")  # the Python greeter answered
    finally:
        kill_groups([greeter])


def test_forward_from_a_python_worker(tempestd_factory, redis_server, tmp_path):
    queue = "shell-from-python"
    daemon = tempestd_factory(front={"queue": queue, "timeout": "5"})
    front = start_worker([ROUTING, "front", queue, queue + "-greet"], redis_server.url, tmp_path, "front")
    shell = shell_worker(APP, [queue + "-greet"], redis_server.url, tmp_path)
    try:
        status, _, body = http("GET", daemon.base + "/somewhere")
        assert status == 200 and body == b"greeted /somewhere by shell"  # under the greet action
        assert daemon.info()["answers_dropped"] == 0
    finally:
        kill_groups([front, shell])


def test_gather_from_two_parts_and_a_missing_one(site, redis_server, redis_client, tmp_path):
    queues = [f"{site.queue}-sq{i}" for i in range(2)]
    squarers = [start_worker([ROUTING, "squarer", queue], redis_server.url, tmp_path, f"sq{i}")
                for i, queue in enumerate(queues)]
    try:
        status, headers, body = http("GET", site.base + f"/gather?q={','.join(queues)}&timeout=5")
        assert status == 200 and body == b"5" and headers["x-missing"] == ""  # 1 + 4
        silent = f"{site.queue}-silent"  # nobody serves it
        status, headers, body = http("GET", site.base + f"/gather?q={queues[0]},{silent}&timeout=0.5", timeout=4)
        assert status == 200 and body == b"1" and headers["x-missing"] == "1"
        assert not redis_client.keys("tempest:gather:*")  # the gatherer removed its streams
        redis_client.delete(silent)
    finally:
        kill_groups(squarers)


def test_a_failing_handler_answers_500_and_the_worker_goes_on(site):
    status, headers, body = http("GET", site.base + "/fail", timeout=4)  # the route's timeout is 5 s
    assert status == 500 and body == b"500 Internal Server Error\n"
    assert headers["content-type"] == "text/plain"
    status, _, body = http("GET", site.base + "/after")
    assert status == 200 and body == b"hello /after"


# reliable delivery (the default), priorities, deadlines


def test_reliable_is_the_default_and_tempest_reliable_0_opts_out(app, redis_client):
    client_cases.reliable_is_the_default(redis_client, app, "shell-default")


@pytest.mark.parametrize("mode", ["reliable", "plain"])
def test_low_priority_jobs_are_taken_once_the_queues_are_empty(app, redis_client, mode):
    client_cases.low_jobs_after_the_queues(redis_client, app, "shell-prio", mode)


def test_a_job_past_its_deadline_is_dropped_without_running(app, redis_client):
    logged = r" info: dropped job id-late0 taken past its deadline \(1 dropped so far\)$"  # tempest_log's line
    client_cases.late_jobs_are_dropped(redis_client, app, "shell-deadline", logged)


def loop_of(shell):
    """The worker loop of a shell worker: the child of its shell that leads a process group of
    its own (tempest_run's set -m), with the heartbeat process and the job in hand in it."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == shell.pid and int(fields[2]) == int(entry):  # ppid, pgrp
                return int(entry)
    return None


def test_reliable_the_job_of_a_killed_worker_is_answered_by_another(tempestd_factory, redis_server, redis_client,
                                                                    tmp_path):
    queue = "shell-killed"
    daemon = tempestd_factory(front={"queue": queue, "timeout": "20", "redeliver_interval": "0.5"})
    env = {"TEMPEST_HEARTBEAT": "1"}
    first = shell_worker(APP, [queue], redis_server.url, tmp_path, "first", env)
    second = None
    try:
        wait_until(lambda: len(registered(redis_client, queue)) == 1, 15, message="the first registered")
        thread, result = in_thread(http, "GET", daemon.base + "/hold?s=3", timeout=25)
        wait_until(lambda: "hold started" in log_of(tmp_path, "first"), 10, message="the job in hand")
        [key] = redis_client.keys("tempest:processing:{shell-killed}:*")
        assert redis_client.llen(key) == 1 and f":{first.pid}:" in key.decode()
        assert 0 < redis_client.pttl(f"tempest:alive:{key.decode().split(':', 3)[3]}") <= 1000
        second = shell_worker(APP, [queue], redis_server.url, tmp_path, "second", env)
        wait_until(lambda: len(registered(redis_client, queue)) == 2, 15, message="the second registered")
        os.killpg(wait_until(lambda: loop_of(first), message="the first's loop"), signal.SIGKILL)  # mid-job
        thread.join(25)
        status, _, body = result["value"]
        assert (status, body) == (200, f"held by {second.pid}".encode())
        assert redis_client.hvals("tempest:deliveries:{shell-killed}") == [b"1"]  # given back once
        wait_until(lambda: len(registered(redis_client, queue)) == 1, 10, message="the dead one forgotten")
        os.killpg(second.pid, signal.SIGTERM)  # a clean stop: exit 0, nothing left behind
        assert second.wait(10) == 0
        assert not registered(redis_client, queue) and not redis_client.keys("tempest:processing:{shell-killed}:*")
    finally:
        kill_groups([first] + ([second] if second else []))


def test_sigterm_finishes_the_job_in_hand_and_exits_0(tempestd_factory, redis_server, tmp_path):
    queue = "shell-sigterm"
    daemon = tempestd_factory(front={"queue": queue, "timeout": "5"})
    worker = shell_worker(APP, [queue], redis_server.url, tmp_path)
    try:
        thread, result = in_thread(http, "GET", daemon.base + "/slow")
        wait_until(lambda: "slow job started" in log_of(tmp_path), 10, message="the slow job taken")
        os.killpg(worker.pid, signal.SIGTERM)  # the whole group, as tempestd stops its workers
        thread.join(10)
        assert result["value"][0] == 200 and result["value"][2] == b"slow done"
        assert worker.wait(10) == 0
        assert "worker stopped after 1 jobs" in log_of(tmp_path)
    finally:
        stop_group(worker)


def test_the_worker_serves_again_after_redis_restarts(tempestd_factory, tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    daemon = tempestd_factory(redis_url=server.url, front={"queue": "shell-restart", "timeout": "3"})
    worker = shell_worker(APP, ["shell-restart"], server.url, tmp_path)
    try:
        assert wait_until(lambda: http("GET", daemon.base + "/one", timeout=4), 15)[2] == b"hello /one"
        server.stop()
        wait_until(lambda: "Redis unreachable" in log_of(tmp_path), 10, message="the worker noticing")
        server = RedisServer(tmp_path / "redis", port=server.port).start()

        def served():
            try:
                status, _, body = http("GET", daemon.base + "/two", timeout=4)
            except OSError:
                return None
            return status == 200 and body == b"hello /two"

        wait_until(served, 30, interval=0.2, message="served again")
        assert worker.poll() is None
    finally:
        stop_group(worker)
        server.stop()


@pytest.mark.parametrize("mode", ["plain", "reliable"])
def test_an_error_reply_to_the_take_is_a_refusal_not_an_outage(app, redis_client, mode):
    """The queue's key a string: BLPOP (plain: redis-cli prints the error on stdout, status 0)
    or LMOVE (reliable: -e, on stderr, status 1) answers WRONGTYPE: logged at error as a
    refusal, retried every 2 s, never "Redis unreachable"; the key deleted, a job pushed by hand
    is run within a few seconds."""
    queue, ran = f"shell-refused-{mode}", f"shell-refused-{mode}-ran"
    redis_client.set(queue, "x")
    try:
        app.start(queue, "refused", mode)
        wait_until(lambda: app.log("refused").count("Redis refused to give jobs") >= 2, 15,
                   message="the refusal logged twice")
        log = app.log("refused")
        assert re.search(r" tempest-worker\[\d+\] error: Redis refused to give jobs: WRONGTYPE .*; retrying in 2\.0s$",
                         log, re.M), log
        assert "Redis unreachable" not in log
        redis_client.delete(queue)
        redis_client.rpush(queue, client_cases.record_job("fixed", ran))
        wait_until(lambda: redis_client.llen(ran) == 1, 5, message="the job run once the key is a list again")
        assert "Redis unreachable" not in app.log("refused")
    finally:
        redis_client.delete(queue, ran)


# spooled request bodies (issue 11, item 3)


@pytest.fixture
def spooling(app, tempestd_factory):
    """tempestd with a file-spooling and a Redis-spooling route, the shell test app on them."""
    daemon = client_cases.spooling_front(tempestd_factory, "shell", timeout="30")
    app.start(daemon.queue, "shell")
    wait_until(lambda: http("GET", daemon.base + "/ping", timeout=5)[0] == 200, 15, interval=0.1,
               message="the shell worker serving")
    return daemon


@pytest.mark.parametrize("reader", ["stdout", "file"])
@pytest.mark.parametrize("route, form", client_cases.SPOOLED)
def test_a_spooled_upload_is_read_by_the_handler(spooling, route, form, reader):
    client_cases.a_spooled_upload_is_read(spooling, route, form, reader)


@pytest.mark.parametrize("reader", ["stdout", "file"])
def test_an_inline_body_is_read_the_same_way(spooling, reader):
    client_cases.inline_bodies_are_read(spooling, reader)


@pytest.mark.parametrize("reader", ["stdout", "file"])
def test_a_spooled_body_gone_or_not_as_its_token_says_is_status_2(spooling, redis_client, tmp_path, reader):
    # redis-cli opens a connection per command
    answers = client_cases.a_body_gone_is_410(redis_client, spooling.queue, tmp_path, reader, connections=10,
                                              timeout=15)
    if reader == "file":  # tempest_body ran in the handler's shell: TEMPEST_BODY_ERROR says why
        assert all(body.startswith("BodyGone: spooled body ") for body in answers.values()), answers
    assert log_of(tmp_path).count("tempest_body: BodyGone: spooled body ") == len(answers)  # and on stderr


def test_the_redis_password_stays_out_of_logs_and_argv(app, tempestd_factory, tmp_path):
    client_cases.the_redis_password_stays_out_of_logs_and_argv(app, tempestd_factory, tmp_path, "shell-secret")


# Redis Cluster (docs/protocol.md, section 7), on the session's shared_cluster: no tempestd (its
# cluster mode is not there yet), jobs pushed by hand

CLUSTER_APP = r"""
# A test worker on a Redis Cluster: bash cluster-app.sh [--plain|--reliable] QUEUE[,QUEUE...]
#   /record?list=L&tag=T: RPUSH L "T <length of this worker's processing list of each queue, /-joined>"
#   /hold?s=S: logs "hold started", sleeps S s, answers
source "$TEMPEST_SHELL_CLIENT"
flags=()
while [[ ${1:-} == --* ]]; do flags+=("$1"); shift; done
IFS=, read -ra queues <<<"$1"
site() {
    local url query list tag queue held=()
    url=$(tempest_env_get url)
    query=${url#*\?}
    case ${url%%\?*} in
    /record)
        list=${query#list=} tag=${query##*tag=}
        for queue in "${queues[@]}"; do
            held+=("$(tempest_redis LLEN "tempest:processing:{$queue}:$TEMPEST_WORKER_ID")") || return 1
        done
        tempest_redis RPUSH "${list%%&*}" "$tag $(IFS=/; printf '%s' "${held[*]}")" >/dev/null || return 1
        ;;
    /hold)
        tempest_log info "hold started"
        sleep "${query#s=}"
        ;;
    esac
    tempest_http 200 done Content-Type text/plain
}
tempest_on url site
tempest_run "${flags[@]}" "${queues[@]}"
"""


def apart(cluster, name):
    """``name(i)`` for the first i whose two queues (a tuple) are served by different masters."""
    for i in range(100):
        a, b = name(i)
        if cluster.master_of(a).port != cluster.master_of(b).port:
            return name(i)
    raise AssertionError("no two queue names on different masters")


def test_cluster_queues_in_several_slots_and_a_killed_workers_job_on_its_master(shared_cluster, tmp_path):
    client = shared_cluster.client()
    tag = uuid.uuid4().hex[:6]
    script = tmp_path / "cluster-app.sh"
    script.write_text(CLUSTER_APP)
    started = []

    def start(queues, name, option=None, env=None):
        flags = [f"--{option}"] if option else []
        env = {"TEMPEST_SHELL_CLIENT": os.path.join(REPO, "clients", "shell", "tempest-worker.sh"), **(env or {})}
        started.append(shell_worker(str(script), [*flags, queues], shared_cluster.url, tmp_path, name, env))
        return started[-1]

    app = client_cases.App(start, tmp_path)
    worker_id = None
    try:
        for mode in ("reliable", "plain"):  # one worker on two queues of two masters: in order, low lists last
            a, _ = apart(shared_cluster, lambda i: (f"shell-cl{tag}{i}-{mode}-a", f"shell-cl{tag}{i}-{mode}-b"))
            client_cases.low_jobs_after_the_queues(client, app, a[:-len(f"-{mode}-a")], mode)
        assert "CROSSSLOT" not in app.log("prio")
        kill_groups(started)

        # reliable delivery: the job of a killed worker stays in its processing list, on its queue's master
        a, b = apart(shared_cluster, lambda i: (f"shell-cl{tag}-kill{i}-a", f"shell-cl{tag}-kill{i}-b"))
        worker = start(f"{a},{b}", "killed", None, {"TEMPEST_HEARTBEAT": "1"})
        wait_until(lambda: registered(client, b), 15, message="the worker registered")
        [entry] = registered(client, b)
        worker_id = entry.decode().split(" ", 1)[1]
        job = hand_job("url", [{"method": "GET", "url": "/hold?s=60", "headers": {}}])
        client.rpush(b, job)
        wait_until(lambda: "hold started" in log_of(tmp_path, "killed"), 10, message="the job in hand")
        os.killpg(wait_until(lambda: loop_of(worker), message="the worker's loop"), signal.SIGKILL)  # mid-job
        processing = "tempest:processing:{" + b + "}:" + worker_id
        master = shared_cluster.master_of(b)
        assert shared_cluster.master_of(processing).port == master.port != shared_cluster.master_of(a).port
        assert master.client().lrange(processing, 0, -1) == [job.encode()]  # read on that node itself
        assert not client.exists(b)
        wait_until(lambda: not client.exists(f"tempest:alive:{worker_id}"), 5, message="the heartbeat expired")
    finally:
        kill_groups(started)
        if worker_id is not None:  # what tempestd would have given back
            client.delete(f"tempest:processing:{{{b}}}:{worker_id}")
            client.srem("tempest:workers", f"{a} {worker_id}", f"{b} {worker_id}")


def test_cluster_session_regenerate_publish_and_the_password(shared_cluster, tmp_path):
    client = shared_cluster.client()
    tag = uuid.uuid4().hex[:6]
    queue, user, secret = f"shell-cl{tag}", f"shell-cl{tag}", f"cluster-secret-{tag}"
    plain, durable = f"shell-cl{tag}.plain", f"shellcldur{tag}.news"
    for master in shared_cluster.masters:  # a user of its own: the session's cluster keeps its default one
        master.client().execute_command("ACL", "SETUSER", user, "on", f">{secret}", "~*", "&*", "+@all")
    client.set("tempest:pubsub:durable", json.dumps([[f"shellcldur{tag}.*", 10]]))
    url = shared_cluster.url.replace("redis+cluster://", f"redis+cluster://{user}:{secret}@")
    subscriber = shared_cluster.masters[0].client().pubsub()  # any node hears every PUBLISH
    worker = shell_worker(APP, [queue], url, tmp_path, "clapp")
    grants_workers = []
    try:
        subscriber.subscribe(plain, durable)
        # a session regenerated: copied to the new id, whose slot is another, and the old one deleted
        sid = "S" * 11 + tag + "s" * 5
        value = '["caf\\u00e9 \\"x\\""]'
        client.hset(f"session:{sid}", mapping={"user": value, "raw": b"\xff\x01a\nb"})
        client.sadd(f"tempest:grants:{sid}", "user.42.*", 'team "7"', b"caf\xc3\xa9.\xff")  # and its grants
        env = {"method": "GET", "url": "/session/regenerate", "headers": {}, "session": {"id": sid, "ttl": 600}}
        answers = client_cases.answer_commands(client, queue, "url", [env], connections=10, timeout=15)
        status, headers, body = json.loads(answers[-1][2])
        new = headers["X-Tempest-Session"]
        assert (status, body) == (200, "regenerated") and new != sid and len(new) == 22
        assert client.hgetall(f"session:{new}") == {b"user": value.encode(), b"raw": b"\xff\x01a\nb"}  # byte for byte
        assert 0 < client.ttl(f"session:{new}") <= 600 and not client.exists(f"session:{sid}")
        assert client.smembers(f"tempest:grants:{new}") == {b"user.42.*", b'team "7"', b"caf\xc3\xa9.\xff"}
        assert 0 < client.ttl(f"tempest:grants:{new}") <= 600 and not client.exists(f"tempest:grants:{sid}")
        # a grant and a logout on the cluster: one DEL per key (two slots)
        grants_workers.append(grants_worker(tmp_path, url, queue + "-grants", "clgrants"))
        assert grants_job(client, queue + "-grants", new, "/grant?p=news.*")[0] == 200
        assert client.smembers(f"tempest:grants:{new}") == {b"news.*", b"user.42.*", b'team "7"', b"caf\xc3\xa9.\xff"}
        assert grants_job(client, queue + "-grants", new, "/logout")[0] == 200
        assert not client.exists(f"session:{new}") and not client.exists(f"tempest:grants:{new}")
        # publish: plain (to any node), then durable (the script on its stream's master)
        for channel in (plain, durable):
            env = {"method": "GET", "url": f"/publish?c={channel}", "headers": {}}
            answers = client_cases.answer_commands(client, queue, "url", [env], connections=10, timeout=15)
            assert json.loads(answers[-1][2])[0] == 200
        stream = f"tempest:stream:{{{durable}}}"
        [(stream_id, fields)] = shared_cluster.master_of(stream).client().xrange(stream)
        assert json.loads(fields[b"m"]) == ["hello from shell"]
        messages = []
        wait_until(lambda: messages.extend(m for m in [subscriber.get_message(timeout=0.1)] if m and m["type"] == "message")
                   or len(messages) == 2, 10, message="both messages heard")
        assert [(m["channel"].decode(), json.loads(m["data"])) for m in messages] == [
            (plain, ["hello from shell"]), (durable, ["$durable", stream_id.decode(), '["hello from shell"]'])]
        # the password: *** in the log, never in a command line (redis-cli gets it in REDISCLI_AUTH)
        log = log_of(tmp_path, "clapp")
        assert f"redis+cluster://{user}:***@127.0.0.1:" in log and secret not in log, log
        assert not [c for c in client_cases._session_commands(worker.pid) if secret in c]
        os.killpg(worker.pid, signal.SIGTERM)
        assert worker.wait(10) == 0 and not registered(client, queue)
    finally:
        kill_groups([worker, *grants_workers])
        subscriber.close()
        client.delete("tempest:pubsub:durable", f"tempest:stream:{{{durable}}}")
        for master in shared_cluster.masters:
            master.client().execute_command("ACL", "DELUSER", user)
