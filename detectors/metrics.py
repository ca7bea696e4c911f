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
  perfect fit and 0.0 otherwise (sklearn ``force_finite=True``);
- ``ece`` and the ``calibration.<bin>.*`` reliability points are omitted when no event carried a
  score, or when the accumulator holds scored events of a state written before they existed.

``metric_counts()`` gives, for the metrics whose support is not every outcome, how many events
stand behind each one (the ``counts`` of a metrics message).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote

import numpy as np

from .continuous import RegressionAccumulator, ScoreSummary

__all__ = [
    "CALIBRATION_BINS",
    "MAX_CLASS_METRICS",
    "MAX_CONFUSION_CLASSES",
    "BinaryAccumulator",
    "MulticlassAccumulator",
    "RegressionAccumulator",
    "ScoreSummary",
    "class_metric_name",
    "split_class_metric",
]

# sklearn >= 1.5 clips probabilities at the float64 machine epsilon (no longer 1e-15).
LOG_LOSS_EPS = float(np.finfo(np.float64).eps)
#: Equal-width bins on P(positive) behind ``ece`` and the reliability points: bin ``b`` holds
#: scores in ``[b / 10, (b + 1) / 10)``, and 1.0 falls in the last one.
CALIBRATION_BINS = 10
#: Most classes a multiclass window writes per-class metrics for (the most supported ones), so
#: that the metric names of a window stay bounded whatever the label space.
MAX_CLASS_METRICS = 25
#: Most classes whose confusion cells a window writes (the most supported ones again): at most
#: 100 cells, since segment series (up to 500 values per key) multiply every per-window name.
MAX_CONFUSION_CLASSES = 10


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

    Calibration: :data:`CALIBRATION_BINS` equal-width bins on the score keep (count, sum of
    scores, sum of labels), so ``ece`` = sum over non-empty bins of ``n_b / n * |mean(label)_b -
    mean(score)_b|`` is exact and mergeable; ``calibration.<b>.expected`` (mean score) and
    ``calibration.<b>.observed`` (share of positives) are the reliability diagram's points.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 500)
    >>> score = np.clip(0.3 * y + rng.uniform(0, 0.7, 500), 0, 1)
    >>> acc = BinaryAccumulator()
    >>> acc.update_many(y, (score >= 0.5).astype(int), score)
    >>> m = acc.metrics()
    >>> acc.n, round(m["accuracy"], 3), round(m["roc_auc"], 3), round(m["ece"], 3)
    (500, 0.73, 0.858, 0.121)
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
        # Per calibration bin: scored events, sum of their scores, positives among them.
        self.cal_n = np.zeros(CALIBRATION_BINS, dtype=np.int64)
        self.cal_score = np.zeros(CALIBRATION_BINS, dtype=np.float64)
        self.cal_pos = np.zeros(CALIBRATION_BINS, dtype=np.int64)

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
        step = self.bins // CALIBRATION_BINS
        if step * CALIBRATION_BINS == self.bins:  # calibration bins are runs of histogram bins
            cb = idx // step
        else:
            cb = np.clip((s * CALIBRATION_BINS).astype(np.int64), 0, CALIBRATION_BINS - 1)
        by_class = np.bincount(cb * 2 + yt, minlength=2 * CALIBRATION_BINS)
        self.cal_n += by_class[0::2] + by_class[1::2]
        self.cal_pos += by_class[1::2]
        self.cal_score += np.bincount(cb, weights=s, minlength=CALIBRATION_BINS)
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

    def calibration(self) -> list[tuple[int, int, float, float]] | None:
        """``(bin, n, mean score, share of positives)`` of each non-empty calibration bin.

        None when no event was scored, or when some scored events are not in the bins (an
        accumulator restored from, or merged with, a state written before the bins existed).
        """
        total = int(self.cal_n.sum())
        if total == 0 or total != self.n_scored:
            return None
        return [(int(b), int(self.cal_n[b]), float(self.cal_score[b] / self.cal_n[b]),
                 float(self.cal_pos[b] / self.cal_n[b])) for b in np.flatnonzero(self.cal_n)]  # fmt: skip

    def ece(self) -> float | None:
        """Expected calibration error over :data:`CALIBRATION_BINS` equal-width bins, or None."""
        bins = self.calibration()
        return None if bins is None else self._ece(bins)

    def _ece(self, bins: list[tuple[int, int, float, float]]) -> float:
        return sum(n * abs(obs - exp) for _, n, exp, obs in bins) / self.n_scored

    def metric_counts(self) -> dict[str, int]:
        """Events behind the calibration metrics (scored events; per bin, the bin's events)."""
        bins = self.calibration()
        if bins is None:
            return {}
        out = {"ece": self.n_scored}
        for b, n, _, _ in bins:
            out[f"calibration.{b}.expected"] = out[f"calibration.{b}.observed"] = n
        return out

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
        bins = self.calibration()
        if bins is not None:
            out["ece"] = self._ece(bins)
            for b, _, exp, obs in bins:
                out[f"calibration.{b}.expected"] = exp
                out[f"calibration.{b}.observed"] = obs
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
        self.cal_n += other.cal_n
        self.cal_score += other.cal_score
        self.cal_pos += other.cal_pos

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
            "cal": {"n": self.cal_n.tolist(), "s": self.cal_score.tolist(), "p": self.cal_pos.tolist()},
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
        cal = d.get("cal")  # absent from states written before calibration: ``ece`` is then omitted
        if cal is not None:
            acc.cal_n[:] = np.asarray(cal["n"], dtype=np.int64)
            acc.cal_score[:] = np.asarray(cal["s"], dtype=np.float64)
            acc.cal_pos[:] = np.asarray(cal["p"], dtype=np.int64)
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


def class_metric_name(metric: str, *classes: str) -> str:
    """``metric.<class>[.<class>]`` with ``%`` and ``.`` of each class name percent-encoded.

    The encoding keeps names splittable on ``.`` whatever the labels are (a class ``"0.5"``
    is written ``0%2E5``); ordinary class names are written as they are.

    >>> class_metric_name("recall", "cat"), class_metric_name("confusion", "0.5", "1%")
    ('recall.cat', 'confusion.0%2E5.1%25')
    """
    return ".".join([metric, *(c.replace("%", "%25").replace(".", "%2E") for c in classes)])


def split_class_metric(name: str) -> tuple[str, tuple[str, ...]]:
    """Inverse of :func:`class_metric_name`.

    >>> split_class_metric("confusion.0%2E5.1%25")
    ('confusion', ('0.5', '1%'))
    """
    metric, *classes = name.split(".")
    return metric, tuple(unquote(c) for c in classes)


class MulticlassAccumulator:
    """Confusion matrix over string labels; macro, micro and weighted P/R/F1, and per class.

    Classes are the union of every true and predicted label seen, as sklearn infers them.
    Labels are compared as strings: ``1`` and ``"1"`` are the same class, named ``"1"``.

    Per class ``c`` (:func:`class_metric_name` spells the names): ``precision.c``, ``recall.c``,
    ``f1.c`` (sklearn's ``precision_recall_fscore_support``, ``zero_division=0``), ``support.c``
    (true events of ``c``) for the :data:`MAX_CLASS_METRICS` classes with the largest support
    (then predicted count, then name), and ``confusion.t.p`` (events of true class ``t`` predicted
    ``p``; non-zero cells only, a missing cell is 0) among the first :data:`MAX_CONFUSION_CLASSES`
    of them; ``class_count`` is every class seen.

    Examples
    --------
    >>> acc = MulticlassAccumulator()
    >>> acc.update_many(["cat", "dog", "dog", "bird"], ["cat", "dog", "cat", "bird"])
    >>> m = acc.metrics()
    >>> m["accuracy"], round(m["f1_macro"], 4), acc.classes
    (0.75, 0.7778, ['cat', 'dog', 'bird'])
    >>> m["recall.dog"], m["support.dog"], m["confusion.dog.cat"]
    (0.5, 2.0, 1.0)
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
        out["class_count"] = float(len(self.classes))
        shown = self._shown()
        for i in shown:
            c = self.classes[i]
            out[class_metric_name("precision", c)] = float(prec[i])
            out[class_metric_name("recall", c)] = float(rec[i])
            out[class_metric_name("f1", c)] = float(f1[i])
            out[class_metric_name("support", c)] = float(true[i])
        top = shown[:MAX_CONFUSION_CLASSES]
        sub = self.cm[np.ix_(top, top)]
        for a, b in zip(*np.nonzero(sub), strict=True):
            out[class_metric_name("confusion", self.classes[top[a]], self.classes[top[b]])] = float(sub[a, b])
        return out

    def _shown(self) -> list[int]:
        """Ids of the classes that get per-class metrics: the :data:`MAX_CLASS_METRICS` with the
        largest support, then predicted count, then name (independent of arrival order)."""
        true, pred = self.cm.sum(axis=1), self.cm.sum(axis=0)
        order = sorted(range(len(self.classes)), key=lambda i: (-int(true[i]), -int(pred[i]), self.classes[i]))
        return order[:MAX_CLASS_METRICS]

    def metric_counts(self) -> dict[str, int]:
        """Events behind the per-class metrics: predicted ``c`` (precision), true ``c`` (recall),
        either (f1); ``support`` and ``confusion`` cells count the whole window."""
        true, pred = self.cm.sum(axis=1), self.cm.sum(axis=0)
        out: dict[str, int] = {}
        for i in self._shown():
            c = self.classes[i]
            out[class_metric_name("precision", c)] = int(pred[i])
            out[class_metric_name("recall", c)] = int(true[i])
            out[class_metric_name("f1", c)] = int(true[i] + pred[i] - self.cm[i, i])
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
