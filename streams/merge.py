"""The merge stage: per-partition window partials -> one metrics message per window revision.

Partials arrive on the internal ``partials`` topic keyed by model_id, so one merge
processor sees every partial of a model. Each partial has an id (source partition and
sequence); a window remembers the ids it has merged, so a partial re-sent after a crash
is merged once. A window is first emitted ``merge_wait`` seconds after its first partial
(other partitions close the same window within that time), as revision 0; later partials
(late labels, expirations, slower partitions) make it dirty and it is emitted again as
the next revision, at most once per ``flush_interval``. Consumers and ClickHouse keep
the highest revision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas.messages import make_metrics
from streams.alerts import AlertEngine
from streams.models import ModelsConfig
from streams.windows import SeriesKey, WindowPartial

MAX_IDS_PER_WINDOW = 4096
RECENT_ALARMS = 10_000


@dataclass
class MergedWindow:
    partial: WindowPartial
    ids: list[str] = field(default_factory=list)
    revision: int = -1
    first_seen: float = 0.0
    last_emit: float = 0.0
    last_update: float = 0.0
    dirty: bool = True
    coverage_checked: bool = False

    def to_state(self) -> dict[str, Any]:
        return {"p": self.partial.to_state(), "ids": self.ids, "rev": self.revision, "first": self.first_seen,
                "emit": self.last_emit, "upd": self.last_update, "dirty": self.dirty, "cov": self.coverage_checked}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> MergedWindow:
        return cls(WindowPartial.from_state(d["p"]), d["ids"], d["rev"], d["first"], d["emit"], d["upd"], d["dirty"],
                   d.get("cov", False))


@dataclass
class MergeOutput:
    metrics: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    drift_events: list[dict[str, Any]] = field(default_factory=list)
    changed_windows: set[SeriesKey] = field(default_factory=set)
    dropped_windows: set[SeriesKey] = field(default_factory=set)
    changed_models: set[str] = field(default_factory=set)


class WindowMerger:
    """Merge state for the models one merge processor owns (see the module docstring)."""

    def __init__(self, models: ModelsConfig, *, window_seconds: float = 60.0, merge_wait: float = 1.0,
                 flush_interval: float = 2.0, keep_seconds: float | None = None) -> None:
        self.models = models
        self.window_seconds = window_seconds
        self.merge_wait = merge_wait
        self.flush_interval = flush_interval
        self.keep_seconds = keep_seconds
        self.windows: dict[SeriesKey, MergedWindow] = {}
        self.engines: dict[str, AlertEngine] = {}
        self.seen_alarms: dict[str, list[str]] = {}

    def engine(self, model_id: str) -> AlertEngine:
        eng = self.engines.get(model_id)
        if eng is None:
            eng = self.engines[model_id] = AlertEngine(model_id)
        return eng

    def on_partial(self, msg: dict[str, Any], now: float, out: MergeOutput) -> None:
        """Merge one message of the partials topic (a window partial or a detector alarm)."""
        if msg["type"] == "alarm":
            self._on_alarm(msg, now, out)
            return
        key = SeriesKey(msg["model_id"], msg["model_version"], msg["segment"], float(msg["window_start"]))
        mw = self.windows.get(key)
        if mw is not None and msg["pid"] in mw.ids:
            return
        part = WindowPartial.from_state(msg["state"])
        if mw is None:
            mw = self.windows[key] = MergedWindow(part, first_seen=now)
        else:
            mw.partial.merge(part)
        mw.ids.append(msg["pid"])
        del mw.ids[:-MAX_IDS_PER_WINDOW]
        mw.dirty = True
        mw.last_update = now
        out.changed_windows.add(key)

    def _on_alarm(self, msg: dict[str, Any], now: float, out: MergeOutput) -> None:
        ev = msg["drift_event"]
        model = ev["model_id"]
        seen = self.seen_alarms.setdefault(model, [])
        if ev["event_id"] in seen:
            return
        seen.append(ev["event_id"])
        del seen[:-RECENT_ALARMS]
        out.drift_events.append(ev)
        cfg = self.models.for_model(model) or self.models.defaults
        out.alerts += self.engine(model).on_alarm(cfg, msg, emitted_at=now)
        out.changed_models.add(model)

    def tick(self, now: float, out: MergeOutput) -> None:
        """Emit windows that are due; drop windows past their retention."""
        for key in sorted(self.windows, key=lambda k: (k.window_start, k.model_id, k.model_version, k.segment)):
            mw = self.windows[key]
            if mw.dirty:
                due = (now - mw.first_seen >= self.merge_wait) if mw.revision < 0 else (now - mw.last_emit >= self.flush_interval)
                if due:
                    self._emit(key, mw, now, out)
            if not mw.coverage_checked and mw.revision >= 0 and key.segment == "":
                self._check_coverage(key, mw, now, out)
            if not mw.dirty and self._expired(key, mw, now):
                del self.windows[key]
                out.dropped_windows.add(key)

    def _expired(self, key: SeriesKey, mw: MergedWindow, now: float) -> bool:
        cfg = self.models.for_model(key.model_id) or self.models.defaults
        keep = self.keep_seconds if self.keep_seconds is not None else cfg.label_horizon_s
        return now - mw.last_update > keep

    def _emit(self, key: SeriesKey, mw: MergedWindow, now: float, out: MergeOutput) -> None:
        mw.revision += 1
        mw.dirty = False
        mw.last_emit = now
        metrics, counts = mw.partial.metrics(self.window_seconds)
        msg = make_metrics(model_id=key.model_id, model_version=key.model_version, segment=key.segment,
                           window_start=key.window_start, window_end=key.window_start + self.window_seconds,
                           task=mw.partial.task, metrics=metrics, counts=counts, revision=mw.revision,
                           final=True, labeled_count=mw.partial.labeled, emitted_at=now)
        out.metrics.append(dict(msg))
        out.changed_windows.add(key)
        cfg = self.models.for_model(key.model_id) or self.models.defaults
        alerts = self.engine(key.model_id).on_window(cfg, dict(msg), emitted_at=now)
        if alerts:
            out.alerts += alerts
        out.changed_models.add(key.model_id)

    def _check_coverage(self, key: SeriesKey, mw: MergedWindow, now: float, out: MergeOutput) -> None:
        cfg = self.models.for_model(key.model_id) or self.models.defaults
        if cfg.label_coverage_min is None:
            mw.coverage_checked = True
            return
        window_end = key.window_start + self.window_seconds
        if now - window_end < cfg.coverage_after_s:
            return
        mw.coverage_checked = True
        metrics, counts = mw.partial.metrics(self.window_seconds)
        win = {"model_id": key.model_id, "model_version": key.model_version, "segment": key.segment,
               "window_start": key.window_start, "window_end": window_end, "revision": mw.revision,
               "metrics": metrics, "counts": counts}
        out.alerts += self.engine(key.model_id).on_coverage(cfg, win, emitted_at=now)
        out.changed_windows.add(key)
        out.changed_models.add(key.model_id)

    def dirty_count(self) -> int:
        return sum(mw.dirty for mw in self.windows.values())
