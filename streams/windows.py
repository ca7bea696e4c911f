"""Mergeable per-window aggregates: what one partition knows of one window of one series.

A series is (model_id, model_version, segment); a window is an event-time tumbling
interval ``[start, start + length)``. A ``WindowPartial`` holds the label-free part
(prediction count, serving outcomes, latency sketch, score/value summary) and the label-based part
(labelled count, label-delay sketch, the task's metric accumulator). Partials from
different partitions and workers ``merge`` into the aggregate of the union, so the merge
stage can combine them in any order.

A ranking window's accumulator is a ``RankingAccumulator`` (K and catalog size from the
models file; partials of one series share them, so they merge); its metrics count the judged
lists behind the @K metrics and every joined list behind the others.

Two optional slots, ``None`` (and absent from the state) unless the model asks for them:
``profile``, the window's feature profile (``Profile.new_window_like`` of the model's
reference, whole-model series only), and ``cbpe``, a ``CBPEAccumulator`` of the scores of
a binary model (``estimated_*`` metrics, through the score calibrator ``metrics`` is given,
and ``cbpe_error_*`` = estimate - realised once labels exist). A third, ``fairness``, maps each
protected segment key of a binary model with ``fairness`` set to a ``GroupRates`` of its
labelled events (whole-model series only); the merge stage turns it into ``fairness.*``
metrics (``driftline.streams.merge``).

Serving outcome: ``add_status`` counts the predictions that carried a ``status`` and those whose
status was ``error``; a window with at least one gets ``error_count`` and ``error_rate`` =
errors / every prediction of the window (``prediction_count``), a window without any gets neither.
Errors with an ``error_code`` are also counted per code: ``error_count.<code>`` for the window's
:data:`TOP_ERROR_CODES` most frequent codes, the rest in ``error_count.__other__``; a partial keeps
at most :data:`MAX_ERROR_CODES` distinct codes (later new ones count as ``__other__``), so the
per-code counts are exact while a window sees no more than that.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from driftline.detectors.calibration import ScoreCalibrator
from driftline.detectors.cbpe import CBPEAccumulator
from driftline.detectors.fairness import GroupRates
from driftline.detectors.metrics import (
    BinaryAccumulator,
    MulticlassAccumulator,
    RegressionAccumulator,
    ScoreSummary,
    class_metric_name,
)
from driftline.detectors.profile import Profile
from driftline.detectors.ranking import RankingAccumulator
from driftline.detectors.sketch import QuantileSketch

Accumulator = BinaryAccumulator | MulticlassAccumulator | RegressionAccumulator | RankingAccumulator


class SeriesKey(NamedTuple):
    model_id: str
    model_version: str
    segment: str
    window_start: float

    def encode(self) -> str:
        return f"{self.model_id}\x1f{self.model_version}\x1f{self.segment}\x1f{self.window_start!r}"

    @classmethod
    def decode(cls, s: str) -> SeriesKey:
        m, v, seg, ws = s.split("\x1f")
        return cls(m, v, seg, float(ws))


def window_start(ts: float, length: float) -> float:
    """Start of the tumbling window holding ``ts``.

    >>> window_start(125.0, 60.0), window_start(120.0, 60.0)
    (120.0, 120.0)
    """
    return float(ts // length * length)


def _new_accumulator(task: str, ranking_k: int, catalog_size: int | None) -> Accumulator:
    if task == "binary":
        return BinaryAccumulator()
    if task == "multiclass":
        return MulticlassAccumulator()
    if task == "ranking":
        return RankingAccumulator(ranking_k, catalog_size)
    return RegressionAccumulator()


CBPE_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
#: Distinct serving error codes a window partial keeps; further new codes count as OTHER_ERROR_CODE.
MAX_ERROR_CODES = 100
#: Error codes a window reports by name (``error_count.<code>``), the most frequent first.
TOP_ERROR_CODES = 10
OTHER_ERROR_CODE = "__other__"

_ACC_TYPES: dict[str, Any] = {
    "binary": BinaryAccumulator,
    "multiclass": MulticlassAccumulator,
    "regression": RegressionAccumulator,
    "ranking": RankingAccumulator,
}
# Ranking metrics averaged over the judged lists (at least one relevant item); the others are over every list.
_JUDGED_METRICS = frozenset(("precision_at_k", "recall_at_k", "map_at_k", "ndcg_at_k", "mrr", "hit_rate_at_k"))


class WindowPartial:
    """Label-free and label-based aggregates of one series in one window.

    Examples
    --------
    >>> import numpy as np
    >>> w = WindowPartial("binary")
    >>> w.add_predictions(np.array([10.0, 20.0]), np.array([0.2, 0.9]))
    >>> w.add_outcomes(np.array([0, 1]), np.array([0, 1]), np.array([0.2, 0.9]), np.array([5.0, 7.0]))
    >>> m, counts = w.metrics(60.0)
    >>> m["prediction_count"], m["accuracy"], m["label_coverage"]
    (2.0, 1.0, 1.0)
    """

    __slots__ = ("task", "prediction_count", "latency", "scores", "labeled", "label_delay", "acc", "unlabeled_expired", "late_predictions", "duplicate_predictions",
                 "profile", "cbpe", "fairness", "status_count", "error_count", "error_codes")

    def __init__(self, task: str, ranking_k: int = 10, catalog_size: int | None = None) -> None:
        self.task = task
        self.prediction_count = 0
        self.latency = QuantileSketch()
        self.scores = ScoreSummary()
        self.labeled = 0
        self.label_delay = QuantileSketch()
        self.acc: Accumulator = _new_accumulator(task, ranking_k, catalog_size)
        self.unlabeled_expired = 0
        self.late_predictions = 0
        self.duplicate_predictions = 0
        self.profile: Profile | None = None
        self.cbpe: CBPEAccumulator | None = None
        self.fairness: dict[str, GroupRates] | None = None
        self.status_count = 0  # predictions that carried a serving status
        self.error_count = 0  # of those, status "error"
        self.error_codes: dict[str, int] | None = None  # error_code -> errors, None until one is seen

    def add_status(self, error: bool, code: str | None = None) -> None:
        """Count one prediction's serving status (``error``: it was ``"error"``, else ``"ok"``)
        and its ``error_code``, if any."""
        self.status_count += 1
        self.error_count += error
        if code is not None:
            self._add_code(code, 1)

    def _add_code(self, code: str, n: int) -> None:
        codes = self.error_codes
        if codes is None:
            codes = self.error_codes = {}
        if code not in codes and len(codes) >= MAX_ERROR_CODES:
            code = OTHER_ERROR_CODE
        codes[code] = codes.get(code, 0) + n

    def add_predictions(self, latencies: np.ndarray, scores: np.ndarray) -> None:
        """Count predictions; NaN latencies/scores (absent fields) are skipped by the sketches."""
        self.prediction_count += len(latencies)
        if len(latencies):
            self.latency.add_many(latencies[~np.isnan(latencies)])
        if len(scores):
            self.scores.update_many(scores[~np.isnan(scores)])

    def add_outcomes(self, y_true: Any, y_pred: Any, score: np.ndarray | None, delays: np.ndarray) -> None:
        """Add joined outcomes (binary: 0/1 ints; multiclass: strings; regression: floats)."""
        self.labeled += len(delays)
        self.label_delay.add_many(np.maximum(delays, 0.0))
        if isinstance(self.acc, BinaryAccumulator):
            self.acc.update_many(y_true, y_pred, score)
        elif isinstance(self.acc, RankingAccumulator):
            raise TypeError("a ranking window takes add_ranking, not add_outcomes")
        else:
            self.acc.update_many(y_true, y_pred)

    def add_ranking(self, items: list[list[str]], feedback: list[dict[str, list[str]]], delays: np.ndarray) -> None:
        """Add joined ranked lists with their feedback (``clicked``, ``converted``, optional ``relevant``)."""
        if not isinstance(self.acc, RankingAccumulator):
            raise TypeError(f"a {self.task} window takes add_outcomes, not add_ranking")
        self.labeled += len(delays)
        self.label_delay.add_many(np.maximum(delays, 0.0))
        # ``relevant`` replaces clicked | converted as the relevance set where it is given.
        relevant = [f["relevant"] if "relevant" in f else [*f["clicked"], *f["converted"]] for f in feedback]
        self.acc.update_many(items, relevant, [f["clicked"] for f in feedback], [f["converted"] for f in feedback])

    def merge(self, other: WindowPartial) -> None:
        self.prediction_count += other.prediction_count
        self.latency.merge(other.latency)
        self.scores.merge(other.scores)
        self.labeled += other.labeled
        self.label_delay.merge(other.label_delay)
        if isinstance(self.acc, RankingAccumulator) and isinstance(other.acc, RankingAccumulator) and (
                (self.acc.k, self.acc.catalog_size) != (other.acc.k, other.acc.catalog_size)):
            pass  # ranking_k or catalog_size changed while the window was open: sums at another K cannot be added
        else:
            self.acc.merge(other.acc)  # type: ignore[arg-type]
        self.unlabeled_expired += other.unlabeled_expired
        self.late_predictions += other.late_predictions
        self.duplicate_predictions += other.duplicate_predictions
        self.status_count += other.status_count
        self.error_count += other.error_count
        for code, count in (other.error_codes or {}).items():
            self._add_code(code, count)
        if other.profile is not None:
            if self.profile is None or self.profile.version < other.profile.version:
                # A partial profiled against a newer reference (a new baseline after a restart)
                # replaces the older one: their bins differ, they cannot be added.
                self.profile = Profile.from_state(other.profile.to_state())
            elif self.profile.version == other.profile.version:
                self.profile.merge(other.profile)
        if other.cbpe is not None:
            if self.cbpe is None:
                self.cbpe = CBPEAccumulator.from_state(other.cbpe.to_state())
            else:
                self.cbpe.merge(other.cbpe)
        if other.fairness is not None:
            if self.fairness is None:
                self.fairness = {}
            for key, rates in other.fairness.items():
                mine = self.fairness.get(key)
                if mine is None:
                    self.fairness[key] = GroupRates.from_state(rates.to_state())
                else:
                    mine.merge(rates)

    def is_empty(self) -> bool:
        return not (self.prediction_count or self.labeled or self.unlabeled_expired or self.late_predictions or self.duplicate_predictions)

    def metrics(self, window_seconds: float, calibrator: ScoreCalibrator | None = None) -> tuple[dict[str, float], dict[str, int]]:
        """Contract metric names -> values, and the number of events behind each (``calibrator``:
        the reference's score calibrator, which CBPE reads the scores through)."""
        m: dict[str, float] = {}
        c: dict[str, int] = {}
        n = self.prediction_count

        def put(name: str, value: float, count: int) -> None:
            m[name] = float(value)
            c[name] = int(count)

        put("prediction_count", n, n)
        put("throughput", n / window_seconds, n)
        put("labeled_count", self.labeled, self.labeled)
        if n:
            put("label_coverage", min(self.labeled / n, 1.0), n)
        if self.status_count:
            put("error_count", self.error_count, n)
            put("error_rate", self.error_count / n if n else 0.0, n)
        if self.error_codes:
            ranked = sorted(self.error_codes.items(), key=lambda kv: (-kv[1], kv[0]))
            named = [kv for kv in ranked if kv[0] != OTHER_ERROR_CODE][:TOP_ERROR_CODES]
            for code, count in named:
                put(class_metric_name("error_count", code), count, n)
            rest = sum(self.error_codes.values()) - sum(count for _, count in named)
            if rest:
                put(class_metric_name("error_count", OTHER_ERROR_CODE), rest, n)
        if self.latency.count:
            for q, name in ((0.5, "latency_p50"), (0.95, "latency_p95"), (0.99, "latency_p99")):
                put(name, self.latency.quantile(q), self.latency.count)
        if self.label_delay.count:
            put("label_delay_p50", self.label_delay.quantile(0.5), self.label_delay.count)
            put("label_delay_p95", self.label_delay.quantile(0.95), self.label_delay.count)
        if self.scores.n:
            prefix = "prediction_value" if self.task == "regression" else "score"
            for name, value in self.scores.metrics().items():
                if name != "count":
                    put(f"{prefix}_{name}", value, self.scores.n)
        if isinstance(self.acc, RankingAccumulator):
            if self.acc.n:
                judged = self.acc.n_judged
                for name, value in self.acc.metrics().items():
                    put(name, value, judged if name in _JUDGED_METRICS else self.acc.n)
                put("judged_lists", judged, self.acc.n)
        elif self.acc.n:
            support = self.acc.metric_counts() if isinstance(self.acc, BinaryAccumulator | MulticlassAccumulator) else {}
            for name, value in self.acc.metrics().items():
                put(name, value, support.get(name, self.acc.n))
        if self.unlabeled_expired:
            put("unlabeled_expired", self.unlabeled_expired, self.unlabeled_expired)
        if self.late_predictions:
            put("late_predictions", self.late_predictions, self.late_predictions)
        if self.duplicate_predictions:
            put("duplicate_predictions", self.duplicate_predictions, self.duplicate_predictions)
        if self.cbpe is not None and self.cbpe.n:
            est = self.cbpe.metrics(calibrator)
            for name in CBPE_METRICS:
                if f"estimated_{name}" in est:  # no ROC AUC when one class is expected
                    put(f"estimated_{name}", est[f"estimated_{name}"], self.cbpe.n)
            put("estimated_accuracy_std", est["estimated_accuracy_std"], self.cbpe.n)
            if self.acc.n:
                realised = self.acc.metrics()
                for name in CBPE_METRICS:
                    if name in realised and f"estimated_{name}" in est:
                        put(f"cbpe_error_{name}", est[f"estimated_{name}"] - realised[name], self.acc.n)
        return m, c

    def to_state(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "n": self.prediction_count,
            "lat": self.latency.to_state(),
            "sc": self.scores.to_state(),
            "lab": self.labeled,
            "dly": self.label_delay.to_state(),
            "acc": self.acc.to_state(),
            "unl": self.unlabeled_expired,
            "late": self.late_predictions,
            "dup": self.duplicate_predictions,
            **({} if self.profile is None else {"prof": self.profile.to_state()}),
            **({} if self.cbpe is None else {"cbpe": self.cbpe.to_state()}),
            **({} if self.fairness is None else {"fair": {k: r.to_state() for k, r in self.fairness.items()}}),
            **({"st": self.status_count, "err": self.error_count} if self.status_count else {}),
            **({"codes": dict(self.error_codes)} if self.error_codes else {}),
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> WindowPartial:
        w = cls(d["task"])
        w.prediction_count = d["n"]
        w.latency = QuantileSketch.from_state(d["lat"])
        w.scores = ScoreSummary.from_state(d["sc"])
        w.labeled = d["lab"]
        w.label_delay = QuantileSketch.from_state(d["dly"])
        w.acc = _ACC_TYPES[d["task"]].from_state(d["acc"])
        w.unlabeled_expired = d["unl"]
        w.late_predictions = d["late"]
        w.duplicate_predictions = d["dup"]
        if d.get("prof") is not None:
            w.profile = Profile.from_state(d["prof"])
        if d.get("cbpe") is not None:
            w.cbpe = CBPEAccumulator.from_state(d["cbpe"])
        if d.get("fair") is not None:
            w.fairness = {k: GroupRates.from_state(r) for k, r in d["fair"].items()}
        w.status_count = int(d.get("st", 0))  # absent: no status seen (or a state from before statuses)
        w.error_count = int(d.get("err", 0))
        if d.get("codes"):
            w.error_codes = {str(k): int(v) for k, v in d["codes"].items()}
        return w
