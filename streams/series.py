"""A join partition's window series: open and late partials, and the caps that bound them.

A series is (model, version, segment) and a window of it one ``WindowPartial``. An event counts
in its model's whole-model series and in one series per segmentation of the models file. The
table of open windows is capped at ``max_series`` segment series plus a reserve of
``max_models`` whole-model series, so a flood of segments never starves a model's own metrics;
a segment key's values past ``max_segment_values`` per (model, key) count in
``OVERFLOW_SEGMENT``, decided once in log order (the kept values are in the partition record).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from driftline.schemas.events import Prediction
from driftline.schemas.messages import segment_string
from driftline.streams.models import ModelConfig, ModelsConfig
from driftline.streams.windows import SeriesKey, WindowPartial

#: The value a segment key takes once it has shown ``max_segment_values`` others on a partition.
OVERFLOW_SEGMENT = "__other__"

Table = dict[SeriesKey, WindowPartial]


class SeriesTables:
    """The open windows (``windows``) and the closed ones a batch revises (``late``)."""

    def __init__(self, models: ModelsConfig, *, max_series: int, max_models: int, max_segment_values: int,
                 count: Callable[[str], None]) -> None:
        self.models = models
        self.max_series = max_series  # open segment series (model, version, segment, window) per table
        self.max_models = max_models  # the whole-model series' reserve above it
        self.max_segment_values = max_segment_values
        self._count = count
        self.windows: Table = {}
        self.late: Table = {}
        self.segment_values: dict[str, set[str]] = {}
        self._segment_state: dict[str, list[str]] | None = None  # serialised once per change
        self._series_cache: dict[tuple[Any, ...], list[SeriesKey]] = {}
        self._state_cache: dict[SeriesKey, tuple[WindowPartial, str, dict[str, Any]]] = {}
        self._touched: set[WindowPartial] = set()

    def partial(self, table: Table, key: SeriesKey, task: str) -> WindowPartial | None:
        """The partial of ``key``; None (counted) when ``table`` is full for its kind of series."""
        w = table.get(key)
        if w is None:
            if len(table) >= self.max_series + (0 if key.segment else self.max_models):
                self._count("series_overflow")
                return None
            if task == "ranking":
                cfg = self.models.for_model(key.model_id) or self.models.defaults
                w = table[key] = WindowPartial(task, cfg.ranking_k, cfg.catalog_size)
            else:
                w = table[key] = WindowPartial(task)
        self._touched.add(w)  # whoever asks for a partial may change it (see ``open_window_states``)
        return w

    def series(self, cfg: ModelConfig, p: Prediction, ws: float) -> list[SeriesKey]:
        """The series an event counts in: the whole model, then one per segmentation.

        Cached: an envelope's events share a handful of (model, window, segment) combinations,
        and building the keys costs more than the rest of the event. A cached raw value's fold
        never changes (the kept values only grow), so the cache stays right.
        """
        seg = p.segments
        fields = segment_fields(cfg.segment_keys) if cfg.segment_keys else ()
        values = tuple(seg.get(k, "") for k in fields) if fields and seg else ()
        ck = (p.model_id, p.model_version, ws, values)
        keys = self._series_cache.get(ck)
        if keys is None:
            keys = [SeriesKey(p.model_id, p.model_version, "", ws)]
            if fields:
                seg = self._fold(p.model_id, seg or {}, fields)
            for combo in cfg.segment_keys:
                keys.append(SeriesKey(p.model_id, p.model_version, segment_string(seg, combo.split(",")), ws))
            if len(self._series_cache) > 100_000:
                self._series_cache.clear()
            self._series_cache[ck] = keys
        return keys

    def _fold(self, model_id: str, seg: dict[str, str], fields: tuple[str, ...]) -> dict[str, str]:
        """``seg`` with values past ``max_segment_values`` per (model, key) as ``OVERFLOW_SEGMENT``."""
        out = seg
        for k in fields:
            value = seg.get(k, "")
            seen = self.segment_values.setdefault(f"{model_id}\x1f{k}", set())
            if value in seen:
                continue
            if len(seen) < self.max_segment_values:
                seen.add(value)
                self._segment_state = None
                continue
            if out is seg:
                out = dict(seg)
            out[k] = OVERFLOW_SEGMENT
            self._count("segment_overflow")
        return out

    # ---- state (in the partition record) ------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        if self._segment_state is None:
            self._segment_state = {k: sorted(v) for k, v in self.segment_values.items()}
        return {
            "windows": self._open_window_states(),
            "late": {k.encode(): w.to_state() for k, w in self.late.items()},
            "segment_values": self._segment_state,
        }

    def _open_window_states(self) -> dict[str, Any]:
        """The open windows' states, re-serialised only when changed.

        Every batch writes every open window, but a batch touches few of them; turning an
        untouched window's sketches and histograms into lists again cost ~15% of the join
        stage's CPU. A window is touched when ``partial`` hands it out (all changes go
        through it); the cache holds the window object itself, so a replaced one never matches.
        """
        cache: dict[SeriesKey, tuple[WindowPartial, str, dict[str, Any]]] = {}
        out: dict[str, Any] = {}
        for k, w in self.windows.items():
            hit = self._state_cache.get(k)
            if hit is None or hit[0] is not w or w in self._touched:
                hit = (w, k.encode(), w.to_state())
            cache[k] = hit
            out[hit[1]] = hit[2]
        self._state_cache = cache
        self._touched.clear()
        return out

    def load_state(self, d: dict[str, Any]) -> None:
        self.windows = {SeriesKey.decode(k): WindowPartial.from_state(v) for k, v in d["windows"].items()}
        self.late = {SeriesKey.decode(k): WindowPartial.from_state(v) for k, v in d["late"].items()}
        self.segment_values = {k: set(v) for k, v in d.get("segment_values", {}).items()}
        self._segment_state = None


@functools.lru_cache(maxsize=1024)
def segment_fields(segment_keys: tuple[str, ...]) -> tuple[str, ...]:
    """Every key named by the model's segmentations (``"country,device"`` names two)."""
    return tuple(sorted({k for combo in segment_keys for k in combo.split(",")}))
