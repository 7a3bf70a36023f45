"""A test worker built on the library: answers with the job's env as JSON.

``/sleep/<seconds>`` sleeps first; ``/fail`` raises; ``/twice`` answers twice. The body carries
this process' pid so that tests can tell workers apart, and the job's respond_to (which front
process pushed it).
"""

import json
import logging
import os
import sys
import time

from tempest import Worker


def main():
    logging.basicConfig(level=logging.INFO)
    worker = Worker(sys.argv[1:] or "tempest")

    @worker.on("url")
    def echo(context, env):
        path = env["url"].split("?")[0]
        if path.startswith("/sleep/"):
            time.sleep(float(path.rsplit("/", 1)[1]))
        if path == "/fail":
            raise RuntimeError("asked to fail")
        body = json.dumps({"pid": os.getpid(), "env": env, "job_id": context.job_id, "respond_to": context.respond_to})
        answer = [200, {"Content-Type": "application/json", "X-Count": 1}, body]
        if path == "/twice":
            context.answer(answer)
        return answer

    worker.run()


if __name__ == "__main__":
    main()
