"""The pub/sub example's worker: takes the ``ws`` jobs made of WebSocket messages.

Each message a browser sends on ``/ws/<channel>`` becomes a ``ws`` job whose args are
``[{"channel": ..., "data": ..., "socket": ...}]`` (``data_base64`` instead of ``data`` for a
binary message). This worker answers the socket that sent it (``"echo: <data>"``, the handler's
return value, goes to that socket only) and publishes the data to the channel, so that every
subscriber, SSE or WebSocket, sees it.

It also answers the HTTP requests that reach the default queue ``tempest``: ``/`` is redirected
to the page; ``POST /login`` (the body is a user name) puts the name in the session's ``user``
field, grants the session that user's private channels (``user.<name>.*``: tempestd's
``[pubsub] private = user.*``) and regenerates the session id; ``POST /logout`` clears the
session, which ends the page's private stream within ``[pubsub] grant_check``; ``GET /whoami``
says who the session is; ``POST /inbox`` (the body is a text) publishes it to the session's
user's inbox, ``user.<name>.inbox``, which the page reads as ``/sub/~inbox``; anything else is
a 404 at once. No password: it is an example of the mechanism, not of a login.

Run: ``python worker.py [queue...]`` (default ``websocket``, tempestd's ``[pubsub] ws_queue``, and
``tempest``;
Redis from ``TEMPEST_REDIS_URL``, which tempestd sets for the workers it starts).
"""

import base64
import glob
import json
import logging
import re
import sys

from tempest import Worker


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s chat: %(message)s")
    worker = Worker(argv or ["websocket", "tempest"])

    @worker.on("url")
    def page(context, env):
        """The requests no [static:] prefix serves: / goes to the page, the login, the logout,
        who am I and the inbox; the rest is a 404 at once (without a worker for them, they
        would wait for the route's timeout)."""
        path, method = env["url"].split("?")[0], env["method"]
        if path == "/":
            return [302, {"Location": "/examples/"}, ""]
        session = context.session  # None unless tempestd has a session_cookie
        if session is not None and (method, path) in ACCOUNT:
            return ACCOUNT[method, path](worker, session, env.get("body", ""))
        return [404, {"Content-Type": "text/plain"}, "404 Not Found: the page is at /examples/\n"]

    @worker.on("ws")
    def chat(context, message):
        channel = message["channel"]
        if "data" in message:
            data = message["data"]
        else:
            data = base64.b64decode(message.get("data_base64", "")).decode("utf-8", "replace")
        worker.publish(channel, data)
        return "echo: " + data

    worker.run()
    return 0


NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")  # a user name fit for a channel name


def answer(status, value):
    return [status, {"Content-Type": "application/json", "Cache-Control": "no-store"}, json.dumps(value)]


def login(worker, session, body):
    name = body.strip()
    if not NAME.match(name):
        return answer(400, {"error": "a name is 1 to 32 letters, digits, '_' or '-'"})
    session["user"] = name
    session.grant(f"user.{glob.escape(name)}.*")  # escaped: a name is never a pattern
    session.regenerate()  # the id from before the login stops working (session fixation)
    return answer(200, {"user": name})


def logout(worker, session, body):
    session.clear()  # the fields and the grants: the private stream ends within grant_check
    return answer(200, {"user": None})


def whoami(worker, session, body):
    return answer(200, {"user": session.get("user")})


def inbox(worker, session, body):
    user = session.get("user")
    if user is None:
        return answer(403, {"error": "log in first"})
    worker.publish(f"user.{user}.inbox", body)
    return answer(200, {"sent": body})


ACCOUNT = {("POST", "/login"): login, ("POST", "/logout"): logout, ("GET", "/whoami"): whoami,
           ("POST", "/inbox"): inbox}


if __name__ == "__main__":
    sys.exit(main())
