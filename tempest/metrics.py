"""Prometheus metrics: what tempestd counts, in the text format, at ``[admin] listen``/metrics.

Nothing here runs per request but ``Requests.observe`` (a dict lookup, a bisect and two
additions): the counters are tempestd's own (``Stats``, the supervisor's children, the relay's
subscribers), read when Prometheus scrapes, through a custom collector of prometheus-client,
which also writes the text format and adds the ``process_*`` metrics (CPU, memory, open
descriptors). The queues' lengths are read from Redis at scrape time: one pipelined LLEN per
configured queue and its dead-letter list, with a one-second timeout, so that a scrape never
hangs on a Redis that went away (``tempest_redis_up`` is then 0).

One tempestd is one process: each has its own admin listener, and Prometheus labels each
target with its ``instance``. docs/operations.md lists every metric.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import TYPE_CHECKING

import hiredis
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from tempest import __version__, keys, redisconn
from tempest.redisconn import ConnectionFailed

if TYPE_CHECKING:
    from tempest.daemon import Daemon

# seconds: the request-time histogram's upper bounds (+Inf added), from a cached answer to a long stream
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
SCRAPE_TIMEOUT = 1.0  # seconds Redis has to give the queues' lengths
Route = tuple[str, str]  # (handler, route)

# Stats counter -> (metric name without _total, help); in the order they are written
COUNTERS = {
    "connections_total": ("tempest_http_connections", "HTTP connections accepted."),
    "connections_refused": ("tempest_http_connections_refused", "HTTP connections refused over max_connections (503)."),
    "bad_requests": ("tempest_http_bad_requests", "Malformed or oversized HTTP requests (400, 408, 413, 431)."),
    "clients_gone": ("tempest_http_clients_gone", "Clients that left while their job was pending."),
    "jobs_withdrawn": ("tempest_jobs_withdrawn", "Of those, jobs no worker had taken: taken back, never run."),
    "requests": ("tempest_jobs", "HTTP requests turned into jobs."),
    "jobs_pushed": ("tempest_jobs_pushed", "Jobs that reached a Redis list."),
    "push_errors": ("tempest_jobs_push_errors", "Jobs that could not be pushed, Redis failing (503)."),
    "queue_full": ("tempest_jobs_queue_full", "Jobs refused by max_queue_length (503)."),
    "timeouts": ("tempest_jobs_timed_out", "Jobs not answered in time: 504, or 503 when no worker took them."),
    "not_taken": ("tempest_jobs_not_taken", "Of the jobs timed out, those no worker took, taken back (503)."),
    "unserved": ("tempest_jobs_unserved", "Requests answered 503 at once: no worker serves their queue."),
    "answers": ("tempest_answers", "Answers handed to a waiting request."),
    "bad_answers": ("tempest_answers_bad", "Answers that could not become a response (502)."),
    "answers_dropped": ("tempest_answers_dropped", "Answers for an unknown, late or abandoned job."),
    "answer_connections": ("tempest_answer_connections", "Connections to the answer endpoint accepted."),
    "answer_connections_refused": ("tempest_answer_connections_refused",
                                   "Answer endpoint connections refused over answer_max_connections."),
    "answer_connections_closed": ("tempest_answer_connections_closed",
                                  "Answer endpoint connections closed by tempestd: idle, no AUTH, bad RESP, too big."),
    "messages_relayed": ("tempest_pubsub_messages", "Pub/sub messages relayed (once per message, not per client)."),
    "bad_messages": ("tempest_pubsub_bad_messages", "Pub/sub messages dropped as malformed."),
    "subscriptions_refused": ("tempest_pubsub_subscriptions_refused",
                              "Subscriptions to private channels the session does not allow (403)."),
    "subscriptions_revoked": ("tempest_pubsub_subscriptions_revoked",
                              "Private streams ended: their session no longer allows them (revoke, logout)."),
    "authorize_timeouts": ("tempest_pubsub_authorize_timeouts", "Authorize jobs not answered in time (denied)."),
    "ws_messages": ("tempest_websocket_messages", "WebSocket messages received and turned into jobs."),
    "jobs_redelivered": ("tempest_jobs_redelivered", "Jobs of dead reliable workers put back on their queue."),
    "jobs_dead": ("tempest_jobs_dead_lettered", "Jobs given back too often, moved to their dead-letter list."),
    "jobs_refused": ("tempest_jobs_not_redelivered", "Jobs of dead reliable workers not safe to run twice (POST...): 502."),
    "static_files": ("tempest_static_files", "Static files served."),
}


class Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # per bucket (not cumulative), the last +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, int]]:
        total, out = 0, []
        for bound, count in zip((*map(str, BUCKETS), "+Inf"), self.counts):
            total += count
            out.append((bound, total))
        return out


class Requests:
    """Requests by (handler, route) and status, and their durations: what the front's
    ``finished`` observes for each request."""

    def __init__(self) -> None:
        self.counts: dict[tuple[Route, int], int] = {}
        self.durations: dict[Route, Histogram] = {}

    def observe(self, route: Route, status: int, seconds: float) -> None:
        key = (route, status)
        self.counts[key] = self.counts.get(key, 0) + 1
        histogram = self.durations.get(route)
        if histogram is None:
            histogram = self.durations[route] = Histogram()
        histogram.observe(seconds)

    def families(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("tempest_http_requests", "HTTP requests by handler, route and status code "
                                       "(499: the client left before a response).",
                                       labels=("handler", "route", "code"))
        for ((handler, route), status), count in sorted(self.counts.items()):
            requests.add_metric((handler, route, str(status)), count)
        yield requests
        durations = HistogramMetricFamily("tempest_http_request_duration_seconds",
                                          "Time from a request's first byte to the end of its response (streams: "
                                          "to their end).", labels=("handler", "route"))
        for (handler, route), histogram in sorted(self.durations.items()):
            durations.add_metric((handler, route), histogram.buckets(), histogram.sum)
        yield durations


class Collector:
    """The families of one scrape, read from the running daemon."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.connection = redisconn.connect(daemon.config.redis.url, timeout=SCRAPE_TIMEOUT,
                                        connect_timeout=SCRAPE_TIMEOUT)

    def collect(self) -> Iterator[Metric]:
        daemon = self.daemon
        stats = daemon.stats.as_dict()
        for field, (name, text) in COUNTERS.items():
            yield CounterMetricFamily(name, text, value=stats[field])
        yield from self._gauges()
        if daemon.front is not None and daemon.front.requests is not None:
            yield from daemon.front.requests.families()
        yield from self._pubsub()
        yield from self._processes()
        yield from self._queues()
        info = GaugeMetricFamily("tempest_info", "tempestd's version.", labels=("version",))
        info.add_metric((__version__,), 1)
        yield info

    def _gauges(self) -> Iterator[Metric]:
        daemon = self.daemon
        yield GaugeMetricFamily("tempest_http_connections_open", "HTTP connections open now.",
                                value=daemon.stats.connections_open)
        answers = daemon.answers
        yield GaugeMetricFamily("tempest_answer_connections_open", "Connections to the answer endpoint open now.",
                                value=answers.open_connections if answers is not None else 0)
        registry = daemon.registry
        yield GaugeMetricFamily("tempest_jobs_pending", "Requests waiting for their answer now.",
                                value=len(registry) if registry is not None else 0)
        yield GaugeMetricFamily("tempest_stream_buffer_bytes", "Bytes of streamed answers and messages queued "
                                "for slow clients now (max_stream_buffer bounds them).",
                                value=registry.ledger.value if registry is not None else 0)
        reconnects = CounterMetricFamily("tempest_redis_reconnects", "Connections to Redis made again after one "
                                         "was lost, by tempestd's connection.", labels=("connection",))
        for name, count in daemon.reconnects().items():
            reconnects.add_metric((name,), count)
        yield reconnects

    def _pubsub(self) -> Iterator[Metric]:
        relay = self.daemon.relay
        subscribers = GaugeMetricFamily("tempest_pubsub_subscribers", "SSE and WebSocket clients subscribed now.",
                                        labels=("kind",))
        kinds = {"sse": 0, "websocket": 0}
        for subscriber in list(relay.subscribers) if relay is not None else ():
            kinds[subscriber.kind] = kinds.get(subscriber.kind, 0) + 1
        for kind, count in kinds.items():
            subscribers.add_metric((kind,), count)
        yield subscribers
        stats = self.daemon.stats
        dropped = CounterMetricFamily("tempest_pubsub_clients_dropped", "SSE and WebSocket clients disconnected: "
                                      "slow (their buffer overflowed) or silent (no pong).", labels=("reason",))
        dropped.add_metric(("slow",), stats.slow_clients_dropped)
        dropped.add_metric(("silent",), stats.silent_clients_dropped)
        yield dropped

    def _processes(self) -> Iterator[Metric]:
        supervisor = self.daemon.supervisor
        children = supervisor.every_child() if supervisor is not None else []
        states = GaugeMetricFamily("tempest_processes", "Supervised processes by program and state.",
                                   labels=("program", "state"))
        restarts = CounterMetricFamily("tempest_process_restarts", "Restarts of supervised processes, by program.",
                                       labels=("program",))
        by_state: dict[tuple[str, str], int] = {}
        by_program: dict[str, int] = {}
        for child in children:
            program = child.spec.name
            by_state[program, child.state.value] = by_state.get((program, child.state.value), 0) + 1
            by_program[program] = by_program.get(program, 0) + child.restarts
        for labels, count in sorted(by_state.items()):
            states.add_metric(labels, count)
        for program, count in sorted(by_program.items()):
            restarts.add_metric((program,), count)
        yield states
        yield restarts

    def _queues(self) -> Iterator[Metric]:
        daemon = self.daemon
        queues = daemon.queues()
        lengths = GaugeMetricFamily("tempest_queue_length", "Jobs waiting on each configured queue (read from "
                                    "Redis at scrape time).", labels=("queue",))
        dead = GaugeMetricFamily("tempest_queue_dead_letter_length", "Jobs on each queue's dead-letter list.",
                                 labels=("queue",))
        up = 1
        try:
            replies = self.connection.execute([["LLEN", key] for q in queues for key in (q, keys.dead(q))])
        except ConnectionFailed:
            replies, up = [], 0
        for queue, length, dead_length in zip(queues, replies[::2], replies[1::2]):
            if not isinstance(length, hiredis.ReplyError):  # a key of another type: not counted
                lengths.add_metric((queue,), length)
            if not isinstance(dead_length, hiredis.ReplyError):
                dead.add_metric((queue,), dead_length)
        yield lengths
        yield dead
        yield GaugeMetricFamily("tempest_redis_up", "1 if Redis answered this scrape in time.", value=up)
        unserved = GaugeMetricFamily("tempest_queue_unserved", "1 for a queue no worker serves, as far as tempestd "
                                     "can tell (its requests get 503 at once).", labels=("queue",))
        registered = GaugeMetricFamily("tempest_workers_registered", "Live reliable workers registered on each "
                                       "queue (2012 workers do not register).", labels=("queue",))
        serving = daemon.serving
        for queue in queues:
            unserved.add_metric((queue,), 1 if serving is not None and serving.unserved(queue) else 0)
            registered.add_metric((queue,), serving.registered.get(queue, 0) if serving is not None else 0)
        yield unserved
        yield registered


class Metrics:
    """The registry of a daemon's metrics: ``render()`` is one scrape."""

    def __init__(self, daemon: Daemon) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = Collector(daemon)
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_open_fds...

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def close(self) -> None:
        self.collector.connection.close()
