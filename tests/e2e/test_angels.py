"""Process angels end to end: real children, real signals, the control socket and the CLI."""

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from datetime import datetime

import pytest

from support import REPO, http, tempestd_command, wait_until
from test_front import in_thread

PY = sys.executable
ECHO = f"{PY} {os.path.join(REPO, 'tests', 'workers', 'echo.py')}"


def echo_worker(queue, numprocs=1, **extra):
    return {"command": f"{ECHO} {queue}", "numprocs": str(numprocs), "startsecs": "0.3", **extra}


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def running(daemon, name):
    row = daemon.status().get(name)
    return row if row and row["state"] == "RUNNING" else None


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as handle:
        return int(re.search(r"VmRSS:\s+(\d+)", handle.read()).group(1))


def test_children_get_their_environment(tempestd_factory, redis_server):
    code = "import os; print('ENV', os.environ['TEMPEST_WORKER'], os.environ['TEMPEST_REDIS_URL'], " \
           "os.environ['TEMPEST_ANSWER_ADDRESS'], os.environ['EXTRA'], flush=True); import time; time.sleep(30)"
    daemon = tempestd_factory(**{"worker:envcheck": {"command": f'{PY} -c "{code}"', "numprocs": "2",
                                                     "environment": 'EXTRA="a b"'}})
    for index in (0, 1):
        line = wait_until(lambda: next((l for l in daemon.log().splitlines() if f"[envcheck:{index}] ENV" in l), None))
        assert line.endswith(f"ENV envcheck:{index} {redis_server.url} 127.0.0.1:{daemon.answer_port} a b")


def test_kill_9_under_load_is_back_within_a_second(tempestd_factory):
    daemon = tempestd_factory(front={"queue": "angel", "timeout": "2"}, **{"worker:echo": echo_worker("angel", 2)})
    wait_until(lambda: running(daemon, "echo:0") and running(daemon, "echo:1"), message="two workers")
    results, stop = [], threading.Event()

    def load():
        while not stop.is_set():
            results.append(http("GET", daemon.base + "/sleep/0.01", timeout=10)[0])

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(results) > 50, message="load running")
        victim = daemon.status()["echo:0"]["pid"]
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        row = wait_until(lambda: (r := daemon.status()["echo:0"])["pid"] not in (0, victim) and r, 5, 0.01)
        assert time.monotonic() - killed < 1.0
        assert row["restarts"] == 1 and row["last_exit"] == "terminated by SIGKILL"
        count = len(results)
        wait_until(lambda: len(results) > count + 100, message="load after the restart")
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    failures = [status for status in results if status != 200]
    assert len(failures) <= 1, failures  # at most the request the killed worker held (504)
    assert "exited: echo:0 (terminated by SIGKILL; not expected)" in daemon.log()


def log_times(log, needle):
    stamps = []
    for line in log.splitlines():
        if needle in line:
            stamps.append(datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return stamps


def test_command_that_exits_at_once_goes_fatal_with_backoff(tempestd_factory):
    daemon = tempestd_factory(**{"worker:bad": {"command": f'{PY} -c "raise SystemExit(3)"',
                                                "startsecs": "1", "startretries": "3"}})
    wait_until(lambda: daemon.status()["bad:0"]["state"] == "FATAL", 30, 0.05, message="FATAL")
    log = daemon.log()
    spawns = log_times(log, "spawned: bad:0")
    assert len(spawns) == 4  # the first start and startretries retries
    gaps = [b - a for a, b in zip(spawns, spawns[1:])]
    assert gaps[0] < gaps[1] < gaps[2], gaps  # growing delays
    assert "gave up: bad:0 entered FATAL state" in log
    assert daemon.status()["bad:0"]["last_exit"] == "exit status 3"
    time.sleep(1)
    assert len(log_times(daemon.log(), "spawned: bad:0")) == 4  # no more attempts


def test_sigterm_with_requests_in_flight(tempestd_factory):
    daemon = tempestd_factory(front={"queue": "drain"}, **{"worker:echo": echo_worker("drain", 2)})
    wait_until(lambda: running(daemon, "echo:0") and running(daemon, "echo:1"))
    pids = [row["pid"] for row in daemon.status().values()]
    calls = [in_thread(http, "GET", daemon.base + "/sleep/1") for _ in range(4)]
    wait_until(lambda: daemon.info()["jobs_pushed"] == 4, message="4 jobs pushed")
    os.kill(daemon.proc.pid, signal.SIGTERM)
    for thread, result in calls:
        thread.join(15)
        assert result["value"][0] == 200
    assert daemon.proc.wait(20) == 0
    assert not any(alive(pid) for pid in pids)


def test_sigkill_of_tempestd_leaves_no_child(tempestd_factory, tmp_path):
    port = __import__("support").free_port()
    daemon = tempestd_factory(redis_url=f"redis://127.0.0.1:{port}/0",
                              redis={"embedded": "yes", "data_dir": "data"},
                              **{"worker:echo": echo_worker("orphans", 3)})
    pids = [row["pid"] for row in daemon.status().values()]
    assert len(pids) == 4 and all(pids)  # redis and three workers
    os.kill(daemon.proc.pid, signal.SIGKILL)
    wait_until(lambda: not any(alive(pid) for pid in pids), 10, message="every child gone")


def test_sighup_adds_and_removes_only_what_changed(tempestd_factory):
    daemon = tempestd_factory(front={"queue": "hup"}, **{"worker:keep": echo_worker("hup"),
                                                        "worker:gone": echo_worker("hup")})
    wait_until(lambda: running(daemon, "keep:0") and running(daemon, "gone:0"))
    keep_pid, gone_pid = daemon.status()["keep:0"]["pid"], daemon.status()["gone:0"]["pid"]
    idle = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)  # a keep-alive connection
    idle.sendall(b"GET /before HTTP/1.1\r\nHost: x\r\n\r\n")
    assert idle.recv(65536).startswith(b"HTTP/1.1 200 OK")
    thread, result = in_thread(http, "GET", daemon.base + "/sleep/1.5")  # in flight across the reload
    wait_until(lambda: daemon.info()["jobs_pushed"] >= 2)
    daemon.rewrite(front={"queue": "hup"}, **{"worker:keep": echo_worker("hup"), "worker:new": echo_worker("hup")})
    os.kill(daemon.proc.pid, signal.SIGHUP)
    wait_until(lambda: running(daemon, "new:0") and "gone:0" not in daemon.status(), 15, message="reload applied")
    assert daemon.status()["keep:0"]["pid"] == keep_pid
    assert not alive(gone_pid)
    idle.sendall(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
    assert idle.recv(65536).startswith(b"HTTP/1.1 200 OK")
    idle.close()
    thread.join(15)
    assert result["value"][0] == 200
    assert "reloaded: 1 workers added, 1 removed, 0 changed" in daemon.log()


def test_broken_file_on_reload_keeps_the_old_config(tempestd_factory):
    daemon = tempestd_factory(front={"queue": "broken"}, **{"worker:echo": echo_worker("broken")})
    wait_until(lambda: running(daemon, "echo:0"))
    pid = daemon.status()["echo:0"]["pid"]
    with open(daemon.ini, "a") as handle:
        handle.write("\n[worker:oops]\nnumprocs = x\n")
    with pytest.raises(Exception, match="reload refused"):
        daemon.control("RELOAD")
    os.kill(daemon.proc.pid, signal.SIGHUP)
    wait_until(lambda: daemon.log().count("reload refused") >= 2)
    assert daemon.status()["echo:0"]["pid"] == pid
    assert http("GET", daemon.base + "/still")[0] == 200  # still serving, through the same worker


@pytest.mark.timeout(240)
def test_chatty_child_does_not_grow_tempestd(tempestd_factory, tmp_path):
    # 200 MB on stdout (to a rotated file), and 4 MB without a newline (into tempestd's log);
    # each child says "done" on stderr when it has written everything
    writer = (f"{PY} -c \"import sys; b=b'x'*65535+b'\\\\n'; w=sys.stdout.buffer.write; "
              f"[w(b) for _ in range(3200)]; sys.stdout.flush(); print('done', file=sys.stderr, flush=True); "
              f"import time; time.sleep(120)\"")
    nonl = (f"{PY} -c \"import sys; sys.stdout.write('y'*4000000); sys.stdout.flush(); "
            f"print('done', file=sys.stderr, flush=True); import time; time.sleep(120)\"")
    log_file = tmp_path / "chatty.log"
    daemon = tempestd_factory(tempest={"log_level": "info"}, **{
        "worker:chatty": {"command": writer, "stdout_logfile": str(log_file), "logfile_maxbytes": "1M",
                          "logfile_backups": "1", "startsecs": "0"},
        "worker:nonl": {"command": nonl, "startsecs": "0"}})
    before = rss_kb(daemon.proc.pid)
    cut = "[nonl:0] " + "y" * 8192  # a line without newline is cut every 8 KB, never held whole
    wait_until(lambda: "[chatty:0] done" in (log := daemon.log()) and "[nonl:0] done" in log
               and log.count(cut) == 4000000 // 8192, 180, 0.5,
               message="200 MB written to stdout and 4 MB without newline logged")
    assert daemon.status()["chatty:0"]["state"] == "RUNNING"
    written = os.path.getsize(log_file) + os.path.getsize(f"{log_file}.1")
    assert written <= 2 * 1024 * 1024 + 65536
    assert not os.path.exists(f"{log_file}.2")
    grown = rss_kb(daemon.proc.pid) - before
    assert grown < 20 * 1024, f"tempestd grew by {grown} KB"


def test_stop_escalates_to_sigkill(tempestd_factory):
    stubborn = f"{PY} -c \"import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)\""
    daemon = tempestd_factory(**{"worker:stubborn": {"command": stubborn, "stopwaitsecs": "0.5", "startsecs": "0.2"}})
    wait_until(lambda: running(daemon, "stubborn:0"))
    started = time.monotonic()
    assert daemon.control("STOP", "stubborn") == "OK"
    assert time.monotonic() - started < 5
    row = daemon.status()["stubborn:0"]
    assert row["state"] == "STOPPED" and row["last_exit"] == "terminated by SIGKILL"
    assert "killing: stubborn:0" in daemon.log()


def tempest_cli(daemon, *args):
    command = [os.path.join(os.path.dirname(PY), "tempest")]
    if not os.path.exists(command[0]):
        command = [PY, "-c", "import sys; from tempest.cli import tempest_main; sys.exit(tempest_main())"]
    return subprocess.run(command + [args[0], "-c", daemon.ini, *args[1:]], capture_output=True, text=True, timeout=60)


def test_control_socket_and_cli(tempestd_factory):
    daemon = tempestd_factory(**{"worker:echo": echo_worker("ctl", 2)})
    assert stat.S_IMODE(os.stat(daemon.control_path).st_mode) == 0o600
    wait_until(lambda: running(daemon, "echo:0") and running(daemon, "echo:1"))
    out = tempest_cli(daemon, "status")
    assert out.returncode == 0
    assert out.stdout.splitlines()[0].split() == ["NAME", "STATE", "PID", "UPTIME", "RESTARTS", "LAST_EXIT"]
    assert re.search(r"^echo:1\s+RUNNING\s+\d+", out.stdout, re.MULTILINE)
    pid1 = daemon.status()["echo:1"]["pid"]
    assert tempest_cli(daemon, "stop", "echo:0").returncode == 0
    assert daemon.status()["echo:0"]["state"] == "STOPPED"
    assert daemon.status()["echo:1"]["pid"] == pid1
    assert tempest_cli(daemon, "start", "echo:0").returncode == 0
    wait_until(lambda: running(daemon, "echo:0"))
    assert tempest_cli(daemon, "restart", "echo").returncode == 0
    wait_until(lambda: running(daemon, "echo:1"))
    assert daemon.status()["echo:1"]["pid"] != pid1
    missing = tempest_cli(daemon, "stop", "nope")
    assert missing.returncode == 1 and "no such process: nope" in missing.stderr
    assert tempest_cli(daemon, "reload").returncode == 0
    assert tempest_cli(daemon, "shutdown").returncode == 0
    assert daemon.proc.wait(20) == 0
    assert not os.path.exists(daemon.control_path)
    gone = tempest_cli(daemon, "status")
    assert gone.returncode == 1 and "cannot reach tempestd" in gone.stderr


def test_pidfile_refuses_a_second_tempestd(tempestd_factory, tmp_path):
    pidfile = tmp_path / "tempestd.pid"
    daemon = tempestd_factory(start=False)
    daemon.start(extra_args=["--pidfile", str(pidfile)])
    assert int(pidfile.read_text()) == daemon.proc.pid
    second = subprocess.run(tempestd_command() + ["-c", daemon.ini, "--pidfile", str(pidfile)],
                            capture_output=True, text=True, timeout=30)
    assert second.returncode == 1
    assert f"tempestd already runs with pid {daemon.proc.pid}" in second.stderr
    assert daemon.stop() == 0
    assert not pidfile.exists()


def test_systemd_notify(tempestd_factory, tmp_path):
    path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(20)
    try:
        daemon = tempestd_factory(env={"NOTIFY_SOCKET": path}, **{"worker:echo": echo_worker("sd")})
        assert listener.recv(1024).startswith(b"READY=1")
        os.kill(daemon.proc.pid, signal.SIGHUP)
        assert listener.recv(1024) == b"RELOADING=1"
        assert listener.recv(1024) == b"READY=1"
        os.kill(daemon.proc.pid, signal.SIGTERM)
        assert listener.recv(1024) == b"STOPPING=1"
        assert daemon.proc.wait(20) == 0
    finally:
        listener.close()


def test_embedded_redis_is_restarted_when_it_dies(tempestd_factory):
    port = __import__("support").free_port()
    daemon = tempestd_factory(redis_url=f"redis://127.0.0.1:{port}/0", redis={"embedded": "yes", "data_dir": "data"},
                              front={"queue": "emb2"}, **{"worker:echo": echo_worker("emb2")})
    wait_until(lambda: running(daemon, "echo:0"))
    redis_pid = daemon.status()["redis:0"]["pid"]
    os.kill(redis_pid, signal.SIGKILL)
    wait_until(lambda: daemon.status()["redis:0"]["pid"] not in (0, redis_pid), 10, message="redis respawned")
    assert wait_until(lambda: http("GET", daemon.base + "/back", timeout=5)[0] == 200, 20, 0.2)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs tempestd to run as root")
def test_user_runs_the_child_as_that_user(tempestd_factory):
    import pwd

    nobody = pwd.getpwnam("nobody")
    daemon = tempestd_factory(**{"worker:who": {"command": "id -u", "user": "nobody", "startsecs": "0",
                                                "autorestart": "false"}})
    wait_until(lambda: f"[who:0] {nobody.pw_uid}" in daemon.log(), message="the child's uid logged")
    assert daemon.status()["who:0"]["state"] == "EXITED"


def test_cli_status_names_json_and_exit_3_when_not_running(tempestd_factory):
    chatty = f"{PY} -c \"import sys, time; print('hello out', flush=True); print('hello err', file=sys.stderr, flush=True); time.sleep(120)\""
    daemon = tempestd_factory(**{"worker:echo": echo_worker("ctl2", 2), "worker:chatty": {"command": chatty, "startsecs": "0.2"},
                                 "worker:idle": {"command": chatty, "autostart": "no"}})
    wait_until(lambda: running(daemon, "echo:1") and running(daemon, "chatty:0"))
    everything = tempest_cli(daemon, "status")
    assert everything.returncode == 3  # idle:0 is STOPPED
    only = tempest_cli(daemon, "status", "echo", "chatty:0")
    assert only.returncode == 0 and len(only.stdout.splitlines()) == 4  # the header and three rows
    assert re.search(r"^echo:0\s+RUNNING\s+\d+\s+\d+:\d\d:\d\d\s", only.stdout, re.MULTILINE)  # human uptime
    rows = json.loads(tempest_cli(daemon, "status", "--json", "e*").stdout)
    assert [row["name"] for row in rows] == ["echo:0", "echo:1"] and rows[0]["state"] == "RUNNING"
    assert tempest_cli(daemon, "status", "nope").returncode == 1
    wait_until(lambda: b"hello out" in daemon.control("TAIL", "chatty:0", "stdout", 0)[1].encode(), message="its output")
    assert tempest_cli(daemon, "tail", "chatty:0").stdout == "hello out\n"
    assert tempest_cli(daemon, "tail", "chatty", "stderr").stdout == "hello err\n"
    assert "names 2 processes" in tempest_cli(daemon, "tail", "echo").stderr
    pids = tempest_cli(daemon, "pid", "echo").stdout.split()
    assert pids == [str(daemon.status()["echo:0"]["pid"]), str(daemon.status()["echo:1"]["pid"])]
    assert tempest_cli(daemon, "pid").stdout.strip() == str(daemon.proc.pid)


def test_cli_start_waits_and_signal_reaches_the_process(tempestd_factory, tmp_path):
    marker = tmp_path / "hup"
    catcher = (f"{PY} -c \"import signal, time, pathlib; "
               f"signal.signal(signal.SIGHUP, lambda *a: pathlib.Path({str(marker)!r}).write_text('got')); time.sleep(120)\"")
    daemon = tempestd_factory(**{"worker:catcher": {"command": catcher, "startsecs": "1", "autostart": "no"}})
    started = tempest_cli(daemon, "start", "catcher")
    assert started.returncode == 0
    assert re.search(r"^catcher:0\s+RUNNING\s+\d+", started.stdout, re.MULTILINE)  # printed after the start, not before
    sent = tempest_cli(daemon, "signal", "HUP", "catcher")
    assert sent.returncode == 0 and "catcher:0" in sent.stdout
    wait_until(marker.exists, message="the signal handled")
    assert tempest_cli(daemon, "signal", "NOPE", "catcher").returncode == 1


def test_cli_output_into_a_closed_pipe_is_no_traceback(tempestd_factory):
    daemon = tempestd_factory(**{"worker:echo": echo_worker("ctl3", 8)})
    command = [os.path.join(os.path.dirname(PY), "tempest")]
    if not os.path.exists(command[0]):
        command = [PY, "-c", "import sys; from tempest.cli import tempest_main; sys.exit(tempest_main())"]
    shell = f"{' '.join(command)} status -c {daemon.ini} | head -n 1"
    out = subprocess.run(["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("NAME") and "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr


def test_stop_all_leaves_the_embedded_redis(tmp_path):
    from support import Tempestd, free_port

    port = free_port()
    daemon = Tempestd(tmp_path / "t", f"redis://127.0.0.1:{port}/0",
                      redis={"embedded": "yes", "data_dir": str(tmp_path / "data")},
                      **{"worker:echo": echo_worker("embedded-all")}).start()
    try:
        wait_until(lambda: running(daemon, "echo:0"))
        assert tempest_cli(daemon, "stop", "all").returncode == 0
        status = daemon.status()
        assert status["echo:0"]["state"] == "STOPPED" and status["redis:0"]["state"] == "RUNNING"
    finally:
        daemon.stop()
