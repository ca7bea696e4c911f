"""Fleet simulator: determinism, drift, label delay; a short run through the real broker."""

from __future__ import annotations

import io
from collections import defaultdict

import orjson
import pytest

from driftline.schemas.partitioning import partition_for
from driftline.streams.simulate import FleetSimulator, default_models, generate, run_simulation

START = 1.7e9


def _events(seed: int = 1, **kw):  # type: ignore[no-untyped-def]
    kw.setdefault("drift_at", None)
    return list(
        FleetSimulator(
            seed, kw.pop("rate", 500), kw.pop("duration", 40), start_ts=START, **kw
        ).events()
    )


def test_deterministic_for_a_seed() -> None:
    a, b = _events(7, duration=5), _events(7, duration=5)
    assert orjson.dumps(a) == orjson.dumps(b)
    assert orjson.dumps(a) != orjson.dumps(_events(8, duration=5))


def test_shapes_and_order() -> None:
    ev = _events(duration=10)
    preds = [e for k, e in ev if k == "prediction"]
    assert len(preds) == 5000
    assert {p["model_id"] for p in preds} == {"fraud", "intent", "eta"}
    assert len({p["prediction_id"] for p in preds}) == 5000
    assert all(len(p["prediction_id"]) == 36 for p in preds)
    fraud = [p for p in preds if p["model_id"] == "fraud"]
    versions = defaultdict(int)
    for p in fraud:
        versions[p["model_version"]] += 1
        assert p["prediction"]["label"] in (0, 1) and 0 <= p["prediction"]["score"] <= 1
        assert set(p["features"]) == {
            "amount",
            "merchant_category",
            "country",
            "hour",
            "is_new_device",
        }
        assert set(p["segments"]) == {"country", "channel"}
    assert 0.85 < versions["v1"] / len(fraud) < 0.95
    intent = next(p for p in preds if p["model_id"] == "intent")
    assert len(intent["prediction"]["scores"]) == 4
    assert intent["prediction"]["label"] in intent["prediction"]["scores"]
    assert "value" in next(p for p in preds if p["model_id"] == "eta")["prediction"]
    # emission order: non-decreasing arrival time (prediction ts, label arrival ts)
    prediction_end = preds[-1]["timestamp"]
    stamps = [e["timestamp"] for _, e in ev]
    head = [t for t in stamps if t <= prediction_end]
    assert head == sorted(head)


def test_labels_delayed_and_some_missing() -> None:
    ev = _events(duration=20, label_delay=3.0)
    preds = {e["prediction_id"]: e for k, e in ev if k == "prediction"}
    labels = [e for k, e in ev if k == "label"]
    missing = 1 - len(labels) / len(preds)
    assert 0.03 < missing < 0.07
    delays = [lab["timestamp"] - preds[lab["prediction_id"]]["timestamp"] for lab in labels]
    assert min(delays) >= 0
    assert 2.5 < sum(delays) / len(delays) < 3.5


def _error_rates(ev, drift_at: float) -> dict[tuple[str, bool], float]:  # type: ignore[no-untyped-def]
    preds = {e["prediction_id"]: e for k, e in ev if k == "prediction"}
    counts: dict[tuple[str, bool], list[int]] = defaultdict(lambda: [0, 0])
    for k, lab in ev:
        if k != "label" or "label" not in lab:
            continue
        p = preds[lab["prediction_id"]]
        c = counts[(p["model_id"], p["timestamp"] - START >= drift_at)]
        c[0] += p["prediction"]["label"] != lab["label"]
        c[1] += 1
    return {key: e / n for key, (e, n) in counts.items()}


def test_concept_drift_raises_fraud_error_after_drift_only() -> None:
    rates = _error_rates(_events(duration=40, drift_at=20.0), 20.0)
    assert 0.07 < rates[("fraud", False)] < 0.13
    assert rates[("fraud", True)] > 0.30
    # intent does not drift by default
    assert abs(rates[("intent", True)] - rates[("intent", False)]) < 0.03
    # without drift_at nothing changes
    calm = _error_rates(_events(duration=40), 20.0)
    assert abs(calm[("fraud", True)] - calm[("fraud", False)]) < 0.03


def test_covariate_drift_shifts_a_feature() -> None:
    ev = _events(duration=20, covariate_drift_at=10.0)
    amounts = defaultdict(list)
    for k, e in ev:
        if k == "prediction" and e["model_id"] == "fraud":
            amounts[e["timestamp"] - START >= 10.0].append(e["features"]["amount"])
    med = {k: sorted(v)[len(v) // 2] for k, v in amounts.items()}
    assert med[True] > 1.8 * med[False]


def test_generate_bulk() -> None:
    preds, labels = generate(3000, seed=5, drift_at=None)
    assert len(preds) == 3000 and 0.9 < len(labels) / 3000 < 0.99
    assert [lab["timestamp"] for lab in labels] == sorted(lab["timestamp"] for lab in labels)
    assert [m.model_id for m in default_models()] == ["fraud", "intent", "eta"]


@pytest.mark.integration
def test_short_run_through_broker(
    bootstrap: str, topics: dict[str, str], topic_prefix: str, consume
) -> None:
    out = io.StringIO()
    stats = run_simulation(
        bootstrap,
        topic_prefix,
        rate=400,
        duration=1.5,
        seed=3,
        drift_at=None,
        realtime=True,
        progress=True,
        label_delay=0.3,
        out=out,
    )
    assert stats["predictions"] == 600 and stats["undelivered"] == 0
    assert stats["producer"]["delivered_events"] == stats["predictions"] + stats["labels"]
    assert 1.3 <= stats["elapsed_s"] < 10
    assert "\r[simulate]" in out.getvalue() and "predictions 600" in out.getvalue()

    def size(m) -> int:  # type: ignore[no-untyped-def]
        return len(orjson.loads(m.value())["events"])

    msgs = consume(topics["predictions"], 600, weigh=size)
    n = 0
    for m in msgs:
        for e in orjson.loads(m.value())["events"]:
            assert m.partition() == partition_for(e["prediction_id"], 4)
            n += 1
    assert n == 600


def test_events_pass_the_wire_contract_validator() -> None:
    from driftline.schemas import Rejection, validate_label, validate_prediction

    now = START + 3600
    for kind, e in _events(duration=4):
        res = (
            validate_prediction(e, now=now) if kind == "prediction" else validate_label(e, now=now)
        )
        assert not isinstance(res, Rejection), (kind, e, res)
