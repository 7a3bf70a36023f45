"""The seed's hello world: answers every request with a counter.

Run: ``python -m tempest.examples.hello [queue] [--plain]`` (Redis from TEMPEST_REDIS_URL,
queue ``tempest`` unless given; reliable delivery, the library's default, unless ``--plain``:
then a plain BLPOP, see the Worker class; ``--reliable`` forces it whatever TEMPEST_RELIABLE says).
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

from tempest import Worker

if TYPE_CHECKING:
    from tempest import Context


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    reliable = False if "--plain" in argv else True if "--reliable" in argv else None  # None: the default
    argv = [a for a in argv if a not in ("--reliable", "--plain")]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s hello: %(message)s")
    # a fast handler: take up to 32 waiting jobs per round trip and answer them together
    worker = Worker(argv[0] if argv else "tempest", prefetch=32, reliable=reliable)
    count = 0

    @worker.on("url")
    def hello(context: Context, env: dict[str, Any]) -> list[object]:
        nonlocal count
        count += 1
        return [200, {}, f"Hello world! #{count}"]

    worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
