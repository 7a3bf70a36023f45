"""One HTTP connection: reading and parsing requests, limits, waiting, writing responses.

One greenlet per connection, httptools' parser over the socket. Reads wait on the connection's
own io watcher; their timeouts (keep-alive, slow heads and bodies) come from the server's single
reaper, so no timer is made per read. While a handler waits (for a worker's answer, a published
message), the socket stays watched: a client that leaves is noticed at once, and pipelined
requests are parsed ahead.

Handlers (``forward``, ``sse``, ``websocket``, ``static``) talk to the connection through
this interface only:

- ``respond``, ``respond_head``, ``error``: a whole response, or the head of a body that
  follows, built by ``response.head`` (the one head builder);
- ``send`` (blocking, bounded by ``keepalive_timeout``) and ``send_nowait`` (raw bytes);
- ``wait`` (sleep until ``notify`` is called or the client sends something or leaves) and
  ``notify`` (wake it: from the hub, or any greenlet);
- ``begin_stream`` (a long-lived exchange: SSE, WebSocket), after which what the client sends
  is kept for ``take_received`` (which also hands over what was read ahead of an upgrade);
- ``switch_protocols`` (send the head of a 101 built elsewhere: the WebSocket handshake);
- ``abort`` (close now, whatever the greenlet is doing), ``peer``, ``remote_addr`` and
  ``local_address`` (the address the client connected to).

Every request ends in the server's ``finished`` (metrics, access log) when its exchange is
over, however it ends: the status and the body's bytes are taken from the request
(``status``, ``sent_from``) and the connection's count of bytes sent.

A request body is bounded by its route's ``max_body`` (declared lengths before any byte is
read). On a route with ``spool``, a body over ``spool_over`` goes to the server's ``spools``
(tempest.spool) read by read instead of into memory, and is removed when its exchange ends,
however it ends (a cut upload, a refusal, a client that left, an answer sent).
"""

from __future__ import annotations

import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import gevent
import httptools
from gevent import getcurrent

from tempest.config import MAX_BODY_IN_MEMORY
from tempest.http import response
from tempest.http.request import METHODS, Request
from tempest.http.response import Framing
from tempest.sockets import close_with
from tempest.spool import SpoolError

if TYPE_CHECKING:
    from tempest.http.server import Listener

log = logging.getLogger(__name__)

RECV_SIZE = 64 * 1024
MAX_PIPELINE = 32  # requests parsed ahead of the one served; reading pauses beyond
BAD_REQUESTS = (400, 408, 413, 431)  # counted as bad_requests


class _Abort(Exception):
    """Raised from a parser callback to stop parsing a request that is already refused."""


class Connection:
    def __init__(self, server: Listener, sock: Any, address: Any) -> None:
        self.server = server
        self.limits = server.limits  # [front] as the connection opened: its limits hold for its life
        self.sock = sock
        self.peer = address[0] if isinstance(address, tuple) else "unix socket"  # for log lines
        self.remote_addr = address[0] if isinstance(address, tuple) else None  # for the job's env
        # the StreamServer runs each connection in a gevent Greenlet (getcurrent() is typed
        # as any greenlet, which has no kill())
        self.greenlet = cast("gevent.Greenlet[..., Any]", gevent.getcurrent())
        self.parser: Any = httptools.HttpRequestParser(self)
        self.requests: deque[Request] = deque()
        self.current: Request | None = None
        self.in_head = False
        self.eof = False
        self.stop_reading = False
        self.idle = True  # between requests, or a stream: not waited for at shutdown
        self.served = 0  # requests served: a connection that has had none is given its first at shutdown
        self.streaming = False
        self.read_deadline: float | None = None  # while waiting for the client's bytes: when to give up
        self.timed_out = False
        self._hub = gevent.get_hub()
        self._raw = sock._sock  # the non-blocking socket under gevent's: reads and sends that never wait
        self._sleeping = False  # in _sleep(): notify() switches back to the greenlet
        self._readable = False
        self._watcher: Any = None
        self._received: list[bytes] = []  # bytes read during a stream, or after an upgrade request
        self.sent = 0  # bytes sent on this connection (for the access log's body sizes)
        self.linger = False  # refused in the middle of a body: read the rest a while before closing
        # parked (an idle stream, see park()): what runs when it is woken; detached: it was
        # parked once, so that its first greenlet's end neither closed nor forgot it
        self.parked: tuple[Request, Callable[[bytes], bool], Callable[[], object]] | None = None
        self.detached = False
        self._killed = False

        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # reads wait through the reaper; a write blocked this long (a client that stopped
        # reading) raises socket.timeout and the connection is closed
        sock.settimeout(self.limits.keepalive_timeout)

    # the connection's life

    def run(self) -> None:
        try:
            while not self.server.closing or self.requests or not self.served:
                request = self._next_request()
                if request is None or not self._serve(request) or self.detached:
                    break
        except OSError as exc:
            log.debug("connection from %s lost: %s", self.peer, exc)
        finally:
            if not self.detached:  # a parked stream is closed by the greenlet that ends it
                self._close()

    def _close(self) -> None:
        if self._watcher is not None:
            self._watcher.close()
        for request in (self.current, *self.requests):  # a body cut half-way, requests never served
            if request is not None:
                _drop_body(request)
        if self.linger:  # so that the client reads the error before the reset of its unread bytes
            close_with(self.sock, b"")
        self.sock.close()
        self.parser = self._watcher = self.parked = None  # no cycles left for the GC to find
        self.requests.clear()

    def _serve(self, request: Request) -> bool:
        self.served += 1
        try:
            if request.error:
                return self.error(request.error, request)
            path = request.target.split("?", 1)[0]
            handler = self.server.handler_for(request, path)
            request.route = handler.route
            return handler.serve(self, request, path)
        finally:  # a stream that ended, a client that left, a connection killed: all logged
            if not self.detached:  # a parked stream is logged when it ends (close())
                _drop_body(request)
                self.server.finished(self, request)

    def _next_request(self) -> Request | None:
        while not self.requests:
            self.idle = self.current is None
            # at shutdown a keep-alive connection closes between two requests, but one accepted
            # just before (by this process, while another took over the socket) gets its first
            if self.eof or self.stop_reading or (self.idle and self.server.closing and self.served):
                return None
            # after an answer the next request is rarely there yet: wait for it before reading,
            # rather than pay a recv that fails (a system call and an exception per request)
            data = self._recv(wait_first=self.idle and self.served > 0)
            if data is None:
                return None
            self._feed(data)
        self.idle = False
        return self.requests.popleft()

    def _recv(self, wait_first: bool = False) -> bytes | None:
        """The next bytes from the client, None on EOF or timeout; with ``wait_first``, wait
        until the socket is readable before the first read."""
        self.timed_out = False
        while True:
            if wait_first:
                wait_first = False
            else:
                try:
                    data = self._raw.recv(RECV_SIZE)
                    break
                except BlockingIOError:
                    pass
                except OSError:
                    data = b""
                    break
            self.read_deadline = self._read_deadline()
            try:
                self._sleep(watch=True)
            finally:
                self.read_deadline = None
            if self.timed_out:
                if self.current is not None:
                    what = "head" if self.in_head else "body"
                    log.info("%s: request %s not received in time, dropped", self.peer, what)
                    request, self.current = self.current, None
                    try:
                        self.error(408, request, keep_alive=False)
                    finally:
                        _drop_body(request)
                        self.server.finished(self, request)
                return None
        if not data:
            self.eof = True
            return None
        return data

    def _read_deadline(self) -> float:
        if self.current is None:
            return time.monotonic() + self.limits.keepalive_timeout
        if self.in_head:  # the whole head must come within header_timeout (slowloris)
            return self.current.started + self.limits.header_timeout
        # a body: header_timeout between two reads, body_timeout for the whole of it
        return min(time.monotonic() + self.limits.header_timeout, self.current.body_started + self.limits.body_timeout)

    def expire(self) -> None:
        """From the reaper (in the hub): wake a read whose deadline has passed."""
        if self.read_deadline is not None and time.monotonic() >= self.read_deadline:
            self.timed_out = True
            self.notify()

    def _feed(self, data: bytes) -> None:
        head = self.current if self.in_head else None  # a head begun in an earlier read
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # the connection changes protocol (or closes) after this request
            self.stop_reading = True
            self._received.append(data[exc.args[0]:] if exc.args and isinstance(exc.args[0], int) else b"")
            if self.requests:
                self.requests[-1].keep_alive = False
                self.requests[-1].upgrade = True
        except httptools.HttpParserError as exc:
            if not self.stop_reading:
                log.info("%s: malformed request: %s", self.peer, exc)
                self._refuse(400)
        if head is not None and self.current is head and self.in_head and not self.stop_reading:
            # all of this read is head, yet maybe none of it complete: the callbacks only count
            # the parts httptools completed, so a header that never ends is caught here
            head.raw_head += len(data)
            if head.raw_head > self.limits.max_header_size:
                self._refuse(431)

    def _refuse(self, status: int) -> None:
        """Queue an error response for the request being parsed and stop reading."""
        request = self.current or Request()
        request.error = status
        request.keep_alive = False
        self.requests.append(request)
        self.current = None
        self.in_head = False
        self.stop_reading = True

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.current = Request()
        self.in_head = True

    def on_url(self, url: bytes) -> None:
        request = self.current
        assert request is not None
        request.url += url
        request.head_size += len(url)
        if request.head_size > self.limits.max_header_size:
            self._refuse(431)
            raise _Abort

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self.current
        assert request is not None
        headers = request.headers
        key = name.decode("latin-1").lower()
        if key.startswith("x-tempest-"):  # reserved for tempest's own use: a client may not pose as it
            request.head_size += len(name) + len(value) + 4
            return
        if key == "host":
            request.hosts += 1
        if key in headers:
            headers[key] += ("; " if key == "cookie" else ", ") + value.decode("latin-1")
        else:
            headers[key] = value.decode("latin-1")
        request.head_size += len(name) + len(value) + 4
        if request.head_size > self.limits.max_header_size:
            self._refuse(431)
            raise _Abort

    def on_headers_complete(self) -> None:
        request = self.current
        assert request is not None
        self.in_head = False
        request.body_started = time.monotonic()
        method = self.parser.get_method()
        request.method = METHODS.get(method) or method.decode("ascii")
        request.version = self.parser.get_http_version()
        request.keep_alive = self.parser.should_keep_alive()
        if request.version == "1.1" and request.hosts != 1:  # RFC 9112, 3.2: exactly one
            log.info("%s: HTTP/1.1 request with %d Host headers: 400", self.peer, request.hosts)
            self._refuse(400)
            raise _Abort
        if request.url[:1] != b"/" and request.url != b"*" and not self._origin_form(request):
            self._refuse(400)
            raise _Abort
        headers = request.headers
        if ("content-length" in headers or "transfer-encoding" in headers) and not self._bound_body(request):
            raise _Abort
        if "expect" in headers and headers["expect"].lower() == "100-continue" and not self.requests and self.idle:
            self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _origin_form(self, request: Request) -> bool:
        """Turn an absolute-form target (``GET http://host/path``, which a client sends to a
        proxy) into its path and query, so that routes and prefixes see the path; False if the
        target is neither."""
        try:
            parsed = httptools.parse_url(request.url)
        except httptools.HttpParserInvalidURLError:
            parsed = None
        if parsed is None or parsed.schema not in (b"http", b"https") or not parsed.host:
            log.info("%s: request target is not a path nor an absolute URL: 400", self.peer)
            return False
        request.url = (parsed.path or b"/") + (b"?" + parsed.query if parsed.query else b"")
        return True

    def _bound_body(self, request: Request) -> bool:
        """Set the body's bound and store from its route; False if it is refused (413) already."""
        route = self.server.body_route(request, request.target.split("?", 1)[0])
        request.max_body = route.max_body if route is not None else min(self.limits.max_body, MAX_BODY_IN_MEMORY)
        length = request.headers.get("content-length", "")
        declared = int(length) if length.isdigit() else None
        if declared is not None and declared > request.max_body:
            self._refuse(413)
            return False
        if route is not None and route.spool != "no" and (declared is None or declared > route.spool_over):
            request.spool_route = route
            request.spool_over = route.spool_over if declared is None else -1
        return True

    def on_body(self, body: bytes) -> None:
        request = self.current
        assert request is not None
        request.body_size += len(body)
        if request.body_size > request.max_body:
            self.linger = True  # the client is sending still: let it read the 413
            self._refuse(413)
            raise _Abort
        if request.spool_route is not None and request.body_size > request.spool_over:
            self._spool(request, body)
        else:
            request.body.append(body)

    def _spool(self, request: Request, body: bytes) -> None:
        """Write ``body`` to the request's spooled body, made (with what was kept so far) on the
        first call; a failure refuses the request (507 when the spool is full)."""
        try:
            if request.stored is None:
                request.stored = self.server.spools.open(request.spool_route, self.limits.body_timeout)
                kept, request.body = request.body, []
                for piece in kept:
                    request.stored.write(piece)
            request.stored.write(body)
        except SpoolError as exc:
            self._spool_failed(exc)

    def _spool_failed(self, exc: SpoolError) -> None:
        if exc.status == 507:
            log.warning("%s: %s: 507", self.peer, exc)
        else:
            log.error("%s: %s: %d", self.peer, exc, exc.status)
        self.linger = True
        self._refuse(exc.status)
        raise _Abort

    def on_message_complete(self) -> None:
        request = self.current
        assert request is not None
        if request.stored is not None:
            try:
                request.stored.finish()
            except SpoolError as exc:
                self._spool_failed(exc)
        self.requests.append(request)
        self.current = None

    # waiting: the handlers' interface

    def wait(self) -> bool:
        """Sleep until ``notify()`` is called or the client sends something; False once the
        client has gone (EOF). Before ``begin_stream``, what the client sends is parsed as
        pipelined requests (up to MAX_PIPELINE, then reading pauses); after it, the bytes are
        kept for ``take_received``."""
        if self.streaming:
            return not self._sleep(watch=not self.eof) or self._read_now(self._received.append)
        watch = not (self.eof or self.stop_reading or len(self.requests) >= MAX_PIPELINE)
        return not self._sleep(watch) or self._read_now(self._feed)

    def begin_stream(self) -> None:
        """The exchange becomes long-lived (SSE, WebSocket): it has no end to wait for at
        shutdown, and the client's bytes go to ``take_received``."""
        self.idle = True
        self.streaming = True

    def take_received(self) -> bytes:
        """The bytes the client sent that nobody read yet (after an upgrade request, or
        during a stream)."""
        data = b"".join(self._received)
        self._received.clear()
        return data

    def notify(self) -> None:
        """Wake the greenlet if it sleeps (once, whichever comes first), or a parked stream's
        in a new greenlet. Called in the hub, as every callback is; from another greenlet it
        schedules itself there instead."""
        if self._sleeping or self.parked is not None:
            if getcurrent() is not self._hub:
                self._hub.loop.run_callback(self.notify)
                return
            if self.parked is not None:
                parked, self.parked = self.parked, None
                self.server.stats.streams_parked -= 1
                if self._watcher is not None:
                    self._watcher.stop()
                self.greenlet = gevent.spawn(self._resume, *parked)
                return
            if self._sleeping:
                self._sleeping = False
                self.greenlet.switch()

    # parking: an idle stream without a greenlet

    def park(self, request: Request, step: Callable[[bytes], bool], end: Callable[[], object]) -> None:
        """Let the greenlet of a stream that has nothing to do end, and keep the connection
        open without one (a suspended greenlet costs about 8 KB, the parked connection well
        under one). The next ``notify()``, or the client's bytes, runs in a new greenlet
        ``step(what the client sent)``, which writes what there is and returns True to park
        again, False when the stream is over; then (or when the client left, or the connection
        was killed meanwhile) ``end()`` runs and ``request`` is logged, the socket closed, the
        connection forgotten by its listener. Only after ``begin_stream``; the handler then
        returns at once."""
        self.parked = (request, step, end)
        self.server.stats.streams_parked += 1
        if not self.detached:
            self.detached = True
            self.server.park(self)
        if not self.eof:
            if self._watcher is None:
                self._watcher = self._hub.loop.io(self.sock.fileno(), 1)
            self._watcher.start(self._on_readable)

    def _resume(self, request: Request, step: Callable[[bytes], bool], end: Callable[[], object]) -> None:
        again = False
        try:
            if self._killed:
                raise gevent.GreenletExit
            readable, self._readable = self._readable, False
            if not readable or self._read_now(self._received.append):  # else the client has gone
                again = step(self.take_received())
        except OSError as exc:
            log.debug("%s: stream client gone: %s", self.peer, exc)
        finally:
            if again:
                self.park(request, step, end)
            else:
                try:
                    end()
                finally:
                    try:
                        _drop_body(request)
                        self.server.finished(self, request)
                    finally:
                        self._close()
                        self.server.release(self)

    def kill(self) -> None:
        """End the connection whatever it is doing (shutdown, a stuck slow client)."""
        if self.detached:
            self._killed = True  # a resume that has not started yet ends the stream at once
            if self.parked is not None:
                self.notify()  # its resume ends the stream at once, and closes it
                return
            if not self.greenlet:  # spawned, not started
                return
        self.greenlet.kill(block=False)

    @property
    def local_address(self) -> tuple[str, int] | None:
        """The address (host, port) the client connected to; None on a unix socket."""
        try:
            address = self.sock.getsockname()
        except OSError:
            return None
        return (address[0], address[1]) if isinstance(address, tuple) else None

    def abort(self) -> None:
        """Close the connection now, whatever its greenlet is doing (a stuck slow client)."""
        log.info("%s: slow client disconnected", self.peer)
        self.kill()

    def _sleep(self, watch: bool) -> bool:
        """Wait until ``notify()`` or, when ``watch``, until the socket is readable; True
        when it is readable."""
        if watch:
            if self._watcher is None:
                self._watcher = self._hub.loop.io(self.sock.fileno(), 1)
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

    def _on_readable(self) -> None:
        self._readable = True
        self.notify()

    def _read_now(self, sink: Callable[[bytes], object]) -> bool:
        """Read what the client sent without waiting and give it to ``sink``; False on EOF."""
        try:
            data = self._raw.recv(RECV_SIZE)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return False
        sink(data)
        return True

    # writing

    def send(self, data: bytes) -> None:
        """Send all of ``data``, trying the raw non-blocking socket first (the usual case: it
        takes it all). Raises OSError (socket.timeout after keepalive_timeout) on failure."""
        try:
            sent = self._raw.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            self.sock.sendall(memoryview(data)[sent:])
        self.sent += len(data)

    def send_nowait(self, data: bytes) -> int | None:
        """Send what the socket takes now: the bytes sent, or None when it takes nothing (it
        would block, or the client is gone)."""
        try:
            sent: int = self._raw.send(data)
        except OSError:
            return None
        self.sent += sent
        return sent

    def error(self, status: int, request: Request | None = None, keep_alive: bool | None = None) -> bool:
        """An error response with a one-line text body; True: the connection is kept alive."""
        request = request or Request()
        if status in BAD_REQUESTS:
            self.server.stats.bad_requests += 1
        body = f"{status} {response.reason(status)}\n".encode()
        if keep_alive is not None:
            request.keep_alive = keep_alive
        return self.respond(request, status, [(b"Content-Type", b"text/plain; charset=utf-8")], body)

    def respond(self, request: Request, status: int, headers: list[tuple[bytes, bytes]], body: bytes,
                head_length: int | None = -1) -> bool:
        """Send a whole response; True: the connection is kept alive. ``head_length``: for a
        HEAD answered without a body, the Content-Length to send (a GET's, as the worker
        declared it; None: none), instead of the body's 0."""
        keep_alive = request.keep_alive and not self.server.closing
        length = len(body) if head_length == -1 or body or request.method != "HEAD" else head_length
        head = response.head(status, headers, self.server.date(), Framing.LENGTH, length, keep_alive,
                             request.version == "1.0")
        with_body = request.method != "HEAD" and status not in (204, 304)
        if with_body:
            head.append(body)
        self.send(b"".join(head))
        self._sent_head(request, status, len(body) if with_body else 0)
        return keep_alive

    def respond_head(self, request: Request, status: int, headers: list[tuple[bytes, bytes]],
                     framing: Framing, extra: bytes = b"") -> bool:
        """Send the head of a body that follows (chunked or until the connection closes),
        with ``extra`` bytes after it in the same write; True: the connection is kept alive."""
        keep_alive = (request.keep_alive and not self.server.closing and framing is not Framing.UNTIL_CLOSE)
        head = response.head(status, headers, self.server.date(), framing, 0, keep_alive, request.version == "1.0")
        head.append(extra)
        self.send(b"".join(head))
        self._sent_head(request, status, len(extra))
        return keep_alive

    def switch_protocols(self, request: Request, head: bytes) -> None:
        """Send ``head``, a 101 response built elsewhere (the WebSocket handshake's): what is
        sent after it counts as the response's body."""
        self.send(head)
        self._sent_head(request, 101, 0)

    def _sent_head(self, request: Request, status: int, body: int) -> None:
        """The response's head (and ``body`` bytes of its body) went out."""
        request.status = status
        request.sent_from = self.sent - body
        self.server.stats.count_response(status)


def _drop_body(request: Request) -> None:
    """Remove the request's spooled body, if any (its exchange is over, or will never be)."""
    stored, request.stored = request.stored, None
    if stored is not None:
        stored.discard()
