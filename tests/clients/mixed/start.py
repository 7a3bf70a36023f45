"""The Python leg of the mixed tests: a url job is forwarded to the queue NEXT as a ``hop``
job whose route starts with "python". Usage: python start.py QUEUE NEXT"""

import sys

from tempest import Worker

worker = Worker(sys.argv[1])


@worker.on("url")
def start(context, env):
    context.forward(sys.argv[2], "hop", {"path": env["url"], "via": ["python"]})


worker.run()
