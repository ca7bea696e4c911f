"""Metric accumulators against scikit-learn, including split/merge and state round trips."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import orjson
import pytest
from sklearn import metrics as skm

from driftline.detectors import (
    BinaryAccumulator,
    MulticlassAccumulator,
    RegressionAccumulator,
    ScoreSummary,
)

TOL = 1e-9


def _round_trip(acc: Any) -> Any:
    acc = type(acc).from_state(orjson.loads(orjson.dumps(acc.to_state())))
    return pickle.loads(pickle.dumps(acc))


def _split_merge(cls: type, parts: list[tuple[Any, ...]], **kw: Any) -> Any:
    """Accumulate each part separately (in 2 batches), round-trip the state, then merge."""
    accs = []
    for part in parts:
        acc = cls(**kw)
        n = len(part[0])
        for lo, hi in ((0, n // 2), (n // 2, n)):
            acc.update_many(*[p[lo:hi] for p in part])
        accs.append(_round_trip(acc))
    total = accs[0]
    for other in accs[1:]:
        total.merge(other)
    return total


def _binary_data(seed: int, n: int = 3000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    score = 1 / (1 + np.exp(-(rng.normal(0, 1.5, n) + 1.2 * y - 0.8)))
    score[:5] = [0.0, 1.0, 1e-17, 1 - 1e-17, 0.5]  # exercise the clipping
    return y, (score >= 0.5).astype(int), score


def _sk_binary(y: np.ndarray, yp: np.ndarray, s: np.ndarray) -> dict[str, float]:
    tn, fp, fn, tp = skm.confusion_matrix(y, yp, labels=[0, 1]).ravel()
    return {
        "accuracy": skm.accuracy_score(y, yp),
        "precision": skm.precision_score(y, yp, zero_division=0),
        "recall": skm.recall_score(y, yp, zero_division=0),
        "f1": skm.f1_score(y, yp, zero_division=0),
        "log_loss": skm.log_loss(y, s, labels=[0, 1]),
        "brier": skm.brier_score_loss(y, s),
        "positive_rate": float(np.mean(yp)),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def _check_binary(m: dict[str, float], y: np.ndarray, yp: np.ndarray, s: np.ndarray) -> None:
    for k, v in _sk_binary(y, yp, s).items():
        assert m[k] == pytest.approx(v, abs=TOL, rel=TOL), k
    assert abs(m["roc_auc"] - skm.roc_auc_score(y, s)) <= 0.005


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_binary_matches_sklearn_single_and_merged(seed: int) -> None:
    y, yp, s = _binary_data(seed)
    acc = BinaryAccumulator()
    acc.update_many(y, yp, s)
    assert acc.n == y.size
    _check_binary(acc.metrics(), y, yp, s)
    cuts = np.sort(np.random.default_rng(seed).choice(np.arange(1, y.size), 2, replace=False))
    parts = list(zip(*(np.split(a, cuts) for a in (y, yp, s)), strict=True))
    merged = _split_merge(BinaryAccumulator, parts)
    assert merged.n == y.size
    _check_binary(merged.metrics(), y, yp, s)
    assert merged.metrics() == pytest.approx(acc.metrics(), abs=TOL, rel=TOL)


@pytest.mark.parametrize(
    "name,draw",
    [
        # Scores squeezed near 0 (rare-event models) and near 1.
        ("near_zero", lambda r, y: r.beta(0.5, 30, y.size) + 0.01 * y),
        ("near_one", lambda r, y: 1 - r.beta(0.5, 30, y.size) * (1.5 - y)),
        # Few distinct values (a calibrated tree ensemble): ties dominate.
        ("ties", lambda r, y: np.round(r.uniform(0, 1, y.size) * 0.6 + 0.3 * y, 1)),
        # Everything inside [0.49, 0.51]: 40 bins of 0.0005.
        ("narrow", lambda r, y: 0.49 + 0.02 * r.beta(2 + 2 * y, 2, y.size)),
    ],
)
def test_auc_worst_cases_within_bound(name: str, draw: Any) -> None:
    rng = np.random.default_rng(11)
    y = (rng.random(20_000) < 0.2).astype(int)
    s = np.clip(draw(rng, y), 0, 1)
    acc = BinaryAccumulator()
    acc.update_many(y, (s >= 0.5).astype(int), s)
    exact = skm.roc_auc_score(y, s)
    auc, bound = acc.roc_auc(), acc.roc_auc_error_bound()
    assert auc is not None and bound is not None
    assert abs(auc - exact) <= bound + 1e-12, (name, auc, exact, bound)
    assert abs(auc - exact) <= 0.005, (name, auc, exact)


def test_binary_undefined_and_zero_division() -> None:
    acc = BinaryAccumulator()
    assert acc.metrics() == {} and acc.n == 0
    acc.update_many(np.array([0, 0, 0]), np.array([0, 0, 0]), None)
    m = acc.metrics()
    # No predicted or actual positives: sklearn zero_division=0 gives 0.0.
    assert m["precision"] == m["recall"] == m["f1"] == 0.0
    assert "roc_auc" not in m and "log_loss" not in m and "brier" not in m
    # A single class with scores: AUC undefined (sklearn raises), omitted.
    acc.update_many(np.array([0, 0]), np.array([0, 1]), np.array([0.2, 0.7]))
    m = acc.metrics()
    assert "roc_auc" not in m and m["log_loss"] == pytest.approx(
        skm.log_loss([0, 0], [0.2, 0.7], labels=[0, 1])
    )
    # NaN score = event without a score: counted in the confusion matrix only.
    acc.update_many(np.array([1]), np.array([1]), np.array([np.nan]))
    assert acc.n == 6 and acc.n_scored == 2


def _mc_data(seed: int, n: int = 2500) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    classes = np.array(["a", "b", "c", "d", "e"])
    yt = classes[rng.choice(5, n, p=[0.4, 0.3, 0.2, 0.09, 0.01])]
    yp = np.where(rng.random(n) < 0.7, yt, classes[rng.choice(4, n)])  # "e" never predicted
    yp[:3] = "z"  # a class only ever predicted
    return yt.tolist(), yp.tolist()


def _check_mc(m: dict[str, float], yt: list[str], yp: list[str]) -> None:
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(yt, yp), abs=TOL)
    for name, fn in (
        ("precision", skm.precision_score),
        ("recall", skm.recall_score),
        ("f1", skm.f1_score),
    ):
        for avg in ("macro", "micro", "weighted"):
            assert m[f"{name}_{avg}"] == pytest.approx(
                fn(yt, yp, average=avg, zero_division=0), abs=TOL
            ), (name, avg)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multiclass_matches_sklearn_single_and_merged(seed: int) -> None:
    yt, yp = _mc_data(seed)
    acc = MulticlassAccumulator()
    acc.update_many(yt, yp)
    assert acc.n == len(yt)
    _check_mc(acc.metrics(), yt, yp)
    # Parts see different class sets in different orders: merge must align them.
    parts = [(yt[:7], yp[:7]), (yt[7:1200], yp[7:1200]), (yt[1200:], yp[1200:])]
    merged = _split_merge(MulticlassAccumulator, parts)
    _check_mc(merged.metrics(), yt, yp)


def test_multiclass_empty() -> None:
    acc = MulticlassAccumulator()
    acc.update_many([], [])
    assert acc.metrics() == {} and acc.n == 0


def _reg_data(seed: int, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = 1e4 + rng.normal(0, 3, n)  # large mean, small variance: catches cancellation
    y[:4] = [0.0, -2.0, 1e-20, 5.0]  # zero target: sklearn's eps denominator
    return y, y + rng.normal(0.5, 2, n)


def _sk_reg(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    mse = skm.mean_squared_error(y, p)
    return {
        "mae": skm.mean_absolute_error(y, p),
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "r2": skm.r2_score(y, p),
        "mape": skm.mean_absolute_percentage_error(y, p),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_regression_matches_sklearn_single_and_merged(seed: int) -> None:
    y, p = _reg_data(seed)
    acc = RegressionAccumulator()
    acc.update_many(y, p)
    merged = _split_merge(
        RegressionAccumulator, [(y[:500], p[:500]), (y[500:501], p[500:501]), (y[501:], p[501:])]
    )
    for m in (acc.metrics(), merged.metrics()):
        for k, v in _sk_reg(y, p).items():
            assert m[k] == pytest.approx(v, rel=TOL, abs=TOL), k


def test_regression_r2_edge_cases_follow_sklearn() -> None:
    acc = RegressionAccumulator()
    acc.update_many(np.array([2.0]), np.array([3.0]))
    assert "r2" not in acc.metrics()  # sklearn: NaN with a warning for n < 2
    for y, p in (([3.0, 3.0, 3.0], [3.0, 3.0, 3.0]), ([3.0, 3.0, 3.0], [3.0, 2.0, 3.0])):
        acc = RegressionAccumulator()
        acc.update_many(np.array(y), np.array(p))
        assert acc.metrics()["r2"] == skm.r2_score(y, p)  # 1.0, then 0.0 (force_finite)
    constant = np.full(1000, 0.1)
    acc = RegressionAccumulator()
    for chunk in np.array_split(constant, 7):
        acc.update_many(chunk, chunk + 1)
    assert acc.metrics()["r2"] == 0.0


def test_score_summary_against_numpy_and_merge() -> None:
    rng = np.random.default_rng(4)
    x = rng.beta(2, 5, 5000)
    parts = np.array_split(x, 3)
    whole = ScoreSummary()
    whole.update_many(np.append(x, np.nan))
    merged = _split_merge(ScoreSummary, [(p,) for p in parts])
    for m in (whole.metrics(), merged.metrics()):
        assert m["count"] == x.size
        assert m["mean"] == pytest.approx(x.mean(), rel=TOL)
        assert m["std"] == pytest.approx(x.std(), rel=TOL)
        assert (m["min"], m["max"]) == (x.min(), x.max())
        for name, q in ScoreSummary.QUANTILES.items():
            exact = np.quantile(x, q, method="lower")
            assert abs(m[name] - exact) <= 0.01 * exact * (1 + 1e-9)
    assert ScoreSummary().metrics() == {}
    empty = _round_trip(ScoreSummary())
    empty.merge(ScoreSummary())
    assert empty.n == 0


def test_auc_known_limit_scores_inside_two_bins() -> None:
    """All scores inside 0.0008: the histogram cannot order them. Documented limit:
    the error stays within roc_auc_error_bound(), which then exceeds 0.005 and says so."""
    rng = np.random.default_rng(11)
    y = (rng.random(20_000) < 0.2).astype(int)
    s = 0.5 + 0.0004 * rng.random(y.size) * (1 + y)
    acc = BinaryAccumulator()
    acc.update_many(y, np.ones_like(y), s)
    err = abs(acc.roc_auc() - skm.roc_auc_score(y, s))  # type: ignore[operator]
    bound = acc.roc_auc_error_bound()
    assert bound is not None and err <= bound and bound > 0.005


def test_multiclass_int_and_str_labels_are_one_class() -> None:
    acc = MulticlassAccumulator()
    acc.update_many([0, 1, 1], ["0", "1", "0"])
    assert acc.classes == ["0", "1"]
    assert acc.metrics()["accuracy"] == pytest.approx(2 / 3)
    again = MulticlassAccumulator.from_state(acc.to_state())
    again.update_many(np.array(["1"]), np.array([1]))
    assert again.n == 4 and again.classes == ["0", "1"]


@pytest.mark.parametrize("n", [0, 30, 5000])
def test_binary_state_round_trips_in_every_histogram_format(n: int) -> None:
    """Dense and sparse histogram states, and the ``[[bin, count], ...]`` pairs of states
    written before, load into the same accumulator."""
    rng = np.random.default_rng(n)
    acc = BinaryAccumulator()
    if n:
        y = (rng.random(n) < 0.3).astype(np.int64)
        acc.update_many(y, (rng.random(n) < 0.5).astype(np.int64), rng.random(n))
    state = orjson.loads(orjson.dumps(acc.to_state()))
    old = dict(state)
    for name in ("pos_hist", "neg_hist"):
        h = getattr(acc, name)
        old[name] = [[int(i), int(h[i])] for i in np.flatnonzero(h)]
    for s in (state, old):
        back = BinaryAccumulator.from_state(s)
        assert np.array_equal(back.pos_hist, acc.pos_hist) and np.array_equal(back.neg_hist, acc.neg_hist)
        assert back.metrics() == acc.metrics()
    assert isinstance(state["pos_hist"], list if n == 5000 else dict)
