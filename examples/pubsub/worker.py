"""The pub/sub example's worker: takes the ``ws`` jobs made of WebSocket messages.

Each message a browser sends on ``/ws/<channel>`` becomes a ``ws`` job whose args are
``[{"channel": ..., "data": ..., "socket": ...}]`` (``data_base64`` instead of ``data`` for a
binary message). This worker answers the socket that sent it (``"echo: <data>"``, the handler's
return value, goes to that socket only) and publishes the data to the channel, so that every
subscriber, SSE or WebSocket, sees it.

It also answers the HTTP requests that reach the default queue ``tempest``: ``/`` is redirected
to the page, anything else is a 404 at once.

Run: ``python worker.py [queue...]`` (default ``websocket``, tempestd's ``[pubsub] ws_queue``, and
``tempest``;
Redis from ``TEMPEST_REDIS_URL``, which tempestd sets for the workers it starts).
"""

import base64
import logging
import sys

from tempest import Worker


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s chat: %(message)s")
    worker = Worker(argv or ["websocket", "tempest"])

    @worker.on("url")
    def page(context, env):
        """The requests no [static:] prefix serves: / goes to the page, the rest is a 404 at
        once (without a worker for them, they would wait for the route's timeout)."""
        if env["url"].split("?")[0] == "/":
            return [302, {"Location": "/examples/"}, ""]
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


if __name__ == "__main__":
    sys.exit(main())
