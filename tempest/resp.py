"""RESP: encoding replies (RESP2 and RESP3) and parsing commands with hiredis.

Parsing is hiredis' ``Reader``; this module only adds what a server needs on top of it: the
inline command form (``PING\\r\\n`` typed into telnet or nc, which real Redis accepts) and a
check that every command is a flat list of bulk strings. Inline commands are read until the
first ``*`` that starts a command; from then on the connection is RESP for good, since hiredis
cannot tell whether it sits between two commands or inside one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import hiredis

from tempest.errors import ProtocolError

Arg = str | bytes | int | float  # an argument of a command sent by pack
Command = Sequence[Arg]

OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
NULL2 = b"$-1\r\n"
NULL3 = b"_\r\n"
MAX_INLINE = 64 * 1024  # an inline command longer than this is refused, as Redis does


def simple(text: str) -> bytes:
    return b"+" + text.encode() + b"\r\n"


def error(text: str) -> bytes:
    """An error reply; ``text`` starts with its code (ERR, NOAUTH, WRONGPASS...)."""
    return b"-" + text.replace("\r", " ").replace("\n", " ").encode() + b"\r\n"


def integer(value: int) -> bytes:
    return b":%d\r\n" % value


def bulk(value: str | bytes | None) -> bytes:
    if value is None:
        return NULL2
    if isinstance(value, str):
        value = value.encode()
    return b"$%d\r\n%s\r\n" % (len(value), value)


def encode(value: object, protocol: int = 2) -> bytes:
    """Encode a Python value: str/bytes as bulk, int, None, list, dict (a map in RESP3)."""
    if value is None:
        return NULL3 if protocol == 3 else NULL2
    if isinstance(value, bool):
        return integer(int(value))
    if isinstance(value, int):
        return integer(value)
    if isinstance(value, (str, bytes)):
        return bulk(value)
    if isinstance(value, dict):
        items = [encode(x, protocol) for pair in value.items() for x in pair]
        if protocol == 3:
            return b"%%%d\r\n" % len(value) + b"".join(items)
        return b"*%d\r\n" % len(items) + b"".join(items)
    if isinstance(value, (list, tuple)):
        return b"*%d\r\n" % len(value) + b"".join(encode(x, protocol) for x in value)
    raise TypeError(f"cannot encode {type(value).__name__} in RESP")


_ESCAPES = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("b"): b"\b", ord("a"): b"\a"}
_HEX = b"0123456789abcdefABCDEF"


def split_inline(line: bytes) -> list[bytes]:
    """The arguments of an inline command line, split as Redis does (``sdssplitargs``):
    spaces separate, "double quotes" take \\n \\r \\t \\b \\a \\xHH and \\<char>,
    'single quotes' take \\'. A closing quote must be followed by a space or the end.

    Raises:
        ProtocolError: unbalanced quotes.
    """
    args: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in b" \t\r\n\v\f":
            i += 1
        if i >= n:
            return args
        current, quote = bytearray(), None
        while i < n:
            char = line[i]
            if quote is None:
                if char in b" \t\r\n\v\f":
                    break
                if char in b"\"'":
                    quote = char
                else:
                    current.append(char)
                i += 1
                continue
            if char == quote:  # the closing quote
                if i + 1 < n and line[i + 1] not in b" \t\r\n\v\f":
                    raise ProtocolError("unbalanced quotes in request")
                quote = None
                i += 1
                break
            if char == 0x5C and i + 1 < n:  # a backslash
                following = line[i + 1]
                if quote == 0x22 and following == ord("x") and i + 3 < n and line[i + 2] in _HEX and line[i + 3] in _HEX:
                    current.append(int(line[i + 2:i + 4], 16))
                    i += 4
                    continue
                if quote == 0x22:
                    current += _ESCAPES.get(following, bytes([following]))
                    i += 2
                    continue
                if following == 0x27:  # \' inside single quotes
                    current.append(0x27)
                    i += 2
                    continue
            current.append(char)
            i += 1
        if quote is not None:
            raise ProtocolError("unbalanced quotes in request")
        args.append(bytes(current))


def pack(command: Command) -> bytes:
    """A command as a client sends it: an array of bulk strings (str as UTF-8, numbers as
    their decimal text). The hot path of every lean connection: no type dispatch per value."""
    out = [b"*%d\r\n" % len(command)]
    for arg in command:
        if type(arg) is not bytes:
            arg = (arg if type(arg) is str else str(arg)).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


MAX_BULK = 512 << 20  # bytes of one argument without another bound: Redis' proto-max-bulk-len
MAX_ARGS = 65536  # arguments of one command (Redis allows 1M; no command of ours needs many)
MAX_HEADER = 64  # bytes of a '*<count>' or '$<length>' line: no number needs more


class Framing:
    """Follows the framing of a stream of RESP commands as it arrives, before hiredis sees it:
    the array header of each command and the header of each of its bulk strings, payloads
    skipped by arithmetic, so that a length over a bound is refused when its header arrives,
    before anything is allocated or buffered for it (hiredis sets aside a slot per element of
    ``*2147483647`` and then walks them all: seconds of CPU for 14 bytes)."""

    __slots__ = ("max_bulk", "max_args", "elements", "skip", "line")

    def __init__(self, max_bulk: int, max_args: int = MAX_ARGS) -> None:
        self.max_bulk = max_bulk
        self.max_args = max_args
        self.elements = 0  # bulk strings still to come in the current command
        self.skip = 0  # payload bytes (and their CRLF) still to come
        self.line = b""  # a header line begun in an earlier read

    def scan(self, data: bytes) -> None:
        """Check ``data``, the next bytes of the stream.

        Raises:
            ProtocolError: a header is malformed or over a bound.
        """
        skip, elements, i = self.skip, self.elements, 0
        if self.line:
            data, self.line = self.line + data, b""
        n = len(data)
        while i < n:
            if skip:
                if skip >= n - i:
                    skip -= n - i
                    break
                i, skip = i + skip, 0
                continue
            j = data.find(b"\r\n", i, i + MAX_HEADER)
            if j < 0:
                if n - i >= MAX_HEADER:
                    raise ProtocolError("too big count string")
                self.line = data[i:]
                break
            kind = data[i]
            try:  # (a non-canonical number, such as +5, is hiredis' to refuse: only bounds matter here)
                value = int(data[i + 1:j])
            except ValueError:
                raise ProtocolError(f"invalid {'bulk' if elements else 'multibulk'} length") from None
            if elements:
                if kind != 0x24:  # '$'
                    raise ProtocolError("expected an array of bulk strings")
                if value > self.max_bulk:
                    raise ProtocolError(f"invalid bulk length: over {self.max_bulk} bytes")
                elements -= 1
                skip = max(value, 0) + 2
            elif kind == 0x2A:  # '*': a command
                if value > self.max_args:
                    raise ProtocolError(f"invalid multibulk length: over {self.max_args} arguments")
                elements = max(value, 0)
            else:
                raise ProtocolError("expected an array of bulk strings")
            i = j + 2
        self.skip, self.elements = skip, elements


class CommandReader:
    """Turns bytes received by a server into commands (lists of bytes). With ``max_pending``,
    an incomplete command may not hold more than that many bytes: hiredis' Reader buffers a
    bulk string whole before it returns it, so a bound on what it holds is a bound on memory."""

    def __init__(self, max_pending: int = 0) -> None:  # (max_pending also bounds each bulk)
        self._reader = hiredis.Reader()
        self._framing = Framing(max_pending or MAX_BULK)
        self._inline = b""
        self._resp: bool | None = None  # decided by the first byte received
        self.max_pending = max_pending  # 0: no bound
        self._pending = 0  # bytes fed since a command last completed (an upper bound)

    def limit(self, max_pending: int) -> None:
        """A new bound for an incomplete command (and each bulk): after AUTH, say."""
        self.max_pending = max_pending
        self._framing.max_bulk = max_pending or MAX_BULK

    def feed(self, data: bytes) -> list[list[bytes]]:
        """Feed received bytes; return the list of commands now complete.

        Raises:
            ProtocolError: the bytes are not RESP (the connection should be closed).
        """
        if self._resp is None and data:
            self._resp = data[:1] == b"*"
        if not self._resp:
            return self._inline_commands(data)
        self._framing.scan(data)
        self._reader.feed(data)
        commands = list(self._drain())
        # what hiredis holds of an incomplete command is at most what came since one completed
        self._pending = len(data) if commands else self._pending + len(data)
        if self.max_pending and self._pending > self.max_pending:
            raise ProtocolError(f"command over {self.max_pending} bytes")
        return commands

    def _inline_commands(self, data: bytes) -> list[list[bytes]]:
        data, self._inline = self._inline + data, b""
        commands: list[list[bytes]] = []
        while data:
            if data[:1] == b"*":  # a client library after a typed command: RESP for good
                self._resp = True
                self._framing.scan(data)
                self._reader.feed(data)
                return commands + list(self._drain())
            line, sep, data = data.partition(b"\n")
            if not sep:
                if len(line) > MAX_INLINE:
                    raise ProtocolError("too big inline request")
                self._inline = line
                break
            if words := split_inline(line):
                commands.append(words)
        return commands

    def _drain(self) -> Iterator[list[bytes]]:
        while True:
            try:
                command = self._reader.gets()
            except hiredis.ProtocolError as exc:
                raise ProtocolError(str(exc)) from None
            except (MemoryError, TypeError, ValueError, OverflowError) as exc:
                # hiredis builds what it reads: a huge array's header (*4294967295) fails to
                # allocate, a RESP3 map with a list for a key cannot become a dict
                raise ProtocolError(f"unreadable command ({type(exc).__name__})") from None
            if command is False:
                return
            if command is None:  # a null array (*-1): Redis ignores it
                continue
            if command.__class__ is not list:
                raise ProtocolError("expected an array of bulk strings")
            for arg in command:
                if arg.__class__ is not bytes:
                    raise ProtocolError("expected an array of bulk strings")
            if command:
                yield command
