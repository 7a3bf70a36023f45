"""Unit tests of tempest.jobs: the job envelope, the HTTP env and the worker's HTTP answer."""

import base64
import json

import pytest

from tempest import jobs
from tempest.http import response
from tempest.jobs import BadAnswer


def answer(value):
    """A worker's answer as the front receives it: JSON bytes."""
    return json.dumps(value).encode("utf-8")


# the job envelope


def test_encode_job_is_a_json_list_of_exactly_four():
    env = {"method": "GET", "url": "/x?y=1", "headers": {"host": "a"}}
    data = jobs.encode_job("url", [env], "127.0.0.1:4567", "abc")
    assert isinstance(data, bytes)
    assert json.loads(data) == ["url", [env], "127.0.0.1:4567", "abc"]


@pytest.mark.parametrize("args, respond_to, job_id", [
    ([{"method": "POST", "url": "/é", "headers": {}, "body": "☃"}], "10.0.0.1:7000", "Zx_-9"),
    ([], None, "id"),
    ([1, "two", None, [3]], "[::1]:5000", 17),
])
def test_encode_decode_round_trip(args, respond_to, job_id):
    data = jobs.encode_job("url", args, respond_to, job_id)
    decoded = jobs.decode_job(data)
    assert decoded == ("url", args, respond_to, job_id)
    assert len(decoded) == 4
    assert len(json.loads(data)) == 4


def test_encode_job_is_compact_utf8():
    data = jobs.encode_job("url", ["é"], None, "i")
    assert data == '["url",["é"],null,"i"]'.encode("utf-8")


def test_decode_job_accepts_str_and_bytes():
    assert jobs.decode_job('["a", [], null, "1"]') == ("a", [], None, "1")
    assert jobs.decode_job(b'["a", [], null, "1"]') == ("a", [], None, "1")


@pytest.mark.parametrize("data", [
    b'["url", [], "h:1"]',  # three elements
    b'["url", [], "h:1", "id", "extra"]',  # five elements
    b"[]",
    b'{"action": "url"}',
    b'"url"',
    b"17",
    b"null",
    b'[1, [], "h:1", "id"]',  # action not a string
    b'["url", {}, "h:1", "id"]',  # args not a list
    b'["url", "x", "h:1", "id"]',
    b'["url", [], 1234, "id"]',  # respond_to neither "host:port" nor null
    b'["url", [], ["h", 1], "id"]',
    b"not json",
    b"",
    b'["url", [], null, "\xff"]',  # not UTF-8
])
def test_decode_job_rejects_wrong_shapes(data):
    with pytest.raises(ValueError):
        jobs.decode_job(data)


# regression: simplejson raises RecursionError on deep nesting; Worker.process only catches
# ValueError, so one such job killed the worker instead of being dropped
def test_decode_job_rejects_deeply_nested_json_with_valueerror():
    with pytest.raises(ValueError):
        jobs.decode_job(b"[" * 100_000)


# job ids


def test_job_ids_are_unique_strings_of_at_least_16_chars():
    ids = [jobs.new_job_id() for _ in range(10_000)]
    assert all(isinstance(i, str) for i in ids)
    assert all(len(i) >= 16 for i in ids)
    assert len(set(ids)) == len(ids)


def test_job_ids_drawn_before_a_fork_are_not_reused_by_the_child():
    import os

    parent_next = jobs.new_job_id()  # the pool is filled; its next ids are known to the parent
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its first ids, exit without running pytest's teardown
        try:
            os.write(write, " ".join(jobs.new_job_id() for _ in range(300)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as handle:
        child_ids = set(handle.read().decode().split())
    os.waitpid(pid, 0)
    parent_ids = {parent_next} | {jobs.new_job_id() for _ in range(300)}
    assert len(child_ids) == 300
    assert not child_ids & parent_ids


def test_job_ids_are_96_random_bits_in_urlsafe_base64():
    for _ in range(600):  # more than one draw of the pool
        job_id = jobs.new_job_id()
        assert len(job_id) == 16
        assert len(base64.urlsafe_b64decode(job_id)) == 12


def test_job_ids_are_safe_in_a_resp_inline_command_and_a_url():
    for _ in range(1000):
        job_id = jobs.new_job_id()
        assert job_id.isascii() and job_id.isprintable()
        assert not any(c in job_id for c in ' \r\n"/?#%')


# the env of a url job


def test_http_env_utf8_body():
    env = jobs.http_env("POST", "/p?q=1", {"content-type": "text/plain"}, "héllo ☃".encode("utf-8"))
    assert env == {"method": "POST", "url": "/p?q=1", "headers": {"content-type": "text/plain"},
                   "body": "héllo ☃"}


def test_http_env_non_utf8_body_is_base64():
    raw = b"\xff\xfe\x00binary\x80"
    env = jobs.http_env("PUT", "/bin", {}, raw)
    assert "body" not in env
    assert env["body_base64"] == base64.b64encode(raw).decode("ascii")
    assert base64.b64decode(env["body_base64"]) == raw


def test_http_env_without_body_has_no_body_key():
    env = jobs.http_env("GET", "/", {"host": "x"}, b"")
    assert env == {"method": "GET", "url": "/", "headers": {"host": "x"}}


def test_http_env_survives_the_job_envelope():
    env = jobs.http_env("POST", "/", {}, b"\xff")
    action, args, _, _ = jobs.decode_job(jobs.encode_job(jobs.HTTP_ACTION, [env], None, "j"))
    assert action == "url"
    assert args == [env]


# the HTTP answer


def test_simplest_answer():
    assert jobs.decode_http_answer(answer([200, {}, "Hello"])) == (200, [], b"Hello")


def test_answer_as_str_and_with_whitespace():
    assert jobs.decode_http_answer(' [ 200 , { } , "Hi" ] ') == (200, [], b"Hi")


def test_headers_object():
    status, headers, body = jobs.decode_http_answer(
        answer([201, {"Content-Type": "text/html; charset=utf-8", "X-A": "1"}, "<p>"]))
    assert (status, body) == (201, b"<p>")
    assert headers == [(b"Content-Type", b"text/html; charset=utf-8"), (b"X-A", b"1")]


def test_header_values_may_be_json_numbers():
    _, headers, _ = jobs.decode_http_answer(b'[200, {"X-Count": 3, "X-Ratio": 1.5, "X-Big": 12345678901234}, ""]')
    assert headers == [(b"X-Count", b"3"), (b"X-Ratio", b"1.5"), (b"X-Big", b"12345678901234")]


def test_list_value_gives_repeated_headers():
    _, headers, _ = jobs.decode_http_answer(
        answer([200, {"Set-Cookie": ["a=1", "b=2"], "Vary": "Accept"}, ""]))
    assert headers == [(b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2"), (b"Vary", b"Accept")]


def test_list_of_pairs_headers_keep_order_and_repeats():
    _, headers, _ = jobs.decode_http_answer(
        answer([200, [["Set-Cookie", "a=1"], ["X-N", 2], ["Set-Cookie", "b=2"]], ""]))
    assert headers == [(b"Set-Cookie", b"a=1"), (b"X-N", b"2"), (b"Set-Cookie", b"b=2")]


def test_empty_headers_list():
    assert jobs.decode_http_answer(answer([204, [], ""])) == (204, [], b"")


@pytest.mark.parametrize("name", [
    "Content-Length", "Content-length", "content-length", "CONTENT-LENGTH",
    "Transfer-Encoding", "transfer-encoding", "Connection", "connection", "Keep-Alive", "Upgrade",
])
def test_framing_headers_from_the_worker_are_dropped(name):
    value = {"Content-Length": 999, "Transfer-Encoding": "chunked"}.get(name.title(), "close")
    _, headers, body = jobs.decode_http_answer(
        answer([200, {"X-Before": "b", name: value, "X-After": "a"}, "héllo"]))
    assert headers == [(b"X-Before", b"b"), (b"X-After", b"a")]
    assert body == "héllo".encode("utf-8")  # 6 bytes, whatever length the worker claimed


def test_framing_headers_dropped_in_list_form_too():
    _, headers, _ = jobs.decode_http_answer(
        answer([200, [["Content-length", "5"], ["Connection", "keep-alive"], ["X", "y"]], "hello"]))
    assert headers == [(b"X", b"y")]


@pytest.mark.parametrize("value", [
    "a\r\nSet-Cookie: evil=1", "a\rb", "a\nb", "a\x00b", "\r\n", ["ok", "bad\nvalue"],
])
def test_header_value_with_cr_lf_or_nul_is_a_bad_answer(value):
    with pytest.raises(BadAnswer, match="CR, LF or NUL"):
        jobs.decode_http_answer(answer([200, {"X-Injected": value}, ""]))


def test_cr_lf_in_a_framing_header_is_still_a_bad_answer():
    with pytest.raises(BadAnswer):
        jobs.decode_http_answer(answer([200, {"Content-Length": "5\r\nX-Evil: 1"}, "hello"]))


@pytest.mark.parametrize("name", [
    "Bad Name", "X:Y", "", "X-Ünï", "X\r\nY", "(paren)", "a/b", "X\x00",
])
def test_bad_header_name_is_a_bad_answer(name):
    with pytest.raises(BadAnswer, match="header name"):
        jobs.decode_http_answer(answer([200, {name: "v"}, ""]))


def test_non_string_header_name_in_pairs_is_a_bad_answer():
    with pytest.raises(BadAnswer, match="header name"):
        jobs.decode_http_answer(answer([200, [[5, "v"]], ""]))


@pytest.mark.parametrize("value", [{"a": 1}, [["nested"]], True])
def test_header_value_of_wrong_type_is_a_bad_answer(value):
    with pytest.raises(BadAnswer):
        jobs.decode_http_answer(answer([200, {"X": value}, ""]))


@pytest.mark.parametrize("headers", ["Content-Type: text/plain", 5, [["a"]], [["a", "b", "c"]], ["a", "b"]])
def test_headers_of_wrong_shape_are_a_bad_answer(headers):
    with pytest.raises(BadAnswer, match="headers"):
        jobs.decode_http_answer(answer([200, headers, ""]))


@pytest.mark.parametrize("data", [
    b"Hello",
    b"",
    b"[200, {}, ",
    b"\xff\xfe[200]",
    b"[200, {}, 'single quotes']",
])
def test_non_json_is_a_bad_answer(data):
    with pytest.raises(BadAnswer, match="not JSON"):
        jobs.decode_http_answer(data)


@pytest.mark.parametrize("data", [b"[]", b'{"status": 200}', b'"200"', b"200", b"null"])
def test_json_that_is_not_a_list_is_a_bad_answer(data):
    with pytest.raises(BadAnswer):
        jobs.decode_http_answer(data)


@pytest.mark.parametrize("status, expected", [
    ("404", (404, "Not Found")),
    (" 302 ", (302, "Found")),
    (200, (200, "OK")),
    (599, (599, "Unknown")),
    (299, (299, "Unknown")),
    (503, (503, "Service Unavailable")),
])
def test_status(status, expected):
    decoded = jobs.decode_http_answer(answer([status, {}, ""]))[0]
    assert (decoded, response.reason(decoded)) == expected


@pytest.mark.parametrize("status", [99, 100, 199, 600, 0, -200, True, False, "abc", "", "20x", 200.0, None, [200]])
def test_bad_status_is_a_bad_answer(status):
    with pytest.raises(BadAnswer, match="bad status"):
        jobs.decode_http_answer(answer([status, {}, ""]))


# regression: str.isdigit() is True for superscripts that int() refuses, so a plain ValueError
# escaped, which the front (catching BadAnswer only) did not turn into a 502
def test_status_with_a_non_decimal_digit_is_a_bad_answer():
    with pytest.raises(BadAnswer):
        jobs.decode_http_answer(answer(["²⁰⁰", {}, ""]))


# regression: RecursionError escaped decode_http_answer: a traceback instead of a 502
def test_deeply_nested_answer_is_a_bad_answer():
    with pytest.raises(BadAnswer):
        jobs.decode_http_answer(b"[" * 100_000)


@pytest.mark.parametrize("body", [5, 1.5, True, ["a"], {"a": "b"}, {"base64": 5},
                                  {"base64": "AAAA", "x": 1}, {"base64": "not base64!"}])
def test_non_string_body_is_a_bad_answer(body):
    with pytest.raises(BadAnswer, match="body"):
        jobs.decode_http_answer(answer([200, {}, body]))


def test_binary_body_in_base64():
    data = bytes(range(256))
    _, _, body = jobs.decode_http_answer(answer([200, {}, {"base64": base64.b64encode(data).decode()}]))
    assert body == data


def test_body_with_raw_utf8_and_escapes_is_sent_as_utf8():
    raw = '[200, {}, "caf\\u00e9 \u2603 \\ud83d\\ude00 é"]'.encode("utf-8")
    _, _, body = jobs.decode_http_answer(raw)
    assert body == "café ☃ 😀 é".encode("utf-8")
    assert body == b"caf\xc3\xa9 \xe2\x98\x83 \xf0\x9f\x98\x80 \xc3\xa9"


def test_body_with_a_lone_surrogate_is_still_utf8():
    _, _, body = jobs.decode_http_answer(b'[200, {}, "a\\ud800b"]')
    assert body == b"a?b"
    body.decode("utf-8")


def test_missing_headers_and_body_are_tolerated():
    assert jobs.decode_http_answer(b"[200]") == (200, [], b"")
    assert jobs.decode_http_answer(b"[404, {}]") == (404, [], b"")
    assert jobs.decode_http_answer(b"[200, null, null]") == (200, [], b"")


def test_extra_elements_are_ignored():
    assert jobs.decode_http_answer(b'[200, {}, "x", "extra"]') == (200, [], b"x")


def test_worker_library_answer_shape_decodes():
    # what tempest.worker sends: jobs.dumps of the handler's value
    data = jobs.dumps([200, {"Content-Type": "text/plain"}, "Hello /é"])
    assert jobs.decode_http_answer(data) == (200, [(b"Content-Type", b"text/plain")],
                                             "Hello /é".encode("utf-8"))


@pytest.mark.parametrize("body", [b"", b"plain", "h\u00e9llo \"quoted\" \\ back\nslash \u2028 \x01".encode(), b"\xff\xfe binary"])
@pytest.mark.parametrize("remote_addr", [None, "127.0.0.1", "::1"])
def test_hot_path_url_job_is_the_generic_encoding(body, remote_addr):
    headers = {"host": "x", "x-odd": "tab\there \"q\" \x7f \u00ff", "cookie": "a=1; b=2"}
    env = jobs.http_env("POST", "/p?q=\"1\"&r=\u00e9", headers, body, remote_addr)
    fast = jobs.encode_http_job(env, "127.0.0.1:4000", "id-1")
    assert fast == jobs.encode_job(jobs.HTTP_ACTION, [env], "127.0.0.1:4000", "id-1")
    assert jobs.decode_job(fast) == ("url", [env], "127.0.0.1:4000", "id-1")


# loads: the C scanner's fast path gives what simplejson.loads gives, errors included


@pytest.mark.parametrize("data", [
    b'[200, {}, "Hello"]', b'{"a": [1, 2.5, null, true]}', '["str", "\u00e9"]', b"[]", b"{}",
    b' [1]', b'[1] ', b'\xef\xbb\xbf[1]', b'"text"', b"17", "[\"h\u00e9\"]".encode("utf-8"),
])
def test_loads_fast_path_agrees_with_simplejson(data):
    import simplejson

    assert jobs.loads(data) == simplejson.loads(data)


@pytest.mark.parametrize("data", [b"[1]]", b"[1] x", b"[1,]", b"[1, 2", b"{]", b"[\xff]", b"[1][2]"])
def test_loads_fast_path_refuses_what_simplejson_refuses(data):
    import simplejson

    with pytest.raises(ValueError) as expected:
        simplejson.loads(data)
    with pytest.raises(ValueError) as got:
        jobs.loads(data)
    assert type(got.value) is type(expected.value)
    assert str(got.value) == str(expected.value)


def test_reserved_headers_are_dropped_but_the_session_one_is_left_to_the_front():
    _, headers, _ = jobs.decode_http_answer(
        answer([200, {"X-Tempest-Secret": "1", "x-tempest-other": "2", "X-Tempest-Session": "id", "X-A": "b"}, ""]))
    assert headers == [(b"X-Tempest-Session", b"id"), (b"X-A", b"b")]


@pytest.mark.parametrize("session", [{"id": "A" * 22, "ttl": 1209600}, {"ttl": 5, "id": "b-_" * 7 + "c"},
                                     {"id": "x", "ttl": 1.5}, {"id": "x", "ttl": 5, "extra": [1]}])
def test_hot_path_session_is_the_generic_encoding(session):
    env = jobs.http_env("GET", "/", {"host": "x"}, b"")
    env["session"] = session
    fast = jobs.encode_http_job(env, "127.0.0.1:4000", "id-1")
    assert jobs.decode_job(fast) == ("url", [env], "127.0.0.1:4000", "id-1")
    assert jobs.loads(fast) == jobs.loads(jobs.encode_job(jobs.HTTP_ACTION, [env], "127.0.0.1:4000", "id-1"))
