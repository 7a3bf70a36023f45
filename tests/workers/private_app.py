"""A worker for the private-channel tests: python private_app.py <queue>.

As an HTTP worker (url jobs): /visit (a session), /login/<user> (the user field and the grant
``user.<user>.*``, the user escaped; ?regenerate: a new id too), /grant/<pattern>,
/revoke/<pattern>, /logout (clear), /regenerate, /grants (the session's, as JSON).

As an authorize worker (authorize jobs), by channel: ``team.open.*`` allowed for 60 s,
``team.closed.*`` denied for 60 s, ``team.slow.*`` answered after 3 s (too late),
``team.bad.*`` a malformed answer, ``team.flag.*`` allowed while the Redis key
``flag:<channel>`` is 1 (ttl 0: asked again at every check), ``team.mine.*`` allowed when the
session's user is the channel's last part. Every authorize job is RPUSHed to the Redis list
``authorize-log:<queue>`` as received, for the tests to read.
"""

import glob
import json
import logging
import sys
import time
import urllib.parse

from tempest import Worker


def main():
    logging.basicConfig(level=logging.INFO)
    queue = sys.argv[1]
    worker = Worker(queue)
    redis = worker.redis

    @worker.on("url")
    def handle(context, env):
        session = context.session
        path, _, query = env["url"].partition("?")
        path = urllib.parse.unquote(path)
        if session is None:
            return [500, {}, "no session"]
        if path == "/visit":
            return [200, {}, "hello"]
        if path.startswith("/login/"):
            user = path.removeprefix("/login/")
            session["user"] = user
            session.grant(f"user.{glob.escape(user)}.*")  # a user named * gets only its own channels
            if query == "regenerate":
                session.regenerate()
            return [200, {}, "logged in"]
        if path.startswith("/grant/"):
            session.grant(path.removeprefix("/grant/"))
            return [200, {}, "granted"]
        if path.startswith("/revoke/"):
            session.revoke(path.removeprefix("/revoke/"))
            return [200, {}, "revoked"]
        if path == "/logout":
            session.clear()
            return [200, {}, "bye"]
        if path == "/regenerate":
            session.regenerate()
            return [200, {}, session.id]
        if path == "/grants":
            return [200, {"Content-Type": "application/json"}, json.dumps(sorted(session.grants()))]
        return [404, {}, "?"]

    @worker.on("authorize")
    def authorize(context, request):
        redis.rpush(f"authorize-log:{queue}", json.dumps([context.action, request, context.respond_to,
                                                           context.job_id]))
        channel = request["channel"]
        if channel.startswith("team.open."):
            return {"allow": True, "ttl": 60}
        if channel.startswith("team.closed."):
            return {"allow": False, "ttl": 60}
        if channel.startswith("team.slow."):
            time.sleep(3)
            return {"allow": True}
        if channel.startswith("team.bad."):
            return [200, {}, "not a decision"]
        if channel.startswith("team.flag."):
            return {"allow": redis.get(f"flag:{channel}") == b"1", "ttl": 0}
        if channel.startswith("team.mine."):
            session = context.session
            user = session.get("user") if session is not None else None
            return {"allow": user is not None and channel == f"team.mine.{user}"}
        return {"allow": False}

    worker.run()


if __name__ == "__main__":
    main()
