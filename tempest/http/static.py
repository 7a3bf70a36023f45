"""Static files under a prefix (``[static:/prefix/] directory = ...``): GET and HEAD only,
never outside the directory, with a content type guessed from the name."""

import logging
import mimetypes
import os
import urllib.parse

log = logging.getLogger(__name__)

MAX_FILE = 64 << 20  # static files are small pages and scripts, read whole


def resolve(static_dir, path):
    """The file for ``path`` under ``static_dir``, or None (missing, outside, too big)."""
    relative = urllib.parse.unquote(path[len(static_dir.prefix):])
    root = os.path.realpath(static_dir.directory)
    target = os.path.realpath(os.path.join(root, relative))
    if target != root and not target.startswith(root + os.sep):
        return None
    if os.path.isdir(target):
        target = os.path.join(target, static_dir.index)
    if not os.path.isfile(target) or os.path.getsize(target) > MAX_FILE:
        return None
    return target


def serve(conn, request, path):
    if request.method not in ("GET", "HEAD"):
        return conn.error(405, request)
    static_dir = next(s for s in conn.front.config.statics if path.startswith(s.prefix))
    target = resolve(static_dir, path)
    if target is None:
        return conn.error(404, request)
    with open(target, "rb") as handle:
        body = handle.read()
    kind = mimetypes.guess_type(target)[0] or "application/octet-stream"
    if kind.startswith("text/") or kind in ("application/javascript", "application/json"):
        kind += "; charset=utf-8"
    conn.front.stats.static_files += 1
    headers = [(b"Content-Type", kind.encode()), (b"Cache-Control", b"no-cache")]
    return conn.respond(request, 200, "OK", headers, body)
