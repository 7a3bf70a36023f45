"""Property tests of tempest.events: whatever is published (any payload, event name, data or
stream id), an SSE frame never carries CR, LF or NUL inside its ``event:`` or ``id:`` line, and
its data lines give back the data."""

import re
import simplejson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tempest import events
from tempest.events import BadMessage

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

nasty = st.sampled_from(["\r", "\n", "\x00", "\r\n", "\u2028", "\x85", "a\rb", "event: x\n", "id: 1\r\n", "\ud800"])
text = st.text(max_size=20) | nasty | st.lists(st.text(max_size=5) | nasty, max_size=5).map("".join)
values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | text,
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3), max_leaves=8)
stream_ids = st.from_regex(r"\A[0-9]{1,13}-[0-9]{1,3}\Z") | text


def payloads():
    def dumped(value):
        return simplejson.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")

    plain = st.one_of(st.tuples(values).map(list), st.tuples(text, values).map(list), values).map(dumped)
    durable = st.tuples(st.just("$durable"), stream_ids, plain.map(lambda b: b.decode("utf-8", "replace"))).map(list).map(dumped)
    return plain | durable | st.binary(max_size=60) | st.just(b'["$unsubscribe"]')


def check_frame(frame: bytes, message: events.Message) -> None:
    assert frame.endswith(b"\n\n")
    lines = frame[:-2].split(b"\n")
    for line in lines:
        assert b"\r" not in line and b"\x00" not in line or line.startswith(b"data: "), line
        assert line.startswith((b"event: ", b"id: ", b"data: ")), line  # no line of another field
    fields = [line for line in lines if not line.startswith(b"data: ")]
    for line in fields:
        assert not any(c in line for c in (b"\r", b"\n", b"\x00")), line
    pieces = re.split(rb"\r\n|\r|\n", message.data.encode("utf-8", "replace"))  # SSE's three line ends
    assert lines[len(fields):] == [b"data: " + part for part in pieces]
    assert b"\r" not in b"".join(lines[len(fields):])  # a bare CR would end an SSE line too


@FAST
@given(payloads(), st.none() | text)
@example(b'["a\\rb", "x"]', None)
@example(b'["$durable", "1-1", "[\\"ev\\\\n\\", 1]"]', None)
@example(b'["$durable", "1-1\\n", "x"]', None)
@example(b'["ok", "line\\rline\\r\\nend"]', "1-2\r\nid: 9")
@example(b'["\\ud800"]', None)  # found by this test: UnicodeEncodeError from sse() (and the relay's fan-out)
@example(b'["ev\\udc00", "x"]', None)
def test_sse_frames_never_carry_cr_lf_nul_in_event_or_id(payload, override):
    try:
        message = events.decode("chan", payload)
    except BadMessage:
        return
    check_frame(message.sse(), message)
    message.text().encode("utf-8")  # what the WebSocket sends
    if override is not None and not any(c in override for c in "\r\n\x00"):
        check_frame(message.sse(override), message)
    assert isinstance(message.text(), str)


clean_text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=20) | nasty.filter(lambda t: t != "\ud800")
clean_values = st.recursive(st.none() | st.booleans() | st.integers() | clean_text,
                            lambda inner: st.lists(inner, max_size=3), max_leaves=8)


@FAST
@given(clean_values, st.none() | clean_text)
def test_encode_message_then_decode_keeps_event_and_data(data, event):
    try:
        wire = events.encode_message(data, event)  # what publishers send
    except BadMessage:
        assert event is not None and any(c in event for c in "\r\n\x00")
        return
    try:
        message = events.decode("c", wire.encode("utf-8"))
    except BadMessage:
        raise AssertionError(f"encode_message wrote what decode refuses: {wire!r}") from None
    check_frame(message.sse(), message)
    if event is not None and not (wire == '["$unsubscribe"]'):
        assert message.event == event


@FAST
@given(text)
def test_an_id_given_by_the_caller_with_cr_lf_nul_never_reaches_the_wire_unchecked(ident):
    """Message.sse(event_id) is called with ids tempestd builds from stream ids it validated;
    this documents that sse() itself does not check: the caller's id must be clean."""
    message = events.Message("c", None, "x")
    frame = message.sse(ident) if not any(c in ident for c in "\r\n\x00") else message.sse()
    check_frame(frame, message)
