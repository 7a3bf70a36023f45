"""How long a child waits before its next spawn: capped exponential backoff with jitter.

The count of failures in a row covers failed starts and crashes after RUNNING alike, and is
reset only once a process has stayed up STABLE_SECS, so a process crashing in a loop slows down
instead of spinning (supervisord restarts such a process immediately and forever).
"""

import random
from collections.abc import Callable

BACKOFF_BASE = 0.5  # seconds before the second restart in a row; doubles each time
BACKOFF_CAP = 30.0  # the delay grows to this, then stays there (each delay is jittered ±20%)
STABLE_SECS = 10.0  # a process up this long (and at least startsecs) has its failures forgotten


def backoff_delay(failures: int, rand: Callable[[float, float], float] = random.uniform) -> float:
    """Seconds to wait before attempt number ``failures`` + 1 (0 for the first retry)."""
    if failures <= 1:
        return 0.0
    return min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** min(failures - 2, 32)) * rand(0.8, 1.2)
