"""A worker for the queue tests: python queues.py <queue> [heartbeat seconds].

Reliable by default (the library's default; TEMPEST_RELIABLE=0 makes it plain). Every job it
runs is recorded on the Redis list ran:<queue> (its url); /crash kills the first process that
takes it (exit 3; the key crashed:<queue>:<url> says who), the next ones answer it; /hold waits for an item on
gate:<queue>; /exit calls sys.exit(4); anything else is answered at once with the url and the pid."""

import logging
import os
import sys

from tempest import Worker


def main():
    logging.basicConfig(level=logging.INFO)
    queue = sys.argv[1]
    heartbeat = float(sys.argv[2]) if len(sys.argv) > 2 else 15.0
    worker = Worker(queue, heartbeat=heartbeat)

    @worker.on("url")
    def handle(context, env):
        url = env["url"]
        worker.redis.rpush(f"ran:{queue}", url)
        if url.startswith("/crash") and worker.redis.set(f"crashed:{queue}:{url}", os.getpid(), nx=True):
            os._exit(3)
        if url.startswith("/exit"):
            sys.exit(4)  # a handler that ends the process (an app calling sys.exit)
        if url.startswith("/hold"):
            worker.redis.blpop([f"gate:{queue}"], timeout=8)
        return [200, {}, f"{url} by {os.getpid()}"]

    worker.run()


if __name__ == "__main__":
    main()
