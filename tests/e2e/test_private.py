"""Private and per-user channels end to end (issue 15): a real tempestd, a real Redis, library
workers that log visitors in and answer authorize jobs, and a raw redis-py worker that stands
for a worker in another language.

A subscription (SSE or WebSocket) to a channel matching [pubsub] private is admitted only when
the visitor's session grants it (tempest:grants:<id>, written by the login handler) or the
authorize queue's worker allows it; live private streams are re-checked every grant_check
(0.5 s here), so that a revoke or a logout ends them within it."""

import json
import os
import re
import secrets
import subprocess
import threading
import time

import pytest
import redis
from wsproto.events import CloseConnection

from sseclient import SSE, WS
from support import REPO, http, kill_groups, missing_runtime, render_ini, session_cookie, start_worker, tempestd_command, wait_until

APP = [os.path.join(REPO, "tests", "workers", "private_app.py")]
SECRET = "the-secret-that-signs-private-0123"
GRANT_CHECK = 0.5


def settings(queue, authorize=True, **pubsub):
    private = {"private": "user.* team.*", "grant_check": str(GRANT_CHECK), "heartbeat": "0.5", "user_field": "user"}
    if authorize:
        private.update(authorize_queue=f"{queue}-auth", authorize_timeout="1")
    return {
        "front": {"queue": queue, "session_cookie": "sid", "session_ttl": "600", "session_secret": SECRET},
        "pubsub": {**private, **pubsub},
    }


@pytest.fixture
def site(tempestd_factory, redis_server, tmp_path, request):
    """A tempestd with private channels user.* and team.* and its HTTP worker; with the
    parameter "authorize" (the default: "grants"), an authorize queue and its worker too, which
    denies the channels user.* (so that the grants alone decide those)."""
    mode = getattr(request, "param", "grants")
    queue = re.sub(r"[^A-Za-z0-9_-]", "-", f"priv-{request.node.name}")[:50]
    daemon = tempestd_factory(**settings(queue, authorize=mode == "authorize"))
    workers = [start_worker(APP + [queue], redis_server.url, tmp_path, name="app", ready="worker on ")]
    if mode == "authorize":
        workers.append(start_worker(APP + [f"{queue}-auth"], redis_server.url, tmp_path, name="auth",
                                    ready="worker on "))
    daemon.queue, daemon.mode = queue, mode
    yield daemon
    kill_groups(workers)


BOTH = pytest.mark.parametrize("site", ["grants", "authorize"], indirect=True)
AUTHORIZE = pytest.mark.parametrize("site", ["authorize"], indirect=True)


def visit(daemon):
    """A new visitor: the value of its signed session cookie (``<id>.<mac>``)."""
    status, headers, body = http("GET", daemon.base + "/visit")
    assert status == 200, body
    session_id, cookie = session_cookie(headers)
    assert session_id, headers
    return cookie


def call(daemon, path, cookie):
    status, headers, body = http("GET", daemon.base + path, headers={"Cookie": f"sid={cookie}"})
    assert status == 200, (path, status, body)
    return body.decode(), headers


def sse(daemon, path, cookie=None, **headers):
    if cookie is not None:
        headers["Cookie"] = f"sid={cookie}"
    return SSE(daemon.port, path, headers=headers)


def ws(daemon, path, cookie=None):
    return WS(daemon.port, path, headers={"Cookie": f"sid={cookie}"} if cookie else None)


def status(client):
    return int(client.status_line.split()[1])


def refused(client):
    """The SSE client got the documented 403: a short text body."""
    assert status(client) == 403, client.status_line
    assert client.headers["content-type"].startswith("text/plain")
    body = client.buffer.decode()
    while len(body) < int(client.headers["content-length"]):
        body += client.sock.recv(4096).decode()
    assert body.startswith("403 Forbidden") and len(body) < 200, body
    return True


def streams(daemon, redis_server, client, channel):
    """The SSE client is open on ``channel`` and gets what is published to it."""
    assert status(client) == 200, client.status_line
    if not getattr(client, "opened", False):
        assert client.next() == {"comment": "ok"}
        client.opened = True
    text = f"to {channel} {secrets.token_hex(3)}"
    assert redis_server.client().publish(channel, json.dumps([text])) >= 1
    assert client.next_message() == {"data": text}
    return True


def ended_with_revoked(client, channel, within):
    """The stream gets ``event: revoked`` naming ``channel`` within ``within`` seconds, then closes."""
    started = time.monotonic()
    event = client.next_message(within + 2)
    elapsed = time.monotonic() - started
    assert event == {"event": "revoked", "data": channel}, event
    assert elapsed <= within, f"revoked after {elapsed:.2f}s, more than {within}s"
    assert client.next(3) is None and client.closed
    return elapsed


@BOTH
def test_no_grant_403_then_the_login_grants_it_and_only_to_that_visitor(site, redis_server):
    user = f"alice{secrets.token_hex(3)}"
    channel = f"user.{user}.inbox"
    cookie = visit(site)
    assert refused(sse(site, f"/sub/{channel}", cookie))
    assert call(site, f"/login/{user}", cookie)[0] == "logged in"  # the login handler grants user.<user>.*
    assert streams(site, redis_server, sse(site, f"/sub/{channel}", cookie), channel)  # the same visitor
    assert refused(sse(site, f"/sub/{channel}", visit(site)))  # another visitor
    assert refused(sse(site, f"/sub/{channel}"))  # no cookie
    session_id, mac = cookie.split(".")
    assert refused(sse(site, f"/sub/{channel}", f"{session_id}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}"))
    assert refused(sse(site, f"/sub/{channel}", session_id))  # the bare id, without its mac
    assert refused(sse(site, f"/sub/news,{channel}", visit(site)))  # one private channel refuses the stream
    public = sse(site, "/sub/news-" + user)  # public channels: anyone, as before
    assert streams(site, redis_server, public, "news-" + user)
    info = site.info()
    assert info["subscriptions_refused"] == 6 and info["responses_4xx"] >= 6
    log = wait_until(lambda: (text := site.log()).count("subscription refused") >= 6 and text)
    why = "no grant" if site.mode == "grants" else "denied by the authorize worker"
    assert re.search(rf"INFO tempest\.grants: subscription refused: 127\.0\.0\.1: session "
                     rf"{re.escape(session_id[:6])}… may not subscribe to {re.escape(channel)} \({why}\): 403", log), log
    assert session_id not in log  # a prefix at most, never the whole id


@BOTH
def test_websocket_refused_before_the_upgrade_then_closed_4403_on_revoke(site, redis_server):
    user = f"wendy{secrets.token_hex(3)}"
    channel = f"user.{user}.feed"
    cookie = visit(site)
    client = ws(site, f"/ws/{channel}", cookie)
    assert (client.accepted, client.status) == (False, 403)
    call(site, f"/login/{user}", cookie)
    client = ws(site, f"/ws/{channel}", cookie)
    assert client.accepted
    wait_until(lambda: redis_server.client().pubsub_numsub(channel)[0][1] == 1)
    redis_server.client().publish(channel, '["hi"]')
    assert client.receive() == '["hi"]'
    assert not ws(site, f"/ws/{channel}", visit(site)).accepted
    call(site, f"/revoke/user.{user}.*", cookie)
    started = time.monotonic()
    event = client.receive(GRANT_CHECK + 2)
    assert isinstance(event, CloseConnection) and event.code == 4403, event
    assert time.monotonic() - started <= GRANT_CHECK + 0.5
    assert site.info()["subscriptions_revoked"] == 1


@BOTH
def test_a_revoke_ends_the_stream_within_grant_check(site, redis_server):
    user = f"rob{secrets.token_hex(3)}"
    channel = f"user.{user}.inbox"
    cookie = visit(site)
    call(site, f"/login/{user}", cookie)
    call(site, f"/grant/team.{user}", cookie)  # another grant: a revoke takes back only its own
    client = sse(site, f"/sub/{channel}", cookie)
    assert streams(site, redis_server, client, channel)
    other = sse(site, f"/sub/team.{user}", cookie)
    assert streams(site, redis_server, other, f"team.{user}")
    assert json.loads(call(site, "/grants", cookie)[0]) == sorted([f"user.{user}.*", f"team.{user}"])
    call(site, f"/revoke/user.{user}.*", cookie)
    ended_with_revoked(client, channel, GRANT_CHECK + 0.5)
    assert refused(sse(site, f"/sub/{channel}", cookie))  # and a new subscription is refused
    assert streams(site, redis_server, other, f"team.{user}")  # still granted: still streaming
    assert site.info()["subscriptions_revoked"] == 1
    assert "subscription revoked" in site.log()


@BOTH
def test_a_logout_ends_every_private_stream_of_the_session(site, redis_server):
    user = f"lou{secrets.token_hex(3)}"
    cookie = visit(site)
    call(site, f"/login/{user}", cookie)
    client = sse(site, f"/sub/user.{user}.a", cookie)
    assert streams(site, redis_server, client, f"user.{user}.a")
    socket = ws(site, f"/ws/user.{user}.b", cookie)
    assert socket.accepted
    public = sse(site, f"/sub/public-{user}", cookie)
    assert streams(site, redis_server, public, f"public-{user}")
    session_id = cookie.split(".")[0]
    assert redis_server.client().exists(f"tempest:grants:{session_id}")
    call(site, "/logout", cookie)
    assert not redis_server.client().exists(f"tempest:grants:{session_id}", f"session:{session_id}")
    ended_with_revoked(client, f"user.{user}.a", GRANT_CHECK + 0.5)
    event = socket.receive(GRANT_CHECK + 2)
    assert isinstance(event, CloseConnection) and event.code == 4403
    assert streams(site, redis_server, public, f"public-{user}")  # a public stream is not the session's
    assert refused(sse(site, f"/sub/user.{user}.a", cookie))


def test_regenerate_keeps_the_grants_and_the_old_id_stops_granting(site, redis_server):
    user = f"reg{secrets.token_hex(3)}"
    cookie = visit(site)
    old_id = cookie.split(".")[0]
    body, headers = call(site, f"/login/{user}?regenerate", cookie)
    new_id, new_cookie = session_cookie(headers)
    assert body == "logged in" and new_id and new_id != old_id
    client = redis_server.client()
    assert client.smembers(f"tempest:grants:{new_id}") == {f"user.{user}.*".encode()}
    assert not client.exists(f"tempest:grants:{old_id}", f"session:{old_id}")
    assert 590 <= client.ttl(f"tempest:grants:{new_id}") <= 600  # the session's TTL
    assert streams(site, redis_server, sse(site, f"/sub/user.{user}.inbox", new_cookie), f"user.{user}.inbox")
    assert refused(sse(site, f"/sub/user.{user}.inbox", cookie))  # the id from before the login
    # a stream opened before a regeneration ends (its id no longer grants); the new cookie streams again
    live = sse(site, f"/sub/user.{user}.inbox", new_cookie)
    assert streams(site, redis_server, live, f"user.{user}.inbox")
    newer_id, _ = call(site, "/regenerate", new_cookie)[0], None
    assert client.smembers(f"tempest:grants:{newer_id}") == {f"user.{user}.*".encode()}
    ended_with_revoked(live, f"user.{user}.inbox", GRANT_CHECK + 0.5)


def test_the_grants_live_as_long_as_the_session(site, redis_server):
    user = f"ttl{secrets.token_hex(3)}"
    cookie = visit(site)
    call(site, f"/login/{user}", cookie)
    session_id = cookie.split(".")[0]
    client = redis_server.client()
    client.expire(f"tempest:grants:{session_id}", 100)
    call(site, "/visit", cookie)  # each request refreshes the session's TTL, and its grants'
    wait_until(lambda: client.ttl(f"tempest:grants:{session_id}") > 500, 5, message="the grants' TTL refreshed")


def authorize_log(redis_server, daemon):
    return [json.loads(raw) for raw in redis_server.client().lrange(f"authorize-log:{daemon.queue}-auth", 0, -1)]


@AUTHORIZE
def test_the_authorize_queue_allows_denies_and_times_out(site, redis_server):
    tag = secrets.token_hex(3)
    cookie = visit(site)
    session_id = cookie.split(".")[0]
    assert streams(site, redis_server, sse(site, f"/sub/team.open.{tag}", cookie, **{"X-Probe": "p1"}),
                   f"team.open.{tag}")
    jobs = authorize_log(redis_server, site)
    assert len(jobs) == 1
    action, request, respond_to, job_id = jobs[0]
    assert action == "authorize" and respond_to == f"127.0.0.1:{site.answer_port}" and isinstance(job_id, str)
    assert request["channel"] == f"team.open.{tag}"
    assert request["session"] == {"id": session_id, "ttl": 600}
    assert request["headers"]["x-probe"] == "p1" and request["deadline"] > time.time() - 5
    # the allow came with a ttl of 60 s: cached for this session, no second job
    assert streams(site, redis_server, sse(site, f"/sub/team.open.{tag}", cookie), f"team.open.{tag}")
    assert len(authorize_log(redis_server, site)) == 1
    other = visit(site)  # cached per session: another visitor is asked about
    assert streams(site, redis_server, sse(site, f"/sub/team.open.{tag}", other), f"team.open.{tag}")
    assert len(authorize_log(redis_server, site)) == 2

    assert refused(sse(site, f"/sub/team.closed.{tag}", cookie))
    assert refused(sse(site, f"/sub/team.closed.{tag}", cookie))  # the deny is cached too (ttl 60)
    assert len(authorize_log(redis_server, site)) == 3

    assert refused(sse(site, f"/sub/team.bad.{tag}", cookie))  # a malformed answer: denied
    started = time.monotonic()
    assert refused(sse(site, f"/sub/team.slow.{tag}", cookie))  # authorize_timeout = 1: denied
    assert 0.9 <= time.monotonic() - started < 2.5
    info = site.info()
    assert info["authorize_timeouts"] == 1 and info["bad_answers"] == 1
    log = site.log()
    assert "no answer to authorize job" in log and "within 1.0s: denied" in log
    assert "bad answer to authorize job" in log
    assert info["subscriptions_refused"] == 4


@AUTHORIZE
def test_an_authorize_allow_without_ttl_is_asked_again_and_a_deny_ends_the_stream(site, redis_server):
    channel = f"team.flag.{secrets.token_hex(3)}"
    cookie = visit(site)
    client = redis_server.client()
    client.set(f"flag:{channel}", "1")
    stream = sse(site, f"/sub/{channel}", cookie)
    assert streams(site, redis_server, stream, channel)
    wait_until(lambda: len(authorize_log(redis_server, site)) >= 3, 5, message="asked again at each check")
    assert streams(site, redis_server, stream, channel)  # still allowed
    client.set(f"flag:{channel}", "0")
    ended_with_revoked(stream, channel, 2 * GRANT_CHECK + 1)


@AUTHORIZE
def test_the_authorize_worker_reads_the_session(site, redis_server):
    user = f"mo{secrets.token_hex(3)}"
    cookie = visit(site)
    assert refused(sse(site, f"/sub/team.mine.{user}", cookie))  # not logged in: no user
    call(site, f"/login/{user}", cookie)
    assert streams(site, redis_server, sse(site, f"/sub/team.mine.{user}", cookie), f"team.mine.{user}")
    assert refused(sse(site, f"/sub/team.mine.someone-else", cookie))


def raw_authorize_worker(redis_url, queue, stop, allowed):
    """An authorize worker with nothing but redis-py and the protocol's text (docs/pubsub.md),
    as one in another language would be: BLPOP, decide, answer ``authorize <job_id> <json>``."""
    client = redis.Redis.from_url(redis_url)
    answerers = {}
    while not stop.is_set():
        popped = client.blpop([queue], timeout=1)
        if popped is None:
            continue
        action, args, respond_to, job_id = json.loads(popped[1])
        answer = {"allow": args[0]["channel"] in allowed, "ttl": 0}
        host, port = respond_to.rsplit(":", 1)
        answerer = answerers.setdefault(respond_to, redis.Redis(host=host, port=int(port), protocol=2))
        answerer.execute_command(action, job_id, json.dumps(answer))


def test_an_authorize_worker_in_another_language(tempestd_factory, redis_server):
    queue = f"priv-raw-{secrets.token_hex(3)}"
    daemon = tempestd_factory(**settings(queue, authorize_queue=f"{queue}-auth"))
    tag = secrets.token_hex(3)
    stop = threading.Event()
    worker = threading.Thread(target=raw_authorize_worker, daemon=True,
                              args=(redis_server.url, f"{queue}-auth", stop, {f"team.{tag}.yes"}))
    worker.start()
    try:
        assert streams(daemon, redis_server, sse(daemon, f"/sub/team.{tag}.yes"), f"team.{tag}.yes")  # no session
        assert refused(sse(daemon, f"/sub/team.{tag}.no"))
        client = ws(daemon, f"/ws/team.{tag}.yes")
        assert client.accepted
    finally:
        stop.set()
        worker.join(5)


def test_a_redis_cli_worker_answers_authorize(tempestd_factory, redis_server):
    """The shell's answer: redis-cli pops the job and sends ``authorize <job_id> <json>`` to the
    endpoint (the job's JSON cut apart with sed, as a shell script would)."""
    import shutil

    cli = shutil.which("redis-cli")
    if cli is None:
        missing_runtime("redis-cli (Debian's redis-tools; .ci/install-runtimes installs it)")
    queue = f"priv-cli-{secrets.token_hex(3)}"
    daemon = tempestd_factory(**settings(queue, authorize_queue=f"{queue}-auth", authorize_timeout="10"))
    script = (f'job=$({cli} -p {redis_server.port} --raw BLPOP {queue}-auth 10 | tail -n 1); '
              'id=$(printf "%s" "$job" | sed -E \'s/.*,"([^"]+)"\\]$/\\1/\'); '
              f'{cli} -p {daemon.answer_port} authorize "$id" \'{{"allow": true, "ttl": 30}}\'')
    shell = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        channel = f"team.cli.{secrets.token_hex(3)}"
        assert streams(daemon, redis_server, sse(daemon, f"/sub/{channel}"), channel)
        assert shell.wait(10) == 0
        assert shell.stdout.read().strip() == b"OK"
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait()


@BOTH
def test_per_user_channels(site, redis_server):
    user, other = f"ina{secrets.token_hex(3)}", f"ben{secrets.token_hex(3)}"
    cookie, cookie2 = visit(site), visit(site)
    assert refused(sse(site, "/sub/~inbox", cookie))  # no user in the session yet
    assert not ws(site, "/ws/~inbox", cookie).accepted
    call(site, f"/login/{user}", cookie)
    call(site, f"/login/{other}", cookie2)
    mine = sse(site, "/sub/~inbox", cookie)
    assert streams(site, redis_server, mine, f"user.{user}.inbox")  # the channel derived from the session
    theirs = sse(site, "/sub/~inbox,news", cookie2)
    assert streams(site, redis_server, theirs, f"user.{other}.inbox")
    socket = ws(site, "/ws/~alerts", cookie)
    assert socket.accepted
    wait_until(lambda: redis_server.client().pubsub_numsub(f"user.{user}.alerts")[0][1] == 1)
    redis_server.client().publish(f"user.{user}.alerts", '["alert"]')
    assert socket.receive() == '["alert"]'
    call(site, "/logout", cookie)  # the user field gone: the per-user streams end
    ended_with_revoked(mine, f"user.{user}.inbox", GRANT_CHECK + 0.5)
    assert isinstance(socket.receive(GRANT_CHECK + 2), CloseConnection)
    assert streams(site, redis_server, theirs, f"user.{other}.inbox")
    assert status(sse(site, "/sub/~", cookie2)) == 400


def test_odd_channel_names_and_grant_patterns(site, redis_server):
    """Channel names are literal: a name with fnmatch's characters matches a grant only as
    text; a user named * is granted user.[*].*, which matches only its own channels."""
    user = f"odd{secrets.token_hex(3)}"
    cookie = visit(site)
    call(site, f"/login/{user}", cookie)
    for name in ["user.*", f"user.{user[:-1]}%3F.inbox", f"user.[{user[0]}]{user[1:]}.x", "user.%2A", "user."]:
        assert refused(sse(site, f"/sub/{name}", cookie)), name  # not user.<user>.*: refused
    for name in [f"user.{user}.x%00y", f"user.{user}.x%0D%0Aevent:%20y", f"user.{user}.a%2Cuser.b.c%20"]:
        assert status(sse(site, f"/sub/{name}", cookie)) == 400, name  # control characters, a space
    star = visit(site)
    call(site, "/login/*", star)
    assert json.loads(call(site, "/grants", star)[0]) == ["user.[*].*"]
    assert refused(sse(site, f"/sub/user.{user}.inbox", star))
    assert streams(site, redis_server, sse(site, "/sub/user.*.inbox", star), "user.*.inbox")
    assert status(sse(site, f"/sub/User.{user}.inbox", visit(site))) == 200  # another channel: public
    many = ",".join(f"user.{user}.{i}" for i in range(17))  # over max_channels
    assert status(sse(site, f"/sub/{many}", cookie)) == 400


def test_private_channels_need_the_session_cookie(tmp_path, redis_server):
    ini = render_ini(tmp_path / "tempest.ini", {"redis": {"url": redis_server.url}, "pubsub": {"private": "user.*"}})
    result = subprocess.run(tempestd_command() + ["-c", ini], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"tempestd: {ini} [pubsub] private: needs [front] session_cookie "
                                     "(the session decides who may subscribe)")


def test_an_authorize_queue_nobody_serves_denies_in_time_and_keeps_no_job(tempestd_factory, redis_server):
    """A worker that never answers: each subscription waits authorize_timeout, is denied, and
    its job is taken back (the queue does not grow with refused subscriptions)."""
    queue = f"priv-none-{secrets.token_hex(3)}"
    daemon = tempestd_factory(**settings(queue, authorize_timeout="0.5"))
    channels = ",".join(f"team.none.{i}" for i in range(3))  # one job per channel, awaited together
    started = time.monotonic()
    assert refused(sse(daemon, f"/sub/{channels}"))
    assert 0.4 <= time.monotonic() - started < 1.5
    assert daemon.info()["authorize_timeouts"] == 3
    wait_until(lambda: redis_server.client().llen(f"{queue}-auth") == 0, 5, message="the jobs taken back")
    head = raw_head(daemon.port, "HEAD /sub/team.none.1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403 "), head


def raw_head(port, request):
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request.encode())
        return conn.recv(65536)


def test_a_durable_private_channel_replays_only_to_an_allowed_session(tempestd_factory, redis_server, tmp_path):
    queue = f"priv-dur-{secrets.token_hex(3)}"
    daemon = tempestd_factory(**settings(queue, authorize=False, durable="user.*"))
    worker = start_worker(APP + [queue], redis_server.url, tmp_path, name="app", ready="worker on ")
    try:
        from tempest.publish import Publisher

        user = f"dur{secrets.token_hex(3)}"
        channel = f"user.{user}.log"
        publisher = Publisher(redis_server.client(), patterns=[("user.*", 100)])
        first = publisher.publish(channel, "one")
        publisher.publish(channel, "two")
        stranger = sse(daemon, f"/sub/{channel}", visit(daemon), **{"Last-Event-ID": first})
        assert refused(stranger)  # no replay before the admission
        cookie = visit(daemon)
        call(daemon, f"/login/{user}", cookie)
        allowed = sse(daemon, f"/sub/{channel}", cookie, **{"Last-Event-ID": first})
        assert allowed.next() == {"comment": "ok"}
        assert allowed.next_message()["data"] == "two"
    finally:
        kill_groups([worker])


def test_a_name_after_the_tilde_cannot_reach_another_users_channel(site, redis_server):
    """The user "bob" asking for ~smith.inbox would get user.bob.smith.inbox, the inbox of the
    user "bob.smith": a name is letters, digits, '_' and '-' only (400 otherwise)."""
    bob = f"bob{secrets.token_hex(3)}"
    cookie, victim = visit(site), visit(site)
    call(site, f"/login/{bob}", cookie)
    call(site, f"/login/{bob}.smith", victim)
    for name in ["~smith.inbox", "~a%2Eb", "~x*", "~" + "n" * 65]:
        assert status(sse(site, f"/sub/{name}", cookie)) == 400, name
    assert streams(site, redis_server, sse(site, "/sub/~inbox", victim), f"user.{bob}.smith.inbox")


def test_a_grants_key_of_another_type_ends_only_that_sessions_streams(site, redis_server):
    """A key a buggy worker clobbered (a string where the grants' set was): that session's
    streams end and its new ones get 503; the other sessions' checks go on."""
    one, two = f"one{secrets.token_hex(3)}", f"two{secrets.token_hex(3)}"
    cookie, other = visit(site), visit(site)
    call(site, f"/login/{one}", cookie)
    call(site, f"/login/{two}", other)
    first = sse(site, f"/sub/user.{one}.x", cookie)
    assert streams(site, redis_server, first, f"user.{one}.x")
    second = sse(site, f"/sub/user.{two}.x", other)
    assert streams(site, redis_server, second, f"user.{two}.x")
    redis_server.client().set(f"tempest:grants:{cookie.split('.')[0]}", "clobbered")
    ended_with_revoked(first, f"user.{one}.x", GRANT_CHECK + 0.5)
    assert status(sse(site, f"/sub/user.{one}.x", cookie)) == 503
    assert streams(site, redis_server, second, f"user.{two}.x")
    call(site, f"/revoke/user.{two}.*", other)  # the checks go on for everyone else
    ended_with_revoked(second, f"user.{two}.x", GRANT_CHECK + 0.5)
    assert "cannot read its grants: WRONGTYPE" in site.log()


def test_an_authorize_worker_on_the_node_client(tempestd_factory, redis_server, tmp_path):
    """A shipped client of another language answers authorize jobs with nothing made for
    them: clients/node's worker.on('authorize', ...), its answer sent as `authorize <job_id>
    <json>` like any other."""
    import shutil

    node = shutil.which("node")
    client = os.path.join(REPO, "clients", "node")
    if node is None or not os.path.isdir(os.path.join(client, "node_modules", "redis")):
        from support import missing_runtime

        missing_runtime("node and clients/node/node_modules (npm install in clients/node)")
    queue = f"priv-node-{secrets.token_hex(3)}"
    daemon = tempestd_factory(**settings(queue))
    log = open(tmp_path / "node.log", "ab")
    proc = subprocess.Popen([node, os.path.join(REPO, "tests", "clients", "node", "authorize.js"), f"{queue}-auth"],
                            env=dict(os.environ, TEMPEST_REDIS_URL=redis_server.url), stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    daemon.queue = queue
    workers = [proc, start_worker(APP + [queue], redis_server.url, tmp_path, name="app", ready="worker on ")]
    try:
        tag = secrets.token_hex(3)
        cookie = visit(daemon)
        assert streams(daemon, redis_server, sse(daemon, f"/sub/team.{tag}.node-yes", cookie), f"team.{tag}.node-yes")
        assert refused(sse(daemon, f"/sub/team.{tag}.node-no", cookie))
        user = f"nod{tag}"
        assert refused(sse(daemon, f"/sub/team.mine.{user}", cookie))
        call(daemon, f"/login/{user}", cookie)
        assert streams(daemon, redis_server, sse(daemon, f"/sub/team.mine.{user}", cookie), f"team.mine.{user}")
        jobs = authorize_log(redis_server, daemon)
        channels = [job[1]["channel"] for job in jobs]
        assert channels[:4] == [f"team.{tag}.node-yes", f"team.{tag}.node-no", f"team.mine.{user}", f"team.mine.{user}"]
        # an allow without a ttl is asked again at each grant_check while its stream lives: on a
        # slow machine a check may come before the test looks (seen in a CI run)
        assert set(channels[4:]) <= {f"team.mine.{user}"}, channels  # node-yes was allowed for 30 s
        assert jobs[0][0] == "authorize" and jobs[0][1]["session"]["id"] == cookie.split(".")[0]
        assert daemon.info()["authorize_timeouts"] == 0
    finally:
        kill_groups(workers)
