"""Champion / challenger: is a model version's window metric better than another's?

Each comparison returns the difference ``challenger - champion`` with a two-sided
confidence interval at ``1 - alpha`` and a verdict read from the interval:

- ``better`` / ``worse``: the interval excludes 0 and the challenger is better / worse
  (``higher_is_better`` says which way is better: True for accuracy, False for MAE);
- ``no_difference``: the interval contains 0;
- ``insufficient_data``: an arm has fewer than ``min_n`` events (the numbers are still
  filled when they can be computed).

Rates (accuracy, precision, recall) use the two-proportion z-test with the unpooled
(Wald) standard error sqrt(p1 (1 - p1) / n1 + p2 (1 - p2) / n2), the one the interval
uses, so ``p_value < alpha`` exactly when the interval excludes 0 (statsmodels'
``test_proportions_2indep(method="wald")``; the pooled score test differs slightly).
Means (MAE) use Welch's statistic with the normal approximation: the ``df`` reported is
Welch-Satterthwaite's, and for ``min_n`` >= 30 per arm the t and normal quantiles differ
by < 4%. Everything comes from counts and sums, so the inputs are the mergeable window
accumulators; only the standard library is needed (no scipy at run time).

Each window is one test: many windows and metrics inflate false verdicts, so an alert
should want the same verdict on several consecutive windows, or a smaller ``alpha``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Literal

from .continuous import RegressionAccumulator
from .metrics import BinaryAccumulator

__all__ = [
    "Comparison",
    "compare_binary",
    "compare_means",
    "compare_proportions",
    "compare_regression",
]

Verdict = Literal["better", "worse", "no_difference", "insufficient_data"]
_NORMAL = NormalDist()


@dataclass(frozen=True)
class Comparison:
    """Difference ``challenger - champion`` of one metric, its interval and the verdict."""

    metric: str
    champion: float
    challenger: float
    difference: float
    ci_low: float
    ci_high: float
    z: float
    p_value: float
    n_champion: int
    n_challenger: int
    alpha: float
    verdict: Verdict
    df: float | None = None

    def to_state(self) -> dict[str, Any]:
        return asdict(self)


def _verdict(low: float, high: float, higher_is_better: bool, enough: bool) -> Verdict:
    if not enough:
        return "insufficient_data"
    if low > 0 or high < 0:
        return "better" if (low > 0) == higher_is_better else "worse"
    return "no_difference"


def _compare(
    metric: str,
    a: float,
    b: float,
    se: float,
    n_a: int,
    n_b: int,
    alpha: float,
    higher_is_better: bool,
    min_n: int,
    df: float | None = None,
) -> Comparison:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    d = b - a
    half = _NORMAL.inv_cdf(1.0 - alpha / 2.0) * se
    if se > 0:
        z = d / se
        p = math.erfc(abs(z) / math.sqrt(2.0))  # 2 (1 - Phi(|z|)), without cancellation
    else:  # both arms constant: the difference is exact
        z = 0.0 if d == 0 else math.copysign(math.inf, d)
        p = 1.0 if d == 0 else 0.0
    enough = min(n_a, n_b) >= min_n
    return Comparison(
        metric=metric,
        champion=a,
        challenger=b,
        difference=d,
        ci_low=d - half,
        ci_high=d + half,
        z=z,
        p_value=p,
        n_champion=n_a,
        n_challenger=n_b,
        alpha=alpha,
        verdict=_verdict(d - half, d + half, higher_is_better, enough),
        df=df,
    )


def compare_proportions(
    metric: str,
    successes_champion: int,
    n_champion: int,
    successes_challenger: int,
    n_challenger: int,
    *,
    alpha: float = 0.05,
    higher_is_better: bool = True,
    min_n: int = 100,
) -> Comparison | None:
    """Two-proportion z-test and Wald interval; None when an arm has no event.

    Examples
    --------
    >>> c = compare_proportions("accuracy", 850, 1000, 890, 1000)
    >>> round(c.difference, 3), round(c.ci_low, 4), round(c.ci_high, 4), c.verdict
    (0.04, 0.0106, 0.0694, 'better')
    >>> compare_proportions("accuracy", 85, 100, 89, 100, min_n=200).verdict
    'insufficient_data'
    """
    for name, s, n in (
        ("champion", successes_champion, n_champion),
        ("challenger", successes_challenger, n_challenger),
    ):
        if n < 0 or not 0 <= s <= max(n, 0):
            raise ValueError(f"{name}: need 0 <= successes <= n, got {s!r} of {n!r}")
    if n_champion == 0 or n_challenger == 0:
        return None
    pa, pb = successes_champion / n_champion, successes_challenger / n_challenger
    se = math.sqrt(pa * (1 - pa) / n_champion + pb * (1 - pb) / n_challenger)
    return _compare(metric, pa, pb, se, n_champion, n_challenger, alpha, higher_is_better, min_n)


def compare_means(
    metric: str,
    mean_champion: float,
    var_champion: float,
    n_champion: int,
    mean_challenger: float,
    var_challenger: float,
    n_challenger: int,
    *,
    alpha: float = 0.05,
    higher_is_better: bool = True,
    min_n: int = 30,
) -> Comparison | None:
    """Welch's difference of means (sample variances, ddof=1), normal interval.

    None when an arm has fewer than 2 events (no sample variance).

    Examples
    --------
    >>> c = compare_means("mae", 1.00, 0.25, 400, 0.95, 0.20, 400, higher_is_better=False)
    >>> round(c.difference, 3), round(c.ci_low, 4), round(c.ci_high, 4), c.verdict
    (-0.05, -0.1157, 0.0157, 'no_difference')
    """
    if n_champion < 2 or n_challenger < 2:
        return None
    va, vb = var_champion / n_champion, var_challenger / n_challenger
    se = math.sqrt(max(va + vb, 0.0))
    den = va * va / (n_champion - 1) + vb * vb / (n_challenger - 1)
    df = (va + vb) ** 2 / den if den > 0 else math.inf
    return _compare(
        metric,
        mean_champion,
        mean_challenger,
        se,
        n_champion,
        n_challenger,
        alpha,
        higher_is_better,
        min_n,
        df,
    )


# Binary metric -> (successes, trials) from (tp, fp, tn, fn).
_RATES = {
    "accuracy": lambda tp, fp, tn, fn: (tp + tn, tp + fp + tn + fn),
    "precision": lambda tp, fp, tn, fn: (tp, tp + fp),
    "recall": lambda tp, fp, tn, fn: (tp, tp + fn),
    "positive_rate": lambda tp, fp, tn, fn: (tp + fp, tp + fp + tn + fn),
}


def compare_binary(
    champion: BinaryAccumulator,
    challenger: BinaryAccumulator,
    metrics: tuple[str, ...] = ("accuracy", "precision", "recall"),
    *,
    alpha: float = 0.05,
    min_n: int = 100,
) -> dict[str, Comparison]:
    """Rate comparisons from two windows' confusion counts (metrics with no event left out).

    ``min_n`` applies to each rate's own denominator (predicted positives for precision,
    actual positives for recall). ``positive_rate`` is compared with higher = "better"
    only nominally: read its verdict as "higher" / "lower".

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> y = rng.integers(0, 2, (2, 5000))
    >>> a, b = BinaryAccumulator(), BinaryAccumulator()
    >>> a.update_many(y[0], np.where(rng.random(5000) < 0.80, y[0], 1 - y[0]))
    >>> b.update_many(y[1], np.where(rng.random(5000) < 0.83, y[1], 1 - y[1]))
    >>> {m: c.verdict for m, c in compare_binary(a, b).items()}
    {'accuracy': 'better', 'precision': 'better', 'recall': 'better'}
    """
    out = {}
    for m in metrics:
        if m not in _RATES:
            raise ValueError(f"metric must be one of {sorted(_RATES)}, got {m!r}")
        sa, na = _RATES[m](champion.tp, champion.fp, champion.tn, champion.fn)
        sb, nb = _RATES[m](challenger.tp, challenger.fp, challenger.tn, challenger.fn)
        c = compare_proportions(m, sa, na, sb, nb, alpha=alpha, min_n=min_n)
        if c is not None:
            out[m] = c
    return out


def compare_regression(
    champion: RegressionAccumulator,
    challenger: RegressionAccumulator,
    *,
    alpha: float = 0.05,
    min_n: int = 30,
) -> dict[str, Comparison]:
    """MAE (lower is better) by Welch on absolute errors, from sums and sums of squares.

    The variance of |e| is (sum e^2 - (sum |e|)^2 / n) / (n - 1), from the accumulator's
    ``sum_sq_err`` and ``sum_abs_err``; clipped at 0 against rounding.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(2)
    >>> y = rng.normal(size=(2, 2000))
    >>> a, b = RegressionAccumulator(), RegressionAccumulator()
    >>> a.update_many(y[0], y[0] + rng.normal(0, 1.0, 2000))
    >>> b.update_many(y[1], y[1] + rng.normal(0, 1.2, 2000))
    >>> compare_regression(a, b)["mae"].verdict
    'worse'
    """
    stats = []
    for acc in (champion, challenger):
        n = acc.count
        if n < 2:
            return {}
        mean = acc.sum_abs_err / n
        var = max(acc.sum_sq_err - acc.sum_abs_err * mean, 0.0) / (n - 1)
        stats.append((mean, var, n))
    (ma, va, na), (mb, vb, nb) = stats
    c = compare_means(
        "mae", ma, va, na, mb, vb, nb, alpha=alpha, higher_is_better=False, min_n=min_n
    )
    return {} if c is None else {"mae": c}
