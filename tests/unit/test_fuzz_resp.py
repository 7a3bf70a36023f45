"""Property tests of tempest.resp.CommandReader (the answer endpoint's and control socket's
reader): any bytes, in any split, give commands or ProtocolError; strictly well-formed RESP
gives exactly the commands an independent parser reads; max_pending bounds what it holds.
The long runs of the same checks are tests/fuzz/fuzz_resp.py (docs/fuzzing.md)."""

import itertools
import os
import sys
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/

from fuzz import targets  # noqa: E402
from fuzz.reference import Invalid, parse_commands  # noqa: E402
from tempest import resp  # noqa: E402
from tempest.errors import ProtocolError  # noqa: E402

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

args = st.binary(max_size=40) | st.sampled_from([b"", b"\r\n", b"*1\r\n", b"$", b"\x00", b"\xff" * 3])
commands = st.lists(st.lists(args, min_size=1, max_size=5), max_size=6)
cuts = st.lists(st.integers(min_value=0, max_value=10_000), max_size=12)
# bytes that look like RESP more often than uniform noise does
tokens = st.sampled_from([b"*", b"$", b"\r\n", b"1", b"2", b"0", b"-1", b"%1", b"~", b":1", b"+x", b"_", b"a",
                          b"4294967295", b"999999999999", b"\n", b" ", b'"', b"'", b"\\x4"])
resp_like = st.lists(tokens | st.binary(max_size=4), max_size=40).map(b"".join)


@FAST
@given(commands, cuts)
def test_packed_commands_in_any_split_are_read_exactly(cmds, where):
    data = b"".join(resp.pack(c) for c in cmds)
    got, error = targets.feed_all(targets.split(data, where))
    assert error is None
    assert got == cmds
    assert parse_commands(data) == (cmds, len(data), True)  # the reference agrees too


@FAST
@given(st.binary(max_size=300), cuts)
@example(b"*4294967295\r\n", [])
@example(b"%1\r\n*1\r\n:1\r\n:2\r\n", [3])
@example(b"*1\r\n$999999999999\r\nxx", [5, 9])
@example(b'PING "unbalanced\r\n', [])
@example(b"\r\n*1\r\n$4\r\nPING\r\n", [1])
def test_any_bytes_give_commands_or_protocol_error(data, where):
    targets.check_resp(data, where)  # raises AssertionError, or lets another exception out


@FAST
@given(resp_like, cuts)
def test_resp_like_bytes_agree_with_the_exact_parser(data, where):
    targets.check_resp(b"*" + data, where)


@FAST
@given(commands, st.binary(max_size=80), cuts)
def test_garbage_after_good_commands_keeps_the_good_ones(cmds, tail, where):
    """Commands completed before a protocol error are read (in any split) before the error."""
    good = b"".join(resp.pack(c) for c in cmds)
    got, error = targets.feed_all(targets.split(good, where) + [b"*" + tail])
    assert got[:len(cmds)] == cmds


@FAST
@given(st.integers(min_value=1, max_value=10_000), st.integers(min_value=16, max_value=4096),
       st.lists(st.integers(min_value=1, max_value=2048), min_size=1, max_size=30))
def test_max_pending_bounds_an_incomplete_bulk(size_digits, max_pending, chunk_sizes):
    """A huge bulk string sent in chunks is refused once more than max_pending (+ one chunk)
    is held: it is never buffered whole."""
    reader = resp.CommandReader(max_pending)
    header = b"*1\r\n$%d\r\n" % (10 ** 12 + size_digits)
    sizes = itertools.chain([len(header)], itertools.cycle(chunk_sizes))
    fed = 0
    with pytest.raises(ProtocolError):
        for size in itertools.islice(sizes, 20_000):
            chunk = header if fed == 0 else b"x" * size
            fed += len(chunk)
            reader.feed(chunk)  # raises once too much is held
            assert fed <= max_pending + len(chunk), f"holds {fed} bytes, max_pending {max_pending}"


@FAST
@given(resp_like, cuts, st.integers(min_value=16, max_value=2048))
def test_bounded_reader_on_any_bytes(data, where, max_pending):
    targets.check_resp_bounded(b"*" + data, where, max_pending)


@FAST
@given(commands, st.integers(min_value=64, max_value=512))
def test_bounded_reader_reads_small_commands_forever(cmds, max_pending):
    """The bound is on one incomplete command, not on the connection: many small commands
    pass, each whole, whatever their total."""
    small = [c for c in cmds if len(resp.pack(c)) <= max_pending] or [[b"PING"]]
    reader = resp.CommandReader(max_pending)
    for _ in range(20):
        for command in small:
            assert reader.feed(resp.pack(command)) == [command]


def test_the_reference_refuses_what_it_cannot_vouch_for():
    for data in (b"*01\r\n", b"*1\r\n$-1\r\n", b"*1\r\n:1\r\n", b"*2000000\r\n", b"*1\r\n$1\r\nab"):
        with pytest.raises(Invalid):
            parse_commands(data)
    assert parse_commands(b"*1\r\n$3\r\nab") == ([], 0, False)
    assert parse_commands(b"*-1\r\n*0\r\n") == ([], 9, True)


def test_a_huge_array_header_costs_no_time():
    """``*2147483647\\r\\n`` and one more byte (14 bytes, before AUTH) cost the reader seconds of CPU
    (8-16 s measured), during which the whole tempestd, HTTP front included, stands still; a
    reader dropped after the header alone costs as much. A smaller count shows it in less time:
    a count this large must be refused as it arrives."""
    started = time.process_time()
    reader = resp.CommandReader(4096)
    try:
        reader.feed(b"*134217727\r\n\x00")
    except ProtocolError:
        pass
    reader = resp.CommandReader(4096)
    try:
        reader.feed(b"*134217727\r\n")
    except ProtocolError:
        pass
    del reader
    assert time.process_time() - started < 0.05
