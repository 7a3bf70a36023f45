"""Unit tests of tempest.resp: encoding replies and reading commands."""

import hiredis
import pytest

from tempest import resp
from tempest.errors import ProtocolError


def parse(data):
    """Parse one encoded reply with hiredis (which reads RESP2 and RESP3)."""
    reader = hiredis.Reader()
    reader.feed(data)
    value = reader.gets()
    assert value is not False, f"incomplete reply {data!r}"
    assert reader.gets() is False, f"trailing bytes in {data!r}"
    return value


# encoding


@pytest.mark.parametrize("protocol", [2, 3])
def test_encode_str_is_a_bulk_string_counting_bytes(protocol):
    assert resp.encode("hi", protocol) == b"$2\r\nhi\r\n"
    assert resp.encode("", protocol) == b"$0\r\n\r\n"
    assert resp.encode("é☃", protocol) == b"$5\r\n\xc3\xa9\xe2\x98\x83\r\n"


@pytest.mark.parametrize("protocol", [2, 3])
def test_encode_bytes_is_a_bulk_string(protocol):
    assert resp.encode(b"a\r\nb\x00", protocol) == b"$5\r\na\r\nb\x00\r\n"
    assert parse(resp.encode(b"a\r\nb\x00", protocol)) == b"a\r\nb\x00"


@pytest.mark.parametrize("protocol", [2, 3])
def test_encode_int(protocol):
    assert resp.encode(42, protocol) == b":42\r\n"
    assert resp.encode(0, protocol) == b":0\r\n"
    assert resp.encode(-7, protocol) == b":-7\r\n"
    assert resp.encode(True, protocol) == b":1\r\n"
    assert resp.encode(False, protocol) == b":0\r\n"


def test_encode_none_resp2_is_null_bulk():
    assert resp.encode(None) == b"$-1\r\n"
    assert resp.encode(None, 2) == b"$-1\r\n"


def test_encode_none_resp3_is_null():
    assert resp.encode(None, 3) == b"_\r\n"


def test_encode_list_resp2():
    data = resp.encode(["a", 1, None, [b"x"]], 2)
    assert data == b"*4\r\n$1\r\na\r\n:1\r\n$-1\r\n*1\r\n$1\r\nx\r\n"
    assert parse(data) == [b"a", 1, None, [b"x"]]


def test_encode_list_resp3_uses_resp3_null_inside():
    assert resp.encode(["a", None], 3) == b"*2\r\n$1\r\na\r\n_\r\n"
    assert resp.encode((), 3) == b"*0\r\n"


def test_encode_dict_resp2_is_a_flat_array():
    data = resp.encode({"proto": 2, "id": "x"}, 2)
    assert data == b"*4\r\n$5\r\nproto\r\n:2\r\n$2\r\nid\r\n$1\r\nx\r\n"
    assert parse(data) == [b"proto", 2, b"id", b"x"]


def test_encode_dict_resp3_is_a_map():
    data = resp.encode({"proto": 3, "modules": [], "role": None}, 3)
    assert data == b"%3\r\n$5\r\nproto\r\n:3\r\n$7\r\nmodules\r\n*0\r\n$4\r\nrole\r\n_\r\n"
    assert parse(data) == {b"proto": 3, b"modules": [], b"role": None}


def test_encode_refuses_other_types():
    with pytest.raises(TypeError):
        resp.encode(1.5)
    with pytest.raises(TypeError):
        resp.encode({"a": object()}, 3)


def test_small_helpers():
    assert resp.simple("OK") == b"+OK\r\n" == resp.OK
    assert resp.integer(5) == b":5\r\n"
    assert resp.bulk(None) == b"$-1\r\n"
    assert resp.bulk("abc") == b"$3\r\nabc\r\n"


def test_error_strips_cr_and_lf():
    data = resp.error("ERR bad\r\nthing\rhere\nnow")
    assert data == b"-ERR bad  thing here now\r\n"
    assert data.count(b"\r") == 1 and data.count(b"\n") == 1 and data.endswith(b"\r\n")
    assert isinstance(parse(data), hiredis.ReplyError)


def test_error_keeps_its_code():
    assert resp.error("NOAUTH Authentication required.") == b"-NOAUTH Authentication required.\r\n"


# reading commands

ECHO = b"*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n"
ANSWER = b'*3\r\n$3\r\nurl\r\n$2\r\n17\r\n$16\r\n[200,{},"Hello"]\r\n'


def feed_bytewise(reader, data):
    commands = []
    for i in range(len(data)):
        commands += reader.feed(data[i:i + 1])
    return commands


def test_one_command():
    reader = resp.CommandReader()
    assert reader.feed(ECHO) == [[b"ECHO", b"hi"]]
    assert reader.feed(ANSWER) == [[b"url", b"17", b'[200,{},"Hello"]']]


def test_binary_safe_arguments():
    reader = resp.CommandReader()
    assert reader.feed(b"*2\r\n$3\r\nSET\r\n$4\r\na\r\n\x00\r\n") == [[b"SET", b"a\r\n\x00"]]


def test_pipelined_commands_in_one_feed():
    reader = resp.CommandReader()
    ping = b"*1\r\n$4\r\nPING\r\n"
    assert reader.feed(ping + ECHO + ANSWER + ping) == [
        [b"PING"], [b"ECHO", b"hi"], [b"url", b"17", b'[200,{},"Hello"]'], [b"PING"],
    ]


def test_pipelined_commands_with_a_partial_tail():
    reader = resp.CommandReader()
    assert reader.feed(ECHO + ANSWER[:20]) == [[b"ECHO", b"hi"]]
    assert reader.feed(ANSWER[20:]) == [[b"url", b"17", b'[200,{},"Hello"]']]


def test_command_split_inside_a_bulk_string():
    reader = resp.CommandReader()
    assert reader.feed(b"*1\r\n$4\r\nPI") == []
    assert reader.feed(b"NG\r\n") == [[b"PING"]]


# regression: hiredis' has_data() is False once every byte fed so far is consumed (after '*' or
# after a complete element), and the rest of a split command was read as inline commands
def test_command_split_byte_by_byte():
    reader = resp.CommandReader()
    assert feed_bytewise(reader, ECHO + ANSWER) == [
        [b"ECHO", b"hi"], [b"url", b"17", b'[200,{},"Hello"]'],
    ]


# regression: same has_data() flaw, at a TCP segment boundary
@pytest.mark.parametrize("cut", [
    len(b"*3\r\n"),  # after the array header
    len(b"*3\r\n$3\r\nurl\r\n"),  # after a complete element
    len(b"*3\r\n$3\r\nurl\r\n$"),  # right after a type byte
])
def test_command_split_at_an_element_boundary(cut):
    reader = resp.CommandReader()
    assert reader.feed(ANSWER[:cut]) == []
    assert reader.feed(ANSWER[cut:]) == [[b"url", b"17", b'[200,{},"Hello"]']]


def test_inline_commands():
    reader = resp.CommandReader()
    assert reader.feed(b"PING\r\n") == [[b"PING"]]
    assert reader.feed(b"ping hello\r\n") == [[b"ping", b"hello"]]
    assert reader.feed(b"info\n") == [[b"info"]]  # netcat sends a bare LF
    assert reader.feed(b"  echo   a  b \r\n") == [[b"echo", b"a", b"b"]]


@pytest.mark.parametrize("line, args", [
    (b'url 17 "[200, {}, \\"Hi there\\"]"', [b"url", b"17", b'[200, {}, "Hi there"]']),
    (b"echo 'it\\'s a \\n test'", [b"echo", b"it's a \\n test"]),  # single quotes: only \'
    (b'echo "a\\tb\\r\\n\\x41\\x4a\\\\\\z"', [b"echo", b"a\tb\r\nAJ\\z"]),
    (b'echo ""', [b"echo", b""]),
    (b'echo ab"c d"e', None),  # a closing quote must end the argument
    (b'echo ab"c d"', [b"echo", b"abc d"]),  # a quote may open in the middle of one
    (b'echo "unterminated', None),
    (b"echo 'unterminated", None),
])
def test_inline_commands_split_like_redis(line, args):
    """Redis' own rules (sdssplitargs), so that what works typed into redis-cli's inline form
    or telnet against Redis works here."""
    if args is None:
        with pytest.raises(ProtocolError, match="unbalanced quotes"):
            resp.CommandReader().feed(line + b"\r\n")
    else:
        assert resp.CommandReader().feed(line + b"\r\n") == [args]


def test_several_inline_commands_in_one_feed():
    reader = resp.CommandReader()
    assert reader.feed(b"PING\r\nping hello\r\n") == [[b"PING"], [b"ping", b"hello"]]


def test_empty_inline_lines_are_ignored():
    reader = resp.CommandReader()
    assert reader.feed(b"\r\n\n   \r\nPING\r\n") == [[b"PING"]]


def test_inline_command_split_across_feeds():
    reader = resp.CommandReader()
    assert reader.feed(b"pi") == []
    assert reader.feed(b"ng hel") == []
    assert reader.feed(b"lo\r") == []
    assert reader.feed(b"\n") == [[b"ping", b"hello"]]


def test_inline_command_split_byte_by_byte():
    assert feed_bytewise(resp.CommandReader(), b"ping hello\r\n") == [[b"ping", b"hello"]]


def test_inline_then_resp_in_one_feed():
    reader = resp.CommandReader()
    assert reader.feed(b"PING\r\n" + ECHO) == [[b"PING"], [b"ECHO", b"hi"]]


def test_resp_after_inline_in_later_feed():
    reader = resp.CommandReader()
    assert reader.feed(b"PING\r\n") == [[b"PING"]]
    assert reader.feed(ECHO) == [[b"ECHO", b"hi"]]


def test_garbage_without_newline_is_buffered_until_too_long():
    reader = resp.CommandReader()
    assert reader.feed(b"\x16\x03\x01" + b"A" * 100) == []  # not an error yet: maybe a slow line
    with pytest.raises(ProtocolError):
        reader.feed(b"B" * resp.MAX_INLINE)


def test_garbage_too_long_in_one_feed():
    with pytest.raises(ProtocolError):
        resp.CommandReader().feed(b"GET / HTTP/1.1" + b"x" * (resp.MAX_INLINE + 1))


def test_garbage_too_long_accumulated_over_feeds():
    reader = resp.CommandReader()
    with pytest.raises(ProtocolError):
        for _ in range(resp.MAX_INLINE // 4096 + 2):
            reader.feed(b"z" * 4096)


@pytest.mark.parametrize("data", [
    b"*abc\r\n",  # array length not a number
    b"*1\r\n!4\r\nPING\r\n",  # bad type byte inside
])
def test_bad_resp_raises_protocol_error(data):
    with pytest.raises(ProtocolError):
        resp.CommandReader().feed(data)


def test_nested_array_raises_protocol_error():
    with pytest.raises(ProtocolError, match="array of bulk strings"):
        resp.CommandReader().feed(b"*2\r\n$4\r\nECHO\r\n*1\r\n$1\r\nx\r\n")


def test_non_bulk_element_raises_protocol_error():
    with pytest.raises(ProtocolError, match="array of bulk strings"):
        resp.CommandReader().feed(b"*2\r\n$4\r\nECHO\r\n:5\r\n")


def test_empty_array_is_ignored():
    reader = resp.CommandReader()
    assert reader.feed(b"*0\r\n") == []
    assert reader.feed(b"*0\r\n*1\r\n$4\r\nPING\r\n*0\r\n") == [[b"PING"]]


def test_null_array_is_ignored_as_redis_does():
    reader = resp.CommandReader()
    assert reader.feed(b"*-1\r\n*1\r\n$4\r\nPING\r\n") == [[b"PING"]]


def test_pack_is_a_command_of_bulk_strings():
    assert resp.pack(["RPUSH", b"q", "h\u00e9", 17, 0.5]) == (
        b"*5\r\n$5\r\nRPUSH\r\n$1\r\nq\r\n$3\r\nh\xc3\xa9\r\n$2\r\n17\r\n$3\r\n0.5\r\n")
    command = ["url", "AbCd", b'[200, {}, "x"]']
    assert resp.pack(command) == resp.encode(command)
    reader = resp.CommandReader()
    assert reader.feed(resp.pack(["SET", "k", 1])) == [[b"SET", b"k", b"1"]]


@pytest.mark.parametrize("data", [
    b"*4294967295\r\n",  # hiredis cannot allocate it: MemoryError
    b"*1\r\n%1\r\n*1\r\n:1\r\n:2\r\n",  # a RESP3 map with a list key: TypeError
])
def test_what_hiredis_cannot_build_is_a_protocol_error(data):
    with pytest.raises(ProtocolError, match="invalid multibulk length|expected an array of bulk strings"):
        resp.CommandReader().feed(data)


@pytest.mark.parametrize("data, message", [
    (b"*2\r\n$4\r\nECHO\r\n$999999999999\r\n", "invalid bulk length: over 4096 bytes"),
    (b"*70000\r\n", "invalid multibulk length: over 65536 arguments"),
    (b"*1\r\n$x\r\n", "invalid bulk length"),
    (b"*1\r\n$" + b"9" * 70, "too big count string"),
])
def test_lengths_are_checked_as_their_headers_arrive(data, message):
    reader = resp.CommandReader(4096)
    with pytest.raises(ProtocolError, match=message):
        for i in range(len(data)):  # a byte at a time: refused as soon as the header is complete
            reader.feed(data[i:i + 1])


def test_the_framing_follows_commands_split_anywhere():
    data = ECHO + ANSWER + b"*1\r\n$4\r\nPING\r\n"
    for cut in range(1, len(data)):
        reader = resp.CommandReader(4096)
        assert reader.feed(data[:cut]) + reader.feed(data[cut:]) == [[b"ECHO", b"hi"], [b"url", b"17", b'[200,{},"Hello"]'], [b"PING"]]
