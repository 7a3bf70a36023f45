"""Test workers that pass jobs on (routing between workers), by role:

- ``front QUEUE NEXT``: a url job is forwarded to queue NEXT as a ``greet`` job; ``/gather``
  fans out to the ``square`` queues named in the query (``?q=a,b&timeout=1``) and answers the
  sum of what came back, with the missing parts' indexes in X-Missing;
- ``greeter QUEUE``: answers ``greet`` jobs with an HTTP answer; ``/fail`` raises;
- ``squarer QUEUE``: answers ``square`` jobs with the square of their number (``sleep`` first
  when the number is negative: never answers in time).
"""

import logging
import os
import sys
import time
import urllib.parse

from tempest import Worker


def front(worker, next_queue):
    @worker.on("url")
    def route(context, env):
        path, _, query = env["url"].partition("?")
        if path != "/gather":
            context.forward(next_queue, "greet", {"path": path, "via": os.getpid()})
            return None
        params = dict(urllib.parse.parse_qsl(query))
        queues = params["q"].split(",")
        parts = [(queue, "square", [i + 1 if queue != "silent" else -1]) for i, queue in enumerate(queues)]
        results = context.gather(parts, timeout=float(params.get("timeout", "2")))
        missing = [str(i) for i, result in enumerate(results) if result is None]
        total = sum(result for result in results if result is not None)
        return [200, {"Content-Type": "text/plain", "X-Missing": ",".join(missing)}, str(total)]


def greeter(worker):
    @worker.on("greet")
    def greet(context, info):
        if info["path"] == "/fail":
            raise RuntimeError("asked to fail")
        return [200, {"Content-Type": "text/plain"}, f"greeted {info['path']} from {info['via']}"]


def squarer(worker):
    @worker.on("square")
    def square(context, number):
        if number < 0:
            time.sleep(3)
        return number * number


def main():
    logging.basicConfig(level=logging.INFO)
    role, queue = sys.argv[1], sys.argv[2]
    worker = Worker(queue)
    if role == "front":
        front(worker, sys.argv[3])
    elif role == "greeter":
        greeter(worker)
    else:
        squarer(worker)
    worker.run()


if __name__ == "__main__":
    main()
