"""Legacy pub/sub messages turned into SSE frames and WebSocket text (tempest.events)."""

import json

import pytest

from tempest import events


def frame(payload, channel="c"):
    return events.decode(channel, payload.encode() if isinstance(payload, str) else payload).sse()


def test_data_event():
    assert frame('["Bob"]') == b"data: Bob\n\n"


def test_named_event_and_multiline_data():
    assert frame('["greet", "a\\nb\\r\\nc"]') == b"event: greet\ndata: a\ndata: b\ndata: c\n\n"


def test_non_string_data_is_sent_as_json():
    assert frame('[{"x": [1, 2]}]') == b'data: {"x": [1, 2]}\n\n'


@pytest.mark.parametrize("payload", ["plain text", "{\"not\": \"a list\"}", "[]", "[1, 2, 3]", "[\"a\""])
def test_anything_else_is_relayed_as_raw_text(payload):
    message = events.decode("c", payload.encode())
    assert message.event is None and message.data == payload


def test_unsubscribe_ends_the_stream():
    message = events.decode("c", b'["$unsubscribe"]')
    assert message.end and message.sse() == b"event: end\ndata: \n\n"


@pytest.mark.parametrize("name", ["a\nid: 1", "a\rb", "a\x00"])
def test_event_names_with_cr_lf_nul_are_refused(name):
    with pytest.raises(events.BadMessage):
        events.decode("c", json.dumps([name, "x"]).encode())


def test_durable_envelope_carries_the_stream_id():
    inner = json.dumps(["upd", "v"])
    message = events.decode("news", json.dumps(["$durable", "1700000000000-3", inner]).encode())
    assert (message.event, message.data, message.id) == ("upd", "v", "1700000000000-3")
    assert message.sse() == b"event: upd\nid: 1700000000000-3\ndata: v\n\n"
    assert message.sse("a=1-0,b=2-0") == b"event: upd\nid: a=1-0,b=2-0\ndata: v\n\n"


@pytest.mark.parametrize("stream_id", ["1-0\nid: 9", "abc", 17])
def test_bad_durable_ids_are_refused(stream_id):
    with pytest.raises(events.BadMessage):
        events.decode("news", json.dumps(["$durable", stream_id, '["x"]']).encode())


def test_websocket_text_is_the_legacy_list():
    assert json.loads(events.decode("c", b'["e", "d"]').text()) == ["e", "d"]
    assert json.loads(events.decode("c", b"raw").text()) == ["raw"]


def test_stream_ids_compare_numerically():
    assert events.parse_stream_id("10-0") > events.parse_stream_id("9-5")
    assert events.parse_stream_id("garbage") is None


def test_publishers_encode_the_legacy_format_and_refuse_bad_names():
    assert json.loads(events.encode_message("d")) == ["d"]
    assert json.loads(events.encode_message({"a": 1}, "e")) == ["e", {"a": 1}]
    with pytest.raises(events.BadMessage):
        events.encode_message("d", "bad\nname")
