"""Memory stays bounded under floods the pipeline cannot control (processor level, no broker).

- predictions that never get a label: the label horizon (TTL) and ``max_pending`` (oldest
  evicted, counted as ``pending_evicted``) bound the waiting records, the expiry index and the
  Python heap (tracemalloc);
- predictions that all get labels: their expiry-index entries are compacted, not kept for the
  whole label horizon;
- distinct segment values or models: ``max_series`` caps the open window series and
  ``max_models`` the remembered tasks and detector banks; past a cap events are still joined
  (outcomes emitted) and the overflow is counted (``series_overflow``, ``models_overflow``),
  which reaches Prometheus as ``driftline_pipeline_events_total{name=...}``.

The processor is driven the way ``driftline.streams.app._apply_join`` drives it (writes applied to a
dict standing in for the join table, outbox confirmed), but outputs are dropped so that
only the processor's own memory is measured.
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import pytest

import driftline.streams.partition as partition_mod
from driftline.schemas import encode_envelope
from driftline.streams.commit import join_table_writes
from driftline.streams.models import ModelConfig, ModelsConfig
from driftline.streams.observe import PipelineMetrics
from driftline.streams.partition import Message, PartitionProcessor
from driftline.streams.settings import Settings

T0 = 1_700_000_040.0
CLOCK = 2.0e9  # far ahead: the wall clock never caps the watermark
ENVELOPE = 500


class Runner:
    """A processor plus its join table (a dict); outputs are counted, not kept."""

    def __init__(self, models: ModelsConfig, **kw: Any) -> None:
        self.store: dict[bytes, bytes] = {}
        self.proc = PartitionProcessor(
            0, models, store_get=self.store.get, clock=lambda: CLOCK, **kw
        )
        self.offsets = {"prediction": 0, "label": 0}
        self.counters: dict[str, int] = {}
        self.outcomes = 0
        self.dlq = 0

    def send(self, kind: str, events: list[dict[str, Any]]) -> None:
        off = self.offsets[kind]
        self.offsets[kind] += 1
        self.apply(self.proc.process([Message(kind, kind + "s", 0, off, None, encode_envelope(events))]))

    def idle(self) -> None:
        """The worker found the partition caught up and quiet (queued outcomes reach the detectors)."""
        self.apply(self.proc.close_idle())

    def apply(self, res: Any) -> None:
        for k, v in join_table_writes(self.proc, res):  # the worker's order of table writes
            if v is None:
                self.store.pop(k, None)
            else:
                self.store[k] = v
        self.proc.outbox_delivered()
        self.outcomes += len(res.outcomes)
        self.dlq += len(res.dlq)
        for k, n in res.counters.items():
            self.counters[k] = self.counters.get(k, 0) + n

    def waiting(self) -> int:
        return sum(k.startswith(b"p:") for k in self.store)


def preds(
    start: int,
    n: int,
    *,
    step: float = 0.1,
    model: str = "m",
    segment: str | None = None,
    version: str = "v1",
) -> list[dict[str, Any]]:
    return [
        {
            "prediction_id": f"id-{i}",
            "model_id": model if model != "*" else f"model-{i}",
            "model_version": version,
            "timestamp": T0 + i * step,
            "prediction": {"label": 1, "score": 0.8},
            "segments": {"user": segment if segment is not None else f"u{i}"},
        }
        for i in range(start, start + n)
    ]


def labels(start: int, n: int, *, step: float = 0.1) -> list[dict[str, Any]]:
    return [
        {"prediction_id": f"id-{i}", "timestamp": T0 + i * step + 1.0, "label": 1}
        for i in range(start, start + n)
    ]


def test_label_horizon_bounds_a_flood_of_unlabeled_predictions() -> None:
    """TTL alone: with a 60 s horizon and 10 predictions per event-time second, at most
    ~600 (+ one envelope) wait at any time however long the flood lasts."""
    models = ModelsConfig(models={"m": ModelConfig(task="binary", label_horizon_s=60.0)})
    r = Runner(models)
    n_env = 60
    peak = 0
    for e in range(n_env):
        r.send("prediction", preds(e * ENVELOPE, ENVELOPE))
        peak = max(peak, r.proc.pending_count)
        assert r.proc.pending_count == r.waiting()
    assert peak <= 600 + ENVELOPE + 10
    assert len(r.proc.expiry) <= 600 + ENVELOPE + 10
    total = n_env * ENVELOPE
    assert r.counters["unlabeled_expired"] == total - r.proc.pending_count
    assert "pending_evicted" not in r.counters


def test_max_pending_caps_waiting_predictions_and_counts_evictions() -> None:
    """A 7-day horizon never expires anything here: the cap does, oldest first, counted."""
    models = ModelsConfig(models={"m": ModelConfig(task="binary")})
    cap = 1000
    r = Runner(models, max_pending=cap)
    n_env = 40
    for e in range(n_env):
        r.send("prediction", preds(e * ENVELOPE, ENVELOPE))
        assert r.proc.pending_count <= cap
        assert r.waiting() == r.proc.pending_count
        assert len(r.proc.expiry) <= cap
    total = n_env * ENVELOPE
    assert r.proc.pending_count == cap
    assert r.counters["pending_evicted"] == total - cap
    # the oldest were evicted: the newest still join
    r.send("label", labels(total - 10, 10))
    assert r.outcomes == 10


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _traced() -> int:
    gc.collect()
    return int(tracemalloc.get_traced_memory()[0])


def test_heap_stays_flat_under_a_long_flood_of_distinct_unlabeled_ids() -> None:
    """tracemalloc: 20,000 more never-labelled predictions after a warm-up add < 1 MB to the
    Python heap with ``max_pending`` = 2,000 (kept, they would take well over 10 MB)."""
    models = ModelsConfig(models={"m": ModelConfig(task="binary")})
    r = Runner(models, max_pending=2000, max_series=200)

    def send(e: int) -> None:
        r.send("prediction", preds(e * ENVELOPE, ENVELOPE, step=0.05, segment="s"))

    tracemalloc.start()
    try:
        for e in range(10):  # warm-up: the cap is reached, windows open and close
            send(e)
        before, rss0 = _traced(), _rss()
        for e in range(10, 50):
            send(e)
        growth = _traced() - before
    finally:
        tracemalloc.stop()
    assert r.proc.pending_count == 2000
    assert r.counters["pending_evicted"] == 50 * ENVELOPE - 2000
    assert growth < 1_000_000, f"heap grew by {growth} bytes"
    assert _rss() - rss0 < 64 * 2**20  # loose: RSS is noisy, but not 30k records' worth of leaks


def test_waiting_records_are_right_sized() -> None:
    """A waiting prediction (record, key, index entry, dict slot) costs < 1 KB of heap.

    Guards against orjson's habit (3.13) of returning bytes that keep a 4 KiB buffer: kept
    as is, each waiting record cost ~4.1 KB, a million of them 4 GB."""
    models = ModelsConfig(models={"m": ModelConfig(task="binary")})
    r = Runner(models)
    n_env = 20
    tracemalloc.start()
    try:
        r.send("prediction", preds(0, ENVELOPE, segment="s"))
        before = _traced()
        for e in range(1, n_env + 1):
            r.send("prediction", preds(e * ENVELOPE, ENVELOPE, segment="s"))
        growth = _traced() - before
    finally:
        tracemalloc.stop()
    assert r.proc.pending_count == (n_env + 1) * ENVELOPE
    per_record = growth / (n_env * ENVELOPE)
    assert per_record < 1000, f"{per_record:.0f} bytes per waiting prediction"


def test_expiry_index_of_joined_predictions_is_compacted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Joined predictions leave stale expiry entries (lazy deletion); they are compacted
    instead of piling up for the whole label horizon."""
    monkeypatch.setattr(partition_mod, "MIN_EXPIRY_COMPACT", 1000)
    models = ModelsConfig(models={"m": ModelConfig(task="binary")})
    r = Runner(models)
    n_env = 40
    sizes = []
    for e in range(n_env):
        r.send("prediction", preds(e * ENVELOPE, ENVELOPE))
        r.send("label", labels(e * ENVELOPE, ENVELOPE))
        sizes.append(len(r.proc.expiry))
    assert r.outcomes == n_env * ENVELOPE
    assert r.proc.pending_count == 0
    assert max(sizes) <= 1000 + 2 * ENVELOPE, sizes  # without compaction: 20,000


def test_flood_of_segment_values_is_capped_but_still_joined() -> None:
    """Each event a new segment value: the window series stop at ``max_series``; every event
    is still joined and counted in the whole-model series; the overflow is counted."""
    models = ModelsConfig(models={"m": ModelConfig(task="binary", segment_keys=("user",))})
    cap = 50
    r = Runner(models, max_series=cap)
    n = 2000  # all in one 60 s window (step 0.01 s)
    for e in range(n // ENVELOPE):
        r.send("prediction", preds(e * ENVELOPE, ENVELOPE, step=0.01))
        assert len(r.proc.windows) <= cap
    for e in range(n // ENVELOPE):
        r.send("label", labels(e * ENVELOPE, ENVELOPE, step=0.01))
        assert len(r.proc.windows) <= cap
    assert r.outcomes == n
    whole = [w for k, w in r.proc.windows.items() if k.segment == ""]
    assert len(whole) == 1 and whole[0].prediction_count == n and whole[0].labeled == n
    # predictions and outcomes of the n - (cap - 1) users that found no room
    assert r.counters["series_overflow"] == 2 * (n - (cap - 1))
    assert r.dlq == 0


def test_flood_of_models_is_capped_but_still_joined() -> None:
    """A new model_id per event: remembered tasks and detector banks stop at ``max_models``;
    events are still joined and windowed (up to ``max_series``); overflow counted."""
    r = Runner(ModelsConfig(), max_models=10, max_series=100)
    n = 1000
    r.send("prediction", preds(0, n, step=0.01, model="*", segment="s"))
    r.send("label", labels(0, n, step=0.01))
    assert r.outcomes == n
    assert len(r.proc.tasks) == 10
    assert len(r.proc.windows) == 100 + 10  # the cap, and the whole-model reserve of max_models
    r.idle()
    assert len(r.proc.banks) <= 10 and len(r.proc.policies) <= 10
    assert r.counters["models_overflow"] == 2 * (n - 10)  # task not remembered + no detector bank
    assert r.counters["series_overflow"] > 0
    assert len(r.proc.dump_state()) < 2_000_000


def test_flood_of_versions_is_capped() -> None:
    r = Runner(ModelsConfig(models={"m": ModelConfig(task="binary")}), max_models=5)
    evs = [
        dict(e, model_version=f"v{i}") for i, e in enumerate(preds(0, 200, step=0.01, segment="s"))
    ]
    r.send("prediction", evs)
    r.send("label", labels(0, 200, step=0.01))
    r.idle()
    assert r.outcomes == 200 and len(r.proc.banks) == 5
    assert r.counters["models_overflow"] == 195


def test_overflow_counters_reach_prometheus() -> None:
    m = PipelineMetrics()
    m.count({"series_overflow": 3, "models_overflow": 2, "pending_evicted": 5})
    text = m.exposition().decode()
    assert 'driftline_pipeline_events_total{name="series_overflow"} 3.0' in text
    assert 'driftline_pipeline_events_total{name="models_overflow"} 2.0' in text
    assert 'driftline_pipeline_events_total{name="pending_evicted"} 5.0' in text


def test_caps_are_settings() -> None:
    s = Settings.from_env({"DRIFTLINE_MAX_SERIES": "123", "DRIFTLINE_MAX_MODELS": "7"})
    assert (s.max_series, s.max_models) == (123, 7)
    d = Settings.from_env({})
    assert (d.max_series, d.max_models) == (10_000, 1_000)
    for var in ("DRIFTLINE_MAX_SERIES", "DRIFTLINE_MAX_MODELS"):
        with pytest.raises(ValueError):
            Settings.from_env({var: "0"})


def test_standby_replicas_is_a_setting_passed_to_faust(tmp_path: Any) -> None:
    from driftline.streams.app import DriftlineApp
    from driftline.streams.models import ModelsConfig

    base = {"DRIFTLINE_DATA_DIR": str(tmp_path)}
    for env, want in (({}, 0), ({"DRIFTLINE_STANDBY_REPLICAS": "1"}, 1)):
        app = DriftlineApp(Settings.from_env({**base, **env}), ModelsConfig(), sink=None)
        assert app.app.conf.table_standby_replicas == want
    with pytest.raises(ValueError):
        Settings.from_env({"DRIFTLINE_STANDBY_REPLICAS": "-1"})
