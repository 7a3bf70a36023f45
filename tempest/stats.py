"""Counters of what tempestd did and dropped, shown by the answer endpoint's INFO."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(slots=True, eq=False)
class Stats:
    """Plain counters, incremented from greenlets of one process (no locking needed)."""

    connections_total: int = 0  # HTTP connections accepted
    connections_open: int = 0  # HTTP connections open now
    connections_refused: int = 0  # HTTP connections refused over max_connections: answered 503
    requests: int = 0  # HTTP requests turned into jobs
    responses_2xx: int = 0
    responses_3xx: int = 0
    responses_4xx: int = 0
    responses_5xx: int = 0
    bad_requests: int = 0  # malformed HTTP (400, 413, 431)
    jobs_pushed: int = 0  # jobs that reached a Redis list
    push_errors: int = 0  # jobs that could not be pushed (Redis error): answered 503
    queue_full: int = 0  # jobs refused by max_queue_length: answered 503
    timeouts: int = 0  # requests whose answer did not come in time: answered 504 (or 503: not_taken)
    not_taken: int = 0  # of those, the jobs still on their queue: taken back, answered 503
    unserved: int = 0  # requests answered 503 at once: no worker serves their queue (tempest.serving)
    bad_answers: int = 0  # answers that could not become a response: answered 502
    answers: int = 0  # answers handed to a waiting request
    answers_dropped: int = 0  # answers for an unknown, expired or abandoned job
    clients_gone: int = 0  # clients that left while their job was pending
    jobs_withdrawn: int = 0  # of those, the jobs still on their queue: taken back, so that no worker runs them
    jobs_refused: int = 0  # jobs of dead reliable workers not safe to run twice (POST...): answered 502
    answer_connections: int = 0  # connections to the answer endpoint accepted
    answer_connections_refused: int = 0  # refused: over answer_max_connections
    answer_connections_closed: int = 0  # closed by the endpoint: idle, no AUTH in time, protocol error, too big
    subscribers: int = 0  # SSE and WebSocket clients subscribed now
    streams_parked: int = 0  # of the SSE streams and WebSockets, those idle now without a greenlet (Connection.park)
    messages_relayed: int = 0  # pub/sub messages fanned out (once per message, not per client)
    slow_clients_dropped: int = 0  # subscribers disconnected because their buffer overflowed
    silent_clients_dropped: int = 0  # WebSockets disconnected for sending nothing between two pings
    bad_messages: int = 0  # pub/sub messages dropped (CR/LF in an event name, bad envelope)
    subscriptions_refused: int = 0  # SSE and WebSocket subscriptions to private channels refused: 403
    subscriptions_revoked: int = 0  # private streams ended because their session no longer allows them
    authorize_timeouts: int = 0  # authorize jobs not answered within authorize_timeout: denied
    relay_reconnects: int = 0  # times the subscription connection was re-established
    ws_messages: int = 0  # WebSocket messages received and turned into jobs
    jobs_redelivered: int = 0  # jobs of dead reliable workers put back on their queue
    jobs_dead: int = 0  # jobs given back too often, moved to their queue's dead-letter list
    static_files: int = 0  # static files served

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTERS}

    def count_response(self, status: int) -> None:
        name = _RESPONSE_COUNTERS.get(status // 100)
        if name is not None:
            setattr(self, name, getattr(self, name) + 1)


COUNTERS = tuple(field.name for field in dataclasses.fields(Stats))  # in INFO's order
_RESPONSE_COUNTERS = {2: "responses_2xx", 3: "responses_3xx", 4: "responses_4xx", 5: "responses_5xx"}
