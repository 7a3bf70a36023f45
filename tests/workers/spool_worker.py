"""A test worker for spooled bodies: reads each request's body with ``context.body_file()``
and answers what it saw as JSON: the body's SHA-256 and size as read, the env's token
(``body_file``, ``body_key``) or whether the body was inline, and, for a file, its mode and
whether it existed; for a Redis body, its key's TTL."""

import hashlib
import json
import logging
import os
import sys

from tempest import Worker


def main():
    logging.basicConfig(level=logging.INFO)
    worker = Worker(sys.argv[1:] or ["tempest"], reliable=False)

    @worker.on("url")
    def digest(context, env):
        seen = {"inline": "body" in env or "body_base64" in env, "body_file": env.get("body_file"),
                "body_key": env.get("body_key"), "pid": os.getpid()}
        if env.get("body_file"):
            stat = os.stat(env["body_file"]["path"])
            seen["mode"] = stat.st_mode & 0o777
        if env.get("body_key"):
            seen["ttl"] = context.worker.redis.ttl(env["body_key"]["key"])
        digest, size = hashlib.sha256(), 0
        with context.body_file() as body:
            while block := body.read(1 << 20):
                digest.update(block)
                size += len(block)
        seen.update(sha256=digest.hexdigest(), size=size)
        return [200, {"Content-Type": "application/json"}, json.dumps(seen)]

    worker.run()


if __name__ == "__main__":
    main()
