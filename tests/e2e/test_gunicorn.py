"""The gunicorn worker class end to end: a real gunicorn arbiter (``-k tempest.gunicorn.Worker``)
as a subprocess in its own session, real tempestd, real Redis, the WSGI app of
tests/workers/wsgiapp.py. gunicorn's features under tempest: --preload, --timeout (a stuck
worker killed, its GET served by another, its POST answered and not run twice), a worker killed
with SIGKILL, --max-requests with jitter, HUP and TERM, QUIT, supervision by tempestd."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from support import REPO, http, in_thread, missing_runtime, stop_group, wait_until

from tempest import keys

WORKERS_DIR = os.path.join(REPO, "tests", "workers")


def gunicorn_command():
    """The installed console script (smoke-tests its entry point), else -m gunicorn."""
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        missing_runtime("gunicorn is not installed (pip install gunicorn)")
    found = shutil.which("gunicorn", path=os.path.dirname(sys.executable))
    return [found] if found else [sys.executable, "-m", "gunicorn"]


def worker_line(*options, app="wsgiapp:application"):
    """The gunicorn command line of these tests: two workers unless told, gunicorn's control
    socket off (it would be shared by every gunicorn of the user), loopback port 0 (a free one,
    never accepted on)."""
    return [*gunicorn_command(), "-k", "tempest.gunicorn.Worker", "-b", "127.0.0.1:0", "--no-control-socket",
            "--chdir", WORKERS_DIR, "--graceful-timeout", "10", *options, app]


class Gunicorn:
    """A gunicorn arbiter in its own session, its log (stderr) in a file."""

    def __init__(self, directory, redis_url, queue, *options, env=None, app="wsgiapp:application"):
        self.queue = queue
        self.log_path = os.path.join(str(directory), f"gunicorn-{queue}.log")
        self.markers = os.path.join(str(directory), "markers")
        os.makedirs(self.markers, exist_ok=True)
        self.env = dict(os.environ, TEMPEST_REDIS_URL=redis_url, TEMPEST_QUEUE=queue, WSGIAPP_MARKERS=self.markers,
                        PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.env.update(env or {})
        self.argv = worker_line(*options, app=app)
        self.proc = None

    def start(self):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def run(self, timeout=30):
        """Start and wait for the arbiter to exit: (exit status, log)."""
        self.start()
        try:
            self.proc.wait(timeout)
        finally:
            self.stop()
        return self.proc.returncode, self.log()

    def stop(self):
        if self.proc is not None:
            stop_group(self.proc, signal.SIGTERM, 15)


@pytest.fixture
def gunicorn(tmp_path, redis_server):
    """Start gunicorn arbiters: gunicorn(queue, *options, env=...); all stopped at teardown."""
    started = []

    def start(queue, *options, env=None, app="wsgiapp:application"):
        arbiter = Gunicorn(tmp_path, redis_server.url, queue, *options, env=env, app=app)
        started.append(arbiter)
        return arbiter.start()

    yield start
    for arbiter in started:
        arbiter.stop()


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or before the read
        return False


def registered(client, queue):
    """The pids of the live worker processes registered on ``queue`` (reliable workers)."""
    pids = set()
    for entry in client.smembers(keys.WORKERS):
        name, _, worker_id = entry.decode().partition(" ")
        pid = int(worker_id.split(":")[1])
        if name == queue and alive(pid):
            pids.add(pid)
    return pids


def wait_workers(client, queue, count, timeout=20, not_in=()):
    """Wait for ``count`` live registered workers (none of ``not_in``); returns their pids."""
    def ready():
        pids = registered(client, queue) - set(not_in)
        return pids if len(pids) == count else None
    return wait_until(ready, timeout, 0.05, message=f"{count} workers on {queue}")


def get_json(url, method="GET", timeout=15):
    status, _, body = http(method, url, timeout=timeout)
    assert status == 200, (status, body)
    return json.loads(body)


def runs(arbiter, name):
    """The pids that ran /stick/<name>, in order."""
    path = os.path.join(arbiter.markers, name)
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [int(pid) for pid in handle.read().split()]


def held(client, queue):
    """Jobs of ``queue`` held in processing lists (taken, not finished)."""
    return sum(client.llen(key) for key in client.keys(keys.processing(queue, "*")))


def test_requests_through_the_gateway_and_idle_workers_live(tempestd_factory, gunicorn, redis_client):
    daemon = tempestd_factory(front={"queue": "g-basic"})
    arbiter = gunicorn("g-basic", "-w", "2", "--timeout", "2")
    pids = wait_workers(redis_client, "g-basic", 2)
    status, _, body = http("POST", daemon.base + "/echo/x%20y?a=1", body="h\u00e9".encode(),
                           headers={"X-Thing": "yes", "Content-Type": "text/plain"})
    assert status == 200
    seen = json.loads(body)  # the environ of tempest.wsgi, checked by wsgiref's validator
    assert (seen["REQUEST_METHOD"], seen["PATH_INFO"], seen["QUERY_STRING"]) == ("POST", "/echo/x y", "a=1")
    assert seen["body"].encode("latin-1") == "h\u00e9".encode() and seen["HTTP_X_THING"] == "yes"
    assert http("GET", daemon.base + "/boom")[0] == 500
    served = {get_json(daemon.base + "/pid")["pid"] for _ in range(20)}
    assert served == pids
    for answer in (get_json(daemon.base + "/pid") for _ in range(4)):
        assert answer["imported_by"] == answer["pid"] and answer["ppid"] == arbiter.pid  # no --preload
    time.sleep(4)  # idle twice as long as --timeout: notified every second, nobody killed
    assert registered(redis_client, "g-basic") == pids
    assert "WORKER TIMEOUT" not in arbiter.log()
    assert {get_json(daemon.base + "/pid")["pid"] for _ in range(10)} == pids
    log = arbiter.log()
    assert "tempest: workers take jobs from g-basic on redis://127.0.0.1:" in log
    assert "worker on g-basic (redis://127.0.0.1:" in log  # the library's lines reach gunicorn's log


def test_preload_imports_the_application_once_in_the_arbiter(tempestd_factory, gunicorn, redis_client):
    daemon = tempestd_factory(front={"queue": "g-preload"})
    arbiter = gunicorn("g-preload", "-w", "2", "--preload")
    pids = wait_workers(redis_client, "g-preload", 2)
    answers = [get_json(daemon.base + "/pid") for _ in range(10)]
    assert {a["pid"] for a in answers} == pids
    assert {a["imported_by"] for a in answers} == {arbiter.pid}  # forked from the arbiter that imported it


def test_timeout_kills_a_stuck_worker_its_get_served_by_another(tempestd_factory, gunicorn, redis_client):
    # tempestd would give back a dead worker's jobs only after its 60 s heartbeat: the answer
    # comes from the worker's own give-back when SIGABRT cuts the stuck job short
    daemon = tempestd_factory(front={"queue": "g-timeout", "timeout": "30"})
    arbiter = gunicorn("g-timeout", "-w", "2", "--timeout", "2", env={"TEMPEST_HEARTBEAT": "60"})
    wait_workers(redis_client, "g-timeout", 2)
    start = time.monotonic()
    answer = get_json(daemon.base + "/stick/get", timeout=25)
    elapsed = time.monotonic() - start
    stuck, second = runs(arbiter, "get")
    assert elapsed < 6, elapsed  # --timeout 2, the arbiter's one-second loop, the give-back
    assert answer == {"pid": second, "ppid": arbiter.pid, "imported_by": second, "runs": 2} and second != stuck
    wait_until(lambda: "cut short holding jobs of queue g-timeout: 1 given back, 0 to tempest:dead:{g-timeout}, "
               "0 answered 504" in (log := arbiter.log()) and f"WORKER TIMEOUT (pid:{stuck})" in log, 5)
    assert redis_client.hvals(keys.deliveries("g-timeout")) == [b"1"]  # counted, as tempestd counts
    replaced = wait_workers(redis_client, "g-timeout", 2, not_in=[stuck])  # gunicorn started a new one
    assert not alive(stuck) and second in replaced

    start = time.monotonic()
    status, _, body = http("POST", daemon.base + "/stick/post", timeout=25)
    assert (status, time.monotonic() - start < 6) == (504, True), body
    assert b"not run twice" in body
    [stuck] = runs(arbiter, "post")
    assert f"WORKER TIMEOUT (pid:{stuck})" in arbiter.log()
    wait_workers(redis_client, "g-timeout", 2, not_in=[stuck])
    assert get_json(daemon.base + "/pid")["pid"] != stuck  # the queue serves on
    assert runs(arbiter, "post") == [stuck] and redis_client.llen("g-timeout") == 0
    wait_until(lambda: held(redis_client, "g-timeout") == 0, 5, message="nothing held")  # released after its answer


def test_a_worker_killed_mid_job_has_its_job_given_back_by_the_arbiter(tempestd_factory, gunicorn, redis_client):
    # SIGKILL (the OOM killer): nothing runs in the worker; with a 60 s heartbeat, only the
    # arbiter reaping it can give its job back this soon
    daemon = tempestd_factory(front={"queue": "g-kill", "timeout": "30"})
    arbiter = gunicorn("g-kill", "-w", "2", env={"TEMPEST_HEARTBEAT": "60"})
    wait_workers(redis_client, "g-kill", 2)
    for method, name in (("GET", "get"), ("POST", "post")):
        thread, result = in_thread(http, method, daemon.base + f"/stick/{name}", timeout=25)
        [victim] = wait_until(lambda: runs(arbiter, name), 10, message="the job running")
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        thread.join(25)
        status, _, body = result["value"]
        assert time.monotonic() - killed < 3
        if method == "GET":
            [_, second] = runs(arbiter, name)
            assert status == 200 and json.loads(body)["pid"] == second != victim
        else:
            assert (status, runs(arbiter, name)) == (502, [victim]) and b"not run twice" in body
        wait_until(lambda: f"tempest: worker (pid:{victim}) died holding jobs of queue g-kill" in arbiter.log(), 5)
        wait_workers(redis_client, "g-kill", 2, not_in=[victim])
    assert redis_client.llen("g-kill") == 0
    wait_until(lambda: held(redis_client, "g-kill") == 0, 5, message="nothing held")


def test_max_requests_recycles_workers_without_losing_a_request(tempestd_factory, gunicorn, redis_client):
    daemon = tempestd_factory(front={"queue": "g-recycle"})
    arbiter = gunicorn("g-recycle", "-w", "2", "--max-requests", "5", "--max-requests-jitter", "3")
    wait_workers(redis_client, "g-recycle", 2)
    served, errors = [], []

    def load():
        for _ in range(20):
            status, _, body = http("GET", daemon.base + "/sleep/0.01")
            (served.append(json.loads(body)["pid"]) if status == 200 else errors.append((status, body)))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and len(served) == 80
    counts = {pid: served.count(pid) for pid in set(served)}
    assert len(counts) >= 10, counts  # 80 requests, at most 8 per worker
    assert max(counts.values()) <= 8, counts  # max_requests + jitter, one job at a time
    recycled = [pid for pid in counts if not alive(pid)]
    assert recycled and all(counts[pid] >= 5 for pid in recycled), counts
    log = arbiter.log()
    assert log.count("Autorestarting worker after current request.") >= len(recycled)
    assert "WORKER TIMEOUT" not in log and "exited with code" not in log


def test_hup_reloads_with_zero_failed_requests(tempestd_factory, gunicorn, redis_client):
    daemon = tempestd_factory(front={"queue": "g-hup"})
    arbiter = gunicorn("g-hup", "-w", "2")
    before = wait_workers(redis_client, "g-hup", 2)
    results, stop = [], threading.Event()

    def load():
        while not stop.is_set():
            status, _, body = http("GET", daemon.base + "/sleep/0.005")
            results.append((status, json.loads(body)["pid"] if status == 200 else body))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(results) > 50, 20, message="load running")
        os.kill(arbiter.pid, signal.SIGHUP)
        hupped = len(results)
        after = wait_workers(redis_client, "g-hup", 2, not_in=before)  # a new generation
        wait_until(lambda: not any(alive(pid) for pid in before), 20, message="the old workers gone")
        gone = len(results)
        wait_until(lambda: len(results) > gone + 200, 30, message="load after the reload")
    finally:
        stop.set()
        for thread in threads:
            thread.join(20)
    failed = [r for r in results if r[0] != 200]
    assert failed == [], failed[:5]
    assert gone - hupped >= 5, (hupped, gone)  # requests kept coming while the workers changed (some 60 here)
    assert {pid for _, pid in results[gone + 4:]} <= after and len(results) > 250  # (4: answers in flight)
    assert "Hang up: Master" in arbiter.log()


def test_term_finishes_the_jobs_in_hand(tempestd_factory, gunicorn, redis_client):
    daemon = tempestd_factory(front={"queue": "g-term"})
    arbiter = gunicorn("g-term", "-w", "2")
    pids = wait_workers(redis_client, "g-term", 2)
    calls = [in_thread(http, "GET", daemon.base + "/sleep/2") for _ in range(2)]
    wait_until(lambda: held(redis_client, "g-term") == 2, 10, message="both jobs taken")
    os.kill(arbiter.pid, signal.SIGTERM)
    for thread, result in calls:
        thread.join(15)
        assert result["value"][0] == 200
    assert arbiter.proc.wait(15) == 0
    assert not any(alive(pid) for pid in pids)
    assert registered(redis_client, "g-term") == set() and held(redis_client, "g-term") == 0
    assert arbiter.log().count("worker stopped after 1 jobs") == 2  # the library's clean stop


def test_quick_shutdown_gives_back_the_jobs_in_hand(tempestd_factory, gunicorn, redis_client):
    daemon = tempestd_factory(front={"queue": "g-quit", "timeout": "30"})
    first = gunicorn("g-quit", "-w", "2")
    wait_workers(redis_client, "g-quit", 2)
    get, got = in_thread(http, "GET", daemon.base + "/stick/get", timeout=25)
    post, posted = in_thread(http, "POST", daemon.base + "/stick/post", timeout=25)
    victims = wait_until(lambda: runs(first, "get") + runs(first, "post") if runs(first, "get") and runs(first, "post")
                         else None, 10, message="both jobs running")
    os.kill(first.pid, signal.SIGQUIT)  # quick: the jobs in hand are cut short, not finished
    assert first.proc.wait(10) == 0 and not any(alive(pid) for pid in victims)
    post.join(5)
    status, _, body = posted["value"]
    assert status == 502 and b"not run twice" in body  # answered at once
    assert redis_client.llen("g-quit") == 1  # the GET is back on its queue, its client still waiting
    second = gunicorn("g-quit", "-w", "1")
    get.join(25)
    status, _, body = got["value"]
    assert status == 200 and json.loads(body)["ppid"] == second.pid and json.loads(body)["runs"] == 2
    assert runs(first, "post") == victims[1:]  # run once


def gunicorn_section(queue, tmp_path, *options):
    command = " ".join(worker_line("-w", "2", *options))
    markers = tmp_path / "markers"
    markers.mkdir(exist_ok=True)
    return {"command": command, "startsecs": "0.5", "stopwaitsecs": "15",
            "environment": f"TEMPEST_QUEUE={queue},WSGIAPP_MARKERS={markers},PYTHONPATH={REPO}"}


def test_supervised_by_tempestd(tempestd_factory, redis_client, tmp_path):
    gunicorn_command()
    daemon = tempestd_factory(front={"queue": "g-angel"}, **{"worker:gunicorn": gunicorn_section("g-angel", tmp_path)})
    pids = wait_workers(redis_client, "g-angel", 2)
    arbiter = wait_until(lambda: (row := daemon.status().get("gunicorn:0")) and row["state"] == "RUNNING" and row["pid"])
    answers = [get_json(daemon.base + "/pid") for _ in range(10)]
    assert {a["pid"] for a in answers} == pids and {a["ppid"] for a in answers} == {arbiter}
    # tempest signal HUP gunicorn: the whole group gets it; the workers leave it to the arbiter,
    # which reloads: a new generation, the job in hand finished by the old one
    thread, result = in_thread(http, "GET", daemon.base + "/sleep/1")
    wait_until(lambda: held(redis_client, "g-angel") == 1, 10, message="a job in hand")
    assert daemon.control("SIGNAL", "HUP", "gunicorn") == ["gunicorn:0"]
    thread.join(10)
    assert result["value"][0] == 200 and json.loads(result["value"][2])["pid"] in pids
    pids = wait_workers(redis_client, "g-angel", 2, not_in=pids)
    assert {get_json(daemon.base + "/pid")["pid"] for _ in range(10)} == pids
    assert daemon.status()["gunicorn:0"]["pid"] == arbiter and "was sent SIGHUP" not in daemon.log()
    thread, result = in_thread(http, "GET", daemon.base + "/sleep/1")
    wait_until(lambda: held(redis_client, "g-angel") == 1, 10, message="a job in hand")
    assert daemon.stop() == 0
    thread.join(10)
    assert result["value"][0] == 200  # finished before gunicorn stopped
    assert not alive(arbiter) and not any(alive(pid) for pid in pids)
    assert "[gunicorn:0]" in daemon.log() and "Shutting down: Master" in daemon.log()


def test_workers_do_not_outlive_a_killed_tempestd(tempestd_factory, redis_client, tmp_path):
    gunicorn_command()
    daemon = tempestd_factory(front={"queue": "g-orphan"}, **{"worker:gunicorn": gunicorn_section("g-orphan", tmp_path)})
    pids = wait_workers(redis_client, "g-orphan", 2)
    arbiter = daemon.status()["gunicorn:0"]["pid"]
    os.kill(daemon.proc.pid, signal.SIGKILL)  # the arbiter dies with it (PDEATHSIG); its workers see it
    wait_until(lambda: not alive(arbiter) and not any(alive(pid) for pid in pids), 10,
               message="the arbiter and its workers gone")


@pytest.mark.parametrize("env, line", [
    ({"TEMPEST_PREFETCH": "x"}, "Error: tempest.gunicorn: TEMPEST_PREFETCH: not a positive integer: 'x'"),
    ({"TEMPEST_REDIS_URL": "localhost:6379"}, "Error: tempest.gunicorn: TEMPEST_REDIS_URL: not a redis://"),
    ({"TEMPEST_QUEUE": "a b"}, "Error: tempest.gunicorn: TEMPEST_QUEUE: not a queue name"),
])
def test_bad_settings_are_one_line(tmp_path, redis_server, env, line):
    status, log = Gunicorn(tmp_path, redis_server.url, "g-bad", env=env).run()
    assert status == 1 and line in log and "Traceback" not in log, log


def test_a_missing_application_is_one_line(tmp_path, redis_server):
    status, log = Gunicorn(tmp_path, redis_server.url, "g-bad", app="nosuch.wsgi:application").run()
    assert status == 4, log  # gunicorn's "App failed to load."
    assert "tempest.gunicorn: cannot load the application nosuch.wsgi:application: No module named 'nosuch'" in log
    assert "Traceback" not in log, log


def test_a_gunicorn_config_file(tempestd_factory, gunicorn, redis_client, tmp_path):
    config = tmp_path / "gunicorn.conf.py"
    config.write_text('worker_class = "tempest.gunicorn.Worker"\nworkers = 3\nbind = "127.0.0.1:0"\n'
                      'raw_env = ["TEMPEST_QUEUE=g-conf", "TEMPEST_PREFETCH=2"]\n')
    daemon = tempestd_factory(front={"queue": "g-conf"})
    arbiter = gunicorn("", "-c", str(config), env={"TEMPEST_QUEUE": "not-this-one"})
    pids = wait_workers(redis_client, "g-conf", 3)
    assert {get_json(daemon.base + "/pid")["pid"] for _ in range(30)} <= pids
    assert "tempest: workers take jobs from g-conf on redis://127.0.0.1:" in arbiter.log()
    assert "(prefetch 2, reliable delivery)" in arbiter.log()


def test_the_queue_defaults_to_tempest(gunicorn, redis_server):
    # in a database of its own: no other test's jobs on a queue named tempest are taken
    client = redis_server.client(db=7)
    arbiter = gunicorn("", "-w", "1", env={"TEMPEST_REDIS_URL": redis_server.url[:-1] + "7"})
    wait_workers(client, "tempest", 1)
    assert "tempest: workers take jobs from tempest on redis://127.0.0.1:" in arbiter.log()
