"""The reference server of tests/e2e/test_frameworks.py: a WSGI application under the standard
library's wsgiref (PEP 3333's reference implementation; Django's runserver is built on it), over
HTTP on a free port of the loopback.

    python tests/apps/wsgiref_server.py --chdir DIR module:attribute

prints ``listening on 127.0.0.1:PORT`` on stdout once it accepts, then serves one request at a
time until it is stopped (SIGTERM).
"""

import argparse
import os
import sys
from wsgiref.simple_server import make_server

from tempest.wsgi import load


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("app")
    parser.add_argument("--chdir")
    args = parser.parse_args()
    if args.chdir:
        os.chdir(args.chdir)
    sys.path.insert(0, os.getcwd())
    server = make_server("127.0.0.1", 0, load(args.app))
    print(f"listening on 127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
