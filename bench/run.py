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
    python bench/run.py --duration 5 --rounds 3 -c 100 --workers-lang node go   # + tempest-node, tempest-go
    python bench/run.py --duration 5 --rounds 3 -c 100 --front-processes 2      # + tempest-fronts2

With ``--workers-lang``, one more tempest stack (Redis, tempestd, hello workers) per language,
the clients run from the working tree (bench/languages.py).
"""


import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time

import languages
from measuring import measure, soak
from probes import background_cpu, logged_problems
from processes import BenchError, Processes
from provenance import code_digest, extract_commit, git_state, machine_info, tempest_package
from report import print_report
from targets import KEEPALIVE_TIMEOUT, Ceiling, Tempest


class Session:
    """One invocation: its temporary directory, the children it started and what they measured."""

    def __init__(self, args):
        self.args = args
        self.info = machine_info(args.wrk)
        self.tmp = tempfile.mkdtemp(prefix="tempest-bench-")
        self.procs = Processes(self.tmp)
        self.results = []
        self.soak_result = None
        self.package = None  # the directory of the tempest package measured
        self.tempest = None  # the tempest target, unless --only ceiling
        self.stacks = []  # every tempest target: Python's, then one per --workers-lang

    def run(self):
        """Measure everything, then stop every child; return the exit code (0: all measured)."""
        code = 1  # until every measurement is done
        try:
            self.measure_all()
            code = 0
        except BenchError as exc:
            print(f"bench: {exc}", file=sys.stderr)
        finally:
            self.stop_children()
            if not self.args.keep_logs and code == 0:
                shutil.rmtree(self.tmp, ignore_errors=True)
            elif os.path.isdir(self.tmp):
                print(f"bench: logs kept in {self.tmp}", file=sys.stderr)
        return code

    def measure_all(self):
        args, info = self.args, self.info
        self.locate_code()
        self.prepare_clients()
        info["background_cpu_percent_before"] = background_cpu()
        targets = self.start_targets(time.monotonic() + args.start_timeout)
        self.announce(targets)
        for connections in args.connections:
            for round_ in range(1, args.rounds + 1):
                self.measure_round(targets, connections, round_)
        if args.soak:
            self.soak()
        self.procs.check_alive()
        self.stop_children()
        info["code_digest_after"] = code_digest(self.package)
        info["logged_problems"] = logged_problems(self.tmp)
        info["background_cpu_percent_after"] = background_cpu()

    def locate_code(self):
        """The tempest package the children import (with --commit: extracted from that commit),
        its git state and its digest, into ``info``; ``args.env``: the children's environment."""
        args, info = self.args, self.info
        args.env = dict(os.environ, PYTHONUNBUFFERED="1")
        if args.commit:
            src = os.path.join(self.tmp, "src")
            info["commit"] = extract_commit(args.commit, src)
            args.env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))
        self.package = tempest_package(args.python, args.env)
        if not self.package:
            raise BenchError(f"{args.python} cannot import tempest")
        info["tempest_package"] = self.package
        info["git"] = {"commit": info["commit"], "tempest_changes": []} if args.commit else git_state(self.package)
        info["code_digest_before"] = code_digest(self.package)

    def prepare_clients(self):
        """--workers-lang: build the hello workers that need it (go), record the clients' code."""
        if not self.args.workers_lang:
            return
        self.info["clients"] = languages.clients_state(self.args.workers_lang)
        for lang in self.args.workers_lang:
            if languages.LANGUAGES[lang].build:
                print(f"bench: building the {lang} hello worker...", file=sys.stderr)
                self.info["clients"].setdefault("built", {})[lang] = languages.build(lang, self.procs)

    def stop_children(self):
        """Every child, then what the workers in other languages started and left running."""
        self.procs.stop_all()
        for stack in self.stacks:
            strays = stack.stop_strays()
            if strays:
                print(f"bench: {stack.name}: processes {strays} survived SIGKILL", file=sys.stderr)

    def start_targets(self, deadline):
        """Start tempest's stack (and one per --workers-lang, each with its own --start-timeout),
        then the ceiling; return the targets, the ceiling first."""
        targets = []
        if self.args.only != "ceiling":
            self.tempest = Tempest(self.procs, self.tmp, self.args)
            self.stacks.append(self.tempest)
            self.tempest.start(deadline)
            self.info["redis"] = self.tempest.redis_version
            self.info["answer_port_found"] = self.tempest.answer_port is not None
            targets.append(self.tempest)
            variants = [(lang, 1) for lang in self.args.workers_lang]
            variants += [(None, self.args.front_processes)] if self.args.front_processes > 1 else []
            for lang, fronts in variants:
                stack = Tempest(self.procs, self.tmp, self.args, lang, fronts)
                self.stacks.append(stack)
                print(f"bench: starting {stack.name}...", file=sys.stderr)
                stack.start(time.monotonic() + self.args.start_timeout)
                targets.append(stack)
        if self.args.only != "tempest":
            ceiling = Ceiling(self.procs, self.tmp, self.args)
            ceiling.start(deadline)
            targets.insert(0, ceiling)
        return targets

    def announce(self, targets):
        args = self.args
        client = f"wrk ({self.info['wrk']})" if args.wrk else "Python closed-loop client (no wrk)"
        print(f"bench: {len(targets)} target(s), connections {args.connections}, {args.duration:g}s runs, "
              f"throughput from {client}, latency from bench/loadgen.py"
              + (f", {args.idle} idle connections" if args.idle else "")
              + (f", a {args.soak:g}s soak" if args.soak else "") + f"; logs in {self.tmp}", file=sys.stderr)

    def measure_round(self, targets, connections, round_):
        """One round at one connection count: every target back to back, then their ratios."""
        args = self.args
        level = []
        for target, with_idle in round_plan(targets, self.tempest, args.idle_compare, round_):
            self.procs.check_alive()
            print(f"bench: {target.name} at {connections} connections"
                  + (f" with {args.idle} idle" if args.idle and with_idle else "")
                  + (f", round {round_}/{args.rounds}" if args.rounds > 1 else "") + "...", file=sys.stderr)
            result = measure(target, self.procs, args, connections, with_idle)
            if args.rounds > 1:
                result["round"] = round_
            level.append(result)
            self.results.append(result)
        set_ratios(level)

    def soak(self):
        """--soak: one long throughput run of tempest at the first connection count."""
        self.procs.check_alive()
        connections = self.args.connections[0]
        print(f"bench: soak: tempest at {connections} connections for {self.args.soak:g}s...", file=sys.stderr)
        self.soak_result = soak(self.tempest, self.procs, self.args, connections)


def round_plan(targets, tempest, idle_compare, round_):
    """The (target, with_idle) of one round, in order: back to back, the order alternating from
    one round to the next (round 1: ceiling first); with --idle-compare, the ceiling without idle
    connections and tempest without, then with them. With three targets or more (--workers-lang),
    a rotation: round N starts with target N (modulo their number), the others in their order."""
    runs = [(t, True) for t in targets]
    if idle_compare:
        runs = [(t, t.name == "tempest") for t in targets]
        runs.insert(runs.index((tempest, True)), (tempest, False))
    elif len(runs) > 2:
        shift = (round_ - 1) % len(runs)
        return runs[shift:] + runs[:shift]
    return runs if round_ % 2 else runs[::-1]


def set_ratios(level):
    """Every result of a round gets its req/s over the ceiling's of that round (if it ran); with
    --workers-lang, each language's also over the Python workers' of that round."""
    ceiling_runs = [r for r in level if r["target"] == "ceiling"]
    if ceiling_runs:
        ceiling_rps = ceiling_runs[0]["throughput"]["rps"]
        for r in level:
            r["ratio"] = r["throughput"]["rps"] / ceiling_rps if ceiling_rps else None
    python_runs = [r for r in level if r["target"] == "tempest"]
    python_rps = python_runs[0]["throughput"]["rps"] if python_runs else None
    for r in level:
        if r["target"].startswith("tempest-"):
            r["ratio_to_python"] = r["throughput"]["rps"] / python_rps if python_rps else None


def write_json(args, argv, session):
    """--json FILE: every result ('-': stdout)."""
    document = {"command": [sys.argv[0]] + (sys.argv[1:] if argv is None else list(argv)),
                "machine": session.info, "workers": args.workers, "duration_s": args.duration,
                "idle_connections": args.idle, "keepalive_timeout": KEEPALIVE_TIMEOUT,
                "results": session.results, "soak": session.soak_result}
    if args.workers_lang:  # the clients' code: session.info["clients"]
        document["workers_lang"] = args.workers_lang
    if args.json == "-":
        json.dump(document, sys.stdout, indent=2)
        print()
    else:
        with open(args.json, "w") as handle:
            json.dump(document, handle, indent=2)


# ---------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Benchmark tempestd + hello workers against a plain gevent WSGI server (the ceiling).",
        epilog="Everything runs on 127.0.0.1 with free ports; children are stopped by process group.")
    add_load_options(parser)
    add_mode_options(parser)
    args = parser.parse_args(argv)
    check_args(parser, args)
    args.wrk = None if args.no_wrk else shutil.which("wrk")
    return args


def add_load_options(parser):
    """The load and its timing: connections, durations, workers, clients, timeouts."""
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


def add_mode_options(parser):
    """Which code and targets, the modes (rounds, idle connections, reliable, soak), the output."""
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
    parser.add_argument("--workers-lang", action="extend", nargs="+", default=[], metavar="LANG",
                        choices=tuple(languages.LANGUAGES),
                        help="also measure tempest with the hello workers of LANG (" + ", ".join(languages.LANGUAGES)
                             + "; repeated or several values): the targets tempest-LANG, each with its own "
                               "Redis and tempestd, in every round; the clients run from the working tree")
    parser.add_argument("--front-processes", type=int, default=1, metavar="N",
                        help="also measure the target tempest-frontsN: the same stack with [front] processes = N "
                             "(its CPU counted with its front processes'; its ratio_to_python is over tempest's)")
    parser.add_argument("--reliable", action="store_true",
                        help="the hello workers use reliable delivery (the library's default since issue 11); "
                             "without it they run plain BLPOP (hello --plain), as the figures before it did")
    parser.add_argument("--idle-compare", action="store_true",
                        help="with --idle: measure tempest both without and with the idle connections in every "
                             "round (the ceiling without), to compare the load's figures")
    parser.add_argument("--soak", type=float, default=0, metavar="SECONDS",
                        help="after the measurements, one throughput run (wrk) of SECONDS on tempest at the first "
                             "connection count: is its RSS flat after warm-up? (default: 0, none)")
    parser.add_argument("--json", metavar="FILE", help="also write every result as JSON to FILE ('-': stdout)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary directory with the logs")
    parser.add_argument("--python", default=sys.executable, help=argparse.SUPPRESS)


def check_args(parser, args):
    if any(c < 1 for c in args.connections) or args.duration <= 0 or args.workers < 1 or args.rounds < 1:
        parser.error("--connections, --duration, --workers and --rounds must be positive")
    if args.idle < 0 or args.soak < 0:
        parser.error("--idle and --soak must not be negative")
    if args.idle_compare and (not args.idle or args.only == "ceiling"):
        parser.error("--idle-compare needs --idle N and tempest")
    if args.soak and args.only == "ceiling":
        parser.error("--soak measures tempest: not with --only ceiling")
    if args.front_processes < 1 or (args.front_processes > 1 and (args.only == "ceiling" or args.idle_compare)):
        parser.error("--front-processes: a positive number, not with --only ceiling or --idle-compare")
    args.workers_lang = list(dict.fromkeys(args.workers_lang))
    if args.workers_lang and (args.only == "ceiling" or args.idle_compare or args.reliable):
        parser.error("--workers-lang: not with --only ceiling, --idle-compare or --reliable "
                     "(--reliable is the Python hello world's)")


def on_term(signum, frame):
    raise SystemExit(128 + signum)


def main(argv=None):
    args = parse_args(argv)
    missing = languages.problems(args.workers_lang)
    if missing:
        print("\n".join(f"bench: {line}" for line in missing), file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, on_term)
    session = Session(args)
    code = session.run()
    if session.results:
        print_report(args, session.info, session.results, session.soak_result)
    if args.json:
        write_json(args, argv, session)
    return code


if __name__ == "__main__":
    sys.exit(main())
