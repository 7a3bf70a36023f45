#!/usr/bin/env python3
"""tempest against the servers a user would pick instead, in one invocation (issue 13).

Targets, all on 127.0.0.1 with free ports, all answering ``GET /`` with ``Hello world! #N``
(text/html, with Content-Length):

* ``tempest``: redis-server, tempestd and ``--workers`` Python hello workers
  (``python -m tempest.examples.hello``, plain BLPOP): the whole stack;
* ``uvicorn``: uvicorn with uvloop and httptools, 1 worker, an ASGI hello (direct: no queue);
* ``gunicorn``: ``gunicorn -k gevent``, 1 worker, the WSGI hello of bench/wsgi.py (direct);
* ``node``: Node.js' ``http`` module, one process (bench/peers_node.js, direct).

uvicorn and uvloop are installed by the script into a virtualenv of their own
(``~/.cache/tempest-bench/peers``, made once, from PyPI); gunicorn comes with tempest's test
extras; node, if missing, from Debian (``apt-get install nodejs``, as root).

Each round measures every target back to back at each connection count, the order rotating
from round to round: a warm-up (not recorded), a throughput run (wrk; bench/loadgen.py without
it) with the CPU of every process that serves sampled around it, then a latency run with
bench/loadgen.py (p50, p99; wrk's percentiles are not used, see bench/run.py). Printed per
connection count: the median req/s, every round's figure, errors, the medians of p50 and p99,
the CPU per request of the whole stack (tempest: tempestd + workers + Redis) and the ratios to
tempest.

    python bench/peers.py --duration 5 --rounds 3                 # c=100 and c=200
    python bench/peers.py --duration 5 --rounds 3 -c 100 --json peers.json
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

import wsgi
from measuring import run_loadgen
from probes import HOST, free_ports, resp_command, wait_until
from processes import BenchError, Processes
from targets import redis_binary, tempestd_command

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = ("tempest", "uvicorn", "gunicorn", "node")
PEERS_VENV = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "tempest-bench", "peers")
PEER_PACKAGES = ("uvicorn>=0.30", "uvloop>=0.19", "httptools>=0.6")


def peers_python(python):
    """The interpreter of the peers' virtualenv, made and filled from PyPI the first time."""
    bin_python = os.path.join(PEERS_VENV, "bin", "python")
    probe = [bin_python, "-c", "import uvicorn, uvloop, httptools"]
    if os.path.exists(bin_python) and subprocess.run(probe, capture_output=True).returncode == 0:
        return bin_python
    print(f"bench: installing {', '.join(PEER_PACKAGES)} into {PEERS_VENV}...", file=sys.stderr)
    for argv in ([python, "-m", "venv", PEERS_VENV], [bin_python, "-m", "pip", "install", "-q", *PEER_PACKAGES]):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise BenchError(f"cannot install the peers ({' '.join(argv)}):\n{done.stderr[-2000:]}")
    return bin_python


def node_binary():
    """node on PATH, else Debian's, installed now (as root)."""
    found = shutil.which("node") or shutil.which("nodejs")
    if found:
        return found
    if os.geteuid() != 0:
        raise BenchError("no node on PATH: install Node.js (Debian: apt-get install nodejs)")
    print("bench: installing Debian's nodejs...", file=sys.stderr)
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "nodejs"]):
        subprocess.run(argv, capture_output=True, timeout=900, check=False)
    found = shutil.which("node") or shutil.which("nodejs")
    if not found:
        raise BenchError("apt-get install nodejs did not give a node")
    return found


class Stack:
    """Every target's processes; stopped by process group."""

    def __init__(self, args, tmp):
        self.args, self.tmp = args, tmp
        self.procs = Processes(tmp)
        self.redis_port, self.front_port, self.uvicorn_port, self.gunicorn_port, self.node_port = free_ports(5)
        self.targets = {}

    def start(self):
        args = self.args
        deadline = time.monotonic() + args.start_timeout
        self.targets["tempest"] = self._tempest(deadline)
        uvicorn = [peers_python(args.python), "-m", "uvicorn", "--app-dir", HERE, "--host", HOST, "--port",
                   str(self.uvicorn_port), "--loop", "uvloop", "--http", "httptools", "--workers", "1",
                   "--no-access-log", "--log-level", "warning", "peers_asgi:app"]
        gunicorn = [args.python, "-m", "gunicorn", "--no-control-socket", "--chdir", HERE, "-w", "1", "-k", "gevent",
                    "--log-level", "warning", "-b", f"{HOST}:{self.gunicorn_port}", "wsgi:application"]
        node = [node_binary(), os.path.join(HERE, "peers_node.js"), str(self.node_port)]
        for name, port, argv in (("uvicorn", self.uvicorn_port, uvicorn), ("gunicorn", self.gunicorn_port, gunicorn),
                                 ("node", self.node_port, node)):
            target = wsgi.Target(name, port, "/", {})
            target.procs = [self.procs.start(name, argv, env=args.env)]
            self.targets[name] = target
        for target in self.targets.values():
            wait_until(f"{target.name} (GET / answered 200)", lambda: wsgi.http_status(target.port, "/") == 200,
                       deadline, self.procs)

    def _tempest(self, deadline):
        args = self.args
        redis = self.procs.start("redis", [redis_binary(), "--bind", HOST, "--port", str(self.redis_port), "--save",
                                           "", "--appendonly", "no", "--dir", self.tmp, "--loglevel", "warning"])
        wait_until("redis-server", lambda: resp_command(self.redis_port, "PING").startswith(b"+PONG"), deadline,
                   self.procs)
        url = f"redis://{HOST}:{self.redis_port}/0"
        ini = os.path.join(self.tmp, "tempest.ini")
        with open(ini, "w") as handle:
            handle.write(f"[tempest]\nrun_dir = {os.path.join(self.tmp, 'run')}\nlog_level = warning\n\n"
                         f"[redis]\nurl = {url}\n\n[front]\nlisten = {HOST}:{self.front_port}\n"
                         f"answer_listen = {HOST}:0\nqueue = bench\ntimeout = 30\nkeepalive_timeout = 600\n")
        tempestd = self.procs.start("tempestd", tempestd_command(args.python) + ["-c", ini], env=args.env)
        target = wsgi.Target("tempest", self.front_port, "/", {"tempestd": tempestd, "redis": redis})
        env = dict(args.env, TEMPEST_REDIS_URL=url)
        target.procs = [self.procs.start(f"hello{i}", [args.python, "-m", "tempest.examples.hello", "bench", "--plain"],
                                         env=env) for i in range(args.workers)]
        return target

    def stop(self):
        self.procs.stop_all()


def measure(stack, target, args, connections, tag):
    """Throughput (with the whole stack's CPU) then latency of ``target`` at ``connections``."""
    result = wsgi.measure(stack, target, args, tag)  # the warm-up and the throughput run
    latency, _ = run_loadgen(stack.procs, args, target.port, connections, args.duration, f"{tag}-latency")
    result.update(p50_ms=latency.get("p50_ms"), p99_ms=latency.get("p99_ms"),
                  latency_errors=sum((latency.get("errors") or {}).values()))
    return result


def report(results, args, before, after):
    print(f"\n{args.rounds} rounds of {args.duration:g} s, tempest with {args.workers} Python hello workers, "
          f"throughput from {'wrk' if args.wrk else 'loadgen'}, latency from bench/loadgen.py")
    print(f"code: {args.code}")
    print(f"load average before: {before}; after: {after}")
    medians = {}
    for connections in args.connections:
        print(f"\nc={connections}\n")
        print("| target | req/s (median) | rounds | errors | p50 / p99 ms (median) | CPU µs per request, whole "
              "stack (median) | of which tempestd / workers / Redis | req/s ratio to tempest | CPU ratio to tempest |")
        print("|---|---:|---|---:|---|---:|---|---:|---:|")
        level = {name: results[connections][name] for name in TARGETS}
        rps = {name: statistics.median(r["rps"] for r in runs) for name, runs in level.items()}
        cpu = {name: statistics.median(r["cpu_us_per_request"] or 0 for r in runs) for name, runs in level.items()}
        for name, runs in level.items():
            rounds = ", ".join(f"{r['rps']:,.0f}" for r in runs)
            errors = sum(r["errors"] + r["latency_errors"] for r in runs)
            latency = f"{wsgi._median(r['p50_ms'] for r in runs)} / {wsgi._median(r['p99_ms'] for r in runs)}"
            parts = (" / ".join(wsgi._median(r["us_per_request"].get(k) for r in runs)
                                for k in ("tempestd", "workers", "redis")) if name == "tempest" else "-")
            print(f"| {name} | {rps[name]:,.0f} | {rounds} | {errors} | {latency} | {cpu[name]:.1f} | {parts} | "
                  f"{rps[name] / rps['tempest']:.2f} | {cpu[name] / cpu['tempest']:.2f} |")
        medians[connections] = {"rps": rps, "cpu_us_per_request": cpu}
    return medians


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5, help="seconds of each measured run (default 5)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up before each run (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, the order rotating (default 3)")
    parser.add_argument("-c", "--connections", type=int, nargs="+", default=[100, 200],
                        help="client connections, one level each (default 100 200)")
    parser.add_argument("--workers", type=int, default=2, help="tempest's Python hello workers (default 2)")
    parser.add_argument("--no-wrk", dest="wrk", action="store_false", help="bench/loadgen.py even if wrk is on PATH")
    parser.add_argument("--json", help="write every figure to this file")
    parser.add_argument("--commit", metavar="REV", help="run tempestd and the workers on the tempest package of this "
                        "commit (git archive), not the working tree's")
    parser.add_argument("--start-timeout", type=float, default=60)
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or any(c < 1 for c in args.connections):
        parser.error("--rounds, --duration and --connections must be positive")
    args.wrk = shutil.which("wrk") if args.wrk else None
    args.wrk_threads, args.wrk_timeout, args.client_timeout = 2, 5.0, 5.0
    args.python = sys.executable
    return args


def main(argv=None):
    args = parse(argv)

    def measure_rounds(stack):
        results = {c: {name: [] for name in TARGETS} for c in args.connections}
        for number in range(args.rounds):
            shift = number % len(TARGETS)
            for connections in args.connections:
                for name in TARGETS[shift:] + TARGETS[:shift]:
                    stack.procs.check_alive()
                    result = measure(stack, stack.targets[name], _at(args, connections), connections,
                                     f"r{number}-c{connections}-{name}")
                    results[connections][name].append(result)
                    print(f"round {number + 1}, c={connections}: {name} {result['rps']:,.0f} req/s, "
                          f"{result['cpu_us_per_request']} µs/req, p99 {result['p99_ms']} ms", file=sys.stderr)
        return results

    return wsgi.run_invocation(args, "tempest-bench-peers-", Stack, measure_rounds, report)


def _at(args, connections):
    """``args`` with ``connections`` as the one connection count (wsgi.measure reads it)."""
    copy = argparse.Namespace(**vars(args))
    copy.connections = connections
    return copy


if __name__ == "__main__":
    sys.exit(main())
