"""The drift detectors of one join partition, fed in event-time order (pure logic, no I/O).

A detector is order-sensitive, and the order in which joins complete depends on how the
predictions and labels topics interleave in a batch: a backlog, a pause or a crash would
change detection points. So joined outcomes queue per (model, version) and are fed sorted by
(outcome time = the later of prediction and label time, prediction id) once both the model's
predictions and the partition's labels have moved the allowed lateness past them
(``EventClock.settled_through``), or all of them when the partition is idle. The queue is in
the partition record: its size is the outcomes of the last ``allowed_lateness`` seconds. An
outcome later than that is fed at once, after those already fed.

A ``DetectorBank`` and an ``AlarmPolicy`` run per (model, version) of the partition; their
number is capped (``max_models``): further models are joined and windowed, not watched.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from driftline.detectors.drift import DetectorBank
from driftline.detectors.policy import AlarmPolicy
from driftline.schemas.messages import make_drift_event
from driftline.streams.models import ModelsConfig
from driftline.streams.windows import window_start

#: One queued outcome: (outcome time, prediction id, error, prediction time).
Outcome = tuple[float, str, float, float]
Version = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Alarm:
    """A detector alarm the policy let through, as a drift event for the merge stage."""

    model_id: str
    drift_event: dict[str, Any]
    severity: str | None
    reason: str | None


class DetectorFeed:
    """Queues, detector banks and alarm policies of one partition's (model, version)s."""

    def __init__(self, models: ModelsConfig, partition: int, window_seconds: float, max_models: int,
                 count: Callable[[str, int], None]) -> None:
        self.models = models
        self.partition = partition
        self.window_seconds = window_seconds
        self.max_models = max_models
        self._count = count
        self.queues: dict[Version, list[Any]] = {}  # (model, version) -> [task, [Outcome, ...]]
        self.banks: dict[Version, DetectorBank] = {}
        self.policies: dict[Version, AlarmPolicy] = {}

    def add(self, model: str, version: str, task: str, outcomes: list[Outcome]) -> None:
        queue = self.queues.get((model, version))
        if queue is None:
            queue = self.queues[(model, version)] = [task, []]
        queue[1].extend(outcomes)

    def release(self, settled_through: Callable[[str, str], float], force: bool) -> list[Alarm]:
        """Feed every queue's settled outcomes (all of them with ``force``), in order."""
        alarms: list[Alarm] = []
        for (model, version), queue in self.queues.items():
            entries = queue[1]
            if not entries:
                continue
            cutoff = math.inf if force else settled_through(model, version)
            entries.sort()
            n = len(entries) if cutoff == math.inf else bisect.bisect_right(entries, (cutoff, "\U0010ffff"))
            if n:
                queue[1] = entries[n:]
                alarms += self._feed(model, version, queue[0], entries[:n])
        return alarms

    def _feed(self, model: str, version: str, task: str, joined: list[Outcome]) -> list[Alarm]:
        cfg = self.models.for_model(model) or self.models.defaults
        bank = self.banks.get((model, version))
        if bank is None:
            det_cfg = {k: dict(v) for k, v in cfg.detectors.items() if task != "regression" or k == "adwin"}
            if not det_cfg:  # no detector applies (``detectors: {}``, or a regressor without ADWIN)
                return []
            if len(self.banks) >= self.max_models:  # joined and windowed, not watched by detectors
                self._count("models_overflow", len(joined))
                return []
            bank = self.banks[(model, version)] = DetectorBank(det_cfg)
            self.policies[(model, version)] = AlarmPolicy(
                corroboration_window=cfg.corroboration_window, ddm_warmup=cfg.ddm_warmup,
                warning_alerts=cfg.detector_warning_alerts)
        start = bank.n
        found = bank.update_many(np.array([e for _, _, e, _ in joined], dtype=float))
        out: list[Alarm] = []
        for d in self.policies[(model, version)].decide((model, version), found):
            a = d.alarm
            outcome_time, _, _, prediction_ts = joined[a.position - start]
            ws = window_start(prediction_ts, self.window_seconds)
            event = make_drift_event(
                model_id=model, model_version=version, partition=self.partition, detector=a.detector,
                kind=a.kind, direction=a.direction, position=a.position, window_start=ws,
                window_end=ws + self.window_seconds, detected_at=outcome_time,
                params=dict(bank.config.get(a.detector, {})), estimate_before=a.estimate_before,
                estimate_after=a.estimate_after,
            )
            self._count(f"detector_{a.detector}_{a.kind}", 1)
            out.append(Alarm(model, dict(event), d.severity, d.reason))
        return out

    # ---- state (in the partition record) ------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {
            "banks": {f"{m}\x1f{v}": b.to_state() for (m, v), b in self.banks.items()},
            "policies": {f"{m}\x1f{v}": p.to_state() for (m, v), p in self.policies.items()},
            "queues": [[m, v, q[0], q[1]] for (m, v), q in self.queues.items() if q[1]],
        }

    def load_state(self, d: dict[str, Any]) -> None:
        """Restore from ``to_state``, or from a partition record of the previous layout."""
        self.banks = {_version(k): DetectorBank.from_state(v) for k, v in d["banks"].items()}
        self.policies = {_version(k): AlarmPolicy.from_state(v) for k, v in d["policies"].items()}
        self.queues = {(m, v): [task, [tuple(e) for e in entries]]
                       for m, v, task, entries in d.get("queues", d.get("detector_queue", []))}


def _version(key: str) -> Version:
    model, _, version = key.partition("\x1f")
    return model, version
