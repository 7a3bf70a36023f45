"""Measuring one target: warm-up, throughput run (wrk, else loadgen), latency run (loadgen),
the CPU each process used, the server's RSS sampled meanwhile, and the idle connections held
through them (bench/idle.py)."""

import contextlib
import json
import os
import re
import subprocess
import threading
import time

from probes import HOST, cpu_seconds, machine_busy, machine_share, nofile_limit, open_fds, proc_status
from processes import HERE, BenchError, LineReader, run_child

# gauges, and answer_connections, which the harness' own INFO probes increment
IGNORED_STATS = ("pending_jobs", "queue_length", "connections_open", "answer_connections")
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


def run_wrk(procs, args, port, connections, duration, tag, path="/"):
    """A wrk run of ``GET path``; return its figures and the CPU seconds wrk used."""
    script = os.path.join(procs.log_dir, "report.lua")
    if not os.path.exists(script):
        with open(script, "w") as handle:
            handle.write(WRK_SCRIPT)
    threads = max(1, min(args.wrk_threads, connections))
    duration = max(1, round(duration))  # wrk takes whole seconds
    argv = [args.wrk, "-t", str(threads), "-c", str(connections), "-d", f"{duration}s",
            "--timeout", f"{args.wrk_timeout:g}s", "-s", script, f"http://{HOST}:{port}{path}"]
    text, spent = run_child(procs, tag, argv, timeout=duration + args.wrk_timeout + 30)
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
            "wrk_max_ms": data["max_us"] / 1000, "argv": argv}, spent


def run_loadgen(procs, args, port, connections, duration, tag, path="/"):
    """A bench/loadgen.py run of ``GET path``; return its figures and the CPU seconds it used."""
    argv = [args.python, os.path.join(HERE, "loadgen.py"), "--port", str(port), "--connections",
            str(connections), "--duration", f"{duration:g}", "--timeout", f"{args.client_timeout:g}"]
    if path != "/":
        argv += ["--path", path]
    text, spent = run_child(procs, tag, argv, timeout=duration + args.client_timeout + 30)
    result = json.loads(text.strip().splitlines()[-1])
    result["argv"] = argv
    return result, spent


def with_cpu(target, run, extra_pids=None):
    """Call ``run()``, which returns its result and the CPU seconds of the client it ran; return
    that result and the CPU each process used meanwhile (% of one core). ``extra_pids``: more of
    our processes ({name: [pid, ...]}), e.g. the idle connections'."""
    pids = dict(target.pids(), **(extra_pids or {}))
    own = target.pids()
    # a worker in another language: with the processes it started (languages.ProcessTree)
    seconds = lambda key, pid: target.cpu_seconds(key, pid) if key in own else cpu_seconds(pid)
    before = {k: [seconds(k, p) for p in v] for k, v in pids.items()}
    busy_before = machine_busy()
    t0 = time.monotonic()
    result, client_seconds = run()
    wall = time.monotonic() - t0
    busy_after = machine_busy()
    cpu = {}
    for key, plist in pids.items():
        spent = [(seconds(key, p) or 0) - (b or 0) for p, b in zip(plist, before[key])]
        cpu[key] = round(100 * sum(spent) / wall, 1)
    cpu["client"] = round(100 * client_seconds / wall, 1)
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
        self.lines = None  # a LineReader on its stdout
        self.report = {"requested": self.count}

    def open(self):
        target, pid = self.target, self.target.server_pid()
        report = self.report
        report["server_nofile_limit"] = nofile_limit(pid)
        self._read_server("before")
        argv = [self.args.python, os.path.join(HERE, "idle.py"), "--port", str(target.port),
                "--connections", str(self.count), "--deadline", f"{self.deadline:.0f}"]
        report["argv"] = argv
        self.proc = self.procs.start(self.tag, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.lines = LineReader(self.proc)
        ready = self._read_json(self.connect_budget + 15)
        if ready is None or "ready" not in ready:
            self.procs.check_alive()
            raise BenchError(f"bench/idle.py did not open its connections within {self.connect_budget:.0f}s:\n"
                             + self.procs.log_tail(self.tag))
        report.update(ready["ready"])
        target.settle()  # tempest: the idle connections' first requests are answered
        time.sleep(1.0)  # let the server finish with the handshakes before reading its RSS
        self._read_server("after")
        self._read_idle_cpu(pid)
        opened = report["opened"]
        if opened and report["rss_before_kib"] and report["rss_after_kib"]:
            report["rss_per_connection_kib"] = round(
                (report["rss_after_kib"] - report["rss_before_kib"]) / opened, 2)
        return report

    def _read_server(self, when):
        """The server's RSS, open descriptors and connections (tempestd's INFO), ``when`` is
        "before" or "after" the idle connections were opened."""
        report, target = self.report, self.target
        report[f"rss_{when}_kib"] = target.rss().get("VmRSS")
        report[f"server_fds_{when}"] = open_fds(target.server_pid())
        report[f"server_connections_{when}"] = target.connections_open()

    def _read_idle_cpu(self, pid):
        """What merely holding them costs the server (tempestd: its reaper walks every connection)."""
        before = cpu_seconds(pid)
        time.sleep(IDLE_CPU_WINDOW)  # a measurement window
        after = cpu_seconds(pid)
        if before is not None and after is not None:
            self.report["server_cpu_percent_idle_only"] = round(100 * (after - before) / IDLE_CPU_WINDOW, 1)

    def _read_json(self, timeout):
        """idle.py's next line (a JSON object) within ``timeout`` seconds, or None."""
        line = self.lines.read_line(timeout)
        if line is None:
            return None
        try:
            return json.loads(line)
        except ValueError:
            raise BenchError(f"bench/idle.py wrote something else than JSON: {line[:200]!r}") from None

    def pids(self):
        return {"idle": [self.proc.pid]} if self.proc is not None else {}

    def close(self):
        """Tell it to stop (stdin closed), read its report, then the server's RSS without them."""
        report = self.report
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        final = self._read_json(30)
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
