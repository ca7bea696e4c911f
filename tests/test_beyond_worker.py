"""Data drift, data quality and CBPE in the running pipeline (feature off unless configured).

Pure level: partition processors (``tests/test_partition.Harness``) + the merge stage, with
reference profiles built from pre-drift simulator traffic (``Profile.from_records``).
One integration test runs a real worker with a baseline in ``<data dir>/profiles``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from test_partition import T0, Feed, Harness

from driftline.detectors.profile import Profile
from driftline.schemas.partitioning import partition_for
from driftline.streams.baseline_cmd import load_references, save_profile
from driftline.streams.merge import MergeOutput, WindowMerger
from driftline.streams.models import ConfigError, ModelConfig, ModelsConfig, parse_models_config
from driftline.streams.simulate import FleetSimulator, ModelSpec, generate

W = 60.0
NPART = 2
RATE = 40.0
DRIFT = {"baseline": "latest", "min_samples": 300}
MODELS = ModelsConfig(models={
    "fraud": ModelConfig(task="binary", segment_keys=("country",), data_drift=DRIFT, cbpe=True),
    "intent": ModelConfig(task="multiclass", data_drift=DRIFT),
    "eta": ModelConfig(task="regression", data_drift=DRIFT),
})
PLAIN = ModelsConfig(models={
    "fraud": ModelConfig(task="binary", segment_keys=("country",)),
    "intent": ModelConfig(task="multiclass"),
    "eta": ModelConfig(task="regression"),
})
#: Data drift turned off in the models file, references or not.
OFF = ModelsConfig(models={
    "fraud": ModelConfig(task="binary", segment_keys=("country",), data_drift=False),
    "intent": ModelConfig(task="multiclass", data_drift=False),
    "eta": ModelConfig(task="regression", data_drift=False),
})
DATA_KINDS = ("data_drift", "data_quality")


@pytest.fixture(scope="module")
def references() -> dict[str, Profile]:
    """Reference profiles of the three simulator models, from traffic before any drift."""
    preds, _ = generate(30_000, seed=101, rate=RATE, start_ts=T0 - 10 * 86400)
    by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in preds:
        by_model[p["model_id"]].append(p)
    refs = {}
    for m, rows in by_model.items():
        refs[m] = Profile.from_records(rows, model_id=m)
        refs[m].version = 1
    return refs


def run_pipeline(preds: list[dict[str, Any]], labels: list[dict[str, Any]], models: ModelsConfig,
                 refs: dict[str, Profile] | None, *, restart_every: int = 0) -> tuple[MergeOutput, list[dict[str, Any]]]:
    """Events -> NPART partition processors -> one merger; (merge output, partials)."""
    items = sorted([(p["timestamp"], 0, "prediction", p) for p in preds]
                   + [(lab["timestamp"], 1, "label", lab) for lab in labels], key=lambda t: (t[0], t[1]))
    by_part: dict[int, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for _, _, kind, ev in items:
        by_part[partition_for(ev["prediction_id"], NPART)].append((kind, ev))
    partials: list[dict[str, Any]] = []
    for part in range(NPART):
        h = Harness(part, models, window_seconds=W, allowed_lateness=5.0, references=refs)
        feed = Feed(part)
        evs = by_part[part]
        for n_batch, lo in enumerate(range(0, len(evs), 400), 1):
            chunk = evs[lo : lo + 400]
            msgs: list[Any] = []
            i = 0
            while i < len(chunk):  # runs of one kind become envelopes
                j = i
                while j < len(chunk) and chunk[j][0] == chunk[i][0]:
                    j += 1
                msgs += feed.events(chunk[i][0], [e for _, e in chunk[i:j]])
                i = j
            h.process(msgs)
            if restart_every and n_batch % restart_every == 0:
                h.restart()  # recovers windows (profiles, CBPE) from the partition record
        h.close_idle()
        assert not h.dlq, h.dlq[:3]
        partials += h.partials
    merger = WindowMerger(models, window_seconds=W, merge_wait=1.0, flush_interval=2.0, references=refs)
    out = MergeOutput()
    for part_msg in partials:
        merger.on_partial(orjson.loads(orjson.dumps(part_msg)), 100.0, out)
    merger.tick(101.0, out)
    return out, partials


def whole(out: MergeOutput, model: str, version: str) -> dict[float, dict[str, Any]]:
    return {m["window_start"]: m for m in out.metrics
            if m["model_id"] == model and m["model_version"] == version and m["segment"] == ""}


def data_alerts(out: MergeOutput) -> list[dict[str, Any]]:
    return [a for a in out.alerts if a["kind"] in DATA_KINDS]


def test_clean_run_raises_no_data_alert_and_emits_feature_metrics(references: dict[str, Profile]) -> None:
    preds, labels = generate(12_000, seed=7, rate=RATE, start_ts=T0)
    out, _ = run_pipeline(preds, labels, MODELS, references)
    assert data_alerts(out) == []
    fraud = whole(out, "fraud", "v1")
    assert len(fraud) == 5
    for m in fraud.values():
        mt = m["metrics"]
        assert mt["feature_psi.amount"] < 0.1 and mt["feature_ks.amount"] < 0.1
        for name in ("feature_js.amount", "feature_missing_rate.amount", "feature_out_of_range_rate.amount",
                     "feature_chi2_pvalue.country", "feature_unseen_category_rate.country", "prediction_psi",
                     "estimated_accuracy", "estimated_precision", "estimated_recall", "estimated_f1",
                     "cbpe_error_accuracy"):
            assert name in mt, name
        assert mt["feature_missing_rate.amount"] == 0.0
        assert m["counts"]["feature_psi.amount"] == mt["prediction_count"]
    # Segments carry CBPE but no profile; intent and eta carry profiles, no CBPE.
    seg = [m for m in out.metrics if m["model_id"] == "fraud" and m["segment"]]
    assert seg and all("feature_psi.amount" not in m["metrics"] and "estimated_accuracy" in m["metrics"] for m in seg)
    intent = next(iter(whole(out, "intent", "2024-06").values()))["metrics"]
    assert "feature_psi.msg_length" in intent and "prediction_psi" in intent and "estimated_accuracy" not in intent


def test_feature_off_when_turned_off_or_without_reference(references: dict[str, Profile]) -> None:
    preds, labels = generate(3000, seed=3, rate=RATE, start_ts=T0)
    for models, refs in ((OFF, references), (MODELS, {})):
        out, partials = run_pipeline(preds, labels, models, refs)
        assert not any("prof" in p.get("state", {}) for p in partials)
        assert not any(k.startswith(("feature_", "prediction_psi")) for m in out.metrics for k in m["metrics"])
    out, partials = run_pipeline(preds, labels, PLAIN, references)
    assert not any("cbpe" in p.get("state", {}) for p in partials)
    assert not any("estimated_accuracy" in m["metrics"] for m in out.metrics)


def test_a_model_with_a_baseline_gets_data_drift_by_default(references: dict[str, Profile]) -> None:
    """No ``data_drift`` entry: the reference alone turns data drift and quality on, with the
    documented defaults."""
    preds, labels = generate(3000, seed=3, rate=RATE, start_ts=T0)
    out, partials = run_pipeline(preds, labels, PLAIN, references)
    assert any("prof" in p.get("state", {}) for p in partials)
    whole = [m for m in out.metrics if m["model_id"] == "fraud" and m["segment"] == ""]
    assert whole and all(any(k.startswith("feature_psi.") for k in m["metrics"]) for m in whole)


def test_covariate_drift_raises_data_drift_naming_the_feature(references: dict[str, Profile]) -> None:
    drift_at = 120.0
    preds, labels = generate(12_000, seed=7, rate=RATE, start_ts=T0, covariate_drift_at=drift_at)
    out, _ = run_pipeline(preds, labels, MODELS, references)
    firing = [a for a in out.alerts if a["kind"] == "data_drift" and a["status"] == "firing"]
    fraud = {a["feature"]: a for a in firing if a["model_id"] == "fraud" and a["model_version"] == "v1"}
    # one incident per drifting feature, not one per window
    assert len(fraud) == len([a for a in firing if a["model_id"] == "fraud" and a["model_version"] == "v1"])
    a = fraud["amount"]
    assert a["rule"] == "feature_drift" and a["metric"] == "feature_psi.amount" and a["segment"] == ""
    assert a["severity"] == "critical" and a["window_start"] == T0 + 120.0  # the first window after the shift
    assert "amount" in a["message"]
    ev = a["evidence"]  # a reference without chunk limits: PSI against the fixed cuts
    assert ev["statistic"] == "psi" and ev["limits"] == "fixed" and ev["limit"] == 0.25 and ev["value"] >= 0.25
    assert ev["ks"] > 0.2 and ev["top_shifted"] and {"bin", "reference", "window"} <= set(ev["top_shifted"][0])
    assert "country" in fraud  # fraud's markets moved too
    assert {x["model_id"] for x in firing} == {"fraud", "intent", "eta"}  # every model's features shift
    assert not [x for x in firing if x["window_start"] < T0 + 120.0]
    # The drift persists to the end of the run: the shifted features' incidents never resolve.
    resolved = {x["feature"] for x in out.alerts if x["kind"] == "data_drift" and x["status"] == "resolved"
                and x["model_id"] == "fraud"}
    assert "amount" not in resolved and "country" not in resolved


def test_missing_values_raise_data_quality_then_resolve(references: dict[str, Profile]) -> None:
    preds, labels = generate(12_000, seed=7, rate=RATE, start_ts=T0, missing_burst=0.4, missing_burst_s=120.0,
                             data_issues_at=60.0)
    out, _ = run_pipeline(preds, labels, MODELS, references)
    alerts = data_alerts(out)
    assert not [a for a in alerts if a["kind"] == "data_drift"]  # present values keep their distribution
    fraud = [a for a in alerts if a["model_id"] == "fraud" and a["model_version"] == "v1"]
    assert [(a["status"], a["rule"]) for a in fraud] == [("firing", "missing_rate"), ("resolved", "missing_rate")]
    fire, resolve = fraud
    assert fire["severity"] == "critical" and fire["window_start"] == T0 + 60.0 and fire["metric"] == "data_missing_rate"
    assert [f["feature"] for f in fire["evidence"]["features"]] == ["amount"]
    assert fire["evidence"]["features"][0]["missing_rate"] == pytest.approx(0.4, abs=0.06)
    assert resolve["window_start"] == T0 + 180.0 and resolve["incident_id"] == fire["incident_id"]
    burst = whole(out, "fraud", "v1")[T0 + 120.0]["metrics"]
    assert burst["feature_missing_rate.amount"] == pytest.approx(0.4, abs=0.06)
    assert {a["model_id"] for a in alerts if a["rule"] == "missing_rate"} == {"fraud", "intent", "eta"}


def test_new_category_raises_unseen_categories(references: dict[str, Profile]) -> None:
    preds, labels = generate(12_000, seed=7, rate=RATE, start_ts=T0, new_category=0.1, data_issues_at=120.0)
    out, _ = run_pipeline(preds, labels, MODELS, references)
    unseen = [a for a in data_alerts(out) if a["rule"] == "unseen_categories" and a["model_id"] == "fraud"
              and a["model_version"] == "v1"]
    assert len(unseen) == 1 and unseen[0]["status"] == "firing" and unseen[0]["window_start"] == T0 + 120.0
    ev = unseen[0]["evidence"]["features"]
    assert ev[0]["feature"] == "merchant_category" and ev[0]["categories"] == ["new-merchant_category"]


def test_profiles_and_cbpe_survive_restarts(references: dict[str, Profile]) -> None:
    preds, labels = generate(6000, seed=5, rate=RATE, start_ts=T0, covariate_drift_at=90.0)
    ref_out, _ = run_pipeline(preds, labels, MODELS, references)
    out, _ = run_pipeline(preds, labels, MODELS, references, restart_every=3)
    a, b = whole(ref_out, "fraud", "v1"), whole(out, "fraud", "v1")
    assert a.keys() == b.keys()
    for ws in a:
        for k, v in a[ws]["metrics"].items():
            if k.startswith(("feature_", "prediction_", "estimated_")):
                assert b[ws]["metrics"][k] == pytest.approx(v, rel=1e-9, abs=1e-12), k


def _cbpe_direct(evs: list[dict[str, Any]]) -> dict[str, float]:
    s = np.array([e["prediction"]["score"] for e in evs])
    pos = np.array([e["prediction"]["label"] for e in evs]) == 1
    tp, fp = s[pos].sum(), (1 - s[pos]).sum()
    fn, tn = s[~pos].sum(), (1 - s[~pos]).sum()
    return {"estimated_accuracy": (tp + tn) / len(s), "estimated_precision": tp / (tp + fp),
            "estimated_recall": tp / (tp + fn), "estimated_f1": 2 * tp / (2 * tp + fp + fn)}


def test_cbpe_equals_the_direct_expectation_on_the_simulator(references: dict[str, Profile]) -> None:
    # The simulator's fraud scores are not calibrated (the label is the model's decision
    # flipped with 10% noise, whatever the score), so CBPE is checked against its definition.
    preds, labels = generate(12_000, seed=7, rate=RATE, start_ts=T0)
    out, _ = run_pipeline(preds, labels, MODELS, references)
    groups: dict[float, list[dict[str, Any]]] = defaultdict(list)
    for p in preds:
        if p["model_id"] == "fraud" and p["model_version"] == "v1":
            groups[p["timestamp"] // W * W].append(p)
    windows = whole(out, "fraud", "v1")
    assert windows.keys() == groups.keys()
    for ws, evs in groups.items():
        m = windows[ws]["metrics"]
        for k, v in _cbpe_direct(evs).items():
            assert m[k] == pytest.approx(v, rel=1e-9), k
        assert windows[ws]["counts"]["estimated_accuracy"] == len(evs)
        assert m["cbpe_error_accuracy"] == pytest.approx(m["estimated_accuracy"] - m["accuracy"], abs=1e-12)
        assert m["cbpe_error_f1"] == pytest.approx(m["estimated_f1"] - m["f1"], abs=1e-12)


def _calibrated(rng, ts, drifted, cov, ver):  # type: ignore[no-untyped-def]
    n = len(ts)
    x = rng.normal(0, 1, n)
    score = 1 / (1 + np.exp(-1.5 * x))
    y = (rng.random(n) < score).astype(int)  # calibrated: P(y = 1 | score) = score
    preds = [{"label": int(s >= 0.5), "score": float(s)} for s in score.tolist()]
    return preds, [{"x": float(v)} for v in x.tolist()], [{} for _ in range(n)], [{"label": v} for v in y.tolist()]


def test_cbpe_estimates_realised_accuracy_of_a_calibrated_model() -> None:
    spec = ModelSpec("calib", "binary", 1.0, (("v1", 1.0),), _calibrated)
    sim = FleetSimulator(11, 50.0, 600.0, None, [spec], start_ts=T0)
    preds = [e for k, e in sim.events() if k == "prediction"]
    labels = sorted((e for k, e in sim.events() if k == "label"), key=lambda e: e["timestamp"])
    models = ModelsConfig(models={"calib": ModelConfig(task="binary", cbpe=True, thresholds=())})
    out, _ = run_pipeline(preds, labels, models, None)
    windows = whole(out, "calib", "v1")
    assert len(windows) == 10
    errors = []
    for m in (w["metrics"] for w in windows.values()):
        err = m["cbpe_error_accuracy"]
        assert abs(err) < 4 * m["estimated_accuracy_std"] + 0.01, m
        errors.append(err)
    assert abs(float(np.mean(errors))) < 0.01


def test_threshold_rule_on_estimated_accuracy(references: dict[str, Profile]) -> None:
    cfg = parse_models_config({"models": {"fraud": {"task": "binary", "cbpe": True, "thresholds": [
        {"metric": "estimated_accuracy", "min": 0.99, "min_count": 100, "severity": "warning"}]}}})
    preds, labels = generate(3000, seed=3, rate=RATE, start_ts=T0)
    out, _ = run_pipeline(preds, labels, cfg, None)
    fired = [a for a in out.alerts if a["rule"] == "estimated_accuracy_min" and a["model_version"] == "v1"]
    assert fired and fired[0]["severity"] == "warning" and fired[0]["segment"] == ""


def test_models_file_settings() -> None:
    cfg = parse_models_config({"models": {"m": {
        "data_drift": {"baseline": 2, "psi_drift": 0.3, "features": {"amount": {"psi_warning": 0.05}}},
        "data_quality": {"missing_increase": [0.1, 0.3], "min_samples": 50}, "cbpe": True}}}).for_model("m")
    assert cfg is not None and cfg.cbpe and cfg.baseline() == "v2"
    assert cfg.drift_config().for_feature("amount").psi_warning == 0.05
    assert cfg.quality_thresholds().missing_increase == (0.1, 0.3)
    assert ModelConfig(data_drift=False).baseline() is None and ModelConfig(data_drift=True).baseline() == "latest"
    assert ModelConfig().baseline() == "latest"  # a model with a baseline gets data drift unless turned off
    for bad, where in (({"data_drift": {"psi_warn": 1}}, "models.m.data_drift"),
                       ({"data_drift": {"baseline": "old"}}, "models.m.data_drift.baseline"),
                       ({"data_quality": {"type_mismatch": [0.5, 0.1]}}, "models.m.data_quality"),
                       ({"cbpe": "yes"}, "models.m.cbpe")):
        with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
            parse_models_config({"models": {"m": bad}})


def test_load_references(tmp_path: Path, references: dict[str, Profile]) -> None:
    save_profile(references["fraud"], tmp_path)
    save_profile(references["eta"], tmp_path)
    models = parse_models_config({"models": {"fraud": {"data_drift": {"baseline": "latest"}}, "intent": {"data_drift": True},
                                             "eta": {"data_drift": False}}})
    refs = load_references(tmp_path, models)
    assert set(refs) == {"fraud"}  # intent has no baseline, eta turned data drift off
    unlisted = parse_models_config({"models": {"fraud": {}}})
    assert set(load_references(tmp_path, unlisted)) == {"fraud", "eta"}  # a baseline turns it on
    assert refs["fraud"].features.keys() == references["fraud"].features.keys()
    everyone = parse_models_config({"defaults": {"data_drift": True}})
    assert set(load_references(tmp_path, everyone)) == {"fraud", "eta"}


# ---- the worker ---------------------------------------------------------------------------

WORKER_MODELS = """\
defaults:
  label_horizon_s: 3600
  early_label_wait_s: 3600
models:
  fraud:
    task: binary
    cbpe: true
    data_drift: {baseline: latest, min_samples: 300}
  intent: {task: multiclass}
  eta: {task: regression}
"""


@pytest.mark.integration
def test_worker_raises_data_drift_after_covariate_drift(bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    from worker_harness import Worker

    ref_preds, _ = generate(20_000, seed=101, rate=200.0, start_ts=time.time() - 86400)
    save_profile(Profile.from_records([p for p in ref_preds if p["model_id"] == "fraud"], model_id="fraud"),
                 tmp_path / "state" / "profiles")
    config = tmp_path / "models.yaml"
    config.write_text(WORKER_MODELS)
    worker = Worker(bootstrap, topic_prefix, tmp_path, config=str(config)).start()
    try:
        from driftline.streams.simulate import run_simulation

        start_ts = float(int(time.time()) // 10 * 10 - 200)  # in the past: windows close by event time
        drift_at = 30.0
        stats = run_simulation(bootstrap, topic_prefix, 200.0, 60.0, seed=5, realtime=False, progress=False,
                               start_ts=start_ts, covariate_drift_at=drift_at)
        assert stats["dropped"] == 0

        def drift_alerts() -> list[dict[str, Any]]:
            return worker.query("SELECT model_id, model_version, segment, rule, feature, status, severity, "
                                "toUnixTimestamp(window_start) AS ws, message "
                                "FROM driftline.alerts WHERE kind = 'data_drift'")

        worker.wait_for(lambda: [a for a in drift_alerts() if a["model_id"] == "fraud"], 40, "a data_drift alert")
        worker.wait_idle(30)
        alerts = drift_alerts()
        # one incident per drifted feature, each fired once and open while the drift lasts
        assert {(a["model_id"], a["model_version"], a["segment"], a["rule"], a["status"]) for a in alerts} == {
            ("fraud", "v1", "", "feature_drift", "firing")}, alerts
        assert len({a["feature"] for a in alerts}) == len(alerts) and "amount" in {a["feature"] for a in alerts}
        assert all(float(a["ws"]) >= start_ts + drift_at for a in alerts)  # none on the clean first half
        latest = worker.query("SELECT toUnixTimestamp(window_start) AS ws, "
                              "maxIf(value, metric = 'feature_psi.amount') AS psi, "
                              "maxIf(value, metric = 'estimated_accuracy') AS est, "
                              "maxIf(value, metric = 'estimated_roc_auc') AS auc FROM driftline.metrics_latest "
                              "WHERE model_id = 'fraud' AND model_version = 'v1' AND segment = '' "
                              "GROUP BY ws ORDER BY ws")
        clean = [r for r in latest if float(r["ws"]) < start_ts + drift_at]
        drifted = [r for r in latest if float(r["ws"]) >= start_ts + drift_at]
        assert clean and drifted
        assert all(float(r["psi"]) < 0.1 for r in clean) and all(float(r["psi"]) >= 0.25 for r in drifted)
        assert all(0.5 < float(r["est"]) <= 1.0 for r in latest)
        assert all(0.5 < float(r["auc"]) <= 1.0 for r in latest)  # estimated_roc_auc reaches ClickHouse
    finally:
        worker.stop()


def _miscalibrated(rng, ts, drifted, cov, ver):  # type: ignore[no-untyped-def]
    """Served score p**2 of the true P(y = 1 | x) = sigmoid(1.5 x - 1); the covariate drift
    moves x by +1 (the score mix changes, P(y | x) does not)."""
    n = len(ts)
    x = rng.normal(np.where(cov, 1.0, 0.0), 1.0)
    p = 1 / (1 + np.exp(-(1.5 * x - 1.0)))
    y = (rng.random(n) < p).astype(int)
    preds = [{"label": int(s >= 0.5), "score": float(s)} for s in (p**2).tolist()]
    return preds, [{"x": float(v)} for v in x.tolist()], [{} for _ in range(n)], [{"label": v} for v in y.tolist()]


def _sim_events(seed: int, duration: float, start_ts: float, **kw: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    spec = ModelSpec("churn", "binary", 1.0, (("v1", 1.0),), _miscalibrated)
    sim = FleetSimulator(seed, 50.0, duration, None, [spec], start_ts=start_ts, **kw)
    events = list(sim.events())
    preds = [e for k, e in events if k == "prediction"]
    labels = sorted((e for k, e in events if k == "label"), key=lambda e: e["timestamp"])
    return preds, labels


def test_calibrated_cbpe_with_roc_auc_in_the_pipeline(tmp_path: Path) -> None:
    """A baseline of labelled reference traffic calibrates CBPE in the merge stage: the
    windows carry ``estimated_roc_auc`` and ``cbpe_error_*``, the estimates follow the realised
    metrics before and after a covariate drift, and a threshold rule alerts on the AUC.

    Measured (mean signed error over the 5 windows of ~2,850 labelled events in each period):
    before the drift at most 0.0081 (precision; ROC AUC 0.0006), after it at most 0.0054
    (precision; ROC AUC 0.0037). Uncalibrated: up to 0.145 before and 0.122 after.
    """
    ref_preds, ref_labels = _sim_events(12, 1200.0, T0 - 86400)
    label_of = {lab["prediction_id"]: lab["label"] for lab in ref_labels}
    rows = [{"features": p["features"], "prediction": p["prediction"], "label": label_of.get(p["prediction_id"])}
            for p in ref_preds]
    save_profile(Profile.from_records(rows, model_id="churn"), tmp_path)
    models = parse_models_config({"models": {"churn": {"task": "binary", "cbpe": True, "thresholds": [
        {"metric": "estimated_roc_auc", "min": 0.99, "min_count": 100, "severity": "warning"}]}}})
    refs = load_references(tmp_path, models)  # CBPE alone asks for the reference
    assert refs["churn"].calibrator is not None and refs["churn"].calibrator.method == "isotonic"
    preds, labels = _sim_events(13, 600.0, T0, covariate_drift_at=300.0)
    out, _ = run_pipeline(preds, labels, models, refs)
    raw, _ = run_pipeline(preds, labels, models, None)
    windows, uncalibrated = whole(out, "churn", "v1"), whole(raw, "churn", "v1")
    assert len(windows) == 10
    names = ("accuracy", "precision", "recall", "f1", "roc_auc")
    for period in (sorted(windows)[:5], sorted(windows)[5:]):  # before and after the drift
        mean_err = {n: float(np.mean([windows[ws]["metrics"][f"cbpe_error_{n}"] for ws in period])) for n in names}
        raw_err = {n: float(np.mean([uncalibrated[ws]["metrics"][f"cbpe_error_{n}"] for ws in period])) for n in names}
        assert max(abs(e) for e in mean_err.values()) < 0.01, mean_err
        assert max(abs(e) for e in raw_err.values()) > 0.05, raw_err  # what the calibrator fixes
    for m in windows.values():
        mt = m["metrics"]
        assert mt["cbpe_error_roc_auc"] == pytest.approx(mt["estimated_roc_auc"] - mt["roc_auc"], abs=1e-12)
        assert m["counts"]["estimated_roc_auc"] == mt["prediction_count"]
    fired = [a for a in out.alerts if a["rule"] == "estimated_roc_auc_min"]
    assert fired and fired[0]["severity"] == "warning"


def test_dle_estimates_the_regressors_loss_in_the_pipeline() -> None:
    """A labelled reference gives ``eta`` a loss model; its whole-model windows then carry
    ``estimated_mae`` / ``estimated_rmse`` from their profiles, and ``dle_error_*`` with labels.

    The simulator's eta truth is the prediction times a lognormal(0, 0.15) factor, so the
    expected |error| given the inputs is k x prediction, k = E|1 - lognormal| (computed here):
    the estimate is checked against that expectation (the estimator's own bias) and against
    the realised MAE within its sampling error. Its covariate drift lengthens the distances and
    raises the MAE by ~35%. Measured on v7's ~1,800 labelled events per period: the estimate is
    1.3% above the expectation before the drift and 1.0% after it, as the reference sample's
    own mean |error| / prediction is 1.2% above k (4.6k reference rows); the realised MAE of
    the analysed sample is 0.4% and 4.6% below its expectation (0.2 and 1.9 standard errors).
    """
    ref_preds, ref_labels = generate(30_000, seed=101, rate=RATE, start_ts=T0 - 10 * 86400)
    value_of = {lab["prediction_id"]: lab.get("value") for lab in ref_labels}
    rows = [{"features": p["features"], "prediction": p["prediction"], "label": value_of.get(p["prediction_id"])}
            for p in ref_preds if p["model_id"] == "eta" and p["model_version"] == "v7"]
    eta = Profile.from_records(rows, model_id="eta")
    eta.version = 1
    assert eta.loss_model is not None
    preds, labels = generate(24_000, seed=9, rate=RATE, start_ts=T0, covariate_drift_at=300.0)
    models = parse_models_config({"models": {"eta": {"task": "regression", "data_drift": DRIFT, "thresholds": [
        {"metric": "estimated_mae", "max": 3.0, "min_count": 100, "severity": "warning"}]}}})
    out, _ = run_pipeline(preds, labels, models, {"eta": eta})
    windows = whole(out, "eta", "v7")
    assert len(windows) == 10
    for m, c in ((w["metrics"], w["counts"]) for w in windows.values()):
        for name in ("mae", "rmse"):
            assert m[f"dle_error_{name}"] == pytest.approx(m[f"estimated_{name}"] - m[name], abs=1e-12)
            assert c[f"estimated_{name}"] == m["prediction_count"]
    z = np.linspace(-8, 8, 200_001)
    k = float(np.sum(np.abs(1 - np.exp(0.15 * z)) * np.exp(-z * z / 2)) / np.sum(np.exp(-z * z / 2)))
    truth = {lab["prediction_id"]: lab["value"] for lab in labels if "value" in lab}
    for period in (sorted(windows)[:5], sorted(windows)[5:]):
        evs = [p for p in preds if p["model_id"] == "eta" and p["model_version"] == "v7"
               and p["timestamp"] // W * W in period]
        y_hat = np.array([p["prediction"]["value"] for p in evs])
        expected = k * float(y_hat.mean())
        errs = np.array([abs(p["prediction"]["value"] - truth[p["prediction_id"]]) for p in evs
                         if p["prediction_id"] in truth])
        n = np.array([windows[ws]["metrics"]["prediction_count"] for ws in period])
        est = float(np.array([windows[ws]["metrics"]["estimated_mae"] for ws in period]) @ n / n.sum())
        assert est == pytest.approx(expected, rel=0.02)
        assert abs(est - errs.mean()) < 3 * errs.std() / np.sqrt(errs.size) + 0.01 * errs.mean()
    # Not for the other models, nor for segments; and a threshold rule alerts on the estimate
    # (after the drift the estimated MAE passes 3.0).
    assert not any("estimated_mae" in m["metrics"] for m in out.metrics if m["model_id"] != "eta" or m["segment"])
    fired = [a for a in out.alerts if a["rule"] == "estimated_mae_max" and a["model_version"] == "v7"]
    assert fired and min(a["window_start"] for a in fired) >= sorted(windows)[5]
