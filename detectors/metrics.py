"""Mergeable metric accumulators for joined outcomes (binary, multiclass, regression, scores).

``RegressionAccumulator`` and ``ScoreSummary`` live in ``continuous.py`` (module size) and
are re-exported here, so ``driftline.detectors.metrics`` holds the whole metric API.

Each accumulator keeps sufficient statistics only, so partial aggregates from several
partitions or workers ``merge`` into the aggregate of the union. ``metrics()`` returns
the contract names; a metric that is undefined is omitted (never NaN), except where
scikit-learn defines a value, which we follow:

- precision / recall / f1 with a zero denominator are 0.0 (sklearn ``zero_division=0``);
- ``roc_auc`` is omitted unless both classes were seen with a score;
- ``log_loss`` and ``brier`` are omitted when no event carried a score;
- ``r2`` is omitted for n < 2 (sklearn returns NaN); a constant ``y_true`` gives 1.0 for a
  perfect fit and 0.0 otherwise (sklearn ``force_finite=True``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .continuous import RegressionAccumulator, ScoreSummary

__all__ = ["BinaryAccumulator", "MulticlassAccumulator", "RegressionAccumulator", "ScoreSummary"]

# sklearn >= 1.5 clips probabilities at the float64 machine epsilon (no longer 1e-15).
LOG_LOSS_EPS = float(np.finfo(np.float64).eps)


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


class BinaryAccumulator:
    """Confusion counts, score histograms and loss sums for a binary classifier.

    Parameters
    ----------
    bins
        Uniform score-histogram bins over [0, 1] for ROC AUC. AUC is the Mann-Whitney
        statistic over bins with pairs inside one bin counted as half, so its error is at
        most ``roc_auc_error_bound()`` = sum_b pos_b * neg_b / (2 P N). With 2,000 bins
        that is < 0.005 unless a large share of both classes sits in one 0.0005-wide bin.
        Scores outside [0, 1] go to the end bins.
    log_loss_eps
        Probabilities are clipped to ``[eps, 1 - eps]`` as sklearn's ``log_loss`` does.

    Notes
    -----
    ``positive_rate`` is the share of *predicted* positives, ``(tp + fp) / n``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 500)
    >>> score = np.clip(0.3 * y + rng.uniform(0, 0.7, 500), 0, 1)
    >>> acc = BinaryAccumulator()
    >>> acc.update_many(y, (score >= 0.5).astype(int), score)
    >>> m = acc.metrics()
    >>> acc.n, round(m["accuracy"], 3), round(m["roc_auc"], 3)
    (500, 0.73, 0.858)
    """

    def __init__(self, bins: int = 2000, log_loss_eps: float = LOG_LOSS_EPS) -> None:
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins!r}")
        self.bins = int(bins)
        self.log_loss_eps = float(log_loss_eps)
        self._reset()

    def _reset(self) -> None:
        self.tp = self.fp = self.tn = self.fn = 0
        self.pos_hist = np.zeros(self.bins, dtype=np.int64)
        self.neg_hist = np.zeros(self.bins, dtype=np.int64)
        self.n_scored = 0
        self.sum_log_loss = 0.0
        self.sum_brier = 0.0

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    def update_many(
        self, y_true: np.ndarray, y_pred: np.ndarray, score: np.ndarray | None = None
    ) -> None:
        """Add a batch. ``y_true``/``y_pred`` are 0/1; ``score`` is P(positive), NaN = none."""
        yt = np.asarray(y_true).astype(bool).ravel()
        yp = np.asarray(y_pred).astype(bool).ravel()
        if yt.shape != yp.shape:
            raise ValueError("y_true and y_pred must have the same length")
        # One bincount over 2*y_true + y_pred gives tn, fp, fn, tp in one pass.
        c = np.bincount(yt.astype(np.int64) * 2 + yp, minlength=4)
        self.tn += int(c[0])
        self.fp += int(c[1])
        self.fn += int(c[2])
        self.tp += int(c[3])
        if score is None:
            return
        s = np.asarray(score, dtype=np.float64).ravel()
        if s.shape != yt.shape:
            raise ValueError("score must have the same length as y_true")
        keep = ~np.isnan(s)
        if not keep.all():
            s, yt = s[keep], yt[keep]
        if s.size == 0:
            return
        idx = np.clip((s * self.bins).astype(np.int64), 0, self.bins - 1)
        # One bincount over (bin, class) pairs fills both histograms.
        both = np.bincount(idx * 2 + yt, minlength=2 * self.bins).reshape(self.bins, 2)
        self.neg_hist += both[:, 0]
        self.pos_hist += both[:, 1]
        self.n_scored += int(s.size)
        # P(true class), clipped like sklearn clips each column of [1 - p, p].
        eps = self.log_loss_eps
        p_true = np.clip(np.where(yt, s, 1.0 - s), eps, 1.0 - eps)
        self.sum_log_loss -= float(np.log(p_true).sum())
        diff = yt - s
        self.sum_brier += float(diff @ diff)

    def roc_auc(self) -> float | None:
        """Histogram ROC AUC, or None when one class has no scored event."""
        n_pos, n_neg = int(self.pos_hist.sum()), int(self.neg_hist.sum())
        if n_pos == 0 or n_neg == 0:
            return None
        # Positives in strictly higher bins than each negative bin, plus half of the same bin.
        pos_above = np.cumsum(self.pos_hist[::-1])[::-1] - self.pos_hist
        wins = np.dot(self.neg_hist, pos_above) + 0.5 * np.dot(self.neg_hist, self.pos_hist)
        return float(wins) / (n_pos * n_neg)

    def roc_auc_error_bound(self) -> float | None:
        """Worst-case |histogram AUC - exact AUC| given the current histograms."""
        n_pos, n_neg = int(self.pos_hist.sum()), int(self.neg_hist.sum())
        if n_pos == 0 or n_neg == 0:
            return None
        return 0.5 * float(np.dot(self.pos_hist, self.neg_hist)) / (n_pos * n_neg)

    def metrics(self) -> dict[str, float]:
        n = self.n
        if n == 0:
            return {}
        tp, fp, tn, fn = self.tp, self.fp, self.tn, self.fn
        out = {
            "accuracy": (tp + tn) / n,
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "positive_rate": (tp + fp) / n,
            "tp": float(tp),
            "fp": float(fp),
            "tn": float(tn),
            "fn": float(fn),
        }
        auc = self.roc_auc()
        if auc is not None:
            out["roc_auc"] = auc
        if self.n_scored:
            out["log_loss"] = self.sum_log_loss / self.n_scored
            out["brier"] = self.sum_brier / self.n_scored
        return out

    def merge(self, other: BinaryAccumulator) -> None:
        if other.bins != self.bins:
            raise ValueError(f"cannot merge {other.bins} bins into {self.bins} bins")
        self.tp += other.tp
        self.fp += other.fp
        self.tn += other.tn
        self.fn += other.fn
        self.pos_hist += other.pos_hist
        self.neg_hist += other.neg_hist
        self.n_scored += other.n_scored
        self.sum_log_loss += other.sum_log_loss
        self.sum_brier += other.sum_brier

    def to_state(self) -> dict[str, Any]:
        return {
            "bins": self.bins,
            "log_loss_eps": self.log_loss_eps,
            "tp": self.tp,
            "fp": self.fp,
            "tn": self.tn,
            "fn": self.fn,
            "pos_hist": _hist_state(self.pos_hist),
            "neg_hist": _hist_state(self.neg_hist),
            "n_scored": self.n_scored,
            "sum_log_loss": self.sum_log_loss,
            "sum_brier": self.sum_brier,
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> BinaryAccumulator:
        acc = cls(int(d["bins"]), float(d["log_loss_eps"]))
        for k in ("tp", "fp", "tn", "fn", "n_scored"):
            setattr(acc, k, int(d[k]))
        acc.sum_log_loss = float(d["sum_log_loss"])
        acc.sum_brier = float(d["sum_brier"])
        for name in ("pos_hist", "neg_hist"):
            _hist_load(getattr(acc, name), d[name])
        return acc


def _hist_state(h: np.ndarray) -> list[int] | dict[str, list[int]]:
    """A score histogram for a state: dense when a quarter of its bins or more are used,
    else its non-empty bins (``{"i": bins, "n": counts}``).

    Window states are written every batch; flat lists are what ``tolist`` and orjson turn
    out fastest (nested ``[[bin, count], ...]`` pairs cost ~6x more for a full histogram).
    """
    nz = np.flatnonzero(h)
    if 4 * len(nz) >= len(h):
        return h.tolist()  # type: ignore[no-any-return]
    return {"i": nz.tolist(), "n": h[nz].tolist()}


def _hist_load(h: np.ndarray, state: Any) -> None:
    """Fill ``h`` from ``_hist_state``'s output, or the ``[[bin, count], ...]`` pairs of older states."""
    if isinstance(state, dict):
        h[np.asarray(state["i"], dtype=np.int64)] = np.asarray(state["n"], dtype=np.int64)
    elif state and not isinstance(state[0], list):
        h[:] = np.asarray(state, dtype=np.int64)
    else:
        for i, c in state:
            h[int(i)] = int(c)


class MulticlassAccumulator:
    """Confusion matrix over string labels; macro, micro and weighted P/R/F1.

    Classes are the union of every true and predicted label seen, as sklearn infers them.
    Labels are compared as strings: ``1`` and ``"1"`` are the same class, named ``"1"``.

    Examples
    --------
    >>> acc = MulticlassAccumulator()
    >>> acc.update_many(["cat", "dog", "dog", "bird"], ["cat", "dog", "cat", "bird"])
    >>> m = acc.metrics()
    >>> m["accuracy"], round(m["f1_macro"], 4), acc.classes
    (0.75, 0.7778, ['cat', 'dog', 'bird'])
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.classes: list[str] = []
        self._index: dict[str, int] = {}
        # Raw label value (str, int...) -> class id: a cache in front of _index.
        self._lookup: dict[Any, int] = {}
        # cm[i, j]: true class i predicted as class j.
        self.cm = np.zeros((0, 0), dtype=np.int64)

    @property
    def n(self) -> int:
        return int(self.cm.sum())

    def _class_ids(self, labels: Sequence[Any]) -> np.ndarray:
        # One dict lookup per label (C-level in the comprehension); new labels are rare.
        get = self._lookup.get
        ids = [get(v, -1) for v in labels]
        if -1 in ids:
            for k, v in enumerate(labels):
                if ids[k] == -1:
                    ids[k] = self._register(v)
        return np.fromiter(ids, dtype=np.int64, count=len(ids))

    def _register(self, label: Any) -> int:
        """Class id of ``label``; labels are compared as strings (0 and "0" are one class)."""
        name = str(label)
        i = self._index.get(name)
        if i is None:
            i = self._index[name] = len(self.classes)
            self.classes.append(name)
        self._lookup[label] = i
        return i

    def _grow(self) -> None:
        k = len(self.classes)
        if self.cm.shape[0] < k:
            cm = np.zeros((k, k), dtype=np.int64)
            cm[: self.cm.shape[0], : self.cm.shape[1]] = self.cm
            self.cm = cm

    def update_many(self, y_true: Sequence[str], y_pred: Sequence[str]) -> None:
        if len(y_true) != len(y_pred):
            raise ValueError("y_true and y_pred must have the same length")
        if len(y_true) == 0:
            return
        t = self._class_ids(y_true)
        p = self._class_ids(y_pred)
        self._grow()
        k = len(self.classes)
        self.cm += np.bincount(t * k + p, minlength=k * k).reshape(k, k)

    def metrics(self) -> dict[str, float]:
        n = self.n
        if n == 0:
            return {}
        tp = np.diag(self.cm).astype(np.float64)
        pred = self.cm.sum(axis=0).astype(np.float64)
        true = self.cm.sum(axis=1).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            prec = np.where(pred > 0, tp / pred, 0.0)
            rec = np.where(true > 0, tp / true, 0.0)
            f1den = pred + true
            f1 = np.where(f1den > 0, 2 * tp / f1den, 0.0)
        acc = float(tp.sum()) / n
        out = {"accuracy": acc}
        weights = true / n
        for name, per_class in (("precision", prec), ("recall", rec), ("f1", f1)):
            out[f"{name}_macro"] = float(per_class.mean())
            # Every label counts, so micro P = micro R = micro F1 = accuracy.
            out[f"{name}_micro"] = acc
            out[f"{name}_weighted"] = float(np.dot(per_class, weights))
        return out

    def merge(self, other: MulticlassAccumulator) -> None:
        ids = np.array([self._index.get(c, -1) for c in other.classes], dtype=np.int64)
        for j, c in enumerate(other.classes):
            if ids[j] < 0:
                ids[j] = self._register(c)
        self._grow()
        if ids.size:
            self.cm[np.ix_(ids, ids)] += other.cm

    def to_state(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "cm": self.cm.tolist()}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> MulticlassAccumulator:
        acc = cls()
        acc.classes = [str(c) for c in d["classes"]]
        acc._index = {c: i for i, c in enumerate(acc.classes)}
        acc._lookup = dict(acc._index)
        k = len(acc.classes)
        acc.cm = np.asarray(d["cm"], dtype=np.int64).reshape(k, k)
        return acc
