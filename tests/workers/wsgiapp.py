"""A WSGI application for the gateway's tests, wrapped in wsgiref's PEP 3333 validator.

For the gunicorn worker's tests: /pid answers the process ids (and the one that imported this
module: the arbiter's with --preload); /sleep/<seconds> sleeps first; /stick/<name> sticks (60 s)
the first time <name> is asked and answers the later times, each run recorded as a line of
$WSGIAPP_MARKERS/<name> (the pid that ran it)."""

import hashlib
import json
import os
import sys
import time
from wsgiref.validate import validator

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
closed = []  # paths whose response iterable was closed
IMPORTED_BY = os.getpid()


def pids(**more):
    return [json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "imported_by": IMPORTED_BY, **more}).encode()]


def stick(name):
    """Record this run; stick if it is the first run of ``name``."""
    path = os.path.join(os.environ["WSGIAPP_MARKERS"], os.path.basename(name))
    with open(path, "a") as runs:
        first = runs.tell() == 0
        runs.write(f"{os.getpid()}\n")
    if first:
        time.sleep(60)
    with open(path) as runs:
        return len(runs.read().split())


class Stream:
    def __init__(self, path, chunks):
        self.path, self.chunks = path, chunks

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        closed.append(self.path)


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/boom":
        raise RuntimeError("the application failed")
    if path == "/pid":
        start_response("200 OK", [("Content-Type", "application/json")])
        return pids()
    if path.startswith("/sleep/"):
        time.sleep(float(path.rsplit("/", 1)[1]))
        start_response("200 OK", [("Content-Type", "application/json")])
        return pids()
    if path.startswith("/stick/"):
        runs = stick(path.rsplit("/", 1)[1])
        start_response("200 OK", [("Content-Type", "application/json")])
        return pids(runs=runs)
    if path == "/binary":
        start_response("200 OK", [("Content-Type", "image/png")])
        return [PNG]
    if path == "/cookies":
        start_response("201 Created", [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("Content-Type", "text/plain")])
        return [b"two cookies"]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
        return Stream(path, [b"one ", "tw\u00f6 ".encode(), b"", b"three"])
    if path == "/late-error":  # an error middleware's pattern: a late start_response(exc_info)
        def late():
            yield b"begun "
            try:
                raise RuntimeError("failed in the middle of the stream")
            except RuntimeError:
                start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
                yield b"an error page that must never be appended to the 200"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return late()
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written, ")
        return [b"then returned"]
    if path == "/sized":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return Stream(path, [b"si", b"zed"])
    if path == "/missing":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"no such page"]
    if path.endswith("/digest"):  # a large body, read in blocks (a spooled one: from where it is)
        digest, size, stream = hashlib.sha256(), 0, environ["wsgi.input"]
        while size < int(environ.get("CONTENT_LENGTH") or 0) and (block := stream.read(1 << 20)):
            digest.update(block)
            size += len(block)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"sha256": digest.hexdigest(), "size": size,
                            "CONTENT_LENGTH": environ.get("CONTENT_LENGTH")}).encode()]
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    seen = {key: value for key, value in environ.items() if isinstance(value, str)}
    seen["body"] = body.decode("latin-1")
    seen["closed"] = list(closed)
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(seen).encode()]


application = validator(app)

