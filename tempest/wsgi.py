"""The WSGI gateway: any WSGI application (Flask, Django, Bottle, Pyramid...) as a tempest
worker, so that sequential web code runs behind tempestd's async front unchanged.

A ``url`` job's ``env`` becomes a PEP 3333 environ; the application's status, headers and body
become the answer ``[status, [[name, value], ...], body]``: the body as a string when it is
UTF-8, else as ``{"base64": ...}`` (images, compressed data). Run one with::

    python -m tempest.wsgi myproject.wsgi:application --queue tempest --prefetch 1

A response without Content-Length that is not a list (a generator: Flask's
``stream_with_context``, Django's ``StreamingHttpResponse``) is sent as a streamed answer, each
block as it comes (PEP 3333: a server must not delay a block), as gunicorn does; any other is
sent as one answer.

Or from code::

    from tempest import Worker
    from tempest.wsgi import handler

    worker = Worker("tempest")
    worker.on("url")(handler(app))
    worker.run()

What the environ cannot say: the client's port, and whether a proxy before tempestd took the
client's TLS (``wsgi.url_scheme`` is ``http``, what tempestd serves; the proxy's
``X-Forwarded-Proto`` reaches the application as ``HTTP_X_FORWARDED_PROTO``, for its
trusted-proxy setting: Django's SECURE_PROXY_SSL_HEADER, werkzeug's ProxyFix). Headers whose
name contains ``_`` are left out (as gunicorn does), so that ``X_Forwarded_For`` cannot pose as
``X-Forwarded-For``.
"""

from __future__ import annotations

import argparse
import base64
import importlib
import io
import logging
import os
import sys
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

from tempest import spool

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from wsgiref.types import WSGIApplication, WSGIEnvironment

    from tempest.worker import Context

log = logging.getLogger(__name__)

SPECIAL_HEADERS = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}


def environ(env: Mapping[str, Any], context: Context | None = None) -> WSGIEnvironment:
    """The PEP 3333 environ of a ``url`` job's ``env``.

    Args:
        env: the job's env (method, url, headers, body or body_base64, remote_addr); a body
            that tempestd spooled (body_file, body_key) becomes a ``wsgi.input`` read from
            where it is, never read into memory whole.
        context: the job's ``Context``, put into the environ as ``tempest.context`` (and its
            session as ``tempest.session``).

    Returns:
        The environ: a dict of str.
    """
    url = env.get("url") or "/"
    if not url.startswith("/"):  # absolute form (a proxy request): keep the path
        url = urllib.parse.urlunsplit(("", "") + urllib.parse.urlsplit(url)[2:]) or "/"
    path, _, query = url.partition("?")
    headers = env.get("headers") or {}
    body_input, length = _input(env, context)
    host, port = _server(headers.get("host", ""))
    result: WSGIEnvironment = {
        "REQUEST_METHOD": env.get("method", "GET"),
        "SCRIPT_NAME": "",
        "PATH_INFO": urllib.parse.unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query,
        "SERVER_NAME": host,
        "SERVER_PORT": port,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_LENGTH": str(length) if length else "",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",  # what tempestd serves; a proxy's X-Forwarded-Proto is the app's to trust
        "wsgi.input": body_input,
        "wsgi.input_terminated": True,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if env.get("remote_addr"):
        result["REMOTE_ADDR"] = env["remote_addr"]
    for name, value in headers.items():
        if "_" in name:
            continue
        key = SPECIAL_HEADERS.get(name)
        if key == "CONTENT_LENGTH":
            continue  # the body's real length, set above
        result[key or "HTTP_" + name.upper().replace("-", "_")] = _latin1(value)
    if context is not None:
        result["tempest.context"] = context
        result["tempest.session"] = context.session  # None without [front] session_cookie
    return result


def call(app: WSGIApplication, env: Mapping[str, Any], context: Context | None = None) -> list[object] | None:
    """Run ``app`` on one ``url`` job.

    Args:
        app: the WSGI application.
        env: the job's env.
        context: the job's ``Context``; with one that has a ``respond_to``, a response
            without Content-Length whose body is not a list is streamed through it.

    Returns:
        The answer ``[status, headers, body]``, or None when it was streamed.

    Raises:
        RuntimeError: the application returned without calling ``start_response``.
    """
    response: dict[str, Any] = {}
    parts: list[bytes] = []
    stream: dict[str, Any] = {}  # once streaming: the stream's context manager and writer

    def streams(body: object = None) -> bool:
        """Whether the response goes as a stream: a context that can, no Content-Length, and a
        body that is not a list (or the write() callable)."""
        return (context is not None and bool(context.respond_to) and not isinstance(body, (list, tuple))
                and not any(name.lower() == "content-length" for name, _ in response["headers"]))

    def open_stream() -> Any:
        assert context is not None  # streams() said so
        status, headers = _head(response)
        manager = context.stream(status, headers)
        stream["manager"], stream["out"] = manager, manager.__enter__()
        response["sent"] = True  # the head is out: a late start_response(exc_info) re-raises
        return stream["out"]

    def write(data: bytes) -> None:
        """The legacy write() callable: streamed at once when the response can be (as gunicorn
        sends it), else held and sent with the rest."""
        out = stream.get("out")
        if out is None and streams():
            out = open_stream()
        if out is not None:
            out.write(data)
        else:
            parts.append(data)

    def start_response(status: str, headers: list[tuple[str, str]],
                       exc_info: OptExcInfo | None = None) -> Callable[[bytes], object]:
        if exc_info is not None and "status" in response and (parts or response.get("sent")):
            error = exc_info[1]
            assert error is not None, "exc_info is what sys.exc_info() returns in an except clause"
            raise error.with_traceback(exc_info[2])  # too late to change the status
        response["status"], response["headers"] = status, headers
        return write

    request = environ(env, context)
    body_input = request["wsgi.input"]  # kept: middleware may wrap the environ's (wsgiref's validator does)
    iterable: Any = None
    try:
        iterable = app(request, start_response)
        blocks = iter(iterable)
        first = next(blocks, b"")  # a generator calls start_response when first asked
        status, headers = _head(response)
        out = stream.get("out")
        if out is None and streams(iterable):
            out = open_stream()  # a streaming response (a generator without Content-Length): each block as it comes
        if out is not None:
            for block in (*parts, first):
                out.write(block)
            for block in blocks:
                out.write(block)
            stream.pop("manager").__exit__(None, None, None)
            return None
        parts.append(first)
        parts.extend(blocks)
    except BaseException:
        manager = stream.pop("manager", None)
        if manager is None or not manager.__exit__(*sys.exc_info()):
            raise
        return None
    finally:
        close = getattr(iterable, "close", None)
        if close is not None:
            close()
        body_input.close()  # a spooled body's file or Redis reader
    return [status, headers, _answer_body(b"".join(parts))]


def _head(response: Mapping[str, Any]) -> tuple[int, list[list[str]]]:
    if "status" not in response:
        raise RuntimeError("the WSGI application returned without calling start_response")
    status = int(str(response["status"]).split(None, 1)[0])
    return status, [[name, value] for name, value in response["headers"]]


def handler(app: WSGIApplication) -> Callable[[Context, dict[str, Any]], list[object] | None]:
    """A ``url`` handler (for ``Worker.on("url")``) that runs the WSGI application ``app``."""

    def run(context: Context, env: dict[str, Any]) -> list[object] | None:
        return call(app, env, context)

    run.__name__ = getattr(app, "__name__", "wsgi_app")
    return run


def load(spec: str) -> WSGIApplication:
    """The application named by ``module:attribute`` (attribute ``application`` if omitted).

    Raises:
        ImportError: no such module.
        ValueError: no module name.
        AttributeError: no such attribute.
        TypeError: the attribute is not callable.
    """
    module_name, _, attribute = spec.partition(":")
    module = importlib.import_module(module_name)
    target = module
    for part in (attribute or "application").split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{spec} is not callable")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tempest.wsgi``: serve an application; returns the exit status."""
    from tempest.worker import Worker

    parser = argparse.ArgumentParser(prog="python -m tempest.wsgi",
                                     description="Serve a WSGI application as a tempest worker.")
    parser.add_argument("app", help="module:attribute of the WSGI application (attribute: application)")
    parser.add_argument("--queue", "-q", action="append", help="queue to take jobs from (repeatable; default: tempest)")
    parser.add_argument("--prefetch", type=int, default=1, help="jobs taken per round trip (default: 1)")
    parser.add_argument("--redis-url", help="default: TEMPEST_REDIS_URL, else redis://127.0.0.1:6379/0")
    parser.add_argument("--chdir", help="change to this directory (and import from it) first")
    parser.add_argument("--plain", action="store_true",
                        help="plain BLPOP instead of reliable delivery (the default, unless TEMPEST_RELIABLE=0): "
                             "a job is lost if its worker dies")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.chdir:
        os.chdir(args.chdir)
    sys.path.insert(0, os.getcwd())  # as gunicorn does: the application's package is found from here
    try:
        app = load(args.app)
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        print(f"tempest.wsgi: cannot load {args.app}: {exc}", file=sys.stderr)
        return 2
    try:
        worker = Worker(args.queue or "tempest", redis_url=args.redis_url, prefetch=args.prefetch,
                        reliable=False if args.plain else None)
    except ValueError as exc:  # a bad TEMPEST_* setting
        print(f"tempest.wsgi: {exc}", file=sys.stderr)
        return 2
    worker.on("url")(handler(app))
    worker.run()
    return 0


def _input(env: Mapping[str, Any], context: Context | None) -> tuple[BinaryIO, int]:
    """(wsgi.input, CONTENT_LENGTH): the inline body in memory, or a spooled one (env
    body_file or body_key) opened where it is."""
    token = spool.stored(env)
    if token is None:
        body = _request_body(env)
        return io.BytesIO(body), len(body)
    if context is not None:
        return context.body_file(), int(token["size"])
    return spool.open_body(env), int(token["size"])  # a file: a body in Redis needs the context's client


def _request_body(env: Mapping[str, Any]) -> bytes:
    if "body_base64" in env:
        return base64.b64decode(env["body_base64"])
    body = env.get("body")
    return body.encode("utf-8") if body else b""


def _answer_body(data: bytes) -> str | dict[str, str]:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def _server(host: str) -> tuple[str, str]:
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit() and not name.endswith(":"):  # not an IPv6 address without a port
        return name.strip("[]") or "localhost", port
    return host.strip("[]") or "localhost", "80"


def _latin1(value: str) -> str:
    """A header value as PEP 3333 wants it: a str whose code points are the bytes."""
    try:
        value.encode("latin-1")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8").decode("latin-1")


if __name__ == "__main__":
    sys.exit(main())
