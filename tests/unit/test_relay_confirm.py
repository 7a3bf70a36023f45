"""The relay's confirmation of a subscription: a channel counts as subscribed only once Redis
replied to its latest SUBSCRIBE. The subscription connection is a real socket pair whose far
end reads what the relay sends; Redis' replies are handed to the relay as its reader would."""

import socket

import gevent

from tempest import relay as relay_module
from tempest.relay import Relay, Subscriber
from tempest.stats import Stats


def test_the_reply_to_an_earlier_subscribe_does_not_confirm_a_later_one(monkeypatch):
    monkeypatch.setattr(relay_module, "CONFIRM_TIMEOUT", 1.0)
    near, far = socket.socketpair()
    relay = Relay("redis://127.0.0.1:1/0", None, Stats(), None)
    relay.link.sock = near  # connected: SUBSCRIBE and UNSUBSCRIBE go out on it
    first = Subscriber(["ch"], 1000, lambda: None)
    waiting_first = gevent.spawn(relay.subscribe, first)
    gevent.sleep(0)  # SUBSCRIBE ch sent
    relay.unsubscribe(first)  # its client left before Redis replied: UNSUBSCRIBE ch
    second = Subscriber(["ch"], 1000, lambda: None)
    waiting_second = gevent.spawn(relay.subscribe, second)
    gevent.sleep(0)  # SUBSCRIBE ch again
    relay._handle([b"subscribe", b"ch", 1])  # Redis' reply to the first SUBSCRIBE
    relay._handle([b"unsubscribe", b"ch", 0])  # then it unsubscribed: a message now would be lost
    gevent.sleep(0.05)
    assert not waiting_second.ready()  # so the second subscriber is not told it is subscribed yet
    relay._handle([b"subscribe", b"ch", 1])  # the reply to its own SUBSCRIBE
    assert waiting_second.get(timeout=1) is True
    assert waiting_first.get(timeout=2) is False  # gone before being confirmed: timed out
    sent = far.recv(65536)
    assert sent.count(b"SUBSCRIBE") == 3 and sent.count(b"UNSUBSCRIBE") == 1
    near.close()
    far.close()


def test_a_subscription_not_confirmed_in_time_is_refused(monkeypatch):
    monkeypatch.setattr(relay_module, "CONFIRM_TIMEOUT", 0.2)
    relay = Relay("redis://127.0.0.1:1/0", None, Stats(), None)  # not connected: Redis is away
    assert relay.subscribe(Subscriber(["ch"], 1000, lambda: None)) is False


def test_all_subscribers_together_hold_at_most_the_ledger_s_limit():
    from tempest.waiting import Ledger

    ledger, dropped = Ledger(100), []
    first = Subscriber(["a"], 1000, lambda: None, lambda: dropped.append("first"), ledger)
    second = Subscriber(["a"], 1000, lambda: None, lambda: dropped.append("second"), ledger)
    assert first.push("m1", 60)  # each under its own client_buffer (1000)...
    assert not second.push("m2", 60)  # ...but 120 in all: the second is dropped
    gevent.sleep(0)
    assert dropped == ["second"] and ledger.value == 60
    assert list(first.take()) == ["m1"] and ledger.value == 0  # written out: room again
    third = Subscriber(["a"], 1000, lambda: None, None, ledger)
    assert third.push("m3", 90) and ledger.value == 90
    third.release()  # its client left
    assert ledger.value == 0
