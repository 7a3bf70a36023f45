"""The figures and tables of bench/queues.py: medians, spreads and ratios of the rounds, the
requests that were on a killed worker, and the Markdown tables printed."""

import math
import statistics

QUIET = 25.0  # --compare: other load (% of one core) under which a round counts as quiet
# --kill: before each run, every worker process up this long: the supervisor forgets a child's
# failures in a row once it stayed up 10 s (tempest.supervisor.backoff.STABLE_SECS), so that a
# run does not inherit the restart backoff of the kills of the run before
WORKERS_SETTLED = 11.0


def percentile(values, p):
    """Nearest rank, as bench/loadgen.py's."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] if ordered else None


def spread(values):
    """(max - min) / median, in %."""
    middle = statistics.median(values)
    return 100 * (max(values) - min(values)) / middle if middle else None


def table_compare(results):
    names = list(dict.fromkeys(r["variant"] for r in results))
    reference = names[0]
    rounds = sorted({r["round"] for r in results})
    by = {(r["variant"], r["round"]): r for r in results}
    ref_median = statistics.median(by[(reference, n)]["rps"] for n in rounds)
    lines = [f"| variant | req/s (median) | min–max (spread) | ratio of medians to {reference} | round ratios "
             "| tempestd / workers / redis µs per request (median) | all three µs/req (median) "
             "| p50 / p99 ms (loadgen, median) | errors | other CPU % of a core, per round |", "|" + "---|" * 10]
    for name in names:
        mine = [by[(name, n)] for n in rounds]
        rps = [r["rps"] for r in mine]
        cpu = {k: statistics.median(r["cpu_us_per_request"][k] for r in mine) for k in ("tempestd", "workers", "redis")}
        total = statistics.median(sum(r["cpu_us_per_request"].values()) for r in mine)
        ratios = " ".join(f"{by[(name, n)]['rps'] / by[(reference, n)]['rps']:.2f}" for n in rounds)
        errors = sum(r["errors"] + r["latency_errors"] for r in mine)
        lines.append(f"| {name} | {statistics.median(rps):.0f} | {min(rps):.0f}–{max(rps):.0f} ({spread(rps):.0f}%) "
                     f"| **{statistics.median(rps) / ref_median:.3f}** | {ratios} "
                     f"| {cpu['tempestd']:.1f} / {cpu['workers']:.1f} / {cpu['redis']:.1f} | {total:.1f} "
                     f"| {statistics.median(r['p50_ms'] for r in mine):.2f} / {statistics.median(r['p99_ms'] for r in mine):.2f} "
                     f"| {errors} | {others(mine)} |")
    quiet = [n for n in rounds if all(by[(name, n)]["cpu_percent"]["other"] < QUIET for name in names)]
    lines.append("")
    if quiet:
        ratios = "; ".join(f"{name}: " + " ".join(f"{by[(name, n)]['rps'] / by[(reference, n)]['rps']:.2f}" for n in quiet)
                           for name in names[1:])
        lines.append(f"Quiet rounds (other CPU under {QUIET:g}% of a core in every run of the round): "
                     f"{' '.join(map(str, quiet))}; their ratios to {reference}: {ratios}.")
    else:
        lines.append(f"No quiet round (other CPU under {QUIET:g}% of a core in every run of a round).")
    return "\n".join(lines)


def others(results):
    """The busy CPU of the machine that none of the stack's processes nor the client used,
    during each round's throughput run: other agents' load."""
    return " ".join(f"{r['cpu_percent']['other']:.0f}" for r in results)


def table_abandon(results, args):
    names = list(dict.fromkeys(r["variant"] for r in results))
    lines = [f"| code | handler runs of {args.clients} abandoned requests (median; rounds) | busy s (median; rounds) "
             "| workers' CPU s (median) | time to drain s (median) | jobs withdrawn (median) | tempestd CPU s (median) |",
             "|" + "---|" * 7]
    medians = {}
    for name in names:
        mine = [r for r in results if r["variant"] == name]
        med = lambda key: statistics.median(r[key] for r in mine)  # noqa: E731
        medians[name] = med("busy_s")
        withdrawn = statistics.median(r["tempestd_counters"].get("jobs_withdrawn", 0) for r in mine)
        runs = " ".join(str(r["runs"]) for r in mine)
        busy = " ".join(f"{r['busy_s']:.2f}" for r in mine)
        lines.append(f"| {name} | {med('runs'):.0f} ({runs}) | {med('busy_s'):.2f} ({busy}) "
                     f"| {med('worker_cpu_s'):.2f} | {med('drain_s'):.2f} | {withdrawn:.0f} | {med('tempestd_cpu_s'):.2f} |")
    if len(names) == 2 and medians[names[0]]:
        lines.append("")
        lines.append(f"Busy seconds, measured ÷ before (medians): **{100 * medians[names[1]] / medians[names[0]]:.1f}%** "
                     "(the issue's aim: under 5%).")
    return "\n".join(lines)


def analyse_kill(records, kills, started):
    """The requests in flight on each killed worker (it started them and did not answer them:
    their time from the kill to their answer), per kill the slowest of every request in
    flight at the kill, and the failures."""
    by_id = {r[0]: r for r in records}
    runs = {}  # request id -> pids that started it, in order
    for line in started:
        pid, _, rid = line.partition(" ")
        runs.setdefault(rid, []).append(int(pid))
    on_killed, missing = [], 0
    for when, pid in kills:
        for rid, pids in runs.items():
            if pid not in pids:
                continue
            record = by_id.get(rid)
            if record is None:
                missing += 1
                continue
            _, sent, answered, status, by, error = record
            if by == pid or answered < when:  # answered before it died
                continue
            on_killed.append({"request": rid, "killed": pid, "kill_to_answer_s": round(answered - when, 4),
                              "status": status, "answered_by": by, "error": error})
    window = []  # per kill: the slowest answer after the kill of the requests in flight at it
    for when, _ in kills:
        late = [answered - when for _, sent, answered, _, _, _ in records if sent < when <= answered]
        window.append(round(max(late), 4) if late else None)
    failed = [r for r in records if r[3] != 200]
    latencies = [answered - sent for _, sent, answered, status, _, _ in records if status == 200]
    times = [o["kill_to_answer_s"] for o in on_killed if o["status"] == 200]
    return {"kills": len(kills), "requests": len(records), "on_killed": on_killed, "unmatched_starts": missing,
            "kill_to_answer_s": {"n": len(on_killed), "p50": percentile(times, 50), "p99": percentile(times, 99),
                                 "max": max(times) if times else None},
            "window_max_s": window, "failed": len(failed),
            "failures": [{"request": r[0], "status": r[3], "error": r[5], "latency_s": round(r[2] - r[1], 3)}
                         for r in failed[:20]],
            "started_twice": sum(1 for pids in runs.values() if len(pids) > 1),
            # at least once: a worker killed after its answer, before it released the job
            "run_again_after_answer": sum(1 for rid, pids in runs.items() if rid in by_id and by_id[rid][4] in pids[:-1]),
            "latency_s": {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
                          "max": max(latencies) if latencies else None},
            "kill_times": [[round(w, 3), p] for w, p in kills]}


def table_kill(results):
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    lines = ["| workers | round | kills | jobs on the killed workers | kill → answer p50 / p99 / max s "
             "| slowest answer after each kill, of all requests in flight at it: median / max s "
             "| requests | failed (not 200) | started twice (of which after their answer) "
             "| latency of all requests p50 / p99 / max s | jobs given back (tempestd's jobs_redelivered) |",
             "|" + "---|" * 11]
    names = list(dict.fromkeys(r["variant"] for r in results))
    for name in names:
        mine = [r for r in results if r["variant"] == name]
        for r in mine + [None]:
            if r is None:  # every round's jobs together
                if len(mine) < 2:
                    continue
                times = [o["kill_to_answer_s"] for m in mine for o in m["on_killed"] if o["status"] == 200]
                windows = [w for m in mine for w in m["window_max_s"] if w is not None]
                k = {"n": sum(m["kill_to_answer_s"]["n"] for m in mine), "p50": percentile(times, 50),
                     "p99": percentile(times, 99), "max": max(times) if times else None}
                row = ("all", sum(m["kills"] for m in mine), k, windows, sum(m["requests"] for m in mine),
                       sum(m["failed"] for m in mine), (sum(m["started_twice"] for m in mine),
                                                        sum(m["run_again_after_answer"] for m in mine)), None,
                       sum(m["tempestd_counters"].get("jobs_redelivered", 0) for m in mine))
            else:
                row = (r["round"], r["kills"], r["kill_to_answer_s"], [w for w in r["window_max_s"] if w is not None],
                       r["requests"], r["failed"], (r["started_twice"], r["run_again_after_answer"]), r["latency_s"],
                       r["tempestd_counters"].get("jobs_redelivered"))
            round_, kills, k, windows, requests, failed, twice, latency, given_back = row
            lat = "-" if latency is None else f"{fmt(latency['p50'])} / {fmt(latency['p99'])} / {fmt(latency['max'])}"
            win = f"{fmt(statistics.median(windows))} / {fmt(max(windows))}" if windows else "-"
            lines.append(f"| {name} | {round_} | {kills} | {k['n']} | {fmt(k['p50'])} / {fmt(k['p99'])} / {fmt(k['max'])} "
                         f"| {win} | {requests} | {failed} | {twice[0]} ({twice[1]}) | {lat} | {given_back} |")
    return "\n".join(lines)


def report(args, info, codes, results):
    """The tables of ``results``, then where the code came from, the load and the logs' warnings."""
    if args.compare:
        print(table_compare(results))
    elif args.abandon:
        print(table_abandon(results, args))
    else:
        print(table_kill(results))
        for r in results:
            for f in r["failures"]:
                print(f"failed: {r['variant']} round {r['round']}: request {f['request']} status {f['status']} "
                      f"error {f['error']} after {f['latency_s']} s")
            if not r.get("workers_settled_before", True):
                print(f"{r['variant']} round {r['round']}: its workers were not all up {WORKERS_SETTLED:g} s before it")
            if r.get("status_after"):
                print(f"{r['variant']} round {r['round']}: after it, " + ", ".join(
                    f"{s['name']} {s['state']} restarts={s['restarts']}" for s in r["status_after"]))
    print()
    for label, code in codes.items():
        where = code.get("commit") or f"installed ({code['package']}, git {code.get('git', {}).get('commit', '?')[:7]}, " \
                                      f"changed files {code.get('git', {}).get('tempest_changes', [])})"
        print(f"code {label}: {where}" + (" - CHANGED DURING THE RUN" if code.get("changed_during_run") else ""))
    print(f"load average before: {info['loadavg_before']}; after: {info['loadavg_after']}; other CPU before/after "
          f"(% of one core): {info.get('background_cpu_percent_before')} / {info.get('background_cpu_percent_after')}")
    problems = info.get("logged_problems") or {}
    print("WARNING or worse in the logs: " + (", ".join(f"{k}: {v['count']}" for k, v in problems.items()) or "none"))
    for name, found in problems.items():
        for line in found["first"][:3]:
            print(f"  {name}: {line[:300]}")
