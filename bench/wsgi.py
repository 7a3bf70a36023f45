#!/usr/bin/env python3
"""A WSGI hello world behind tempest, against the same application under gunicorn over HTTP and
against tempest's Python hello worker, in one invocation (issue 10's "Performance").

Targets, all on 127.0.0.1 with free ports, each of two processes (``--workers``):

* ``hello``: tempestd and ``python -m tempest.examples.hello`` (the Python hello worker:
  no gateway, the baseline of the gateway's cost);
* ``wsgi``: tempestd and ``python -m tempest.wsgi wsgi:application`` (this file's application);
* ``gunicorn-worker``: tempestd and ``gunicorn -k tempest.gunicorn.Worker`` serving it;
* ``gunicorn-gevent``: ``gunicorn -k gevent`` serving it directly over HTTP, no tempest.

One redis-server and one tempestd serve the three tempest targets, one route (and queue) each;
the workers of the targets not being measured wait idle on their queues. The three tempest
targets take the same ``--prefetch`` (32, the hello worker's) and the same delivery (plain
BLPOP, as bench/run.py's default; ``--reliable`` for all three), so that what differs between
``hello`` and ``wsgi`` is the gateway: the environ, the application, the answer.

Each round measures every target back to back: a warm-up (not recorded), then a throughput run
with wrk (bench/loadgen.py without wrk), the CPU of the target's processes sampled around it.
The order rotates from round to round, so that no target always runs first on a machine the
previous one warmed. Printed: the median req/s of each target over the rounds, every round's
figure, errors, the CPU the target's processes spent per request, and the ratios of the
medians; the load average before and after (the machine may be shared).

    python bench/wsgi.py --duration 5 --rounds 5
    python bench/wsgi.py --duration 5 --rounds 3 -c 50 --json wsgi.json
    python bench/wsgi.py --duration 5 --rounds 5 --commit HEAD   # the committed code, not the working tree

The application served is ``application`` below (the same response as the hello worker's:
``Hello world! #N``, text/html, with Content-Length). Importing this file for it loads the
harness' modules (no gevent) but runs nothing.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time

from measuring import run_loadgen, run_wrk, with_cpu
from probes import HOST, background_cpu, cpu_seconds, free_ports, resp_command, wait_until
from processes import BenchError, Processes
from provenance import extract_commit, git_state, tempest_package
from targets import redis_binary, tempestd_command

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = ("hello", "wsgi", "gunicorn-worker", "gunicorn-gevent")
RATIOS = (("wsgi", "hello"), ("gunicorn-worker", "hello"), ("wsgi", "gunicorn-gevent"),
          ("gunicorn-worker", "gunicorn-gevent"))


def make_app():
    """The WSGI hello world: the hello worker's answer, ``Hello world! #N`` (N counted per
    process)."""
    count = 0

    def hello(environ, start_response):
        nonlocal count
        count += 1
        body = f"Hello world! #{count}".encode()
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))])
        return [body]

    return hello


application = make_app()


class Target:
    """One server under test: the processes whose CPU counts, the port and path measured."""

    def __init__(self, name, port, path, shared):
        self.name, self.port, self.path = name, port, path
        self.shared = shared  # {kind: Popen} of the tempest stack (tempestd, redis), or {}
        self.procs = []  # this target's own processes (workers, or gunicorn's arbiter)

    def pids(self):
        pids = {kind: [proc.pid] for kind, proc in self.shared.items()}
        workers = []
        for proc in self.procs:
            workers += [proc.pid, *_children(proc.pid)]  # gunicorn: the arbiter and its workers
        pids["workers"] = workers
        return pids

    def cpu_seconds(self, key, pid):
        return cpu_seconds(pid)


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(child) for child in handle.read().split()]
    except OSError:
        return []


def http_status(port, path, timeout=1.0):
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode())
        head = sock.recv(64)
    return int(head[9:12]) if head.startswith(b"HTTP/1.") and head[9:12].isdigit() else None


class Stack:
    """Everything started: Redis, tempestd with one route per tempest target, the workers,
    gunicorn's gevent worker; stopped by process group."""

    def __init__(self, args, tmp):
        self.args = args
        self.tmp = tmp
        self.procs = Processes(tmp)
        self.redis_port, self.front_port, self.gevent_port = free_ports(3)
        self.targets = {}

    def start(self):
        args = self.args
        deadline = time.monotonic() + args.start_timeout
        redis = self.procs.start("redis", [redis_binary(), "--bind", HOST, "--port", str(self.redis_port), "--save",
                                           "", "--appendonly", "no", "--dir", self.tmp, "--loglevel", "warning"])
        wait_until("redis-server", lambda: resp_command(self.redis_port, "PING").startswith(b"+PONG"), deadline,
                   self.procs)
        url = f"redis://{HOST}:{self.redis_port}/0"
        tempestd = self.procs.start("tempestd", tempestd_command(args.python) + ["-c", self._ini(url)], env=args.env)
        shared = {"tempestd": tempestd, "redis": redis}
        env = dict(args.env, TEMPEST_REDIS_URL=url)
        for name in TARGETS:
            if name == "gunicorn-gevent":
                target = Target(name, self.gevent_port, "/", {})
            else:
                target = Target(name, self.front_port, f"/{name}/", shared)
            target.procs = self._workers(name, env)
            self.targets[name] = target
        for target in self.targets.values():
            wait_until(f"{target.name} (GET {target.path} answered 200)",
                       lambda: http_status(target.port, target.path) == 200, deadline, self.procs)

    def _ini(self, url):
        routes = "".join(f"\n[route:/{name}/]\nqueue = bench-{name}\n" for name in TARGETS if name != "gunicorn-gevent")
        path = os.path.join(self.tmp, "tempest.ini")
        with open(path, "w") as handle:
            handle.write(f"""[tempest]
run_dir = {os.path.join(self.tmp, "run")}
log_level = warning

[redis]
url = {url}
embedded = no

[front]
listen = {HOST}:{self.front_port}
answer_listen = {HOST}:0
queue = bench-hello
timeout = 30
keepalive_timeout = 600
{routes}""")
        return path

    def _workers(self, name, env):
        args = self.args
        python, queue, n = args.python, f"bench-{name}", str(args.workers)
        delivery = "--reliable" if args.reliable else "--plain"
        gunicorn = [python, "-m", "gunicorn", "--no-control-socket", "--chdir", HERE, "-w", n, "--log-level",
                    "warning"]
        if name == "hello":
            return [self.procs.start(f"hello{i}", [python, "-m", "tempest.examples.hello", queue, delivery], env=env)
                    for i in range(args.workers)]
        if name == "wsgi":
            argv = [python, "-m", "tempest.wsgi", "wsgi:application", "--queue", queue, "--prefetch",
                    str(args.prefetch), "--chdir", HERE] + (["--plain"] if not args.reliable else [])
            return [self.procs.start(f"wsgi{i}", argv, env=env) for i in range(args.workers)]
        if name == "gunicorn-worker":
            worker_env = dict(env, TEMPEST_QUEUE=queue, TEMPEST_PREFETCH=str(args.prefetch),
                              TEMPEST_RELIABLE="1" if args.reliable else "0")
            return [self.procs.start("gunicorn-worker", gunicorn + ["-k", "tempest.gunicorn.Worker", "-b",
                                                                    f"{HOST}:0", "wsgi:application"], env=worker_env)]
        return [self.procs.start("gunicorn-gevent", gunicorn + ["-k", "gevent", "-b", f"{HOST}:{self.gevent_port}",
                                                                "wsgi:application"], env=env)]

    def stop(self):
        self.procs.stop_all()


def measure(stack, target, args, tag):
    """Warm-up, then one throughput run of ``target``: its figures and its processes' CPU."""
    client = run_wrk if args.wrk else run_loadgen
    client(stack.procs, args, target.port, args.connections, args.warmup, f"{tag}-warmup", target.path)
    result, cpu = with_cpu(target, lambda: client(stack.procs, args, target.port, args.connections, args.duration,
                                                  tag, target.path))
    rps = result.get("rps") or 0
    kinds = list(target.pids())  # tempestd, redis (tempest targets), workers
    per_request = {kind: round(10_000 * cpu[kind] / rps, 1) if rps else None for kind in kinds}  # % of a core -> µs
    errors = result.get("error_total", sum((result.get("errors") or {}).values()))
    return {"rps": rps, "errors": errors, "cpu": cpu, "us_per_request": per_request,
            "cpu_us_per_request": round(sum(per_request.values()), 1) if rps else None}


def _median(values):
    values = [v for v in values if v is not None]
    return f"{statistics.median(values):.1f}" if values else "-"


def loadavg():
    with open("/proc/loadavg") as handle:
        return handle.read().strip()


def report(results, args, before, after):
    print(f"\n{args.rounds} rounds of {args.duration:g} s, {args.connections} connections, {args.workers} processes "
          f"per target, prefetch {args.prefetch}, {'reliable' if args.reliable else 'plain'} delivery, "
          f"{'wrk' if args.wrk else 'loadgen'}")
    print(f"code: {args.code}")
    print(f"load average before: {before}; after: {after}\n")
    print("| target | median req/s | rounds (req/s) | errors | CPU µs per request, all (median) "
          "| tempestd / workers / Redis |")
    print("|---|---:|---|---:|---:|---|")
    medians = {}
    for name in TARGETS:
        runs = results[name]
        medians[name] = statistics.median(r["rps"] for r in runs)
        rounds = ", ".join(f"{r['rps']:,.0f}" for r in runs)
        kinds = " / ".join(_median(r["us_per_request"].get(k) for r in runs) for k in ("tempestd", "workers", "redis"))
        print(f"| {name} | {medians[name]:,.0f} | {rounds} | {sum(r['errors'] for r in runs)} | "
              f"{_median(r['cpu_us_per_request'] for r in runs)} | {kinds} |")
    print("\n| ratio of the medians | |\n|---|---:|")
    for top, bottom in RATIOS:
        ratio = medians[top] / medians[bottom] if medians[bottom] else float("nan")
        print(f"| {top} / {bottom} | {ratio:.2f} |")
    return medians


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5, help="seconds of each measured run (default 5)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up before each run (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, the order rotating (default 3)")
    parser.add_argument("-c", "--connections", type=int, default=100, help="client connections (default 100)")
    parser.add_argument("--workers", type=int, default=2, help="processes of each target (default 2)")
    parser.add_argument("--prefetch", type=int, default=32, help="jobs per round trip of the tempest WSGI targets "
                        "(default 32, the hello worker's)")
    parser.add_argument("--reliable", action="store_true", help="reliable delivery for the three tempest targets")
    parser.add_argument("--no-wrk", dest="wrk", action="store_false", help="bench/loadgen.py even if wrk is on PATH")
    parser.add_argument("--json", help="write every figure to this file")
    parser.add_argument("--commit", metavar="REV", help="run tempestd and the workers on the tempest package of this "
                        "commit (git archive), not the working tree's")
    parser.add_argument("--start-timeout", type=float, default=60)
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    args.wrk = shutil.which("wrk") if args.wrk else None
    args.wrk_threads, args.wrk_timeout, args.client_timeout = 2, 5.0, 5.0
    args.python = sys.executable
    return args


def locate_code(args, tmp):
    """The children's environment (with ``--commit``: the tempest package of that commit
    first on PYTHONPATH) and a line saying which code runs."""
    args.env = dict(os.environ, PYTHONUNBUFFERED="1")
    if args.commit:
        src = os.path.join(tmp, "src")
        commit = extract_commit(args.commit, src)
        args.env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))
        return f"tempest of commit {commit[:12]} ({args.commit})"
    package = tempest_package(args.python, args.env)
    if not package:
        raise BenchError(f"{args.python} cannot import tempest")
    state = git_state(package)
    changed = state.get("tempest_changes") or []
    return (f"the working tree's tempest ({package}), at {state.get('commit', '?')[:12]}"
            + (f" with {len(changed)} changed files: {', '.join(changed)}" if changed else ""))


def run_invocation(args, prefix, make_stack, measure_rounds, report):
    """One invocation of a harness: its temporary directory, the code it runs, the stack
    started, ``measure_rounds(stack)`` (every round's results), ``report(results, args,
    before, after)`` (the medians), the JSON file, and everything stopped on the way out."""
    tmp = tempfile.mkdtemp(prefix=prefix)
    stack = make_stack(args, tmp)
    code = 1
    try:
        args.code = locate_code(args, tmp)
        before = f"{loadavg()} (busy CPU before starting: {background_cpu(1.0):.0f}% of one core)"
        stack.start()
        results = measure_rounds(stack)
        medians = report(results, args, before, loadavg())
        if args.json:
            with open(args.json, "w") as handle:
                json.dump({"args": {k: v for k, v in vars(args).items() if k != "env"}, "load_before": before,
                           "load_after": loadavg(), "results": results, "medians": medians}, handle, indent=1)
        code = 0
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
    finally:
        stack.stop()
        if code == 0 and not args.keep_logs:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"bench: logs kept in {tmp}", file=sys.stderr)
    return code


def main(argv=None):
    args = parse(argv)

    def measure_rounds(stack):
        results = {name: [] for name in TARGETS}
        for number in range(args.rounds):
            shift = number % len(TARGETS)
            for name in TARGETS[shift:] + TARGETS[:shift]:
                results[name].append(measure(stack, stack.targets[name], args, f"r{number}-{name}"))
                print(f"round {number + 1}: {name} {results[name][-1]['rps']:,.0f} req/s", file=sys.stderr)
        return results

    return run_invocation(args, "tempest-bench-wsgi-", Stack, measure_rounds, report)


if __name__ == "__main__":
    sys.exit(main())
