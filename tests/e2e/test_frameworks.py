"""Real web applications through tempest, end to end, compared with a reference server.

A Django project with the admin (tests/apps/djangosite: sessions in sqlite, CSRF on, DEBUG
off) goes through a login in a browser's order — the login page, POSTs refused for a missing
token and a foreign Origin, a wrong password, the login and its redirect, logged-in pages, the
logout — through tempestd and the gunicorn worker class, and through tempestd and
``python -m tempest.wsgi``; the same sequence against the project under wsgiref (the standard
library's reference WSGI server, tests/apps/wsgiref_server.py) gives the same statuses, headers
and bodies. (Django's test client is not the reference: it skips the CSRF checks unless told, and
never goes through HTTP.)

A Flask application (tests/apps/flaskapp.py) answers a set of requests through tempestd and the
gunicorn worker class as it does under gunicorn's own sync worker over HTTP, response by
response.

What is normalised before comparing, and why (each is per request or per server):
- a Set-Cookie's value when it is a secret made anew each time (Django's csrftoken and
  sessionid, Flask's signed session cookie, which holds a timestamp), and every cookie's
  ``expires`` date; the cookie's name and other attributes are compared;
- Django's CSRF token in the page (``csrfmiddlewaretoken`` value: masked anew per response);
- the ``Expires`` header's date (Django's never_cache: now), the order of the methods in
  ``Allow`` (werkzeug makes it from a set: each process orders it its own way);
- the headers each server owns: Date, Server, Connection and Keep-Alive. The framing is
  compared apart from the other headers, whose order it does not share (tempestd writes its
  own): chunked or not (a streamed body must be streamed by both) and the Content-Length.
"""

import json
import os
import re
import subprocess
import sys
import urllib.parse

import pytest

from support import REPO, kill_groups, missing_runtime, start_worker, stop_group, wait_until

from tempest import keys

APPS = os.path.join(REPO, "tests", "apps")
DJANGO_DIR = os.path.join(APPS, "djangosite")
PASSWORD = "c0rrect-horse-Battery"
OWN_HEADERS = {"date", "server", "connection", "keep-alive", "content-length", "transfer-encoding"}  # framing apart
SECRET_COOKIES = {"csrftoken", "sessionid", "session"}
CSRF_INPUT = re.compile(r'(name="csrfmiddlewaretoken" value=")[A-Za-z0-9]{64}(")')


def need(module):
    """Django and Flask come with the test extra: missing, the test is skipped (failed in CI)."""
    try:
        __import__(module)
    except ImportError:
        missing_runtime(f"{module} is not installed (pip install -e '.[test]')")


def exchange(base, method, path, body=None, headers=None, timeout=20):
    """One request on its own connection, its body bytes or a list of blocks (sent chunked):
    (status, [(lower-case name, value), ...] in order, repeats kept, body bytes: b"<incomplete>"
    and what came when the body was cut)."""
    import http.client

    parts = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        chunked = body is not None and not isinstance(body, bytes)  # blocks: sent chunked
        conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        response = conn.getresponse()
        try:
            data = response.read()
        except http.client.IncompleteRead as exc:  # the connection closed before the body's end
            data = b"<incomplete>" + exc.partial
        return response.status, [(k.lower(), v) for k, v in response.getheaders()], data
    finally:
        conn.close()


class Browser:
    """A client with a cookie jar (cookies set by the server, sent back on each request)."""

    def __init__(self, base):
        self.base = base
        self.cookies = {}

    def __call__(self, method, path, body=None, headers=None):
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        status, found, data = exchange(self.base, method, path, body, headers)
        for name, value in found:
            if name == "set-cookie":
                cookie, _, attributes = value.partition(";")
                key, _, val = cookie.strip().partition("=")
                if "max-age=0" in attributes.lower().replace(" ", "") or not val.strip('"'):
                    self.cookies.pop(key, None)  # deleted
                else:
                    self.cookies[key] = val
        return status, found, data


def header(found, name):
    values = [v for k, v in found if k == name]
    return values[-1] if values else None


def normalised(status, found, body):
    """A response as compared (see the module's docstring for what is normalised)."""
    kept = []
    for name, value in found:
        if name in OWN_HEADERS:
            continue
        if name == "set-cookie":
            value = _cookie(value)
        elif name == "expires":
            value = "<date>"
        elif name == "allow":  # werkzeug builds it from a set: its order is the process's hash seed
            value = ", ".join(sorted(value.split(", ")))
        kept.append((name, value))
    if b"csrfmiddlewaretoken" in body:
        body = CSRF_INPUT.sub(r"\1<csrf>\2", body.decode("utf-8")).encode("utf-8")
    chunked = "chunked" in (header(found, "transfer-encoding") or "")
    return {"status": status, "headers": kept, "chunked": chunked, "length": header(found, "content-length"),
            "body": body}


def _cookie(value):
    parts = [part.strip() for part in value.split(";")]
    name, _, cookie_value = parts[0].partition("=")
    if name in SECRET_COOKIES and cookie_value.strip('"'):
        parts[0] = f"{name}=<secret>"
    return "; ".join("expires=<date>" if part.lower().startswith("expires=") else part for part in parts)


def start_server(argv, log_path, pattern, env=None, timeout=30):
    """A server process in its own session, its output to ``log_path``; waits for the regular
    expression ``pattern`` in that log and returns (process, match)."""
    environment = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {}))
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, env=environment, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def started():
        if proc.poll() is not None:
            raise AssertionError(f"{argv} exited {proc.returncode}:\n{read(log_path)}")
        return re.search(pattern, read(log_path))

    try:
        return proc, wait_until(started, timeout, 0.05, message=f"{pattern!r} in {log_path}")
    except BaseException:
        stop_group(proc)
        raise


def read(path):
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.read()


def tempest_worker(kind, spec, queue, directory, redis_url, tmp_path, env):
    """The application on ``queue``: gunicorn's arbiter with tempest's worker class (two
    workers), or ``python -m tempest.wsgi``; returns the process once a worker takes jobs."""
    if kind == "gunicorn":
        argv = ["-m", "gunicorn", "-k", "tempest.gunicorn.Worker", "-w", "2", "-b", "127.0.0.1:0",
                "--no-control-socket", "--chdir", directory, spec]
    else:
        argv = ["-m", "tempest.wsgi", spec, "--queue", queue, "--chdir", directory]
    return start_worker(argv, redis_url, tmp_path, f"{kind}-{queue}", extra_env=dict(env, TEMPEST_QUEUE=queue),
                        ready=f"worker on {queue}")


def assert_same(reference, through_tempest):
    """The two transcripts [(label, response), ...] step by step (the first difference is shown
    with its step's name)."""
    assert [label for label, _ in through_tempest] == [label for label, _ in reference]
    for (label, expected), (_, got) in zip(reference, through_tempest):
        assert got == expected, label


# --- Django: the admin ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def django_site(tmp_path_factory):
    """The project's database (migrated, a superuser 'admin') and its environment."""
    need("django")
    directory = tmp_path_factory.mktemp("django")
    env = {"DJANGO_TEST_DB": str(directory / "db.sqlite3"), "DJANGO_SETTINGS_MODULE": "djangosite.settings"}
    manage = [sys.executable, os.path.join(DJANGO_DIR, "manage.py")]
    run_env = dict(os.environ, **env, DJANGO_SUPERUSER_PASSWORD=PASSWORD)
    for command in (["migrate", "--noinput"],
                    ["createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com"]):
        done = subprocess.run(manage + command, cwd=DJANGO_DIR, env=run_env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    return directory, env


@pytest.fixture(scope="module")
def django_reference(django_site):
    """The project under wsgiref over HTTP: its base URL."""
    directory, env = django_site
    proc, match = start_server([sys.executable, os.path.join(APPS, "wsgiref_server.py"), "--chdir", DJANGO_DIR,
                                "djangosite.wsgi:application"], directory / "wsgiref.log",
                               r"listening on (127\.0\.0\.1:\d+)", env)
    yield f"http://{match.group(1)}"
    stop_group(proc)


def csrf_token(body):
    found = re.search(rb'name="csrfmiddlewaretoken" value="([A-Za-z0-9]{64})"', body)
    assert found, body[:2000]
    return found.group(1).decode()


def admin_session(base):
    """A visit of the admin, in a browser's order; returns the transcript [(step, response)].
    Asserts what each step must show, so that a transcript that merely agrees (two servers
    failing alike) fails too."""
    browser = Browser(base)
    origin = {"Origin": base}  # what a browser sends with a form POST; Django checks it against Host
    form = {"Content-Type": "application/x-www-form-urlencoded", **origin}
    steps = []

    def step(label, method, path, fields=None, headers=None):
        body = urllib.parse.urlencode(fields).encode() if fields is not None else None
        status, found, data = browser(method, path, body, headers)
        steps.append((label, normalised(status, found, data)))
        return status, found, data

    status, found, _ = step("anonymous /admin/", "GET", "/admin/")
    assert (status, header(found, "location")) == (302, "/admin/login/?next=/admin/")
    status, found, page = step("login page", "GET", "/admin/login/?next=/admin/")
    assert status == 200 and b"Log in | Django site admin" in page and "csrftoken" in browser.cookies
    token = csrf_token(page)
    login = {"username": "admin", "password": PASSWORD, "next": "/admin/"}

    status, _, page = step("no CSRF token", "POST", "/admin/login/?next=/admin/", login, form)
    assert status == 403 and b"CSRF verification failed" in page
    status, _, page = step("foreign Origin", "POST", "/admin/login/?next=/admin/",
                           {"csrfmiddlewaretoken": token, **login},
                           {**form, "Origin": "http://evil.example"})
    assert status == 403 and b"CSRF verification failed" in page
    status, _, page = step("wrong password", "POST", "/admin/login/?next=/admin/",
                           {"csrfmiddlewaretoken": token, **login, "password": "wrong"}, form)
    assert status == 200 and b"Please enter the correct username and password" in page
    token = csrf_token(page)
    status, found, _ = step("login", "POST", "/admin/login/?next=/admin/", {"csrfmiddlewaretoken": token, **login},
                            form)
    assert (status, header(found, "location")) == (302, "/admin/"), found
    assert "sessionid" in browser.cookies

    status, _, page = step("admin index", "GET", "/admin/")
    assert status == 200 and b"Site administration" in page
    assert re.search(rb"Welcome,\s*<strong>admin</strong>", page), page[:3000]
    status, _, page = step("user list", "GET", "/admin/auth/user/")
    assert status == 200 and b"admin@example.com" in page and b"Select user to change" in page
    status, _, page = step("logout", "POST", "/admin/logout/", {"csrfmiddlewaretoken": csrf_token(page)}, form)
    assert status == 200 and b"Logged out" in page
    status, found, _ = step("after the logout", "GET", "/admin/")
    assert (status, header(found, "location")) == (302, "/admin/login/?next=/admin/")
    assert "sessionid" not in browser.cookies
    return steps


@pytest.mark.parametrize("kind", ["gunicorn", "tempest.wsgi"])
def test_django_admin_login_as_under_wsgiref(kind, django_site, django_reference, tempestd_factory, redis_server,
                                             tmp_path):
    directory, env = django_site
    queue = f"django-{kind.replace('.', '-')}"
    daemon = tempestd_factory(front={"queue": queue})
    worker = tempest_worker(kind, "djangosite.wsgi:application", queue, DJANGO_DIR, redis_server.url, tmp_path, env)
    try:
        reference = admin_session(django_reference)
        through_tempest = admin_session(daemon.base)
    finally:
        kill_groups([worker])
    assert_same(reference, through_tempest)


# --- Flask, against gunicorn's sync worker ------------------------------------------------------

MULTIPART = (b"--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nna\xc3\xafve\r\n"
             b"--XyZ\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"notes.txt\"\r\n"
             b"Content-Type: text/plain\r\n\r\nline one\nline two\r\n--XyZ--\r\n")


def flask_visit(base):
    """The Flask requests in order: the transcript [(step, response)], with what each must show
    asserted (see admin_session)."""
    browser = Browser(base)
    steps = []

    def step(label, method, path, body=None, headers=None):
        status, found, data = browser(method, path, body, headers)
        steps.append((label, normalised(status, found, data)))
        return status, found, data

    assert step("text", "GET", "/")[::2] == (200, "hello from Flask, caf\u00e9\n".encode())
    status, found, data = step("HEAD", "HEAD", "/")
    assert (status, data) == (200, b"")
    assert step("non-ASCII path", "GET", "/hello/caf%C3%A9")[::2] == (200, "<p>hello, caf\u00e9</p>".encode())
    assert step("encoded slash", "GET", "/hello/a%2Fb")[0] == 404  # PATH_INFO is decoded: /hello/a/b
    status, _, data = step("JSON and query", "GET", "/json?a=1&a=2&b=%C3%A9t%C3%A9&empty=",
                           headers={"X-Thing": "yes", "User-Agent": "frameworks-test/1"})
    assert status == 200 and json.loads(data)["args"] == {"a": ["1", "2"], "b": ["\u00e9t\u00e9"], "empty": [""]}
    assert json.loads(data)["remote_addr"] == "127.0.0.1" and json.loads(data)["thing"] == "yes"
    data = step("underscore header", "GET", "/json", headers={"X_Thing": "posing"})[2]
    assert json.loads(data)["thing"] is None  # dropped by both, so it cannot pose as X-Thing
    status, _, data = step("form POST", "POST", "/form", "name=caf%C3%A9&n=1&n=2".encode(),
                           {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200 and json.loads(data)["form"] == {"name": ["caf\u00e9"], "n": ["1", "2"]}
    status, _, data = step("multipart POST", "POST", "/form", MULTIPART,
                           {"Content-Type": "multipart/form-data; boundary=XyZ"})
    assert json.loads(data)["files"] == {"upload": ["notes.txt", "line one\nline two"]}, data
    binary = bytes(range(256)) * 4
    assert step("binary POST", "POST", "/echo", binary, {"Content-Type": "application/octet-stream"})[::2] == \
        (200, binary)
    blocks = [b"chunked ", "upl\u00f6ad ".encode(), b"in three blocks"]
    assert step("chunked POST", "POST", "/echo", blocks, {"Content-Type": "text/plain"})[::2] == \
        (200, b"".join(blocks))
    status, found, _ = step("redirect", "GET", "/redirect")
    assert (status, header(found, "location")) == (302, "/hello/redirected")
    assert step("404", "GET", "/nosuch")[0] == 404
    status, found, _ = step("405", "POST", "/")
    assert status == 405 and header(found, "allow")
    status, found, _ = step("cookie set", "GET", "/cookie/set?flavour=mint")
    assert [v for k, v in found if k == "set-cookie"] == ["flavour=mint; HttpOnly; Path=/; SameSite=Lax",
                                                          "second=2; Path=/"]
    data = step("cookie read", "GET", "/cookie/read")[2]
    assert json.loads(data)["cookies"] == {"flavour": "mint", "second": "2"}
    status, found, _ = step("session login", "POST", "/login", b"user=ana",
                            {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 302 and "session" in browser.cookies
    assert json.loads(step("session read", "GET", "/whoami")[2]) == {"user": "ana"}
    status, found, data = step("send_file", "GET", "/file")
    assert (status, data) == (200, b"a file sent with send_file\nline two\n")
    etag = header(found, "etag")
    assert step("range", "GET", "/file", headers={"Range": "bytes=2-5"})[::2] == (206, b"file")
    assert step("not modified", "GET", "/file", headers={"If-None-Match": etag})[::2] == (304, b"")
    status, found, data = step("binary", "GET", "/binary")
    assert (status, data[:8], len(data)) == (200, b"\x89PNG\r\n\x1a\n", 264)
    status, found, data = step("stream", "GET", "/stream")
    assert status == 200 and data == "".join(f"block {n} \u00e9\n" for n in range(5)).encode()
    assert header(found, "transfer-encoding") == "chunked"  # streamed as it came
    status, found, data = step("stream cut", "GET", "/stream/broken")
    assert (status, data) == (200, b"<incomplete>first block\nsecond block\n")  # cut, not ended as if whole
    assert step("write()", "GET", "/legacy/write")[::2] == (200, b"written first, then returned\n")
    status, _, data = step("exception", "GET", "/boom")
    assert status == 500 and b"Internal Server Error" in data
    return steps


def known_differences(got):
    """The tempest transcript with its known differences from gunicorn's undone, each checked
    to be there (so that this says when one goes away): none left. (A 304 used to get
    tempestd's default Content-Type, a HEAD a Content-Length of 0 where gunicorn passes on the
    GET's, and what the application passes to write() was held until it returned and sent as
    one sized answer where gunicorn sends it at once, chunked: all gone, and compared as the
    rest now.)"""
    return got


def test_flask_through_the_gunicorn_worker_as_under_gunicorns_sync_worker(tempestd_factory, redis_server, tmp_path):
    need("flask")
    reference, match = start_server([sys.executable, "-m", "gunicorn", "-w", "1", "-b", "127.0.0.1:0",
                                     "--no-control-socket", "--chdir", APPS, "flaskapp:app"],
                                    tmp_path / "sync.log", r"Listening at: http://(127\.0\.0\.1:\d+)")
    daemon = tempestd_factory(front={"queue": "flask"})
    worker = tempest_worker("gunicorn", "flaskapp:app", "flask", APPS, redis_server.url, tmp_path, {})
    try:
        expected = flask_visit(f"http://{match.group(1)}")
        got = flask_visit(daemon.base)
        assert_same(expected, known_differences(got))
        # the exception's traceback is in the worker's log, as in gunicorn's
        log = read(tmp_path / "gunicorn-flask.log")
        assert "RuntimeError: the application failed" in log and "Exception on /boom [GET]" in log
    finally:
        kill_groups([worker])
        stop_group(reference)
    assert "RuntimeError: the application failed" in read(tmp_path / "sync.log")


def test_flask_sees_the_client_address_and_the_tempest_session(tempestd_factory, redis_server, redis_client, tmp_path):
    need("flask")
    daemon = tempestd_factory(front={"queue": "flask-session", "session_cookie": "sid",
                                     "session_secret": "frameworks-test-secret-0123456789"})
    worker = tempest_worker("gunicorn", "flaskapp:app", "flask-session", APPS, redis_server.url, tmp_path, {})
    try:
        browser = Browser(daemon.base)
        status, found, data = browser("GET", "/tempest/session")
        first = json.loads(data)
        assert status == 200 and first["remote_addr"] == "127.0.0.1" and first["visits"] == 1
        assert browser.cookies["sid"].startswith(first["session"] + ".")  # tempestd's signed cookie
        second = json.loads(browser("GET", "/tempest/session")[2])
        assert second == dict(first, visits=2)  # the same session, kept in Redis
        stored = redis_client.hget(keys.session(first["session"]), "visits")
        assert json.loads(stored) == [2]  # each field's value a JSON [value] (the 2012 protocol)
        anonymous = json.loads(exchange(daemon.base, "GET", "/tempest/session")[2])
        assert anonymous["session"] != first["session"] and anonymous["visits"] == 1
    finally:
        kill_groups([worker])
