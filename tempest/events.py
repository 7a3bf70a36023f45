"""Pub/sub messages of the legacy format, turned into Server-Sent Events and WebSocket text.

A message is a JSON list: ``[data]`` is a ``data:`` event, ``[event, data]`` an event named
``event``, ``["$unsubscribe"]`` ends the stream. A message that is not a JSON list is relayed as
its raw text. Durable channels wrap the message as ``["$durable", stream_id, message]``.
Encoding happens once per message, whatever the number of subscribers.
"""

from __future__ import annotations

import re

import simplejson as json

from tempest.errors import TempestError

END = object()  # the stream ends after this message
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_BAD_FIELD = re.compile(r"[\r\n\x00]")
_STREAM_ID = re.compile(r"^(\d+)-(\d+)\Z")  # \Z: "$" would let "1-1\n" through to the id: line


class Message:
    """One published message, decoded once and shared by every subscriber."""

    __slots__ = ("channel", "id", "event", "data", "end", "_sse", "_text")

    def __init__(self, channel: str, event: str | None, data: str, end: bool = False,
                 stream_id: str | None = None) -> None:
        self.channel = channel
        self.event = event
        self.data = data
        self.end = end
        self.id = stream_id
        self._sse: bytes | None = None
        self._text: str | None = None

    def sse(self, event_id: str | None = None) -> bytes:
        """The SSE frame; ``event_id`` overrides the stream id (several durable channels)."""
        if event_id is None and self._sse is not None:
            return self._sse
        lines = []
        if self.end:
            lines.append("event: end")
        elif self.event is not None:
            lines.append(f"event: {self.event}")
        ident = event_id if event_id is not None else self.id
        if ident is not None:
            lines.append(f"id: {ident}")
        # CR, LF and CRLF all end a line in SSE: each piece of the data goes on a data: line of its own
        pieces = self.data.split("\n") if "\r" not in self.data else _LINE_BREAK.split(self.data)
        lines += [f"data: {line}" for line in pieces]
        # "replace": a lone surrogate ("\ud800" in the published JSON) becomes "?", not an error
        frame = ("\n".join(lines) + "\n\n").encode("utf-8", "replace")
        if event_id is None:
            self._sse = frame
        return frame

    def text(self) -> str:
        """The WebSocket text frame's content: the message as published (JSON list)."""
        if self._text is None:
            text = json.dumps([self.event, self.data] if self.event is not None else [self.data], ensure_ascii=False)
            # a lone surrogate cannot be sent as UTF-8: "?" instead (isascii() costs nothing)
            self._text = text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")
        return self._text


class BadMessage(TempestError, ValueError):
    pass


def decode(channel: str, payload: bytes) -> Message:
    """A published payload (bytes) as a Message.

    Raises:
        BadMessage: an event name or id carries CR or LF (never written to a stream).
    """
    text = payload.decode("utf-8", "replace")
    stream_id = None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return Message(channel, None, text)
    if isinstance(value, list) and len(value) == 3 and value[0] == "$durable":
        _, stream_id, inner = value
        if not isinstance(stream_id, str) or not _STREAM_ID.match(stream_id) or not isinstance(inner, str):
            raise BadMessage(f"malformed durable envelope on {channel!r}")
        message = decode(channel, inner.encode("utf-8"))
        message.id = stream_id
        return message
    if not isinstance(value, list) or not value or len(value) > 2:
        return Message(channel, None, text)
    if value == ["$unsubscribe"]:
        return Message(channel, None, "", end=True)
    if len(value) == 1:
        return Message(channel, None, _as_text(value[0]))
    event, data = value
    if not isinstance(event, str) or _BAD_FIELD.search(event):
        raise BadMessage(f"bad event name {event!r} on {channel!r}")
    return Message(channel, event, _as_text(data))


def _as_text(data: object) -> str:
    if isinstance(data, str):
        return data.replace("\r\n", "\n").replace("\r", "\n")
    return json.dumps(data, ensure_ascii=False)


def parse_stream_id(text: str | None) -> tuple[int, int] | None:
    """'1700000000000-3' as (1700000000000, 3), or None if it is not a stream id."""
    match = _STREAM_ID.match(text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def encode_message(data: object, event: str | None = None) -> str:
    """The legacy message for ``data`` (and an event name): what publishers send."""
    if event is not None and (not isinstance(event, str) or _BAD_FIELD.search(event)):
        raise BadMessage(f"bad event name {event!r}")
    return json.dumps([event, data] if event is not None else [data], ensure_ascii=False)
