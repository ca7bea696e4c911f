"""Group fairness of a binary classifier: per-group rates and fairlearn's disparities.

``GroupRates`` keeps one confusion matrix (tn, fp, fn, tp) per value of a protected
attribute, so partials from several partitions ``merge`` into the aggregate of the union.
Definitions follow fairlearn (``fairlearn.metrics``, ``method="between_groups"``) over the
groups seen:

- ``positive_rate`` (fairlearn's ``selection_rate``) = (tp + fp) / n;
- ``tpr`` = tp / (tp + fn), ``fpr`` = fp / (fp + tn), ``precision`` = tp / (tp + fp); a zero
  denominator gives 0.0, as sklearn's ``confusion_matrix(normalize="true")`` (which
  fairlearn's ``true_positive_rate`` / ``false_positive_rate`` use) and ``zero_division=0``;
- ``demographic_parity_difference`` = max - min positive rate, ``_ratio`` = min / max;
- ``equal_opportunity_difference`` = max - min TPR, ``_ratio`` = min / max;
- ``equalized_odds_difference`` = max(TPR difference, FPR difference) and
  ``equalized_odds_ratio`` = min(TPR ratio, FPR ratio) (fairlearn's ``agg="worst_case"``).

A ratio whose maximum is 0 (0 / 0) is omitted, never NaN (see ``metrics.py``). Because a
group without actual positives has TPR 0.0 by that convention, a disparity over small
groups is mostly noise: ``FairnessRule`` judges a metric only when every group has
``min_group_events`` events in the metric's denominators.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["DISPARITY_METRICS", "FairnessRule", "FairnessViolation", "GroupRates", "check_rules"]

# Disparity name -> (per-group rates it compares, whether it is a ratio: lower is worse).
DISPARITY_METRICS: dict[str, tuple[tuple[str, ...], bool]] = {
    "demographic_parity_difference": (("positive_rate",), False),
    "demographic_parity_ratio": (("positive_rate",), True),
    "equal_opportunity_difference": (("tpr",), False),
    "equal_opportunity_ratio": (("tpr",), True),
    "equalized_odds_difference": (("tpr", "fpr"), False),
    "equalized_odds_ratio": (("tpr", "fpr"), True),
}

# Per-group rate -> columns of (tn, fp, fn, tp) that form its denominator.
_DENOMINATORS = {"positive_rate": (0, 1, 2, 3), "tpr": (2, 3), "fpr": (0, 1)}


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


class GroupRates:
    """Per-group confusion counts of a binary classifier and fairlearn's disparities.

    Group values are compared as strings (``1`` and ``"1"`` are one group); events whose
    group is ``None`` are counted in ``n_missing_group`` and otherwise ignored.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> group = rng.choice(["a", "b"], 1000)
    >>> y = (rng.random(1000) < 0.4).astype(int)
    >>> pred = (rng.random(1000) < np.where(group == "a", 0.5, 0.3)).astype(int)
    >>> rates = GroupRates()
    >>> rates.update_many(group, y, pred)
    >>> {g: round(r["positive_rate"], 3) for g, r in rates.group_metrics().items()}
    {'a': 0.564, 'b': 0.32}
    >>> round(rates.disparities()["demographic_parity_difference"], 3)
    0.243
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.groups: list[str] = []
        self._index: dict[str, int] = {}
        # counts[g] = (tn, fp, fn, tp) of group g: the bincount order of 2 * y_true + y_pred.
        self.counts = np.zeros((0, 4), dtype=np.int64)
        self.n_missing_group = 0

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def _group_id(self, name: str) -> int:
        i = self._index.get(name)
        if i is None:
            i = self._index[name] = len(self.groups)
            self.groups.append(name)
        return i

    def _grow(self) -> None:
        k = len(self.groups)
        if self.counts.shape[0] < k:
            grown = np.zeros((k, 4), dtype=np.int64)
            grown[: self.counts.shape[0]] = self.counts
            self.counts = grown

    def update_many(
        self, group: Sequence[Any] | np.ndarray, y_true: npt.ArrayLike, y_pred: npt.ArrayLike
    ) -> None:
        """Add a batch: ``group`` values (any, compared as strings), 0/1 truth and prediction."""
        yt = np.asarray(y_true).astype(bool).ravel()
        yp = np.asarray(y_pred).astype(bool).ravel()
        if not len(group) == yt.size == yp.size:
            raise ValueError("group, y_true and y_pred must have the same length")
        if yt.size == 0:
            return
        names = np.array(["" if g is None else str(g) for g in group], dtype=object)
        present = np.array([g is not None for g in group], dtype=bool)
        if not present.all():
            self.n_missing_group += int((~present).sum())
            names, yt, yp = names[present], yt[present], yp[present]
            if names.size == 0:
                return
        uniq, inv = np.unique(names.astype(str), return_inverse=True)
        ids = np.array([self._group_id(str(u)) for u in uniq], dtype=np.int64)
        self._grow()
        cell = inv.astype(np.int64) * 4 + yt.astype(np.int64) * 2 + yp
        self.counts[ids] += np.bincount(cell, minlength=4 * uniq.size).reshape(uniq.size, 4)

    def group_metrics(self) -> dict[str, dict[str, float]]:
        """Per group: ``n``, ``positive_rate``, ``tpr``, ``fpr``, ``precision`` (and counts)."""
        out: dict[str, dict[str, float]] = {}
        for name, (tn, fp, fn, tp) in zip(self.groups, self.counts.tolist(), strict=True):
            n = tn + fp + fn + tp
            if n == 0:
                continue
            out[name] = {
                "n": float(n),
                "positive_rate": (tp + fp) / n,
                "tpr": _ratio(tp, tp + fn),
                "fpr": _ratio(fp, fp + tn),
                "precision": _ratio(tp, tp + fp),
                "tp": float(tp),
                "fp": float(fp),
                "tn": float(tn),
                "fn": float(fn),
            }
        return out

    def disparities(self) -> dict[str, float]:
        """fairlearn's between-group disparities; empty when no group has an event."""
        per_group = self.group_metrics()
        if not per_group:
            return {}
        out: dict[str, float] = {}
        for metric, (rates, is_ratio) in DISPARITY_METRICS.items():
            values = []
            for rate in rates:
                r = np.array([g[rate] for g in per_group.values()])
                if is_ratio:
                    if r.max() == 0:
                        break  # 0 / 0: undefined, omitted
                    values.append(float(r.min() / r.max()))
                else:
                    values.append(float(r.max() - r.min()))
            else:
                out[metric] = min(values) if is_ratio else max(values)
        return out

    def min_denominator(self, metric: str) -> int:
        """Fewest events any group has in the denominators ``metric`` compares (0 if none)."""
        if metric not in DISPARITY_METRICS:
            raise ValueError(f"unknown fairness metric {metric!r}")
        live = self.counts[self.counts.sum(axis=1) > 0]
        if live.shape[0] == 0:
            return 0
        rates, _ = DISPARITY_METRICS[metric]
        return min(int(live[:, list(_DENOMINATORS[r])].sum(axis=1).min()) for r in rates)

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat metric names for a metrics message: the disparities, ``prefix`` prepended."""
        return {prefix + k: v for k, v in self.disparities().items()}

    def merge(self, other: GroupRates) -> None:
        ids = [self._group_id(g) for g in other.groups]
        self._grow()
        if ids:
            self.counts[ids] += other.counts
        self.n_missing_group += other.n_missing_group

    def to_state(self) -> dict[str, Any]:
        return {
            "groups": list(self.groups),
            "counts": self.counts.tolist(),
            "n_missing_group": self.n_missing_group,
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> GroupRates:
        acc = cls()
        acc.groups = [str(g) for g in d["groups"]]
        acc._index = {g: i for i, g in enumerate(acc.groups)}
        acc.counts = np.asarray(d["counts"], dtype=np.int64).reshape(len(acc.groups), 4)
        acc.n_missing_group = int(d["n_missing_group"])
        return acc


@dataclass(frozen=True)
class FairnessViolation:
    """A disparity past its rule's threshold, with the groups at both ends."""

    metric: str
    value: float
    threshold: float
    worst_group: str
    best_group: str
    group_counts: dict[str, int] = field(default_factory=dict)

    @property
    def message(self) -> str:
        op = "<" if DISPARITY_METRICS[self.metric][1] else ">"
        return (
            f"{self.metric} {self.value:.4g} {op} {self.threshold:.4g} "
            f"({self.worst_group!r} vs {self.best_group!r})"
        )


@dataclass(frozen=True)
class FairnessRule:
    """Fire when a disparity passes ``threshold``, once every group has enough events.

    A ``*_difference`` violates above ``threshold``, a ``*_ratio`` below it (the
    four-fifths rule is ``FairnessRule("demographic_parity_ratio", 0.8)``). Every group
    with an event must have ``min_group_events`` events in the denominators the metric
    compares (all events for demographic parity; actual positives for equal opportunity;
    actual positives and actual negatives for equalized odds), and at least two groups
    must exist; otherwise ``check`` returns None: too few events to judge.

    Examples
    --------
    >>> rates = GroupRates()
    >>> rates.update_many(["a"] * 100 + ["b"] * 100, [0, 1] * 100, [1] * 60 + [0] * 40 + [1] * 20 + [0] * 80)
    >>> FairnessRule("demographic_parity_ratio", 0.8, min_group_events=50).check(rates).message
    "demographic_parity_ratio 0.3333 < 0.8 ('b' vs 'a')"
    >>> FairnessRule("demographic_parity_ratio", 0.8, min_group_events=150).check(rates) is None
    True
    """

    metric: str
    threshold: float
    min_group_events: int = 100

    def __post_init__(self) -> None:
        if self.metric not in DISPARITY_METRICS:
            raise ValueError(
                f"metric must be one of {sorted(DISPARITY_METRICS)}, got {self.metric!r}"
            )
        if self.min_group_events < 1:
            raise ValueError(f"min_group_events must be >= 1, got {self.min_group_events!r}")

    def check(self, rates: GroupRates) -> FairnessViolation | None:
        per_group = rates.group_metrics()
        if len(per_group) < 2 or rates.min_denominator(self.metric) < self.min_group_events:
            return None
        value = rates.disparities().get(self.metric)
        if value is None:
            return None
        is_ratio = DISPARITY_METRICS[self.metric][1]
        if (value >= self.threshold) if is_ratio else (value <= self.threshold):
            return None
        # The groups at both ends of the compared rate that decides the value: for a
        # difference the widest spread, for a ratio the smallest; the low group comes first.
        ends = []
        for rate in DISPARITY_METRICS[self.metric][0]:
            r = {g: m[rate] for g, m in per_group.items()}
            lo, hi = min(r, key=r.__getitem__), max(r, key=r.__getitem__)
            spread = (r[lo] / r[hi] if r[hi] else 1.0) if is_ratio else r[hi] - r[lo]
            ends.append((spread, lo, hi))
        _, lo, hi = min(ends) if is_ratio else max(ends)
        return FairnessViolation(
            metric=self.metric,
            value=value,
            threshold=self.threshold,
            worst_group=lo,
            best_group=hi,
            group_counts={g: int(m["n"]) for g, m in per_group.items()},
        )


def check_rules(rules: Sequence[FairnessRule], rates: GroupRates) -> list[FairnessViolation]:
    """The violations of ``rules`` on ``rates`` (rules without enough events are skipped)."""
    out = []
    for rule in rules:
        v = rule.check(rates)
        if v is not None:
            out.append(v)
    return out
