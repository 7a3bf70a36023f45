"""The scenarios that every worker client's end-to-end tests share (tests/e2e/test_client_*.py):
reliable delivery by default and its opt-outs, low-priority jobs taken once the queues are
empty, a job past its deadline dropped unrun, request bodies spooled to a file or to Redis. Each
function runs one scenario with the same checks for every client, given what differs: an App
(how to start that client's test app, its reliable option spelled its way), the readers of a
body its test app offers, the line its log writes. Each client file keeps a test function per
scenario that calls one of them, so that a missing runtime skips (or fails) that file's tests."""

import dataclasses
import hashlib
import json
import os
import re
import signal
import socket
import time
import uuid
from typing import Callable

from support import hand_job, http, registered, wait_until

MiB = 1 << 20
CHUNK = 256 * 1024  # a Redis body's chunk (docs/protocol.md, "body_key")
SPOOLED = [("/file/", "body_file"), ("/redis/", "body_key")]  # (route, the form its handler sees)


def terminate_group(proc):
    """A clean stop as tempestd makes it: SIGTERM to the worker's process group; its exit status."""
    os.killpg(proc.pid, signal.SIGTERM)
    return proc.wait(10)


def log_of(directory, name):
    with open(os.path.join(str(directory), f"{name}.log"), encoding="utf-8", errors="replace") as handle:
        return handle.read()


@dataclasses.dataclass
class App:
    """A client's test app, as the scenarios start it.

    ``start(queues, name, option=None, env=None)`` spawns one on ``queues`` (comma-separated)
    in its own session, its output in ``directory``/<name>.log, killed at the test's teardown,
    and returns its Popen. ``option`` is the worker's own reliable setting, spelled as that
    client spells it: None (the client's default), "plain" or "reliable". ``stop(proc)`` stops
    one cleanly and returns its exit status."""

    start: Callable
    directory: str
    stop: Callable = terminate_group

    def log(self, name):
        return log_of(self.directory, name)


def record_job(tag, ran, deadline=None):
    """A url job pushed by hand (no answer wanted) for the test app's /record: its handler
    RPUSHes "<tag> <length of its processing list of each queue, joined by />" to ``ran``."""
    env = {"method": "GET", "url": f"/record?list={ran}&tag={tag}", "headers": {"host": "x"}}
    if deadline is not None:
        env["deadline"] = deadline
    return hand_job("url", [env], job_id=f"id-{tag}")


def low(queue):
    return "tempest:low:{" + queue + "}"


# reliable delivery, the default

OPT_OUTS = ["0", "false", "FALSE", "False", "no", "No", "NO", " off "]  # read case-blind, trimmed


def reliable_is_the_default(redis_client, app, prefix):
    """Reliable delivery unless TEMPEST_RELIABLE opts out (0, false, no, off) or the worker's
    own option does; that option wins over the environment both ways. A clean stop of a
    reliable worker gives back nothing, unregisters it and deletes its heartbeat."""
    ran = prefix + "-ran"
    cases = {"default": (None, {}, True)}  # name: (option, environment, reliable?)
    cases.update({f"env-{value.strip()}": (None, {"TEMPEST_RELIABLE": value}, False) for value in OPT_OUTS})
    cases.update({"option": ("plain", {}, False), "option-wins": ("reliable", {"TEMPEST_RELIABLE": "0"}, True)})
    try:
        workers = {}
        for name, (option, env, _) in cases.items():
            redis_client.rpush(f"{prefix}-{name}", record_job(name, ran))
            workers[name] = app.start(f"{prefix}-{name}", name, option, env)
        wait_until(lambda: redis_client.llen(ran) == len(cases), 20, message="every worker ran its job")
        recorded = dict(item.decode().split() for item in redis_client.lrange(ran, 0, -1))
        # a reliable worker runs the job from its processing list, a plain one (BLPOP) holds nothing
        assert recorded == {name: "1" if reliable else "0" for name, (_, _, reliable) in cases.items()}
        for name, (_, _, reliable) in cases.items():
            assert bool(registered(redis_client, f"{prefix}-{name}")) is reliable, name
        default = workers["default"]  # a clean stop: nothing given back, unregistered, no heartbeat
        assert app.stop(default) == 0
        assert not registered(redis_client, f"{prefix}-default")
        assert not redis_client.keys("tempest:processing:{" + prefix + "-*")
        assert not redis_client.keys(f"tempest:alive:*:{default.pid}:*")
    finally:
        redis_client.delete(ran)


# low-priority jobs


def low_jobs_after_the_queue(redis_client, app, prefix, mode):
    """One queue (``mode``: "reliable" or "plain"): a high job first, the normal ones, then
    the jobs of its low-priority list in order; a low job pushed to an idle worker is taken."""
    queue = f"{prefix}-{mode}"
    ran = queue + "-ran"
    redis_client.rpush(low(queue), record_job("low1", ran), record_job("low2", ran))
    redis_client.rpush(queue, record_job("normal1", ran), record_job("normal2", ran))
    redis_client.lpush(queue, record_job("high", ran))  # a high job, as tempestd pushes it: the head
    order = [(tag, queue) for tag in ("high", "normal1", "normal2", "low1", "low2")]
    _taken_in_order(redis_client, app, [queue], mode, ran, order, later=[("low3", queue)])


def low_jobs_after_the_queues(redis_client, app, prefix, mode):
    """Two queues (a worker on "<a>,<b>"): the queues in order, then their low lists in order;
    a low job pushed to an idle worker is taken, on either low list."""
    a, b = f"{prefix}-{mode}-a", f"{prefix}-{mode}-b"
    ran = f"{prefix}-{mode}-ran"
    redis_client.rpush(low(b), record_job("low-b1", ran), record_job("low-b2", ran))
    redis_client.rpush(low(a), record_job("low-a", ran))
    redis_client.rpush(b, record_job("normal-b", ran))
    redis_client.rpush(a, record_job("normal-a1", ran), record_job("normal-a2", ran))
    redis_client.lpush(a, record_job("high-a", ran))  # a high job, as tempestd pushes it: the head
    order = [("high-a", a), ("normal-a1", a), ("normal-a2", a), ("normal-b", b), ("low-a", a), ("low-b1", b),
             ("low-b2", b)]
    _taken_in_order(redis_client, app, [a, b], mode, ran, order, later=[("low-a2", a), ("low-b3", b)])


def _taken_in_order(redis_client, app, queues, mode, ran, order, later):
    """Start a worker on ``queues`` with its jobs pushed: they run in ``order`` [(tag, queue)];
    then each low job of ``later``, pushed while the worker idles, is taken within a second or so."""
    def held(queue):  # a job runs from the processing list of its own queue; a plain worker holds none
        return "/".join("1" if mode == "reliable" and q == queue else "0" for q in queues)

    try:
        app.start(",".join(queues), "prio", None, {"TEMPEST_RELIABLE": "0"} if mode == "plain" else {})
        wait_until(lambda: redis_client.llen(ran) == len(order), 20, message=f"the {len(order)} jobs run")
        assert [item.decode() for item in redis_client.lrange(ran, 0, -1)] == [f"{tag} {held(q)}" for tag, q in order]
        for tag, queue in later:  # idle, blocked on the queues: taken within about a second
            done = redis_client.llen(ran)
            redis_client.rpush(low(queue), record_job(tag, ran))
            wait_until(lambda: redis_client.llen(ran) == done + 1, 5, message=f"{tag} taken by the idle worker")
            assert redis_client.lindex(ran, -1).decode() == f"{tag} {held(queue)}"
        wait_until(lambda: not any(redis_client.keys("tempest:processing:{" + q + "}:*") for q in queues),
                   message="every job released")
        assert not redis_client.exists(*queues, *map(low, queues))
    finally:
        redis_client.delete(ran)


# deadlines

DROPPED = r"dropped job id-late0 taken \d+\.\d{3}s past its deadline \(1 dropped so far\)$"  # the first late job
DROPPED_AT_INFO = r" INFO .*" + DROPPED


def late_jobs_are_dropped(redis_client, app, queue, logged=DROPPED_AT_INFO):
    """Jobs taken past their env's deadline (Unix seconds, a float or an integer) are dropped
    unrun and released like answered ones, the others run; the last line counts the dropped
    ones, and one line (a pattern: ``logged``) tells of the first at info."""
    ran = queue + "-ran"
    try:
        worker = app.start(queue, "deadline")
        wait_until(lambda: registered(redis_client, queue), 15, message="the worker registered")
        now = time.time()
        late = [record_job(f"late{i}", ran, deadline=now - 5) for i in range(2)]
        late.append(record_job("late2", ran, deadline=int(now) - 5))  # an integer deadline too
        redis_client.rpush(queue, *late)
        wait_until(lambda: "dropped job id-late0" in app.log("deadline"), message="the late job dropped")
        # released like an answered job, not left in the processing list (nor given back)
        processing = "tempest:processing:{" + queue + "}:*"
        wait_until(lambda: not redis_client.keys(processing) and not redis_client.llen(queue),
                   message="the late jobs released")
        redis_client.rpush(queue, record_job("due", ran, deadline=time.time() + 60),
                           record_job("due-int", ran, deadline=int(time.time()) + 60), record_job("undated", ran))
        wait_until(lambda: redis_client.llen(ran) == 3, message="the jobs within their deadline run")
        assert redis_client.lrange(ran, 0, -1) == [b"due 1", b"due-int 1", b"undated 1"]  # the late ones never ran
        assert app.stop(worker) == 0
        log = app.log("deadline")
        assert "worker stopped after 3 jobs (3 dropped past their deadline)" in log
        [line] = [line for line in log.splitlines() if "past its deadline" in line]  # one line for the 3 jobs
        assert re.search(logged, line), line
    finally:
        redis_client.delete(ran)


# spooled request bodies (issue 11, item 3)


def spool_routes(queue):
    """/file/ spools a body over 64K to a file, /redis/ to Redis in chunks: both to ``queue``."""
    return {"route:/file/": {"queue": queue, "spool": "yes", "spool_over": "64K", "max_body": "16M"},
            "route:/redis/": {"queue": queue, "spool": "redis", "spool_over": "64K", "max_body": "16M"}}


def spooling_front(tempestd_factory, client, timeout="20"):
    """tempestd with the spool_routes on a queue of its own (a parametrized test's name is the
    same for each of its cases): ``daemon.queue``, for the client's test app to serve."""
    queue = f"{client}-spool-{uuid.uuid4().hex[:8]}"
    daemon = tempestd_factory(front={"queue": queue, "timeout": timeout}, **spool_routes(queue))
    daemon.queue = queue
    return daemon


def digest_of(data, form):
    """What the test apps' .../digest answers for a body ``data`` that came in ``form``."""
    return {"form": form, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def a_spooled_upload_is_read(site, route, form, reader):
    data = os.urandom(3 * MiB + 4321)
    status, _, body = http("POST", f"{site.base}{route}digest?reader={reader}", data, timeout=30)
    assert status == 200, body
    assert json.loads(body) == digest_of(data, form)


def inline_bodies_are_read(site, reader):
    """Bodies up to spool_over (64K) come inline, read by the same handler code."""
    cases = [("/file/", b"small \xc3\xa9 text", "body"), ("/redis/", b"\xff\x00 not UTF-8", "body_base64"),
             ("/redis/", os.urandom(64 * 1024), "body_base64"), ("/file/", b"", "none")]
    for route, data, form in cases:
        status, _, body = http("POST", f"{site.base}{route}digest?reader={reader}", data)
        assert status == 200, body
        assert json.loads(body) == digest_of(data, form)


def a_body_gone_is_410(redis_client, queue, directory, reader, **endpoint):
    """Url jobs pushed by hand whose spooled body is gone or not as its token says (a missing
    file, key or chunk, a short file, another sha256) are answered 410 BodyGone; the same file
    with its true token is read. Returns the 410 answers' bodies {case: body}. ``endpoint``:
    answer_of's connections and timeout."""
    data = os.urandom(CHUNK + 1000)
    digest = hashlib.sha256(data).hexdigest()
    kept = directory / "kept.body"
    kept.write_bytes(data)
    partial = f"tempest:body:{{{queue}-partial}}"
    redis_client.rpush(partial, data[:CHUNK])  # chunk 1 of 2 missing
    env = {"method": "POST", "url": f"/file/digest?reader={reader}", "headers": {}}
    gone = {
        "missing file": {"body_file": {"path": str(directory / "no-such.body"), "size": len(data), "sha256": digest}},
        "missing key": {"body_key": {"key": partial + "-none", "size": len(data), "sha256": digest, "chunks": 2}},
        "missing chunk": {"body_key": {"key": partial, "size": len(data), "sha256": digest, "chunks": 2}},
        "short file": {"body_file": {"path": str(kept), "size": len(data) + 1, "sha256": digest}},
        "another sha256": {"body_file": {"path": str(kept), "size": len(data), "sha256": "0" * 64}},
    }
    answers = {}
    try:
        for case, token in gone.items():
            status, _, body = answer_of(redis_client, queue, {**env, **token}, **endpoint)
            assert (status, body.split(":")[0]) == (410, "BodyGone"), (case, body)
            answers[case] = body
        status, _, body = answer_of(redis_client, queue, {**env, "body_file": {"path": str(kept), "size": len(data),
                                                                               "sha256": digest}}, **endpoint)
        assert (status, json.loads(body)) == (200, digest_of(data, "body_file"))  # the true token: read
    finally:
        redis_client.delete(partial)
    return answers


# answers caught by hand


def answer_commands(redis_client, queue, action, args, job_id="by-hand", connections=1, timeout=10):
    """Push a job by hand, its respond_to a minimal answer endpoint here that replies +OK to
    every command (AUTH, ACTIONS...) on up to ``connections`` connections (redis-cli opens one
    per command), and return the commands the worker sent, up to its first url answer."""
    import hiredis

    received = []
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(timeout)
        redis_client.rpush(queue, hand_job(action, args, "127.0.0.1:%d" % server.getsockname()[1], job_id))
        for _ in range(connections):
            conn, _ = server.accept()
            with conn:
                conn.settimeout(timeout)
                reader = hiredis.Reader()
                while data := conn.recv(65536):
                    reader.feed(data)
                    while (command := reader.gets()) is not False:
                        conn.sendall(b"+OK\r\n")
                        received.append(command)
                        if command[0] == b"url":
                            return received
    raise AssertionError(f"the worker closed the answer connection without answering (after {received})")


def answer_of(redis_client, queue, env, **endpoint):
    """The answer ([status, headers, body]) a worker sends to a url job with ``env`` pushed by hand."""
    return json.loads(answer_commands(redis_client, queue, "url", [env], **endpoint)[-1][2])


# secrets

REDIS_SECRET = "client-redis-secret-0451"


def the_redis_password_stays_out_of_logs_and_argv(app, tempestd_factory, directory, queue, path="/secret"):
    """On a Redis that requires a password, the client's worker answers, logs its URL with the
    password as ***, and no process of its session (redis-cli children included) has the
    password in its command line, which ps shows to every user."""
    from support import RedisServer, kill_groups

    server = RedisServer(os.path.join(str(directory), "secret-redis"), extra=["--requirepass", REDIS_SECRET]).start()
    url = f"redis://:{REDIS_SECRET}@127.0.0.1:{server.port}/0"
    proc = None
    try:
        daemon = tempestd_factory(redis_url=url, front={"queue": queue, "timeout": "10"})
        proc = app.start(queue, "secret", env={"TEMPEST_REDIS_URL": url})
        wait_until(lambda: "worker on" in app.log("secret"), 30, message="the worker's start line")
        for i in range(5):
            status, _, body = http("GET", f"{daemon.base}{path}?n={i}")
            assert status == 200, body
            for command in _session_commands(proc.pid):
                assert REDIS_SECRET not in command, command
        log = app.log("secret")
        assert REDIS_SECRET not in log, log
        assert f":***@127.0.0.1:{server.port}" in log, log
        daemon.stop()
    finally:
        if proc is not None:
            kill_groups([proc])
        server.stop()


def _session_commands(session):
    """The command lines of the processes of a session (its leader's pid)."""
    commands = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rpartition(")")[2].split()
            if int(fields[3]) != session:  # the session id (after state, ppid, pgrp)
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                commands.append(handle.read().replace(b"\0", b" ").decode("utf-8", "replace"))
        except (OSError, IndexError, ValueError):
            continue
    return commands
