"""The pub/sub relay end to end: SSE and WebSocket clients of a real tempestd and Redis."""

import json
import os
import resource
import selectors
import socket
import subprocess
import sys
import threading
import time

import pytest
import redis

from sseclient import SSE, WS
from support import RedisServer, wait_until

from tempest.publish import Publisher


@pytest.fixture
def pub(tempestd_factory, request):
    """A tempestd with short heartbeats and durable 'news.*' channels."""
    return tempestd_factory(pubsub={"heartbeat": "0.5", "durable": "news.* log", "history": "1000"})


def publish(redis_server, channel, message):
    return redis_server.client().publish(channel, message)


def subscribed(redis_server, channel, count=1):
    """Wait until tempestd's relay is subscribed to ``channel``."""
    client = redis_server.client()
    wait_until(lambda: client.pubsub_numsub(channel)[0][1] >= count, message=f"subscription to {channel}")


def test_legacy_format_and_unsubscribe(pub, redis_server):
    client = SSE(pub.port, "/sub/test")
    assert client.status_line == "HTTP/1.1 200 OK"
    assert client.headers["content-type"].startswith("text/event-stream")
    assert client.next() == {"comment": "ok"}  # sent at once: EventSource's open fires
    subscribed(redis_server, "test")
    publish(redis_server, "test", '["Bob"]')
    publish(redis_server, "test", '["greeting", "hello\\nworld"]')
    publish(redis_server, "test", "not json at all")
    publish(redis_server, "test", '["$unsubscribe"]')
    assert client.next_message() == {"data": "Bob"}
    assert client.next_message() == {"event": "greeting", "data": "hello\nworld"}
    assert client.next_message() == {"data": "not json at all"}
    assert client.next_message() == {"event": "end", "data": ""}
    assert client.next() is None and client.closed


def test_event_names_with_cr_lf_are_never_written(pub, redis_server):
    client = SSE(pub.port, "/sub/inject")
    subscribed(redis_server, "inject")
    publish(redis_server, "inject", json.dumps(["evil\nid: 666", "x"]))
    publish(redis_server, "inject", '["safe"]')
    assert client.next_message() == {"data": "safe"}
    assert pub.info()["bad_messages"] == 1


def test_several_channels_in_one_stream(pub, redis_server):
    client = SSE(pub.port, "/sub/a,b")
    subscribed(redis_server, "a")
    subscribed(redis_server, "b")
    publish(redis_server, "b", '["from b"]')
    publish(redis_server, "a", '["from a"]')
    assert [client.next_message()["data"] for _ in range(2)] == ["from b", "from a"]


def test_heartbeat_comments(pub):
    client = SSE(pub.port, "/sub/quiet")
    started = time.monotonic()
    assert client.next() == {"comment": "ok"}
    assert client.next(3) == {"comment": "heartbeat"}
    assert client.next(3) == {"comment": "heartbeat"}
    assert time.monotonic() - started < 3


def test_one_redis_connection_for_many_subscribers(pub, redis_server):
    clients = [SSE(pub.port, f"/sub/fan{i % 3}") for i in range(30)]
    for i in range(3):
        subscribed(redis_server, f"fan{i}")
    connections = redis_server.client().client_list()
    relays = [c for c in connections if c.get("sub") != "0"]  # connections in subscribed mode
    assert len(relays) == 1, connections
    for i in range(3):
        assert publish(redis_server, f"fan{i}", f'["m{i}"]') == 1  # one Redis subscriber
    for i, client in enumerate(clients):
        assert client.next_message() == {"data": f"m{i % 3}"}


def test_cors_header_for_allowed_origins(tempestd_factory):
    daemon = tempestd_factory(pubsub={"allow_origins": "https://app.example"})
    allowed = SSE(daemon.port, "/sub/c", headers={"Origin": "https://app.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    other = SSE(daemon.port, "/sub/c", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_slow_client_is_dropped_without_stalling_others(tempestd_factory, redis_server):
    daemon = tempestd_factory(pubsub={"client_buffer": "64K"})
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", daemon.port))
    slow.sendall(b"GET /sub/flood HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
    fast = SSE(daemon.port, "/sub/flood")
    subscribed(redis_server, "flood", 1)
    wait_until(lambda: daemon.info()["subscribers"] == 2)
    payload = "x" * 8000
    received = []

    def read_all():
        while (event := fast.next_message(20)) is not None and event.get("event") != "end":
            received.append(event)

    reader = threading.Thread(target=read_all)
    reader.start()
    for i in range(400):
        publish(redis_server, "flood", json.dumps([f"{i}:{payload}"]))
    publish(redis_server, "flood", '["$unsubscribe"]')
    reader.join(30)
    assert [int(e["data"].split(":")[0]) for e in received] == list(range(400))
    assert daemon.info()["slow_clients_dropped"] == 1
    wait_until(lambda: daemon.info()["subscribers"] == 0)
    slow.close()


def test_subscribers_survive_a_redis_restart(tempestd_factory, tmp_path):
    own = RedisServer(tmp_path / "r").start()
    try:
        daemon = tempestd_factory(redis_url=own.url)
        client = SSE(daemon.port, "/sub/phoenix")
        wait_until(lambda: own.client().pubsub_numsub("phoenix")[0][1] == 1)
        own.stop()
        own = RedisServer(tmp_path / "r", port=own.port).start()
        wait_until(lambda: own.client().publish("phoenix", '["after restart"]') == 1, 20, 0.1,
                   message="the relay subscribed again")
        assert client.next_message() == {"data": "after restart"}
        assert daemon.info()["relay_reconnects"] >= 1
    finally:
        own.stop()


def durable_publisher(redis_server):
    return Publisher(redis_server.client(), [("news.*", 1000), ("log", 5)])


def test_durable_events_carry_stream_ids(pub, redis_server):
    client = SSE(pub.port, "/sub/news.ids")
    subscribed(redis_server, "news.ids")
    stream_id = durable_publisher(redis_server).publish("news.ids", {"n": 1}, event="update")
    assert client.next_message() == {"event": "update", "id": stream_id, "data": '{"n": 1}'}


def test_resume_has_no_gap_and_no_duplicate_under_a_concurrent_publisher(pub, redis_server):
    publisher = durable_publisher(redis_server)
    first = SSE(pub.port, "/sub/news.resume")
    subscribed(redis_server, "news.resume")
    total = 300

    def produce():
        for n in range(total):
            publisher.publish("news.resume", n)
            time.sleep(0.002)

    producer = threading.Thread(target=produce)
    producer.start()
    seen = []
    while len(seen) < 60:
        event = first.next_message()
        seen.append((int(event["data"]), event["id"]))
    first.close()  # the connection drops while the publisher goes on
    time.sleep(0.05)
    second = SSE(pub.port, "/sub/news.resume", headers={"Last-Event-ID": seen[-1][1]})
    while seen[-1][0] < total - 1:
        event = second.next_message()
        assert event.get("event") != "gap"
        seen.append((int(event["data"]), event["id"]))
    producer.join()
    assert [n for n, _ in seen] == list(range(total))


def test_gap_event_when_history_is_gone(pub, redis_server):
    publisher = durable_publisher(redis_server)
    ids = [publisher.publish("log", n) for n in range(20)]  # history 5
    client = SSE(pub.port, "/sub/log", headers={"Last-Event-ID": ids[2]})
    assert client.next_message() == {"event": "gap", "data": "log"}
    assert [client.next_message()["data"] for _ in range(5)] == [str(n) for n in range(15, 20)]


def test_unknown_last_event_id_gets_gap_and_history(pub, redis_server):
    publisher = durable_publisher(redis_server)
    for n in range(3):
        publisher.publish("news.unknown", n)
    client = SSE(pub.port, "/sub/news.unknown", headers={"Last-Event-ID": "garbage"})
    assert client.next_message() == {"event": "gap", "data": "news.unknown"}
    assert [client.next_message()["data"] for _ in range(3)] == ["0", "1", "2"]
    subscribed(redis_server, "news.unknown")
    publisher.publish("news.unknown", "live")
    assert client.next_message()["data"] == "live"


def test_tempest_publish_cli(pub, redis_server):
    client = SSE(pub.port, "/sub/news.cli")
    subscribed(redis_server, "news.cli")
    cli = [os.path.join(os.path.dirname(sys.executable), "tempest")]
    if not os.path.exists(cli[0]):
        cli = [sys.executable, "-c", "import sys; from tempest.cli import tempest_main; sys.exit(tempest_main())"]
    done = subprocess.run(cli + ["publish", "-c", pub.ini, "news.cli", "hi there", "--event", "greet"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    event = client.next_message()
    assert event["event"] == "greet" and event["data"] == "hi there"
    assert done.stdout.strip() == f"id {event['id']}"
    bad = subprocess.run(cli + ["publish", "-c", pub.ini, "news.cli", "x", "--event", "a\nb"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2


def test_websocket_both_ways(tempestd_factory, redis_server):
    daemon = tempestd_factory(pubsub={"ws_queue": "wsjobs"})
    client = WS(daemon.port, "/ws/room")
    assert client.accepted
    subscribed(redis_server, "room")
    publish(redis_server, "room", '["news", "hello"]')
    assert json.loads(client.receive()) == ["news", "hello"]
    client.send("from the browser")
    _, raw = redis_server.client().blpop(["wsjobs"], timeout=10)
    action, args, respond_to, job_id = json.loads(raw)
    assert action == "ws" and args[0]["channel"] == "room" and args[0]["data"] == "from the browser"
    assert args[0]["socket"] == job_id
    host, port = respond_to.rsplit(":", 1)
    assert redis.Redis(host=host, port=int(port)).execute_command("ws", job_id, '"just for you"') == b"OK"
    assert client.receive() == "just for you"


def test_idle_websockets_are_parked_and_wake_both_ways(tempestd_factory, redis_server):
    """Idle WebSockets hold no greenlet either: a message published, a message from the
    browser (a ws job), an answer to one socket and a client that leaves all wake them."""
    daemon = tempestd_factory(pubsub={"ws_queue": "wsparked"})
    clients = [WS(daemon.port, "/ws/parkedroom") for _ in range(6)]
    assert all(client.accepted for client in clients)
    subscribed(redis_server, "parkedroom")
    wait_until(lambda: daemon.info()["streams_parked"] == 6, message="6 parked WebSockets")
    publish(redis_server, "parkedroom", '["to every socket"]')
    assert [json.loads(client.receive()) for client in clients] == [["to every socket"]] * 6
    clients[2].send("from a parked socket")
    _, raw = redis_server.client().blpop(["wsparked"], timeout=10)
    _, args, respond_to, job_id = json.loads(raw)
    assert args[0]["data"] == "from a parked socket"
    wait_until(lambda: daemon.info()["streams_parked"] == 6, message="parked again")
    host, port = respond_to.rsplit(":", 1)
    assert redis.Redis(host=host, port=int(port)).execute_command("ws", job_id, '"only yours"') == b"OK"
    assert clients[2].receive() == "only yours"
    for client in clients[:3]:
        client.close()
    wait_until(lambda: (daemon.info()["subscribers"], daemon.info()["streams_parked"],
                        daemon.info()["connections_open"]) == (3, 3, 3), message="3 WebSockets forgotten")


def test_websocket_bad_origin_is_refused(tempestd_factory):
    daemon = tempestd_factory(pubsub={"allow_origins": "https://good.example"})
    refused = WS(daemon.port, "/ws/room", origin="https://evil.example")
    assert refused.accepted is False and refused.status == 403
    assert WS(daemon.port, "/ws/room", origin="https://good.example").accepted
    same_site_only = tempestd_factory()
    assert WS(same_site_only.port, "/ws/room", origin="https://evil.example").accepted is False
    assert WS(same_site_only.port, "/ws/room", origin=f"http://127.0.0.1:{same_site_only.port}").accepted


def test_websocket_oversize_message_is_closed_with_1009(tempestd_factory):
    daemon = tempestd_factory(pubsub={"max_frame": "1K"})
    client = WS(daemon.port, "/ws/room")
    client.send("y" * 5000)
    closing = client.receive()
    assert getattr(closing, "code", None) == 1009


def test_websocket_silent_from_one_ping_to_the_next_is_disconnected(tempestd_factory, redis_server):
    daemon = tempestd_factory(pubsub={"heartbeat": "0.3"})
    alive = WS(daemon.port, "/ws/room")
    silent = WS(daemon.port, "/ws/room")
    assert alive.accepted and silent.accepted
    subscribed(redis_server, "room", 1)
    assert alive.pump(2.0) >= 4  # pings answered for 2 s: more than 6 heartbeats
    assert silent.pump(3.0, answer_pings=False) is None  # closed by tempestd within 3 heartbeats
    publish(redis_server, "room", '["still here"]')
    assert json.loads(alive.receive()) == ["still here"]
    assert daemon.info()["silent_clients_dropped"] == 1


def test_1000_concurrent_subscribers(tempestd_factory, redis_server):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2500:
        pytest.skip(f"open-file limit {hard} is too low for 1000 subscribers")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    daemon = tempestd_factory()  # inherits the raised limit
    selector = selectors.DefaultSelector()
    buffers = {}
    try:
        for _ in range(1000):
            sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
            sock.sendall(b"GET /sub/crowd HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
            buffers[sock] = b""
        wait_until(lambda: daemon.info()["subscribers"] == 1000, 30, 0.1, message="1000 subscribers")
        subscribed(redis_server, "crowd")
        assert publish(redis_server, "crowd", '["to everyone"]') == 1
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(b"data: to everyone" in b for b in buffers.values()):
            for key, _ in selector.select(0.5):
                buffers[key.fileobj] += key.fileobj.recv(65536)
        assert sum(b"data: to everyone" in b for b in buffers.values()) == 1000
    finally:
        for sock in buffers:
            sock.close()


def test_a_message_published_right_after_the_stream_opens_always_arrives(pub, redis_server):
    """The head (EventSource's open) goes out only once Redis confirmed the subscription: 1,000
    streams, each published to as soon as its head is read, on fresh channels and on one channel
    whose last subscriber has just left (its UNSUBSCRIBE may still be in flight)."""
    client = redis_server.client()
    lost = []
    for i in range(1000):
        channel = "churn" if i % 2 else f"fresh.{i}"
        with socket.create_connection(("127.0.0.1", pub.port), timeout=5) as sock:
            sock.sendall(f"GET /sub/{channel} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            received = b""
            while b": ok\n\n" not in received:
                received += sock.recv(65536)
            client.publish(channel, json.dumps([f"m{i}"]))
            sock.settimeout(2)
            try:
                while f"data: m{i}\n".encode() not in received:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    received += chunk
            except socket.timeout:
                pass
            if f"data: m{i}\n".encode() not in received:
                lost.append(i)
    assert not lost, f"{len(lost)} of 1000 messages lost, the first at {lost[:5]}"


def test_a_subscription_redis_cannot_confirm_is_a_503(tempestd_factory, tmp_path):
    own = RedisServer(tmp_path / "r").start()
    daemon = tempestd_factory(redis_url=own.url)
    own.stop()  # the relay cannot subscribe anything now
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=15) as sock:
        sock.sendall(b"GET /sub/nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert time.monotonic() - started >= 4  # it waited (CONFIRM_TIMEOUT, 5 s) for a reconnection


def test_a_websocket_origin_is_checked_against_the_address_not_the_host_header(tempestd_factory):
    """Without allow_origins, a page of another name is refused even when it sends a Host
    header that matches its Origin (DNS rebinding: evil.example resolving to this server)."""
    daemon = tempestd_factory()
    rebinding = WS(daemon.port, "/ws/room", origin=f"http://evil.example:{daemon.port}",
                   host=f"evil.example:{daemon.port}")
    assert rebinding.accepted is False
    assert WS(daemon.port, "/ws/room", origin=f"http://localhost:{daemon.port}").accepted  # loopback names
    assert WS(daemon.port, "/ws/room").accepted  # no Origin: not a browser


def test_the_browser_example_sends_visitors_to_its_page_at_once(tempestd_factory):
    example = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "examples", "pubsub")
    worker = f"{sys.executable} {os.path.join(example, 'worker.py')} example-ws example-http"
    daemon = tempestd_factory(front={"queue": "example-http", "timeout": "20"},
                              pubsub={"ws_queue": "example-ws"},
                              **{"static:/examples/": {"directory": example}, "worker:chat": {"command": worker}})
    from support import http

    wait_until(lambda: http("GET", daemon.base + "/")[0] == 302, message="the example's worker")
    status, headers, _ = http("GET", daemon.base + "/")
    assert headers["location"] == "/examples/"
    assert http("GET", daemon.base + "/examples")[1]["location"] == "/examples/"
    started = time.monotonic()
    assert http("GET", daemon.base + "/nothing")[0] == 404
    assert time.monotonic() - started < 10  # the worker's 404, not the route's 20 s timeout
    assert b"<" in http("GET", daemon.base + "/examples/")[2]  # the page


def test_idle_streams_are_parked_and_end_cleanly(tempestd_factory, redis_server, tmp_path):
    """An idle SSE stream holds no greenlet (Connection.park): woken by a message the socket
    cannot take at once, by its client leaving, by the heartbeat, by a shutdown; its request
    is logged when it ends, and the connection is forgotten."""
    log = tmp_path / "access.log"
    daemon = tempestd_factory(front={"access_log": str(log)}, pubsub={"heartbeat": "0.5", "client_buffer": "64K"})
    streams = [SSE(daemon.port, "/sub/parked") for _ in range(20)]
    subscribed(redis_server, "parked")
    wait_until(lambda: daemon.info()["streams_parked"] == 20, message="20 parked streams")
    publish(redis_server, "parked", json.dumps(["to all"]))
    for stream in streams:
        assert stream.next_message(10)["data"] == "to all"  # written from the relay, not a greenlet
    heartbeat = streams[0].next(5)
    while heartbeat is not None and "comment" not in heartbeat:
        heartbeat = streams[0].next(5)
    assert heartbeat is not None  # heartbeats reach parked streams
    assert daemon.info()["streams_parked"] == 20

    # a message bigger than the socket takes at once: the rest is written by a greenlet, then parked again
    big = "y" * 300_000
    publish(redis_server, "parked", json.dumps([big]))
    for stream in streams:
        assert stream.next_message(20)["data"] == big
    wait_until(lambda: daemon.info()["streams_parked"] == 20, message="parked again after the big message")

    for stream in streams[:10]:  # clients that leave while parked
        stream.close()
    wait_until(lambda: (daemon.info()["connections_open"], daemon.info()["subscribers"],
                        daemon.info()["streams_parked"]) == (10, 10, 10), message="10 streams forgotten")
    wait_until(lambda: log.exists() and log.read_text().count('"GET /sub/parked HTTP/1.1" 200') == 10, 10,
               message="the 10 ended streams in the access log")

    daemon.stop()  # the 10 left are parked: SIGTERM closes them and tempestd exits
    assert daemon.proc.returncode == 0, daemon.log()
    for stream in streams[10:]:
        event = stream.next(10)
        while event is not None:  # what was in flight, then the end of the stream
            event = stream.next(10)
    assert log.read_text().count('"GET /sub/parked HTTP/1.1" 200') == 20
    assert "Traceback" not in daemon.log()
