#!/usr/bin/env python3
"""What signed sessions cost: tempest's stack (redis-server, tempestd, hello workers) with and
without ``[front] session_cookie``, in alternating rounds.

Every request of bench/loadgen.py comes without a cookie, so with sessions on each one is the
front's most expensive case: a new id, its HMAC, a Set-Cookie, and the EXPIRE session:<id>
sent after the answer with the pusher's next write. Per round and configuration: req/s, p50
and p99, the CPU tempestd and redis-server spent per request, and the Redis commands per
request (from INFO commandstats: RPUSH calls per request show how the pushes are batched,
EXPIRE calls per request are 1 with sessions) and the reads Redis made per request (INFO
total_reads_processed: about one per write a client sent, so an EXPIRE sent on its own would
show as more reads per request). Printed as a table, and as JSON with --json.

    python bench/sessions.py                       # 3 rounds of 5 s, 100 connections
    python bench/sessions.py -r 5 -d 10 -c 50 --json out.json
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from measuring import run_loadgen
from probes import cpu_seconds, resp_command
from processes import BenchError, Processes
from targets import Tempest

SECRET = "bench-session-secret-0123456789"  # a throwaway: only this benchmark's tempestd uses it


class SessionTempest(Tempest):
    """tempest's stack with ``[front] session_cookie = sid`` (and a secret) when ``sessions``."""

    def __init__(self, procs, tmp, args, sessions):
        super().__init__(procs, tmp, args, lang=None)
        self.sessions = sessions
        self.name = "sessions" if sessions else "no-sessions"
        self.suffix = "-sessions" if sessions else "-plain"

    def _write_ini(self, url):
        ini = super()._write_ini(url)
        if self.sessions:
            with open(ini, "a") as handle:
                handle.write(f"session_cookie = sid\nsession_ttl = 600\nsession_secret = {SECRET}\n")
        return ini


def command_calls(port):
    """{command: calls} from redis-server's INFO commandstats, and "reads": the reads Redis
    made from its clients' sockets (INFO stats total_reads_processed), about one per write a
    client sent: the round trips."""
    text = resp_command(port, "INFO", "commandstats").decode("utf-8", "replace")
    calls = {}
    for line in text.splitlines():
        if line.startswith("cmdstat_"):
            name, _, fields = line[len("cmdstat_"):].partition(":")
            calls[name] = int(dict(f.split("=") for f in fields.split(","))["calls"])
    for line in resp_command(port, "INFO", "stats").decode("utf-8", "replace").splitlines():
        if line.startswith("total_reads_processed:"):
            calls["reads"] = int(line.split(":")[1])
    return calls


def measure(procs, args, target, round_):
    """One loadgen run on ``target``: its figures and the CPU and commands per request."""
    tag = f"{target.name}-{round_}"
    run_loadgen(procs, args, target.port, args.connections, args.warmup, tag + "-warmup")
    target.settle()
    pids = {"tempestd": target.proc.pid, "redis": target.redis.pid}
    cpu_before = {k: cpu_seconds(p) for k, p in pids.items()}
    calls_before = command_calls(target.redis_port)
    result, _ = run_loadgen(procs, args, target.port, args.connections, args.duration, tag)
    target.settle()
    cpu_after = {k: cpu_seconds(p) for k, p in pids.items()}
    calls_after = command_calls(target.redis_port)
    count = max(1, result["count"])
    per_request = {name: round((calls_after.get(name, 0) - calls_before.get(name, 0)) / count, 3)
                   for name in ("reads", "rpush", "expire", "blpop", "brpop", "blmove", "lmove")
                   if calls_after.get(name, 0) - calls_before.get(name, 0)}
    return {"target": target.name, "round": round_, "rps": result["rps"], "p50_ms": result["p50_ms"],
            "p99_ms": result["p99_ms"], "errors": sum(result["errors"].values()), "count": result["count"],
            "cpu_us_per_request": {k: round((cpu_after[k] - cpu_before[k]) / count * 1e6, 1) for k in pids},
            "redis_calls_per_request": per_request}


def print_table(results):
    print(f"{'target':<12} {'round':>5} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'err':>4} "
          f"{'tempestd us/req':>15} {'redis us/req':>12}  redis calls/req")
    for r in results:
        cpu = r["cpu_us_per_request"]
        calls = " ".join(f"{k}={v:g}" for k, v in r["redis_calls_per_request"].items())
        print(f"{r['target']:<12} {r['round']:>5} {r['rps']:>8.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
              f"{r['errors']:>4} {cpu['tempestd']:>15.1f} {cpu['redis']:>12.1f}  {calls}")
    print()
    for name in ("no-sessions", "sessions"):
        mine = [r for r in results if r["target"] == name]
        print(f"median {name:<12} {statistics.median(r['rps'] for r in mine):>8.0f} req/s, tempestd "
              f"{statistics.median(r['cpu_us_per_request']['tempestd'] for r in mine):.1f} us/req, redis "
              f"{statistics.median(r['cpu_us_per_request']['redis'] for r in mine):.1f} us/req")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", "-c", type=int, default=100)
    parser.add_argument("--duration", "-d", type=float, default=5.0, help="seconds per run (default 5)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per run (default 2)")
    parser.add_argument("--rounds", "-r", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--workers", "-w", type=int, default=2, help="hello workers (default 2)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    args = parser.parse_args(argv)
    # what targets.Tempest and measuring.run_loadgen read
    args.python, args.reliable, args.tempest_timeout, args.client_timeout = sys.executable, False, 30.0, 10.0
    args.env = dict(os.environ, PYTHONUNBUFFERED="1")
    return args


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tempest-bench-sessions-") as tmp:
        procs = Processes(tmp)
        try:
            targets = [SessionTempest(procs, tmp, args, sessions) for sessions in (False, True)]
            for target in targets:
                target.start(time.monotonic() + 30)
            results = []
            for round_ in range(1, args.rounds + 1):
                order = targets if round_ % 2 else targets[::-1]  # neither always runs first
                results += [measure(procs, args, target, round_) for target in order]
        except BenchError as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
        finally:
            procs.stop_all()
    print_table(results)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"argv": sys.argv, "results": results}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
