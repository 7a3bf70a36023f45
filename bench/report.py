"""The tables and lines the harness prints."""

from measuring import RSS_INTERVAL, RSS_WARMUP
from targets import KEEPALIVE_TIMEOUT


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


def languages_table(results):
    """--workers-lang: per connection count and tempest target (the Python workers, then each
    language), the median req/s, the ratios of the medians to the ceiling and to the Python
    workers, errors, the CPU per request (medians) and the worst other load."""
    header = ["connections", "target", "rounds", "req/s (median)", "ratio to ceiling", "ratio to Python workers",
              "errors", "tempestd µs/req", "workers µs/req", "redis µs/req", "round ratios to ceiling",
              "other CPU % (max)"]
    rows = []
    for connections in dict.fromkeys(r["connections"] for r in results):
        level = [r for r in results if r["connections"] == connections]
        medians = {name: median([r["throughput"]["rps"] for r in level if r["target"] == name])
                   for name in dict.fromkeys(r["target"] for r in level)}
        for name in medians:
            if name.startswith("tempest"):
                rows.append(language_row(connections, name, [r for r in level if r["target"] == name], medians))
    return render(header, rows)


def language_row(connections, name, runs, medians):
    """One row of ``languages_table``: target ``name``'s ``runs`` at one connection count."""
    ceiling, python, own = medians.get("ceiling"), medians.get("tempest"), medians[name]
    cpu = {p: [v for v in (cpu_us_per_request(r, p) for r in runs) if v is not None]
           for p in ("tempestd", "workers", "redis")}
    errors = sum(r["throughput"]["error_total"] + (r["latency"]["error_total"] if r["latency"] is not r["throughput"]
                                                   else 0) for r in runs)
    other = [max(0, c["other"]) for r in runs for c in (r["cpu_percent"], r.get("cpu_percent_latency_run")) if c]
    return [connections, name, len(runs), fmt(own, "{:.0f}"),
            fmt(own / ceiling if ceiling and own else None, "{:.2f}"),
            fmt(own / python if python and own else None, "{:.2f}"), errors,
            *(fmt(median(cpu[p]) if cpu[p] else None) for p in ("tempestd", "workers", "redis")),
            " ".join(f"{r['ratio']:.2f}" for r in runs if r.get("ratio") is not None) or "-",
            fmt(max(other) if other else None, "{:.0f}")]


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
        if idle.get("server_connections_after") is not None:
            notes.append(f"  {name}: tempestd's connections_open {idle.get('server_connections_before')} before, "
                         f"{idle.get('server_connections_after')} with the idle connections")
        notes += [f"  {name}: PROBLEM: {p}" for p in idle_problems(idle, final)]
    return render(header, rows) + ("\n" + "\n".join(notes) if notes else "")


def idle_problems(idle, final):
    """What went wrong with the idle connections of one run (``final``: idle.py's last report)."""
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
    if idle.get("server_nofile_limit") is not None and idle["server_nofile_limit"] != "unlimited" \
            and idle["server_nofile_limit"] < idle["requested"] + 100:
        problems.append(f"the server's open-file limit is {idle['server_nofile_limit']}")
    return problems


def details(results):
    return "\n".join("\n".join(detail_lines(r)) for r in results)


def detail_lines(r):
    """One run's details: the CPU of each process, the clients' figures, tempestd's counters."""
    lat, tp = r["latency"], r["throughput"]
    parts = cpu_lines(r)
    parts.append(f"  closed-loop client: {lat['count']} requests, {fmt(lat['rps'], '{:.0f}')} req/s, "
                 f"per connection min/median/max {lat['per_connection_min']}/"
                 f"{lat['per_connection_median']:g}/{lat['per_connection_max']}")
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
    return parts


def cpu_lines(r):
    """The CPU each process used during the run's throughput run (and per request) and its
    latency run."""
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
    return parts


# ---------------------------------------------------------------------------------------------
# the whole report, printed once everything is stopped


def print_report(args, info, results, soak_result):
    """Every table and figure of an invocation, on stdout."""
    print()
    print_header(args, info)
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
    if args.workers_lang:
        print()
        print("tempest with the hello workers of each language (" + ", ".join(args.workers_lang) + f"; {args.workers} "
              "each), against the ceiling and the Python workers (ratios of the medians over the rounds; "
              "µs/req: CPU per\n request during the throughput run, medians; workers: each worker with the "
              "processes it started):")
        print(languages_table(results))
    if args.idle_compare:
        print()
        print(f"tempest without and with {args.idle} idle keep-alive connections (medians over the rounds):")
        print(idle_comparison(results))
    print()
    print(details(results))
    runs = [(label(r), r) for r in results]
    if soak_result:
        runs.append((label(soak_result) + f" soak {args.soak:g}s", soak_result))
    print_rss(runs)
    if args.idle:
        print_idle(runs)
    if soak_result:
        print_soak(soak_result, args.soak)
    print_problems(info.get("logged_problems"))


def print_header(args, info):
    """The machine, the load outside the runs, and the code that ran."""
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
    clients = info.get("clients")
    if clients:
        changes = clients.get("changes")
        print(f"workers in other languages: {', '.join(clients['languages'])}, from the working tree at commit "
              f"{clients.get('commit', '?')[:12]}" + (f" + uncommitted changes to {', '.join(changes)}" if changes else "")
              + (f" (not from --commit {args.commit}: it applies to the tempest package)" if args.commit else ""))
    if info.get("code_digest_after") and info["code_digest_after"] != info.get("code_digest_before"):
        print("WARNING: tempest's code changed during the run: the processes may not have run the "
              "same code; measure again")


def print_rss(runs):
    print()
    print(f"server RSS during the throughput runs (VmRSS every {RSS_INTERVAL:g} s; samples: after the "
          f"first {RSS_WARMUP:.0%} of the run / all; min, max and spread = (max - min) / min over "
          f"those after the first {RSS_WARMUP:.0%}):")
    print(rss_table(runs))


def print_idle(runs):
    print()
    print(f"idle keep-alive connections (bench/idle.py, one GET / each, then silent; opened before "
          f"the warm-up, held through the runs; tempestd keepalive_timeout = {KEEPALIVE_TIMEOUT}):")
    print(idle_table(runs))
    print("RSS per idle connection (server RSS with them - before, / opened): " + ", ".join(
        f"{name} {fmt(r['idle'].get('rss_per_connection_kib'))} KB" for name, r in runs if r.get("idle")))


def print_soak(soak_result, seconds):
    """The soak's figures: req/s, errors, CPU, counters, and whether tempestd's RSS was flat."""
    tp, rss = soak_result["throughput"], soak_result["rss_during_throughput"]
    spread = rss["spread_percent"]
    print()
    print(f"soak: {label(soak_result)}, {seconds:g}s: {fmt(tp['rps'], '{:.0f}')} req/s, "
          f"{tp['error_total']} errors {tp['errors']}; CPU % of one core: "
          + ", ".join(f"{k} {v}" for k, v in soak_result["cpu_percent"].items()))
    if soak_result.get("server_stats_delta"):
        print(f"  tempestd counters: { {k: v for k, v in soak_result['server_stats_delta'].items() if v} }")
    print(f"  tempestd RSS after the first {rss['warmup_s']:.0f}s ({rss['count_after_warmup']} samples): "
          f"min {mib(rss['min_kib'], '{:.2f}')} MiB, max {mib(rss['max_kib'], '{:.2f}')} MiB, "
          f"spread {fmt(spread, '{:.2f}')}% -> "
          + ("-" if spread is None else ("flat within 10%" if spread <= 10 else "NOT flat within 10%")))


def print_problems(problems):
    """WARNING and worse lines of the logs of tempestd and the workers (None: not read)."""
    if problems is None:
        return
    print("warnings in the logs of tempestd and the workers: "
          + ("none" if not problems else ""))
    for name, found in problems.items():
        print(f"  {name}: {found['count']} line(s), first: " + "\n    ".join(found["first"]))
