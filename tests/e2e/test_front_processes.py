"""Several front processes on one box (issue 17, item 3): ``[front] processes = 2`` runs two
front processes on the one listening socket tempestd binds, each with its own answer endpoint
(the jobs it pushes name it: the echo worker answers with the job's respond_to), relay and admin
listener; tempestd supervises them as ``front:0`` and ``front:1``, restarts one that dies,
passes SIGHUP on, and at SIGTERM lets them drain before it stops the workers."""

import json
import os
import re
import signal
import socket
import sys
import threading
import time

import pytest

from sseclient import SSE
from support import REPO, Tempestd, free_ports_in_a_row, http, wait_until

ECHO = f"{sys.executable} {os.path.join(REPO, 'tests', 'workers', 'echo.py')}"


def ready_port(daemon):
    """The front's port, from tempestd's ready line (not a front process's)."""
    def ready():
        if daemon.proc.poll() is not None:
            raise AssertionError(f"tempestd exited {daemon.proc.returncode}:\n{daemon.log()}")
        return re.search(r"tempestd ready: front on http://127\.0\.0\.1:(\d+)/ in 2 processes", daemon.log())
    daemon.port = int(wait_until(ready, 30, message="tempestd ready").group(1))
    return daemon.port


def front_processes(tmp_path, redis_url, queue, admin_port=None, **sections):
    sections.setdefault("worker__echo", {"command": f"{ECHO} {queue}"})
    if admin_port is not None:
        sections["admin"] = {"listen": f"127.0.0.1:{admin_port}"}
    daemon = Tempestd(tmp_path, redis_url, front={"queue": queue, "processes": "2"}, **sections)
    daemon.start(wait=False)
    ready_port(daemon)
    return daemon


def ask(daemon, path, **options):
    """GET path over a new connection: (status, answer JSON)."""
    status, _, body = http("GET", daemon.base + path, headers={"Connection": "close"}, **options)
    assert status == 200, (status, body)
    return json.loads(body)


def respond_tos(daemon, path="/which", at_least=2, limit=400):
    """The answer addresses of the front processes that pushed the jobs of requests made from 8
    threads at once until ``at_least`` were seen (at most ``limit`` requests, all answered 200)."""
    seen, lock, failures = set(), threading.Lock(), []

    def client():
        for _ in range(limit // 8):
            with lock:
                if len(seen) >= at_least:
                    return
            try:
                answer = ask(daemon, path)
            except AssertionError as exc:
                failures.append(exc)
                return
            with lock:
                seen.add(answer["respond_to"])

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures[:3]
    return seen


def front_pids(daemon):
    status = daemon.status()
    return {name: row["pid"] for name, row in status.items() if name.startswith("front:") and row["pid"]}


def metric(port, name, labels):
    _, _, body = http("GET", f"http://127.0.0.1:{port}/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + "{") and labels in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_two_front_processes_share_the_socket_and_serve_requests_and_streams(redis_server, redis_client, tmp_path):
    admin = free_ports_in_a_row(3)  # tempestd's, then front:0's and front:1's
    daemon = front_processes(tmp_path, redis_server.url, "fp-serve", admin_port=admin)
    try:
        pids = front_pids(daemon)
        assert set(pids) == {"front:0", "front:1"} and len(set(pids.values())) == 2
        assert daemon.proc.pid not in pids.values()
        listeners = {name: _listening(pid) for name, pid in pids.items()}
        assert all(daemon.port in ports for ports in listeners.values()), listeners  # the one socket, inherited
        seen = respond_tos(daemon)
        assert len(seen) == 2, seen  # both processes pushed jobs, each naming its own answer endpoint

        # SSE in every process, each with its own subscription: open streams until both hold some
        streams = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            streams.append(SSE(daemon.port, "/sub/fp-news"))
            counts = [metric(admin + 1 + i, "tempest_pubsub_subscribers", 'kind="sse"') for i in (0, 1)]
            if len(streams) >= 4 and all(counts):
                break
        assert all(counts) and sum(counts) == len(streams), counts
        assert all(stream.status_line.endswith("200 OK") for stream in streams)
        wait_until(lambda: redis_client.pubsub_numsub("fp-news")[0][1] == 2, 10, message="one subscription per process")
        redis_client.publish("fp-news", "to every process")
        for stream in streams:
            event = stream.next(timeout=10)
            while event is not None and "comment" in event:  # the stream's opening comment
                event = stream.next(timeout=10)
            assert event is not None and event.get("data") == "to every process", event
        for stream in streams:
            stream.close()
        # the master's admin listener: every front process RUNNING
        status, _, body = http("GET", f"http://127.0.0.1:{admin}/readyz")
        assert (status, body.splitlines()[1]) == (200, b"ok front"), body
    finally:
        daemon.stop()
    assert daemon.proc.returncode == 0, daemon.log()


def _listening(pid):
    from test_roles import listening_ports

    return listening_ports(pid)


def test_a_killed_front_process_is_restarted_while_the_other_serves(redis_server, tmp_path):
    daemon = front_processes(tmp_path, redis_server.url, "fp-kill")
    try:
        before = respond_tos(daemon)
        assert len(before) == 2, before
        pids = front_pids(daemon)
        os.kill(pids["front:0"], signal.SIGKILL)
        for i in range(30):  # connections wait in the shared backlog for the one left
            ask(daemon, f"/while-down/{i}")
        wait_until(lambda: front_pids(daemon).get("front:0") not in (None, pids["front:0"]), 20,
                   message="front:0 restarted")
        wait_until(lambda: "front process 0 serves again" in daemon.log(), 20, message="the new front:0 serving")
        status = daemon.status()
        assert status["front:0"]["restarts"] == 1 and status["front:1"]["pid"] == pids["front:1"], status
        after = respond_tos(daemon)
        assert len(after) == 2, after  # the new process serves too
        assert "exited: front:0 (terminated by SIGKILL" in daemon.log()
    finally:
        daemon.stop()
    assert daemon.proc.returncode == 0, daemon.log()


def test_hup_reaches_every_front_process_and_term_drains_them_first(redis_server, tmp_path):
    daemon = front_processes(tmp_path, redis_server.url, "fp-hup",
                             worker__echo={"command": f"{ECHO} fp-hup", "numprocs": "2"})  # 8 slow requests at TERM
    try:
        old = ask(daemon, "/r/before")
        daemon.rewrite(front={"queue": "fp-hup", "processes": "2"}, **{
            "route:/r/": {"queue": "fp-hup2"},
            "worker:echo": {"command": f"{ECHO} fp-hup", "numprocs": "2"},
            "worker:echo2": {"command": f"{ECHO} fp-hup2"}})
        os.kill(daemon.proc.pid, signal.SIGHUP)
        wait_until(lambda: daemon.log().count("reloaded") >= 3, 15, message="tempestd and both front processes reloaded")
        wait_until(lambda: daemon.status().get("echo2:0", {}).get("state") == "RUNNING", 15, message="echo2 running")
        seen = {}
        deadline = time.monotonic() + 30
        while len(seen) < 2 and time.monotonic() < deadline:
            answer = ask(daemon, "/r/after")
            seen[answer["respond_to"]] = answer["pid"]
        assert len(seen) == 2, seen  # both processes route /r/ to fp-hup2 now...
        assert len(set(seen.values())) == 1 and old["pid"] not in seen.values()  # ...where echo2 alone answers

        # SIGTERM with slow requests in flight in both processes: all answered, then the workers stop
        results = []

        def slow():
            results.append(ask(daemon, "/sleep/1.5", timeout=20))

        threads = [threading.Thread(target=slow) for _ in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        os.kill(daemon.proc.pid, signal.SIGTERM)
        for thread in threads:
            thread.join(30)
        assert len(results) == 8, results
        assert daemon.proc.wait(30) == 0
        log = daemon.log()
        assert log.index("front process 0 stopped") < log.index("stopped: echo:0")
        assert log.index("front process 1 stopped") < log.index("stopped: echo:0")
    finally:
        daemon.stop()


def test_a_front_process_that_cannot_start_stops_tempestd_with_one_line(redis_server, tmp_path):
    while True:  # a free port whose next one is taken: front process 1 answers on port + 1
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1] - 1
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
                break
            except OSError:
                taken.close()
    try:
        daemon = Tempestd(tmp_path, redis_server.url, front={"processes": "2", "answer_listen": f"127.0.0.1:{port}"})
        daemon.start(wait=False)
        try:
            assert daemon.proc.wait(30) != 0
        finally:
            daemon.stop()  # never left running (it once was, when this failed)
        log = daemon.log()
        assert f"answer endpoint: 127.0.0.1:{port + 1} is already in use" in log
        assert "cannot start: front process 1 exited at start" in log and "Traceback" not in log
    finally:
        taken.close()


@pytest.mark.parametrize("value, problem", [
    ("0", "not a positive integer nor auto"),
    ("many", "not a positive integer nor auto"),
    ("257", "256"),
])
def test_bad_processes_values_are_refused(tmp_path, value, problem):
    import subprocess

    from support import render_ini, tempestd_command

    ini = render_ini(tmp_path / "t.ini", {"front": {"processes": value}})
    proc = subprocess.run(tempestd_command() + ["-c", ini, "--check"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "[front] processes" in proc.stderr and problem in proc.stderr, proc.stderr


def test_restart_front_is_rolling_and_loses_no_request(redis_server, tmp_path):
    """``tempest restart front`` restarts the front processes one after the other, each serving
    again before the next stops: requests made all the while (a new connection each) are all
    answered, and both processes are new."""
    daemon = front_processes(tmp_path, redis_server.url, "fp-rolling")
    try:
        before = front_pids(daemon)
        results, stop = [], threading.Event()

        def load():
            while not stop.is_set():
                try:
                    status, _, _ = http("GET", daemon.base + "/rolling", headers={"Connection": "close"}, timeout=15)
                except OSError as exc:
                    status = repr(exc)
                results.append(status)

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        assert daemon.control("RESTART", "front") == "OK"
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join(30)
        after = front_pids(daemon)
        assert set(after) == {"front:0", "front:1"} and not set(after.values()) & set(before.values()), (before, after)
        failed = [r for r in results if r != 200]
        print(f"rolling restart: {len(results)} requests, {len(failed)} failed: {failed[:5]}")
        assert len(results) > 20 and not failed, failed[:5]
        log = daemon.log()
        assert log.index("restart: front process 0 serves again") < log.index("stopped: front:1")
    finally:
        daemon.stop()
