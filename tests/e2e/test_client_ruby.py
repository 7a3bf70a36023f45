"""The Ruby worker client (clients/ruby) against a real tempestd and redis-server: the hello
world run from a [worker:] section, streams, sessions, publishing, routing to and from Python
workers, failing handlers, reliable delivery (the default), low-priority jobs, deadlines, SIGTERM, a
Redis restart, and request bodies spooled to a file or to Redis read with context.body."""

from http.client import IncompleteRead
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from support import (REPO, RedisServer, hand_job, http, in_thread, kill_groups, registered, session_cookie, start_worker,
                     stop_group, wait_until)
from sseclient import SSE

pytest.register_assert_rewrite("client_cases")
import client_cases  # noqa: E402

HELLO = os.path.join(REPO, "clients", "ruby", "examples", "hello.rb")
APP = os.path.join(REPO, "tests", "clients", "ruby", "app.rb")
ROUTING = os.path.join(REPO, "tests", "workers", "routing.py")


@pytest.fixture(autouse=True, scope="module")
def ruby_runtime():  # checked once: it starts a ruby
    if shutil.which("ruby") is None:
        support_missing("ruby is not installed")
    check = subprocess.run(["ruby", "-e", 'require "redis"'], capture_output=True, timeout=30)
    if check.returncode != 0:
        support_missing("the redis gem is missing (ruby -e 'require \"redis\"' failed)")


def support_missing(reason):
    import support

    support.missing_runtime(reason)


def start_ruby(args, redis_url, directory, name="ruby", extra_env=None):
    """A Ruby worker in its own session, its output in <directory>/<name>.log."""
    env = {**os.environ, "TEMPEST_REDIS_URL": redis_url, **(extra_env or {})}
    with open(os.path.join(str(directory), f"{name}.log"), "ab") as log:
        return subprocess.Popen(["ruby", *args], env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def queue_name(request):
    return "ruby-" + re.sub(r"[^a-z0-9]", "", request.node.name[5:].lower())[:30]



@pytest.fixture
def workers():
    started = []
    yield started
    kill_groups(started)  # what a test stops gracefully (reliable workers, SIGTERM) it stops itself


@pytest.fixture
def app(redis_server, tmp_path, workers):
    """The Ruby site app for client_cases: its reliable option is --plain
    (Tempest::Worker.new(q, reliable: false)) or --reliable."""
    def start(queues, name, option=None, env=None):
        flags = [f"--{option}"] if option else []
        workers.append(start_ruby([APP, "site", queues, *flags], redis_server.url, tmp_path, name, env))
        return workers[-1]

    return client_cases.App(start, tmp_path)


def serve(tempestd_factory, redis_server, tmp_path, workers, request, front=None, count=1, **sections):
    """tempestd on a queue of this test and ``count`` Ruby site workers on it."""
    queue = queue_name(request)
    daemon = tempestd_factory(front={"queue": queue, "timeout": "5", **(front or {})}, **sections)
    for i in range(count):
        workers.append(start_ruby([APP, "site", queue, queue + "-greet"], redis_server.url, tmp_path, f"site{i}"))
    daemon.queue = queue
    wait_until(lambda: http("GET", daemon.base + "/pid", timeout=5)[0] == 200, timeout=20, interval=0.1,
               message="the ruby worker serving")
    return daemon


# 1. the hello world under tempestd


def test_hello_world_from_a_worker_section(tempestd_factory, request):
    queue = queue_name(request)
    daemon = tempestd_factory(front={"queue": queue, "timeout": "15"},
                              **{"worker:hello": {"command": f"ruby {HELLO} {queue}", "numprocs": "2"}})
    # the job waits in the queue until a worker takes it: the first answer is its worker's first
    status, headers, body = http("GET", daemon.base + "/", timeout=20)
    assert (status, body) == (200, b"Hello from ruby #1")
    assert headers["content-type"] == "text/plain"
    wait_until(lambda: [row["state"] for row in daemon.status().values()] == ["RUNNING", "RUNNING"],
               timeout=20, message="two hello workers running")
    pids = {row["pid"] for row in daemon.status().values()}
    assert len(pids) == 2
    counts = []
    for _ in range(6):
        status, _, body = http("GET", daemon.base + "/")
        assert status == 200
        counts.append(int(re.fullmatch(rb"Hello from ruby #(\d+)", body).group(1)))
    assert all(1 <= n <= 7 for n in counts)  # each process counts its own answers
    assert daemon.info()["responses_2xx"] == 7


def test_hello_world_counts_its_answers(tempestd_factory, redis_server, tmp_path, workers, request):
    queue = queue_name(request)
    daemon = tempestd_factory(front={"queue": queue, "timeout": "15"})
    workers.append(start_ruby([HELLO, queue], redis_server.url, tmp_path, "hello"))
    bodies = [http("GET", daemon.base + "/", timeout=20)[2] for _ in range(3)]
    assert bodies == [b"Hello from ruby #1", b"Hello from ruby #2", b"Hello from ruby #3"]


def test_hello_world_authenticates_to_the_answer_endpoint(tempestd_factory, request):
    queue = queue_name(request)
    daemon = tempestd_factory(front={"queue": queue, "timeout": "15", "answer_password": "s3cret"},
                              **{"worker:hello": {"command": f"ruby {HELLO} {queue}"}})
    assert http("GET", daemon.base + "/", timeout=20)[::2] == (200, b"Hello from ruby #1")


# 2. streamed answers


def read_chunked(port, path, timeout=5):
    """GET path over a raw socket: (the bytes received until the server closed, the times
    the pieces arrived)."""
    import socket

    received, times = b"", []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        start = time.monotonic()
        try:
            while chunk := sock.recv(65536):
                received += chunk
                times.append(time.monotonic() - start)
        except socket.timeout:
            received += b"<silence>"
    return received, times


def test_a_streamed_answer_arrives_in_pieces(tempestd_factory, redis_server, tmp_path, workers, request):
    daemon = serve(tempestd_factory, redis_server, tmp_path, workers, request)
    received, times = read_chunked(daemon.port, "/stream")
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Transfer-Encoding: chunked" in head
    assert body == b"4\r\none\n\r\n4\r\ntwo\n\r\n6\r\nthree\n\r\n0\r\n\r\n"  # complete
    assert len(times) >= 2 and times[-1] - times[0] >= 0.15  # the pieces came as they were written
    status, _, whole = http("GET", daemon.base + "/stream")
    assert (status, whole) == (200, b"one\ntwo\nthree\n")


def test_a_stream_whose_handler_fails_is_cut(tempestd_factory, redis_server, tmp_path, workers, request):
    daemon = serve(tempestd_factory, redis_server, tmp_path, workers, request)
    started = time.monotonic()
    received, _ = read_chunked(daemon.port, "/abort")
    assert time.monotonic() - started < 3  # at once, not after the route's timeout
    assert received.endswith(b"8\r\npartial\n\r\n")  # cut: no last chunk
    with pytest.raises(IncompleteRead):
        http("GET", daemon.base + "/abort")
    assert http("GET", daemon.base + "/pid")[0] == 200  # the worker lives on


# 3. sessions


def test_sessions_are_written_read_and_regenerated(tempestd_factory, redis_server, tmp_path, workers, request,
                                                    redis_client):
    daemon = serve(tempestd_factory, redis_server, tmp_path, workers, request,
                   front={"session_cookie": "sid", "session_ttl": "600", "session_secret": "client-tests-secret-0123456789"})
    status, headers, body = http("GET", daemon.base + "/session/write?v=alice")
    sid, value = session_cookie(headers)
    assert status == 200 and sid and body == f"written {sid}".encode()
    key = f"session:{sid}"
    assert redis_client.hget(key, "user") == b'["alice"]'  # the 2012 format
    assert 0 < redis_client.ttl(key) <= 600
    redis_client.hset(key, "color", json.dumps(["blue"]))  # written by someone else
    cookie = {"Cookie": f"sid={value}"}
    status, headers, body = http("GET", daemon.base + "/session/read", headers=cookie)
    assert status == 200 and json.loads(body) == {"user": "alice", "color": "blue"}
    assert "set-cookie" not in headers  # the id is known already

    status, headers, body = http("GET", daemon.base + "/session/regenerate", headers=cookie)
    old, new = body.decode().split()
    assert status == 200 and old == sid and new != sid
    new_id, new_value = session_cookie(headers)
    assert new_id == new and "x-tempest-session" not in headers
    assert not redis_client.exists(key) and redis_client.hget(f"session:{new}", "user") == b'["alice"]'
    status, _, body = http("GET", daemon.base + "/session/read", headers={"Cookie": f"sid={new_value}"})
    assert json.loads(body) == {"user": "alice", "color": "blue"}
    status, headers, body = http("GET", daemon.base + "/session/read", headers=cookie)
    assert json.loads(body) == {}  # the old id no longer works (its cookie still verifies: an empty session)


# 4. publish


def test_published_messages_reach_sse_clients(tempestd_factory, redis_server, tmp_path, workers, request,
                                              redis_client):
    daemon = serve(tempestd_factory, redis_server, tmp_path, workers, request,
                   pubsub={"durable": "rubydur.*", "history": "10"})
    channel = daemon.queue + "-news"
    sse = SSE(daemon.port, f"/sub/{channel},rubydur.{daemon.queue}")
    assert sse.status_line.startswith("HTTP/1.1 200")
    assert sse.next() == {"comment": "ok"}
    wait_until(lambda: redis_client.pubsub_numsub(channel)[0][1] >= 1, message="the relay subscribed")
    status, _, body = http("GET", daemon.base + f"/publish?ch={channel}&data=hello+from+ruby")
    assert status == 200 and int(body) >= 1
    event = sse.next_message()
    assert event == {"data": "hello from ruby"}
    # a durable channel: kept in its stream, with an id
    status, _, body = http("GET", daemon.base + f"/publish?ch=rubydur.{daemon.queue}&data=kept&event=note")
    stream_id = body.decode()
    assert status == 200 and re.fullmatch(r"\d+-\d+", stream_id)
    [(entry_id, fields)] = redis_client.xrange(f"tempest:stream:{{rubydur.{daemon.queue}}}")
    assert entry_id.decode() == stream_id and json.loads(fields[b"m"]) == ["note", "kept"]
    event = sse.next_message()
    sse.close()
    assert event["data"] == "kept" and event["event"] == "note" and stream_id in event["id"]


# 5. routing between Ruby and Python workers


def test_forward_to_a_python_worker(tempestd_factory, redis_server, tmp_path, workers, request):
    daemon = serve(tempestd_factory, redis_server, tmp_path, workers, request)
    workers.append(start_worker([ROUTING, "greeter", daemon.queue + "-greet"], redis_server.url, tmp_path, "greeter"))
    status, _, body = http("GET", daemon.base + "/forward")
    ruby_pid = int(http("GET", daemon.base + "/pid")[2].split()[1])
    assert (status, body) == (200, f"greeted /forward from {ruby_pid}".encode())


def test_forward_from_a_python_worker(tempestd_factory, redis_server, tmp_path, workers, request):
    queue = queue_name(request)
    daemon = tempestd_factory(front={"queue": queue, "timeout": "5"})
    workers.append(start_worker([ROUTING, "front", queue, queue + "-greet"], redis_server.url, tmp_path, "front"))
    greeter = start_ruby([APP, "greeter", queue + "-greet"], redis_server.url, tmp_path, "greeter")
    workers.append(greeter)
    status, _, body = http("GET", daemon.base + "/hello", timeout=10)
    assert status == 200 and re.fullmatch(rb"ruby greeted /hello from \d+", body)
    started = time.monotonic()
    status, _, body = http("GET", daemon.base + "/fail")  # the Ruby greeter raises: 500 under greet
    assert (status, body) == (500, b"500 Internal Server Error\n") and time.monotonic() - started < 3
    assert daemon.info()["answers_dropped"] == 0


def test_gather_from_two_python_parts(tempestd_factory, redis_server, tmp_path, workers, request, redis_client):
    daemon = serve(tempestd_factory, redis_server, tmp_path, workers, request)
    squares = [f"{daemon.queue}-sq{i}" for i in range(2)]
    workers += [start_worker([ROUTING, "squarer", q], redis_server.url, tmp_path, q) for q in squares]
    status, headers, body = http("GET", daemon.base + f"/gather?q={','.join(squares)}")
    assert (status, body, headers["x-missing"]) == (200, b"5", "")  # 1 + 4
    status, headers, body = http("GET", daemon.base + f"/gather?q={squares[0]},silent&timeout=0.5")
    assert (status, body, headers["x-missing"]) == (200, b"1", "1")  # the silent part is nil
    assert not redis_client.keys("tempest:gather:*")  # the gatherer removed its stream
    redis_client.delete("silent")


# 6. a failing handler


def test_a_failing_handler_answers_500_and_the_worker_serves_on(tempestd_factory, redis_server, tmp_path, workers,
                                                                request, redis_client):
    daemon = serve(tempestd_factory, redis_server, tmp_path, workers, request)
    started = time.monotonic()
    status, headers, body = http("GET", daemon.base + "/boom")
    assert (status, body) == (500, b"500 Internal Server Error\n") and headers["content-type"] == "text/plain"
    assert time.monotonic() - started < 3  # at once, not after the route's 5 s
    redis_client.rpush(daemon.queue, b"not json", json.dumps(["nope", [], None, "x"]))  # dropped, and no handler
    assert http("GET", daemon.base + "/pid")[0] == 200
    # a job pushed by hand with a number for its id: answered under its decimal string
    dropped = daemon.info()["answers_dropped"]
    env = {"method": "GET", "url": "/pid", "headers": {}}
    redis_client.rpush(daemon.queue, hand_job("url", [env], f"127.0.0.1:{daemon.answer_port}", 17))
    wait_until(lambda: daemon.info()["answers_dropped"] == dropped + 1, timeout=10)  # no such job: dropped
    assert "dropped answer url 17:" in daemon.log()
    assert http("GET", daemon.base + "/pid")[0] == 200
    assert workers[0].poll() is None
    with open(tmp_path / "site0.log") as log:
        text = log.read()
    assert "asked to fail" in text and "dropped malformed job" in text


# 7. reliable delivery


def test_the_job_of_a_killed_reliable_worker_is_answered_by_another(tempestd_factory, redis_server, tmp_path,
                                                                    workers, request, redis_client):
    queue = queue_name(request)
    daemon = tempestd_factory(front={"queue": queue, "timeout": "20", "redeliver_interval": "0.5"})
    args, env = [APP, "site", queue, "--reliable"], {"TEMPEST_TEST_HEARTBEAT": "1"}
    first = start_ruby(args, redis_server.url, tmp_path, "first", env)
    workers.append(first)
    wait_until(lambda: len(registered(redis_client, queue)) == 1, timeout=15)
    thread, result = in_thread(http, "GET", daemon.base + "/slow?s=1.5", timeout=30)
    wait_until(lambda: redis_client.llen(f"started:{queue}") == 1, timeout=10)
    first_id = registered(redis_client, queue)[0].decode().split(" ", 1)[1]
    assert redis_client.llen(f"tempest:processing:{{{queue}}}:{first_id}") == 1  # the job in hand
    assert redis_client.pttl(f"tempest:alive:{first_id}") <= 1000
    second = start_ruby(args, redis_server.url, tmp_path, "second", env)
    workers.append(second)
    wait_until(lambda: len(registered(redis_client, queue)) == 2, timeout=15)
    os.killpg(first.pid, signal.SIGKILL)  # in the middle of the job
    first.wait(10)
    thread.join(25)
    status, _, body = result["value"]
    assert (status, body) == (200, f"done by {second.pid}".encode())
    assert redis_client.hvals(f"tempest:deliveries:{{{queue}}}") == [b"1"]  # given back once (this queue's count)
    wait_until(lambda: len(registered(redis_client, queue)) == 1, timeout=10)  # the dead one is forgotten
    stop_group(second)
    assert second.returncode == 0
    assert registered(redis_client, queue) == [] and not redis_client.keys(f"tempest:processing:{{{queue}}}:*")


def test_reliable_is_the_default_and_tempest_reliable_0_opts_out(app, redis_client, request):
    client_cases.reliable_is_the_default(redis_client, app, queue_name(request))


@pytest.mark.parametrize("mode", ["reliable", "plain"])
def test_low_priority_jobs_are_taken_once_the_queue_is_empty(app, redis_client, request, mode):
    client_cases.low_jobs_after_the_queue(redis_client, app, queue_name(request), mode)


def test_a_job_past_its_deadline_is_dropped_without_running(app, redis_client, request):
    client_cases.late_jobs_are_dropped(redis_client, app, queue_name(request))


# 8. SIGTERM


def test_sigterm_finishes_the_job_then_exits_0(tempestd_factory, redis_server, tmp_path, workers, request,
                                               redis_client):
    daemon = serve(tempestd_factory, redis_server, tmp_path, workers, request)
    worker = workers[0]
    thread, result = in_thread(http, "GET", daemon.base + "/slow?s=1.5")
    wait_until(lambda: redis_client.llen(f"started:{daemon.queue}") == 1, timeout=10)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(10) == 0
    thread.join(10)
    assert result["value"][0] == 200 and result["value"][2] == f"done by {worker.pid}".encode()


# 9. Redis restarted under the worker


def test_the_worker_serves_again_after_redis_restarts(tempestd_factory, tmp_path, workers, request):
    server = RedisServer(tmp_path / "own-redis").start()
    try:
        queue = queue_name(request)
        daemon = tempestd_factory(redis_url=server.url, front={"queue": queue, "timeout": "3"})
        worker = start_ruby([APP, "site", queue], server.url, tmp_path, "site")
        workers.append(worker)
        status, _, body = http("GET", daemon.base + "/pid", timeout=10)
        assert status == 200
        server.stop()
        wait_until(lambda: http("GET", daemon.base + "/pid")[0] == 503, timeout=10, interval=0.1)
        server = RedisServer(tmp_path / "own-redis", port=server.port).start()

        def served():
            answer = http("GET", daemon.base + "/pid")
            return answer if answer[0] == 200 else None

        again = wait_until(served, timeout=20, interval=0.2, message="served again")
        assert again[2] == body  # the same process
        assert worker.poll() is None
        with open(tmp_path / "site.log") as log:
            assert "Redis unreachable" in log.read()
    finally:
        server.stop()


# 10. spooled request bodies (issue 11, item 3)


@pytest.fixture
def spooling(app, tempestd_factory):
    """tempestd with a file-spooling and a Redis-spooling route, one Ruby site worker on them."""
    daemon = client_cases.spooling_front(tempestd_factory, "ruby")
    app.start(daemon.queue, "site")
    wait_until(lambda: http("GET", daemon.base + "/pid", timeout=5)[0] == 200, timeout=20, interval=0.1,
               message="the ruby worker serving")
    return daemon


@pytest.mark.parametrize("reader", ["each", "read", "whole"])
@pytest.mark.parametrize("route, form", client_cases.SPOOLED)
def test_a_spooled_upload_is_read_by_the_handler(spooling, route, form, reader):
    client_cases.a_spooled_upload_is_read(spooling, route, form, reader)


@pytest.mark.parametrize("reader", ["each", "read", "whole"])
def test_an_inline_body_is_read_the_same_way(spooling, reader):
    client_cases.inline_bodies_are_read(spooling, reader)


@pytest.mark.parametrize("reader", ["each", "whole"])
def test_a_spooled_body_gone_or_not_as_its_token_says_is_body_gone(spooling, redis_client, tmp_path, reader):
    client_cases.a_body_gone_is_410(redis_client, spooling.queue, tmp_path, reader)


def test_the_redis_password_stays_out_of_logs_and_argv(app, tempestd_factory, tmp_path):
    client_cases.the_redis_password_stays_out_of_logs_and_argv(app, tempestd_factory, tmp_path, "ruby-secret", "/pid")


# 11. Redis Cluster (docs/protocol.md, section 7): jobs pushed by hand (tempestd's own cluster
# mode is not used here), answers caught by client_cases.answer_of

CLUSTER_APP = r'''
# A Ruby worker on a Redis Cluster, for tests/e2e/test_client_ruby.py: ruby app.rb Q1,Q2 [--plain|--reliable]
# /record?list=L&tag=T: RPUSH L "T <length of this worker's processing list of each queue, /-separated>";
# /slow?s=&started=L: RPUSH L its pid, then works s seconds; /session/regenerate: "<old> <new>";
# /publish?ch=&data=: the stream id or subscriber count; /digest: the body's size and SHA-256.
require "digest"
require "tempest/worker"
require "uri"

queues = ARGV[0].split(",")
reliable = ARGV.include?("--plain") ? false : ARGV.include?("--reliable") ? true : nil
worker = Tempest::Worker.new(queues, reliable: reliable, heartbeat: Float(ENV.fetch("TEMPEST_TEST_HEARTBEAT", "15")))
worker.on("url") do |context, env|
  path, _, query = env["url"].partition("?")
  params = URI.decode_www_form(query).to_h
  case path
  when "/record"
    held = queues.map { |q| worker.redis.call("LLEN", "tempest:processing:{#{q}}:#{worker.worker_id}") }
    worker.redis.call("RPUSH", params["list"], "#{params['tag']} #{held.join('/')}")
    [200, {}, "recorded"]
  when "/slow"
    worker.redis.call("RPUSH", params["started"], Process.pid.to_s)
    sleep(Float(params.fetch("s", "30")))
    [200, {}, "slow done by #{Process.pid}"]
  when "/session/regenerate"
    old = context.session.id
    [200, {}, "#{old} #{context.session.regenerate}"]
  when "/publish"
    [200, {}, worker.publish(params["ch"], params["data"]).to_s]
  when "/digest"
    data = context.body(&:read)
    [200, {}, JSON.generate(size: data.bytesize, sha256: Digest::SHA256.hexdigest(data))]
  end
end
worker.run
'''


@pytest.fixture
def cluster_app(shared_cluster, tmp_path, workers):
    """CLUSTER_APP on the session's cluster, for client_cases: --plain or --reliable."""
    script = tmp_path / "cluster_app.rb"
    script.write_text(CLUSTER_APP)
    lib = os.path.join(REPO, "clients", "ruby", "lib")

    def start(queues, name, option=None, env=None):
        flags = [f"--{option}"] if option else []
        workers.append(start_ruby(["-I", lib, str(script), queues, *flags], shared_cluster.url, tmp_path, name, env))
        return workers[-1]

    return client_cases.App(start, tmp_path)


def in_different_slots(cluster, names):
    """A tag such that the names made by ``names(tag)`` have each their own master."""
    for _ in range(100):
        tag = os.urandom(3).hex()
        if len({cluster.master_of(name).port for name in names(tag)}) == len(names(tag)):
            return tag
    raise AssertionError("no names with a master each")


@pytest.mark.parametrize("mode", ["reliable", "plain"])
def test_on_a_cluster_one_worker_takes_from_queues_in_different_slots(shared_cluster, cluster_app, mode):
    """Two queues on two masters: a plain worker cannot BLPOP them together (CROSSSLOT), it takes
    from each in turn; both modes take the queues in order, then their low lists."""
    client = shared_cluster.client()
    tag = in_different_slots(shared_cluster, lambda tag: [f"rbcl{tag}-{mode}-a", f"rbcl{tag}-{mode}-b"])
    client_cases.low_jobs_after_the_queues(client, cluster_app, f"rbcl{tag}", mode)
    assert "Redis refused" not in cluster_app.log("prio") and "unreachable" not in cluster_app.log("prio")


def test_on_a_cluster_reliable_delivery_sessions_publish_and_bodies(shared_cluster, cluster_app):
    """One reliable worker on two queues of two masters: a session regenerated (its hash and
    grants copied to the new id's slots), a durable publish (routed by its stream's key, heard
    on another node), a body spooled to Redis, and, killed mid-job, its job left in its
    processing list on the queue's master."""
    client = shared_cluster.client()
    tag = in_different_slots(shared_cluster, lambda tag: [f"rbcl{tag}-a", f"rbcl{tag}-b",
                                                          f"tempest:stream:{{rbcl{tag}.news}}"])
    a, b, channel = f"rbcl{tag}-a", f"rbcl{tag}-b", f"rbcl{tag}.news"
    worker = cluster_app.start(f"{a},{b}", "reliable", "reliable", {"TEMPEST_TEST_HEARTBEAT": "1"})
    wait_until(lambda: len(registered(client, a)) == len(registered(client, b)) == 1, 15, message="registered")
    worker_id = registered(client, a)[0].decode().split(" ", 1)[1]
    old, new = ("A" * 16 + tag)[:22], None
    client.hset(f"session:{old}", "user", json.dumps(["alice"]))
    client.sadd(f"tempest:grants:{old}", "user.alice.*")
    client.set("tempest:pubsub:durable", json.dumps([[f"rbcl{tag}.*", 10]]))
    listener = shared_cluster.nodes[-1].client().pubsub()  # any node hears every PUBLISH
    body_key = f"tempest:body:{{rbcl{tag}}}"
    try:
        status, _, answer = client_cases.answer_of(client, a, {"method": "GET", "url": "/session/regenerate",
                                                              "headers": {}, "session": {"id": old, "ttl": 600}})
        assert status == 200 and answer.split()[0] == old
        new = answer.split()[1]
        assert client.hgetall(f"session:{new}") == {b"user": b'["alice"]'} and 0 < client.ttl(f"session:{new}") <= 600
        assert client.smembers(f"tempest:grants:{new}") == {b"user.alice.*"}
        assert not client.exists(f"session:{old}") and not client.exists(f"tempest:grants:{old}")

        listener.subscribe(channel)
        wait_until(lambda: listener.get_message(timeout=0.1), message="subscribed")
        status, _, stream_id = client_cases.answer_of(client, b, {"method": "GET", "headers": {},
                                                                 "url": f"/publish?ch={channel}&data=kept"})
        assert status == 200 and re.fullmatch(r"\d+-\d+", stream_id)
        [(entry_id, fields)] = client.xrange(f"tempest:stream:{{{channel}}}")
        assert (entry_id.decode(), json.loads(fields[b"m"])) == (stream_id, ["kept"])
        heard = wait_until(lambda: listener.get_message(timeout=0.1), message="the durable message heard")
        assert json.loads(heard["data"]) == ["$durable", stream_id, '["kept"]']

        data = os.urandom(client_cases.CHUNK + 1000)
        client.rpush(body_key, data[:client_cases.CHUNK], data[client_cases.CHUNK:])
        token = {"key": body_key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "chunks": 2}
        status, _, answer = client_cases.answer_of(client, b, {"method": "POST", "url": "/digest", "headers": {},
                                                              "body_key": token})
        assert (status, json.loads(answer)) == (200, {"size": len(data), "sha256": token["sha256"]})

        started = f"rbcl{tag}-started"
        client.rpush(b, hand_job("url", [{"method": "GET", "url": f"/slow?started={started}",
                                                       "headers": {}}], job_id="slow"))
        wait_until(lambda: client.llen(started) == 1, 10, message="the slow job started")
        processing = f"tempest:processing:{{{b}}}:{worker_id}"
        master = shared_cluster.master_of(b).client()  # a plain client of that node: no redirection
        assert master.llen(processing) == 1 and shared_cluster.master_of(a).port != shared_cluster.master_of(b).port
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
        wait_until(lambda: not client.exists(f"tempest:alive:{worker_id}"), 5, message="the heartbeat expired")
        assert json.loads(master.lindex(processing, 0))[3] == "slow"  # still there, for tempestd to give back
    finally:
        listener.close()
        client.delete(f"session:{old}", f"tempest:grants:{old}", f"session:{new}", f"tempest:grants:{new}",
                      "tempest:pubsub:durable", body_key,
                      f"tempest:stream:{{{channel}}}", f"rbcl{tag}-started", f"tempest:processing:{{{b}}}:{worker_id}",
                      f"tempest:processing:{{{a}}}:{worker_id}")
        client.srem("tempest:workers", f"{a} {worker_id}", f"{b} {worker_id}")
