"""The HTTP front: parsing, limits, routing, turning requests into jobs and answers into
responses.

One greenlet per connection, httptools' parser on gevent's StreamServer. While a request waits
for its answer, its greenlet also watches the socket (an io watcher, not a second greenlet), so
a client that leaves is noticed at once and pipelined requests are parsed ahead. The job is
pushed by the shared ``Pusher`` (one RPUSH per queue per turn of the event loop) and the answer
arrives through the ``Registry``; answer timeouts come from the registry's single sweeper, read
timeouts (keep-alive, slow heads) from the front's single reaper. Requests under the pub/sub
and static prefixes are handed to ``sse``, ``websocket`` and ``static``, which reuse the
connection's waiting primitive (``sleep``/``notify``).
"""

import email.utils
import logging
import socket
import time
from collections import deque

import gevent
import httptools
from gevent import getcurrent
from gevent.server import StreamServer

from tempest import jobs, memory, sessions, sse, static, websocket
from tempest import pending as outcomes

log = logging.getLogger(__name__)
access_log = logging.getLogger("tempest.access")

RECV_SIZE = 64 * 1024
MAX_PIPELINE = 32  # requests parsed ahead of the one served; reading pauses beyond
REAP_INTERVAL = 0.5  # seconds; read timeouts fire at most this late (10,000 idle: ~1% CPU)
DEFAULT_CONTENT_TYPE = (b"Content-Type", b"text/html; charset=utf-8")
REGENERATED = sessions.REGENERATED_HEADER.lower().encode()
METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}
STATUS_LINES = {}  # (status, reason) -> b"HTTP/1.1 <status> <reason>\r\nServer: tempest\r\nDate: "
REASONS = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 413: "Content Too Large",
           431: "Request Header Fields Too Large", 502: "Bad Gateway",
           503: "Service Unavailable", 504: "Gateway Timeout"}


class Request:
    __slots__ = ("method", "url", "headers", "body", "body_size", "keep_alive", "version",
                 "error", "head_size", "raw_head", "started", "upgrade")

    def __init__(self):
        self.url = b""
        self.headers = {}  # lower-case name -> value; repeated headers joined as in the job's env
        self.body = []
        self.body_size = 0
        self.head_size = 0  # the request line and headers httptools completed
        self.raw_head = 0  # bytes of reads that fell wholly inside the head
        self.keep_alive = False
        self.error = None
        self.method = "GET"
        self.version = "1.1"
        self.started = time.monotonic()
        self.upgrade = False

    def header(self, name, default=""):
        """The value of header ``name`` (lower case); a repeated header's values joined."""
        return self.headers.get(name, default)


class _Abort(Exception):
    """Raised from a parser callback to stop parsing a request that is already refused."""


class Front:
    def __init__(self, config, registry, pusher, stats, respond_to, relay=None):
        self.config = config  # replaced on reload: routes and limits apply to new requests
        self.registry = registry
        self.pusher = pusher
        self.stats = stats
        self.respond_to = respond_to
        self.relay = relay
        self.websockets = {}  # socket id -> websocket.Session (shared with the answer endpoint)
        self.connections = set()
        self.closing = False
        self.server = StreamServer(config.front.listen, self._handle, backlog=config.front.backlog)
        self._date = (0, b"")
        self._prefixes = (None, ())  # (config, the path prefixes tempestd serves itself)

    @property
    def front(self):
        return self.config.front

    @property
    def address(self):
        return self.server.address

    def reap(self):
        """Wake the reads that waited too long (keep-alive, slow heads and bodies); one pass
        over the connections every REAP_INTERVAL instead of a timer per read."""
        loop = gevent.get_hub().loop
        trimmer = memory.Trimmer()
        while True:
            gevent.sleep(REAP_INTERVAL)
            now = time.monotonic()
            for conn in list(self.connections):
                if conn.read_deadline is not None and now >= conn.read_deadline:
                    loop.run_callback(conn.expire)
            trimmer.observe(len(self.connections))

    def stop_accepting(self):
        """Stop accepting; idle keep-alive connections close, busy ones after their response."""
        self.closing = True
        self.server.close()
        for conn in list(self.connections):
            if conn.idle:
                conn.greenlet.kill(block=False)

    def special(self, request, path):
        """The handler of a request tempestd answers itself (pub/sub, static files), or None."""
        if self._prefixes[0] is not self.config:  # the config was reloaded
            config = self.config
            prefixes = [static_dir.prefix for static_dir in config.statics]
            if self.relay is not None:
                prefixes += [config.pubsub.sub_prefix, config.pubsub.ws_prefix]
            self._prefixes = (config, tuple(prefixes))
        if not path.startswith(self._prefixes[1]):  # most requests: one test
            return None
        pubsub = self.config.pubsub
        if self.relay is not None and request.method in ("GET", "HEAD"):
            if path.startswith(pubsub.sub_prefix):
                return sse.serve
            if path.startswith(pubsub.ws_prefix):
                return websocket.serve
        for static_dir in self.config.statics:
            if path.startswith(static_dir.prefix):
                return static.serve
        return None

    def busy(self):
        return sum(1 for conn in self.connections if not conn.idle)

    def close_all(self):
        for conn in list(self.connections):
            conn.greenlet.kill(block=False)

    def date(self):
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, email.utils.formatdate(now, usegmt=True).encode())
        return self._date[1]

    def _handle(self, sock, address):
        conn = Connection(self, sock, address)
        self.connections.add(conn)
        self.stats.connections_total += 1
        self.stats.connections_open += 1
        try:
            conn.run()
        finally:
            self.connections.discard(conn)
            self.stats.connections_open -= 1


class Connection:
    def __init__(self, front, sock, address):
        self.front = front
        self.limits = front.front
        self.sock = sock
        self.address = address
        self.remote_addr = address[0] if isinstance(address, tuple) else None  # for the job's env
        self.greenlet = gevent.getcurrent()
        self.parser = httptools.HttpRequestParser(self)
        self.requests = deque()
        self.current = None
        self.in_head = False
        self.eof = False
        self.stop_reading = False
        self.idle = True
        self._hub = gevent.get_hub()
        self._sleeping = False  # in sleep(): notify() switches back to the greenlet
        self._readable = False
        self._watcher = None
        self.extra = []  # bytes after an upgrade request, for the WebSocket
        self.read_deadline = None  # while waiting for the client's bytes: when to give up
        self.timed_out = False

        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # reads wait through the reaper; a write blocked this long (a client that stopped
        # reading) raises socket.timeout and the connection is closed
        sock.settimeout(self.limits.keepalive_timeout)

    # the connection's life

    def run(self):
        try:
            while not self.front.closing or self.requests:
                request = self._next_request()
                if request is None or not self._serve(request):
                    break
        except OSError as exc:
            log.debug("connection from %s lost: %s", self.address[0], exc)
        finally:
            if self._watcher is not None:
                self._watcher.close()
            self.sock.close()
            self.parser = self._watcher = None  # no cycles left for the GC to find
            self.requests.clear()

    def _next_request(self):
        while not self.requests:
            self.idle = self.current is None
            if self.eof or self.stop_reading or (self.idle and self.front.closing):
                return None
            data = self._recv()
            if data is None:
                return None
            self._feed(data)
        self.idle = False
        return self.requests.popleft()

    def _recv(self):
        """The next bytes from the client, None on EOF or timeout. Waiting uses the
        connection's own io watcher; timeouts come from the front's reaper, so that no timer is
        made per read."""
        self.timed_out = False
        while True:
            try:
                data = self.sock._sock.recv(RECV_SIZE)
                break
            except BlockingIOError:
                pass
            except OSError:
                data = b""
                break
            self.read_deadline = self._read_deadline()
            try:
                self.sleep(stream=True)
            finally:
                self.read_deadline = None
            if self.timed_out:
                if self.current is not None:
                    log.info("%s: request not received within %ss, dropped",
                             self.address[0], self.limits.header_timeout)
                    self.error(408, keep_alive=False)
                return None
        if not data:
            self.eof = True
            return None
        return data

    def _read_deadline(self):
        if self.current is None:
            return time.monotonic() + self.limits.keepalive_timeout
        if self.in_head:  # the whole head must come within header_timeout (slowloris)
            return self.current.started + self.limits.header_timeout
        return time.monotonic() + self.limits.header_timeout  # a body: between two reads

    def expire(self):
        """From the reaper (in the hub): wake a read whose deadline has passed."""
        if self.read_deadline is not None and time.monotonic() >= self.read_deadline:
            self.timed_out = True
            self.notify()

    def _feed(self, data):
        head = self.current if self.in_head else None  # a head begun in an earlier read
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # the connection changes protocol (or closes) after this request
            self.stop_reading = True
            self.extra.append(data[exc.args[0]:] if exc.args and isinstance(exc.args[0], int) else b"")
            if self.requests:
                self.requests[-1].keep_alive = False
                self.requests[-1].upgrade = True
        except httptools.HttpParserError as exc:
            if not self.stop_reading:
                log.info("%s: malformed request: %s", self.address[0], exc)
                self._refuse(400)
        if head is not None and self.current is head and self.in_head and not self.stop_reading:
            # all of this read is head, yet maybe none of it complete: the callbacks only count
            # the parts httptools completed, so a header that never ends is caught here
            head.raw_head += len(data)
            if head.raw_head > self.limits.max_header_size:
                self._refuse(431)

    def _refuse(self, status):
        """Queue an error response for the request being parsed and stop reading."""
        request = self.current or Request()
        request.error = status
        request.keep_alive = False
        self.requests.append(request)
        self.current = None
        self.in_head = False
        self.stop_reading = True

    # httptools callbacks

    def on_message_begin(self):
        self.current = Request()
        self.in_head = True

    def on_url(self, url):
        request = self.current
        request.url += url
        request.head_size += len(url)
        if request.head_size > self.limits.max_header_size:
            self._refuse(431)
            raise _Abort

    def on_header(self, name, value):
        request = self.current
        headers = request.headers
        key = name.decode("latin-1").lower()
        if key in headers:
            headers[key] += ("; " if key == "cookie" else ", ") + value.decode("latin-1")
        else:
            headers[key] = value.decode("latin-1")
        request.head_size += len(name) + len(value) + 4
        if request.head_size > self.limits.max_header_size:
            self._refuse(431)
            raise _Abort

    def on_headers_complete(self):
        request = self.current
        self.in_head = False
        method = self.parser.get_method()
        request.method = METHODS.get(method) or method.decode("ascii")
        request.version = self.parser.get_http_version()
        request.keep_alive = self.parser.should_keep_alive()
        headers = request.headers
        if "content-length" in headers:
            length = headers["content-length"]
            if length.isdigit() and int(length) > self.limits.max_body:
                self._refuse(413)
                raise _Abort
        if "expect" in headers and headers["expect"].lower() == "100-continue" and not self.requests and self.idle:
            self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body):
        request = self.current
        request.body_size += len(body)
        if request.body_size > self.limits.max_body:
            self._refuse(413)
            raise _Abort
        request.body.append(body)

    def on_message_complete(self):
        self.requests.append(self.current)
        self.current = None

    # serving one request

    def _serve(self, request):
        if request.error:
            return self.error(request.error, request)
        front = self.front
        url = request.url.decode("latin-1")
        path = url.split("?", 1)[0]
        special = front.special(request, path)
        if special is not None:
            return special(self, request, path)
        route = front.config.route_for(path)
        env = jobs.http_env(request.method, url, request.headers, b"".join(request.body), self.remote_addr)
        new_session = None
        if self.limits.session_cookie:
            session_id, new_session = self._session_id(request)
            env["session"] = {"id": session_id, "ttl": int(self.limits.session_ttl)}
        job_id = jobs.new_job_id()
        pending = front.registry.add(job_id, jobs.HTTP_ACTION, route.timeout, self.notify)
        front.stats.requests += 1
        front.pusher.submit(route.queue, jobs.encode_http_job(env, front.respond_to, job_id), pending)
        outcome = self._wait(pending)
        if outcome is None:
            front.registry.abandon(pending)
            log.info("%s: client left while job %s on queue %s was pending", self.address[0], job_id, route.queue)
            return False
        if not isinstance(outcome, bytes):
            return self._failed(outcome, request, route, job_id)
        streamed = outcome.__class__ is outcomes.StreamHead
        try:
            status, reason, headers, body = jobs.decode_http_answer(outcome)
        except jobs.BadAnswer as exc:
            front.stats.bad_answers += 1
            log.warning("bad answer to url job %s (queue %s, %s %s): %s",
                        job_id, route.queue, request.method, url[:200], exc)
            if streamed:
                front.registry.forget(pending)
            return self.error(502, request)
        if not any(name.lower() == b"content-type" for name, _ in headers):
            headers.append(DEFAULT_CONTENT_TYPE)
        if self.limits.session_cookie:
            headers = self._session_cookie(headers, new_session)
        if streamed:
            return self._stream(request, pending, status, reason, headers)
        return self.respond(request, status, reason, headers, body)

    def _stream(self, request, pending, status, reason, headers):
        """Send a streamed answer's head, then its chunks as they come (chunked encoding on
        HTTP/1.1; on HTTP/1.0 the body ends when the connection closes)."""
        keep_alive = self.respond(request, status, reason, headers, b"", stream=True)
        if request.method == "HEAD" or status in (204, 304):
            self.front.registry.forget(pending)  # no body may follow: the chunks are dropped
            return keep_alive
        chunked = request.version != "1.0"
        while True:
            item = pending.take()
            if item is None:
                if self.sleep() and not self.read_ahead():  # woken by the socket: EOF?
                    self.front.registry.abandon(pending)
                    log.info("%s: client left during the stream of job %s", self.address[0], pending.job_id)
                    return False
            elif item.__class__ is bytes:
                self.send(b"%x\r\n%s\r\n" % (len(item), item) if chunked else item)
            elif item == outcomes.END:
                if chunked:
                    self.send(b"0\r\n\r\n")
                return keep_alive
            else:  # TIMEOUT, OVERFLOW or ABORTED: the body cannot be completed, the client must see it cut
                if item == outcomes.TIMEOUT:
                    log.warning("stream of job %s: no chunk within %ss: connection closed",
                                pending.job_id, pending.timeout)
                return False

    def _session_id(self, request):
        """(id, the id if it is new else None): the session of the request's cookie, or a new one."""
        found = sessions.id_from_cookies(request.header("cookie"), self.limits.session_cookie)
        if found is not None:
            return found, None
        session_id = sessions.new_id()
        return session_id, session_id

    def _session_cookie(self, headers, new_session):
        """The answer's headers with the session cookie to set, if any: a new session's, or
        the id a worker regenerated (its X-Tempest-Session header, never sent to the client).
        A worker that sets the cookie itself is left alone."""
        limits = self.limits
        regenerated = [v for n, v in headers if n.lower() == REGENERATED]
        if regenerated:
            headers = [(n, v) for n, v in headers if n.lower() != REGENERATED]
            value = regenerated[-1].decode("latin-1")
            if sessions.valid_id(value):
                new_session = value
            else:
                log.warning("ignored %s %r from a worker: not a session id", sessions.REGENERATED_HEADER, value[:64])
        prefix = limits.session_cookie.encode() + b"="
        if new_session and not any(n.lower() == b"set-cookie" and v.startswith(prefix) for n, v in headers):
            cookie = sessions.set_cookie(limits.session_cookie, new_session, limits.session_ttl, limits.session_secure)
            headers.append((b"Set-Cookie", cookie.encode("latin-1")))
        return headers

    def _failed(self, outcome, request, route, job_id):
        if outcome == outcomes.TIMEOUT:
            log.warning("no answer to url job %s on queue %s within %ss: 504",
                        job_id, route.queue, route.timeout)
            return self.error(504, request)
        if outcome == outcomes.QUEUE_FULL:
            log.info("queue %s full: 503 for url job %s", route.queue, job_id)
        else:
            log.info("cannot push to queue %s: 503 for url job %s", route.queue, job_id)
        return self.error(503, request)

    def _wait(self, pending):
        """Wait for ``pending``'s outcome while watching the socket; None if the client left."""
        while pending.outcome is None:
            if self.sleep() and pending.outcome is None and not self.read_ahead():
                return None
        return pending.outcome

    def sleep(self, stream=False):
        """Wait until ``notify()`` is called or the socket is readable; True when it is
        readable (the caller then reads with ``read_ahead``). HTTP requests stop watching
        once reading is paused; a stream (SSE, WebSocket) always watches until EOF."""
        if stream:
            watch = not self.eof
        else:
            watch = not (self.eof or self.stop_reading or len(self.requests) >= MAX_PIPELINE)
        if watch:
            if self._watcher is None:
                self._watcher = gevent.get_hub().loop.io(self.sock.fileno(), 1)
            self._watcher.start(self._on_readable)
        self._sleeping = True
        try:
            self._hub.switch()  # back here from notify(), or with GreenletExit from a kill
        finally:
            self._sleeping = False
            if watch:
                self._watcher.stop()
        readable, self._readable = self._readable, False
        return readable

    def notify(self):
        """Wake the greenlet if it sleeps (once, whichever comes first). Called in the hub,
        as every callback is; from another greenlet it schedules itself there instead."""
        if self._sleeping:
            if getcurrent() is not self._hub:
                self._hub.loop.run_callback(self.notify)
                return
            self._sleeping = False
            self.greenlet.switch()

    def send(self, data):
        """sendall, trying the raw non-blocking socket first (the usual case: it takes it all)."""
        try:
            sent = self.sock._sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            self.sock.sendall(memoryview(data)[sent:])

    def abort(self):
        """Close the connection now, whatever its greenlet is doing (a stuck slow client)."""
        log.info("%s: slow client disconnected", self.address[0])
        self.greenlet.kill(block=False)

    def _on_readable(self):
        self._readable = True
        self.notify()

    def read_ahead(self, feed=True):
        """Read what the client sent without waiting; False when it has gone (EOF)."""
        try:
            data = self.sock._sock.recv(RECV_SIZE)  # the raw non-blocking socket: never waits
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return False
        if feed:
            self._feed(data)
        else:
            self.extra.append(data)
        return True

    # writing responses

    def error(self, status, request=None, keep_alive=None):
        request = request or Request()
        if status in (400, 408, 413, 431):
            self.front.stats.bad_requests += 1
        reason = REASONS[status]
        body = f"{status} {reason}\n".encode()
        headers = [(b"Content-Type", b"text/plain; charset=utf-8")]
        if keep_alive is not None:
            request.keep_alive = keep_alive
        return self.respond(request, status, reason, headers, body)

    def respond(self, request, status, reason, headers, body, stream=False):
        """Send a response; with ``stream``, only its head, framed for a body that follows
        in chunks (HTTP/1.1) or until the connection closes (HTTP/1.0). True: keep-alive."""
        keep_alive = request.keep_alive and not self.front.closing and not (stream and request.version == "1.0")
        line = STATUS_LINES.get((status, reason))
        if line is None:
            line = b"HTTP/1.1 %d %s\r\nServer: tempest\r\nDate: " % (status, reason.encode())
            if len(STATUS_LINES) < 1000:  # reasons come from tables, but bound it anyway
                STATUS_LINES[status, reason] = line
        head = [line, self.front.date(), b"\r\n"]
        for name, value in headers:
            head += (name, b": ", value, b"\r\n")
        if status in (204, 304):
            body = b""
        elif stream:
            if request.version != "1.0":
                head.append(b"Transfer-Encoding: chunked\r\n")
        else:
            head += (b"Content-Length: ", b"%d" % len(body), b"\r\n")
        if not keep_alive:
            head.append(b"Connection: close\r\n")
        elif request.version == "1.0":
            head.append(b"Connection: keep-alive\r\n")
        head.append(b"\r\n")
        if request.method == "HEAD":
            body = b""
        head.append(body)
        self.send(b"".join(head))
        self.front.stats.count_response(status)
        if self.limits.access_log:
            access_log.info('%s "%s %s HTTP/%s" %d %d %.1fms', self.address[0], request.method,
                            request.url.decode("latin-1"), request.version, status, len(body),
                            (time.monotonic() - request.started) * 1000)
        return keep_alive
