"""Forwarding a request to the workers: the job pushed, the answer awaited and relayed.

The job is pushed by the shared ``Pusher`` (one RPUSH per queue per turn of the event loop)
and the answer arrives through the ``Registry`` of waiting requests, whose single sweeper
times it out. An answer is relayed once, a streamed answer piece by piece as it comes
(chunked, or until the connection closes for HTTP/1.0). With ``[front] session_cookie``,
each request carries its session id to the worker and a new or regenerated id back to the
client as the signed cookie; each answer refreshes the session's TTL (an EXPIRE that goes out
with the pusher's next write, its reply ignored).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from tempest import jobs, keys, sessions
from tempest.http.connection import Connection
from tempest.http.request import Request
from tempest.http.response import Framing
from tempest.serving import PUSH, REFUSE, Serving
from tempest.waiting import Outcome, Pending, Registry, StreamEnd

if TYPE_CHECKING:
    from tempest.config import Config, Route
    from tempest.pusher import Pusher
    from tempest.stats import Stats

log = logging.getLogger(__name__)

DEFAULT_CONTENT_TYPE = (b"Content-Type", b"text/html; charset=utf-8")
UNSERVED_HEADERS = [(b"Content-Type", b"text/plain; charset=utf-8"), (b"Retry-After", b"5")]
UNSERVED_BODY = b"503 Service Unavailable: no worker is serving this path now; try again later\n"
NOT_TAKEN_BODY = b"503 Service Unavailable: no worker took the request in time; it was not started\n"
REGENERATED = sessions.REGENERATED_HEADER.lower().encode()
NOT_IDEMPOTENT = frozenset(("POST", "PATCH"))  # methods whose jobs a dead worker's death does not rerun
Headers = list[tuple[bytes, bytes]]


class Forwarder:
    def __init__(self, registry: Registry, pusher: Pusher, stats: Stats, respond_to: str,
                 serving: Serving | None = None) -> None:
        self.registry = registry
        self.pusher = pusher
        self.stats = stats
        self.respond_to = respond_to
        self.serving = serving or Serving(stats)

    route = ("forward", "/")  # each request's is its route's

    def apply(self, config: Config) -> None:
        self.config = config
        self._labels = {r.prefix: ("forward", r.prefix) for r in [*config.routes, config.default_route]}
        self.cookie = config.front.session_cookie
        self.session_ttl = config.front.session_ttl
        self.session_secure = config.front.session_secure
        self.signer = sessions.Signer(config.session_secrets) if self.cookie else None
        self._ttl_arg = b"%d" % self.session_ttl  # EXPIRE's argument, made once
        self._grants = bool(config.pubsub.private)  # the grants' set lives as long as its session

    def serve(self, conn: Connection, request: Request, path: str) -> bool:
        route = self.config.route_for(path)
        request.route = self._labels[route.prefix]
        admitted = self.serving.admit(route.queue)
        if admitted == PUSH:
            return self._forward(conn, request, route)
        if admitted == REFUSE:
            return conn.respond(request, 503, UNSERVED_HEADERS, UNSERVED_BODY)
        try:
            return self._forward(conn, request, route)
        finally:
            self.serving.probed(route.queue)

    def _forward(self, conn: Connection, request: Request, route: Route) -> bool:
        url = request.target
        env = jobs.http_env(request.method, url, request.headers, b"".join(request.body), conn.remote_addr)
        if request.stored is not None:  # spooled: a token instead of the body (removed by the connection)
            env.update(request.stored.token())
        now = round(time.time(), 3)
        env["queued"], env["deadline"] = now, round(now + route.timeout, 3)  # workers drop jobs past it
        if route.redeliver == "never" or (route.redeliver == "idempotent" and request.method in NOT_IDEMPOTENT):
            env["redeliver"] = False  # its worker's death answers it 502, no second run
        session_id = new_session = None
        if self.cookie:
            session_id, new_session = self._session_id(conn, request)
            env["session"] = {"id": session_id, "ttl": int(self.session_ttl)}
        job_id = jobs.new_job_id()
        pending = self.registry.add(job_id, jobs.HTTP_ACTION, route.timeout, conn.notify)
        self.stats.requests += 1
        job = jobs.encode_http_job(env, self.respond_to, job_id)
        self.pusher.submit(route.queue, job, pending, route.priority)
        outcome = self._wait(conn, pending)
        if outcome is None:
            self.registry.abandon(pending)
            log.info("%s: client left while job %s on queue %s was pending", conn.peer, job_id, route.queue)
            if self._take_back(route, job, recent=True):  # no worker had it yet: none will run it for nobody
                self.stats.jobs_withdrawn += 1
            return False
        if outcome is not Outcome.ANSWER and outcome is not Outcome.STREAM:
            return self._failed(conn, outcome, request, route, job_id, job)
        self.serving.served(route.queue)
        json_chunks, body = False, b""
        try:
            if outcome is Outcome.STREAM:
                status, headers, json_chunks = jobs.decode_stream_head(pending.payload)
            else:
                status, headers, body = jobs.decode_http_answer(pending.payload)
        except jobs.BadAnswer as exc:
            self.stats.bad_answers += 1
            log.warning("bad answer to url job %s (queue %s, %s %s): %s",
                        job_id, route.queue, request.method, url[:200], exc)
            if outcome is Outcome.STREAM:
                self.registry.forget(pending)
            return conn.error(502, request)
        if status not in (204, 304) and not any(name.lower() == b"content-type" for name, _ in headers):
            headers.append(DEFAULT_CONTENT_TYPE)  # not to a 204 or 304, which have no body to type
        if session_id is not None:
            headers, session_id = self._session_cookie(headers, session_id, new_session)
            self.pusher.send_later([b"EXPIRE", keys.session(session_id).encode(), self._ttl_arg])
            if self._grants:
                self.pusher.send_later([b"EXPIRE", keys.grants(session_id).encode(), self._ttl_arg])
        elif any(n.lower() == REGENERATED for n, _ in headers):  # meant for the front alone
            headers = [(n, v) for n, v in headers if n.lower() != REGENERATED]
        if outcome is Outcome.STREAM:
            return self._stream(conn, request, pending, status, headers, json_chunks)
        if request.method == "HEAD" and not body:  # the Content-Length of the GET, as the worker says it
            return conn.respond(request, status, headers, body, jobs.declared_length(pending.payload))
        return conn.respond(request, status, headers, body)

    def _wait(self, conn: Connection, pending: Pending) -> Outcome | None:
        """Wait for ``pending``'s outcome while watching the socket; None if the client left."""
        while pending.outcome is None:
            if not conn.wait() and pending.outcome is None:
                return None
        return pending.outcome

    def _stream(self, conn: Connection, request: Request, pending: Pending, status: int, headers: Headers,
                json_chunks: bool) -> bool:
        """Send a streamed answer's head, then its chunks as they come (each decoded first
        when the head said its chunks are JSON)."""
        chunked = request.version != "1.0"
        keep_alive = conn.respond_head(request, status, headers, Framing.CHUNKED if chunked else Framing.UNTIL_CLOSE)
        if request.method == "HEAD" or status in (204, 304):
            self.registry.forget(pending)  # no body may follow: the chunks are dropped
            return keep_alive
        while True:
            item = pending.take()
            if item is None:
                if not conn.wait():
                    self.registry.abandon(pending)
                    log.info("%s: client left during the stream of job %s", conn.peer, pending.job_id)
                    return False
            elif not isinstance(item, StreamEnd):
                if json_chunks and (item := self._decoded(pending, item)) is None:
                    return False  # the body is cut: the client must see it incomplete
                if item:
                    conn.send(b"%x\r\n%s\r\n" % (len(item), item) if chunked else item)
            elif item is StreamEnd.END:
                if chunked:
                    conn.send(b"0\r\n\r\n")
                return keep_alive
            else:  # TIMEOUT, OVERFLOW or ABORTED: the body cannot be completed, the client must see it cut
                if item is StreamEnd.TIMEOUT:
                    log.warning("stream of job %s: no chunk within %ss: connection closed",
                                pending.job_id, pending.timeout)
                return False

    def _decoded(self, pending: Pending, chunk: bytes) -> bytes | None:
        """A JSON chunk's bytes, or None (logged, counted, the stream forgotten) if it is bad."""
        try:
            return jobs.decode_chunk(chunk)
        except jobs.BadAnswer as exc:
            self.stats.bad_answers += 1
            log.warning("bad JSON chunk in the stream of job %s: %s: connection closed", pending.job_id, exc)
            self.registry.forget(pending)
            return None

    def _failed(self, conn: Connection, outcome: Outcome, request: Request, route: Route, job_id: str,
                job: bytes) -> bool:
        if outcome is Outcome.TIMEOUT:
            # still on the queue? Then no worker took it: taken back, so that none starts it late
            if self._take_back(route, job):
                log.warning("no worker took url job %s on queue %s within %ss: taken back, 503",
                            job_id, route.queue, route.timeout)
                self.serving.not_taken(route.queue, route.timeout)
                return conn.respond(request, 503, UNSERVED_HEADERS, NOT_TAKEN_BODY)
            log.warning("no answer to url job %s on queue %s within %ss: 504", job_id, route.queue, route.timeout)
            return conn.error(504, request)
        if outcome is Outcome.QUEUE_FULL:
            log.info("queue %s full: 503 for url job %s", route.queue, job_id)
        else:
            log.info("cannot push to queue %s: 503 for url job %s", route.queue, job_id)
        return conn.error(503, request)

    def _take_back(self, route: Route, job: bytes, recent: bool = False) -> bool:
        """Remove ``job`` from its list if no worker has taken it (on the connection that pushed
        it, so after its push); True if it was there. LREM scans from the end where the job
        should be: a job pushed ``recent``ly (its client left early) from the tail where a
        normal or low job went, a high one, or one that waited its whole timeout, from the head."""
        direction = -1 if recent and route.priority != "high" else 1
        return self.pusher.call(["LREM", keys.priority_list(route.queue, route.priority), direction, job]) == 1

    def _session_id(self, conn: Connection, request: Request) -> tuple[str, str | None]:
        """(id, the id if it is new else None): the session of the request's cookie if it
        verifies, else a new one (a cookie that does not verify is logged, never its value)."""
        assert self.signer is not None
        found, refused = sessions.id_from_cookies(request.header("cookie"), self.cookie, self.signer)
        if found is not None:
            return found, None
        if refused:
            log.info("%s: session cookie %s does not verify: a new session", conn.peer, self.cookie)
        session_id = sessions.new_id()
        return session_id, session_id

    def _session_cookie(self, headers: Headers, session_id: str, new_session: str | None) -> tuple[Headers, str]:
        """(the answer's headers with the session cookie to set, if any, the session's id now):
        the cookie of a new session, or of the id a worker regenerated (its X-Tempest-Session
        header, never sent to the client). A worker that sets the cookie itself is left alone."""
        regenerated = [v for n, v in headers if n.lower() == REGENERATED]
        if regenerated:
            headers = [(n, v) for n, v in headers if n.lower() != REGENERATED]
            value = regenerated[-1].decode("latin-1")
            if sessions.valid_id(value):
                new_session = session_id = value
            else:
                log.warning("ignored %s %r from a worker: not a session id", sessions.REGENERATED_HEADER, value[:64])
        prefix = self.cookie.encode() + b"="
        if new_session and not any(n.lower() == b"set-cookie" and v.startswith(prefix) for n, v in headers):
            assert self.signer is not None
            cookie = sessions.set_cookie(self.cookie, self.signer.sign(new_session), self.session_ttl,
                                         self.session_secure)
            headers.append((b"Set-Cookie", cookie.encode("latin-1")))
        return headers, session_id
