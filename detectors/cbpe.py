"""Confidence-based performance estimation (CBPE) of a binary classifier without labels.

NannyML's CBPE: if the score ``p`` is a calibrated P(y = 1), each event contributes its
*expected* confusion-matrix cell, so a window's expected confusion matrix is

- E[TP] = sum of ``p`` over predicted positives,  E[FP] = sum of ``1 - p`` over them;
- E[FN] = sum of ``p`` over predicted negatives,  E[TN] = sum of ``1 - p`` over them;

and the estimated metrics are those of that matrix (precision = E[TP] / (E[TP] + E[FP]),
recall = E[TP] / (E[TP] + E[FN]), f1 = 2 E[TP] / (2 E[TP] + E[FP] + E[FN]), accuracy =
(E[TP] + E[TN]) / n), with sklearn's 0.0 for a zero denominator.

Assumptions, stated because the estimate is only as good as they are:

1. **Calibration**: P(y = 1 | score = p) = p on the monitored data. An over- or
   under-confident model gives a biased estimate (an overconfident one over-estimates
   accuracy); calibrate on a labelled reference set (isotonic or Platt) before use.
2. **No concept drift**: P(y | x) is the reference one. CBPE follows covariate shift (the
   score distribution moves) but cannot see a change of P(y | x): the scores stay
   "confident" while the model is wrong. Compare with the realised metrics when labels
   arrive (``estimation_error``) and keep the concept-drift detectors on.

Estimated accuracy is a sum of independent Bernoulli(q) with q = max(p, 1 - p), so under
the assumptions its standard error is sqrt(sum p (1 - p)) / n: ``estimated_accuracy_std``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["CBPEAccumulator", "estimation_error"]

_PREFIX = "estimated_"


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


class CBPEAccumulator:
    """Expected confusion matrix of a binary classifier from its calibrated scores.

    Parameters
    ----------
    threshold
        A score ``>= threshold`` is a positive prediction when ``update_many`` gets no
        ``y_pred`` (the model's own decision, when it logs one, is better).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> p = rng.beta(2, 5, 20_000)                   # calibrated scores
    >>> y = (rng.random(20_000) < p).astype(int)     # the labels that arrive later
    >>> est = CBPEAccumulator()
    >>> est.update_many(p)
    >>> m = est.metrics()
    >>> round(m["estimated_accuracy"], 3), round(float(((p >= 0.5) == y).mean()), 3)
    (0.734, 0.736)
    """

    def __init__(self, threshold: float = 0.5) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
        self.threshold = float(threshold)
        self._reset()

    def _reset(self) -> None:
        self.count = 0
        self.n_unscored = 0
        self.n_pred_pos = 0
        # Sum of p over predicted positives (E[TP]) and over predicted negatives (E[FN]).
        self.sum_p_pos = 0.0
        self.sum_p_neg = 0.0
        # Sum of p (1 - p): the variance of the number of correct predictions.
        self.sum_var = 0.0

    @property
    def n(self) -> int:
        return self.count

    def update_many(self, score: npt.ArrayLike, y_pred: npt.ArrayLike | None = None) -> None:
        """Add a batch of scores P(y = 1) (NaN = no score, counted in ``n_unscored``)."""
        s = np.asarray(score, dtype=np.float64).ravel()
        if y_pred is None:
            pos = s >= self.threshold
        else:
            pos = np.asarray(y_pred).astype(bool).ravel()
            if pos.shape != s.shape:
                raise ValueError("score and y_pred must have the same length")
        keep = ~np.isnan(s)
        if not keep.all():
            self.n_unscored += int((~keep).sum())
            s, pos = s[keep], pos[keep]
        if s.size == 0:
            return
        s = np.clip(s, 0.0, 1.0)
        self.count += int(s.size)
        self.n_pred_pos += int(pos.sum())
        p_pos = float(s[pos].sum())
        self.sum_p_pos += p_pos
        self.sum_p_neg += float(s.sum()) - p_pos
        self.sum_var += float(s @ (1.0 - s))

    def expected_confusion(self) -> dict[str, float]:
        """E[TP], E[FP], E[TN], E[FN] under calibration."""
        n_neg = self.count - self.n_pred_pos
        return {
            "tp": self.sum_p_pos,
            "fp": self.n_pred_pos - self.sum_p_pos,
            "tn": n_neg - self.sum_p_neg,
            "fn": self.sum_p_neg,
        }

    def metrics(self) -> dict[str, float]:
        """``estimated_{accuracy,precision,recall,f1,tp,fp,tn,fn}`` and the accuracy SE."""
        n = self.count
        if n == 0:
            return {}
        c = self.expected_confusion()
        tp, fp, tn, fn = c["tp"], c["fp"], c["tn"], c["fn"]
        out = {
            "accuracy": (tp + tn) / n,
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "accuracy_std": math.sqrt(max(self.sum_var, 0.0)) / n,
            "tp": tp,
            "fp": fp,
            "tn": tn,
            "fn": fn,
        }
        return {_PREFIX + k: v for k, v in out.items()}

    def merge(self, other: CBPEAccumulator) -> None:
        if other.threshold != self.threshold:
            raise ValueError(
                f"cannot merge threshold {other.threshold} into threshold {self.threshold}"
            )
        self.count += other.count
        self.n_unscored += other.n_unscored
        self.n_pred_pos += other.n_pred_pos
        self.sum_p_pos += other.sum_p_pos
        self.sum_p_neg += other.sum_p_neg
        self.sum_var += other.sum_var

    def to_state(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "count": self.count,
            "n_unscored": self.n_unscored,
            "n_pred_pos": self.n_pred_pos,
            "sum_p_pos": self.sum_p_pos,
            "sum_p_neg": self.sum_p_neg,
            "sum_var": self.sum_var,
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> CBPEAccumulator:
        acc = cls(float(d["threshold"]))
        for k in ("count", "n_unscored", "n_pred_pos"):
            setattr(acc, k, int(d[k]))
        for k in ("sum_p_pos", "sum_p_neg", "sum_var"):
            setattr(acc, k, float(d[k]))
        return acc


def estimation_error(
    estimated: Mapping[str, float], realised: Mapping[str, float]
) -> dict[str, float]:
    """Signed error ``estimated - realised`` of each metric present in both.

    ``estimated`` may use CBPE's names (``estimated_accuracy``) or the plain ones;
    ``realised`` uses the plain names (``BinaryAccumulator.metrics()``). The result is
    keyed by the plain name; take ``abs()`` for the absolute error.

    Examples
    --------
    >>> err = estimation_error({"estimated_accuracy": 0.9, "estimated_f1": 0.5},
    ...                        {"accuracy": 0.85, "recall": 0.7})
    >>> {k: round(v, 4) for k, v in err.items()}
    {'accuracy': 0.05}
    """
    out = {}
    for key, value in estimated.items():
        name = key.removeprefix(_PREFIX)
        if name in realised and not name.endswith("_std"):
            out[name] = float(value) - float(realised[name])
    return out
