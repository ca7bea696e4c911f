"""Accumulators for continuous values: regression errors and score/value summaries.

Both keep the mean and the sum of squared deviations of a variable and merge them with
Chan's formula, which does not cancel like ``sum x^2 - (sum x)^2 / n`` does.
See ``metrics.py`` for the conventions on undefined metrics.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .sketch import QuantileSketch

__all__ = ["RegressionAccumulator", "ScoreSummary"]

# sklearn's mean_absolute_percentage_error divides by max(|y|, eps).
MAPE_EPS = float(np.finfo(np.float64).eps)


def _chan(
    n_a: int, mean_a: float, m2_a: float, n_b: int, mean_b: float, m2_b: float
) -> tuple[float, float]:
    """Combine (mean, sum of squared deviations) of two parts (Chan et al.): no cancellation."""
    n = n_a + n_b
    if n_a == 0:
        return mean_b, m2_b
    if n_b == 0:
        return mean_a, m2_a
    delta = mean_b - mean_a
    return mean_a + delta * n_b / n, m2_a + m2_b + delta * delta * n_a * n_b / n


class RegressionAccumulator:
    """Error sums for a regressor: mae, mse, rmse, r2, mape (sklearn semantics).

    ``r2`` uses the variance of ``y_true`` kept as a mean and sum of squared deviations
    (merged with Chan's formula), not ``sum y^2 - (sum y)^2 / n``, which cancels badly.
    ``mape`` divides by ``max(|y_true|, eps)`` exactly as sklearn does, so a zero target
    gives a huge value: that is sklearn's answer, kept for comparability.

    Examples
    --------
    >>> import numpy as np
    >>> acc = RegressionAccumulator()
    >>> acc.update_many(np.array([3.0, -0.5, 2.0, 7.0]), np.array([2.5, 0.0, 2.0, 8.0]))
    >>> {k: round(v, 4) for k, v in acc.metrics().items()}
    {'mae': 0.5, 'mse': 0.375, 'rmse': 0.6124, 'r2': 0.9486, 'mape': 0.3274}
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.count = 0
        self.sum_err = 0.0
        self.sum_abs_err = 0.0
        self.sum_sq_err = 0.0
        self.sum_abs_pct_err = 0.0
        self.mean_y = 0.0
        self.m2_y = 0.0
        self.min_y = math.inf
        self.max_y = -math.inf

    @property
    def n(self) -> int:
        return self.count

    def update_many(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        y = np.asarray(y_true, dtype=np.float64).ravel()
        p = np.asarray(y_pred, dtype=np.float64).ravel()
        if y.shape != p.shape:
            raise ValueError("y_true and y_pred must have the same length")
        if y.size == 0:
            return
        err = p - y
        abs_err = np.abs(err)
        self.sum_err += float(err.sum())
        self.sum_abs_err += float(abs_err.sum())
        self.sum_sq_err += float(np.dot(err, err))
        self.sum_abs_pct_err += float(np.sum(abs_err / np.maximum(np.abs(y), MAPE_EPS)))
        mean_b = float(y.mean())
        dev = y - mean_b
        self.mean_y, self.m2_y = _chan(
            self.count, self.mean_y, self.m2_y, y.size, mean_b, float(np.dot(dev, dev))
        )
        self.count += int(y.size)
        self.min_y = min(self.min_y, float(y.min()))
        self.max_y = max(self.max_y, float(y.max()))

    def metrics(self) -> dict[str, float]:
        n = self.count
        if n == 0:
            return {}
        mse = self.sum_sq_err / n
        out = {"mae": self.sum_abs_err / n, "mse": mse, "rmse": math.sqrt(mse)}
        if n >= 2:
            # A constant target has exactly zero variance, whatever rounding m2 carries.
            if self.min_y == self.max_y or self.m2_y == 0.0:
                out["r2"] = 1.0 if self.sum_sq_err == 0.0 else 0.0
            else:
                out["r2"] = 1.0 - self.sum_sq_err / self.m2_y
        out["mape"] = self.sum_abs_pct_err / n
        return out

    def merge(self, other: RegressionAccumulator) -> None:
        self.mean_y, self.m2_y = _chan(
            self.count, self.mean_y, self.m2_y, other.count, other.mean_y, other.m2_y
        )
        self.count += other.count
        self.sum_err += other.sum_err
        self.sum_abs_err += other.sum_abs_err
        self.sum_sq_err += other.sum_sq_err
        self.sum_abs_pct_err += other.sum_abs_pct_err
        self.min_y = min(self.min_y, other.min_y)
        self.max_y = max(self.max_y, other.max_y)

    _FIELDS = ("sum_err", "sum_abs_err", "sum_sq_err", "sum_abs_pct_err", "mean_y", "m2_y")

    def to_state(self) -> dict[str, Any]:
        d: dict[str, Any] = {k: getattr(self, k) for k in self._FIELDS}
        d["count"] = self.count
        # JSON has no infinity: an empty accumulator stores None.
        d["min_y"] = self.min_y if self.count else None
        d["max_y"] = self.max_y if self.count else None
        return d

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> RegressionAccumulator:
        acc = cls()
        for k in cls._FIELDS:
            setattr(acc, k, float(d[k]))
        acc.count = int(d["count"])
        if acc.count:
            acc.min_y, acc.max_y = float(d["min_y"]), float(d["max_y"])
        return acc


class ScoreSummary:
    """Count, mean, min, max, std (population, ddof=0) and quantiles of a score or value.

    Needs no label: it summarises what the model emitted. Quantiles p05..p95 come from
    a ``QuantileSketch`` (1% relative error, ``numpy.quantile(method="lower")`` ranks).
    NaN and infinite values are ignored.

    Examples
    --------
    >>> import numpy as np
    >>> s = ScoreSummary()
    >>> s.update_many(np.arange(1, 101, dtype=float))
    >>> m = s.metrics()
    >>> m["count"], m["mean"], m["min"], m["max"], round(m["p50"])
    (100.0, 50.5, 1.0, 100.0, 50)
    """

    QUANTILES = {"p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95}

    def __init__(self, relative_accuracy: float = 0.01) -> None:
        self.relative_accuracy = float(relative_accuracy)
        self._reset()

    def _reset(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.sketch = QuantileSketch(self.relative_accuracy)

    @property
    def n(self) -> int:
        return self.count

    def update_many(self, values: np.ndarray) -> None:
        x = np.asarray(values, dtype=np.float64).ravel()
        x = x[np.isfinite(x)]
        if x.size == 0:
            return
        mean_b = float(x.mean())
        dev = x - mean_b
        self.mean, self.m2 = _chan(self.count, self.mean, self.m2, x.size, mean_b, float(dev @ dev))
        self.count += int(x.size)
        self.min = min(self.min, float(x.min()))
        self.max = max(self.max, float(x.max()))
        self.sketch.add_many(x)

    def metrics(self) -> dict[str, float]:
        if self.count == 0:
            return {}
        out = {
            "count": float(self.count),
            "mean": self.mean,
            "min": self.min,
            "max": self.max,
            "std": math.sqrt(self.m2 / self.count),
        }
        for name, q in self.QUANTILES.items():
            # Clamp to the exact extremes: the sketch may overshoot them by up to 1%.
            out[name] = min(max(self.sketch.quantile(q), self.min), self.max)
        return out

    def merge(self, other: ScoreSummary) -> None:
        self.mean, self.m2 = _chan(
            self.count, self.mean, self.m2, other.count, other.mean, other.m2
        )
        self.count += other.count
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.sketch.merge(other.sketch)

    def to_state(self) -> dict[str, Any]:
        return {
            "relative_accuracy": self.relative_accuracy,
            "count": self.count,
            "mean": self.mean,
            "m2": self.m2,
            "min": self.min if self.count else None,
            "max": self.max if self.count else None,
            "sketch": self.sketch.to_state(),
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> ScoreSummary:
        s = cls(float(d["relative_accuracy"]))
        s.count = int(d["count"])
        s.mean, s.m2 = float(d["mean"]), float(d["m2"])
        if s.count:
            s.min, s.max = float(d["min"]), float(d["max"])
        s.sketch = QuantileSketch.from_state(d["sketch"])
        return s
