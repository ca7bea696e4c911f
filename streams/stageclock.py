"""Where a worker's CPU goes, by stage of its batches: a cheap clock read once per stage.

The bench reads these figures from ``/health`` (``stage_cpu_s``) to print the CPU per event of
each stage (decode, join, metrics, detectors, windows, state, apply, merge), so the next
bottleneck is visible without a profiler. ``time.thread_time`` is the calling thread's CPU time:
the stages run on the event loop's thread, and a lap costs well under a microsecond per batch.
"""

from __future__ import annotations

import time


class StageClock:
    """CPU seconds spent per named stage, measured as laps of the current thread's CPU clock.

    >>> clock = StageClock()
    >>> clock.start()
    >>> _ = sum(range(1000))
    >>> clock.lap("work")
    >>> list(clock.seconds), clock.seconds["work"] >= 0.0
    (['work'], True)
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._at = time.thread_time()

    def start(self) -> None:
        """Start timing the next stage from now."""
        self._at = time.thread_time()

    def lap(self, stage: str) -> None:
        """Charge the CPU time since the last ``start``/``lap`` to ``stage``."""
        now = time.thread_time()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + (now - self._at)
        self._at = now
