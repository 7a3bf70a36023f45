"""A spooled upload through tempestd against the same upload into a plain gevent server.

tempestd gets a route ``/upload/`` with ``spool = yes`` (its spool_dir in the temporary
directory) and one worker that answers as soon as it has the job (it does not read the body:
what is measured is the upload into tempestd, its file written and its SHA-256 computed). The
plain server (``--sink``, started by this script) is ``gevent.pywsgi.WSGIServer`` reading
``wsgi.input`` in 64 KiB blocks into a new file of the same directory (no hash), then removing
it; a second one (``gevent+sha256``) hashes the body as well, as tempestd does, to tell the
hash's cost from the rest. All get the same client: ``curl -T`` of a sparse file of ``--size`` bytes (zeros that cost
no disk read; Python's socket client without curl), ``Content-Length`` set, no
``Expect: 100-continue``. Each round starts with the next server in turn; each gives MB/s (10^6
bytes per second of the client's time), the server's CPU seconds and its RSS; the table ends
with the medians and tempestd's peak RSS (VmHWM) against its RSS before the first upload.

    python bench/upload.py                       # 1 GiB, 3 rounds
    python bench/upload.py --size 256M --rounds 5 --dir /var/tmp --json out.json
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from probes import HOST, cpu_seconds, free_ports, proc_status, resp_command, wait_until
from processes import BenchError, Processes
from targets import redis_binary, tempestd_command

QUEUE = "bench-upload"
SIZES = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text):
    text = text.strip().upper()
    return int(text[:-1]) * SIZES[text[-1]] if text[-1:] in SIZES else int(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=1 << 30, help="bytes per upload (K, M, G; default 1G)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--dir", default=None, help="where the spool and the sink write (default: a temporary "
                        "directory under $TMPDIR)")
    parser.add_argument("--python", default=sys.executable, help="interpreter of tempestd, the worker and the sink")
    parser.add_argument("--json", help="write every figure here")
    parser.add_argument("--no-curl", action="store_true", help="the Python client even if curl is on PATH")
    parser.add_argument("--sink", nargs=2, metavar=("PORT", "DIR"), help=argparse.SUPPRESS)  # the plain server
    parser.add_argument("--sink-hash", action="store_true", help=argparse.SUPPRESS)  # ...hashing too
    parser.add_argument("--worker", metavar="REDIS_URL", help=argparse.SUPPRESS)  # tempestd's worker
    args = parser.parse_args(argv)
    if args.sink:
        return run_sink(int(args.sink[0]), args.sink[1], args.sink_hash)
    if args.worker:
        return run_worker(args.worker)
    tmp = tempfile.mkdtemp(prefix="tempest-bench-upload-", dir=args.dir)
    procs = Processes(tmp)
    try:
        return measure(args, tmp, procs)
    except BenchError as exc:
        print(f"upload.py: {exc}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def measure(args, tmp, procs):
    redis_port, front_port, sink_port, hashing_port = free_ports(4)
    deadline = time.monotonic() + 30
    procs.start("redis", [redis_binary(), "--bind", HOST, "--port", str(redis_port), "--save", "",
                          "--appendonly", "no", "--dir", tmp, "--logfile", ""])
    wait_until("redis-server", lambda: resp_command(redis_port, "PING").startswith(b"+PONG"), deadline, procs)
    url = f"redis://{HOST}:{redis_port}/0"
    spool_dir, sink_dir = os.path.join(tmp, "spool"), os.path.join(tmp, "sink")
    os.makedirs(sink_dir)  # the spool's sibling: the same disk
    ini = os.path.join(tmp, "tempest.ini")
    with open(ini, "w") as handle:
        handle.write(f"[tempest]\nrun_dir = run\nlog_level = warning\n[redis]\nurl = {url}\n"
                     f"[front]\nlisten = {HOST}:{front_port}\nanswer_listen = {HOST}:0\nbody_timeout = 3600\n"
                     f"[route:/upload/]\nqueue = {QUEUE}\nspool = yes\nspool_dir = {spool_dir}\n"
                     f"max_body = {max(args.size, 1 << 20)}\ntimeout = 600\n")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    tempestd = procs.start("tempestd", tempestd_command(args.python) + ["-c", ini], env=env)
    procs.start("worker", [args.python, os.path.abspath(__file__), "--worker", url], env=env)
    sink = procs.start("sink", [args.python, os.path.abspath(__file__), "--sink", str(sink_port), sink_dir], env=env)
    hashing = procs.start("hashing", [args.python, os.path.abspath(__file__), "--sink", str(hashing_port), sink_dir,
                                      "--sink-hash"], env=env)
    source, warm = sparse_file(tmp, "source", args.size), sparse_file(tmp, "warm", 1 << 20)
    client = None if args.no_curl else shutil.which("curl")
    targets = {"tempest": (front_port, tempestd, spool_dir), "gevent": (sink_port, sink, sink_dir),
               "gevent+sha256": (hashing_port, hashing, sink_dir)}
    for name, (port, _, _) in targets.items():  # ready, and warmed: a first small upload
        wait_until(name, lambda port=port: upload(client, port, warm)[0] == 200, deadline, procs)
    rss_start = proc_status(tempestd.pid).get("VmRSS", 0)
    rounds = []
    for index in range(args.rounds):
        order = list(targets)[index % len(targets):] + list(targets)[:index % len(targets)]
        row = {}
        for name in order:
            port, proc, directory = targets[name]
            cpu = cpu_seconds(proc.pid)
            status, seconds = upload(client, port, source)
            if status != 200:
                raise BenchError(f"{name}: upload answered {status}")
            row[name] = {"seconds": seconds, "mb_s": args.size / seconds / 1e6,
                         "cpu_s": cpu_seconds(proc.pid) - cpu, **proc_status(proc.pid)}
            removed = time.monotonic() + 5  # tempestd removes the body once its answer is sent
            while (leftovers := os.listdir(directory)) and time.monotonic() < removed:
                time.sleep(0.01)
            if leftovers:
                raise BenchError(f"{name} left {leftovers} in {directory}")
        rounds.append(row)
        print("round %d: %s" % (index + 1, "  ".join(
            f"{name} {row[name]['mb_s']:.0f} MB/s (cpu {row[name]['cpu_s']:.2f} s, RSS {row[name]['VmRSS'] / 1024:.1f} MiB)"
            for name in order)), flush=True)
    report(args, client, rounds, rss_start, proc_status(tempestd.pid))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"size": args.size, "client": client or "python", "rounds": rounds,
                       "tempestd_rss_start_kib": rss_start, "tempestd_status_end": proc_status(tempestd.pid)},
                      handle, indent=2)
    return 0


def report(args, client, rounds, rss_start, end):
    def median(name, key):
        return statistics.median(row[name][key] for row in rounds)

    print(f"\n{args.size / (1 << 20):.0f} MiB per upload, {len(rounds)} rounds, client {client or 'python'}")
    print("| server | MB/s (median) | CPU s per upload (median) | RSS after (median) |")
    print("|---|---|---|---|")
    for name, label in (("tempest", "tempestd, spool = yes"), ("gevent", "plain gevent server"),
                        ("gevent+sha256", "plain gevent server + SHA-256")):
        print(f"| {label} | {median(name, 'mb_s'):.0f} | {median(name, 'cpu_s'):.2f} | "
              f"{median(name, 'VmRSS') / 1024:.1f} MiB |")
    for other in ("gevent", "gevent+sha256"):
        ratios = [row["tempest"]["mb_s"] / row[other]["mb_s"] for row in rounds]
        print(f"tempest / {other}: {median('tempest', 'mb_s') / median(other, 'mb_s'):.2f} "
              f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})")
    print(f"tempestd RSS before the first upload {rss_start / 1024:.1f} MiB, peak (VmHWM) {end['VmHWM'] / 1024:.1f} MiB: "
          f"+{(end['VmHWM'] - rss_start) / 1024:.1f} MiB")


def sparse_file(directory, name, size):
    path = os.path.join(directory, name)
    with open(path, "wb") as handle:
        handle.truncate(size)  # zeros that no disk read costs
    return path


def upload(client, port, source):
    """POST the file ``source`` to ``/upload/``; (status, seconds)."""
    size = os.path.getsize(source)
    if client:
        out = subprocess.run([client, "-sS", "-X", "POST", "-T", source, "-H", "Expect:", "-o", os.devnull,
                              "-w", "%{http_code} %{time_total}", f"http://{HOST}:{port}/upload/x"],
                             capture_output=True, text=True, timeout=3600)
        status, seconds = out.stdout.split()
        return int(status), float(seconds)
    started = time.monotonic()
    with socket.create_connection((HOST, port), timeout=600) as conn:
        conn.sendall(b"POST /upload/x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size)
        block = bytes(1 << 20)
        for offset in range(0, size, len(block)):
            conn.sendall(block[:size - offset])
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    return int(reply.split()[1]), time.monotonic() - started


def run_sink(port, directory, hashing):
    """The plain gevent server: the body to a new file of ``directory``, 64 KiB at a time
    (with ``hashing``, its SHA-256 computed on the way)."""
    import hashlib

    from gevent.pywsgi import WSGIServer

    def app(environ, start_response):
        path = os.path.join(directory, os.urandom(16).hex())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        size, remaining, stream = 0, int(environ.get("CONTENT_LENGTH") or 0), environ["wsgi.input"]
        digest = hashlib.sha256()
        try:
            while remaining > 0 and (block := stream.read(min(remaining, 65536))):
                if hashing:
                    digest.update(block)
                os.write(fd, block)
                size += len(block)
                remaining -= len(block)
        finally:
            os.close(fd)
            os.unlink(path)
        body = str(size).encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    WSGIServer((HOST, port), app, log=None).serve_forever()
    return 0


def run_worker(url):
    """tempestd's worker: answers each upload with its size, without reading it."""
    from tempest import Worker

    worker = Worker(QUEUE, redis_url=url)

    @worker.on("url")
    def answer(context, env):
        stored = env.get("body_file") or {}
        return [200, {"Content-Type": "text/plain"}, str(stored.get("size", len(env.get("body", ""))))]

    worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
