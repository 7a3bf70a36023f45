"""RESP: encoding replies (RESP2 and RESP3) and parsing commands with hiredis.

Parsing is hiredis' ``Reader``; this module only adds what a server needs on top of it: the
inline command form (``PING\\r\\n`` typed into telnet or nc, which real Redis accepts) and a
check that every command is a flat list of bulk strings. Inline commands are read until the
first ``*`` that starts a command; from then on the connection is RESP for good, since hiredis
cannot tell whether it sits between two commands or inside one.
"""

import hiredis

from tempest.errors import ProtocolError

OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
NULL2 = b"$-1\r\n"
NULL3 = b"_\r\n"
MAX_INLINE = 64 * 1024  # an inline command longer than this is refused, as Redis does


def simple(text):
    return b"+" + text.encode() + b"\r\n"


def error(text):
    """An error reply; ``text`` starts with its code (ERR, NOAUTH, WRONGPASS...)."""
    return b"-" + text.replace("\r", " ").replace("\n", " ").encode() + b"\r\n"


def integer(value):
    return b":%d\r\n" % value


def bulk(value):
    if value is None:
        return NULL2
    if isinstance(value, str):
        value = value.encode()
    return b"$%d\r\n%s\r\n" % (len(value), value)


def encode(value, protocol=2):
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


class CommandReader:
    """Turns bytes received by a server into commands (lists of bytes)."""

    def __init__(self):
        self._reader = hiredis.Reader()
        self._inline = b""
        self._resp = None  # decided by the first byte received

    def feed(self, data):
        """Feed received bytes; return the list of commands now complete.

        Raises:
            ProtocolError: the bytes are not RESP (the connection should be closed).
        """
        if self._resp is None and data:
            self._resp = data[:1] == b"*"
        if self._resp:
            self._reader.feed(data)
            return list(self._drain())
        return self._inline_commands(data)

    def _inline_commands(self, data):
        data, self._inline = self._inline + data, b""
        commands = []
        while data:
            if data[:1] == b"*":  # a client library after a typed command: RESP for good
                self._resp = True
                self._reader.feed(data)
                return commands + list(self._drain())
            line, sep, data = data.partition(b"\n")
            if not sep:
                if len(line) > MAX_INLINE:
                    raise ProtocolError("too big inline request")
                self._inline = line
                break
            if words := line.split():
                commands.append(words)
        return commands

    def _drain(self):
        while True:
            try:
                command = self._reader.gets()
            except hiredis.ProtocolError as exc:
                raise ProtocolError(str(exc)) from None
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
