"""Give memory the worker has freed back to the OS, so its RSS follows what it holds.

Two measures, both measured with a million waiting predictions (bench scenario 4):

- Trimming (``FreeMemoryReleaser``): ~200 MB of the worker's RSS was memory it had already
  freed (fetched broker batches, changelog batches, a burst's decode garbage), kept by glibc's
  allocator in free chunks below the top of the heap, which glibc only returns on
  ``malloc_trim``. A trim takes ~10 ms when it has hundreds of MB to give back and
  microseconds otherwise.
- ``tune_allocator`` at start: two malloc arenas instead of one per thread, and a fixed mmap
  threshold, so buffers over 128 KiB go back to the OS when freed (glibc otherwise raises the
  threshold to the largest buffer freed so far, and later ones stay in the heap): -36 MB.

Elsewhere than glibc both are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

TRIM_INTERVAL_S = 1.0
M_ARENA_MAX = -8  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3


def _libc_function(name: str) -> Callable[..., int] | None:
    path = ctypes.util.find_library("c")
    if path is None:
        return None
    try:
        fn: Callable[..., int] = getattr(ctypes.CDLL(path), name)
    except (OSError, AttributeError):
        return None
    return fn


_malloc_trim = _libc_function("malloc_trim")
_mallopt = _libc_function("mallopt")


def tune_allocator(arenas: int = 2, mmap_threshold: int = 128 * 1024) -> bool:
    """Set glibc's arena count and mmap threshold; call before threads start. False where
    there is no ``mallopt``."""
    if _mallopt is None:
        return False
    return bool(_mallopt(M_ARENA_MAX, arenas)) and bool(_mallopt(M_MMAP_THRESHOLD, mmap_threshold))


class FreeMemoryReleaser:
    """Calls ``malloc_trim(0)`` at most once per ``interval`` seconds (``maybe_release``).

    >>> r = FreeMemoryReleaser(interval=5.0)
    >>> r.maybe_release(100.0), r.maybe_release(103.0), r.maybe_release(105.0)
    (True, False, True)
    """

    def __init__(self, interval: float = TRIM_INTERVAL_S) -> None:
        self.interval = interval
        self._last = float("-inf")

    def maybe_release(self, now: float) -> bool:
        """Trim if ``interval`` has passed since the last trim; True when it trimmed (or would
        have, where there is no ``malloc_trim``)."""
        if now - self._last < self.interval:
            return False
        self._last = now
        if _malloc_trim is not None:
            _malloc_trim(0)
        return True
