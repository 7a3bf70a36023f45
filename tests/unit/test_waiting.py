"""The registry of requests waiting for answers, streams included (in process, a fake clock)."""

import gevent

from tempest.waiting import Outcome, StreamEnd
from tempest.waiting import Registry
from tempest.stats import Stats


class Clock:
    now = 100.0

    def __call__(self):
        return self.now


def setup():
    stats, clock, woken = Stats(), Clock(), []
    registry = Registry(stats, clock=clock)
    pending = registry.add("job", "url", 5.0, lambda: woken.append(1))
    return registry, stats, clock, pending, woken


def drain(pending):
    items = []
    while (item := pending.take()) is not None:
        items.append(item)
    return items


def test_a_stream_head_settles_the_request_and_keeps_the_job():
    registry, stats, _, pending, woken = setup()
    assert registry.start_stream("job", "url", b"[200, {}]")
    assert pending.outcome is Outcome.STREAM and pending.payload == b"[200, {}]"
    assert registry.chunk("job", b"a", 100) and registry.chunk("job", b"", 100) and registry.chunk("job", b"bc", 100)
    assert registry.chunk("job", None, 100)  # the end
    assert len(registry) == 0
    assert drain(pending) == [b"a", b"bc", StreamEnd.END] and pending.buffered == 0
    gevent.sleep(0)  # the callbacks run in the hub
    assert woken == [1, 1, 1] and stats.answers == 1


def test_each_chunk_pushes_the_deadline_back_and_silence_times_out():
    registry, stats, clock, pending, _ = setup()
    registry.start_stream("job", "url", b"[200]")
    clock.now += 4
    registry.chunk("job", b"a", 100)
    clock.now += 4  # 8 s after the head, 4 after the chunk: still alive
    registry.sweep()
    assert len(registry) == 1
    clock.now += 2
    registry.sweep()
    assert len(registry) == 0 and drain(pending) == [b"a", StreamEnd.TIMEOUT] and stats.timeouts == 1


def test_more_queued_than_the_limit_ends_the_stream():
    registry, stats, _, pending, _ = setup()
    registry.start_stream("job", "url", b"[200]")
    assert registry.chunk("job", b"x" * 60, 100)
    assert not registry.chunk("job", b"y" * 60, 100)
    assert drain(pending) == [b"x" * 60, StreamEnd.OVERFLOW] and stats.slow_clients_dropped == 1
    assert not registry.chunk("job", b"z", 100) and stats.answers_dropped == 1  # gone


def test_pieces_without_a_waiting_stream_are_dropped_and_counted():
    registry, stats, _, pending, _ = setup()
    assert not registry.chunk("job", b"a", 100)  # no head yet
    assert not registry.start_stream("other", "url", b"[200]")
    assert not registry.start_stream("job", "ws", b"[200]")  # another action's
    registry.start_stream("job", "url", b"[200]")
    assert not registry.start_stream("job", "url", b"[200]")  # a second head
    registry.abandon(pending)  # the client left
    assert not registry.chunk("job", b"a", 100)
    assert stats.answers_dropped == 5 and stats.clients_gone == 1


def test_an_answer_settles_once_with_its_payload():
    registry, stats, _, pending, woken = setup()
    assert registry.answer("job", "url", b'[200, {}, "hi"]')
    assert pending.outcome is Outcome.ANSWER and pending.payload == b'[200, {}, "hi"]'
    assert not registry.answer("job", "url", b"[500]")  # a second answer is dropped
    assert pending.payload == b'[200, {}, "hi"]' and stats.answers == 1 and stats.answers_dropped == 1


def test_an_unanswered_job_times_out():
    registry, stats, clock, pending, _ = setup()
    clock.now += 5
    registry.sweep()
    assert pending.outcome is Outcome.TIMEOUT and stats.timeouts == 1 and len(registry) == 0


def test_all_streams_together_hold_at_most_max_buffered():
    stats, clock = Stats(), Clock()
    registry = Registry(stats, clock=clock, max_buffered=100)
    a = registry.add("a", "url", 5.0, lambda: None)
    b = registry.add("b", "url", 5.0, lambda: None)
    registry.start_stream("a", "url", b"[200]")
    registry.start_stream("b", "url", b"[200]")
    assert registry.chunk("a", b"x" * 60, 1000)  # each under its own limit (1000)...
    assert not registry.chunk("b", b"y" * 60, 1000)  # ...but 120 in all: b is closed
    assert drain(b) == [StreamEnd.OVERFLOW] and stats.slow_clients_dropped == 1
    assert drain(a) == [b"x" * 60] and registry.ledger.value == 0  # read: room again
    c = registry.add("c", "url", 5.0, lambda: None)
    registry.start_stream("c", "url", b"[200]")
    assert registry.chunk("c", b"z" * 90, 1000) and registry.ledger.value == 90
    registry.abandon(c)  # its client left: what it held is given back
    assert registry.ledger.value == 0 and registry.chunk("a", b"w" * 100, 1000)
