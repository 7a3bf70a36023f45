"""Counters of what tempestd did and dropped, shown by the answer endpoint's INFO."""

COUNTERS = (
    "connections_total",  # HTTP connections accepted
    "connections_open",  # HTTP connections open now
    "requests",  # HTTP requests turned into jobs
    "responses_2xx", "responses_3xx", "responses_4xx", "responses_5xx",
    "bad_requests",  # malformed HTTP (400, 413, 431)
    "jobs_pushed",  # jobs that reached a Redis list
    "push_errors",  # jobs that could not be pushed (Redis error): answered 503
    "queue_full",  # jobs refused by max_queue_length: answered 503
    "timeouts",  # requests whose answer did not come in time: answered 504
    "bad_answers",  # answers that could not become a response: answered 502
    "answers",  # answers handed to a waiting request
    "answers_dropped",  # answers for an unknown, expired or abandoned job
    "clients_gone",  # clients that left while their job was pending
    "answer_connections",  # connections to the answer endpoint accepted
    "subscribers",  # SSE and WebSocket clients subscribed now
    "messages_relayed",  # pub/sub messages fanned out (once per message, not per client)
    "slow_clients_dropped",  # subscribers disconnected because their buffer overflowed
    "silent_clients_dropped",  # WebSockets disconnected for sending nothing between two pings
    "bad_messages",  # pub/sub messages dropped (CR/LF in an event name, bad envelope)
    "relay_reconnects",  # times the subscription connection was re-established
    "ws_messages",  # WebSocket messages received and turned into jobs
    "jobs_redelivered",  # jobs of dead reliable workers put back on their queue
    "jobs_dead",  # jobs given back too often, moved to their queue's dead-letter list
    "static_files",  # static files served
)


class Stats:
    """Plain counters, incremented from greenlets of one process (no locking needed)."""

    __slots__ = COUNTERS

    def __init__(self):
        for name in COUNTERS:
            setattr(self, name, 0)

    def as_dict(self):
        return {name: getattr(self, name) for name in COUNTERS}

    def count_response(self, status):
        name = _RESPONSE_COUNTERS.get(status // 100)
        if name is not None:
            setattr(self, name, getattr(self, name) + 1)


_RESPONSE_COUNTERS = {2: "responses_2xx", 3: "responses_3xx", 4: "responses_4xx", 5: "responses_5xx"}
