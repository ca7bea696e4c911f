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

**Calibration** (``driftline.detectors.calibration``): the reference profile may carry a
``ScoreCalibrator`` fitted on its labels; ``metrics(calibrator)`` then reads every score
``s`` as ``p = calibrator(s)``. The calibrator is applied when the metrics are computed, not
when scores are added, so partials stay mergeable whatever the reference and a new baseline
re-estimates open windows consistently. That needs the window's score distribution: a
histogram of the raw scores, one per predicted class. Its ``bins`` bins are uniform in
``u = 24 s + logit(s)`` (scores clipped to [1e-7, 1 - 1e-7]): ~0.001 wide in the middle of
[0, 1] and ~3% of the score near 0 and 1, where an overconfident or imbalanced model puts
most of its scores. A bin's events are read at the bin's centre; the error that leaves is the
calibrator's change across one bin, and it averages out over the bins: at most 2e-4 on every
metric on the simulated streams of ``docs/beyond-accuracy-estimation.md`` (bins uniform in
the score, like the realised AUC's, left up to 0.015 on the ROC AUC of overconfident scores).
Without a calibrator (or with the identity one) the exact sums are used as before.

**ROC AUC** (``estimated_roc_auc``): expected TPR and FPR at each score threshold, from
the calibrated probabilities: a bin contributes ``n p`` expected positives and
``n (1 - p)`` expected negatives, thresholds run from the highest score bin down, and the
area under the expected curve is taken with the trapezoid rule (a bin is one step, as
ties are in ``roc_auc_score``). The ranking is the served score's, so the estimate is of
the realised ROC AUC of the served scores. It is omitted when no positive or no negative
is expected.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from .calibration import ScoreCalibrator
from .metrics import _hist_load, _hist_state

__all__ = ["CBPEAccumulator", "bin_centres", "estimation_error", "expected_roc_auc", "score_bins"]

_PREFIX = "estimated_"
# Score-bin coordinate u = _SLOPE * s + logit(s) over [_EPS, 1 - _EPS] (module docstring).
_SLOPE = 24.0
_EPS = 1e-7


def _u(s: np.ndarray) -> np.ndarray:
    s = np.clip(s, _EPS, 1.0 - _EPS)
    return _SLOPE * s + np.log(s) - np.log1p(-s)


_U_LO, _U_HI = float(_u(np.array(0.0))), float(_u(np.array(1.0)))


def score_bins(score: np.ndarray, bins: int) -> np.ndarray:
    """Histogram bin of each score in [0, 1] (bins uniform in ``u``, module docstring)."""
    idx = np.floor((_u(score) - _U_LO) * (bins / (_U_HI - _U_LO))).astype(np.int64)
    return np.clip(idx, 0, bins - 1)


@functools.lru_cache(maxsize=4)
def bin_centres(bins: int) -> np.ndarray:
    """The score at the centre (in ``u``) of each bin: ``u`` inverted by bisection."""
    target = _U_LO + (np.arange(bins) + 0.5) * ((_U_HI - _U_LO) / bins)
    lo, hi = np.full(bins, _EPS), np.full(bins, 1.0 - _EPS)
    for _ in range(60):  # 2**-60 of the interval: below float64 resolution
        mid = (lo + hi) / 2.0
        below = _u(mid) < target
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    out = (lo + hi) / 2.0
    out.flags.writeable = False  # shared by every caller through the cache
    return out


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def expected_roc_auc(counts: npt.ArrayLike, p: npt.ArrayLike) -> float | None:
    """Area under the expected ROC curve of score groups in increasing score order.

    Group ``b`` holds ``counts[b]`` events of calibrated probability ``p[b]``: ``n p``
    expected positives and ``n (1 - p)`` expected negatives. The thresholds run from the
    highest group down; a group is one step of the curve (its pairs count half, as tied
    scores do in ``roc_auc_score``). None when no positive or no negative is expected.

    Two groups of 10: 2 + 8 expected positives, 8 + 2 negatives; (8 * 8 + (8 * 2 + 2 * 8) / 2
    + 2 * 0) / (10 * 10) of the (positive, negative) pairs are ranked right:

    >>> expected_roc_auc([10, 10], [0.2, 0.8])
    0.8
    """
    n = np.asarray(counts, dtype=np.float64)
    q = np.asarray(p, dtype=np.float64)
    pos = n * q
    neg = n - pos
    n_pos, n_neg = float(pos.sum()), float(neg.sum())
    if n_pos <= 0.0 or n_neg <= 0.0:
        return None
    # Expected positives strictly above each group, plus half of the group's own.
    pos_above = np.cumsum(pos[::-1])[::-1] - pos
    return float(neg @ pos_above + 0.5 * (neg @ pos)) / (n_pos * n_neg)


class CBPEAccumulator:
    """Expected confusion matrix and ROC AUC of a binary classifier from its scores.

    Parameters
    ----------
    threshold
        A score ``>= threshold`` is a positive prediction when ``update_many`` gets no
        ``y_pred`` (the model's own decision, when it logs one, is better).
    bins
        Raw-score bins of the histograms that calibration and ROC AUC read (module
        docstring: uniform in ``24 s + logit(s)``).

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
    >>> from driftline.detectors.metrics import BinaryAccumulator
    >>> realised = BinaryAccumulator()
    >>> realised.update_many(y, (p >= 0.5).astype(int), p)
    >>> round(m["estimated_roc_auc"], 3), round(realised.metrics()["roc_auc"], 3)
    (0.719, 0.717)
    """

    def __init__(self, threshold: float = 0.5, bins: int = 2000) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins!r}")
        self.threshold = float(threshold)
        self.bins = int(bins)
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
        # Raw-score histograms of the predicted positives and negatives (calibration, AUC).
        self.hist_pos = np.zeros(self.bins, dtype=np.int64)
        self.hist_neg = np.zeros(self.bins, dtype=np.int64)

    @property
    def n(self) -> int:
        return self.count

    @property
    def binned(self) -> bool:
        """Whether the histograms hold every scored event (partials from before the
        histograms existed hold none: their windows are estimated uncalibrated, without AUC)."""
        return int(self.hist_pos.sum()) + int(self.hist_neg.sum()) == self.count

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
        idx = score_bins(s, self.bins)
        # One bincount over (bin, predicted class) pairs fills both histograms.
        both = np.bincount(idx * 2 + pos, minlength=2 * self.bins).reshape(self.bins, 2)
        self.hist_neg += both[:, 0]
        self.hist_pos += both[:, 1]

    def _bin_probabilities(self, calibrator: ScoreCalibrator | None) -> np.ndarray:
        """P(y = 1) of each bin: the calibrated bin centre."""
        centres = bin_centres(self.bins)
        return centres if calibrator is None else calibrator.calibrate(centres)

    def _calibrated(self, calibrator: ScoreCalibrator | None) -> bool:
        return calibrator is not None and not calibrator.is_identity and self.binned

    def expected_confusion(self, calibrator: ScoreCalibrator | None = None) -> dict[str, float]:
        """E[TP], E[FP], E[TN], E[FN] under calibration (by ``calibrator`` when given)."""
        n_neg = self.count - self.n_pred_pos
        if self._calibrated(calibrator):
            p = self._bin_probabilities(calibrator)
            tp, fn = float(self.hist_pos @ p), float(self.hist_neg @ p)
        else:
            tp, fn = self.sum_p_pos, self.sum_p_neg
        return {"tp": tp, "fp": self.n_pred_pos - tp, "tn": n_neg - fn, "fn": fn}

    def roc_auc(self, calibrator: ScoreCalibrator | None = None) -> float | None:
        """Expected ROC AUC (module docstring); None without histograms or with one class."""
        if not self.binned or self.count == 0:
            return None
        return expected_roc_auc(self.hist_pos + self.hist_neg, self._bin_probabilities(calibrator))

    def metrics(self, calibrator: ScoreCalibrator | None = None) -> dict[str, float]:
        """``estimated_{accuracy,precision,recall,f1,roc_auc,tp,fp,tn,fn}`` and the accuracy SE.

        ``calibrator``: the reference's score calibrator (None: the scores are read as
        calibrated). ``roc_auc`` is absent when no positive or no negative is expected.
        """
        n = self.count
        if n == 0:
            return {}
        c = self.expected_confusion(calibrator)
        tp, fp, tn, fn = c["tp"], c["fp"], c["tn"], c["fn"]
        if self._calibrated(calibrator):
            p = self._bin_probabilities(calibrator)
            var = float((self.hist_pos + self.hist_neg) @ (p * (1.0 - p)))
        else:
            var = self.sum_var
        out = {
            "accuracy": (tp + tn) / n,
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "accuracy_std": math.sqrt(max(var, 0.0)) / n,
            "tp": tp,
            "fp": fp,
            "tn": tn,
            "fn": fn,
        }
        auc = self.roc_auc(calibrator if self._calibrated(calibrator) else None)
        if auc is not None:
            out["roc_auc"] = auc
        return {_PREFIX + k: v for k, v in out.items()}

    def merge(self, other: CBPEAccumulator) -> None:
        if other.threshold != self.threshold:
            raise ValueError(
                f"cannot merge threshold {other.threshold} into threshold {self.threshold}"
            )
        if other.bins != self.bins:
            raise ValueError(f"cannot merge {other.bins} bins into {self.bins} bins")
        self.count += other.count
        self.n_unscored += other.n_unscored
        self.n_pred_pos += other.n_pred_pos
        self.sum_p_pos += other.sum_p_pos
        self.sum_p_neg += other.sum_p_neg
        self.sum_var += other.sum_var
        self.hist_pos += other.hist_pos
        self.hist_neg += other.hist_neg

    def to_state(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "count": self.count,
            "n_unscored": self.n_unscored,
            "n_pred_pos": self.n_pred_pos,
            "sum_p_pos": self.sum_p_pos,
            "sum_p_neg": self.sum_p_neg,
            "sum_var": self.sum_var,
            "bins": self.bins,
            "hist_pos": _hist_state(self.hist_pos),
            "hist_neg": _hist_state(self.hist_neg),
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> CBPEAccumulator:
        """Rebuild from ``to_state()``; a state from before the histograms loads with none."""
        acc = cls(float(d["threshold"]), int(d.get("bins", 2000)))
        for k in ("count", "n_unscored", "n_pred_pos"):
            setattr(acc, k, int(d[k]))
        for k in ("sum_p_pos", "sum_p_neg", "sum_var"):
            setattr(acc, k, float(d[k]))
        if "hist_pos" in d:
            _hist_load(acc.hist_pos, d["hist_pos"])
            _hist_load(acc.hist_neg, d["hist_neg"])
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
