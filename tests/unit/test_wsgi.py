"""The WSGI gateway in process: a url job's env in, the answer out, every application wrapped
in wsgiref's PEP 3333 validator (which raises on a non-conforming environ or response)."""

import base64
import json
import os
import sys
import warnings

import pytest

from tempest import jobs, wsgi

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "workers"))
import wsgiapp  # noqa: E402


def run(env):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the validator warns about what PEP 3333 discourages
        answer = wsgi.call(wsgiapp.application, env)
    # what the front will make of it
    status, headers, body = jobs.decode_http_answer(jobs.dumps(answer))
    return status, headers, body


def test_environ_from_a_get():
    env = jobs.http_env("GET", "/echo/caf%C3%A9%20x?q=1&r=%20", {"host": "example.org:8080", "x-thing": "yes"},
                        b"", "10.0.0.7")
    status, headers, body = run(env)
    seen = json.loads(body)
    assert status == 200 and (b"Content-Type", b"application/json") in headers
    assert seen["REQUEST_METHOD"] == "GET"
    assert seen["SCRIPT_NAME"] == ""
    assert seen["PATH_INFO"] == "/echo/caf\u00c3\u00a9 x"  # PEP 3333: the bytes, as latin-1
    assert seen["QUERY_STRING"] == "q=1&r=%20"
    assert (seen["SERVER_NAME"], seen["SERVER_PORT"]) == ("example.org", "8080")
    assert seen["HTTP_X_THING"] == "yes" and seen["HTTP_HOST"] == "example.org:8080"
    assert seen["REMOTE_ADDR"] == "10.0.0.7"
    assert seen["wsgi.url_scheme"] == "http"
    assert seen["body"] == ""


def test_environ_from_a_post_with_a_binary_body():
    raw = b"\x00\xff binary \x80"
    env = jobs.http_env("POST", "/echo", {"host": "h", "content-type": "application/octet-stream",
                                          "content-length": "999"}, raw)
    seen = json.loads(run(env)[2])
    assert seen["body"].encode("latin-1") == raw
    assert seen["CONTENT_TYPE"] == "application/octet-stream"
    assert seen["CONTENT_LENGTH"] == str(len(raw))  # the body's real length, not the header's
    assert "HTTP_CONTENT_TYPE" not in seen and "HTTP_CONTENT_LENGTH" not in seen


def test_headers_with_underscores_are_left_out():
    env = jobs.http_env("GET", "/echo", {"host": "h", "x-forwarded-for": "1.2.3.4", "x_forwarded_for": "6.6.6.6"}, b"")
    seen = json.loads(run(env)[2])
    assert seen["HTTP_X_FORWARDED_FOR"] == "1.2.3.4"


def test_x_forwarded_proto_is_passed_on_not_trusted():
    """A client could send it itself: the application decides whom to believe (its proxy setting)."""
    seen = json.loads(run(jobs.http_env("GET", "/echo", {"host": "h", "x-forwarded-proto": "https"}, b""))[2])
    assert seen["wsgi.url_scheme"] == "http" and seen["HTTP_X_FORWARDED_PROTO"] == "https"


@pytest.mark.parametrize("host, expected", [("", ("localhost", "80")), ("h", ("h", "80")),
                                            ("[::1]:8443", ("::1", "8443")), ("[::1]", ("::1", "80"))])
def test_server_name_and_port_from_host(host, expected):
    seen = json.loads(run(jobs.http_env("GET", "/echo", {"host": host} if host else {}, b""))[2])
    assert (seen["SERVER_NAME"], seen["SERVER_PORT"]) == expected


def test_absolute_form_url_keeps_the_path_and_query():
    seen = json.loads(run(jobs.http_env("GET", "http://proxy.example/echo?x=1", {"host": "h"}, b""))[2])
    assert (seen["PATH_INFO"], seen["QUERY_STRING"]) == ("/echo", "x=1")


def test_binary_response_travels_in_base64():
    answer = wsgi.call(wsgiapp.application, jobs.http_env("GET", "/binary", {"host": "h"}, b""))
    assert answer[2] == {"base64": base64.b64encode(wsgiapp.PNG).decode()}
    assert run(jobs.http_env("GET", "/binary", {"host": "h"}, b""))[2] == wsgiapp.PNG


def test_repeated_headers_and_status():
    status, headers, body = run(jobs.http_env("GET", "/cookies", {"host": "h"}, b""))
    assert status == 201
    assert [v for n, v in headers if n == b"Set-Cookie"] == [b"a=1", b"b=2"]
    assert body == b"two cookies"
    assert run(jobs.http_env("GET", "/missing", {"host": "h"}, b""))[0] == 404


def test_iterable_is_joined_and_closed():
    status, _, body = run(jobs.http_env("GET", "/stream", {"host": "h"}, b""))
    assert body == "one tw\u00f6 three".encode()
    assert "/stream" in wsgiapp.closed


def test_legacy_write_callable():
    assert run(jobs.http_env("GET", "/write", {"host": "h"}, b""))[2] == b"written, then returned"


def test_an_application_error_propagates_to_the_worker():
    """The Worker turns a handler's exception into a 500 answer and logs the traceback."""
    with pytest.raises(RuntimeError, match="the application failed"):
        wsgi.call(wsgiapp.app, jobs.http_env("GET", "/boom", {"host": "h"}, b""))


def test_start_response_never_called_is_an_error():
    with pytest.raises(RuntimeError, match="start_response"):
        wsgi.call(lambda environ, start_response: [b"x"], jobs.http_env("GET", "/", {}, b""))


def test_load_names_module_and_attribute():
    assert wsgi.load("wsgiapp:application") is wsgiapp.application
    assert wsgi.load("wsgiapp") is wsgiapp.application  # attribute defaults to "application"
    with pytest.raises(AttributeError):
        wsgi.load("wsgiapp:nothing")
    with pytest.raises(TypeError):
        wsgi.load("wsgiapp:PNG")


def test_a_generator_with_content_length_is_one_answer():
    assert run(jobs.http_env("GET", "/sized", {"host": "h"}, b""))[2] == b"sized"


def test_a_bad_heartbeat_in_the_environment_is_one_line_and_exit_2():
    import subprocess
    import sys

    env = dict(os.environ, TEMPEST_HEARTBEAT="soon")
    done = subprocess.run([sys.executable, "-m", "tempest.wsgi", "wsgiref.simple_server:demo_app"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "TEMPEST_HEARTBEAT: not a number of seconds above 0: 'soon'" in done.stderr
