"""Helpers of the operator's tests (metrics, health, access log, unserved queues)."""

import os
import sys

from support import REPO, http

PY = sys.executable
ECHO = f"{PY} {os.path.join(REPO, 'tests', 'workers', 'echo.py')}"
STREAMER = f"{PY} {os.path.join(REPO, 'tests', 'workers', 'streamer.py')}"


def admin_port(daemon):
    """The admin listener's port, from the ready line."""
    for line in daemon.log().splitlines():
        if "tempestd ready:" in line and "admin on http://127.0.0.1:" in line:
            return int(line.split("admin on http://127.0.0.1:")[1].split("/")[0])
    raise AssertionError("no admin listener in the ready line:\n" + daemon.log()[-2000:])


def admin(daemon, path, method="GET"):
    return http(method, f"http://127.0.0.1:{admin_port(daemon)}{path}")


def worker(command, queue, numprocs=1):
    return {"command": f"{command} {queue}", "numprocs": str(numprocs), "startsecs": "0.3"}


def samples(text):
    """{(name, frozenset of label pairs): value} of a Prometheus text page."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, value = line.rsplit(" ", 1)
        name, _, labels = head.partition("{")
        pairs = frozenset(tuple(p.split("=", 1)) for p in labels.rstrip("}").split(",") if p) if labels else frozenset()
        out[name, frozenset((k, v.strip('"')) for k, v in pairs)] = float(value)
    return out


def sample(page, name, **labels):
    return page.get((name, frozenset(labels.items())))
