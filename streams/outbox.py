"""What a join partition sends to the merge stage (the internal partials topic), and its ids.

Every record carries an id ``<partition>:<seq>``; the outbox is part of the partition record, so
a record is sent again after a crash with the same id, and the merge stage applies it once.
Kinds: ``closed`` and ``late`` window partials, detector ``alarm``s, ``progress`` (how far each
model's windows are closed here: volume is judged on complete windows) and ``heartbeat`` (when
this partition last read each model: availability), the last two keyed by model like the rest.
"""

from __future__ import annotations

import math
from typing import Any

from driftline.streams.detectorfeed import Alarm
from driftline.streams.windows import SeriesKey, WindowPartial, window_start


class Outbox:
    """The records of one partition waiting for delivery, numbered in order."""

    def __init__(self, partition: int, window_seconds: float) -> None:
        self.partition = partition
        self.window_seconds = window_seconds
        self.records: list[dict[str, Any]] = []
        self.seq = 0
        # The last window boundary reported per (model, version) (not persisted: a repeat after
        # a restart is harmless, the merge stage keeps the furthest).
        self._progress_sent: dict[tuple[str, str], float] = {}

    def _add(self, record: dict[str, Any]) -> None:
        self.seq += 1
        record["pid"] = f"{self.partition}:{self.seq}"
        self.records.append(record)

    def partial(self, kind: str, key: SeriesKey, w: WindowPartial) -> None:
        self._add({"type": kind, "partition": self.partition, "model_id": key.model_id,
                   "model_version": key.model_version, "segment": key.segment,
                   "window_start": key.window_start, "window_end": key.window_start + self.window_seconds,
                   "state": w.to_state()})

    def alarm(self, alarm: Alarm) -> None:
        self._add({"type": "alarm", "model_id": alarm.model_id, "drift_event": alarm.drift_event,
                   "severity": alarm.severity, "reason": alarm.reason})

    def progress(self, watermarks: dict[tuple[str, str], float], allowed_lateness: float, force: bool) -> None:
        """How far each model's windows are closed here: one record per window boundary crossed.
        Idle (``force``): every window up to the one holding the model's progress is closed."""
        w = self.window_seconds
        for (model, version), watermark in watermarks.items():
            through = window_start(watermark, w) + w if force else watermark - allowed_lateness
            step = math.floor(through / w)
            if self._progress_sent.get((model, version), -math.inf) >= step:
                continue
            self._progress_sent[(model, version)] = step
            self._add({"type": "progress", "partition": self.partition, "model_id": model,
                       "model_version": version, "through": step * w})

    def heartbeats(self, seen_at: dict[tuple[str, str], float], now: float) -> None:
        """When this partition last read each model version's predictions (sent while caught up)."""
        for (model, version), seen in seen_at.items():
            self._add({"type": "heartbeat", "partition": self.partition, "model_id": model,
                       "model_version": version, "seen_at": seen, "at": now})
