"""Roles end to end (issue 17, item 1): a front-only tempestd and a worker host (no [front])
sharing one Redis, a request answered across them with the answer password from a file; the
instance ids in the ready lines and ``tempest status``; what a front reachable beyond loopback
is refused or warned about."""

import os
import re
import subprocess
import sys

from support import REPO, Tempestd, http, render_ini, tempestd_command, wait_until

ECHO = f"{sys.executable} {os.path.join(REPO, 'tests', 'workers', 'echo.py')} rolesq"
ANSWER_PASSWORD = "answer-pw-from-file"


def tempest_cli(ini, *args):
    return subprocess.run([sys.executable, "-c", "import sys; from tempest.cli import tempest_main; sys.exit(tempest_main())",
                           *args, "-c", ini], capture_output=True, text=True, timeout=60)


def listening_ports(pid):
    """The TCP ports process ``pid`` listens on (its sockets found in /proc/net/tcp[6])."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def ready_line(daemon):
    def ready():
        if daemon.proc.poll() is not None:
            raise AssertionError(f"tempestd exited {daemon.proc.returncode}:\n{daemon.log()}")
        return next((line for line in daemon.log().splitlines() if "tempestd ready:" in line), None)
    return wait_until(ready, 20, message="tempestd ready")


def worker_host(directory, redis_url):
    """A tempestd with no [front]: its [worker:echo] answers with the password tempestd's
    environment gives it."""
    daemon = Tempestd(directory, redis_url)
    daemon.ini = render_ini(daemon.ini, {
        "tempest": {"run_dir": "run", "log_level": "debug", "name": "workerhost"},
        "redis": {"url": redis_url},
        "worker:echo": {"command": ECHO, "environment": f"TEMPEST_ANSWER_PASSWORD={ANSWER_PASSWORD}"},
    })
    return daemon


def test_a_front_and_a_worker_host_share_a_redis(redis_server, tmp_path):
    secret = tmp_path / "answer.password"
    secret.write_text(ANSWER_PASSWORD + "\n")
    front = Tempestd(tmp_path / "front", redis_server.url,
                     front={"queue": "rolesq", "answer_password_file": str(secret)})
    workers = worker_host(tmp_path / "workers", redis_server.url)
    try:
        front.start()
        workers.start(wait=False)
        line = ready_line(workers)
        assert "a worker host (no front), 1 programs" in line and "role workers" in line
        worker_id = re.search(r"id (\S+) role", line).group(1)
        front_id = re.search(r"id (\S+) role front$", ready_line(front)).group(1)
        assert worker_id != front_id and worker_id.split(":")[1] == str(workers.proc.pid)
        assert listening_ports(workers.proc.pid) == set()  # no front, no answer endpoint, no admin
        assert "pub/sub connected" not in workers.log() and "redeliver" not in workers.log().lower()
        wait_until(lambda: "worker on rolesq" in workers.log(), 30, message="the worker host's worker")
        status, _, body = http("GET", front.base + "/across")
        assert status == 200, body  # pushed by the front, taken on the worker host, answered with the password
        assert ANSWER_PASSWORD not in front.log() + workers.log()

        shown = wait_until(lambda: (lambda out: out if out.returncode == 0 else None)(tempest_cli(workers.ini, "status")),
                           15, interval=0.2, message="echo:0 RUNNING (after startsecs)")
        assert re.search(r"^echo:0\s+RUNNING", shown.stdout, re.MULTILINE)
        assert shown.stdout.splitlines()[-1] == f"instance {worker_id} role workers"
        alone = tempest_cli(front.ini, "status")  # no processes at all: it used to crash in format_table
        assert alone.returncode == 0 and "Traceback" not in alone.stderr, alone.stderr
        assert alone.stdout.splitlines() == ["no processes (no [worker:] section)", f"instance {front_id} role front"]
    finally:
        Tempestd.stop_all([front, workers])
    assert workers.proc.returncode == 0 and "tempestd stopped" in workers.log()


def test_a_loopback_answer_address_behind_a_public_listen_is_refused(redis_server, tmp_path):
    ini = render_ini(tmp_path / "tempest.ini", {"redis": {"url": redis_server.url},
                                                "front": {"listen": "0.0.0.0:0"}})
    for extra in ([], ["--check"]):  # refused before anything binds
        proc = subprocess.run(tempestd_command() + ["-c", ini, *extra], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert "[front] answer_advertise: listen 0.0.0.0:0 reaches beyond this machine" in proc.stderr
    render_ini(ini, {"redis": {"url": redis_server.url},
                     "front": {"listen": "0.0.0.0:0", "answer_advertise": "10.9.8.7:4000"}})
    proc = subprocess.run(tempestd_command() + ["-c", ini, "--check"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_an_answer_endpoint_beyond_loopback_without_a_password_is_warned_about(redis_server, tmp_path):
    open_one = Tempestd(tmp_path / "open", redis_server.url,
                        front={"answer_listen": "0.0.0.0:0", "answer_advertise": "127.0.0.1:9"})
    guarded = Tempestd(tmp_path / "guarded", redis_server.url,
                       front={"answer_listen": "0.0.0.0:0", "answer_advertise": "127.0.0.1:9",
                              "answer_password": "guarded-pw"})
    local = Tempestd(tmp_path / "local", redis_server.url)
    try:
        for daemon in (open_one, guarded, local):
            daemon.start(wait=False)
            ready_line(daemon)
        warning = "WARNING tempest.daemon: the answer endpoint listens on 0.0.0.0:0, beyond loopback, without answer_password"
        assert warning in open_one.log()
        assert "without answer_password" not in guarded.log() and "without answer_password" not in local.log()
    finally:
        Tempestd.stop_all([open_one, guarded, local])
