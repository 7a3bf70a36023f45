"""Property tests of tempest.jobs, the job and answer codec: jobs round-trip; any JSON or bytes
given to decode_http_answer, decode_stream_head or decode_chunk is a value or BadAnswer, and a
header that comes out never carries CR, LF or NUL."""

import base64
import re

import simplejson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tempest import jobs
from tempest.jobs import BadAnswer

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# text as a worker may send it: lone surrogates ("\ud800" in JSON) included
text = st.text(max_size=30) | st.sampled_from(["\r", "\n", "\x00", "a\r\nb", "\ud800", "é☃", "", " 200 "])
scalars = st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=False, allow_infinity=False) | text
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(text, inner, max_size=4), max_leaves=20)
# what tempestd itself encodes: text without surrogates (the front decodes requests as latin-1)
clean_text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=30)
clean_values = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70)
                            | st.floats(allow_nan=False, allow_infinity=False) | clean_text,
                            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(clean_text, inner, max_size=4),
                            max_leaves=20)
statuses = st.integers(100, 700) | st.sampled_from(["200", " 404", "2OO", "٢٠٠", True, 200.0]) | json_values
header_names = st.sampled_from(["Content-Type", "X-A", "set-cookie", "Content-Length", "Transfer-Encoding",
                                "Bad Name", "X\r\nY", "", "é"]) | text
header_values = text | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.lists(text, max_size=3) | json_values
headers = (st.dictionaries(header_names, header_values, max_size=4)
           | st.lists(st.lists(header_names | header_values, min_size=2, max_size=2), max_size=4) | json_values)
bodies = text | st.fixed_dictionaries({"base64": text}) | st.fixed_dictionaries(
    {"base64": st.binary(max_size=20).map(lambda b: base64.b64encode(b).decode())}) | json_values
answers = st.lists(st.one_of(statuses, headers, bodies), max_size=4) | st.tuples(statuses, headers, bodies).map(list) \
    | st.tuples(statuses, headers, st.sampled_from([{"chunks": "json"}, {"chunks": "raw"}, {}, {"chunks": 1}])).map(list) \
    | json_values


def encoded(value):
    return simplejson.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


raw_bytes = st.binary(max_size=200) | answers.map(encoded) | st.sampled_from(
    [b"\xff[200]", b"[200,{},\"\xed\xa0\x80\"]", b"[]", b"{}", b"", b"[200", b"[1e400]", b"[200,{\"X\":NaN}]"])
DEEP = b"[" * 100_000
DEEP_BODY = b"[200,{}," + b"[" * 5000


def check_headers(out):
    assert isinstance(out, list)
    for name, value in out:
        assert isinstance(name, bytes) and isinstance(value, bytes)
        assert re.fullmatch(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name), name
        assert not re.search(rb"[\r\n\x00]", value), value
        assert name.lower() not in jobs.HOP_BY_HOP


def decoded_or_bad(function, data):
    try:
        return function(data)
    except BadAnswer:
        return None


@FAST
@given(clean_text, st.lists(clean_values, max_size=3), st.none() | clean_text, clean_text)
def test_jobs_round_trip(action, args, respond_to, job_id):
    data = jobs.encode_job(action, args, respond_to, job_id)
    assert isinstance(data, bytes)
    assert jobs.decode_job(data) == (action, args, respond_to, job_id)


@FAST
@given(st.sampled_from(["GET", "POST", "M-SEARCH"]), st.text(st.characters(max_codepoint=255), max_size=40),
       st.dictionaries(st.text(st.characters(max_codepoint=255), max_size=10),
                       st.text(st.characters(max_codepoint=255), max_size=20), max_size=4),
       st.binary(max_size=40), st.none() | st.sampled_from(["127.0.0.1", "::1", ""]),
       st.none() | st.from_regex(r"\A[0-9.:]{1,20}\Z"),
       st.none() | st.fixed_dictionaries({"id": clean_text, "ttl": st.integers(0, 10 ** 6)}))
def test_http_job_fast_path_is_the_generic_encoding(method, url, hdrs, body, remote, respond_to, session):
    """encode_http_job writes the same JSON as encode_job, and the body comes back exactly
    (as text or base64)."""
    env = jobs.http_env(method, url, hdrs, body, remote)
    if session is not None:
        env["session"] = session
    fast = jobs.encode_http_job(env, respond_to, "id1")
    assert jobs.loads(fast) == jobs.loads(jobs.encode_job(jobs.HTTP_ACTION, [env], respond_to, "id1"))
    action, (decoded,), back_to, job_id = jobs.decode_job(fast)
    assert (action, back_to, job_id) == ("url", respond_to or None, "id1")
    sent = decoded["body"].encode() if "body" in decoded else base64.b64decode(decoded.get("body_base64", ""))
    assert sent == body


@FAST
@given(raw_bytes | answers.map(encoded))
@example(b"[200, {\"X\": \"a\\r\\nb\"}, \"\"]")
@example(b"[200, [[\"X\", [\"a\", \"b\\u0000\"]]], \"\"]")
@example(b"[200, {\"X\": 1e400}, \"\"]")
@example(b"[\"200\", null, {\"base64\": \"!!\"}]")
@example(b"[200, {\"X-A\": \"\\ud800\"}, \"hi\"]")  # found by this test: a UnicodeEncodeError, the connection dropped
@example(b"[200, [[\"X-A\", [\"\\udfff\"]]]]")
@example(DEEP)
@example(DEEP_BODY)
def test_decode_any_answer_is_a_value_or_bad_answer(data):
    out = decoded_or_bad(jobs.decode_http_answer, data)
    if out is not None:
        status, hdrs, body = out
        assert type(status) is int and 200 <= status <= 599
        check_headers(hdrs)
        assert isinstance(body, bytes)
    head = decoded_or_bad(jobs.decode_stream_head, data)
    if head is not None:
        status, hdrs, json_chunks = head
        assert type(status) is int and 200 <= status <= 599
        check_headers(hdrs)
        assert json_chunks in (True, False)
    chunk = decoded_or_bad(jobs.decode_chunk, data)
    assert chunk is None or isinstance(chunk, bytes)


@FAST
@given(answers)
@example([200, {}, "\ud800"])  # a raw lone surrogate: refused in both forms (the str one once gave b"?")
def test_decode_any_answer_value_as_text_too(value):
    """The str form (what a worker library may hand over) behaves as the bytes form."""
    data = simplejson.dumps(value, ensure_ascii=False)
    for function in (jobs.decode_http_answer, jobs.decode_stream_head, jobs.decode_chunk):
        assert decoded_or_bad(function, data) == decoded_or_bad(function, data.encode("utf-8", "surrogatepass"))


@FAST
@given(st.integers(200, 599), st.dictionaries(st.text("abcXYZ019-", min_size=1, max_size=8).map("X-".__add__),
                                               st.text(st.characters(blacklist_characters="\r\n\x00", blacklist_categories=["Cs"]), max_size=20),
                                               max_size=4), st.binary(max_size=50))
def test_a_good_answer_comes_back_whole(status, hdrs, body):
    wire = [status, hdrs, {"base64": base64.b64encode(body).decode()}]
    got_status, got_headers, got_body = jobs.decode_http_answer(jobs.dumps(wire))
    assert got_status == status and got_body == body
    assert sorted(got_headers) == sorted((k.encode(), v.encode()) for k, v in hdrs.items())


@FAST
@given(raw_bytes)
def test_decode_job_of_any_bytes_is_a_job_or_value_error(data):
    try:
        action, args, respond_to, _ = jobs.decode_job(data)
    except ValueError:  # BadAnswer, JSONDecodeError and UnicodeDecodeError are ValueErrors
        return
    assert isinstance(action, str) and isinstance(args, list) and (respond_to is None or isinstance(respond_to, str))
