"""Sessions end to end: tempestd sets the signed cookie, a library worker reads and writes the
session:<id> hash, a login regenerates the id; a cookie that does not verify gets a new
session; a hash written without a TTL gets one."""

import base64
import hashlib
import hmac
import json
import os
import re
import signal

import pytest

from support import REPO, http, kill_groups, start_worker, wait_until

APP = [os.path.join(REPO, "tests", "workers", "sessions_app.py")]
COOKIE = re.compile(r"^sid=(([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{22})); Path=/; Max-Age=600; HttpOnly; SameSite=Lax$")
SECRET, OLD = "the-secret-that-signs-0123", "the-previous-secret-4567"


def mac(secret, session_id):
    """The mac as docs/protocol.md section 5 defines it, computed here independently."""
    digest = hmac.new(secret.encode(), session_id.encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def start_site(tempestd_factory, redis_server, tmp_path, queue, **front):
    front = {"queue": queue, "session_cookie": "sid", "session_ttl": "600", "session_secret": SECRET, **front}
    daemon = tempestd_factory(front=front)
    return daemon, start_worker(APP + [queue], redis_server.url, tmp_path)


@pytest.fixture
def site(tempestd_factory, redis_server, tmp_path, request):
    queue = re.sub(r"[^A-Za-z0-9_-]", "-", f"sess-{request.node.name}")[:60]
    daemon, worker = start_site(tempestd_factory, redis_server, tmp_path, queue)
    yield daemon
    kill_groups([worker])  # a plain worker: its stop is not under test


def get(daemon, path, cookie=None, cookies="", secret=SECRET):
    """(body, the new cookie's value or None, headers) of GET path with sid=<cookie>; a new
    cookie must be signed with ``secret``."""
    headers = {"Cookie": cookies or f"sid={cookie}"} if (cookie or cookies) else {}
    status, response_headers, body = http("GET", daemon.base + path, headers=headers)
    assert status == 200, body
    match = COOKIE.match(response_headers.get("set-cookie", ""))
    if match:
        assert match.group(3) == mac(secret, match.group(2))  # signed with the first secret, as documented
    return body.decode(), (match.group(1) if match else None), response_headers


def test_a_new_session_then_the_same_one(site, redis_server):
    body, cookie, headers = get(site, "/count")
    assert body == "1" and cookie, headers.get("set-cookie")
    session_id = cookie.split(".")[0]
    assert get(site, "/id", cookie)[0] == session_id  # the worker sees the bare id
    body, again, _ = get(site, "/count", cookie)
    assert body == "2" and again is None  # a known session: no new cookie
    assert get(site, "/count", cookies=f"theme=dark; sid={cookie}; x=1")[0] == "3"
    client = redis_server.client()
    assert client.hgetall(f"session:{session_id}") == {b"count": b"[3]"}  # the 2012 format
    assert 590 <= client.ttl(f"session:{session_id}") <= 600


@pytest.mark.parametrize("forged", ["../../etc/passwd", "short", "x" * 23, "a b c d e f g h i j k l", ""])
def test_a_malformed_session_id_gets_a_new_session(site, redis_server, forged):
    body, cookie, _ = get(site, "/count", cookies=f"sid={forged}")
    assert body == "1" and cookie and not cookie.startswith(forged or ".")


def test_a_forged_mac_gets_a_new_session(site, redis_server):
    _, cookie, _ = get(site, "/count")
    session_id, good = cookie.split(".")
    forged = f"{session_id}.{mac('a-secret-the-attacker-guessed', session_id)}"
    body, new, _ = get(site, "/count", forged)
    assert body == "1" and new and new.split(".")[0] != session_id  # not the victim's session
    flipped = f"{session_id}.{good[:-2]}{'B' if good[-2] == 'A' else 'A'}{good[-1]}"
    assert get(site, "/count", flipped)[0] == "1"
    assert get(site, "/count", cookie)[0] == "2"  # the real one still works
    log = wait_until(lambda: (text := site.log()).count("session cookie sid does not verify") >= 2 and text, 5)
    assert re.search(r"INFO tempest\.http\.forward: 127\.0\.0\.1: session cookie sid does not verify: a new session", log)
    assert session_id not in log  # neither the cookie's value nor its id is logged


def test_a_well_formed_id_without_mac_gets_a_new_session(site, redis_server):
    _, cookie, _ = get(site, "/login/alice")
    session_id = cookie.split(".")[0]
    body, new, _ = get(site, "/whoami", session_id)  # fixation: the bare id of someone's session
    assert body == "nobody" and new and new.split(".")[0] != session_id
    planted = "PlantedByTheAttacker01"
    body, new, _ = get(site, "/count", planted)
    assert body == "1" and new and new.split(".")[0] != planted
    assert not redis_server.client().exists(f"session:{planted}")


def test_rotation_a_cookie_signed_with_the_second_secret_verifies(tempestd_factory, redis_server, tmp_path):
    daemon, worker = start_site(tempestd_factory, redis_server, tmp_path, "sess-rotation",
                                session_secret=f"{SECRET}, {OLD}")
    try:
        session_id = "SignedWithTheOldSecret"
        redis_server.client().hset(f"session:{session_id}", "user", '["carol"]')
        body, new, _ = get(daemon, "/whoami", f"{session_id}.{mac(OLD, session_id)}")
        assert (body, new) == ("carol", None)
        body, new, _ = get(daemon, "/whoami", f"{session_id}.{mac('a-secret-no-longer-kept', session_id)}")
        assert body == "nobody" and new  # signed with the first secret (checked by get)
    finally:
        kill_groups([worker])


def test_the_secret_file_is_read_and_no_secret_is_ever_logged(tempestd_factory, redis_server, tmp_path):
    secrets = tmp_path / "secrets"
    secrets.write_text(f"{SECRET}\n{OLD}\n", encoding="utf-8")
    daemon, worker = start_site(tempestd_factory, redis_server, tmp_path, "sess-file", session_secret="",
                                session_secret_file=str(secrets))
    try:
        _, cookie, _ = get(daemon, "/count")
        session_id = cookie.split(".")[0]
        assert get(daemon, "/count", f"{session_id}.{mac(OLD, session_id)}")[0] == "2"
        get(daemon, "/count", f"{session_id}.{mac('not-one-of-the-secrets', session_id)}")
        log = daemon.log()  # log_level = debug
        assert "does not verify" in log and SECRET not in log and OLD not in log
    finally:
        kill_groups([worker])


def test_a_reload_rotates_the_secrets_of_the_file(tempestd_factory, redis_server, tmp_path):
    secrets = tmp_path / "secrets"
    secrets.write_text(f"{OLD}\n", encoding="utf-8")
    daemon, worker = start_site(tempestd_factory, redis_server, tmp_path, "sess-reload", session_secret="",
                                session_secret_file=str(secrets))
    try:
        _, cookie, _ = get(daemon, "/count", secret=OLD)
        secrets.write_text(f"{SECRET}\n{OLD}\n", encoding="utf-8")  # a new one first, the old one kept
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: daemon.log().count("reloaded:") == 1, 15, message="reload applied")
        assert get(daemon, "/count", cookie)[0:2] == ("2", None)  # the old cookie still verifies
        assert get(daemon, "/count")[1]  # a new one is signed with the new secret (checked by get)
        secrets.write_text(f"{SECRET}\n", encoding="utf-8")  # the old one dropped
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: daemon.log().count("reloaded:") == 2, 15, message="second reload applied")
        body, new, _ = get(daemon, "/count", cookie)
        assert body == "1" and new and new.split(".")[0] != cookie.split(".")[0]
    finally:
        kill_groups([worker])


def test_login_regenerates_the_id_and_keeps_the_fields(site, redis_server):
    _, before, _ = get(site, "/count")
    body, after, headers = get(site, "/login/bob", before)
    assert body == "logged in" and headers["x-done"] == "1"
    assert after and after.split(".")[0] != before.split(".")[0]  # a new id, signed (checked by get)
    assert "x-tempest-session" not in headers  # for the front only
    client = redis_server.client()
    assert not client.exists(f"session:{before.split('.')[0]}")
    assert 590 <= client.ttl(f"session:{after.split('.')[0]}") <= 600
    assert json.loads(get(site, "/all", after)[0]) == {"count": 1, "user": "bob", "roles": ["reader", "writer"]}
    assert get(site, "/whoami", after)[0] == "bob"
    assert get(site, "/whoami", before)[0] == "nobody"  # the id from before the login is worth nothing
    assert get(site, "/logout", after)[0] == "bye"
    assert get(site, "/whoami", after)[0] == "nobody"


def test_a_hash_written_without_a_ttl_gets_one(site, redis_server):
    """A 2012 client HSETs and never EXPIREs: the front's EXPIRE after the answer covers it."""
    body, cookie, _ = get(site, "/hset/first")
    key = f"session:{cookie.split('.')[0]}"
    client = redis_server.client()
    assert body == "written" and client.hget(key, "legacy") == b'["first"]'
    assert 590 <= wait_until(lambda: client.ttl(key) > 0 and client.ttl(key), 5) <= 600
    client.persist(key)  # as if it had lost it: the next request sets it again
    assert get(site, "/whoami", cookie)[0] == "nobody"
    assert 590 <= wait_until(lambda: client.ttl(key) > 0 and client.ttl(key), 5) <= 600


def test_session_cookie_without_a_secret_is_refused(tempestd_factory, redis_server):
    daemon = tempestd_factory(front={"session_cookie": "sid"}, start=False)
    daemon.start(wait=False)
    assert daemon.proc.wait(timeout=20) == 2
    assert "[front] session_secret: session_cookie needs session_secret or session_secret_file" in daemon.log()


def test_a_short_secret_is_refused_without_showing_it(tempestd_factory, redis_server):
    daemon = tempestd_factory(front={"session_cookie": "sid", "session_secret": f"{SECRET},tiny-secret"}, start=False)
    daemon.start(wait=False)
    assert daemon.proc.wait(timeout=20) == 2
    log = daemon.log()
    assert "[front] session_secret: secret 2 of 2 is 11 bytes" in log and "tiny-secret" not in log and SECRET not in log


def test_no_sessions_without_session_cookie(tempestd_factory, redis_server, tmp_path):
    daemon = tempestd_factory(front={"queue": "nosess"})
    worker = start_worker(APP + ["nosess"], redis_server.url, tmp_path)
    try:
        status, headers, body = http("GET", daemon.base + "/count")
        assert (status, body) == (200, b"no session") and "set-cookie" not in headers
    finally:
        kill_groups([worker])
