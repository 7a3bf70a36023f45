"""The Rack gateway (clients/ruby/bin/tempest-rack) with the real ruby, a real redis-server and a
real tempestd: a Rack::Lint-wrapped application (tests/clients/rack/lint.ru) for the env, the
rewindable input (inline and spooled), streamed and whole bodies, close, binary bodies, errors
and multiple header values; and a Sinatra application (tests/clients/rack/sinatra.ru) that
answers through tempest as it does under rackup (WEBrick), compared response by response."""

import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time

import pytest

import support
from support import REPO, free_port, hand_job, registered, session_cookie, stop_group, wait_until

RACK = os.path.join(REPO, "clients", "ruby", "bin", "tempest-rack")
LINT = os.path.join(REPO, "tests", "clients", "rack", "lint.ru")
SINATRA = os.path.join(REPO, "tests", "clients", "rack", "sinatra.ru")
MiB = 1024 * 1024
# the Ruby libraries these tests load, and the Debian packages that bring them (.ci/install-runtimes)
LIBRARIES = {"redis": "ruby-redis", "rack": "ruby-rack", "sinatra/base": "ruby-sinatra", "webrick": "ruby-webrick"}


@pytest.fixture(autouse=True, scope="module")
def rack_runtime():  # checked once: it starts a ruby
    if shutil.which("ruby") is None:
        support.missing_runtime("ruby is not installed")
    check = subprocess.run(
        ["ruby", "-e", "ARGV.each { |lib| begin; require lib; rescue LoadError; puts lib; end }", *LIBRARIES],
        capture_output=True, text=True, timeout=60)
    missing = [LIBRARIES[lib] for lib in check.stdout.split()]
    if check.returncode != 0 or missing:
        support.missing_runtime(f"Ruby libraries missing (Debian packages {' '.join(missing) or '?'}): {check.stderr}")
    if shutil.which("rackup") is None:
        support.missing_runtime("rackup is not installed (Debian's ruby-rack)")


class Rack:
    """A tempest-rack process in its own session, its output in ``log_path``."""

    def __init__(self, config, queue, redis_url, directory, name, *flags):
        self.log_path = os.path.join(str(directory), f"{name}.log")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(["ruby", RACK, config, "--queue", queue, "--redis-url", redis_url, *flags],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        try:
            wait_until(self.started, timeout=30, interval=0.05, message=f"tempest-rack {name} taking jobs")
        except AssertionError:
            self.stop()
            raise

    def log(self, start=0):
        with open(self.log_path, "rb") as handle:
            handle.seek(start)
            return handle.read().decode("utf-8", "replace")

    def log_size(self):
        return os.path.getsize(self.log_path)

    def started(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"tempest-rack exited {self.proc.returncode}:\n{self.log()}")
        return "worker on " in self.log()

    def stop(self, sig=signal.SIGKILL):
        stop_group(self.proc, sig)


def exchange(base, method, path, body=None, headers=None, timeout=15):
    """One request: (status, [(lower-case name, value), ...] in order with repeats, body,
    whether it came chunked)."""
    port = int(base.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return response.status, [(k.lower(), v) for k, v in response.getheaders()], data, response.chunked
    finally:
        conn.close()


def raw_get(port, path, head=b"Host: x\r\n", version=b"HTTP/1.1", timeout=5):
    """GET path (bytes, or str sent as UTF-8) over a raw socket until the server closes: (the
    bytes, the times pieces arrived)."""
    path = path.encode() if isinstance(path, str) else path
    received, times = b"", []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"GET " + path + b" " + version + b"\r\n" + head + b"Connection: close\r\n\r\n")
        start = time.monotonic()
        try:
            while chunk := sock.recv(65536):
                received += chunk
                times.append(time.monotonic() - start)
        except socket.timeout:
            received += b"<silence>"
    return received, times


def answer_of(redis_client, queue, env, timeout=10):
    """Push a url job with ``env`` by hand, its respond_to a minimal answer endpoint here that
    replies +OK to every command: the answer [status, headers, body] of its url command."""
    import hiredis

    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(timeout)
        redis_client.rpush(queue, hand_job("url", [env], f"127.0.0.1:{server.getsockname()[1]}"))
        conn, _ = server.accept()
        with conn:
            conn.settimeout(timeout)
            reader = hiredis.Reader()
            while data := conn.recv(65536):
                reader.feed(data)
                while (command := reader.gets()) is not False:
                    conn.sendall(b"+OK\r\n")
                    if command[0] == b"url":
                        return json.loads(command[2])
    raise AssertionError("the worker closed its answer connection without answering")


# 1. the Rack::Lint-wrapped application


@pytest.fixture(scope="module")
def site(module_tempestd_factory, redis_server, tmp_path_factory):
    """tempestd with a session cookie, a file-spooling and a Redis-spooling route (64K), a
    route to a second queue, and one tempest-rack (reliable, the default) on lint.ru."""
    queue = f"rack-lint-{os.getpid()}"
    spool = {"queue": queue, "spool_over": "64K", "max_body": "16M"}
    daemon = module_tempestd_factory(
        front={"queue": queue, "timeout": "10", "session_cookie": "sid", "session_ttl": "600",
               "session_secret": "rack-tests-secret-0123456789abcdef"},
        **{"route:/file/": dict(spool, spool="yes"), "route:/redis/": dict(spool, spool="redis"),
           "route:/plain/": {"queue": queue + "-plain"}})
    daemon.queue = queue
    daemon.worker = Rack(LINT, queue, redis_server.url, tmp_path_factory.mktemp("rack"), "lint")
    yield daemon
    daemon.worker.stop()


def env_of(site, path, headers=None):
    status, _, body, _ = exchange(site.base, "GET", path, headers=headers)
    assert status == 200, body  # Rack::Lint found nothing wrong with the env
    return json.loads(body)


def test_the_env_is_what_rack_lint_and_the_app_expect(site):
    described = env_of(site, "/env?x=1&y=%C3%A9", {"Host": "example.test:8080", "X-Custom": "v 1",
                                                  "X_Custom": "posing", "Accept-Language": "de"})
    cgi = {key: value for key, (value, _) in described["cgi"].items()}
    assert {key: cgi.get(key) for key in ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_NAME",
                                          "SERVER_PORT", "SERVER_PROTOCOL", "HTTP_VERSION", "REMOTE_ADDR", "HTTP_HOST",
                                          "HTTP_X_CUSTOM", "HTTP_ACCEPT_LANGUAGE")} == {
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/env", "QUERY_STRING": "x=1&y=%C3%A9",
        "SERVER_NAME": "example.test", "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_VERSION": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "example.test:8080",
        "HTTP_X_CUSTOM": "v 1", "HTTP_ACCEPT_LANGUAGE": "de"}
    # no header with "_" (X_Custom cannot pose as X-Custom), no body: no CONTENT_*
    assert not {"CONTENT_LENGTH", "CONTENT_TYPE", "HTTP_CONTENT_LENGTH", "HTTP_CONTENT_TYPE"} & set(cgi)
    assert "posing" not in cgi.values()
    assert described["rack"] == {"rack.version": [1, 3], "rack.url_scheme": "http", "rack.multithread": False,
                                 "rack.multiprocess": True, "rack.run_once": False, "rack.hijack?": False}
    assert described["input_empty"] and described["errors"] and described["session"]
    assert len(described["job_id"]) >= 8  # tempest.context is the job's


def test_the_path_stays_as_sent_and_server_name_comes_from_host(site):
    described = env_of(site, "/bare/caf%C3%A9%20au%20lait/env", {"Host": "[::1]:9000"})  # raw UTF-8: the front's 400
    cgi = described["cgi"]
    assert cgi["SCRIPT_NAME"] == ["/bare", "UTF-8"] and cgi["PATH_INFO"] == ["/caf%C3%A9%20au%20lait/env", "UTF-8"]
    assert (cgi["SERVER_NAME"][0], cgi["SERVER_PORT"][0]) == ("[::1]", "9000")
    assert (env_of(site, "/env", {"Host": "example.test"})["cgi"]["SERVER_PORT"][0]) == "80"
    # header values with bytes that are not ASCII: those bytes, binary, as Rack's SPEC wants them
    cgi = env_of(site, "/env", {"X-Name": "Zoë".encode(), "X-Latin": b"caf\xe9"})["cgi"]
    assert cgi["HTTP_X_NAME"] == ["Zoë", "ASCII-8BIT"] and cgi["HTTP_X_LATIN"] == ["hex:636166e9", "ASCII-8BIT"]
    # HTTP/1.0 without a Host header
    received, _ = raw_get(site.port, "/env", head=b"", version=b"HTTP/1.0")
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    cgi = json.loads(body)["cgi"]
    assert (cgi["SERVER_NAME"][0], cgi["SERVER_PORT"][0]) == ("localhost", "80") and "HTTP_HOST" not in cgi


def test_env_of_jobs_the_front_does_not_send(site, redis_client):
    """What the front refuses or always sets (a raw UTF-8 path, absolute-form URLs, no Host, no
    method, no remote_addr) still makes an env that Rack::Lint accepts."""
    status, _, body = answer_of(redis_client, site.queue, {"url": "/bare/caf\u00c3\u00a9/env", "headers": {}})
    assert status == 200, body
    cgi = json.loads(body)["cgi"]
    # the front's url and header values are ISO-8859-1 code points: the request's bytes
    assert cgi["PATH_INFO"] == ["/café/env", "ASCII-8BIT"] and cgi["REQUEST_METHOD"] == ["GET", "UTF-8"]
    assert (cgi["SERVER_NAME"][0], cgi["SERVER_PORT"][0]) == ("localhost", "80")
    assert not {"REMOTE_ADDR", "HTTP_HOST", "CONTENT_LENGTH"} & set(cgi)
    status, _, body = answer_of(redis_client, site.queue, {"method": "GET", "url": "http://example.test:81/env?q=1",
                                                           "headers": {"host": "example.test:81"}})
    cgi = json.loads(body)["cgi"]
    assert (status, cgi["PATH_INFO"][0], cgi["QUERY_STRING"][0], cgi["SERVER_PORT"][0]) == (200, "/env", "q=1", "81")


def test_a_spooled_body_gone_is_410(site, redis_client, tmp_path):
    data = os.urandom(300_000)
    digest = hashlib.sha256(data).hexdigest()
    partial = f"tempest:body:{{{site.queue}-partial}}"
    redis_client.rpush(partial, data[:262_144])  # chunk 1 of 2 missing
    start = site.worker.log_size()
    env = {"method": "POST", "url": "/echo", "headers": {"content-length": str(len(data))}}
    try:
        for token in [{"body_file": {"path": str(tmp_path / "no-such.body"), "size": len(data), "sha256": digest}},
                      {"body_key": {"key": partial, "size": len(data), "sha256": digest, "chunks": 2}}]:
            assert answer_of(redis_client, site.queue, {**env, **token}) == [410, {"Content-Type": "text/plain"},
                                                                             "410 Gone\n"]
    finally:
        redis_client.delete(partial)
    log = site.worker.log(start)
    assert "WARN -- tempest-rack: POST /echo (job by-hand): its body is gone: spooled body " in log
    assert log.count("its body is gone") == 2 and "ERROR" not in log


@pytest.mark.parametrize("route, data, form", [
    ("/", b"hello\nworld\nno newline at the end", "body"),
    ("/", bytes([0xff, 0x00, 0x80]) + b"\nnot UTF-8\n" * 3, "body_base64"),
    ("/", b"", "none"),
    ("/file/", random.Random(1).randbytes(MiB + 7), "body_file"),
    ("/redis/", random.Random(2).randbytes(MiB + 7), "body_key"),
], ids=["text", "binary", "empty", "spooled-file", "spooled-redis"])
def test_rack_input_reads_and_rewinds_any_body(site, route, data, form):
    status, _, body, _ = exchange(site.base, "POST", f"{route}echo", data,
                                  {"Content-Type": "application/octet-stream"}, timeout=30)
    assert status == 200, body
    assert json.loads(body) == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "encoding": "ASCII-8BIT",
                                "agree": True, "content_length": str(len(data)), "form": form}


def test_binary_bodies_are_intact(site):
    status, headers, body, chunked = exchange(site.base, "GET", "/binary")
    assert (status, body, chunked) == (200, bytes(range(256)), False)  # sent as {"base64": ...}
    assert dict(headers)["content-type"] == "application/octet-stream"
    status, _, body, chunked = exchange(site.base, "GET", "/binary/stream")
    assert (status, body, chunked) == (200, b"\xff\x00" + bytes(range(128, 256)), True)  # raw chunks
    data = random.Random(3).randbytes(50_000)
    status, headers, body, _ = exchange(site.base, "POST", "/raw", data, {"Content-Type": "image/x-test"})
    assert (status, body, dict(headers)["content-type"]) == (200, data, "image/x-test")


def test_a_body_without_content_length_is_streamed(site):
    received, times = raw_get(site.port, "/stream")
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Transfer-Encoding: chunked" in head
    assert body == b"4\r\none\n\r\n4\r\ntwo\n\r\n6\r\nthree\n\r\n0\r\n\r\n"  # a chunk per string, complete
    assert times[-1] - times[0] >= 0.3  # each piece as the body yielded it (two pauses of 0.2 s)
    for path, expected in [("/length", b"length"), ("/bare/array", b"an array")]:
        status, headers, body, chunked = exchange(site.base, "GET", path)
        assert (status, body, chunked) == (200, expected, False), path  # one answer
        assert dict(headers)["content-length"] == str(len(expected))
    # the same Array behind Rack::Lint is Lint's body, not an Array: streamed
    assert exchange(site.base, "GET", "/array")[2:] == (b"an array", True)


def test_the_body_is_closed_in_every_case(site):
    exchange(site.base, "GET", "/closes")  # forget earlier tests' closes
    assert exchange(site.base, "GET", "/stream")[0] == 200
    assert exchange(site.base, "GET", "/length")[0] == 200
    assert exchange(site.base, "GET", "/binary/stream")[0] == 200
    received, _ = raw_get(site.port, "/fail/stream")
    assert received.startswith(b"HTTP/1.1 200") and not received.endswith(b"0\r\n\r\n")  # cut
    assert exchange(site.base, "GET", "/fail/length")[0] == 500
    status, _, body, _ = exchange(site.base, "GET", "/closes")
    assert json.loads(body) == ["stream", "length", "binary-stream", "fail-stream", "fail-length"]


def test_an_exception_is_a_500_and_one_log_line(site):
    start = site.worker.log_size()
    status, headers, body, _ = exchange(site.base, "GET", "/boom")
    assert (status, body) == (500, b"500 Internal Server Error\n")
    assert dict(headers)["content-type"] == "text/plain"
    line = wait_until(lambda: next((x for x in site.worker.log(start).splitlines() if "ArgumentError" in x), None),
                      timeout=5, message="the failure's log line")
    assert "ERROR -- tempest-rack: GET /boom (job " in line
    assert "failed: ArgumentError: boom: the secret detail (" in line and "lint_app.rb:" in line and "boom'" in line
    assert site.worker.log(start).count("lint_app.rb") == 1  # the first backtrace line only

    # a stream that fails after its head: the client's body is cut at once, the failure logged
    start = site.worker.log_size()
    started = time.monotonic()
    received, _ = raw_get(site.port, "/fail/stream")
    assert time.monotonic() - started < 3  # not the route's timeout
    assert received.startswith(b"HTTP/1.1 200") and received.endswith(b"8\r\npartial\n\r\n")
    wait_until(lambda: "failed: IOError: broken feed (" in site.worker.log(start), timeout=5, message="logged")

    # Rack::Lint is in the way: a header value that is not a String is its LintError, a 500
    start = site.worker.log_size()
    status, _, body, _ = exchange(site.base, "GET", "/lint-violation")
    assert (status, body) == (500, b"500 Internal Server Error\n")
    wait_until(lambda: "Rack::Lint::LintError: a header value must be a String" in site.worker.log(start),
               timeout=5, message="Lint's error logged")
    # a Rack 3 streaming body (call, no each), without Lint: a 500 before any head
    start = site.worker.log_size()
    assert exchange(site.base, "GET", "/bare/rack3/streaming-body")[::2] == (500, b"500 Internal Server Error\n")
    wait_until(lambda: "TypeError: the body (Proc) does not respond to each" in site.worker.log(start),
               timeout=5, message="the streaming body's error logged")
    assert exchange(site.base, "GET", "/env")[0] == 200  # the worker lives on


def test_header_values_joined_by_newlines_are_separate_header_lines(site):
    status, headers, body, _ = exchange(site.base, "GET", "/headers")
    assert (status, body) == (200, b"ok")
    assert [(name, value) for name, value in headers
            if name in ("set-cookie", "x-multi") and not value.startswith("sid=")] == [  # sid: tempest's session
        ("set-cookie", "a=1; Path=/"), ("set-cookie", "b=2"), ("x-multi", "x"), ("x-multi", "y")]
    # Rack 3's Array values (without Lint: Rack 2.2's rejects them)
    status, headers, body, _ = exchange(site.base, "GET", "/bare/rack3/headers")
    assert (status, body) == (200, b"ok")
    assert [(name, value) for name, value in headers
            if name in ("set-cookie", "x-multi") and not value.startswith("sid=")] == [
        ("set-cookie", "c=3"), ("set-cookie", "d=4"), ("x-multi", "z"), ("x-multi", "w")]


def test_the_session_is_tempest_session(site):
    status, headers, body, _ = exchange(site.base, "GET", "/session")
    assert (status, body) == (200, b"count=1")
    _, value = session_cookie(dict(headers))
    assert value
    status, _, body, _ = exchange(site.base, "GET", "/session", headers={"Cookie": f"sid={value}"})
    assert (status, body) == (200, b"count=2")


def test_reliable_by_default_and_plain_on_request(site, redis_server, redis_client, tmp_path):
    assert len(registered(redis_client, site.queue)) == 1  # the site's worker: reliable delivery
    plain = Rack(LINT, site.queue + "-plain", redis_server.url, tmp_path, "plain", "--plain")
    try:
        status, _, body, _ = exchange(site.base, "GET", "/plain/env")
        assert status == 200 and json.loads(body)["cgi"]["SCRIPT_NAME"] == ["", "UTF-8"]
        assert registered(redis_client, site.queue + "-plain") == []
        plain.proc.send_signal(signal.SIGTERM)  # a clean stop
        assert plain.proc.wait(10) == 0
        assert "worker stopped after 1 jobs" in plain.log()
    finally:
        plain.stop()


def test_run_from_a_worker_section(tempestd_factory, request):
    queue = f"rack-section-{os.getpid()}"
    daemon = tempestd_factory(front={"queue": queue, "timeout": "20"},
                              **{"worker:rack": {"command": f"ruby {RACK} lint.ru --queue {queue} -E production",
                                                 "directory": os.path.dirname(LINT), "numprocs": "2"}})
    status, _, body, _ = exchange(daemon.base, "GET", "/env", timeout=30)  # waits in the queue for a worker
    assert status == 200, body
    assert json.loads(body)["cgi"]["SERVER_PROTOCOL"] == ["HTTP/1.1", "UTF-8"]
    wait_until(lambda: [row["state"] for row in daemon.status().values()] == ["RUNNING", "RUNNING"],
               timeout=20, message="two tempest-rack workers running")
    assert daemon.stop() == 0  # tempestd's clean stop stops them (SIGTERM) within stopwaitsecs
    log = daemon.log()
    assert "stopped: rack:0 (exit status 0)" in log and "stopped: rack:1 (exit status 0)" in log
    assert log.count("tempest-rack: worker stopped after") == 2


@pytest.mark.parametrize("args, config, expected", [
    ([], None, "tempest-rack: one rackup file expected, got 0"),
    (["--bogus"], "", "tempest-rack: invalid option: --bogus"),
    ([], "missing.ru", "tempest-rack: cannot load missing.ru: Errno::ENOENT: "),
    ([], "raise 'no database'\n", "tempest-rack: cannot load bad.ru: RuntimeError: no database"),
    ([], "run ->(env) { [200, {}, []] \n", "tempest-rack: cannot load bad.ru: SyntaxError: "),
    (["--chdir", "nowhere"], "", "tempest-rack: --chdir nowhere: No such file or directory"),
], ids=["no-file", "bad-option", "missing", "raises", "syntax", "chdir"])
def test_a_usage_or_loading_error_is_one_line_and_exit_2(tmp_path, args, config, expected):
    if config not in (None, "missing.ru"):
        (tmp_path / "bad.ru").write_text(config)
    files = [] if config is None else [config if config == "missing.ru" else "bad.ru"]
    result = subprocess.run(["ruby", RACK, *files, *args], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(expected) and "\tfrom " not in result.stderr and ".rb:" not in result.stderr


# 2. a Sinatra application, through tempest and under rackup


@pytest.fixture(scope="module")
def sinatra(module_tempestd_factory, redis_server, tmp_path_factory):
    """(tempestd with a tempest-rack on sinatra.ru, the base URL of rackup -s webrick on it)."""
    directory = tmp_path_factory.mktemp("sinatra")
    queue = f"rack-sinatra-{os.getpid()}"
    daemon = module_tempestd_factory(front={"queue": queue, "timeout": "10"})
    worker = Rack(SINATRA, queue, redis_server.url, directory, "sinatra", "-E", "production")
    port = free_port()
    with open(directory / "rackup.log", "ab") as log:
        rackup = subprocess.Popen(["rackup", "-s", "webrick", "-E", "production", "-o", "127.0.0.1", "-p", str(port), SINATRA],
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def listening():
        if rackup.poll() is not None:
            raise AssertionError(f"rackup exited {rackup.returncode}: {(directory / 'rackup.log').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    try:
        wait_until(listening, timeout=30, interval=0.05, message="rackup listening")
        yield daemon, f"http://127.0.0.1:{port}"
    finally:
        stop_group(rackup)
        worker.stop()


FORM = {"Content-Type": "application/x-www-form-urlencoded"}
# (method, path, body, headers, streamed)
SINATRA_CASES = {
    "query": ("GET", "/hello?name=J%C3%BCrgen&lang=de&empty=", None, {}, False),
    "no-query": ("GET", "/hello", None, {}, False),
    "head": ("HEAD", "/hello?name=x", None, {}, False),
    "non-ascii-path": ("GET", "/h%C3%A9llo/w%C3%B6rld", None, {}, False),
    "form": ("POST", "/form", "name=Zo%C3%AB&fruit[]=pear&fruit[]=p%C3%AAche".encode(), FORM, False),
    "json": ("POST", "/json", json.dumps({"name": "Zoë", "tags": ["ü", 1]}, ensure_ascii=False).encode(),
             {"Content-Type": "application/json"}, False),
    "set-cookies": ("GET", "/cookies/set", None, {}, False),
    "read-cookies": ("GET", "/cookies/read", None, {"Cookie": "flavor=chocolate+chip; count=1"}, False),
    "redirect": ("GET", "/redirect", None, {}, False),
    "post-redirect": ("POST", "/login", b"user=bob", FORM, False),
    "not-found": ("GET", "/nowhere", None, {}, False),
    "exception": ("GET", "/boom", None, {}, False),
    "halt": ("GET", "/halt", None, {}, False),
    "stream": ("GET", "/stream", None, {}, True),
    "binary": ("GET", "/binary", None, {}, False),
    "binary-upload": ("POST", "/upload", random.Random(4).randbytes(20_000), {"Content-Type": "application/octet-stream"},
                      False),
}
# the server's own headers, not the application's
SERVER_HEADERS = {"date", "server", "connection", "keep-alive", "transfer-encoding"}


def comparable(headers, method, streamed):
    # content-length: a streamed body's is WEBrick's (it buffers the body); a HEAD answer's is
    # the front's, which counts the body the worker sent (none: Sinatra strips it), where
    # WEBrick keeps the application's
    ignored = SERVER_HEADERS | ({"content-length"} if streamed or method == "HEAD" else set())
    result = {}
    for name, value in headers:
        if name not in ignored:
            result.setdefault(name, []).append(value)
    return result


@pytest.mark.parametrize("case", SINATRA_CASES)
def test_sinatra_answers_through_tempest_as_under_rackup(sinatra, case):
    method, path, body, extra, streamed = SINATRA_CASES[case]
    daemon, rackup = sinatra
    headers = {"Host": "example.test:8080", **extra}  # the same Host: absolute redirects name it
    via_tempest = exchange(daemon.base, method, path, body, headers)
    via_rackup = exchange(rackup, method, path, body, headers)
    assert via_tempest[0] == via_rackup[0]  # status
    assert comparable(via_tempest[1], method, streamed) == comparable(via_rackup[1], method, streamed)
    assert via_tempest[2] == via_rackup[2]  # body
    assert via_tempest[3] is streamed  # a streamed answer through tempest (WEBrick buffers it)
