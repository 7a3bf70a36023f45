"""The ceiling: the hello world served in-process by a plain gevent WSGI server.

Same response as ``tempest.examples.hello`` behind tempestd ("Hello world! #N", a
``text/html; charset=utf-8`` body with Content-Length), but no queue, no worker, no answer
endpoint: one gevent process, ``gevent.pywsgi.WSGIServer`` with TCP_NODELAY set on every
accepted socket (tempestd's front sets it too) and no access log (tempestd's is off by
default). What tempest adds on top of a plain gevent server is measured against this. Like
tempestd, it raises its open-file soft limit to the hard limit (``run.py --idle``).

    python bench/ceiling.py --port 8081
"""

import argparse
import resource
import socket
import sys

from gevent.pywsgi import WSGIServer

HOST = "127.0.0.1"


class NoDelayWSGIServer(WSGIServer):
    def handle(self, sock, address):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return super().handle(sock, address)


def make_app():
    count = 0

    def hello(environ, start_response):
        nonlocal count
        count += 1
        body = f"Hello world! #{count}".encode()
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    return hello


def raise_nofile():
    """Every connection is a file: take the hard limit, as tempestd does (idle connections)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            print(f"ceiling: cannot raise the open-file limit from {soft} to {hard}: {exc}", file=sys.stderr)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    parser.add_argument("--backlog", type=int, default=2048, help="as tempestd's [front] backlog")
    args = parser.parse_args(argv)
    raise_nofile()
    server = NoDelayWSGIServer((HOST, args.port), make_app(), log=None, backlog=args.backlog)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
