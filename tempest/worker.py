"""The Python worker library: take jobs from a queue, run handlers, send their answers.

Blocking sockets, no gevent: it works in any sequential program. It speaks exactly the 2012
protocol (``BLPOP <queue>``, then ``<action> <job_id> <json>`` sent to ``respond_to``), so a
worker written with it and the Ruby or Node workers of 2012 are interchangeable. Jobs and
answers travel over lean pipelined connections (``tempest.redisconn``: hiredis, no pool, no
retry); ``worker.redis``, a redis-py client of the same Redis, is there for the handlers.

Example::

    from tempest import Worker

    worker = Worker("tempest")

    @worker.on("url")
    def hello(context, env):
        return [200, {"Content-Type": "text/plain"}, "Hello " + env["url"]]

    worker.run()
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

import hiredis

from tempest import jobs, keys, redisconn, reliable, resp, sessions, slots
from tempest.publish import Publisher
from tempest.spool import open_body
from tempest.redisurl import answer_endpoint, redacted
from tempest.redisconn import RawConnection, ConnectionFailed

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
CUT_BODY = "502 Bad Gateway: the worker stopped during the request, which is not run twice\n"
DEFAULT_HEARTBEAT = 15.0  # seconds without a heartbeat after which a reliable worker counts as dead
POLL_TIMEOUT = 1  # seconds a BLPOP blocks, so that a stop request is seen within it
SHORT_POLL = 0.1  # seconds a reliable worker blocks where it must look at other lists between pops
LOW_WAKE = 2.0  # seconds after its last low job that a reliable worker blocks on the low list
EXPIRED_LOG_EVERY = 10.0  # seconds between two log lines about jobs dropped past their deadline
FLUSH_AFTER = 0.005  # seconds: answers held back for a batch are sent once they are this old
RECONNECT_MAX = 2.0  # seconds between reconnection attempts, at most
# the errors of a Redis that will answer again soon, retried as a lost connection is: a cluster
# failing over (CLUSTERDOWN, TRYAGAIN, a master's part of a batch lost), a replica's sync, a start
PASSING_ERRORS = ("CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "LOADING", "CONNECTION ")
ANSWER_ACTIONS = (jobs.HTTP_ACTION, "ws")  # the actions every answer endpoint knows
ENV_ACTIONS = (jobs.HTTP_ACTION, "authorize")  # jobs whose first argument is Context.env
GATHER_TTL = 300  # seconds a fan-out's results list lives at most (the gatherer deletes it)

Handler = Callable[..., object]  # handler(context, *args): its value, unless None, is the answer
H = TypeVar("H", bound=Handler)
# an answer's headers: an object, or a list of [name, value] pairs
Headers = Mapping[str, object] | Sequence[Sequence[object]]


class Context:
    """What a handler knows about its job, and how it answers.

    Attributes:
        action: the job's action (``url`` for HTTP requests).
        job_id: the job's id, echoed by every answer (a string from tempestd; any JSON value
            in a job pushed by hand).
        respond_to: ``"host:port"`` of the endpoint waiting for the answer, or None.
        worker: the ``Worker`` running the handler.
        env: a ``url`` job's env (method, url, headers, body...), or an ``authorize`` job's
            request (channel, session, headers: docs/pubsub.md); None for other actions.
    """

    def __init__(self, worker: Worker, action: str, respond_to: str | None, job_id: Any,
                 env: dict[str, Any] | None = None) -> None:
        self.worker = worker
        self.action = action
        self.respond_to = respond_to
        self.job_id = job_id
        self.env = env  # a url job's env (None for other actions)
        self.answered = 0
        self.open_stream: Stream | None = None  # the last Stream begun
        self._session: sessions.Session | None = None

    @property
    def session(self) -> sessions.Session | None:
        """The request's session (a dict-like ``tempest.sessions.Session`` over Redis), or
        None when tempestd has no ``session_cookie`` (or the job is neither an HTTP request
        nor an authorize job, or the visitor has no session)."""
        if self._session is None:
            info = (self.env or {}).get("session")
            if isinstance(info, dict) and sessions.valid_id(info.get("id")):
                self._session = sessions.Session(self.worker.redis, info["id"], info.get("ttl") or sessions.DEFAULT_TTL)
        return self._session

    def body_file(self) -> BinaryIO:
        """The request body as a binary file open for reading, wherever it is: a body that
        tempestd spooled (``env.body_file``: the file itself, on this host; ``env.body_key``:
        its chunks in Redis, fetched as they are read) or one inline in the job (``body``,
        ``body_base64``). Close it when done. Its size: ``env.body_file.size`` (or
        ``body_key.size``); its SHA-256: their ``sha256``.

        Returns:
            A binary file-like object (read, readinto, readline, iteration).

        Raises:
            tempest.spool.BodyGone: the spooled body is gone (its request was answered, timed
                out, or its client left) or expired; raised by a read, at the end of the body,
                when its size or SHA-256 is not its token's.
        """
        return open_body(self.env or {}, self.worker.redis)

    def answer(self, data: object) -> bool:
        """Send an answer; may be called several times (later answers of an HTTP job are
        dropped by the front, a ``ws`` job's answers all reach its socket).

        With ``prefetch`` above 1, answers of a batch of fast jobs are sent together, at the
        latest when the batch ends or a handler has run for FLUSH_AFTER seconds.

        Args:
            data: any JSON-serializable value; for ``url`` jobs ``[status, headers, body]``.

        Returns:
            False if there is nobody to answer (no ``respond_to``), else True.
        """
        self.answered += 1
        if self._session is not None and self._session.regenerated and self.action == jobs.HTTP_ACTION:
            data = _with_header(data, sessions.REGENERATED_HEADER, self._session.id)
        return self.worker.send_answer(self.respond_to, self.action, self.job_id, data)

    def forward(self, queue: str, action: str, *args: Any, priority: str = "normal") -> None:
        """Pass the job on: push ``[action, args, respond_to, job_id]`` to ``queue``, so that the
        worker that takes it (in any language) answers the waiting client, or forwards again.
        The handler then sends no answer itself; the answer to a forwarded ``url`` job is an
        HTTP answer, whoever sends it. ``priority``: high, normal or low.

        Raises:
            ConnectionFailed: Redis could not be reached (the job was not passed on).
            ValueError: not a priority.
        """
        self.answered += 1  # someone else answers: no 500 for a handler that returns None
        self.worker.push(queue, jobs.encode_job(action, list(args), self.respond_to, self.job_id), priority)

    def gather(self, parts: list[tuple[str, str, list[Any]]], timeout: float = 5.0) -> list[Any]:
        """Fan out: send each part ``(queue, action, args)`` to its queue as a job, wait up to
        ``timeout`` seconds for their answers, and return them in the parts' order, each the
        decoded JSON of its answer, or None for a part that did not answer in time (or
        answered with something that is not JSON). The parts' workers answer as for any job.

        Raises:
            ValueError: the job has no ``respond_to`` (the parts could not answer anywhere).
            ConnectionFailed: Redis could not be reached.
        """
        if not self.respond_to:
            raise ValueError("gather needs a job with respond_to (the answer endpoint relays the parts' answers)")
        return self.worker.gather(self.respond_to, parts, timeout)

    def stream(self, status: int = 200, headers: Headers | None = None) -> Stream:
        """Begin a streamed answer to an HTTP request: its status and headers now, the body
        in pieces with ``write()`` as they are ready, then ``close()`` (or use it in a
        ``with`` block). Each piece is sent at once; the client gets them as they come
        (chunked encoding). A stream left unclosed is cut by tempestd after the route's
        timeout without a new piece.

        Args:
            status: the HTTP status.
            headers: an object, or a list of ``[name, value]`` pairs.

        Returns:
            a ``Stream``; without ``respond_to`` its writes go nowhere.
        """
        head: object = [status, headers if headers is not None else {}]
        if self._session is not None and self._session.regenerated:
            head = _with_header(head, sessions.REGENERATED_HEADER, self._session.id)
        self.answered += 1
        self.worker.send_command(self.respond_to, ("stream", self.job_id, jobs.dumps(head)), flush=True)
        self.open_stream = Stream(self)
        return self.open_stream


class Stream:
    """The body of a streamed answer (``Context.stream``)."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.closed = False

    def write(self, data: bytes | str) -> None:
        """Send a piece of the body (bytes, or str sent as UTF-8).

        Raises:
            ValueError: the stream is closed.
        """
        if self.closed:
            raise ValueError("write to a closed stream")
        if isinstance(data, str):
            data = data.encode("utf-8")
        if data:
            context = self.context
            context.worker.send_command(context.respond_to, ("chunk", context.job_id, bytes(data)), flush=True)

    def close(self) -> None:
        """End the body."""
        self._end()

    def __enter__(self) -> Stream:
        return self

    def abort(self) -> None:
        """Give up: tempestd closes the client's connection without ending the body, so the
        client can tell it is incomplete."""
        self._end("abort")

    def _end(self, *how: str) -> None:
        if not self.closed:
            self.closed = True
            context = self.context
            context.worker.send_command(context.respond_to, ("end", context.job_id, *how), flush=True)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class Worker:
    """Takes jobs from one or more queues and calls the handler of each job's action.

    Args:
        queues: a queue name or a list of names (BLPOP serves them in order).
        redis_url: the Redis holding the queues; default: ``TEMPEST_REDIS_URL`` from the
            environment, else ``redis://127.0.0.1:6379/0``.
        answer_password: password for the answer endpoint; default: ``TEMPEST_ANSWER_PASSWORD``.
        prefetch: jobs taken per round trip to Redis when several are waiting (``LPOP key
            count``), their answers sent together. 1 (the default) takes one job at a time; a
            higher value suits fast handlers, but prefetched jobs wait for the ones before them.
        reliable: take jobs into a processing list of this worker (``LMOVE``/``BLMOVE``) and
            keep a heartbeat: if the worker dies holding jobs, tempestd gives them back to
            their queue (at least once delivery; see docs/protocol.md). Costs a few Redis
            commands per batch. With several queues, the ones after the first are polled
            every 0.1 s instead of blocking. Default: on, unless ``TEMPEST_RELIABLE`` is
            0, false or no (then a plain ``BLPOP``: a job is lost if its worker dies).
        heartbeat: seconds without a heartbeat after which a reliable worker counts as dead;
            default: ``TEMPEST_HEARTBEAT`` from the environment, else 15.

    A worker takes the jobs of its queues in priority order: high and normal ones from the
    queues themselves (tempestd pushes a high job to the head), then low ones
    (``tempest:low:{queue}``) when the queues are empty. A url job past its ``deadline`` is
    dropped unrun (counted in ``expired``): nobody waits for its answer any more.
    """

    def __init__(self, queues: str | Iterable[str] = "tempest", redis_url: str | None = None,
                 answer_password: str | None = None, prefetch: int = 1, reliable: bool | None = None,
                 heartbeat: float | None = None) -> None:
        self.queues = [queues] if isinstance(queues, str) else list(queues)
        self.redis_url = redis_url or os.environ.get("TEMPEST_REDIS_URL") or DEFAULT_REDIS_URL
        self.answer_password = answer_password or os.environ.get("TEMPEST_ANSWER_PASSWORD") or None
        self.handlers: dict[str, Handler] = {}
        self.prefetch = max(1, int(prefetch))
        self.stopping = False
        self.processed = 0
        self.expired = 0  # url jobs taken past their deadline, dropped unrun
        self._low = [keys.low(q) for q in self.queues]
        # one BLPOP waits on every queue, unless they are in several slots of a Redis Cluster
        cluster = urllib.parse.urlsplit(self.redis_url).scheme == redisconn.CLUSTER
        self._one_slot = not cluster or len({slots.key_slot(name) for name in self.queues + self._low}) == 1
        self._low_until = 0.0  # monotonic time until which an idle reliable worker waits on the low list
        self._expired_logged = -EXPIRED_LOG_EVERY  # when the last "dropped past its deadline" line was logged
        self._redis: redis.Redis | None = None  # made when first used (self.redis)
        # a BLPOP blocks POLL_TIMEOUT: the socket timeout must be above it, and a timed-out
        # BLPOP must not be re-sent blindly: RawConnection never retries
        self._queue = redisconn.connect(self.redis_url, timeout=POLL_TIMEOUT + 10, connect_timeout=5)
        self._endpoints: dict[str, RawConnection] = {}
        self._publisher: Publisher | None = None
        self._outbox: dict[str, list[resp.Command]] = {}  # respond_to -> [(action, job_id, payload)] not sent yet
        self._outbox_since: float | None = None
        self.reliable = reliable if reliable is not None else reliable_from_environment()
        if cluster and self.reliable and (braced := [q for q in self.queues if not slots.queue_fits_cluster(q)]):
            raise ValueError(f"queue {braced[0]!r} cannot be served reliably on a Redis Cluster: its name has a "
                             "{ or }, which puts its processing list in another slot than the queue "
                             "(docs/protocol.md, section 7); rename it, or serve it with reliable=False")
        self.heartbeat = float(heartbeat) if heartbeat is not None else heartbeat_from_environment()
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._registered = False
        self._holding: str | None = None  # reliable: the queue whose processing list holds the batch in hand
        self._done = 0  # jobs of the batch in hand that are over (the first ones of its processing list)
        self._cut: bytes | str | None = None  # the job whose handler stopped the worker

    @property
    def redis(self) -> redis.Redis:
        """A redis-py client of the worker's Redis, for the handlers (sessions, publish, their
        own commands): no automatic retries, which could repeat a write. Made when first used,
        so that a worker whose handlers never use it does not load redis-py (0.2 s of CPU)."""
        if self._redis is None:
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            self._redis = redisconn.client(self.redis_url, socket_timeout=10, socket_connect_timeout=5,
                                           retry=Retry(NoBackoff(), 0))
        return self._redis

    @redis.setter
    def redis(self, client: redis.Redis) -> None:
        self._redis = client

    def on(self, action: str) -> Callable[[H], H]:
        """Decorator registering ``handler(context, *args)`` for ``action``.

        The handler's return value, unless None, is sent as the answer.

        Args:
            action: the jobs' action (``url`` for HTTP requests, ``ws`` for WebSocket messages).

        Returns:
            The decorator, which returns the handler unchanged.
        """

        def register(handler: H) -> H:
            self.handlers[action] = handler
            return handler

        return register

    def run(self, install_signals: bool = True) -> None:
        """Take and run jobs until ``stop()`` or SIGTERM/SIGINT; the job in hand is finished.

        Args:
            install_signals: handle SIGTERM and SIGINT (only the main thread can).
        """
        if install_signals:
            signal.signal(signal.SIGTERM, self._handle_stop)
            signal.signal(signal.SIGINT, self._handle_stop)
        log.info("worker on %s (%s): %s", ",".join(self.queues), redacted(self.redis_url), ", ".join(self.handlers))
        beating = threading.Event()
        heart = threading.Thread(target=self._beat, args=(beating,), name="heartbeat", daemon=True)
        if self.reliable:
            heart.start()
        try:
            self._loop()
        finally:
            beating.set()
            if self.reliable:
                heart.join(10)  # no beat (which registers) after the unregistering
                self._leave_batch()
                self._unregister()
        log.info("worker stopped after %d jobs%s", self.processed,
                 f" ({self.expired} dropped past their deadline)" if self.expired else "")

    def _loop(self) -> None:
        delay = 0.1
        busy = False
        while not self.stopping:
            try:
                if self.reliable and not self._registered:
                    self._register()
                batch = self._take_reliable() if self.reliable else self._take(busy)
                delay = 0.1
            except (ConnectionFailed, hiredis.ReplyError) as exc:
                if isinstance(exc, hiredis.ReplyError) and not str(exc).startswith(PASSING_ERRORS):
                    # e.g. LPOP with a count on a Redis before 6.2
                    log.error("Redis refused to give jobs: %s; retrying in %.1fs", exc, RECONNECT_MAX)
                    self._sleep(RECONNECT_MAX)
                    continue
                log.warning("Redis unreachable (%s); retrying in %.1fs", exc, delay)
                self._sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
                continue
            busy = bool(batch)
            self._done, self._cut = 0, None
            for raw in batch:
                self.process(raw)  # SystemExit and the like leave the loop here (self._cut says which job)
                self._done += 1
                if self._outbox_since is not None and time.monotonic() - self._outbox_since > FLUSH_AFTER:
                    self.flush()
            self.flush()
            if self._holding is not None:
                self._release(self._holding)

    # reliable delivery

    def _register(self) -> None:
        self._queue.execute(reliable.beat(self.worker_id, self.queues, self.heartbeat))
        self._registered = True

    def _beat(self, stopped: threading.Event) -> None:
        """The heartbeat thread: its own connection, so that a long handler does not stop it."""
        connection = redisconn.connect(self.redis_url, timeout=5, connect_timeout=5)
        while not stopped.wait(self.heartbeat / 3):
            if not self._registered:
                continue
            try:
                connection.execute(reliable.beat(self.worker_id, self.queues, self.heartbeat))
            except ConnectionFailed as exc:
                log.debug("heartbeat failed: %s", exc)
        connection.close()

    def _take_reliable(self) -> list[bytes]:
        """Like _take, moving each job into this worker's processing list of its queue: the
        queues' jobs first, then their low ones, then a blocking wait on the first queue."""
        queue = self.queues[0]
        if len(self.queues) == 1:
            found = self._command(*reliable.take_then_low(queue, self.worker_id, self.prefetch))
            if len(found) > 1:
                if found[0]:  # low jobs: the queue is quiet, so wait on the low list for a while
                    self._low_until = time.monotonic() + LOW_WAKE
                self._holding = queue
                return found[1:]
        else:
            for take in (reliable.take, reliable.take_low):
                for queue in self.queues:
                    jobs = self._command(*take(queue, self.worker_id, self.prefetch))
                    if jobs:
                        self._holding = queue
                        return jobs
            queue = self.queues[0]
        # block on the queue; just after low jobs, on its low list in short turns (the queue is
        # looked at between them), so that a stream of low jobs is not served a second apart
        low = len(self.queues) == 1 and time.monotonic() < self._low_until
        timeout = POLL_TIMEOUT if len(self.queues) == 1 and not low else SHORT_POLL
        job = self._command(*reliable.take_blocking(queue, self.worker_id, timeout, low))
        if job is None:
            return []
        if low:
            self._low_until = time.monotonic() + LOW_WAKE
            self._holding = queue
            return [job]
        jobs = [job] + ((self._command(*reliable.take(queue, self.worker_id, self.prefetch - 1)) or [])
                        if self.prefetch > 1 else [])
        self._holding = queue
        return jobs

    def _release(self, queue: str) -> None:
        """The batch taken from ``queue`` is answered: its processing list is emptied."""
        self._holding = None
        try:
            self._queue.execute([reliable.release(queue, self.worker_id)])
        except ConnectionFailed as exc:
            log.warning("cannot release the finished jobs of %s (%s): they may be delivered again", queue, exc)

    def _leave_batch(self) -> None:
        """``run`` left in the middle of a batch (SystemExit in a handler, say): what was
        answered is sent and dropped from the processing list, and the job cut short follows
        the redelivery rule (docs/queues.md): one that is not run twice (a POST) is answered 502
        and dropped, another stays to be given back with the jobs that never started, by the
        clean stop that follows."""
        if self._holding is None:
            return
        queue, self._holding = self._holding, None
        processing = keys.processing(queue, self.worker_id)
        try:
            self.flush()
            if self._done:
                self._queue.execute([["LTRIM", processing, self._done, -1]])
            cut, self._cut = self._cut, None
            if cut is not None and not _redelivered(cut) and self._command("LREM", processing, 1, cut) == 1:
                _, _, respond_to, job_id = jobs.decode_job(cut)
                self.send_answer(respond_to, jobs.HTTP_ACTION, job_id, [502, {"Content-Type": "text/plain"}, CUT_BODY])
                self.flush()
        except ConnectionFailed as exc:
            log.warning("cannot drop the answered jobs of %s (%s): they may be delivered again", queue, exc)

    def _unregister(self) -> None:
        """A clean stop: jobs still held (none, normally) go back, the worker is forgotten."""
        try:
            self._queue.execute(reliable.unregister(self.worker_id, self.queues))
        except ConnectionFailed as exc:
            log.warning("cannot unregister from Redis (%s): tempestd will give back what is left", exc)

    def _take(self, busy: bool) -> list[bytes]:
        """The next jobs: when the last round found work, first take what is waiting without
        blocking (up to ``prefetch``), else block on BLPOP; with prefetch, top it up."""
        if busy and self.prefetch > 1 or not self._one_slot:
            for queue in self.queues + self._low:
                jobs = self._command("LPOP", queue, self.prefetch)
                if jobs:
                    return jobs
        if self._one_slot:
            item = self._command("BLPOP", *self.queues, *self._low, POLL_TIMEOUT)
        else:  # on a cluster, queues in several slots: one BLPOP cannot wait on them all (CROSSSLOT)
            item = self._command("BLPOP", self.queues[0], SHORT_POLL)
        if item is None:
            return []
        if self.prefetch > 1:
            return [item[1]] + (self._command("LPOP", item[0], self.prefetch - 1) or [])
        return [item[1]]

    def _command(self, *command: resp.Arg) -> Any:
        [reply] = self._queue.execute([command])
        if isinstance(reply, hiredis.ReplyError):
            raise reply
        return reply

    def push(self, queue: str, job: bytes, priority: str = "normal") -> None:
        """Push an encoded job to ``queue`` (never retried: a retried push may push twice):
        RPUSH, LPUSH for a high job, RPUSH to the low list for a low one."""
        if priority not in keys.PRIORITIES:
            raise ValueError(f"not a priority (high, normal, low): {priority!r}")
        self._command("LPUSH" if priority == "high" else "RPUSH", keys.priority_list(queue, priority), job)

    def gather(self, respond_to: str, parts: list[tuple[str, str, list[Any]]], timeout: float) -> list[Any]:
        """The fan-out of ``Context.gather`` (see docs/protocol.md, "Fan-out and gather")."""
        gather_id = secrets.token_urlsafe(16)
        key = keys.gather(gather_id)
        commands: list[resp.Command] = [["XADD", key, "*", "part", "-1"], ["EXPIRE", key, GATHER_TTL]]
        for index, (queue, action, args) in enumerate(parts):
            commands.append(["RPUSH", queue, jobs.encode_job(action, list(args), respond_to, f"gather:{gather_id}:{index}")])
        results: list[Any] = [None] * len(parts)
        missing = set(range(len(parts)))
        try:
            self._execute(commands)
            deadline, last = time.monotonic() + timeout, b"0-0"
            while missing and (left := deadline - time.monotonic()) > 0:
                block = max(1, int(min(left, POLL_TIMEOUT) * 1000))
                for last, fields in self._stream_entries(self._command("XREAD", "BLOCK", block, "STREAMS", key, last)):
                    self._gathered(fields, results, missing)
        finally:
            self._queue.execute([["DEL", key]])
        if missing:
            log.info("gather %s: %d of %d parts missing after %ss", gather_id, len(missing), len(parts), timeout)
        return results

    @staticmethod
    def _stream_entries(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """XREAD's reply for one stream as (id, fields) pairs (none when it timed out)."""
        if not reply:
            return []
        return [(entry_id, dict(zip(flat[::2], flat[1::2]))) for entry_id, flat in reply[0][1]]

    @staticmethod
    def _gathered(fields: dict[bytes, bytes], results: list[Any], missing: set[int]) -> None:
        """Record the answer of one part (the entry that made the stream, part -1, is skipped)."""
        part = fields.get(b"part", b"")
        if not part.isdigit() or int(part) not in missing:
            return
        try:
            results[int(part)] = jobs.loads(fields.get(b"answer", b""))
        except (ValueError, RecursionError):
            log.warning("gather: part %s answered with something that is not JSON", part.decode())
        missing.discard(int(part))

    def _execute(self, commands: list[resp.Command]) -> None:
        for reply in self._queue.execute(commands):
            if isinstance(reply, hiredis.ReplyError):
                raise reply

    def stop(self) -> None:
        """Ask ``run()`` to return once the job in hand is finished (from a handler, or
        another thread)."""
        self.stopping = True

    def _handle_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < end:
            time.sleep(min(0.1, seconds))

    def process(self, raw: bytes | str) -> None:
        """Run the handler of one raw job (the JSON envelope); a malformed job is logged and
        dropped, a handler's exception logged and answered 500."""
        try:
            action, args, respond_to, job_id = jobs.decode_job(raw)
        except ValueError as exc:
            log.error("dropped malformed job %.200r: %s", raw, exc)
            return
        # a url job's env, or an authorize job's request (its session and deadline are read alike)
        env = args[0] if action in ENV_ACTIONS and args and isinstance(args[0], dict) else None
        if env is not None and _past(env.get("deadline")):
            self.expired += 1
            if time.monotonic() >= self._expired_logged + EXPIRED_LOG_EVERY:  # a line now and then, not per job
                self._expired_logged = time.monotonic()
                log.info("dropped job %s, taken past its deadline (nobody waits for it): %d so far (if the front "
                         "still waited, this host's clock runs ahead of the front's)", job_id, self.expired)
            return
        self.processed += 1
        handler = self.handlers.get(action)
        context = Context(self, action, respond_to, job_id, env)
        if handler is None:
            log.error("no handler for action %r (job %s)", action, job_id)
            self._answer_error(context, 501, "Not Implemented")
            return
        try:
            result = handler(context, *args)
        except Exception:
            log.exception("handler of %r failed on job %s", action, job_id)
            if context.open_stream is not None:
                context.open_stream.abort()  # its head is gone: the client's body is cut
            self._answer_error(context, 500, "Internal Server Error")
            return
        except BaseException:  # SystemExit, KeyboardInterrupt: the worker stops (see _leave_batch)
            log.error("handler of %r stopped the worker on job %s", action, job_id)
            if context.open_stream is not None:
                context.open_stream.abort()
            self._cut = raw
            raise
        if result is not None:
            context.answer(result)

    def _answer_error(self, context: Context, status: int, reason: str) -> None:
        """An HTTP error answer for a job nobody answered (a url job, one forwarded from it, a
        gathered part), so that no client waits for its timeout; not for ws jobs. Under the
        job's action when this worker declared it (it has a handler), else under ``url``."""
        if context.action == "ws" or context.answered:
            return
        if context.action not in self.handlers:
            context.action = jobs.HTTP_ACTION
        context.answer([status, {"Content-Type": "text/plain"}, f"{status} {reason}\n"])

    def send_answer(self, respond_to: str | None, action: str, job_id: Any, data: object) -> bool:
        """Queue an answer for ``respond_to``; sent by ``flush`` (at once without prefetch).

        Returns:
            False without ``respond_to``, else True.
        """
        if not respond_to:
            return False
        return self.send_command(respond_to, (action, job_id, jobs.dumps(data)), flush=self.prefetch == 1)

    def send_command(self, respond_to: str | None, command: resp.Command, flush: bool = False) -> bool:
        """Queue one command for the answer endpoint ``respond_to``; False without one."""
        if not respond_to:
            return False
        if not isinstance(command[1], (str, bytes)):
            command = (command[0], str(command[1]), *command[2:])  # a job pushed by hand may carry a number
        self._outbox.setdefault(respond_to, []).append(command)
        if self._outbox_since is None:
            self._outbox_since = time.monotonic()
        if flush:
            self.flush()
        return True

    def flush(self) -> None:
        """Send every queued answer: one pipelined round trip per answer endpoint."""
        outbox, self._outbox, self._outbox_since = self._outbox, {}, None
        for respond_to, answers in outbox.items():
            try:
                replies = self._endpoint(respond_to).execute(answers)
            except (ConnectionFailed, ValueError) as exc:
                log.warning("cannot send %d answers to %s: %s", len(answers), respond_to, exc)
                self._endpoints.pop(respond_to, None)
                continue
            refused = [reply for reply in replies if isinstance(reply, hiredis.ReplyError)]
            if refused:  # the endpoint never refuses an answer: a password problem, say
                log.warning("%s refused %d of %d answers: %s", respond_to, len(refused), len(answers), refused[0])

    def _endpoint(self, respond_to: str) -> RawConnection:
        connection = self._endpoints.get(respond_to)
        if connection is None:
            declared = sorted(a for a in self.handlers if a not in ANSWER_ACTIONS)
            greeting = [["ACTIONS", *declared]] if declared else []  # answers of other actions are answers
            connection = RawConnection(answer_endpoint(respond_to, self.answer_password), timeout=10,
                                       connect_timeout=5, greeting=greeting)
            self._endpoints[respond_to] = connection
        return connection

    def publish(self, channel: str, data: object, event: str | None = None) -> str | int:
        """Publish ``data`` to the subscribers of ``channel`` (SSE and WebSocket clients).

        Args:
            channel: the channel name.
            data: any JSON value; a string is sent as is.
            event: an SSE event name (no CR or LF), or None for a plain ``data:`` event.

        Returns:
            The stream id on a durable channel, else the number of Redis subscribers.

        Raises:
            tempest.events.BadMessage: ``event`` carries CR or LF.
            redis.RedisError: Redis failed.
        """
        if self._publisher is None:
            self._publisher = Publisher(self.redis)
        return self._publisher.publish(channel, data, event)


def heartbeat_from_environment() -> float:
    """``TEMPEST_HEARTBEAT`` (seconds, above 0), else 15.

    Raises:
        ValueError: it is set to something else.
    """
    raw = os.environ.get("TEMPEST_HEARTBEAT", "").strip()
    if not raw:
        return DEFAULT_HEARTBEAT
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value < 86400:
        raise ValueError(f"TEMPEST_HEARTBEAT: not a number of seconds above 0: {raw[:40]!r}")
    return value


def _redelivered(raw: bytes | str) -> bool:
    """Whether a job cut short may go to another worker: not a url job whose env says
    ``"redeliver": false`` (a POST...)."""
    try:
        action, args, _, _ = jobs.decode_job(raw)
    except ValueError:
        return True
    env = args[0] if action == jobs.HTTP_ACTION and args and isinstance(args[0], dict) else {}
    return env.get("redeliver") is not False


def reliable_from_environment() -> bool:
    """Reliable delivery unless ``TEMPEST_RELIABLE`` is 0, false, no or off."""
    return os.environ.get("TEMPEST_RELIABLE", "").strip().lower() not in ("0", "false", "no", "off")


def _past(deadline: object) -> bool:
    """A job's ``deadline`` (Unix seconds) has passed; a missing or odd one never has."""
    return type(deadline) in (int, float) and time.time() > deadline  # type: ignore[operator]


def _with_header(answer: object, name: str, value: str) -> object:
    """A url answer ``[status, headers, body]`` with one more header (headers as an object or
    a list of pairs, or missing)."""
    if not isinstance(answer, (list, tuple)) or not answer:
        return answer  # not an answer the front accepts anyway: its 502 says why
    answer = list(answer)
    headers = answer[1] if len(answer) > 1 else None
    if isinstance(headers, dict):
        headers = {**headers, name: value}
    elif isinstance(headers, list):
        headers = [*headers, [name, value]]
    elif headers is None:
        headers = {name: value}
    else:
        return answer
    if len(answer) > 1:
        answer[1] = headers
    else:
        answer.append(headers)
    return answer
