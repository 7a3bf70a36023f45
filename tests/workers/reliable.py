"""A reliable worker for the tests: python reliable.py <queue>[,<queue>...].

/hold waits (up to 8 s) for an item on the Redis list gate:<queue>, then answers with its pid;
/crash kills the process at once (a job that kills its workers)."""

import logging
import os
import sys

from tempest import Worker


def main():
    logging.basicConfig(level=logging.INFO)
    queue = sys.argv[1]
    worker = Worker(queue.split(","), reliable=True, heartbeat=1.0)  # "a,b": two queues

    @worker.on("url")
    def handle(context, env):
        if env["url"] == "/crash":
            os._exit(3)
        worker.redis.blpop([f"gate:{queue}"], timeout=8)
        return [200, {}, f"done by {os.getpid()}"]

    worker.run()


if __name__ == "__main__":
    main()
