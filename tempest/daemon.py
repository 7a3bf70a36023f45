"""tempestd: wiring the parts from the config, signals and the shutdown order.

Start: embedded Redis (if any), the Redis client, the answer endpoint, then the front; the
``ready`` log line comes last. Signal handlers only queue the signal's name; the main greenlet
takes them from the queue and calls ``handle_<name>``. Stop: stop accepting, let in-flight
requests finish (``graceful_timeout``), close the rest, stop the answer endpoint, stop the
embedded Redis last.
"""

import errno
import logging
import signal
import time

import gevent
import gevent.queue
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tempest.answers import AnswerServer
from tempest.embedded import EmbeddedRedis
from tempest.errors import ExitCode, StartupError
from tempest.front import Front
from tempest.pending import Registry
from tempest.pusher import Pusher
from tempest.stats import Stats

log = logging.getLogger(__name__)

SIGNALS = {signal.SIGTERM: "term", signal.SIGINT: "int", signal.SIGHUP: "hup"}


def redis_client(url, **options):
    """A client that never retries on its own: the caller decides what may be sent twice."""
    return redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=2,
                                socket_keepalive=True, **options)


class Daemon:
    def __init__(self, config):
        self.config = config
        self.stats = Stats()
        self.embedded = None
        self.answers = None
        self.front = None
        self.greenlets = []
        self._signals = gevent.queue.Queue()
        self._stopping = False

    def run(self):
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

    def handle_term(self):
        log.info("SIGTERM: shutting down")
        self._stopping = True

    def handle_int(self):
        log.info("SIGINT: shutting down")
        self._stopping = True

    def handle_hup(self):
        log.warning("SIGHUP: configuration reload is not supported yet; restart tempestd")

    def _start(self):
        config = self.config
        if config.redis.embedded:
            self.embedded = EmbeddedRedis(config.redis.url, config.redis.data_dir, config.redis.server_bin)
            self.embedded.start()
        client = redis_client(config.redis.url, socket_timeout=10)
        try:
            client.ping()
        except redis.RedisError as exc:
            raise StartupError(f"Redis at {config.redis.url} does not answer: {exc}") from None
        registry = Registry(self.stats)
        pusher = Pusher(client, registry, self.stats, config.front.max_queue_length)
        self.answers = AnswerServer(config.front.answer_listen, registry, self.stats,
                                    config.front.answer_password, config.front.max_answer)
        _listen(self.answers.server, config.front.answer_listen, "answer endpoint")
        respond_to = "%s:%d" % (config.front.answer_advertise or self.answers.address[:2])
        self.front = Front(config, registry, pusher, self.stats, respond_to)
        _listen(self.front.server, config.front.listen, "front")
        self.registry = registry
        self.greenlets = [gevent.spawn(pusher.run), gevent.spawn(registry.run_sweeper)]
        log.info("tempestd ready: front on http://%s:%d/, answers on %s (respond_to %s)",
                 *self.front.address[:2], "%s:%d" % self.answers.address[:2], respond_to)

    def _shutdown(self):
        self.front.stop_accepting()
        deadline = time.monotonic() + self.config.front.graceful_timeout
        while (self.front.busy() or len(self.registry)) and time.monotonic() < deadline:
            gevent.sleep(0.05)
        if self.front.busy():
            log.warning("%d requests still in flight after %ss: closing them",
                        self.front.busy(), self.config.front.graceful_timeout)
        self.front.close_all()
        self._stop_services()
        log.info("tempestd stopped")

    def _stop_services(self):
        if self.answers is not None:
            self.answers.stop()
        gevent.killall(self.greenlets)
        if self.embedded is not None:
            self.embedded.stop()


def _listen(server, address, what):
    try:
        server.start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(f"{what}: {address[0]}:{address[1]} is already in use") from None
        raise StartupError(f"{what}: cannot listen on {address[0]}:{address[1]}: {exc.strerror}") from None
