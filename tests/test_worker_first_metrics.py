"""Issue #17's first-asked metrics end to end: SDK -> Tansu -> a real worker -> chdb. ``ece``, a
per-class metric and ``error_rate`` in ``driftline.metrics_latest`` equal what numpy and sklearn
compute from the events that were sent."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm
from worker_harness import Worker

from driftline.detectors.metrics import class_metric_name
from driftline.streams.sdk import DriftlineProducer

pytestmark = pytest.mark.integration

MODELS_YAML = """\
allow_unlisted_models: false
defaults:
  label_horizon_s: 3600
  early_label_wait_s: 3600
models:
  fraud:
    task: binary
    thresholds: [{metric: error_rate, max: 0.1, min_count: 100, severity: warning}]
  intent: {task: multiclass}
"""
WINDOW = 10.0  # tests/worker_harness.py FAST_WINDOWS
N = 1200  # per model, over three windows
CLASSES = np.array(["billing", "cancel", "upgrade", "v1.2"])


def _ece(y: np.ndarray, s: np.ndarray) -> float:
    ids = np.minimum(np.floor(s * 10).astype(int), 9)
    return float(sum((ids == b).sum() / s.size * abs(y[ids == b].mean() - s[ids == b].mean()) for b in set(ids.tolist())))


def test_ece_per_class_and_error_rate_reach_clickhouse(bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    cfg = tmp_path / "models.yaml"
    cfg.write_text(MODELS_YAML)
    worker = Worker(bootstrap, topic_prefix, tmp_path, config=str(cfg)).start()
    try:
        rng = np.random.default_rng(17)
        start = float(int(time.time()) // 10 * 10 - 200)  # in the past: windows close by event time
        ts = start + np.sort(rng.uniform(0, 3 * WINDOW, N))
        score = rng.beta(1.0, 1.6, N)
        y = (rng.random(N) < score**0.7).astype(int)  # miscalibrated on purpose
        # The second window has an incident: 25% of its requests fail.
        p_err = np.where((ts - start) // WINDOW == 1, 0.25, 0.02)
        err = rng.random(N) < p_err
        status = np.where(rng.random(N) < 0.1, None, np.where(err, "error", "ok"))  # some report no status
        yt = CLASSES[rng.choice(4, N, p=[0.4, 0.3, 0.2, 0.1])]
        yp = np.where(rng.random(N) < 0.7, yt, CLASSES[rng.choice(4, N)])
        with DriftlineProducer(bootstrap, topic_prefix=topic_prefix, linger_ms=20) as prod:
            for i in range(N):
                code = "UPSTREAM_TIMEOUT" if status[i] == "error" and i % 2 else None
                assert prod.log_prediction(f"f{i}", "fraud", {"score": float(score[i])}, timestamp=float(ts[i]),
                                           latency_ms=5.0, status=status[i], error_code=code)  # fmt: skip
                assert prod.log_prediction(f"i{i}", "intent", str(yp[i]), timestamp=float(ts[i]))
            for i in range(N):
                assert prod.log_label(f"f{i}", int(y[i]), model_id="fraud", timestamp=float(ts[i]) + 1)
                assert prod.log_label(f"i{i}", str(yt[i]), model_id="intent", timestamp=float(ts[i]) + 1)
            assert prod.flush(30) == 0
        worker.wait_for(lambda: worker.health()["counters"].get("joins", 0) >= 2 * N, 90, "all joins")
        worker.wait_idle()

        rows = worker.query("SELECT model_id, toFloat64(window_start) AS ws, metric, value, count "
                            "FROM driftline.metrics_latest WHERE segment = ''")  # fmt: skip
        got: dict[tuple[str, float], dict[str, tuple[float, int]]] = defaultdict(dict)
        for r in rows:
            got[(r["model_id"], round(r["ws"], 3))][r["metric"]] = (r["value"], r["count"])
        windows = (ts // WINDOW * WINDOW).round(3)
        assert {ws for m, ws in got if m == "fraud"} == set(windows.tolist())
        checked = 0
        for ws in sorted(set(windows.tolist())):
            w = windows == ws
            fraud, intent = got[("fraud", ws)], got[("intent", ws)]
            n = int(w.sum())
            assert fraud["prediction_count"][0] == n
            assert fraud["ece"][0] == pytest.approx(_ece(y[w], score[w]), abs=1e-9) and fraud["ece"][1] == n
            n_err = int((status[w] == "error").sum())
            assert fraud["error_count"][0] == n_err
            assert fraud["error_rate"][0] == pytest.approx(n_err / n, abs=1e-12) and fraud["error_rate"][1] == n
            coded = int(((status[w] == "error") & (np.arange(N)[w] % 2 == 1)).sum())
            assert fraud.get("error_count.UPSTREAM_TIMEOUT", (0.0, 0))[0] == coded
            labels = sorted(CLASSES.tolist())
            _, rec, _, sup = skm.precision_recall_fscore_support(yt[w], yp[w], labels=labels, zero_division=0)
            for k, c in enumerate(labels):
                assert intent[class_metric_name("recall", c)] == (pytest.approx(rec[k], abs=1e-12), int(sup[k]))
            cm = skm.confusion_matrix(yt[w], yp[w], labels=labels)
            assert intent.get("confusion.v1%2E2.billing", (0.0, 0))[0] == cm[3, 0]
            assert "error_rate" not in intent  # intent's events carried no status
            checked += 1
        assert checked == 3

        alerts = worker.query("SELECT rule, metric, status, toFloat64(window_start) AS ws FROM driftline.alerts "
                              "WHERE model_id = 'fraud' AND kind = 'threshold' ORDER BY detected_at")  # fmt: skip
        assert [(a["rule"], a["status"]) for a in alerts][:1] == [("error_rate_max", "firing")], alerts
        assert round(alerts[0]["ws"], 3) == start + WINDOW
    finally:
        worker.stop()
