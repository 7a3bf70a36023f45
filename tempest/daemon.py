"""tempestd: wiring the parts from the config, signals, reload and the shutdown order.

Start: pid file, embedded Redis (if any), the Redis client, the answer endpoint, the front,
the workers, the control socket; then READY=1 to systemd and the ``ready`` log line. Signal
handlers only queue the signal's name; the main greenlet takes names from the queue and calls
``handle_<name>``. Stop: stop accepting, let in-flight requests finish (``graceful_timeout``),
close the rest, stop the workers, the control socket and the answer endpoint, and the embedded
Redis last.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import resource
import signal
import socket
import urllib.parse
import sys
import time
from typing import TYPE_CHECKING, Any

import gevent
import gevent.os
import gevent.queue
import gevent.threadpool
import redis
import simplejson as json
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from tempest import config as configuration
from tempest import spool
from tempest import cluster, embedded, fronts, instances, jobs, keys, redisconn, roles, systemd
from tempest.answers import AnswerServer
from tempest.control import ControlServer, socket_path
from tempest.errors import ConfigError, ExitCode, StartupError
from tempest.grants import Access
from tempest.accesslog import AccessLog
from tempest.http.admin import Admin, AdminServer
from tempest.http.forward import Forwarder
from tempest.http.server import Server
from tempest.http.sse import EventStreams
from tempest.http.static import StaticFiles
from tempest.http.websocket import Sockets, WebSockets
from tempest.logfiles import reopen_handlers
from tempest.metrics import Requests
from tempest.pidfile import Pidfile
from tempest.redisurl import redact_text, redacted
from tempest.pusher import Pusher
from tempest.queuestats import QueueStats
from tempest.redeliver import Redeliverer
from tempest.relay import Relay
from tempest.serving import Serving
from tempest.stats import Stats
from tempest.waiting import Registry
from tempest.supervisor import Supervisor

if TYPE_CHECKING:
    from gevent.server import StreamServer

    from tempest.config import Config

log = logging.getLogger(__name__)

DESCRIPTORS_RESERVED = 256  # open files kept besides client connections and answer connections
SIGNALS = {signal.SIGTERM: "term", signal.SIGINT: "int", signal.SIGHUP: "hup", signal.SIGUSR1: "usr1"}
FLUSH_INTERVAL = 1.0  # seconds between two writes of the access log's buffer


def redis_client(url: str, **options: Any) -> redis.Redis:
    """A client that never retries on its own: the caller decides what may be sent twice."""
    return redisconn.client(url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=2,
                            socket_keepalive=True, **options)


class Daemon:
    def __init__(self, config: Config, pidfile: str | None = None, front_index: int | None = None) -> None:
        # front_index: this is front process I of a tempestd with [front] processes > 1 (tempest.fronts)
        self.front_index = front_index
        self.config = config if front_index is None else fronts.for_process(config, front_index)
        self.front_socket: socket.socket | None = None  # the master's, which its front processes inherit
        self._ready_pipe: tuple[int, int] | None = None  # theirs to say they serve (tempest.fronts.tell_ready)
        self._fronts_ready: dict[int, int] = {}  # the pid of each front process that said so, by index
        self.stats = Stats()
        self.pidfile = Pidfile(pidfile) if pidfile else None
        self.supervisor: Supervisor | None = None
        self.embedded: embedded.EmbeddedRedis | None = None
        self.answers: AnswerServer | None = None
        self.front: Server | None = None
        self.control: ControlServer | None = None
        self.relay: Relay | None = None
        self.registry: Registry | None = None  # these are made by _start, in the order the services need them
        self.pusher: Pusher | None = None
        self.client: redis.Redis | None = None
        self.redeliverer: Redeliverer | None = None
        self.admin: AdminServer | None = None
        self.access: Access | None = None  # who may subscribe to private channels
        self.serving = Serving(self.stats)  # which queues have no worker
        self.access_log = AccessLog()
        self.greenlets: list[gevent.Greenlet[..., Any]] = []
        self.instance_id = roles.instance_id()  # this run's, in the instance registry and connection names
        self.started = time.monotonic()
        self.respond_to: str | None = None  # the answer address put into jobs
        self.registration: instances.Registration | None = None
        self._signals: gevent.queue.Queue[str] = gevent.queue.Queue()
        self._stopping = False

    def run(self) -> ExitCode:
        try:
            self._start()
        except BaseException:
            self._stop_services()
            raise
        for signum, name in SIGNALS.items():
            gevent.signal_handler(signum, self._signals.put, name)
        while not self._stopping:
            name = self._signals.get()
            getattr(self, "handle_" + name)()
        self._shutdown()
        return ExitCode.OK

    def handle_term(self) -> None:
        self.request_shutdown("SIGTERM")

    def handle_int(self) -> None:
        self.request_shutdown("SIGINT")

    def handle_hup(self) -> None:
        log.info("SIGHUP: reloading %s", self.config.path)
        self.reload()

    def handle_usr1(self) -> None:
        """Reopen every log file (logrotate's postrotate)."""
        reopened = reopen_handlers()
        self.access_log.reopen()
        if self.supervisor is not None:
            self.supervisor.reopen_logs()
        self._signal_fronts(signal.SIGUSR1)  # their access log
        log.info("SIGUSR1: log files reopened (%d of tempestd's, the access log%s, the workers')",
                 reopened, "" if self.access_log.destination not in ("", "log") else ": none")

    def handle_control(self) -> None:
        """Queued by request_shutdown from the control socket."""

    def request_shutdown(self, why: str) -> None:
        if not self._stopping:
            log.info("%s: shutting down", why)
        self._stopping = True
        self._signals.put("control")  # wake the main greenlet

    def reload(self) -> str | None:
        """Re-read the INI file and apply it; returns None, or why it was refused."""
        systemd.notify("RELOADING=1")
        try:
            new = configuration.load(self.config.path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            systemd.notify("READY=1")
            return str(exc)
        if self.front_index is not None:
            new = fronts.for_process(new, self.front_index)
        for setting in configuration.restart_only():
            section, key = setting.section, setting.key
            if getattr(getattr(new, section), key) != getattr(getattr(self.config, section), key):
                log.warning("reload: [%s] %s changed; it takes effect when tempestd restarts", section, key)
        assert self.client is not None and self.supervisor is not None  # made by _start
        if new.has_front != self.config.has_front:
            log.warning("reload: the [front] section was %s; it takes effect when tempestd restarts",
                        "added" if new.has_front else "removed")
        if self.front is None:  # a worker host, or the master of front processes: its workers change
            self._reload_programs(new)
            self._signal_fronts(signal.SIGHUP)  # each reads the file again itself
            return None
        assert self.relay is not None and self.pusher is not None and self.registry is not None  # made by _start
        try:
            self.access_log.apply(new.front.access_log, new.front.access_log_format)
        except OSError as exc:
            log.error("reload: cannot open the access log %s: %s; the old one stays", new.front.access_log, exc.strerror)
        self.front.apply(new)
        self.serving.forget(set(_queues(new)))
        self.registry.apply(new)
        self.relay.apply(new)
        self.pusher.apply(new)
        if self.access is not None:
            self.access.apply(new)
        self._publish_durable(self.client, new)
        self._reload_programs(new)
        return None

    def _reload_programs(self, new: Config) -> None:
        assert self.supervisor is not None  # made by _start
        added, removed, changed = self.supervisor.reload(new.programs)  # the embedded Redis is reserved
        self.config = new
        if self.front_index is None:
            log.info("reloaded: %d workers added, %d removed, %d changed", len(added), len(removed), len(changed))
        else:
            log.info("front process %d reloaded", self.front_index)
        systemd.notify("READY=1")

    def _signal_fronts(self, sig: int) -> None:
        """Pass ``sig`` on to the front processes (none unless [front] processes > 1)."""
        if self.supervisor is not None and fronts.NAME in self.supervisor.programs:
            for child in self.supervisor.children(fronts.NAME):
                child.signal(sig)

    def _start(self) -> None:
        config = self.config
        if self.pidfile:
            self.pidfile.create()
        files = _raise_open_file_limit()
        if self.front_index is not None:
            os.environ.pop("NOTIFY_SOCKET", None)  # the master speaks to systemd
        several = config.has_front and config.front.processes > 1 and self.front_index is None
        self.supervisor = Supervisor(env={}, reserved=(embedded.NAME, fronts.NAME))
        if config.redis.embedded and self.front_index is None:
            self.embedded = embedded.EmbeddedRedis(config.redis.url, config.redis.data_dir,
                                                   config.redis.server_bin)
            self.embedded.start(self.supervisor)
        name = _name(self.instance_id, config)  # of every connection to Redis (CLIENT LIST)
        try:
            client = redis_client(config.redis.url, socket_timeout=10, redis_connect_func=instances.naming(name))
            client.ping()
        except redis.RedisError as exc:
            raise StartupError(f"Redis at {redacted(config.redis.url)} does not answer: "
                               f"{redact_text(str(exc), config.redis.url)}") from None
        except RedisClusterException as exc:  # redis+cluster://: the seeds are not a healthy cluster
            raise cluster.not_a_cluster(config.redis.url, str(exc)) from None
        cluster.refuse_cluster(client, config.redis.url)  # not "ready", then MOVED errors
        self.client = client
        respond_to = None
        if several:
            self._start_fronts(config, name)
        elif config.has_front:
            respond_to = self._start_front(config, client, files, name)
        if several or not config.has_front:
            self._reap_on_exit(config, name)
        self.supervisor.env = self._worker_env(respond_to)
        if self.front_socket is not None and self._ready_pipe is not None:
            self.supervisor.add(fronts.program(config, self.front_socket.fileno(), self._ready_pipe[1]))
        for spec in config.programs:
            self.supervisor.add(spec)
        self.supervisor.wait_spawned()
        if several:
            self._wait_fronts()
        if self.front_index is None:  # the master's: front processes have none
            self.control = ControlServer(socket_path(config), self)
            self.control.start()
        self.registration = instances.Registration(
            config.redis.url, lambda: instances.describe(self, self.instance_id, self.started, self._stopping),
            self.instance_id)
        instances.name_raw([self.registration.connection], name)
        self.greenlets.append(gevent.spawn(self.registration.run))
        gc.freeze()  # what start-up made lives forever: keep it out of every collection
        systemd.notify("READY=1\nSTATUS=serving")
        role = roles.role_name(config.has_front, len(config.programs))
        if self.front_index is not None:
            assert self.front is not None and self.answers is not None  # made by _start_front
            log.info("front process %d ready: front on http://%s:%d/ (shared), answers on %s (respond_to %s)%s, id %s",
                     self.front_index, *self.front.address[:2], "%s:%d" % self.answers.address[:2], respond_to,
                     ", admin on http://%s:%d/" % self.admin.server.address[:2] if self.admin is not None else "",
                     self.instance_id)
            fronts.tell_ready(self.front_index)
            return
        assert self.control is not None  # made above (a front process has returned)
        if self.front_socket is not None:
            log.info("tempestd ready: front on http://%s:%d/ in %d processes, control %s%s, id %s role %s",
                     *self.front_socket.getsockname()[:2], config.front.processes, self.control.path,
                     ", admin on http://%s:%d/" % self.admin.server.address[:2] if self.admin is not None else "",
                     self.instance_id, role)
            return
        if self.front is None or self.answers is None:
            log.info("tempestd ready: a worker host (no front), %d programs, control %s, id %s role %s",
                     len(config.programs), self.control.path, self.instance_id, role)
            return
        log.info("tempestd ready: front on http://%s:%d/, answers on %s (respond_to %s), control %s%s, id %s role %s",
                 *self.front.address[:2], "%s:%d" % self.answers.address[:2], respond_to, self.control.path,
                 ", admin on http://%s:%d/" % self.admin.server.address[:2] if self.admin is not None else "",
                 self.instance_id, role)

    def _start_front(self, config: Config, client: redis.Redis, files: int | None, name: str) -> str:
        """The front's parts: the answer endpoint, the relay, the HTTP front, the redeliverer...;
        returns the answer address put into jobs (respond_to)."""
        assert self.supervisor is not None  # made by _start
        if roles.exposed_without_password(config.front.answer_listen, config.front.answer_password):
            log.warning("the answer endpoint listens on %s:%d, beyond loopback, without answer_password: "
                        "anyone who reaches it can answer any job", *config.front.answer_listen)
        try:
            self.access_log.apply(config.front.access_log, config.front.access_log_format)
        except OSError as exc:
            raise StartupError(f"cannot open the access log {config.front.access_log}: {exc.strerror}") from None
        self.registry = registry = Registry(self.stats, max_buffered=config.front.max_stream_buffer)
        self.pusher = Pusher(config.redis.url, self.registry, self.stats, config.front.max_queue_length)
        sockets = Sockets()  # the open WebSockets, for `ws <socket_id> <json>` answers
        self.answers = AnswerServer(config.front.answer_listen, self.registry, self.stats, sockets, self.pusher,
                                    config.front.answer_password, config.front.max_answer,
                                    max_connections=config.front.answer_max_connections,
                                    idle_timeout=config.front.answer_idle_timeout)
        _listen(self.answers.server, config.front.answer_listen, "answer endpoint")
        respond_to = "%s:%d" % (config.front.answer_advertise or self.answers.address[:2])
        self.respond_to = respond_to
        if config.pubsub.sharded:
            cluster.require_sharded(config.redis.url)
        self.relay = Relay(config.redis.url, _pooled_client(config.redis.url, name), self.stats, config.pubsub,
                           self.registry.ledger)
        self.relay.client_name = name  # one bound for what slow clients hold, streams and subscribers
        self._publish_durable(client, config)
        spools = self._spools(config)
        self.access = access = Access(config, _pooled_client(config.redis.url, name), self.pusher, registry, self.stats,
                                      respond_to)
        self.front = Server(config, self.stats,
                            Forwarder(self.registry, self.pusher, self.stats, respond_to, self.serving),
                            StaticFiles(self.stats), EventStreams(self.relay, self.stats, access),
                            WebSockets(self.relay, self.pusher, self.stats, respond_to, sockets, access),
                            room=_room(files, config), requests=Requests(), access_log=self.access_log,
                            spools=spools, sock=self._inherited_socket())
        _listen(self.front.server, config.front.listen, "front")
        self.relay.start()
        self.redeliverer = Redeliverer(config.redis.url, self.stats, config.front.redeliver_interval,
                                       config.front.max_redeliveries, self.serving.workers, respond_to,
                                       lambda job_id, payload: registry.answer(job_id, jobs.HTTP_ACTION, payload),
                                       config.front.answer_password)
        redeliverer = self.redeliverer
        queue_stats = QueueStats(config.redis.url, self.pusher.pushed)  # tempest queues' rates
        instances.name_raw([self.pusher.connection, redeliverer.connection, queue_stats.connection], name)
        self.supervisor.system.on_exit = lambda pid: gevent.spawn(redeliverer.reaped, pid)  # at once, not at expiry
        self.greenlets = [gevent.spawn(self.pusher.run), gevent.spawn(self.registry.run_sweeper),
                          gevent.spawn(self.front.reap), gevent.spawn(self.redeliverer.run),
                          gevent.spawn(self._flush_access_log), gevent.spawn(access.run),
                          gevent.spawn(queue_stats.run)]
        if config.admin.listen is not None:
            self.admin = AdminServer(config, Admin(self))
            _listen(self.admin.server, config.admin.listen, "admin listener")
            self.greenlets.append(gevent.spawn(self.admin.reap))
        return respond_to

    def _inherited_socket(self) -> socket.socket | None:
        """A front process's listening socket, from its master; None in any other tempestd."""
        if self.front_index is None:
            return None
        try:
            return fronts.inherited_socket()
        except (ValueError, OSError) as exc:
            raise StartupError(f"front process {self.front_index}: {exc}") from None

    def _start_fronts(self, config: Config, name: str) -> None:
        """The master of [front] processes > 1: the listening socket they inherit (the spool
        directories emptied of a crash's leftovers before any of them runs), its admin listener."""
        try:
            spool.prepare([config.default_route, *config.routes], config.tempest.name)
        except OSError as exc:
            raise StartupError(f"cannot prepare the spool directory {exc.filename}: {exc.strerror}") from None
        try:
            self.front_socket = fronts.listening_socket(config.front.listen, config.front.backlog)
        except OSError as exc:
            raise _listen_error(exc, config.front.listen, "front") from None
        assert self.supervisor is not None  # made by _start
        self._ready_pipe = os.pipe()
        self.supervisor.system.inherit[fronts.NAME] = (self.front_socket.fileno(), self._ready_pipe[1])
        self.greenlets.append(gevent.spawn(self._read_ready, self._ready_pipe[0]))
        if config.admin.listen is not None:
            self.admin = AdminServer(config, Admin(self))
            _listen(self.admin.server, config.admin.listen, "admin listener")
            self.greenlets.append(gevent.spawn(self.admin.reap))

    def _read_ready(self, fd: int) -> None:
        """The front processes' readiness lines: the index and pid of each one that serves."""
        gevent.os.make_nonblocking(fd)
        buffer = b""
        while True:
            data = gevent.os.nb_read(fd, 4096)
            if not data:
                return
            *lines, buffer = (buffer + data).split(b"\n")
            buffer = buffer[-64:]  # "<index> <pid>" lines: whatever else comes is not kept
            for line in lines:
                index, _, pid = line.partition(b" ")
                if index.isdigit() and pid.isdigit():
                    if int(index) in self._fronts_ready:
                        log.info("front process %d serves again (pid %d)", int(index), int(pid))
                    self._fronts_ready[int(index)] = int(pid)

    def _wait_fronts(self) -> None:
        """Until every front process said it serves; StartupError if one exits first."""
        assert self.supervisor is not None  # made by _start
        deadline = time.monotonic() + fronts.START_TIMEOUT
        while True:
            children = self.supervisor.children(fronts.NAME)
            for child in children:
                if child.last_exit:
                    raise StartupError(f"front process {child.index} exited at start ({child.last_exit}); "
                                       f"its lines above say why")
            if self.accepting():
                return
            if time.monotonic() > deadline:
                raise StartupError(f"the front processes are not all running after {fronts.START_TIMEOUT:.0f}s")
            gevent.sleep(0.05)

    def restart_fronts(self, target: str) -> bool:
        """Restart the front processes that ``target`` names (``front``, ``front:I``) one after
        the other, each serving again before the next one stops, so that the others accept
        meanwhile; False if one did not serve again within START_TIMEOUT."""
        assert self.supervisor is not None  # made by _start
        for child in self.supervisor.children(target):
            self.supervisor.restart(child.name)  # its stopsignal: it drains for graceful_timeout
            deadline = time.monotonic() + fronts.START_TIMEOUT
            while not (child.pid is not None and self._fronts_ready.get(child.index) == child.pid):
                if time.monotonic() > deadline:
                    log.error("restart: front process %d does not serve again after %.0fs; the others are "
                              "left as they are", child.index, fronts.START_TIMEOUT)
                    return False
                gevent.sleep(0.05)
            log.info("restart: front process %d serves again (pid %d)", child.index, child.pid)
        return True

    def accepting(self) -> bool:
        """Whether the front accepts connections: this process's, or every front process's."""
        if self.front_socket is not None and self.supervisor is not None:
            return all(child.pid is not None and self._fronts_ready.get(child.index) == child.pid
                       for child in self.supervisor.children(fronts.NAME))
        return self.front is not None and self.front.server.started and not self.front.closing

    def _reap_on_exit(self, config: Config, name: str) -> None:
        """A worker host, or the master of front processes, checks no heartbeats (the fronts'
        redeliverers do), but gives back the jobs of a worker it reaps at once, as a front does;
        a POST's 502 goes to its front's answer endpoint, with answer_password (a worker host's:
        the TEMPEST_ANSWER_PASSWORD tempestd was started with)."""
        assert self.supervisor is not None  # made by _start
        password = config.front.answer_password if config.has_front else os.environ.get("TEMPEST_ANSWER_PASSWORD", "")
        self.redeliverer = reaper = Redeliverer(config.redis.url, self.stats, config.front.redeliver_interval,
                                                config.front.max_redeliveries, answer_password=password)
        instances.name_raw([reaper.connection], name)
        self.supervisor.system.on_exit = lambda pid: gevent.spawn(reaper.reaped, pid)

    def _spools(self, config: Config) -> spool.Spools:
        """Where spooled bodies go; their directories made, and emptied of a crash's leftovers."""
        try:  # a front process's siblings may be spooling now: its master emptied them at start
            spool.prepare([config.default_route, *config.routes], config.tempest.name, clean=self.front_index is None)
        except OSError as exc:
            raise StartupError(f"cannot prepare the spool directory {exc.filename}: {exc.strerror}") from None
        # a large file's unlink (0.1 s for 1 GiB) on a thread of its own, never on the event loop
        name = _name(self.instance_id, config)
        return spool.Spools(config.tempest.name, _pooled_client(config.redis.url, name),  # connects when first used
                            submit=gevent.threadpool.ThreadPool(1).spawn, redis_max=config.front.spool_redis_max)

    def _flush_access_log(self) -> None:
        while True:
            gevent.sleep(FLUSH_INTERVAL)
            self.access_log.flush()

    # what the admin listener reads

    def queues(self) -> list[str]:
        """Every queue the configuration names: the routes', the WebSocket messages' and the authorize jobs'."""
        pubsub = self.config.pubsub
        return sorted(set(_queues(self.config)) | {q for q in (pubsub.ws_queue, pubsub.authorize_queue) if q})

    def routed_queues(self) -> list[str]:
        """The queues of HTTP requests (the default route's and the [route:]s')."""
        return sorted(set(_queues(self.config)))

    def reconnects(self) -> dict[str, int]:
        """Connections to Redis made again, by tempestd's connection."""
        counts = {"relay": self.stats.relay_reconnects}
        for name, part in (("pusher", self.pusher), ("redeliverer", self.redeliverer)):
            if part is not None:
                counts[name] = max(0, part.connection.connects - 1)
        return counts

    def _publish_durable(self, client: redis.Redis, config: Config) -> None:
        """Tell every publisher which channels are durable (see tempest.publish)."""
        patterns = [[pattern, config.pubsub.history] for pattern in config.pubsub.durable]
        try:
            client.set(keys.DURABLE_CONFIG, json.dumps(patterns))
            client.set(keys.SHARDED_CONFIG, "1" if config.pubsub.sharded else "0")
        except redis.RedisError as exc:
            log.warning("cannot store the durable channel patterns in Redis: %s", exc)

    def _worker_env(self, respond_to: str | None) -> dict[str, str]:
        # "python" in a command means tempestd's own interpreter (its virtualenv, say); the
        # Redis URL (its password and TLS parameters) goes in the environment, never in argv (ps)
        path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", os.defpath)])
        env = dict(os.environ, PATH=path, TEMPEST_REDIS_URL=self.config.redis.url)
        if respond_to is not None:  # a worker host's workers answer to the address each job names
            env["TEMPEST_ANSWER_ADDRESS"] = respond_to
        if self.config.front.answer_password:
            env["TEMPEST_ANSWER_PASSWORD"] = self.config.front.answer_password
        return env

    def _shutdown(self) -> None:
        systemd.notify("STOPPING=1")
        if self.front is None or self.registry is None:  # a worker host
            self._stop_services()
            log.info(self._what() + " stopped")
            return
        self.front.stop_accepting()
        deadline = time.monotonic() + self.config.front.graceful_timeout
        gevent.sleep(0.05)  # connections accepted just before have their greenlet started, and count as busy
        while (self.front.busy() or len(self.registry)) and time.monotonic() < deadline:
            gevent.sleep(0.05)
        if self.front.busy():
            log.warning("%d requests still in flight after %ss: closing them",
                        self.front.busy(), self.config.front.graceful_timeout)
        self.front.close_all()
        self._stop_services()
        log.info(self._what() + " stopped")

    def _what(self) -> str:
        return "tempestd" if self.front_index is None else f"front process {self.front_index}"

    def _stop_services(self) -> None:
        if self.redeliverer is not None:
            self.redeliverer.on_workers = None  # workers stopping now are no news for the front's queues
        if self.supervisor is not None:
            self.supervisor.shutdown([fronts.NAME])  # they drain their requests while the workers still answer
            self.supervisor.shutdown([n for n in self.supervisor.programs if n != embedded.NAME])
        if self.admin is not None:
            self.admin.stop_accepting()
            self.admin.close_all()
        for server in (self.control, self.answers, self.relay):
            if server is not None:
                server.stop()
        gevent.killall(self.greenlets)
        if self.registration is not None:
            self.registration.withdraw()  # gone from tempest status --all now, not at its TTL
        if self.supervisor is not None:
            self.supervisor.shutdown()  # the embedded Redis, last
        self.access_log.close()
        if self.front_socket is not None:
            self.front_socket.close()
        for fd in self._ready_pipe or ():
            os.close(fd)
        if self.pidfile:
            self.pidfile.remove()


def _queues(config: configuration.Config) -> list[str]:
    return [config.front.queue, *(route.queue for route in config.routes)]


def _raise_open_file_limit() -> int | None:
    """Every connection is a file: take the hard limit (a shell often sets 1,024 soft); return
    the limit (None: unlimited)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
    log.info("open-file limit: %s (each client connection uses one)", "unlimited" if soft == resource.RLIM_INFINITY else soft)
    return None if soft == resource.RLIM_INFINITY else soft


def _room(files: int | None, config: configuration.Config) -> int | None:
    """How many HTTP connections the open-file limit leaves room for: the rest is kept for the
    answer endpoint's connections, Redis, the children's pipes, log files and the control socket."""
    if files is None:
        return None
    answers = min(config.front.answer_max_connections, files // 4)  # a low limit is shared, not used up
    return max(files // 2, files - answers - DESCRIPTORS_RESERVED)


def _name(instance_id: str, config: Config) -> str:
    return instances.connection_name(instances.role(config), config.tempest.name, instance_id)


def _pooled_client(url: str, name: str) -> redis.Redis:
    """A client many greenlets share: the pool blocks (a gevent queue) instead of failing
    (with Sentinel, redis-py's own pool for it, which does not block; on a cluster, a pool per
    node); its connections are called ``name`` (CLIENT SETNAME)."""
    named = instances.naming(name)
    if urllib.parse.urlsplit(url).scheme in (redisconn.SENTINEL, redisconn.CLUSTER):
        return redisconn.client(url, socket_connect_timeout=2, socket_timeout=10, retry=Retry(NoBackoff(), 0),
                                redis_connect_func=named)
    pool = redis.BlockingConnectionPool.from_url(url, max_connections=20, timeout=10,
                                                 queue_class=gevent.queue.LifoQueue,
                                                 socket_connect_timeout=2, socket_timeout=10, redis_connect_func=named)
    return redis.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))


def _listen(server: StreamServer, address: tuple[str, int], what: str) -> None:
    try:
        server.start()
    except OSError as exc:
        raise _listen_error(exc, address, what) from None


def _listen_error(exc: OSError, address: tuple[str, int], what: str) -> StartupError:
    if exc.errno == errno.EADDRINUSE:
        return StartupError(f"{what}: {address[0]}:{address[1]} is already in use")
    return StartupError(f"{what}: cannot listen on {address[0]}:{address[1]}: {exc.strerror}")
