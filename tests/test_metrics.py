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
from driftline.detectors.metrics import (
    MAX_CLASS_METRICS,
    MAX_CONFUSION_CLASSES,
    class_metric_name,
    split_class_metric,
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


# -- calibration (ece, reliability points) ---------------------------------------------------


def _independent_calibration(y: np.ndarray, s: np.ndarray) -> tuple[float, dict[int, tuple[int, float, float]]]:
    """ECE and per-bin (n, mean score, share of positives), binned like sklearn's ``calibration_curve``
    (``strategy="uniform"``): edges ``linspace(0, 1, 11)``, ``searchsorted`` on the inner edges (with
    ``side="right"``: a score on an edge goes up, as Driftline bins; sklearn puts it below)."""
    edges = np.linspace(0.0, 1.0, 11)
    ids = np.searchsorted(edges[1:-1], s, side="right")
    bins = {}
    ece = 0.0
    for b in range(10):
        inside = ids == b
        nb = int(inside.sum())
        if nb:
            bins[b] = (nb, float(s[inside].mean()), float(y[inside].mean()))
            ece += nb / s.size * abs(y[inside].mean() - s[inside].mean())
    return ece, bins


def _check_calibration(acc: BinaryAccumulator, y: np.ndarray, s: np.ndarray) -> None:
    m, counts = acc.metrics(), acc.metric_counts()
    ece, bins = _independent_calibration(y, s)
    assert m["ece"] == pytest.approx(ece, abs=1e-12) and counts["ece"] == s.size
    assert {int(k.split(".")[1]) for k in m if k.startswith("calibration.")} == set(bins)
    for b, (nb, mean_s, mean_y) in bins.items():
        assert m[f"calibration.{b}.expected"] == pytest.approx(mean_s, abs=1e-12)
        assert m[f"calibration.{b}.observed"] == pytest.approx(mean_y, abs=1e-12)
        assert counts[f"calibration.{b}.expected"] == counts[f"calibration.{b}.observed"] == nb


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ece_matches_an_independent_computation_single_and_merged(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 4000
    s = rng.beta(0.8 + seed, 2.0, n)  # no score sits exactly on a bin edge
    y = (rng.random(n) < np.clip(s + 0.15 * (seed - 1.5) * s * (1 - s), 0, 1)).astype(int)  # miscalibrated
    yp = (s >= 0.5).astype(int)
    acc = BinaryAccumulator()
    acc.update_many(y, yp, s)
    _check_calibration(acc, y, s)
    cuts = np.sort(rng.choice(np.arange(1, n), 3, replace=False))
    parts = list(zip(*(np.split(a, cuts) for a in (y, yp, s)), strict=True))
    merged = _split_merge(BinaryAccumulator, parts)
    _check_calibration(merged, y, s)


def test_calibration_points_equal_sklearn_calibration_curve() -> None:
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(7)
    s = rng.uniform(0, 1, 3000) ** 2
    y = (rng.random(3000) < np.sqrt(s)).astype(int)
    acc = BinaryAccumulator()
    acc.update_many(y, (s >= 0.5).astype(int), s)
    prob_true, prob_pred = calibration_curve(y, s, n_bins=10, strategy="uniform")
    m = acc.metrics()
    got = sorted((m[f"calibration.{b}.expected"], m[f"calibration.{b}.observed"]) for b, *_ in acc.calibration() or [])
    assert np.allclose([e for e, _ in got], prob_pred, atol=1e-12)
    assert np.allclose([o for _, o in got], prob_true, atol=1e-12)


def test_calibration_bins_edges_nan_and_a_perfect_model() -> None:
    acc = BinaryAccumulator()
    # Bin b holds [b/10, (b+1)/10); 1.0 is in the last bin; NaN (no score) is not binned.
    acc.update_many(np.array([0, 1, 1, 0, 1]), np.array([0, 1, 1, 0, 1]), np.array([0.0, 0.1, 1.0, 0.95, np.nan]))
    assert [(b, n) for b, n, *_ in acc.calibration() or []] == [(0, 1), (1, 1), (9, 2)]
    assert acc.ece() == pytest.approx((0.0 + 0.9 + 2 * abs(0.5 - 0.975)) / 4)
    # Outcomes without any score: no calibration metric at all.
    bare = BinaryAccumulator()
    bare.update_many(np.array([0, 1]), np.array([0, 1]))
    assert bare.ece() is None and not any(k == "ece" or k.startswith("calibration.") for k in bare.metrics())
    # Labels drawn with P(y=1) = the bin's mean score: ECE near 0.
    rng = np.random.default_rng(3)
    s = rng.uniform(0, 1, 200_000)
    good = BinaryAccumulator()
    good.update_many((rng.random(s.size) < s).astype(int), (s >= 0.5).astype(int), s)
    assert good.ece() is not None and good.ece() < 0.01  # type: ignore[operator]


def test_old_state_without_calibration_loads_and_leaves_ece_out() -> None:
    rng = np.random.default_rng(5)
    y, s = (rng.random(300) < 0.4).astype(int), rng.random(300)
    acc = BinaryAccumulator()
    acc.update_many(y, (s >= 0.5).astype(int), s)
    old = orjson.loads(orjson.dumps(acc.to_state()))
    del old["cal"]
    back = BinaryAccumulator.from_state(old)
    m = back.metrics()
    assert "ece" not in m and "calibration.0.expected" not in m and back.metric_counts() == {}
    assert {k: v for k, v in acc.metrics().items() if k != "ece" and not k.startswith("calibration.")} == m
    # Merged with a new partial, the old events are still missing from the bins: still no ece.
    back.merge(acc)
    assert "ece" not in back.metrics()
    # An old state with no scored event holds nothing the bins lack.
    empty = BinaryAccumulator()
    empty.update_many(y, y)
    old_empty = empty.to_state()
    del old_empty["cal"]
    again = BinaryAccumulator.from_state(old_empty)
    again.merge(acc)
    assert again.metrics()["ece"] == pytest.approx(acc.metrics()["ece"])


# -- multiclass per-class metrics -----------------------------------------------------------


def _check_per_class(acc: MulticlassAccumulator, yt: list[str], yp: list[str]) -> None:
    m, counts = acc.metrics(), acc.metric_counts()
    labels = sorted(set(yt) | set(yp))
    prec, rec, f1, sup = skm.precision_recall_fscore_support(yt, yp, labels=labels, zero_division=0)
    cm = skm.confusion_matrix(yt, yp, labels=labels)
    assert m["class_count"] == len(labels)
    for i, c in enumerate(labels):
        assert m[class_metric_name("precision", c)] == pytest.approx(prec[i], abs=TOL), c
        assert m[class_metric_name("recall", c)] == pytest.approx(rec[i], abs=TOL), c
        assert m[class_metric_name("f1", c)] == pytest.approx(f1[i], abs=TOL), c
        assert m[class_metric_name("support", c)] == sup[i]
        assert counts[class_metric_name("precision", c)] == cm[:, i].sum()
        assert counts[class_metric_name("recall", c)] == cm[i].sum()
    got = np.zeros_like(cm)
    for name, v in m.items():
        metric, classes = split_class_metric(name)
        if metric == "confusion":
            assert v > 0  # only non-zero cells are written
            got[labels.index(classes[0]), labels.index(classes[1])] = v
    assert np.array_equal(got, cm)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_class_metrics_and_confusion_equal_sklearn_single_and_merged(seed: int) -> None:
    yt, yp = _mc_data(seed)
    yt[10:13] = ["x.y", "50%", "x.y"]  # names that need the encoding
    yp[11:14] = ["x.y", "x.y", "50%"]
    acc = MulticlassAccumulator()
    acc.update_many(yt, yp)
    _check_per_class(acc, yt, yp)
    parts = [(yt[:9], yp[:9]), (yt[9:1500], yp[9:1500]), (yt[1500:], yp[1500:])]
    _check_per_class(_split_merge(MulticlassAccumulator, parts), yt, yp)


def test_per_class_metrics_are_bounded_to_the_most_supported_classes() -> None:
    rng = np.random.default_rng(1)
    classes = [f"c{i:03d}" for i in range(MAX_CLASS_METRICS * 4)]
    weights = np.arange(len(classes), 0, -1, dtype=float)
    yt = [classes[i] for i in rng.choice(len(classes), 20_000, p=weights / weights.sum())]
    yp = [t if rng.random() < 0.6 else classes[rng.integers(len(classes))] for t in yt]
    acc = MulticlassAccumulator()
    acc.update_many(yt, yp)
    m = acc.metrics()
    support = {c: yt.count(c) for c in set(yt)}
    top = sorted(support, key=lambda c: (-support[c], -yp.count(c), c))[:MAX_CLASS_METRICS]
    assert {split_class_metric(k)[1][0] for k in m if k.startswith("support.")} == set(top)
    cells = [split_class_metric(k)[1] for k in m if k.startswith("confusion.")]
    top_cm = top[:MAX_CONFUSION_CLASSES]
    assert cells and all(t in top_cm and p in top_cm for t, p in cells)
    assert {t for t, _ in cells} == set(top_cm)  # every shown class has its diagonal at least
    assert len(m) <= 11 + 4 * MAX_CLASS_METRICS + MAX_CONFUSION_CLASSES**2
    assert m["class_count"] == len(set(yt) | set(yp))
    # The classes shown do not depend on arrival order.
    rev = MulticlassAccumulator()
    rev.update_many(yt[::-1], yp[::-1])
    assert rev.metrics() == pytest.approx(m)
