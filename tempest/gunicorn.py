"""The gunicorn worker class: ``gunicorn -k tempest.gunicorn.Worker``. gunicorn's arbiter keeps
doing what people run it for (``--preload``, ``--timeout``, ``--max-requests``, graceful HUP and
TERM, ``-w``, its config file and hooks), while each of its worker processes takes its requests
from a tempest queue with the worker library and runs them through ``tempest.wsgi``, instead of
accepting HTTP connections::

    gunicorn -k tempest.gunicorn.Worker -w 4 -b 127.0.0.1:0 --env TEMPEST_QUEUE=tempest myproject.wsgi

Settings come from the environment, which gunicorn's ``--env KEY=VALUE`` and ``raw_env`` set
too (``SETTINGS``); docs/gunicorn.md has the whole story. gunicorn's notion of a silent worker
is kept: the worker notifies the arbiter every second while it waits for jobs and never while it
runs one, so ``--timeout N`` kills a worker stuck in one request for N seconds. The job of a
worker cut short (by that timeout, a quick shutdown, or an exception that is not an Exception)
is given back at once, as tempestd gives back a dead worker's jobs: a GET to its queue for
another worker, a POST answered (never run twice); and the arbiter gives back what a worker
that it reaps still held (one killed with SIGKILL), without waiting for its heartbeat to expire.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from types import FrameType
from typing import Any

import hiredis
from gunicorn.arbiter import Arbiter  # type: ignore[import-untyped]
from gunicorn.workers import base  # type: ignore[import-untyped]

from tempest import converters, jobs, keys, redisconn, reliable
from tempest import worker as library
from tempest.redisconn import ConnectionFailed, RawConnection
from tempest.redisurl import redacted
from tempest.wsgi import handler

log = logging.getLogger(__name__)

NOTIFY_EVERY = 1.0  # seconds between two notifications of an idle worker (the library's BLMOVE blocks 1 s)
# the environment variables read, with their defaults (an empty value is the default)
SETTINGS = {
    "TEMPEST_QUEUE": "tempest",  # a queue, or several separated by commas (served in that order)
    "TEMPEST_REDIS_URL": library.DEFAULT_REDIS_URL,
    "TEMPEST_PREFETCH": "1",  # jobs taken per round trip
    "TEMPEST_RELIABLE": "yes",  # reliable delivery; 0, false, no or off: plain BLPOP (any other value: reliable)
    "TEMPEST_HEARTBEAT": "15",  # seconds without a heartbeat after which tempestd counts a worker dead
    "TEMPEST_MAX_REDELIVERIES": "3",  # as tempestd's [front] max_redeliveries: a job cut short more often is a dead letter
}
# the arbiter's signals (reload, re-exec, more or fewer workers): a worker ignores them, where
# gunicorn's would die (HUP, USR2) or be suspended (TTIN, TTOU) when they reach the whole group
ARBITER_SIGNALS = ("SIGHUP", "SIGUSR2", "SIGTTIN", "SIGTTOU")
DIED = "502 Bad Gateway: the worker died during the request, which is not run twice\n"
TIMED_OUT = "504 Gateway Timeout: the worker ran past gunicorn's --timeout; the request is not run twice\n"


@dataclass(frozen=True)
class Settings:
    queues: list[str]
    redis_url: str
    prefetch: int
    reliable: bool
    heartbeat: float
    max_redeliveries: int


def settings() -> Settings:
    """The worker's settings from the environment (``SETTINGS``: names and defaults), which
    holds gunicorn's ``--env`` and ``raw_env`` once the arbiter and each worker start.

    Raises:
        ValueError: a bad value, in a message that names its variable.
    """
    def read(name: str, convert: Any) -> Any:
        raw = os.environ.get(name, "").strip() or SETTINGS[name]
        try:
            return convert(raw)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None

    queues = read("TEMPEST_QUEUE", lambda raw: [converters.to_queue(q) for q in raw.split(",")])
    return Settings(queues, read("TEMPEST_REDIS_URL", converters.to_redis_url),
                    read("TEMPEST_PREFETCH", converters.to_positive_int),
                    library.reliable_from_environment(),  # the library's reading: what every client reads
                    read("TEMPEST_HEARTBEAT", converters.to_seconds),
                    read("TEMPEST_MAX_REDELIVERIES", converters.to_count))


class Worker(base.Worker):
    """A gunicorn worker that serves the WSGI application from a tempest queue.

    In the arbiter, ``check_config`` validates the settings before any worker starts, and each
    worker it reaps has what it still held given back (``reaped``). In the worker process,
    ``run`` serves jobs until gunicorn asks it to stop: SIGTERM (a graceful stop, a HUP reload,
    ``--max-requests`` reached) finishes the job in hand, SIGQUIT and SIGINT (a quick shutdown)
    and SIGABRT (``--timeout``) cut it short.
    """

    alive: bool  # gunicorn's: false once the worker is asked to stop

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # in the arbiter, before the fork
        self.jobs: _Jobs | None = None
        self.busy = False  # a job is running: no notification, so that --timeout can see it stuck
        self.timed_out = False  # SIGABRT came: the arbiter's --timeout
        _give_back_when_reaped(self.cfg)

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        """In the arbiter, once, before the first worker: bad settings stop gunicorn with one
        line (``Error: tempest.gunicorn: TEMPEST_PREFETCH: ...``, exit status 1)."""
        try:
            found = settings()
        except ValueError as exc:
            raise RuntimeError(f"tempest.gunicorn: {exc}") from None
        log.info("tempest: workers take jobs from %s on %s (prefetch %d, %s delivery); the bind address is not served",
                 ",".join(found.queues), redacted(found.redis_url), found.prefetch,
                 "reliable" if found.reliable else "plain")
        if cfg.threads > 1:
            log.warning("tempest: --threads %d ignored: a worker process runs one job at a time (more: -w)", cfg.threads)

    def init_process(self) -> None:
        _log_to(self.log)
        super().init_process()

    def load_wsgi(self) -> None:
        try:
            super().load_wsgi()
        except ImportError as exc:
            app_uri = getattr(self.app, "app_uri", None) or ""
            parts = app_uri.partition(":")[0].split(".")
            if exc.name not in {".".join(parts[:n]) for n in range(1, len(parts) + 1)}:
                raise  # the application failed inside its own imports: its traceback says where
            self.log.error("tempest.gunicorn: cannot load the application %s: %s", app_uri, exc)
            sys.exit(Arbiter.APP_LOAD_ERROR)

    def run(self) -> None:
        for listener in self.sockets:
            listener.close()  # gunicorn insists on binding: nothing is accepted here
        signal.set_wakeup_fd(-1)  # nobody reads gunicorn's wake-up pipe here
        try:
            found = settings()
        except ValueError as exc:  # changed since check_config (a HUP read a new --env)
            self.log.error("tempest.gunicorn: %s", exc)
            sys.exit(Arbiter.WORKER_BOOT_ERROR)  # the arbiter stops: "Worker failed to boot."
        self.jobs = _Jobs(self, found)
        self.jobs.on("url")(handler(self.wsgi))
        stopped = threading.Event()
        watcher = threading.Thread(target=self._watch, args=(stopped,), name="notify", daemon=True)
        watcher.start()
        try:
            if self.alive:  # not already stopped while the application loaded
                self.jobs.run(install_signals=False)
        finally:
            stopped.set()

    def _watch(self, stopped: threading.Event) -> None:
        """Tell the arbiter this worker lives while it waits for jobs; pass gunicorn's stop
        requests (``alive`` false: --reload, the arbiter gone) on to the library."""
        # self.timeout: half the arbiter's --timeout (0: none), as gunicorn hands it to a worker
        interval = min(NOTIFY_EVERY, self.timeout) if self.timeout else NOTIFY_EVERY
        while not stopped.wait(interval):
            if self.alive and self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                self.alive = False
            if not self.alive and self.jobs is not None:
                self.jobs.stop()
            if not self.busy:
                self.notify()

    def init_signals(self) -> None:
        super().init_signals()
        for name in ARBITER_SIGNALS:  # sent to the process group (tempest signal HUP NAME): not ours
            signal.signal(getattr(signal, name), signal.SIG_IGN)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self.jobs is not None:
            self.jobs.stop()  # the job in hand is finished first

    def handle_quit(self, sig: int, frame: FrameType | None) -> None:
        if self.busy or self.jobs is None:
            super().handle_quit(sig, frame)  # SystemExit: the job in hand is cut short
            return
        self.alive = False
        self.cfg.worker_int(self)
        self.jobs.stop()  # idle: out of the loop within a second

    def handle_abort(self, sig: int, frame: FrameType | None) -> None:
        self.timed_out = True
        super().handle_abort(sig, frame)  # SystemExit(1) in the stuck job

    def cut_answer(self) -> str:
        return TIMED_OUT if self.timed_out else DIED

    def reaped(self) -> None:
        """In the arbiter, once this worker process is reaped: what its reliable workers still
        held (it was killed with SIGKILL: --timeout's second signal, the OOM killer) is given
        back or answered now, without waiting for the heartbeat to expire; a worker that
        stopped cleanly left nothing."""
        try:
            found = settings()
        except ValueError:
            return
        if not found.reliable:
            return
        start = f"{socket.gethostname()}:{self.pid}:"
        connection = redisconn.connect(found.redis_url, timeout=2, connect_timeout=1)
        try:
            [entries] = connection.execute([["SMEMBERS", keys.WORKERS]])
            if isinstance(entries, hiredis.ReplyError):
                return
            answerer = library.Worker([], redis_url=found.redis_url)  # sends the 502s, nothing else
            for entry in entries or ():
                parsed = reliable.parse_entry(entry.decode("utf-8", "replace"))
                if parsed is None or not parsed[1].startswith(start):
                    continue
                queue, worker_id = parsed
                held = give_back(connection, answerer, queue, worker_id, found.max_redeliveries, DIED)
                connection.execute([["SREM", keys.WORKERS, entry], ["DEL", keys.alive(worker_id)]])
                if any(held):
                    self.log.warning("tempest: worker (pid:%s) died holding jobs of queue %s: %d given back, "
                                     "%d to %s, %d answered 502 (not run twice)", self.pid, queue, *held[:2],
                                     keys.dead(queue), held[2])
        except ConnectionFailed as exc:
            self.log.warning("tempest: cannot give back the jobs of worker (pid:%s) now: %s (tempestd will, once "
                             "its heartbeat expires)", self.pid, exc)
        finally:
            connection.close()


class _Jobs(library.Worker):
    """The library's worker inside one gunicorn worker process: each job is shown to gunicorn
    (no notification while it runs, ``max_requests`` counted), and one cut short is given back."""

    def __init__(self, host: Worker, found: Settings) -> None:
        super().__init__(found.queues, redis_url=found.redis_url, prefetch=found.prefetch,
                         reliable=found.reliable, heartbeat=found.heartbeat)
        self.host = host
        self.max_redeliveries = found.max_redeliveries

    def process(self, raw: bytes | str) -> None:
        host = self.host
        host.notify()
        host.busy = True
        try:
            super().process(raw)
        except BaseException:
            self.cut_short(raw, host.cut_answer())
            raise
        finally:
            host.busy = False
        host.notify()
        if self.processed >= host.max_requests and not self.stopping:
            host.log.info("Autorestarting worker after current request.")
            host.alive = False
            self.stop()

    def cut_short(self, raw: bytes | str, answer: str) -> None:
        """The job ``raw`` will not finish. Reliable: what this worker holds goes back as if it
        had died (a job that may run twice to its queue, counted; one that may not answered
        ``answer``); plain: ``raw`` is answered ``answer``, the rest of its batch is lost."""
        if not self.reliable:
            answer_job(self, raw, answer)
            return
        connection = redisconn.connect(self.redis_url, timeout=5, connect_timeout=2)
        try:
            for queue in self.queues:
                moved, dead, refused = give_back(connection, self, queue, self.worker_id, self.max_redeliveries, answer)
                if moved or dead or refused:
                    log.warning("cut short holding jobs of queue %s: %d given back, %d to %s, %d answered %s "
                                "(not run twice)", queue, moved, dead, keys.dead(queue), refused, answer[:3])
        except ConnectionFailed as exc:
            log.warning("cannot give back the jobs in hand (%s): tempestd will, once the heartbeat expires", exc)
        finally:
            connection.close()


def answer_job(answerer: library.Worker, raw: bytes | str, answer: str) -> None:
    """Answer the url job ``raw`` with the error ``answer`` (its first three characters are the
    status) through ``answerer``'s connections to the answer endpoints."""
    try:
        action, _, respond_to, job_id = jobs.decode_job(raw)
    except ValueError:
        return
    if action == jobs.HTTP_ACTION and respond_to:
        answerer.send_answer(respond_to, action, job_id,
                             [int(answer[:3]), {"Content-Type": "text/plain; charset=utf-8"}, answer])
        answerer.flush()


def give_back(connection: RawConnection, answerer: library.Worker, queue: str, worker_id: str,
              max_redeliveries: int, answer: str) -> tuple[int, int, int]:
    """Give back the jobs of ``worker_id`` on ``queue`` as tempestd does for a dead worker (the
    protocol's GIVE_BACK script), and answer ``answer`` through ``answerer`` to each job that is
    not run twice. Returns (given back, dead-lettered, answered).

    Raises:
        ConnectionFailed: Redis could not be reached.
    """
    [reply] = connection.execute([reliable.give_back(queue, worker_id, max_redeliveries)])
    if isinstance(reply, hiredis.ReplyError):
        log.error("cannot give back the jobs of %s on %s: %s", worker_id, queue, reply)
        return 0, 0, 0
    moved, dead, refused = reply
    for raw in refused:
        answer_job(answerer, raw, answer)
    return moved, dead, len(refused)


def _give_back_when_reaped(cfg: Any) -> None:
    """Have the arbiter call ``Worker.reaped`` after the ``child_exit`` hook (the user's own, if
    any) of every worker it reaps. The configuration is new after each HUP: checked at each
    spawn."""
    hook = cfg.child_exit
    if getattr(hook, "tempest_gives_back", False):
        return

    def child_exit(server: Any, worker: Any) -> None:
        hook(server, worker)
        if isinstance(worker, Worker):
            worker.reaped()

    child_exit.tempest_gives_back = True  # type: ignore[attr-defined]
    cfg.set("child_exit", child_exit)


def _log_to(gunicorn_log: Any) -> None:
    """Send the library's log lines where gunicorn's error log goes, unless a logging
    configuration (``--log-config``, ``logconfig_dict``) already placed them."""
    logger = logging.getLogger("tempest")
    error_log = getattr(gunicorn_log, "error_log", None)
    if error_log is None or logger.handlers or logging.getLogger().handlers:
        return
    for log_handler in error_log.handlers:
        logger.addHandler(log_handler)
    logger.setLevel(error_log.level)
    logger.propagate = False
