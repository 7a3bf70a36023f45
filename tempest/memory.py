"""Giving memory back to the system after a burst of connections.

When thousands of connections close, what they used is freed but mostly stays in the C
allocator's heap (greenlet stacks are saved there), so tempestd's RSS stays at the burst's
level. Once the connections fall to a quarter of their peak, glibc's ``malloc_trim`` returns
the free pages at the top and inside the heap. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

TRIM_PEAK = 1000  # connections: smaller bursts are not worth a trim


def _malloc_trim() -> Callable[[int], object] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


class Trimmer:
    def __init__(self, trim: Callable[[int], object] | None = None) -> None:
        self.peak = 0
        self._trim = trim if trim is not None else _malloc_trim()

    def observe(self, count: int) -> bool:
        """Called with the number of open connections; trims after a burst has passed.
        True when it trimmed."""
        if count > self.peak:
            self.peak = count
            return False
        if self.peak < TRIM_PEAK or count > self.peak // 4:
            return False
        log.debug("connections down from %d to %d: returning free memory to the system", self.peak, count)
        self.peak = count
        if self._trim is not None:
            self._trim(0)
        return True
