"""Event-time progress of one partition, per (model, version): when a window is closed.

A window ``[start, start + length)`` of a model closes when that model's own events on this
partition have moved ``allowed_lateness`` past its end. One model's progress never closes
another's windows: a model whose events arrive minutes behind its neighbours' (a region that
buffered through an outage, a model onboarded with a backfill) is windowed as if it were alone
on the topic. Wall-clock time never closes a window here; the worker closes all of a
partition's windows only when it has read everything in it and nothing arrived for the idle
period (``driftline.streams.app``).

A record for a closed window is not dropped: it revises the window (a ``late`` partial) as long
as the window is within the model's label horizon of the model's progress. Past that bound the
merge stage may have dropped the window, so the record goes to the dead-letter topic
(``too_late``). Memory: one float per (model, version) of the partition.

>>> clock = EventClock(window_seconds=60, allowed_lateness=30)
>>> clock.advance("fraud", "v1", 1000.0)
>>> clock.is_closed("fraud", "v1", 900.0), clock.is_closed("fraud", "v1", 960.0)
(True, False)
>>> clock.is_closed("intent", "v1", 900.0)  # another model's progress closes nothing of this one
False
>>> clock.too_late("fraud", "v1", 900.0, horizon_s=3600), clock.too_late("fraud", "v1", -3000.0, horizon_s=3600)
(False, True)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

#: A model's progress never runs ahead of wall-clock time by more than this (a clock-skewed
#: producer's future timestamps must not close every window of the model).
MAX_CLOCK_SKEW_S = 60.0


class EventClock:
    """Per-(model, version) watermarks of one partition."""

    def __init__(self, window_seconds: float, allowed_lateness: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.window_seconds = window_seconds
        self.allowed_lateness = allowed_lateness
        self.clock = clock
        self.watermarks: dict[tuple[str, str], float] = {}
        # Labels may not name their model: their progress is the partition's.
        self.label_watermark = -math.inf
        self._cap = clock() + MAX_CLOCK_SKEW_S
        self._cap_refreshed = 0

    @property
    def partition_watermark(self) -> float:
        """The furthest any model has moved: what waiting records expire by."""
        return max(self.watermarks.values(), default=0.0)

    def advance(self, model_id: str, model_version: str, timestamp: float) -> None:
        key = (model_id, model_version)
        current = self.watermarks.get(key, -math.inf)
        if timestamp <= current:
            return
        # Refreshing the wall-clock cap costs a syscall: once per 1,000 advances is enough
        # for a bound of a minute.
        self._cap_refreshed += 1
        if timestamp > self._cap or self._cap_refreshed >= 1000:
            self._cap = self.clock() + MAX_CLOCK_SKEW_S
            self._cap_refreshed = 0
        self.watermarks[key] = min(timestamp, self._cap)

    def advance_labels(self, timestamp: float) -> None:
        if timestamp <= self.label_watermark:
            return
        if timestamp > self._cap:
            self._cap = self.clock() + MAX_CLOCK_SKEW_S
        self.label_watermark = min(timestamp, self._cap)

    def settled_through(self, model_id: str, model_version: str) -> float:
        """Outcomes up to this time can no longer be preceded by an on-time one: both the model's
        predictions and the partition's labels have moved ``allowed_lateness`` past it."""
        return min(self.watermarks.get((model_id, model_version), -math.inf),
                   self.label_watermark) - self.allowed_lateness

    def is_closed(self, model_id: str, model_version: str, window_start: float) -> bool:
        watermark = self.watermarks.get((model_id, model_version), -math.inf)
        return window_start + self.window_seconds + self.allowed_lateness <= watermark

    def too_late(self, model_id: str, model_version: str, window_start: float, horizon_s: float) -> bool:
        """Whether a record of this window is past what a revision may still change."""
        watermark = self.watermarks.get((model_id, model_version), -math.inf)
        return window_start + self.window_seconds + self.allowed_lateness + horizon_s < watermark

    def to_state(self) -> dict[str, Any]:
        return {"models": [[m, v, w] for (m, v), w in sorted(self.watermarks.items())],
                "labels": self.label_watermark if self.label_watermark > -math.inf else None}

    def load_state(self, state: dict[str, Any] | float | None) -> None:
        """Restore; a partition record from before per-model progress holds one float, which
        gives no model's progress: windows then close as the models' own events arrive."""
        if isinstance(state, dict):
            self.watermarks = {(str(m), str(v)): float(w) for m, v, w in state["models"]}
            labels = state.get("labels")
            self.label_watermark = -math.inf if labels is None else float(labels)
