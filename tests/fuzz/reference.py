"""An exact, strict parser of RESP commands (arrays of bulk strings, canonical lengths), written
independently of hiredis: what ``tempest.resp.CommandReader`` must agree with on input that
this parser accepts."""

from __future__ import annotations

import re

# arrays over tempest's bound (resp.MAX_ARGS: refused as the header arrives, since hiredis
# would set aside a slot per element) are invalid here too
MAX_COUNT = 65536
MAX_BULK = 512 << 20  # Redis' proto-max-bulk-len
_LENGTH = re.compile(rb"(-1|0|[1-9][0-9]{0,17})\r\n")


class Invalid(Exception):
    """The bytes are not strictly well-formed RESP commands (hiredis may still accept them)."""


def parse_commands(data: bytes) -> tuple[list[list[bytes]], int, bool]:
    """Parse ``data`` as a sequence of RESP arrays of bulk strings.

    Returns:
        (commands, consumed, complete): the commands in order (a null array ``*-1`` and an
        empty one ``*0`` give none, as Redis ignores them), how many bytes they used, and
        whether the input ended exactly after a command (False: an incomplete one follows).

    Raises:
        Invalid: something other than a strictly well-formed command was found.
    """
    commands: list[list[bytes]] = []
    at = 0
    while at < len(data):
        start = at
        if data[at:at + 1] != b"*":
            raise Invalid(f"expected '*' at {at}")
        count, at = _length(data, at + 1)
        if count is None:
            return commands, start, False
        if count > MAX_COUNT:
            raise Invalid(f"an array of {count} (hiredis allocates it whole: may fail)")
        args: list[bytes] = []
        for _ in range(max(count, 0)):
            if at >= len(data):
                return commands, start, False
            if data[at:at + 1] != b"$":
                raise Invalid(f"expected '$' at {at}")
            size, at = _length(data, at + 1)
            if size is None:
                return commands, start, False
            if size < 0:
                raise Invalid("a null bulk string in a command")
            if size > MAX_BULK:
                raise Invalid(f"a bulk string of {size} bytes")
            if len(data) < at + size + 2:
                if not b"\r\n".startswith(data[at + size:]):
                    raise Invalid("bulk string not followed by CRLF")
                return commands, start, False
            if data[at + size:at + size + 2] != b"\r\n":
                raise Invalid("bulk string not followed by CRLF")
            args.append(data[at:at + size])
            at += size + 2
        if args:
            commands.append(args)
    return commands, at, True


def _length(data: bytes, at: int) -> tuple[int | None, int]:
    """The length after a type byte: (value, position after its CRLF), or (None, at) if the
    input ends inside it."""
    end = data.find(b"\r\n", at)
    if end < 0:
        tail = data[at:]
        if len(tail) > 20 or not re.fullmatch(rb"-?[0-9]*\r?", tail) or not _prefix_ok(tail):
            raise Invalid(f"bad length {tail[:24]!r}")
        return None, at
    match = _LENGTH.match(data, at)
    if not match or match.end() != end + 2:
        raise Invalid(f"bad length {data[at:end + 2][:24]!r}")
    return int(match.group(1)), end + 2


def _prefix_ok(tail: bytes) -> bool:
    """Whether ``tail`` (no CRLF yet) could still become a canonical length."""
    digits = tail.rstrip(b"\r")
    if digits in (b"", b"-"):
        return True
    if digits.startswith(b"-"):
        return digits == b"-1"
    return digits == b"0" or not digits.startswith(b"0")
