"""Issue 14 on the real worker (Tansu, chdb): volume judged on complete windows only, and the
series caps never starving a model's own metrics.

The processor-level twins are in ``tests/test_eventtime.py``; here the windows go through the
join partitions, the partials topic, the merge stage, the alerts topic and ClickHouse. Events
carry historical timestamps (an hour ago) and windows are the harness's 10 s ones.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from conftest import consume_all
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score
from worker_harness import FAST_WINDOWS, Worker

from driftline.schemas.partitioning import partition_for
from driftline.streams.sdk import DriftlineProducer
from driftline.streams.topics import create_topics

pytestmark = [pytest.mark.integration]

WINDOW_S = float(FAST_WINDOWS["DRIFTLINE_WINDOW_SECONDS"])
PARTITIONS = 4
Event = tuple[str, dict[str, Any]]


def _start_ts() -> float:
    return float(int(time.time()) // 60 * 60 - 3600)


def _send(bootstrap: str, prefix: str, events: list[Event]) -> None:
    with DriftlineProducer(bootstrap, topic_prefix=prefix, linger_ms=10) as sdk:
        for kind, ev in events:
            assert sdk.log_event(kind, ev)
        sdk.flush(30)


def _setup(bootstrap: str, tmp_path: Path, models_yaml: str, **env: str) -> tuple[str, Worker]:
    prefix = f"cw{uuid.uuid4().hex[:6]}."
    create_topics(bootstrap, prefix, partitions=PARTITIONS)
    cfg = tmp_path / "models.yaml"
    cfg.write_text(models_yaml)
    return prefix, Worker(bootstrap, prefix, tmp_path, config=str(cfg), partitions=PARTITIONS, extra_env=env)


def _latest(w: Worker, model: str, metrics: tuple[str, ...]) -> dict[tuple[str, float, str], float]:
    names = ", ".join(f"'{m}'" for m in metrics)
    rows = w.query(f"SELECT segment, toFloat64(window_start) AS ws, metric, value FROM driftline.metrics_latest "
                   f"WHERE model_id = '{model}' AND metric IN ({names})")
    return {(r["segment"], round(r["ws"], 3), r["metric"]): r["value"] for r in rows}


# ---- volume: judged once every partition has closed the window ------------------------------------
def _volume_events(start: float, window: int, n: int, tag: str) -> list[dict[str, Any]]:
    """``n`` predictions of model ``vol`` spread over window ``window``."""
    return [{"prediction_id": f"{tag}-{window}-{i}", "model_id": "vol", "model_version": "v1",
             "timestamp": start + window * WINDOW_S + (i + 0.5) * WINDOW_S / n,
             "prediction": {"label": i % 2, "score": 0.7}} for i in range(n)]


def _volume_alerts(w: Worker, prefix: str, bootstrap: str) -> tuple[list[tuple[str, str, float]], list[tuple[str, str, float]]]:
    """(rule, status, window start) of every volume alert: on the alerts topic, and in ClickHouse."""
    sent = [orjson.loads(m.value()) for m in consume_all(bootstrap, prefix + "alerts", 10_000, timeout=3.0)]
    topic = [(a["rule"], a["status"], round(float(a["window_start"]), 3)) for a in sent if a["kind"] == "volume"]
    table = [(r["rule"], r["status"], round(r["ws"], 3)) for r in w.query(
        "SELECT rule, status, toFloat64(window_start) AS ws FROM driftline.alerts FINAL WHERE kind = 'volume'")]
    return sorted(topic), sorted(table)


def test_volume_waits_for_every_partition_and_fires_on_a_true_drop(bootstrap: str, tmp_path: Path) -> None:
    """Partition 3's predictions of windows 6-9 come ~10 s after the rest: those windows are first
    emitted with three partitions' partials (~75% of their volume, which a 0.9 drop rule would
    flag) and must stay unjudged until partition 3 closes them; window 10 then truly drops."""
    prefix, w = _setup(bootstrap, tmp_path, "models:\n  vol: {task: binary, volume_drop: 0.9, volume_min_count: 50}\n")
    start = _start_ts()
    steady = {win: _volume_events(start, win, 200, "s") for win in range(10)}
    held_back = [e for win in range(6, 10) for e in steady[win] if partition_for(e["prediction_id"], PARTITIONS) == 3]
    first = [e for win in range(10) for e in steady[win] if e not in held_back]
    drop = _volume_events(start, 10, 40, "d")
    assert {partition_for(e["prediction_id"], PARTITIONS) for e in drop} == set(range(PARTITIONS))  # all close it
    partial_counts = {win: sum(1 for e in first if e["timestamp"] // WINDOW_S == (start // WINDOW_S) + win)
                      for win in range(6, 10)}
    assert all(n < 0.9 * 200 for n in partial_counts.values())  # judged on these, they would be "drops"
    ws = {win: round(start + win * WINDOW_S, 3) for win in range(11)}
    w.start()
    try:
        _send(bootstrap, prefix, [("prediction", e) for e in first])
        w.wait_for(lambda: all(_latest(w, "vol", ("prediction_count",)).get(("", ws[win], "prediction_count"))
                               == partial_counts[win] for win in range(6, 10)), 60,
                   "windows 6-9 emitted from three partitions")
        time.sleep(3.0)  # the merge stage has had every chance to judge them
        assert _volume_alerts(w, prefix, bootstrap) == ([], [])

        _send(bootstrap, prefix, [("prediction", e) for e in held_back])  # partition 3 catches up
        w.wait_for(lambda: all(_latest(w, "vol", ("prediction_count",)).get(("", ws[win], "prediction_count"))
                               == 200 for win in range(10)), 60, "windows 6-9 complete")
        time.sleep(3.0)
        assert _volume_alerts(w, prefix, bootstrap) == ([], [])  # complete, they are no drop

        _send(bootstrap, prefix, [("prediction", e) for e in drop])
        fired = [("volume_drop", "firing", ws[10])]
        w.wait_for(lambda: _volume_alerts(w, prefix, bootstrap) == (fired, fired), 60, "the drop's alert")
        counts = _latest(w, "vol", ("prediction_count",))
        assert counts[("", ws[10], "prediction_count")] == 40
    finally:
        w.stop()


# ---- series caps: the whole model is never starved ------------------------------------------------
COUNTRIES = [f"c{i:02d}" for i in range(12)]
MAX_VALUES = 3


def _capped_events(start: float, model: str, n: int, seed: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """``n`` predictions of ``model`` in one window with a country out of 12, and their labels."""
    rng = np.random.default_rng(seed)
    preds, truth = [], {}
    for i in range(n):
        pid = f"{model}-{i}"
        y = int(rng.random() < 0.4)
        yhat = y if rng.random() < 0.75 else 1 - y
        preds.append({"prediction_id": pid, "model_id": model, "model_version": "v1",
                      "timestamp": start + 1.0 + 8.0 * i / n, "prediction": {"label": yhat, "score": 0.5 + 0.3 * yhat},
                      "segments": {"country": COUNTRIES[int(rng.integers(0, len(COUNTRIES)))]}})
        truth[pid] = y
    return preds, truth


def _folded(preds: list[dict[str, Any]]) -> dict[str, str]:
    """prediction id -> the segment it counts in: per partition, the first MAX_VALUES countries
    in log order are kept, the others are ``__other__`` (the reference of ``SeriesTables._fold``)."""
    kept: dict[int, list[str]] = defaultdict(list)
    out = {}
    for p in preds:  # sent in this order: each partition's log keeps it
        part, country = partition_for(p["prediction_id"], PARTITIONS), p["segments"]["country"]
        if country not in kept[part] and len(kept[part]) < MAX_VALUES:
            kept[part].append(country)
        out[p["prediction_id"]] = f"country={country if country in kept[part] else '__other__'}"
    return out


def _sklearn(preds: list[dict[str, Any]], truth: dict[str, int]) -> dict[str, float]:
    y = [truth[p["prediction_id"]] for p in preds]
    yp = [p["prediction"]["label"] for p in preds]
    return {"prediction_count": len(preds), "labeled_count": len(y), "accuracy": accuracy_score(y, yp),
            "precision": precision_score(y, yp, zero_division=0), "recall": recall_score(y, yp, zero_division=0),
            "f1": f1_score(y, yp, zero_division=0)}


def test_series_caps_never_starve_the_whole_model(bootstrap: str, tmp_path: Path) -> None:
    """Per partition: ``max_series`` 5 open segment series and 3 values per segment key. Model
    ``a`` (read first on every partition) fills the table with its 3 kept countries and
    ``__other__``; model ``b`` then gets no segment series at all (``series_overflow``), but its
    whole-model series comes from the reserve. Both models' whole-model metrics are sklearn's on
    all their events; ``a``'s segments are sklearn's on the events each one counts, the folded
    ones under ``country=__other__``. The events are in Kafka before the worker starts (log order
    decides, not timing), and all in one window, which closes once the worker is idle."""
    yaml = "models:\n  a: {task: binary, segment_keys: [country]}\n  b: {task: binary, segment_keys: [country]}\n"
    prefix, w = _setup(bootstrap, tmp_path, yaml, DRIFTLINE_MAX_SERIES="5",
                       DRIFTLINE_MAX_SEGMENT_VALUES=str(MAX_VALUES))
    start = _start_ts()
    a_preds, a_truth = _capped_events(start, "a", 1200, seed=1)
    b_preds, b_truth = _capped_events(start, "b", 800, seed=2)
    labels = [{"prediction_id": pid, "timestamp": start + 9.5, "label": y} for pid, y in {**a_truth, **b_truth}.items()]
    _send(bootstrap, prefix, [("prediction", p) for p in a_preds])
    _send(bootstrap, prefix, [("prediction", p) for p in b_preds] + [("label", lab) for lab in labels])
    names = ("prediction_count", "labeled_count", "accuracy", "precision", "recall", "f1")
    ws = round(start, 3)
    w.start()
    try:
        w.wait_for(lambda: _latest(w, "b", ("labeled_count",)).get(("", ws, "labeled_count")) == len(b_preds)
                   and _latest(w, "a", ("labeled_count",)).get(("", ws, "labeled_count")) == len(a_preds), 60,
                   "both models' windows with every label")
        w.wait_idle(60)
        got_a, got_b = _latest(w, "a", names), _latest(w, "b", names)
        counters = w.health()["counters"]
    finally:
        w.stop()

    for got, preds, truth in ((got_a, a_preds, a_truth), (got_b, b_preds, b_truth)):
        for name, value in _sklearn(preds, truth).items():
            assert got[("", ws, name)] == pytest.approx(value, abs=1e-9), (preds[0]["model_id"], name)
    folded = _folded(a_preds)
    by_segment: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in a_preds:
        by_segment[folded[p["prediction_id"]]].append(p)
    assert "country=__other__" in by_segment and len(by_segment) > MAX_VALUES + 1  # partitions keep different ones
    assert {k[0] for k in got_a} == {"", *by_segment}
    for segment, preds in by_segment.items():
        for name, value in _sklearn(preds, a_truth).items():
            assert got_a[(segment, ws, name)] == pytest.approx(value, abs=1e-9), (segment, name)
    assert {k[0] for k in got_b} == {""}  # b's segment series never fitted under the cap
    assert counters["series_overflow"] >= len(b_preds) and counters["segment_overflow"] > 0
    assert Counter(folded.values())["country=__other__"] == got_a[("country=__other__", ws, "prediction_count")]
