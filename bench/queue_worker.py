#!/usr/bin/env python3
"""The worker of bench/queues.py --abandon and --kill: a url handler that sleeps, counts its
runs in Redis and says in its answer which process ran it.

It imports ``tempest.Worker`` from wherever PYTHONPATH points (the code measured: the working
tree, or a commit extracted by bench/queues.py), and uses only what every version of the
library since reliable delivery has: ``Worker(queue, prefetch=, reliable=)`` and ``worker.redis``.

With ``--count PREFIX``, each run INCRs ``PREFIX:runs`` when it starts, and when it ends adds its
wall time to ``PREFIX:busy`` (INCRBYFLOAT) and INCRs ``PREFIX:done``. With ``--started KEY``,
each run RPUSHes ``"<pid> <r>"`` to KEY when it starts, ``r`` being the ``r=`` of the request's
query string (bench/queue_load.py numbers its requests so). The answer's body is
``pid=<pid>``.

    python bench/queue_worker.py bench --sleep 0.05 --count bench:abandon
    python bench/queue_worker.py bench --sleep 0.02 --started bench:started
"""

import argparse
import logging
import os
import sys
import time

from tempest import Worker


def request_id(env):
    """The ``r=`` of the request's query string, "" if none."""
    query = env.get("url", "").partition("?")[2]
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name == "r":
            return value
    return ""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("queue")
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds each run sleeps (default: 0)")
    parser.add_argument("--plain", action="store_true", help="plain BLPOP instead of reliable delivery")
    parser.add_argument("--prefetch", type=int, default=1, help="the Worker's prefetch (default: 1)")
    parser.add_argument("--count", metavar="PREFIX", help="count runs and busy seconds under PREFIX:*")
    parser.add_argument("--started", metavar="KEY", help="RPUSH '<pid> <r>' to KEY as each run starts")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s queue_worker: %(message)s")
    worker = Worker(args.queue, prefetch=args.prefetch, reliable=not args.plain)
    pid = os.getpid()
    body = f"pid={pid}\n"

    @worker.on("url")
    def handle(context, env):
        t0 = time.perf_counter()
        if args.count:
            worker.redis.incr(args.count + ":runs")
        if args.started:
            worker.redis.rpush(args.started, f"{pid} {request_id(env)}")
        if args.sleep:
            time.sleep(args.sleep)  # the job's work
        if args.count:
            pipe = worker.redis.pipeline(transaction=False)
            pipe.incrbyfloat(args.count + ":busy", time.perf_counter() - t0)
            pipe.incr(args.count + ":done")
            pipe.execute()
        return [200, {"Content-Type": "text/plain"}, body]

    worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
