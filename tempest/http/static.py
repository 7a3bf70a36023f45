"""Static files under a prefix (``[static:/prefix/] directory = ...``): GET and HEAD only,
never outside the directory, with a content type guessed from the name."""

from __future__ import annotations

import logging
import mimetypes
import os
import urllib.parse
from typing import TYPE_CHECKING

from tempest.http.connection import Connection
from tempest.http.request import Request

if TYPE_CHECKING:
    from tempest.config import Config, Static
    from tempest.stats import Stats

log = logging.getLogger(__name__)

MAX_FILE = 64 << 20  # static files are small pages and scripts, read whole


def resolve(static_dir: Static, path: str) -> str | None:
    """The file for ``path`` under ``static_dir``, or None (missing, outside, too big)."""
    relative = urllib.parse.unquote(path[len(static_dir.prefix):])
    if "\x00" in relative:  # no file has one; the system calls would refuse the name
        return None
    root = os.path.realpath(static_dir.directory)
    target = os.path.realpath(os.path.join(root, relative))
    if target != root and not target.startswith(root + os.sep):
        return None
    if os.path.isdir(target):
        target = os.path.join(target, static_dir.index)
    if not os.path.isfile(target) or os.path.getsize(target) > MAX_FILE:
        return None
    return target


class StaticFiles:
    """The handler of the ``[static:]`` prefixes (the longest prefix wins)."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.statics: list[Static] = []

    route = ("static", "")  # each request's is its prefix's

    def apply(self, config: Config) -> None:
        self.statics = config.statics

    def match(self, path: str) -> Static | None:
        return next((s for s in self.statics if path.startswith(s.prefix)), None)

    def serve(self, conn: Connection, request: Request, path: str) -> bool:
        if request.method not in ("GET", "HEAD"):
            return conn.error(405, request)
        static_dir = self.match(path)
        if static_dir is not None:
            request.route = ("static", static_dir.prefix)
        if static_dir is None and self.match(path + "/") is not None:  # /examples: to /examples/
            query = request.query()
            location = (path + "/" + ("?" + query if query else "")).encode("latin-1")
            return conn.respond(request, 301, [(b"Location", location), (b"Content-Type", b"text/plain; charset=utf-8")],
                                b"301 Moved Permanently\n")
        target = resolve(static_dir, path) if static_dir is not None else None
        if target is None:
            return conn.error(404, request)
        try:
            with open(target, "rb") as handle:
                body = handle.read()
        except OSError as exc:  # unreadable (permissions), or gone since resolve
            log.info("%s: static file %s not served: %s", conn.peer, target, exc.strerror)
            return conn.error(404, request)
        kind = mimetypes.guess_type(target)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind in ("application/javascript", "application/json"):
            kind += "; charset=utf-8"
        self.stats.static_files += 1
        headers = [(b"Content-Type", kind.encode()), (b"Cache-Control", b"no-cache")]
        return conn.respond(request, 200, headers, body)
