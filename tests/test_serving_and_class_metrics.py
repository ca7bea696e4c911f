"""Issue #17's first-asked metrics through the window, the partition processor, the merge stage and
the alert engine (no broker): serving outcome (``error_count``, ``error_rate``), calibration (``ece``)
and per-class metrics of multiclass models."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from sklearn import metrics as skm
from test_partition import BINARY, T0, Feed, Harness, label, merge_all, pred

from driftline.detectors.metrics import class_metric_name
from driftline.streams.alerts import AlertEngine
from driftline.streams.models import ModelConfig, ModelsConfig, parse_models_config
from driftline.streams.windows import MAX_ERROR_CODES, TOP_ERROR_CODES, WindowPartial

# ---- the window ----------------------------------------------------------------------------


def _window(n: int, statuses: list[str | None]) -> WindowPartial:
    w = WindowPartial("binary")
    w.add_predictions(np.full(n, 5.0), np.full(n, 0.5))
    for s in statuses:
        if s is not None:
            w.add_status(s == "error")
    return w


def test_error_rate_is_errors_over_every_prediction_and_merges() -> None:
    a = _window(6, ["ok", "error", None, "ok", "error", None])
    b = _window(4, ["error", None, None, None])
    m, c = a.metrics(60.0)
    assert (m["error_count"], m["error_rate"], c["error_rate"]) == (2.0, pytest.approx(2 / 6), 6)
    a.merge(WindowPartial.from_state(orjson.loads(orjson.dumps(b.to_state()))))
    m, c = a.metrics(60.0)
    assert (m["error_count"], m["error_rate"], c["error_count"]) == (3.0, pytest.approx(3 / 10), 10)


def test_no_status_no_error_metrics_and_old_states_load() -> None:
    w = _window(5, [None] * 5)
    m, _ = w.metrics(60.0)
    assert "error_rate" not in m and "error_count" not in m
    state = w.to_state()
    assert "st" not in state and "err" not in state  # states of windows without statuses are unchanged
    assert WindowPartial.from_state(state).status_count == 0
    ok = _window(3, ["ok"] * 3)
    m, _ = ok.metrics(60.0)
    assert (m["error_count"], m["error_rate"]) == (0.0, 0.0)  # reported and all fine: an explicit 0


def test_error_codes_counted_per_code_top_ones_by_name() -> None:
    a = _window(0, [])
    for i in range(30):
        a.add_status(True, f"E{i % 12:02d}" if i < 24 else "E.1%")  # 12 codes twice, "E.1%" 6 times
    a.add_status(True)  # an error without a code
    b = WindowPartial.from_state(orjson.loads(orjson.dumps(a.to_state())))
    assert b.error_codes == a.error_codes
    a.merge(b)
    m, c = a.metrics(60.0)
    coded = {k: v for k, v in m.items() if k.startswith("error_count.")}
    assert coded["error_count.E%2E1%25"] == 12.0  # the most frequent first; '.' and '%' encoded
    assert len([k for k in coded if k != "error_count.__other__"]) == TOP_ERROR_CODES
    assert sum(coded.values()) == 60.0 and m["error_count"] == 62.0  # the two uncoded errors are in the total only
    assert coded["error_count.__other__"] == 60.0 - 12.0 - 4.0 * (TOP_ERROR_CODES - 1)
    assert "error_count.E10" not in coded and "error_count.E00" in coded  # ties: by name
    # A flood of distinct codes: a partial keeps MAX_ERROR_CODES of them, the rest as __other__.
    flood = _window(0, [])
    for i in range(MAX_ERROR_CODES + 50):
        flood.add_status(True, f"X{i}")
    assert flood.error_codes is not None and len(flood.error_codes) == MAX_ERROR_CODES + 1
    assert flood.error_codes["__other__"] == 50


# ---- partition processor and merge stage ----------------------------------------------------


def test_status_flows_from_events_to_the_merged_window_and_its_segments() -> None:
    h, f = Harness(0, BINARY), Feed()
    events = []
    for i in range(40):
        ev = pred(f"p{i}", T0 + 1 + i * 0.5)
        if i % 4 == 0:
            ev |= {"status": "error", "error_code": "TIMEOUT"}
        elif i % 4 == 1:
            ev["status"] = "ok"
        elif i % 4 == 2:
            ev["error_code"] = "OOM"  # implies "error"
        events.append(ev)  # i % 4 == 3: no status
    h.process(f.events("prediction", events))
    h.process(f.events("prediction", [events[0]], envelope=False))  # a retried error: a duplicate, not a 2nd error
    h.process(f.events("label", [label(f"p{i}", T0 + 30) for i in range(40)]))
    h.close_idle()
    late = pred("late", T0 + 2) | {"status": "error"}  # for the closed window: a revision counts it
    h.process(f.events("prediction", [late]))
    h.close_idle()
    windows = merge_all(h.partials, BINARY)
    for segment in ("", "country=DE"):
        win = windows[("m", "v1", segment, T0)]
        m, c = win["metrics"], win["counts"]
        assert m["prediction_count"] == 41
        assert m["error_count"] == 21 and m["error_rate"] == pytest.approx(21 / 41) and c["error_rate"] == 41
        assert (m["error_count.TIMEOUT"], m["error_count.OOM"]) == (10, 10)  # the late error had no code


def test_ece_and_per_class_metrics_reach_the_metrics_message_with_their_counts() -> None:
    rng = np.random.default_rng(4)
    models = ModelsConfig(models={"m": ModelConfig(task="binary"), "mc": ModelConfig(task="multiclass")})
    h, f = Harness(0, models), Feed()
    n = 300
    score = rng.uniform(0, 1, n)
    y = (rng.random(n) < score**1.5).astype(int)
    classes = np.array(["cat", "dog", "b.ird"])
    yt = classes[rng.choice(3, n, p=[0.5, 0.3, 0.2])]
    yp = np.where(rng.random(n) < 0.7, yt, classes[rng.choice(3, n)])
    preds = [pred(f"b{i}", T0 + i * 0.1, score=float(score[i])) for i in range(n)]
    preds += [pred(f"c{i}", T0 + i * 0.1, "mc", label=str(yp[i])) for i in range(n)]
    h.process(f.events("prediction", preds[:n // 2]) + f.events("prediction", preds[n // 2:]))
    labels = [label(f"b{i}", T0 + 40, label=int(y[i])) for i in range(n)]
    labels += [label(f"c{i}", T0 + 40, "mc", label=str(yt[i])) for i in range(n)]
    h.process(f.events("label", labels))
    h.close_idle()
    windows = merge_all(h.partials, models)
    win = windows[("m", "v1", "", T0)]
    edges = np.linspace(0, 1, 11)
    ids = np.searchsorted(edges[1:-1], score, side="right")
    ece = sum((ids == b).sum() / n * abs(y[ids == b].mean() - score[ids == b].mean()) for b in set(ids.tolist()))
    assert win["metrics"]["ece"] == pytest.approx(ece, abs=1e-12) and win["counts"]["ece"] == n
    assert win["counts"]["calibration.0.observed"] == (ids == 0).sum()
    win = windows[("mc", "v1", "", T0)]
    m, c = win["metrics"], win["counts"]
    labels_ = sorted(classes.tolist())
    p, r, f1, sup = skm.precision_recall_fscore_support(yt, yp, labels=labels_, zero_division=0)
    cm = skm.confusion_matrix(yt, yp, labels=labels_)
    for i, cls in enumerate(labels_):
        assert m[class_metric_name("precision", cls)] == pytest.approx(p[i])
        assert m[class_metric_name("recall", cls)] == pytest.approx(r[i])
        assert m[class_metric_name("f1", cls)] == pytest.approx(f1[i])
        assert m[class_metric_name("support", cls)] == sup[i] and c[class_metric_name("recall", cls)] == sup[i]
        assert c[class_metric_name("precision", cls)] == cm[:, i].sum()
        for j, pcls in enumerate(labels_):
            assert m.get(class_metric_name("confusion", cls, pcls), 0.0) == cm[i, j]
    assert "precision.b%2Eird" in m  # the dot in the class name is encoded


# ---- alerting on error_rate ------------------------------------------------------------------


def _win(ws: float, errors: int, n: int) -> dict:
    w = _window(n, ["error"] * errors + ["ok"] * (n - errors))
    metrics, counts = w.metrics(60.0)
    return {"model_id": "m", "model_version": "v1", "segment": "", "window_start": ws, "window_end": ws + 60,
            "revision": 0, "metrics": metrics, "counts": counts}


def test_an_error_rate_rule_with_max_fires_and_resolves() -> None:
    cfg = parse_models_config({"models": {"m": {"task": "binary", "thresholds": [
        {"metric": "error_rate", "max": 0.05, "min_count": 100, "severity": "warning"}]}}}).for_model("m")  # fmt: skip
    assert cfg is not None
    eng = AlertEngine("m")
    # judge_volume off: the 90-prediction window would (rightly) raise a volume drop here
    assert eng.on_window(cfg, _win(0.0, 2, 200), emitted_at=61.0, judge_volume=False) == []  # 1%: fine
    fired = eng.on_window(cfg, _win(60.0, 30, 200), emitted_at=121.0, judge_volume=False)  # 15%
    assert [(a["status"], a["kind"], a["rule"], a["metric"], a["severity"]) for a in fired] == [
        ("firing", "threshold", "error_rate_max", "error_rate", "warning")]
    assert fired[0]["value"] == pytest.approx(0.15) and fired[0]["threshold"] == 0.05
    assert eng.on_window(cfg, _win(120.0, 40, 200), emitted_at=181.0, judge_volume=False) == []  # still firing: deduplicated
    assert eng.on_window(cfg, _win(180.0, 90, 90), emitted_at=241.0, judge_volume=False) == []  # 90 predictions < min_count
    resolved = eng.on_window(cfg, _win(240.0, 1, 200), emitted_at=301.0, judge_volume=False)
    assert [a["status"] for a in resolved] == ["resolved"]
