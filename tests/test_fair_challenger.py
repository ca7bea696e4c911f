"""Fairness, champion/challenger and first-hours references in the running pipeline.

Pure level: partition processors + the merge stage (``test_beyond_worker.run_pipeline``) on
simulator traffic, checked against direct computations from the events (scikit-learn for the
per-group rates, scipy's normal quantile for the intervals). One integration test runs a real
worker against Tansu and chdb.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from scipy.stats import norm
from sklearn.metrics import confusion_matrix
from test_beyond_worker import RATE, T0, W, run_pipeline, whole

from driftline.detectors.fairness import GroupRates
from driftline.detectors.profile import Profile
from driftline.sinks.report import render_report
from driftline.streams.baseline_cmd import ReferenceBuilder
from driftline.streams.judgements import fairness_metrics
from driftline.streams.merge import MergeOutput, WindowMerger
from driftline.streams.models import ConfigError, parse_models_config
from driftline.streams.simulate import FleetSimulator, generate

FAIR = {
    "protected": ["channel"],
    "min_group_events": 40,
    "thresholds": {"equalized_odds_difference": 0.2, "demographic_parity_difference": 0.15},
}


def models(**champion: Any) -> Any:
    return parse_models_config(
        {
            "models": {
                "fraud": {
                    "task": "binary",
                    "fairness": FAIR,
                    "champion": {"version": "v1", "min_n": 80, **champion},
                },
                "intent": {"task": "multiclass"},
                "eta": {"task": "regression", "champion": "v7"},
            }
        }
    )


def kinds(out: MergeOutput, *names: str) -> list[dict[str, Any]]:
    return [a for a in out.alerts if a["kind"] in names]


def joined(
    preds: list[dict[str, Any]], labels: list[dict[str, Any]], model: str
) -> list[tuple[dict[str, Any], int]]:
    truth = {lab["prediction_id"]: lab.get("label") for lab in labels if lab["model_id"] == model}
    return [
        (p, int(truth[p["prediction_id"]]))
        for p in preds
        if p["model_id"] == model and p["prediction_id"] in truth
    ]


def test_clean_run_raises_neither_and_metrics_match_direct_computation() -> None:
    preds, labels = generate(12_000, seed=7, rate=RATE, start_ts=T0)
    out, _ = run_pipeline(preds, labels, models(), None)
    assert kinds(out, "fairness", "challenger") == []
    rows = joined(preds, labels, "fraud")
    windows = whole(out, "fraud", "v1")
    assert len(windows) == 5
    for ws, msg in windows.items():
        m, c = msg["metrics"], msg["counts"]
        evs = [
            (p, y) for p, y in rows if p["model_version"] == "v1" and p["timestamp"] // W * W == ws
        ]
        rates = {}
        for g in ("app", "pos", "web"):
            y = np.array([t for p, t in evs if p["segments"]["channel"] == g])
            yp = np.array(
                [p["prediction"]["label"] for p, _ in evs if p["segments"]["channel"] == g]
            )
            tn, fp, fn, tp = confusion_matrix(y, yp, labels=[0, 1]).ravel()
            rates[g] = {
                "positive_rate": (tp + fp) / len(y),
                "tpr": tp / (tp + fn),
                "fpr": fp / (fp + tn),
                "precision": tp / (tp + fp),
            }
            for name, v in rates[g].items():
                assert m[f"fairness.channel={g}.{name}"] == pytest.approx(v, abs=1e-12), (
                    ws,
                    g,
                    name,
                )
            assert c[f"fairness.channel={g}.tpr"] == len(y)
        pr = [r["positive_rate"] for r in rates.values()]
        tpr, fpr = [r["tpr"] for r in rates.values()], [r["fpr"] for r in rates.values()]
        assert m["fairness.channel.demographic_parity_difference"] == pytest.approx(
            max(pr) - min(pr), abs=1e-12
        )
        assert m["fairness.channel.demographic_parity_ratio"] == pytest.approx(
            min(pr) / max(pr), abs=1e-12
        )
        assert m["fairness.channel.equalized_odds_difference"] == pytest.approx(
            max(max(tpr) - min(tpr), max(fpr) - min(fpr)), abs=1e-12
        )
        assert c["fairness.channel.demographic_parity_difference"] == len(evs)
    # Segments and the other models carry no fairness metrics.
    assert not any(
        k.startswith("fairness.")
        for x in out.metrics
        if x["segment"] or x["model_id"] != "fraud"
        for k in x["metrics"]
    )


def test_comparisons_match_the_two_proportion_interval() -> None:
    preds, labels = generate(12_000, seed=7, rate=RATE, start_ts=T0, worse_challenger=0.3)
    out, _ = run_pipeline(preds, labels, models(), None)
    rows = joined(preds, labels, "fraud")
    fraud = [c for c in out.comparisons if c["model_id"] == "fraud"]
    assert len(fraud) == 5 and {c["challenger_version"] for c in fraud} == {"v2"}
    z = norm.ppf(0.975)
    for cmp in fraud:
        assert cmp["champion_version"] == "v1" and cmp["mode"] == "ab"
        # revision = the two windows' revisions (partials merged - 1 each), summed
        revs = {
            x["model_version"]: x["revision"]
            for x in out.metrics
            if x["model_id"] == "fraud" and x["segment"] == "" and x["window_start"] == cmp["window_start"]
        }
        assert cmp["revision"] == revs["v1"] + revs["v2"]
        acc = {}
        for v in ("v1", "v2"):
            ok = [
                p["prediction"]["label"] == y
                for p, y in rows
                if p["model_version"] == v and p["timestamp"] // W * W == cmp["window_start"]
            ]
            acc[v] = (float(np.mean(ok)), len(ok))
        (pa, na), (pb, nb) = acc["v1"], acc["v2"]
        c = next(x for x in cmp["comparisons"] if x["metric"] == "accuracy")
        se = np.sqrt(pa * (1 - pa) / na + pb * (1 - pb) / nb)
        assert (
            c["champion"],
            c["challenger"],
            c["n_champion"],
            c["n_challenger"],
        ) == pytest.approx((pa, pb, na, nb))
        assert c["ci_low"] == pytest.approx(pb - pa - z * se, abs=1e-9)
        assert c["ci_high"] == pytest.approx(pb - pa + z * se, abs=1e-9)
        assert c["p_value"] == pytest.approx(2 * norm.sf(abs(pb - pa) / se), rel=1e-6)
        assert c["verdict"] == ("worse" if nb >= 80 else "insufficient_data")
    # eta (regression) is compared on MAE; intent has no champion.
    assert {c["model_id"] for c in out.comparisons} == {"fraud", "eta"}
    assert all(
        [x["metric"] for x in c["comparisons"]] == ["mae"]
        for c in out.comparisons
        if c["model_id"] == "eta"
    )


def test_worse_challenger_alerts_after_consecutive_windows() -> None:
    preds, labels = generate(12_000, seed=7, rate=RATE, start_ts=T0, worse_challenger=0.3)
    out, _ = run_pipeline(preds, labels, models(), None)
    alerts = kinds(out, "fairness", "challenger")
    assert [
        (a["kind"], a["rule"], a["metric"], a["model_version"], a["status"]) for a in alerts
    ] == [("challenger", "challenger_worse", "accuracy", "v2", "firing")]
    a = alerts[0]
    assert a["window_start"] == T0 + W  # the second window in a row with the verdict "worse"
    assert a["evidence"]["champion_version"] == "v1" and a["evidence"]["verdict"] == "worse"
    assert (
        a["value"] < -0.1
        and a["evidence"]["ci_high"] < 0
        and "worse in 2 windows in a row" in a["message"]
    )
    out1, _ = run_pipeline(preds, labels, models(consecutive_windows=1), None)
    assert [a["window_start"] for a in kinds(out1, "challenger")] == [T0]


def test_group_degradation_raises_fairness_naming_the_group() -> None:
    preds, labels = generate(
        12_000, seed=7, rate=RATE, start_ts=T0, group_degradation=0.3, data_issues_at=120.0
    )
    out, _ = run_pipeline(preds, labels, models(), None)
    alerts = kinds(out, "fairness", "challenger")
    assert [
        (a["kind"], a["rule"], a["metric"], a["model_version"], a["status"]) for a in alerts
    ] == [
        (
            "fairness",
            "equalized_odds_difference",
            "fairness.channel.equalized_odds_difference",
            "v1",
            "firing",
        )
    ]
    a = alerts[0]
    assert a["window_start"] == T0 + 120.0 and a["segment"] == "" and a["severity"] == "warning"
    assert a["evidence"]["worst_group"] == "app" and a["evidence"]["protected"] == "channel"
    assert a["value"] > 0.2 and a["threshold"] == 0.2
    assert set(a["evidence"]["groups"]) == {"app", "pos", "web"}
    assert a["evidence"]["groups"]["app"]["tpr"] < a["evidence"]["groups"]["web"]["tpr"] - 0.2
    # Before the injection the disparity is small; demographic parity never moves (the model's
    # decisions are unchanged, only the truth of one group).
    v1 = whole(out, "fraud", "v1")
    assert v1[T0]["metrics"]["fairness.channel.equalized_odds_difference"] < 0.2
    assert all(
        w["metrics"]["fairness.channel.demographic_parity_difference"] < 0.15 for w in v1.values()
    )


def test_fairness_and_comparisons_survive_restarts() -> None:
    preds, labels = generate(
        6000, seed=5, rate=RATE, start_ts=T0, group_degradation=0.3, worse_challenger=0.3
    )
    ref_out, _ = run_pipeline(preds, labels, models(), None)
    out, _ = run_pipeline(preds, labels, models(), None, restart_every=3)
    a, b = whole(ref_out, "fraud", "v1"), whole(out, "fraud", "v1")
    assert a.keys() == b.keys()
    for ws in a:
        fair = {k: v for k, v in a[ws]["metrics"].items() if k.startswith("fairness.")}
        assert fair and fair == {
            k: v for k, v in b[ws]["metrics"].items() if k.startswith("fairness.")
        }
    assert [c["comparisons"] for c in ref_out.comparisons] == [
        c["comparisons"] for c in out.comparisons
    ]


def test_fairness_metric_names() -> None:
    r = GroupRates()
    r.update_many(["a,b", "a,b", "c"], [1, 0, 1], [1, 1, 1])
    m, _ = fairness_metrics("plan", r)
    # A group is named like a segment string: "," and "=" are percent-encoded.
    assert m["fairness.plan=a%2Cb.precision"] == 0.5 and m["fairness.plan=c.tpr"] == 1.0
    assert m["fairness.plan.demographic_parity_difference"] == 0.0


# ---- first hours as the reference ------------------------------------------------------------


def test_first_hours_reference_is_built_from_the_span_and_then_used() -> None:
    cfg = parse_models_config(
        {
            "models": {
                "fraud": {
                    "task": "binary",
                    "data_drift": {
                        "baseline": "first_hours",
                        "hours": 2 * W / 3600,
                        "min_samples": 300,
                    },
                }
            }
        }
    )
    preds, labels = generate(12_000, seed=7, rate=RATE, start_ts=T0, covariate_drift_at=180.0)
    out, partials = run_pipeline(preds, labels, cfg, None)
    assert [r.model_id for r in out.references] == ["fraud"]
    ref = out.references[0]
    span = [p for p in preds if p["model_id"] == "fraud" and p["timestamp"] < T0 + 2 * W]
    assert ref.n_events == len(span) and not ref.infer
    direct = Profile.from_records(span, model_id="fraud")
    assert ref.features.keys() == direct.features.keys()
    assert ref.features["country"].counts == direct.features["country"].counts
    amount = ref.features["amount"]
    assert amount.edges is not None and amount.hist.sum() == len(span)
    # No window is compared while the reference is being built: no drift metrics, no alert.
    assert not any(k.startswith("feature_") for m in out.metrics for k in m["metrics"])
    # The partials carried unbinned profiles, and a merger restarted from its state mid-way builds the same.
    merger = WindowMerger(cfg, window_seconds=W)
    half = MergeOutput()
    for msg in partials[: len(partials) // 2]:
        merger.on_partial(orjson.loads(orjson.dumps(msg)), 100.0, half)
    restarted = WindowMerger(cfg, window_seconds=W)
    restarted.builders = {
        m: ReferenceBuilder.from_state(orjson.loads(orjson.dumps(b.to_state())))
        for m, b in merger.builders.items()
    }
    restarted.windows = merger.windows
    rest = MergeOutput()
    for msg in partials[len(partials) // 2 :]:
        restarted.on_partial(orjson.loads(orjson.dumps(msg)), 100.0, rest)
    restarted.tick(101.0, rest)
    assert [r.to_state()["features"] for r in rest.references] == [ref.to_state()["features"]]
    # Once saved (version 1), later windows compare against it: the covariate drift is caught.
    ref.version = 1
    later = [p for p in preds if p["timestamp"] >= T0 + 2 * W]
    out2, _ = run_pipeline(
        later, [x for x in labels if x["timestamp"] >= T0 + 2 * W], cfg, {"fraud": ref}
    )
    assert out2.references == []
    psi = {
        ws - T0: m["metrics"]["feature_psi.amount"] for ws, m in whole(out2, "fraud", "v1").items()
    }
    assert psi[120.0] < 0.1 and psi[180.0] > 0.25
    drift = [a for a in out2.alerts
             if a["kind"] == "data_drift" and a["model_id"] == "fraud" and a["model_version"] == "v1"]
    # one incident per drifted feature, all from the first window after the shift, amount among them
    assert {a["window_start"] - T0 for a in drift} == {180.0}
    assert len({a["feature"] for a in drift}) == len(drift) and "amount" in {a["feature"] for a in drift}


# ---- settings, simulator, report --------------------------------------------------------------


def test_models_file_settings() -> None:
    cfg = parse_models_config(
        {
            "models": {
                "m": {
                    "task": "binary",
                    "fairness": {"protected": ["gender", "age_band"]},
                    "champion": {
                        "version": "v3",
                        "challengers": ["v4"],
                        "mode": "shadow",
                        "alpha": 0.01,
                    },
                    "data_drift": {"baseline": "first_hours", "hours": 6, "psi_drift": 0.3},
                }
            }
        }
    ).for_model("m")
    assert cfg is not None and cfg.fairness is not None and cfg.champion is not None
    assert cfg.fairness.min_group_events == 300 and cfg.fairness.severity == "warning"
    assert cfg.fairness.thresholds == {
        "demographic_parity_difference": 0.1,
        "equalized_odds_difference": 0.1,
    }
    assert cfg.champion.is_challenger("v4") and not cfg.champion.is_challenger("v5")
    assert cfg.champion.metrics_for("binary") == ("accuracy", "precision", "recall")
    assert cfg.champion.consecutive_windows == 2 and cfg.champion.min_n == 100
    assert cfg.first_hours() == 6.0 and cfg.baseline() == "first_hours"
    assert cfg.drift_config().default.psi_drift == 0.3
    short = parse_models_config(
        {"models": {"m": {"champion": "v1", "data_drift": {"baseline": "first_hours"}}}}
    )
    m = short.for_model("m")
    assert (
        m is not None
        and m.champion is not None
        and m.champion.version == "v1"
        and m.first_hours() == 24.0
    )
    for bad, where in (
        ({"task": "regression", "fairness": {"protected": ["g"]}}, "models.m.fairness"),
        ({"fairness": {"protected": []}}, "models.m.fairness.protected"),
        (
            {"fairness": {"protected": ["g"], "thresholds": {"parity": 0.1}}},
            "models.m.fairness.thresholds.parity",
        ),
        ({"champion": {"version": "v1", "alpha": 2}}, "models.m.champion.alpha"),
        ({"champion": {"version": "v1", "mode": "canary"}}, "models.m.champion.mode"),
        (
            {"task": "regression", "champion": {"version": "v1", "metrics": ["accuracy"]}},
            "models.m.champion.metrics",
        ),
        ({"data_drift": {"baseline": "latest", "hours": 2}}, "models.m.data_drift.hours"),
        ({"data_drift": {"baseline": "first_hours", "hours": 0}}, "models.m.data_drift.hours"),
    ):
        with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
            parse_models_config({"models": {"m": bad}})


def test_simulator_injections_touch_only_their_target() -> None:
    base, base_labels = generate(4000, seed=3, rate=RATE, start_ts=T0)
    deg, deg_labels = generate(
        4000, seed=3, rate=RATE, start_ts=T0, group_degradation=0.5, data_issues_at=50.0
    )
    chal, chal_labels = generate(4000, seed=3, rate=RATE, start_ts=T0, worse_challenger=0.5)
    assert base == deg and base_labels != deg_labels
    bl = {x["prediction_id"]: x for x in base_labels}
    changed = [x for x in deg_labels if x != bl[x["prediction_id"]]]
    by_id = {p["prediction_id"]: p for p in base}
    assert changed and all(
        by_id[x["prediction_id"]]["segments"]["channel"] == "app"
        and by_id[x["prediction_id"]]["model_id"] == "fraud"
        and by_id[x["prediction_id"]]["timestamp"] >= T0 + 50.0
        for x in changed
    )
    app = [
        x
        for x in deg_labels
        if by_id[x["prediction_id"]]["segments"].get("channel") == "app"
        and by_id[x["prediction_id"]]["model_id"] == "fraud"
        and by_id[x["prediction_id"]]["timestamp"] >= T0 + 50
    ]
    assert len(changed) / len(app) == pytest.approx(
        0.5 * 0.9, abs=0.1
    )  # flipped to disagree, unless it already did
    assert chal_labels == base_labels
    diff = [(a, b) for a, b in zip(base, chal, strict=True) if a != b]
    assert diff and all(a["model_id"] == "fraud" and a["model_version"] == "v2" for a, _ in diff)
    assert all(b["prediction"]["label"] == 1 - a["prediction"]["label"] for a, b in diff)
    n_v2 = sum(p["model_id"] == "fraud" and p["model_version"] == "v2" for p in base)
    assert len(diff) / n_v2 == pytest.approx(0.5, abs=0.1)
    with pytest.raises(ValueError, match="degraded_group"):
        FleetSimulator(1, 10.0, 1.0, None, degraded_group="app")


def test_report_sections() -> None:
    fairness = [
        {"model_id": "fraud", "model_version": "v1", "metric": m, "t": T0 + i * 60, "value": v}
        for i in range(3)
        for m, v in (
            ("fairness.channel.equalized_odds_difference", 0.05 + 0.1 * i),
            ("fairness.channel=app.tpr", 0.8 - 0.1 * i),
            ("fairness.channel=web.tpr", 0.8),
        )
    ]
    comparisons = [
        {
            "model_id": "fraud",
            "champion_version": "v1",
            "challenger_version": "v2",
            "mode": "ab",
            "metric": "accuracy",
            "t": T0 + i * 60,
            "champion": 0.9,
            "challenger": 0.6,
            "difference": -0.3,
            "ci_low": -0.4,
            "ci_high": -0.2,
            "p_value": 1e-6,
            "n_champion": 900,
            "n_challenger": 100,
            "verdict": "worse",
        }
        for i in range(3)
    ]
    html = render_report(
        metrics=[],
        alerts=[],
        drift_events=[],
        histograms=[],
        fairness=fairness,
        comparisons=comparisons,
        generated_at=T0 + 600,
    )
    assert "<h2>Fairness</h2>" in html and "<h2>Champion / challenger</h2>" in html
    assert (
        'aria-label="fraud v1: fairness across channel"' in html
        and 'aria-label="fraud: v2 minus v1"' in html
    )
    assert html.count('<tr class="group">') == 2 and html.count('<tr class="cmp">') == 3
    assert '<span class="pill firing">worse</span>' in html and "-0.300 [-0.400, -0.200]" in html
    plain = render_report(metrics=[], alerts=[], drift_events=[], histograms=[], generated_at=T0)
    assert "Fairness" not in plain and "Champion" not in plain


# ---- the worker ---------------------------------------------------------------------------

WORKER_MODELS = """\
defaults:
  label_horizon_s: 3600
  early_label_wait_s: 3600
models:
  fraud:
    task: binary
    fairness: {protected: [channel], min_group_events: 40, thresholds: {equalized_odds_difference: 0.2}}
    champion: {version: v1, min_n: 50}
    data_drift: {baseline: first_hours, hours: %(hours)s, min_samples: 200}
  intent: {task: multiclass}
  eta: {task: regression}
"""


@pytest.mark.integration
def test_worker_fairness_challenger_and_first_hours_reference(
    bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """A clean first part (which also becomes fraud's reference), then a part with fraud v2
    worse than v1 and channel=app degraded: ``fairness`` and ``challenger`` alerts only on the
    second part, ``comparisons`` says ``worse`` there, and windows compare with the saved reference."""
    from worker_harness import Worker

    from driftline.streams.simulate import run_simulation

    clean_s = 40.0
    config = tmp_path / "models.yaml"
    config.write_text(WORKER_MODELS % {"hours": (clean_s - 10.0) / 3600})
    worker = Worker(bootstrap, topic_prefix, tmp_path, config=str(config)).start()
    try:
        start_ts = float(
            int(time.time()) // 10 * 10 - 200
        )  # in the past: windows close by event time
        stats = run_simulation(
            bootstrap,
            topic_prefix,
            200.0,
            clean_s,
            seed=5,
            realtime=False,
            progress=False,
            start_ts=start_ts,
        )
        assert stats["dropped"] == 0
        latest = tmp_path / "state" / "profiles" / "fraud" / "latest.json"
        worker.wait_for(latest.exists, 60, "the first-hours reference on disk")
        time.sleep(6)  # the other workers' refresh period (5 s); this one installs it at once
        stats = run_simulation(
            bootstrap,
            topic_prefix,
            200.0,
            40.0,
            seed=6,
            realtime=False,
            progress=False,
            start_ts=start_ts + clean_s,
            group_degradation=0.4,
            worse_challenger=0.4,
        )
        assert stats["dropped"] == 0

        def alerts() -> list[dict[str, Any]]:
            return worker.query(
                "SELECT kind, rule, metric, model_version, status, toUnixTimestamp(window_start) AS ws, "
                "evidence FROM driftline.alerts FINAL WHERE kind IN ('fairness', 'challenger')"
            )

        worker.wait_for(
            lambda: {a["kind"] for a in alerts()} >= {"fairness", "challenger"},
            60,
            "fairness and challenger alerts",
        )
        worker.wait_idle(30)
        got = alerts()
        assert all(float(a["ws"]) >= start_ts + clean_s for a in got), (
            got
        )  # silent on the clean part
        fair = [a for a in got if a["kind"] == "fairness"]
        assert {(a["rule"], a["metric"], a["model_version"], a["status"]) for a in fair} == {
            (
                "equalized_odds_difference",
                "fairness.channel.equalized_odds_difference",
                "v1",
                "firing",
            )
        }
        assert orjson.loads(fair[0]["evidence"])["worst_group"] == "app"
        chal = [a for a in got if a["kind"] == "challenger"]
        assert {(a["rule"], a["metric"], a["model_version"], a["status"]) for a in chal} == {
            ("challenger_worse", "accuracy", "v2", "firing")
        }
        verdicts = worker.query(
            "SELECT toUnixTimestamp(window_start) AS ws, verdict, difference, revision "
            "FROM driftline.comparisons FINAL WHERE model_id = 'fraud' AND metric = 'accuracy' "
            "ORDER BY ws"
        )
        clean = [r for r in verdicts if float(r["ws"]) < start_ts + clean_s]
        bad = [r for r in verdicts if float(r["ws"]) >= start_ts + clean_s]
        assert len(clean) >= 3 and len(bad) >= 3
        assert not any(
            a["verdict"] == b["verdict"] == "worse" for a, b in zip(clean, clean[1:], strict=False)
        )
        assert sum(r["verdict"] == "worse" for r in bad) >= len(bad) - 1
        assert all(float(r["difference"]) < -0.15 for r in bad)
        # The reference: saved as version 1 where ``baseline create`` saves, and used after the span.
        assert orjson.loads(latest.read_bytes())["version"] == 1
        psi = worker.query(
            "SELECT toUnixTimestamp(window_start) AS ws FROM driftline.metrics_latest "
            "WHERE model_id = 'fraud' AND segment = '' AND metric = 'feature_psi.amount'"
        )
        assert psi and all(float(r["ws"]) >= start_ts + clean_s for r in psi)
    finally:
        worker.stop()
