"""CBPE: exact expectations, agreement with sklearn's realised metrics under calibration."""

from __future__ import annotations

import pickle

import numpy as np
import orjson
import pytest
from sklearn import metrics as skm

from driftline.detectors.cbpe import CBPEAccumulator, estimation_error

N = 200_000


def _realised(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": skm.accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred, zero_division=0),
        "recall": skm.recall_score(y, pred, zero_division=0),
        "f1": skm.f1_score(y, pred, zero_division=0),
    }


def _direct(p: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Expected confusion matrix by the definition, one cell at a time."""
    etp = np.sum(np.where(pred == 1, p, 0.0))
    efp = np.sum(np.where(pred == 1, 1 - p, 0.0))
    efn = np.sum(np.where(pred == 0, p, 0.0))
    etn = np.sum(np.where(pred == 0, 1 - p, 0.0))
    return {
        "accuracy": (etp + etn) / p.size,
        "precision": etp / (etp + efp),
        "recall": etp / (etp + efn),
        "f1": 2 * etp / (2 * etp + efp + efn),
        "tp": etp,
        "fp": efp,
        "tn": etn,
        "fn": efn,
    }


@pytest.mark.parametrize(
    ("seed", "a", "b", "threshold"), [(0, 2, 5, 0.5), (1, 1, 1, 0.3), (2, 5, 2, 0.7)]
)
def test_estimate_close_to_realised_on_calibrated_scores(
    seed: int, a: float, b: float, threshold: float
) -> None:
    rng = np.random.default_rng(seed)
    p = rng.beta(a, b, N)
    y = (rng.random(N) < p).astype(int)  # calibrated by construction
    pred = (p >= threshold).astype(int)
    est = CBPEAccumulator(threshold)
    est.update_many(p)
    m = est.metrics()
    err = estimation_error(m, _realised(y, pred))
    assert set(err) == {"accuracy", "precision", "recall", "f1"}
    assert max(abs(e) for e in err.values()) < 0.01, err
    # The accuracy error is within 4 of its own standard errors.
    assert abs(err["accuracy"]) < 4 * m["estimated_accuracy_std"]


def test_estimate_equals_direct_expectation_exactly() -> None:
    rng = np.random.default_rng(3)
    p = rng.random(10_001)
    pred = (rng.random(10_001) < 0.4).astype(int)  # the model's own decisions
    est = CBPEAccumulator()
    est.update_many(p, pred)
    got = est.metrics()
    for k, v in _direct(p, pred).items():
        assert got["estimated_" + k] == pytest.approx(v, rel=1e-12, abs=1e-9), k
    assert got["estimated_accuracy_std"] == pytest.approx(np.sqrt(np.sum(p * (1 - p))) / p.size)


def test_miscalibrated_scores_bias_the_estimate() -> None:
    rng = np.random.default_rng(4)
    p_true = rng.beta(2, 2, N)
    y = (rng.random(N) < p_true).astype(int)
    logit = np.log(p_true / (1 - p_true))
    overconfident = 1 / (1 + np.exp(-3 * logit))  # same ranking, same decisions at 0.5
    pred = (overconfident >= 0.5).astype(int)
    realised = _realised(y, pred)
    good, bad = CBPEAccumulator(), CBPEAccumulator()
    good.update_many(p_true)
    bad.update_many(overconfident)
    assert abs(estimation_error(good.metrics(), realised)["accuracy"]) < 0.01
    # Overconfidence over-estimates accuracy by far more than the tolerance.
    assert estimation_error(bad.metrics(), realised)["accuracy"] > 0.1


def test_concept_drift_is_invisible_to_cbpe() -> None:
    rng = np.random.default_rng(5)
    p = rng.beta(2, 5, N)
    y_drifted = (rng.random(N) < 1 - p).astype(int)  # P(y | x) flipped, scores unchanged
    est = CBPEAccumulator()
    est.update_many(p)
    realised = _realised(y_drifted, (p >= 0.5).astype(int))
    assert estimation_error(est.metrics(), realised)["accuracy"] > 0.3


def test_split_merge_round_trip_and_nan_scores() -> None:
    rng = np.random.default_rng(6)
    p = rng.random(3000)
    p[::100] = np.nan
    whole = CBPEAccumulator(0.4)
    whole.update_many(p)
    total = CBPEAccumulator(0.4)
    for lo, hi in ((0, 1), (1, 1700), (1700, 3000)):
        part = CBPEAccumulator(0.4)
        part.update_many(p[lo:hi])
        part = CBPEAccumulator.from_state(orjson.loads(orjson.dumps(part.to_state())))
        total.merge(pickle.loads(pickle.dumps(part)))
    assert total.n == whole.n == 2970 and total.n_unscored == 30
    assert total.metrics() == pytest.approx(whole.metrics(), rel=1e-12)


def test_empty_and_degenerate() -> None:
    est = CBPEAccumulator()
    assert est.metrics() == {}
    est.update_many(np.array([0.1, 0.2]))  # no predicted positive
    m = est.metrics()
    assert m["estimated_precision"] == 0.0 and m["estimated_accuracy"] == pytest.approx(0.85)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="threshold"):
        CBPEAccumulator(1.5)
    with pytest.raises(ValueError, match="same length"):
        CBPEAccumulator().update_many(np.array([0.5]), np.array([1, 0]))
    with pytest.raises(ValueError, match="merge"):
        CBPEAccumulator(0.5).merge(CBPEAccumulator(0.6))


def test_estimation_error_keys() -> None:
    err = estimation_error(
        {"accuracy": 0.8, "estimated_recall": 0.5, "estimated_accuracy_std": 0.01},
        {"accuracy": 0.7, "recall": 0.6, "accuracy_std": 0.0},
    )
    assert err == pytest.approx({"accuracy": 0.1, "recall": -0.1})
