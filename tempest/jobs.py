"""The job envelope and the HTTP answer, encoded and decoded (the wire protocol's data).

A job is the JSON list ``[action, args, respond_to, job_id]`` (exactly four elements: the 2012
Python workers unpack four). An HTTP answer is the JSON list ``[status, headers, body]``.
Both sides of the protocol use these functions; they import neither gevent nor redis.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

import simplejson as json
from simplejson.encoder import encode_basestring as _quote  # simplejson's C string escaper

from tempest.errors import TempestError

HTTP_ACTION = "url"
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_VALUE = re.compile(rb"[\r\n\x00]")
# the front frames every response itself; a worker's framing headers are dropped
# (and X-Tempest-* headers, reserved for tempest, are dropped from answers and requests)
HOP_BY_HOP = frozenset(
    (b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"upgrade")
)


_IDS_PER_DRAW = 256
_ids: list[str] = []  # ready job ids, drawn together: one getrandom call per _IDS_PER_DRAW ids
os.register_at_fork(after_in_child=_ids.clear)  # a forked child must not reuse its parent's


def new_job_id() -> str:
    """An unguessable job id (96 random bits, URL-safe base64: 16 characters), a string as the
    Node workers need."""
    if not _ids:
        # 12 bytes are exactly 16 base64 characters without padding, so the encoding of
        # 256 × 12 random bytes cuts into 256 ids
        drawn = base64.urlsafe_b64encode(os.urandom(12 * _IDS_PER_DRAW)).decode("ascii")
        _ids.extend(drawn[i:i + 16] for i in range(0, len(drawn), 16))
    return _ids.pop()


# one encoder, built once: simplejson.dumps with options builds a new one per call (+30%)
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(value: object) -> bytes:
    """JSON as compact UTF-8 bytes: the one codec of the protocol."""
    return _ENCODER.encode(value).encode("utf-8")


_DECODER = json.JSONDecoder()
_scan = _DECODER.scan_once  # simplejson's C scanner, which json.loads reaches through two Python calls


def loads(data: bytes | str) -> Any:
    """Decode JSON (bytes or str). A list or object with nothing around it (every answer a
    worker library sends) goes straight to the C scanner; the rest, errors included, through
    ``simplejson.loads``, whose result and errors are the same."""
    if not isinstance(data, str) and data[:1] in (b"[", b"{") and data[-1:] in (b"]", b"}"):
        text = data.decode("utf-8")
        value, end = _scan(text, 0)
        if end == len(text):
            return value
    return json.loads(data)


def encode_job(action: str, args: list[Any], respond_to: str | None, job_id: str) -> bytes:
    return dumps([action, args, respond_to, job_id])


def encode_http_job(env: dict[str, Any], respond_to: str | None, job_id: str) -> bytes:
    """A ``url`` job written straight from its strings: the hot path. The same JSON as
    ``encode_job(HTTP_ACTION, [env], respond_to, job_id)`` (env's values are all strings) at
    a fraction of the cost: the generic encoder sets itself up again for every call."""
    parts = ['["url",[{"method":', _quote(env["method"]), ',"url":', _quote(env["url"]), ',"headers":{',
             ",".join(_quote(k) + ":" + _quote(v) for k, v in env["headers"].items()), "}"]
    for key in ("remote_addr", "body", "body_base64"):
        if key in env:
            parts += [',"', key, '":', _quote(env[key])]
    for key in ("queued", "deadline"):  # Unix times, added by the front after http_env
        if key in env:
            parts += [',"', key, '":', repr(float(env[key]))]
    if env.get("redeliver") is False:
        parts.append(',"redeliver":false')
    for key in ("body_file", "body_key"):  # a spooled body's token, added by the front after http_env
        if key in env:
            parts += [',"', key, '":', _ENCODER.encode(env[key])]
    if "session" in env:  # {"id", "ttl"}, added by the front after http_env
        session = env["session"]
        if session.keys() == {"id", "ttl"} and type(session["ttl"]) is int:  # written by hand, as the rest
            parts += [',"session":{"id":', _quote(session["id"]), ',"ttl":', str(session["ttl"]), "}"]
        else:
            parts += [',"session":', _ENCODER.encode(session)]
    parts += ["}],", _quote(respond_to) if respond_to else "null", ",", _quote(job_id), "]"]
    return "".join(parts).encode("utf-8")


def decode_job(data: bytes | str) -> tuple[str, list[Any], str | None, Any]:
    """Decode a job envelope.

    Returns:
        (action, args, respond_to, job_id): job_id as the job carries it (a string from
        tempestd, any JSON value in a job pushed by hand)

    Raises:
        ValueError: not a four-element JSON list with a string action and a list of args.
    """
    try:
        job = loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if not isinstance(job, list) or len(job) != 4:
        raise ValueError("a job is a JSON list of four elements")
    action, args, respond_to, job_id = job
    if not isinstance(action, str) or not isinstance(args, list):
        raise ValueError("a job's action is a string and its args a list")
    if respond_to is not None and not isinstance(respond_to, str):
        raise ValueError("a job's respond_to is 'host:port' or null")
    return action, args, respond_to, job_id


def http_env(method: str, url: str, headers: dict[str, str], body: bytes,
             remote_addr: str | None = None) -> dict[str, Any]:
    """The ``env`` of a ``url`` job: method, url, lower-case headers, the client's address if
    known and the body if any.

    A body that is not UTF-8 travels base64-encoded in ``body_base64`` instead of ``body``.
    """
    env: dict[str, Any] = {"method": method, "url": url, "headers": headers}
    if remote_addr:
        env["remote_addr"] = remote_addr
    if body:
        try:
            env["body"] = body.decode("utf-8")
        except UnicodeDecodeError:
            env["body_base64"] = base64.b64encode(body).decode("ascii")
    return env


class BadAnswer(TempestError, ValueError):
    """A worker's answer cannot become an HTTP response; the message says why."""


def decode_http_answer(data: bytes | str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Decode and check ``[status, headers, body]``.

    Returns:
        (status, headers, body): headers a list of (name, value) bytes pairs without
        framing headers, body bytes.

    Raises:
        BadAnswer: the answer is not valid JSON or cannot be sent safely.
    """
    answer = _json(data)
    if not isinstance(answer, list) or len(answer) < 1:
        raise BadAnswer("not a JSON list [status, headers, body]")
    status = _status(answer[0])
    headers = _headers(answer[1] if len(answer) > 1 else None)
    body = _body(answer[2] if len(answer) > 2 else None)
    return status, headers, body


def declared_length(data: bytes | str) -> int | None:
    """The Content-Length a worker's answer declares (its framing headers are dropped
    otherwise), or None: what a HEAD's answer without a body says of the GET's length."""
    try:
        answer = _json(data)
    except BadAnswer:
        return None
    headers = answer[1] if isinstance(answer, list) and len(answer) > 1 else None
    pairs = headers.items() if isinstance(headers, dict) else headers if isinstance(headers, list) else ()
    for pair in pairs:
        if isinstance(pair, (list, tuple)) and len(pair) == 2 and str(pair[0]).lower() == "content-length":
            value = str(pair[1]).strip()
            return int(value) if value.isdigit() and len(value) < 19 else None
    return None


def decode_stream_head(data: bytes | str) -> tuple[int, list[tuple[bytes, bytes]], bool]:
    """Decode and check a streamed answer's head, ``[status, headers]`` or
    ``[status, headers, {"chunks": "json"}]``.

    Returns:
        (status, headers, json_chunks): json_chunks True when each chunk is JSON (see
        ``decode_chunk``), False when chunks are raw bytes.

    Raises:
        BadAnswer: the head is not valid JSON or cannot be sent safely.
    """
    head = _json(data)
    if not isinstance(head, list) or not 1 <= len(head) <= 3:
        raise BadAnswer("not a JSON list [status, headers] or [status, headers, options]")
    options = head[2] if len(head) > 2 else None
    if isinstance(options, str):  # a body, as in an answer: streams have none, it is ignored
        options = None
    if options not in (None, {}, {"chunks": "json"}, {"chunks": "raw"}):
        raise BadAnswer(f'stream options are not {{"chunks": "json"}} or {{"chunks": "raw"}}: {options!r:.80}')
    return _status(head[0]), _headers(head[1] if len(head) > 1 else None), options == {"chunks": "json"}


def decode_chunk(data: bytes) -> bytes:
    """A JSON chunk's bytes: a JSON string (its text as UTF-8) or ``{"base64": ...}``.

    Raises:
        BadAnswer: the chunk is neither.
    """
    return _body(_json(data))


def _json(data: bytes | str) -> Any:
    if isinstance(data, str) and not data.isascii():
        try:  # the text as the bytes form would be: a raw lone surrogate is not UTF-8, not JSON
            data.encode("utf-8")
        except UnicodeEncodeError:
            raise BadAnswer("not JSON: not UTF-8 text (a lone surrogate)") from None
    try:
        return loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadAnswer(f"not JSON: {exc}") from None
    except RecursionError:
        raise BadAnswer("JSON nested too deeply") from None


def _status(value: object) -> int:
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 200 <= value <= 599:
        raise BadAnswer(f"bad status {value!r}")
    return value


def _headers(value: object) -> list[tuple[bytes, bytes]]:
    if value is None:
        return []
    pairs: Iterable[Sequence[Any]]
    if isinstance(value, dict):
        pairs = value.items()
    elif isinstance(value, list) and all(isinstance(p, list) and len(p) == 2 for p in value):
        pairs = value
    else:
        raise BadAnswer("headers are not an object or a list of [name, value] pairs")
    out = []
    for name, values in pairs:
        for item in values if isinstance(values, list) else [values]:
            out.append(_header(name, item))
    return [(n, v) for n, v in out if n.lower() not in HOP_BY_HOP and not _reserved(n)]


def _reserved(name: bytes) -> bool:
    """An X-Tempest-* header other than X-Tempest-Session (which the front takes and drops):
    reserved for tempest, never passed on."""
    lowered = name.lower()
    return lowered.startswith(b"x-tempest-") and lowered != b"x-tempest-session"


def _header(name: object, value: object) -> tuple[bytes, bytes]:
    if not isinstance(name, str) or not _TOKEN.match(name.encode("utf-8", "replace")):
        raise BadAnswer(f"bad header name {name!r}")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BadAnswer(f"bad value for header {name!r}: {value!r}")
    try:
        encoded = str(value).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in the JSON): not text
        raise BadAnswer(f"bad value for header {name!r}: not Unicode text") from None
    if _BAD_VALUE.search(encoded):
        raise BadAnswer(f"CR, LF or NUL in header {name!r}")
    return name.encode("ascii"), encoded


def _body(value: object) -> bytes:
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode("utf-8", "replace")  # a lone surrogate becomes "?"
    if isinstance(value, dict) and list(value) == ["base64"] and isinstance(value["base64"], str):
        try:  # extension: a binary body
            return base64.b64decode(value["base64"], validate=True)
        except ValueError:
            raise BadAnswer("body's base64 is not valid base64") from None
    raise BadAnswer(f"body is not a string (nor {{\"base64\": ...}}) but {type(value).__name__}")
