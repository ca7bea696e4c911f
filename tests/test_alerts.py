"""Alert rules and lifecycle of ``driftline.streams.alerts.AlertEngine`` (pure logic)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from driftline.schemas.messages import alert_id, incident_id
from driftline.streams.alerts import AlertEngine
from driftline.streams.models import ModelConfig, RelativeDropRule, ThresholdRule

T0 = 1_700_000_040.0
W = 60.0
# Keeps the volume rule out of the other tests.
QUIET: dict[str, Any] = {"volume_drop": None, "volume_spike": None}


def win(
    i: int,
    metrics: dict[str, float],
    counts: dict[str, int] | None = None,
    *,
    segment: str = "",
    revision: int = 0,
    version: str = "v1",
) -> dict[str, Any]:
    ws = T0 + i * W
    return {
        "model_id": "m",
        "model_version": version,
        "segment": segment,
        "window_start": ws,
        "window_end": ws + W,
        "revision": revision,
        "metrics": metrics,
        "counts": counts if counts is not None else {k: 100 for k in metrics},
    }


def statuses(alerts: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(a["status"], a["rule"]) for a in alerts]


def test_threshold_fires_once_dedups_resolves_and_cools_down() -> None:
    cfg = ModelConfig(
        thresholds=(ThresholdRule("accuracy", min=0.9, min_count=50),), cooldown_s=300.0, **QUIET
    )
    eng = AlertEngine("m")
    fired = eng.on_window(cfg, win(0, {"accuracy": 0.5}), emitted_at=T0 + 61)
    assert statuses(fired) == [("firing", "accuracy_min")]
    a = fired[0]
    assert (a["kind"], a["severity"], a["metric"], a["value"], a["threshold"]) == (
        "threshold",
        "critical",
        "accuracy",
        0.5,
        0.9,
    )
    assert a["detected_at"] == T0 + W and a["evidence"]["events"] == 100
    assert a["alert_id"] == alert_id("m", "v1", "", "accuracy_min", "accuracy", T0 + W, "firing")
    # Still bad: a revision of the same window and the next window raise nothing.
    assert eng.on_window(cfg, win(0, {"accuracy": 0.6}, revision=1), emitted_at=T0 + 70) == []
    assert eng.on_window(cfg, win(1, {"accuracy": 0.4}), emitted_at=T0 + 121) == []
    # Too few events behind the value: neither fires nor resolves.
    assert (
        eng.on_window(cfg, win(2, {"accuracy": 0.99}, {"accuracy": 10}), emitted_at=T0 + 181) == []
    )
    resolved = eng.on_window(cfg, win(3, {"accuracy": 0.95}), emitted_at=T0 + 241)
    assert statuses(resolved) == [("resolved", "accuracy_min")]
    assert (
        resolved[0]["incident_id"] == a["incident_id"] and resolved[0]["alert_id"] != a["alert_id"]
    )
    assert resolved[0]["evidence"]["incident_id"] == a["incident_id"]
    # Resolved once.
    assert eng.on_window(cfg, win(4, {"accuracy": 0.95}), emitted_at=T0 + 301) == []
    # Cooldown: 300 s of event time after the resolving window's end (T0 + 240).
    assert eng.on_window(cfg, win(5, {"accuracy": 0.5}), emitted_at=T0 + 361) == []  # ends T0 + 360
    assert eng.on_window(cfg, win(7, {"accuracy": 0.5}), emitted_at=T0 + 481) == []  # ends T0 + 480
    again = eng.on_window(cfg, win(8, {"accuracy": 0.5}), emitted_at=T0 + 541)  # ends T0 + 540
    assert statuses(again) == [("firing", "accuracy_min")]
    assert again[0]["incident_id"] != a["incident_id"]


def test_threshold_max_and_segments_are_separate_incidents() -> None:
    cfg = ModelConfig(
        thresholds=(ThresholdRule("log_loss", max=0.7, min_count=1, severity="warning"),), **QUIET
    )
    eng = AlertEngine("m")
    out = eng.on_window(cfg, win(0, {"log_loss": 0.9}), emitted_at=0)
    out += eng.on_window(cfg, win(0, {"log_loss": 0.9}, segment="country=DE"), emitted_at=0)
    out += eng.on_window(cfg, win(0, {"log_loss": 0.5}, segment="country=FR"), emitted_at=0)
    assert [(a["status"], a["rule"], a["segment"], a["severity"]) for a in out] == [
        ("firing", "log_loss_max", "", "warning"),
        ("firing", "log_loss_max", "country=DE", "warning"),
    ]
    assert out[0]["incident_id"] != out[1]["incident_id"]
    # An older window that is fine does not resolve a newer incident.
    assert eng.on_window(cfg, win(-1, {"log_loss": 0.1}), emitted_at=0) == []


def test_relative_drop() -> None:
    rule = RelativeDropRule("recall", drop=0.1, baseline_windows=3, min_count=10)
    cfg = ModelConfig(relative_drops=(rule,), **QUIET)
    eng = AlertEngine("m")
    for i in range(3):
        assert eng.on_window(cfg, win(i, {"recall": 0.8}), emitted_at=0) == []
    fired = eng.on_window(cfg, win(3, {"recall": 0.7}), emitted_at=0)  # 0.7 < 0.8 * 0.9
    assert statuses(fired) == [("firing", "recall_drop")]
    assert fired[0]["evidence"]["baseline"] == pytest.approx(0.8)
    assert fired[0]["threshold"] == pytest.approx(0.8 * 0.9)
    assert fired[0]["severity"] == "warning"
    # Re-emitting the same window compares with the windows before it only.
    assert eng.on_window(cfg, win(3, {"recall": 0.71}, revision=1), emitted_at=0) == []
    # Baseline now mean(0.8, 0.8, 0.71) = 0.77; 0.75 >= 0.693: resolved.
    assert statuses(eng.on_window(cfg, win(4, {"recall": 0.75}), emitted_at=0)) == [
        ("resolved", "recall_drop")
    ]


def test_latency_slo() -> None:
    cfg = ModelConfig(latency_p99_slo_ms=250.0, **QUIET)
    eng = AlertEngine("m")
    fired = eng.on_window(cfg, win(0, {"latency_p99": 300.0}), emitted_at=0)
    assert [(a["status"], a["kind"], a["rule"], a["threshold"]) for a in fired] == [
        ("firing", "latency", "latency_p99_max", 250.0)
    ]
    assert eng.on_window(cfg, win(1, {"latency_p99": 400.0}), emitted_at=0) == []
    assert statuses(eng.on_window(cfg, win(2, {"latency_p99": 200.0}), emitted_at=0)) == [
        ("resolved", "latency_p99_max")
    ]
    no_slo = ModelConfig(**QUIET)
    assert eng.on_window(no_slo, win(3, {"latency_p99": 900.0}), emitted_at=0) == []


def test_volume_drop_and_spike() -> None:
    cfg = ModelConfig()  # volume_drop 0.5, volume_spike 3.0, min count 100
    eng = AlertEngine("m")
    for i in range(3):
        assert eng.on_window(cfg, win(i, {"prediction_count": 1000.0}), emitted_at=0) == []
    # Segments and re-emissions do not count.
    assert eng.on_window(cfg, win(3, {"prediction_count": 1.0}, segment="a=b"), emitted_at=0) == []
    assert eng.on_window(cfg, win(2, {"prediction_count": 1.0}, revision=1), emitted_at=0, judge_volume=False) == []
    drop = eng.on_window(cfg, win(3, {"prediction_count": 400.0}), emitted_at=0)
    assert [(a["status"], a["kind"], a["rule"]) for a in drop] == [
        ("firing", "volume", "volume_drop")
    ]
    assert drop[0]["evidence"]["baseline"] == 1000.0
    # Baseline (3 x 1000 + 400) / 4 = 850: 1000 is normal again.
    assert statuses(eng.on_window(cfg, win(4, {"prediction_count": 1000.0}), emitted_at=0)) == [
        ("resolved", "volume_drop")
    ]
    spike = eng.on_window(cfg, win(5, {"prediction_count": 5000.0}), emitted_at=0)
    assert statuses(spike) == [("firing", "volume_spike")]
    # Too little traffic for a baseline: no volume alerts.
    small = AlertEngine("m")
    for i in range(4):
        assert (
            small.on_window(cfg, win(i, {"prediction_count": 50.0 if i < 3 else 1.0}), emitted_at=0)
            == []
        )


def test_label_coverage_judged_once_by_the_merge_stage() -> None:
    """Coverage is not a window rule (labels come late): on_coverage judges it when due."""
    cfg = ModelConfig(label_coverage_min=0.5, coverage_after_s=600.0, **QUIET)
    eng = AlertEngine("m")
    w0 = win(0, {"label_coverage": 0.2})
    assert eng.on_window(cfg, w0, emitted_at=T0 + W + 600) == []
    fired = eng.on_coverage(cfg, w0, emitted_at=T0 + W + 600)
    assert [(a["status"], a["kind"], a["rule"]) for a in fired] == [
        ("firing", "label_coverage", "label_coverage_min")
    ]
    assert eng.on_coverage(cfg, w0, emitted_at=T0 + W + 601) == []  # deduplicated
    assert statuses(
        eng.on_coverage(cfg, win(1, {"label_coverage": 0.9}), emitted_at=T0 + 2 * W + 600)
    ) == [("resolved", "label_coverage_min")]


def test_merger_judges_coverage_of_windows_never_reemitted() -> None:
    from driftline.streams.merge import MergeOutput, WindowMerger
    from driftline.streams.models import ModelsConfig
    from driftline.streams.windows import WindowPartial

    cfg = ModelConfig(label_coverage_min=0.5, coverage_after_s=30.0, **QUIET)
    merger = WindowMerger(ModelsConfig(models={"m": cfg}), window_seconds=W, merge_wait=0.0)
    part = WindowPartial("binary")
    import numpy as np

    part.add_predictions(np.full(10, np.nan), np.full(10, 0.5))
    msg = {"type": "closed", "pid": "0:1", "partition": 0, "model_id": "m", "model_version": "v1",
           "segment": "", "window_start": T0, "window_end": T0 + W, "state": part.to_state()}
    out = MergeOutput()
    merger.on_partial(msg, T0 + W, out)
    merger.tick(T0 + W, out)
    assert len(out.metrics) == 1 and out.alerts == []
    out = MergeOutput()
    merger.tick(T0 + W + 30, out)  # no new partial, but coverage is now due
    assert [(a["status"], a["rule"]) for a in out.alerts] == [("firing", "label_coverage_min")]
    out = MergeOutput()
    merger.tick(T0 + W + 60, out)
    assert out.alerts == []


def test_threshold_with_min_and_max_names_the_bound_breached() -> None:
    from driftline.streams.models import ThresholdRule

    cfg = ModelConfig(thresholds=(ThresholdRule("mae", min=1.0, max=5.0, min_count=1),), **QUIET)
    eng = AlertEngine("m")
    fired = eng.on_window(cfg, win(0, {"mae": 7.0}), emitted_at=T0 + W)
    assert [a["rule"] for a in fired] == ["mae_max"]
    fired = eng.on_window(cfg, win(1, {"mae": 0.5}), emitted_at=T0 + 2 * W)
    assert sorted((a["status"], a["rule"]) for a in fired) == [("firing", "mae_min"), ("resolved", "mae_max")]


def alarm(
    detected_at: float,
    *,
    detector: str = "adwin",
    kind: str = "drift",
    severity: str | None = "critical",
    version: str = "v1",
    position: int = 118,
) -> dict[str, Any]:
    ws = detected_at // W * W
    ev = {
        "event_id": f"e{position}",
        "model_id": "m",
        "model_version": version,
        "partition": 2,
        "detector": detector,
        "kind": kind,
        "direction": "up" if detector == "adwin" else None,
        "position": position,
        "params": {},
        "estimate_before": 0.1 if detector == "adwin" else None,
        "estimate_after": 0.3 if detector == "adwin" else None,
        "window_start": ws,
        "window_end": ws + W,
        "detected_at": detected_at,
        "emitted_at": 0.0,
    }
    return {
        "type": "alarm",
        "pid": f"2:{position}",
        "model_id": "m",
        "drift_event": ev,
        "severity": severity,
        "reason": "ADWIN: error rate rose",
    }


def test_drift_alarm_fires_concept_drift_and_resolves_after_quiet_period() -> None:
    cfg = ModelConfig(drift_resolve_s=600.0, cooldown_s=300.0, **QUIET)
    eng = AlertEngine("m")
    assert eng.on_alarm(cfg, alarm(T0 + 5, severity=None), emitted_at=1.0) == []  # recorded only
    fired = eng.on_alarm(cfg, alarm(T0 + 10), emitted_at=2.0)
    assert [(a["status"], a["kind"], a["rule"], a["metric"], a["severity"]) for a in fired] == [
        ("firing", "concept_drift", "adwin", "error_rate", "critical")
    ]
    a = fired[0]
    assert a["detected_at"] == T0 + 10 and a["value"] == 0.3 and a["window_start"] == T0
    assert a["evidence"]["drift_event_id"] == "e118" and a["evidence"]["partition"] == 2
    assert "0.100 -> 0.300" in a["message"]
    assert a["alert_id"] == alert_id("m", "v1", "", "adwin", "error_rate", T0 + 10, "firing")
    # Another ADWIN drift extends the incident; another detector is a separate incident.
    assert eng.on_alarm(cfg, alarm(T0 + 100, position=500), emitted_at=3.0) == []
    ddm = eng.on_alarm(cfg, alarm(T0 + 110, detector="ddm", position=600), emitted_at=3.0)
    assert statuses(ddm) == [("firing", "ddm")]
    # Windows: not resolved until a window starts more than 600 s after the last alarm.
    assert eng.on_window(cfg, win(11, {}), emitted_at=4.0) == []  # starts T0 + 660 <= T0 + 700
    # Segments and other versions do not resolve.
    assert eng.on_window(cfg, win(20, {}, segment="a=b"), emitted_at=4.0) == []
    assert eng.on_window(cfg, win(20, {}, version="v2"), emitted_at=4.0) == []  # other version
    # Starts T0 + 720 > T0 + 700 (and > ddm's 710).
    res = eng.on_window(cfg, win(12, {}), emitted_at=5.0)
    assert sorted(statuses(res)) == [("resolved", "adwin"), ("resolved", "ddm")]
    by_rule = {r["rule"]: r for r in res}
    assert by_rule["adwin"]["incident_id"] == a["incident_id"]
    assert by_rule["adwin"]["alert_id"] == alert_id(
        "m", "v1", "", "adwin", "error_rate", T0 + 10, "resolved"
    )
    # Cooldown after the resolve (resolving window ends T0 + 780).
    assert eng.on_alarm(cfg, alarm(T0 + 800, position=900), emitted_at=6.0) == []
    assert statuses(eng.on_alarm(cfg, alarm(T0 + 1100, position=950), emitted_at=7.0)) == [
        ("firing", "adwin")
    ]


def test_warning_alarm_incident_is_upgraded_by_critical() -> None:
    cfg = ModelConfig(**QUIET)
    eng = AlertEngine("m")
    w = eng.on_alarm(
        cfg, alarm(T0 + 10, detector="ddm", kind="warning", severity="warning"), emitted_at=0
    )
    assert [(x["rule"], x["severity"]) for x in w] == [("ddm_warning", "warning")]
    assert statuses(
        eng.on_alarm(cfg, alarm(T0 + 20, detector="ddm", position=200), emitted_at=0)
    ) == [("firing", "ddm")]


def test_an_escalation_to_critical_is_a_transition_of_its_own() -> None:
    """A warning incident the policy raises to critical is posted again, so that routes on
    ``severity="critical"`` (the pager) hear of it: same incident, an alert id of its own."""
    cfg = ModelConfig(drift_resolve_s=600.0, **QUIET)
    eng = AlertEngine("m")
    (w,) = eng.on_alarm(cfg, alarm(T0 + 10, severity="warning"), emitted_at=1.0)
    assert (w["status"], w["severity"], w["rule"]) == ("firing", "warning", "adwin")
    (up,) = eng.on_alarm(cfg, alarm(T0 + 50, position=300, severity="critical"), emitted_at=2.0)
    assert (up["status"], up["severity"], up["rule"], up["detected_at"]) == ("firing", "critical", "adwin", T0 + 50)
    assert up["incident_id"] == w["incident_id"]
    assert up["alert_id"] == alert_id("m", "v1", "", "adwin", "error_rate", T0 + 10, "escalated")
    assert up["alert_id"] not in (w["alert_id"], alert_id("m", "v1", "", "adwin", "error_rate", T0 + 10, "resolved"))
    assert up["message"].startswith("escalated to critical: ADWIN") and up["evidence"]["drift_event_id"] == "e300"
    # Once critical, more alarms of either severity change nothing; the resolve says critical.
    assert eng.on_alarm(cfg, alarm(T0 + 60, position=400, severity="critical"), emitted_at=3.0) == []
    assert eng.on_alarm(cfg, alarm(T0 + 70, position=500, severity="warning"), emitted_at=3.0) == []
    (res,) = eng.on_window(cfg, win(12, {}), emitted_at=4.0)
    assert (res["status"], res["severity"], res["incident_id"]) == ("resolved", "critical", w["incident_id"])


def _scenario(
    eng: AlertEngine, cfg: ModelConfig, steps: list[tuple[str, Any]]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for what, arg in steps:
        if what == "alarm":
            out += eng.on_alarm(cfg, arg, emitted_at=arg["drift_event"]["detected_at"] + 1)
        else:
            out += eng.on_window(cfg, arg, emitted_at=arg["window_end"] + 700)
            out += eng.on_coverage(cfg, arg, emitted_at=arg["window_end"] + 700)
    return out


CFG = ModelConfig(
    thresholds=(ThresholdRule("accuracy", min=0.9, min_count=1),),
    relative_drops=(RelativeDropRule("f1", baseline_windows=4, min_count=1),),
    latency_p99_slo_ms=100.0,
    label_coverage_min=0.5,
)
STEPS: list[tuple[str, Any]] = [
    *[
        (
            "window",
            win(
                i,
                {
                    "accuracy": 0.95,
                    "f1": 0.8,
                    "prediction_count": 1000.0,
                    "latency_p99": 50.0,
                    "label_coverage": 0.9,
                },
            ),
        )
        for i in range(4)
    ],
    ("alarm", alarm(T0 + 250)),
    (
        "window",
        win(
            4,
            {
                "accuracy": 0.5,
                "f1": 0.5,
                "prediction_count": 100.0,
                "latency_p99": 500.0,
                "label_coverage": 0.1,
            },
        ),
    ),
    (
        "window",
        win(
            5,
            {
                "accuracy": 0.96,
                "f1": 0.8,
                "prediction_count": 1000.0,
                "latency_p99": 50.0,
                "label_coverage": 0.9,
            },
        ),
    ),
    ("window", win(20, {"accuracy": 0.96, "f1": 0.8, "prediction_count": 1000.0})),
]


def test_alert_ids_stable_across_replays() -> None:
    first = _scenario(AlertEngine("m"), CFG, STEPS)
    second = _scenario(AlertEngine("m"), CFG, STEPS)
    assert first == second
    rules = statuses(first)
    for rule in (
        "adwin",
        "accuracy_min",
        "f1_drop",
        "latency_p99_max",
        "volume_drop",
        "label_coverage_min",
    ):
        assert ("firing", rule) in rules and ("resolved", rule) in rules, rule
    ids = [x["alert_id"] for x in first]
    assert len(set(ids)) == len(ids)
    for x in first:
        start = x["detected_at"] if x["status"] == "firing" else None
        if start is not None:
            assert x["incident_id"] == incident_id(
                "m", x["model_version"], x["segment"], x["rule"], x["metric"], start
            )


def test_state_round_trip_continues_identically() -> None:
    for cut in range(len(STEPS) + 1):
        eng = AlertEngine("m")
        before = _scenario(eng, CFG, STEPS[:cut])
        restored = AlertEngine.from_state(orjson.loads(orjson.dumps(eng.to_state())))
        assert restored.to_state() == orjson.loads(orjson.dumps(eng.to_state()))
        after = _scenario(restored, CFG, STEPS[cut:])
        assert before + after == _scenario(AlertEngine("m"), CFG, STEPS), cut
