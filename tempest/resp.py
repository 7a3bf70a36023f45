"""RESP: encoding replies (RESP2 and RESP3) and parsing commands with hiredis.

Parsing is hiredis' ``Reader``; this module only adds what a server needs on top of it: the
inline command form (``PING\\r\\n`` typed into telnet or nc, which real Redis accepts) and a
check that every command is a flat list of bulk strings.
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

    def feed(self, data):
        """Feed received bytes; return the list of commands now complete.

        Raises:
            ProtocolError: the bytes are not RESP (the connection should be closed).
        """
        commands = []
        if self._inline:
            data, self._inline = self._inline + data, b""
        while data:
            if self._reader.has_data() or data[:1] == b"*":
                self._reader.feed(data)
                data = b""
                commands.extend(self._drain())
            else:
                line, sep, rest = data.partition(b"\n")
                if not sep:
                    if len(data) > MAX_INLINE:
                        raise ProtocolError("too big inline request")
                    self._inline = data
                    break
                words = line.split()
                if words:
                    commands.append(words)
                data = rest
        return commands

    def _drain(self):
        while True:
            try:
                command = self._reader.gets()
            except hiredis.ProtocolError as exc:
                raise ProtocolError(str(exc)) from None
            if command is False:
                return
            if not isinstance(command, list) or not all(isinstance(a, bytes) for a in command):
                raise ProtocolError("expected an array of bulk strings")
            if command:
                yield command
