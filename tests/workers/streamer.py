"""A worker that streams its answers, for the tests: python streamer.py <queue>.

/stream sends "first ", waits for an item on the Redis list "gate:<queue>", then sends
"second" and ends; /big sends 100 pieces of 10,000 bytes; /unfinished sends a piece and never
ends; /badhead streams with an impossible status.
"""

import logging
import sys

from tempest import Worker


def main():
    logging.basicConfig(level=logging.INFO)
    queue = sys.argv[1]
    worker = Worker(queue)

    @worker.on("url")
    def handle(context, env):
        path = env["url"]
        if path == "/stream":
            with context.stream(200, {"Content-Type": "text/plain"}) as out:
                out.write("first ")
                worker.redis.blpop([f"gate:{queue}"], timeout=8)
                out.write(b"second")
        elif path == "/big":
            with context.stream(200, [["Content-Type", "application/octet-stream"]]) as out:
                for i in range(100):
                    out.write(bytes([i]) * 10_000)
        elif path == "/unfinished":
            context.stream(200).write("x")
        elif path == "/fails":
            context.stream(200).write("x")
            raise RuntimeError("the handler failed in the middle of its stream")
        elif path == "/badhead":
            context.stream(99).close()
        else:
            return [404, {}, "?"]
        return None

    worker.run()


if __name__ == "__main__":
    main()
