"""Champion/challenger comparisons against scipy.stats and a direct z-test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from driftline.detectors import BinaryAccumulator, RegressionAccumulator
from driftline.detectors.comparison import (
    compare_binary,
    compare_means,
    compare_proportions,
    compare_regression,
)


def _z_test(s1: int, n1: int, s2: int, n2: int, alpha: float) -> tuple[float, float, float, float]:
    """Wald two-proportion z-test and interval, written out with scipy.stats.norm."""
    p1, p2 = s1 / n1, s2 / n2
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    z = (p2 - p1) / se
    q = stats.norm.ppf(1 - alpha / 2)
    return z, 2 * stats.norm.sf(abs(z)), p2 - p1 - q * se, p2 - p1 + q * se


@pytest.mark.parametrize(
    ("s1", "n1", "s2", "n2", "alpha"),
    [
        (850, 1000, 890, 1000, 0.05),
        (40, 200, 31, 180, 0.05),
        (5000, 10000, 5100, 10000, 0.01),
        (7, 120, 9, 130, 0.1),
    ],
)
def test_proportions_match_scipy_norm(s1: int, n1: int, s2: int, n2: int, alpha: float) -> None:
    c = compare_proportions("accuracy", s1, n1, s2, n2, alpha=alpha)
    assert c is not None
    z, p, lo, hi = _z_test(s1, n1, s2, n2, alpha)
    assert (c.z, c.p_value, c.ci_low, c.ci_high) == pytest.approx((z, p, lo, hi), rel=1e-9)
    assert c.difference == pytest.approx(s2 / n2 - s1 / n1)
    # The verdict reads the interval, and agrees with the p-value.
    excludes = lo > 0 or hi < 0
    assert excludes == (p < alpha)
    assert c.verdict == ("no_difference" if not excludes else "better" if lo > 0 else "worse")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_welch_matches_scipy_ttest_ind_from_stats(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(1.0, 1.0, rng.integers(30, 300))
    b = rng.normal(1.2, 2.0, rng.integers(30, 300))
    ma, va, mb, vb = a.mean(), a.var(ddof=1), b.mean(), b.var(ddof=1)
    c = compare_means("m", ma, va, a.size, mb, vb, b.size)
    assert c is not None
    # scipy's statistic is mean1 - mean2: challenger first gives challenger - champion.
    t = stats.ttest_ind_from_stats(
        mb, math.sqrt(vb), b.size, ma, math.sqrt(va), a.size, equal_var=False
    )
    assert c.z == pytest.approx(t.statistic, rel=1e-10)
    assert c.p_value == pytest.approx(2 * stats.norm.sf(abs(t.statistic)), rel=1e-9)
    df = (va / a.size + vb / b.size) ** 2 / (
        (va / a.size) ** 2 / (a.size - 1) + (vb / b.size) ** 2 / (b.size - 1)
    )
    assert c.df == pytest.approx(df, rel=1e-10)
    assert stats.ttest_ind(b, a, equal_var=False).statistic == pytest.approx(c.z, rel=1e-10)
    # Normal vs t p-value: close for these sample sizes.
    assert c.p_value == pytest.approx(t.pvalue, abs=0.02)


def test_binary_from_confusion_counts() -> None:
    a, b = BinaryAccumulator(), BinaryAccumulator()
    a.tp, a.fp, a.tn, a.fn = 300, 100, 500, 100
    b.tp, b.fp, b.tn, b.fn = 330, 60, 520, 90
    got = compare_binary(a, b, ("accuracy", "precision", "recall", "positive_rate"))
    for metric, (s1, n1, s2, n2) in {
        "accuracy": (800, 1000, 850, 1000),
        "precision": (300, 400, 330, 390),
        "recall": (300, 400, 330, 420),
        "positive_rate": (400, 1000, 390, 1000),
    }.items():
        _, p, lo, hi = _z_test(s1, n1, s2, n2, 0.05)
        c = got[metric]
        assert (c.ci_low, c.ci_high, c.p_value) == pytest.approx((lo, hi, p), rel=1e-9), metric
        assert (c.n_champion, c.n_challenger) == (n1, n2)
    assert got["accuracy"].verdict == "better" and got["precision"].verdict == "better"
    assert got["recall"].verdict == "no_difference"


def test_regression_mae_from_sums_matches_welch_on_abs_errors() -> None:
    rng = np.random.default_rng(7)
    y = rng.normal(size=(2, 1500))
    pa, pb = y[0] + rng.normal(0, 1.0, 1500), y[1] + rng.normal(0, 0.8, 1500)
    a, b = RegressionAccumulator(), RegressionAccumulator()
    a.update_many(y[0], pa)
    b.update_many(y[1], pb)
    ea, eb = np.abs(pa - y[0]), np.abs(pb - y[1])
    c = compare_regression(a, b)["mae"]
    t = stats.ttest_ind(eb, ea, equal_var=False)
    assert c.z == pytest.approx(t.statistic, rel=1e-8)
    assert (c.champion, c.challenger) == pytest.approx((ea.mean(), eb.mean()), rel=1e-12)
    assert c.verdict == "better"  # lower MAE is better
    assert compare_regression(b, a)["mae"].verdict == "worse"


def test_min_sample_sizes_and_missing_arms() -> None:
    c = compare_proportions("recall", 10, 20, 19, 20)
    assert c is not None and c.verdict == "insufficient_data" and c.ci_low > 0
    assert compare_proportions("recall", 10, 20, 19, 20, min_n=20).verdict == "better"  # type: ignore[union-attr]
    assert compare_proportions("recall", 0, 0, 5, 10) is None
    assert compare_means("m", 1.0, 1.0, 1, 2.0, 1.0, 50) is None
    empty = BinaryAccumulator()
    some = BinaryAccumulator()
    some.update_many(np.array([1, 0]), np.array([1, 1]))
    assert compare_binary(empty, some) == {}
    assert compare_regression(RegressionAccumulator(), RegressionAccumulator()) == {}


def test_constant_arms() -> None:
    same = compare_proportions("accuracy", 200, 200, 300, 300)
    assert same is not None and same.verdict == "no_difference" and same.p_value == 1.0
    apart = compare_proportions("accuracy", 0, 200, 300, 300)
    assert apart is not None and apart.verdict == "better" and apart.p_value == 0.0


def test_identical_arms_no_difference_and_state() -> None:
    c = compare_proportions("accuracy", 900, 1000, 900, 1000)
    assert c is not None and c.verdict == "no_difference" and c.difference == 0.0
    assert c.to_state()["verdict"] == "no_difference"


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="successes"):
        compare_proportions("accuracy", 11, 10, 5, 10)
    with pytest.raises(ValueError, match="alpha"):
        compare_proportions("accuracy", 5, 10, 5, 10, alpha=0)
    with pytest.raises(ValueError, match="metric"):
        compare_binary(BinaryAccumulator(), BinaryAccumulator(), ("f1",))
