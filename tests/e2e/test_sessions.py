"""Sessions end to end: tempestd sets the cookie, a library worker reads and writes the
session:<id> hash, a login regenerates the id."""

import json
import os
import re

import pytest

from support import REPO, http, start_worker, stop_group

APP = [os.path.join(REPO, "tests", "workers", "sessions_app.py")]
COOKIE = re.compile(r"^sid=([A-Za-z0-9_-]{22}); Path=/; Max-Age=600; HttpOnly; SameSite=Lax$")


@pytest.fixture
def site(tempestd_factory, redis_server, tmp_path, request):
    queue = re.sub(r"[^A-Za-z0-9_-]", "-", f"sess-{request.node.name}")[:60]
    daemon = tempestd_factory(front={"queue": queue, "session_cookie": "sid", "session_ttl": "600"})
    worker = start_worker(APP + [queue], redis_server.url, tmp_path)
    yield daemon
    stop_group(worker)


def get(daemon, path, session_id=None, cookies=""):
    headers = {"Cookie": cookies or f"sid={session_id}"} if (session_id or cookies) else {}
    status, response_headers, body = http("GET", daemon.base + path, headers=headers)
    assert status == 200, body
    match = COOKIE.match(response_headers.get("set-cookie", ""))
    return body.decode(), (match.group(1) if match else None), response_headers


def test_a_new_session_then_the_same_one(site, redis_server):
    body, session_id, headers = get(site, "/count")
    assert body == "1" and session_id, headers.get("set-cookie")
    body, again, _ = get(site, "/count", session_id)
    assert body == "2" and again is None  # a known session: no new cookie
    assert get(site, "/count", cookies=f"theme=dark; sid={session_id}; x=1")[0] == "3"
    client = redis_server.client()
    assert client.hgetall(f"session:{session_id}") == {b"count": b"[3]"}  # the 2012 format
    assert 590 <= client.ttl(f"session:{session_id}") <= 600


@pytest.mark.parametrize("forged", ["../../etc/passwd", "short", "x" * 23, "a b c d e f g h i j k l", ""])
def test_a_malformed_session_id_gets_a_new_session(site, redis_server, forged):
    body, session_id, _ = get(site, "/count", cookies=f"sid={forged}")
    assert body == "1" and session_id and session_id != forged


def test_login_regenerates_the_id_and_keeps_the_fields(site, redis_server):
    _, before, _ = get(site, "/count")
    body, after, headers = get(site, "/login/bob", before)
    assert body == "logged in" and headers["x-done"] == "1"
    assert after and after != before
    assert "x-tempest-session" not in headers  # for the front only
    client = redis_server.client()
    assert not client.exists(f"session:{before}")
    assert json.loads(get(site, "/all", after)[0]) == {"count": 1, "user": "bob", "roles": ["reader", "writer"]}
    assert get(site, "/whoami", after)[0] == "bob"
    assert get(site, "/whoami", before)[0] == "nobody"  # the id from before the login is worth nothing
    assert get(site, "/logout", after)[0] == "bye"
    assert get(site, "/whoami", after)[0] == "nobody"


def test_no_sessions_without_session_cookie(tempestd_factory, redis_server, tmp_path):
    daemon = tempestd_factory(front={"queue": "nosess"})
    worker = start_worker(APP + ["nosess"], redis_server.url, tmp_path)
    try:
        status, headers, body = http("GET", daemon.base + "/count")
        assert (status, body) == (200, b"no session") and "set-cookie" not in headers
    finally:
        stop_group(worker)
