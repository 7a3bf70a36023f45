"""The admin listener (``[admin] listen``): ``/metrics`` for Prometheus, ``/healthz`` and
``/readyz`` for load balancers and Kubernetes.

It is a ``Listener`` like the front, with the front's read deadlines and head limit, no
request body, and its own ``max_connections``; its requests are neither measured nor logged
(a scrape every 15 s would fill the access log). Scrapes and readiness checks go through one
lock: they share a connection to Redis, and a flood of scrapes costs Redis one query at a time.

- ``/healthz``: 200 while tempestd's event loop answers (liveness: restart it otherwise).
- ``/readyz``: 200 when Redis answers a PING within a second, the front accepts, and no
  routed queue is known to have no worker (``tempest.serving``); else 503. The body lists
  each check, ``ok`` or ``fail`` and why.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import gevent.lock
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4  # what every Prometheus reads

from tempest.http.connection import Connection
from tempest.http.request import Request
from tempest.http.server import Handler, Listener
from tempest.metrics import Metrics
from tempest.redisconn import ConnectionFailed
from tempest.stats import Stats

if TYPE_CHECKING:
    from tempest.config import Config
    from tempest.daemon import Daemon

TEXT = (b"Content-Type", b"text/plain; charset=utf-8")
MAX_HEAD = 8192  # bytes of request head: a probe's or a scraper's is a few hundred
PATHS = b"/metrics /healthz /readyz\n"


class Admin:
    route = ("admin", "")

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.metrics = Metrics(daemon)
        self._lock = gevent.lock.Semaphore()

    def apply(self, config: Config) -> None:
        pass

    def serve(self, conn: Connection, request: Request, path: str) -> bool:
        if request.method not in ("GET", "HEAD"):
            return conn.respond(request, 405, [TEXT, (b"Allow", b"GET, HEAD")], b"405 Method Not Allowed\n")
        if path == "/metrics":
            with self._lock:
                body = self.metrics.render()
            return conn.respond(request, 200, [(b"Content-Type", CONTENT_TYPE_PLAIN_0_0_4.encode())], body)
        if path == "/healthz":
            return conn.respond(request, 200, [TEXT], b"ok\n")
        if path == "/readyz":
            with self._lock:
                ready, lines = self.readiness()
            return conn.respond(request, 200 if ready else 503, [TEXT], "".join(lines).encode())
        return conn.respond(request, 404, [TEXT], b"404 Not Found: the admin listener serves " + PATHS)

    def readiness(self) -> tuple[bool, list[str]]:
        """(ready, one line per check)."""
        daemon, lines, ready = self.daemon, [], True
        try:
            [reply] = self.metrics.collector.connection.execute([["PING"]])
            redis_ok, why = reply == b"PONG", f"replied {reply!r}"
        except ConnectionFailed as exc:
            redis_ok, why = False, str(exc)
        lines.append("ok redis\n" if redis_ok else f"fail redis: {why}\n")
        accepting = daemon.accepting()
        lines.append("ok front\n" if accepting else "fail front: not accepting\n")
        ready = redis_ok and accepting
        for queue in daemon.routed_queues():
            if daemon.serving.unserved(queue):
                ready = False
                lines.append(f"fail queue {queue}: no worker serves it\n")
            else:
                lines.append(f"ok queue {queue}\n")
        return ready, lines


class AdminServer(Listener):
    def __init__(self, config: Config, handler: Admin) -> None:
        super().__init__(config.admin.listen, 128, Stats())
        self.handler: Handler = handler
        self.apply(config)

    def apply(self, config: Config) -> None:
        limits = dataclasses.replace(config.front, max_body=0, max_header_size=MAX_HEAD)
        self.set_limits(limits, config.admin.max_connections)

    def handler_for(self, request: Request, path: str) -> Handler:
        return self.handler
