"""A worker using sessions, for the tests: python sessions_app.py <queue>."""

import logging
import sys

from tempest import Worker


def main():
    logging.basicConfig(level=logging.INFO)
    worker = Worker(sys.argv[1])

    @worker.on("url")
    def handle(context, env):
        session = context.session
        path = env["url"]
        if session is None:
            return [200, {}, "no session"]
        if path == "/count":
            session["count"] = session.get("count", 0) + 1
            return [200, {}, str(session["count"])]
        if path.startswith("/login/"):
            session.update({"user": path.removeprefix("/login/"), "roles": ["reader", "writer"]})
            session.regenerate()
            return [200, [["X-Done", "1"]], "logged in"]
        if path == "/whoami":
            return [200, {}, session.get("user", "nobody")]
        if path == "/logout":
            session.clear()
            return [200, {}, "bye"]
        if path.startswith("/hset/"):  # as a 2012 client writes: a plain HSET, no EXPIRE
            context.worker.redis.hset(f"session:{session.id}", "legacy", '["%s"]' % path.removeprefix("/hset/"))
            return [200, {}, "written"]
        if path == "/id":
            return [200, {}, session.id]
        if path == "/all":
            return [200, {"Content-Type": "application/json"}, __import__("json").dumps(session.all())]
        return [404, {}, "?"]

    worker.run()


if __name__ == "__main__":
    main()
