#!/usr/bin/env python3
"""Queues for production (issue 11): what reliable delivery, priorities, abandoned requests
and a worker's death cost, each measured in one invocation, in alternating rounds.

Every variant gets its own stack of targets.Tempest (redis-server, tempestd on a temporary INI,
its workers) on 127.0.0.1 with free ports, started once; then each round measures every variant
back to back, the order rotating from one round to the next, and the tables give medians and
spreads (and ratios to a reference variant of the same invocation). One mode per invocation:

* ``--compare reliable``: the hello workers (``python -m tempest.examples.hello``, prefetch 32)
  plain (``--plain``) against reliable (``--reliable``, the library's default): req/s (wrk,
  else bench/loadgen.py), the CPU of tempestd, the workers and redis-server per request, then
  p50/p99 from a bench/loadgen.py run.
* ``--compare priority``: one stack of reliable hello workers with three routes to the same
  queue, ``[route:/normal/]``, ``/high/`` and ``/low/`` with that priority; the variants differ
  only in the path their load asks for.
* ``--abandon``: a queue of 50 ms jobs (bench/queue_worker.py, 2 workers), 1,000 clients that
  each send a request and close their socket 0.1 s later; until the queue and the workers are
  idle again: the handler runs and their seconds (counted in Redis by the handler), the
  workers' CPU, the time to drain; the code measured (``--commit``, default the installed
  tempest) against the code before deadlines and abandoned jobs (``--before``, 979f97e), each
  extracted as bench/run.py's ``--commit`` does and put first on PYTHONPATH.
* ``--kill``: 4 reliable workers with 20 ms jobs (bench/queue_worker.py) under a closed-loop
  load of 50 connections (bench/queue_load.py, which records every request); once every worker
  process has been up 11 s (so that no run inherits the supervisor's restart backoff from the
  one before), every second for 10 s the longest-lived worker process is sent SIGKILL. Supervised: the workers are
  ``[worker:hello] numprocs = 4`` of tempestd, which restarts them and gives back at once the
  jobs of the process it reaped; unsupervised: this script starts them and starts a new one at
  once after each kill (as systemd's Restart=always would), and only the heartbeat's expiry
  gives their jobs back. Each run of the handler logs "<pid> <request>" to Redis as it starts
  and each answer names the process that ran it, so the requests in flight on a killed worker
  are those it started and did not answer: for them, the time from the kill to the answer (a
  job killed before its handler's first command is missed: the table also gives tempestd's
  count of jobs given back, and per kill the slowest answer of every request in flight at it,
  an upper bound that needs no logging).

    python bench/queues.py --compare reliable -r 3 -d 5
    python bench/queues.py --compare priority -r 3 -d 5
    python bench/queues.py --abandon -r 3
    python bench/queues.py --kill -r 2

Everything it started is stopped by process group (the supervised workers by tempestd), and
its temporary directory removed (kept with --keep-logs or after a failure).
"""

import argparse
import copy
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import redis

from measuring import run_loadgen, run_wrk, with_cpu
from probes import HOST, background_cpu, cpu_seconds, logged_problems
from processes import HERE, BenchError, Processes
from queue_tables import WORKERS_SETTLED, analyse_kill, report
from provenance import code_digest, extract_commit, git_state, machine_info, tempest_package
from targets import QUEUE, Tempest

BEFORE = "979f97e"  # the commit before deadlines, withdrawn jobs and the reaped worker's give-back
COUNT = "bench:abandon"  # bench/queue_worker.py --count prefix: :runs, :busy, :done
STARTED = "bench:started"  # bench/queue_worker.py --started list: "<pid> <request id>"
DRAIN_STABLE = 0.5  # seconds the queue and the workers must stay idle to count as drained


class Session:
    """One invocation: its temporary directory, its children, the code each stack runs."""

    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="tempest-bench-queues-")
        self.procs = Processes(self.tmp)
        self.info = machine_info(args.wrk)
        self.info["loadavg_before"] = loadavg()
        self.codes = {}  # label -> where its tempest package comes from

    def code(self, label, rev):
        """The children's environment for the tempest of commit ``rev`` (None: the installed
        one), extracted as bench/run.py --commit does; its provenance into ``self.codes``."""
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPYCACHEPREFIX=os.path.join(self.tmp, "pycache"))
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # a restarted worker starts as it would in production
        env.pop("TEMPEST_RELIABLE", None)  # each variant says what it wants
        info = {"rev": rev}
        src = None
        if rev:
            src = os.path.join(self.tmp, "src-" + label)
            info["commit"] = extract_commit(rev, src)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))
        package = tempest_package(self.args.python, env)
        if not package or (src and not package.startswith(src + os.sep)):
            raise BenchError(f"{self.args.python} imports tempest from {package!r}, not from {src or 'its installation'}")
        info["package"] = package
        if not rev:
            info["git"] = git_state(package)
        info["digest"] = code_digest(package)
        self.codes[label] = info
        return env

    def start(self, stack):
        print(f"bench: starting {stack.name}...", file=sys.stderr)
        stack.start(time.monotonic() + self.args.start_timeout)
        return stack

    def finish(self):
        """Stop every child; what their logs say; the load and the code after."""
        self.procs.stop_all()
        self.info["logged_problems"] = logged_problems(self.tmp)
        self.info["loadavg_after"] = loadavg()
        self.info["background_cpu_percent_after"] = background_cpu()
        for info in self.codes.values():
            if code_digest(info["package"]) != info["digest"]:
                info["changed_during_run"] = True

    def cleanup(self, keep):
        if keep:
            print(f"bench: logs kept in {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


class Stack(Tempest):
    """targets.Tempest for one variant: its INI gets ``ini`` appended, and its workers are
    ``workers`` processes of ``worker_argv`` (none: the INI's [worker:] sections start them),
    tempestd and workers on the code of ``env``."""

    def __init__(self, session, name, worker_argv, workers, env, ini=""):
        args = copy.copy(session.args)
        args.env = env
        super().__init__(session.procs, session.tmp, args)
        self.name, self.suffix = name, "-" + name
        self.worker_argv = worker_argv
        self.worker_count = workers
        self.ini = ini
        self.worker_env = None
        self.spawned = 0
        self.born = {}  # worker pid -> when it was first seen (the victims of --kill: the oldest)
        self._control = None

    def _write_ini(self, url):
        ini = super()._write_ini(url)
        with open(ini, "a") as handle:
            handle.write(self.ini)
        return ini

    def _start_workers(self, url):
        self.worker_env = dict(self.args.env, TEMPEST_REDIS_URL=url)
        for _ in range(self.worker_count):
            self.spawn_worker()

    def spawn_worker(self):
        self.spawned += 1
        proc = self.procs.start(f"worker{self.suffix}{self.spawned}", self.worker_argv, env=self.worker_env)
        self.workers.append(proc)
        self.born[proc.pid] = time.monotonic()
        return proc

    def redis_client(self):
        return redis.Redis(host=HOST, port=self.redis_port, decode_responses=True, socket_timeout=10)

    def control(self):
        """tempestd's control socket (what ``tempest status`` talks to)."""
        if self._control is None:
            self._control = redis.Redis(unix_socket_path=os.path.join(self.tmp, "run" + self.suffix, "tempest.sock"),
                                        decode_responses=True, socket_timeout=10)
        return self._control

    def supervised_pids(self):
        """The pids of the RUNNING processes of [worker:hello] (STATUS on the control socket)."""
        rows = self.control().execute_command("STATUS", "hello")
        pids = [int(row[2]) for row in rows if row[1] == "RUNNING" and int(row[2])]
        for pid in pids:
            self.born.setdefault(pid, time.monotonic())
        return pids

    def supervised_status(self):
        return [dict(zip(("name", "state", "pid", "uptime", "restarts", "last_exit"), row))
                for row in self.control().execute_command("STATUS", "hello")]

    def wait_settled(self, deadline):
        """Until every worker process has been up WORKERS_SETTLED seconds (False at the deadline)."""
        while time.monotonic() < deadline:
            if self.worker_argv is None:
                rows = self.supervised_status()
                if all(row["state"] == "RUNNING" and int(row["uptime"]) >= WORKERS_SETTLED for row in rows):
                    return True
            elif all(time.monotonic() - self.born[p.pid] >= WORKERS_SETTLED for p in self.workers):
                return True
            time.sleep(0.2)  # polling interval, bounded by the deadline
        return False

    def kill_oldest(self):
        """SIGKILL the longest-lived worker process; (when, pid). Unsupervised: a new worker
        is started at once, as systemd's Restart=always would."""
        if self.worker_argv is None:
            deadline = time.monotonic() + 5
            pids = self.supervised_pids()
            while not pids and time.monotonic() < deadline:  # every one restarting (BACKOFF, STARTING)
                time.sleep(0.05)
                pids = self.supervised_pids()
            if not pids:
                raise BenchError(f"{self.name}: no worker process RUNNING for 5 s: {self.supervised_status()}")
            pid = min(pids, key=self.born.get)
            when = time.monotonic()
            os.kill(pid, signal.SIGKILL)  # tempestd's child, started for this run
            return when, pid
        proc = min(self.workers, key=lambda p: self.born[p.pid])
        when = time.monotonic()
        os.killpg(proc.pid, signal.SIGKILL)  # its own process group (Processes.start)
        proc.wait(5)
        self.procs.forget(proc)
        self.workers.remove(proc)
        self.spawn_worker()
        return when, proc.pid


# ---------------------------------------------------------------------------------------------
# figures


def loadavg():
    with open("/proc/loadavg") as handle:
        return handle.read().strip()


def rotation(variants, round_):
    """The order of one round: two variants alternate, more rotate (round N starts with the Nth)."""
    if len(variants) == 2:
        return variants if round_ % 2 else variants[::-1]
    shift = (round_ - 1) % len(variants)
    return variants[shift:] + variants[:shift]


def run_rounds(session, variants, measure):
    results = []
    for round_ in range(1, session.args.rounds + 1):
        for variant in rotation(variants, round_):
            session.procs.check_alive()
            print(f"bench: {variant['name']}, round {round_}/{session.args.rounds}...", file=sys.stderr)
            result = measure(session, variant, round_)
            result.update(variant=variant["name"], round=round_)
            results.append(result)
    return results


# ---------------------------------------------------------------------------------------------
# --compare reliable | priority


def compare(session):
    args = session.args
    env = session.code("measured", args.commit)
    hello = [args.python, "-m", "tempest.examples.hello", QUEUE]
    if args.compare == "reliable":
        plain = session.start(Stack(session, "plain", hello + ["--plain"], args.workers, env))
        reliable = session.start(Stack(session, "reliable", hello + ["--reliable"], args.workers, env))
        variants = [{"name": "plain (--plain)", "stack": plain, "path": "/"},
                    {"name": "reliable (the default)", "stack": reliable, "path": "/"}]
    else:
        routes = "".join(f"\n[route:/{p}/]\nqueue = {QUEUE}\npriority = {p}\n" for p in ("normal", "high", "low"))
        stack = session.start(Stack(session, "priority", hello + ["--reliable"], args.workers, env, routes))
        variants = [{"name": f"priority = {p}", "stack": stack, "path": f"/{p}/"} for p in ("normal", "high", "low")]
    return run_rounds(session, variants, measure_throughput)


def measure_throughput(session, variant, round_):
    """Warm-up, a throughput run (wrk, else loadgen) with the CPU of every process of the
    stack, then a loadgen run for the latencies."""
    args, procs = session.args, session.procs
    stack, path = variant["stack"], variant["path"]
    tag = f"{stack.name}{path.strip('/').replace('/', '-')}-r{round_}"

    def load(seconds, suffix, wrk):
        if wrk:
            return run_wrk(procs, args, stack.port, args.connections, seconds, tag + suffix, path)
        return run_loadgen(procs, args, stack.port, args.connections, seconds, tag + suffix, path)

    if args.warmup > 0:
        load(args.warmup, "-warmup", bool(args.wrk))
        stack.settle()
    throughput, cpu = with_cpu(stack, lambda: load(args.duration, "-throughput", bool(args.wrk)))
    settled = stack.settle()
    latency = load(args.duration, "-latency", False)[0] if args.wrk else throughput
    settled = stack.settle() and settled
    rps = throughput["rps"] or 0
    per_request = {k: round(cpu[k] / 100 / rps * 1e6, 1) if rps else None for k in ("tempestd", "workers", "redis")}
    return {"rps": rps, "errors": throughput["error_total"], "throughput": throughput, "cpu_percent": cpu,
            "cpu_us_per_request": per_request, "p50_ms": latency["p50_ms"], "p99_ms": latency["p99_ms"],
            "latency_errors": latency["error_total"], "latency_rps": latency["rps"], "settled": settled}


# ---------------------------------------------------------------------------------------------
# --abandon


def abandon(session):
    args = session.args
    worker = [args.python, os.path.join(HERE, "queue_worker.py"), QUEUE, "--sleep", f"{args.job_seconds:g}",
              "--count", COUNT] + (["--plain"] if args.plain else [])
    codes = [("before", args.before), ("measured", args.commit)]
    variants = []
    for label, rev in codes:
        env = session.code(label, rev)
        stack = session.start(Stack(session, label, worker, args.workers, env))
        variants.append({"name": f"{label} ({session.codes[label].get('commit', 'installed')[:7]})", "stack": stack})
    return run_rounds(session, variants, measure_abandon)


def measure_abandon(session, variant, round_):
    """``--clients`` requests whose clients leave after ``--leave-after`` s; until drained."""
    args, stack = session.args, variant["stack"]
    client = stack.redis_client()
    client.delete(*(f"{COUNT}:{k}" for k in ("runs", "busy", "done")))
    stats = stack.stats()
    worker_pids = [w.pid for w in stack.workers]
    cpu_before = [cpu_seconds(p) for p in worker_pids], cpu_seconds(stack.proc.pid)
    started = time.monotonic()
    refused = abandoning_clients(stack.port, args.clients, args.leave_after)
    budget = args.clients * args.job_seconds / args.workers + 60  # every job run, and a margin
    drained = wait_drained(client, started + budget)
    if drained is None:
        raise BenchError(f"{stack.name}: the queue was not drained within {budget:.0f}s")
    cpu_after = [cpu_seconds(p) for p in worker_pids], cpu_seconds(stack.proc.pid)
    after = stack.stats()
    delta = {k: after.get(k, 0) - stats.get(k, 0) for k in ("requests", "clients_gone", "jobs_withdrawn",
                                                              "answers_dropped") if k in after}
    return {"runs": int(client.get(f"{COUNT}:runs") or 0), "busy_s": float(client.get(f"{COUNT}:busy") or 0),
            "worker_cpu_s": round(sum(b - a for a, b in zip(cpu_before[0], cpu_after[0])), 3),
            "tempestd_cpu_s": round(cpu_after[1] - cpu_before[1], 3), "drain_s": round(drained - started, 2),
            "refused_connects": refused, "tempestd_counters": delta}


def abandoning_clients(port, count, leave_after):
    """``count`` connections that each send one GET and close ``leave_after`` s after sending;
    returns how many could not connect or send."""
    sent, failed = [], 0
    for i in range(count):
        try:
            sock = socket.create_connection((HOST, port), timeout=5)
            sock.sendall(f"GET /?r=abandon-{i} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
        except OSError:
            failed += 1
            continue
        sent.append((time.monotonic(), sock))
    for at, sock in sent:
        delay = at + leave_after - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # each client leaves leave_after seconds after its request
        sock.close()
    return failed


def wait_drained(client, deadline):
    """When the queue, its low list and the processing lists were last found empty with every
    handler run finished, once that held DRAIN_STABLE seconds; None at the deadline."""
    idle_since = None
    while time.monotonic() < deadline:
        now = time.monotonic()
        pipe = client.pipeline(transaction=False)
        pipe.llen(QUEUE).llen(f"tempest:low:{{{QUEUE}}}").keys("tempest:processing:*")
        pipe.get(f"{COUNT}:runs").get(f"{COUNT}:done")
        queued, low, processing, runs, done = pipe.execute()
        if queued == 0 and low == 0 and not processing and (runs or "0") == (done or "0"):
            idle_since = idle_since or now
            if now - idle_since >= DRAIN_STABLE:
                return idle_since
        else:
            idle_since = None
        time.sleep(0.02)  # polling interval, bounded by the deadline
    return None


# ---------------------------------------------------------------------------------------------
# --kill


def kill(session):
    args = session.args
    worker = [args.python, os.path.join(HERE, "queue_worker.py"), QUEUE, "--sleep", f"{args.kill_job_seconds:g}",
              "--started", STARTED]
    env = session.code("measured", args.commit)
    program = f"\n[worker:hello]\ncommand = {shlex.join(worker)}\nnumprocs = {args.numprocs}\n"
    supervised = session.start(Stack(session, "supervised", None, 0, env, program))
    unsupervised = session.start(Stack(session, "unsupervised", worker, args.numprocs, env))
    variants = [{"name": "supervised ([worker:hello])", "stack": supervised},
                {"name": "unsupervised (heartbeat)", "stack": unsupervised}]
    return run_rounds(session, variants, measure_kill)


def measure_kill(session, variant, round_):
    """A recorded closed-loop load, ``--kills`` SIGKILLs one ``--kill-interval`` apart after
    ``--warmup`` s of it; then the requests that were on the killed workers."""
    args, procs, stack = session.args, session.procs, variant["stack"]
    client = stack.redis_client()
    client.delete(STARTED)
    settled = stack.wait_settled(time.monotonic() + 4 * WORKERS_SETTLED)
    stats = stack.stats()
    length = args.warmup + args.kills * args.kill_interval + 1
    out_path = os.path.join(session.tmp, f"load-{stack.name}-r{round_}.json")
    argv = [args.python, os.path.join(HERE, "queue_load.py"), "--port", str(stack.port), "--connections",
            str(args.connections), "--duration", f"{length:g}", "--timeout", f"{args.kill_timeout:g}"]
    with open(out_path, "wb") as out:
        load = procs.start(f"load-{stack.name}-r{round_}", argv, stdout=out)
    try:
        first = time.monotonic() + args.warmup
        kills = []
        for k in range(args.kills):
            time.sleep(max(0.0, first + k * args.kill_interval - time.monotonic()))
            kills.append(stack.kill_oldest())
        load.wait(length + args.kill_timeout + 30)
    except subprocess.TimeoutExpired:
        raise BenchError(f"bench/queue_load.py did not finish:\n{procs.log_tail(f'load-{stack.name}-r{round_}')}") from None
    finally:
        procs.stop(load, grace=2)
        procs.forget(load)
    with open(out_path) as handle:
        recorded = json.loads(handle.read())
    result = analyse_kill(recorded["records"], kills, client.lrange(STARTED, 0, -1))
    result["workers_settled_before"] = settled
    after = stack.stats()
    result["tempestd_counters"] = {k: after.get(k, 0) - stats.get(k, 0)
                                   for k in ("jobs_redelivered", "jobs_dead", "jobs_refused", "timeouts", "answers_dropped")
                                   if k in after}
    if stack.worker_argv is None:
        result["status_after"] = stack.supervised_status()
    return result


# ---------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Everything runs on 127.0.0.1 with free ports; children are stopped by process group.")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--compare", choices=("reliable", "priority"), help="throughput and CPU of the hello workers")
    mode.add_argument("--abandon", action="store_true", help="what abandoned requests cost the workers")
    mode.add_argument("--kill", action="store_true", help="SIGKILL of reliable workers under load")
    mode.add_argument("--report", metavar="FILE", help="print the tables of an earlier run's --json FILE, run nothing")
    parser.add_argument("--rounds", "-r", type=int, default=3, help="alternating rounds (default: 3)")
    parser.add_argument("--duration", "-d", type=float, default=5.0, help="--compare: seconds per run (default: 5)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="--compare: seconds of warm-up per run; --kill: seconds of load before the first kill (default: 2)")
    parser.add_argument("--connections", "-c", type=int,
                        help="connections of the load (default: 100; --kill: 50)")
    parser.add_argument("--workers", "-w", type=int, default=2, help="--compare, --abandon: workers (default: 2)")
    parser.add_argument("--commit", metavar="REV", help="the code measured: this commit's tempest package "
                        "(extracted with git archive) instead of the installed one")
    parser.add_argument("--before", metavar="REV", default=BEFORE,
                        help=f"--abandon: the code to compare with (default: {BEFORE}, before deadlines and withdrawn jobs)")
    parser.add_argument("--clients", type=int, default=1000, help="--abandon: abandoned requests (default: 1000)")
    parser.add_argument("--leave-after", type=float, default=0.1, help="--abandon: seconds before a client leaves (default: 0.1)")
    parser.add_argument("--job-seconds", type=float, default=0.05, help="--abandon: seconds a job takes (default: 0.05)")
    parser.add_argument("--plain", action="store_true", help="--abandon: plain BLPOP workers (default: reliable)")
    parser.add_argument("--kills", type=int, default=10, help="--kill: kills per run (default: 10)")
    parser.add_argument("--kill-interval", type=float, default=1.0, help="--kill: seconds between kills (default: 1)")
    parser.add_argument("--kill-job-seconds", type=float, default=0.02, help="--kill: seconds a job takes (default: 0.02)")
    parser.add_argument("--numprocs", type=int, default=4, help="--kill: worker processes (default: 4)")
    parser.add_argument("--kill-timeout", type=float, default=60.0,
                        help="--kill: seconds a request may wait for its answer (default: 60)")
    parser.add_argument("--no-wrk", action="store_true", help="--compare: bench/loadgen.py even if wrk is on PATH")
    parser.add_argument("--json", metavar="FILE", help="also write every result as JSON to FILE")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary directory with the logs")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or args.workers < 1 or args.clients < 1 or args.kills < 1:
        parser.error("--rounds, --duration, --workers, --clients and --kills must be positive")
    args.connections = args.connections or (50 if args.kill else 100)
    args.wrk = None if args.no_wrk else shutil.which("wrk")
    # what targets.Tempest and bench/measuring.py read
    args.python, args.reliable, args.tempest_timeout, args.client_timeout = sys.executable, True, 30.0, 10.0
    args.wrk_threads, args.wrk_timeout, args.start_timeout = os.cpu_count() or 2, 2.0, 30.0
    return args


def on_term(signum, frame):
    raise SystemExit(128 + signum)


def reprint(path):
    """--report FILE: the tables of that run, from the arguments it was given."""
    with open(path) as handle:
        document = json.load(handle)
    report(parse_args(document["argv"][1:]), document["machine"], document["codes"], document["results"])
    return 0


def main(argv=None):
    args = parse_args(argv)
    if args.report:
        return reprint(args.report)
    signal.signal(signal.SIGTERM, on_term)
    session = Session(args)
    session.info["background_cpu_percent_before"] = background_cpu()
    mode = compare if args.compare else abandon if args.abandon else kill
    results, code = [], 1
    try:
        results = mode(session)
        code = 0
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
    finally:
        session.finish()
        session.cleanup(args.keep_logs or code != 0)
    if results:
        report(args, session.info, session.codes, results)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"argv": sys.argv, "machine": session.info, "codes": session.codes, "results": results},
                      handle, indent=1, default=str)
    return code


if __name__ == "__main__":
    sys.exit(main())
