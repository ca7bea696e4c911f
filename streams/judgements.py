"""What the merge stage judges on a merged window besides its metrics: fairness metric names,
champion / challenger comparisons, data-quality offenders, data-drift metric names. Pure functions of
window contents.
"""

from __future__ import annotations

import math
from typing import Any

from driftline.detectors.comparison import (
    Comparison,
    compare_binary,
    compare_proportions,
    compare_regression,
)
from driftline.detectors.datadrift import DriftResult
from driftline.detectors.fairness import GroupRates
from driftline.detectors.metrics import (
    BinaryAccumulator,
    MulticlassAccumulator,
    RegressionAccumulator,
)
from driftline.detectors.profile import OTHER, Profile
from driftline.detectors.quality import QualityResult, QualityThresholds
from driftline.schemas.messages import segment_string
from driftline.streams.models import ChampionConfig
from driftline.streams.windows import WindowPartial


def fairness_metrics(key: str, rates: GroupRates) -> tuple[dict[str, float], dict[str, int]]:
    """Metric names and counts of one protected key's rates (docs/beyond-accuracy.md, "Fairness").

    ``fairness.<key>.<disparity>`` (count: the labelled events with the key) and, per group,
    ``fairness.<key>=<group>.<rate>`` for ``positive_rate``, ``tpr``, ``fpr``, ``precision``
    (count: the group's labelled events). ``<key>=<group>`` is the segment string of that
    group (``driftline.schemas.messages.segment_string``), so it reads like a segment.

    >>> r = GroupRates()
    >>> r.update_many(["a", "a", "b", "b"], [1, 0, 1, 0], [1, 0, 0, 0])
    >>> m, c = fairness_metrics("g", r)
    >>> m["fairness.g.demographic_parity_difference"], m["fairness.g=a.tpr"], c["fairness.g=b.tpr"]
    (0.5, 1.0, 2)
    """
    m: dict[str, float] = {}
    c: dict[str, int] = {}
    n = rates.n
    for name, v in rates.disparities().items():
        if math.isfinite(v):
            m[f"fairness.{key}.{name}"] = float(v)
            c[f"fairness.{key}.{name}"] = n
    for group, g in rates.group_metrics().items():
        prefix = f"fairness.{segment_string({key: group}, [key])}"
        for rate in ("positive_rate", "tpr", "fpr", "precision"):
            m[f"{prefix}.{rate}"] = float(g[rate])
            c[f"{prefix}.{rate}"] = int(g["n"])
    return m, c


def compare_windows(champion: WindowPartial, challenger: WindowPartial, cfg: ChampionConfig) -> list[Comparison]:
    """The champion/challenger comparisons of two windows of one task (``cfg.metrics_for``)."""
    a, b = champion.acc, challenger.acc
    metrics = cfg.metrics_for(champion.task)
    if isinstance(a, BinaryAccumulator) and isinstance(b, BinaryAccumulator):
        rates = tuple(m for m in metrics if m != "mae")
        return list(compare_binary(a, b, rates, alpha=cfg.alpha, min_n=cfg.min_n).values())
    if isinstance(a, MulticlassAccumulator) and isinstance(b, MulticlassAccumulator):
        if "accuracy" not in metrics:
            return []
        c = compare_proportions("accuracy", int(a.cm.trace()), int(a.cm.sum()), int(b.cm.trace()), int(b.cm.sum()),
                                alpha=cfg.alpha, min_n=cfg.min_n)
        return [] if c is None else [c]
    if isinstance(a, RegressionAccumulator) and isinstance(b, RegressionAccumulator) and "mae" in metrics:
        return list(compare_regression(a, b, alpha=cfg.alpha, min_n=cfg.min_n).values())
    return []


def comparison_dict(c: Comparison) -> dict[str, Any]:
    d = c.to_state()
    for k in ("z", "df"):  # +-inf (an exact difference) is not JSON
        if d.get(k) is not None and not math.isfinite(d[k]):
            d[k] = None
    return d


def severity_level(value: float, levels: tuple[float, float]) -> str | None:
    return "critical" if value > levels[1] else "warning" if value > levels[0] else None


def quality_offenders(ref: Profile, window: Profile, results: list[QualityResult],
                       t: QualityThresholds) -> dict[str, list[dict[str, Any]]]:
    """Check -> the features over its warning level (every check listed; ``{}`` if too few events)."""
    if window.n_events < t.min_samples:
        return {}
    out: dict[str, list[dict[str, Any]]] = {c: [] for c in ("missing_rate", "type_mismatch", "out_of_range",
                                                           "unseen_categories", "feature_vanished", "feature_appeared")}
    for q in results:
        if q.schema == "appeared":
            out["feature_appeared"].append({"feature": q.feature, "value": 1.0, "level": "warning", "threshold": None,
                                            "issues": q.issues})
            continue
        if q.schema == "vanished":
            out["feature_vanished"].append({"feature": q.feature, "value": 1.0, "level": "critical", "threshold": None,
                                            "issues": q.issues})
            continue
        rf = ref.features[q.feature]
        checks: list[tuple[str, float, tuple[float, float], dict[str, Any]]] = [
            ("missing_rate", q.missing_rate - q.reference_missing_rate, t.missing_increase,
             {"missing_rate": q.missing_rate, "reference_missing_rate": q.reference_missing_rate}),
            ("type_mismatch", q.type_mismatch_rate, t.type_mismatch, {}),
        ]
        if rf.kind == "numeric":
            checks.append(("out_of_range", q.out_of_range_rate, t.out_of_range,
                           {"reference_min": rf.min if rf.count else None, "reference_max": rf.max if rf.count else None}))
        elif OTHER not in rf.counts:  # a capped reference cannot tell new categories from rare ones
            checks.append(("unseen_categories", q.unseen_category_rate, t.unseen_categories,
                           {"categories": q.unseen_categories[:10]}))
        for check, value, levels, extra in checks:
            level = severity_level(value, levels)
            if level:
                out[check].append({"feature": q.feature, "value": value, "level": level, "threshold": levels[0], **extra})
    return out


def data_metrics(ref: Profile, drift: list[DriftResult], quality: list[QualityResult], mv: dict[str, Any] | None,
                 metrics: dict[str, float], counts: dict[str, int]) -> None:
    """Add a window's data-drift and data-quality statistics to its metrics (docs/beyond-accuracy.md).

    Per feature ``feature_<stat>.<f>`` (``prediction_<stat>`` for the model output) for PSI, JS,
    KS, the chi-square p-value, the judged statistic's ``drift_limit`` and ``drift_score`` (value
    over limit), the quality rates, and ``multivariate_reconstruction_error`` with its limits.
    """
    def put(name: str, value: float | None, n: int) -> None:
        if value is not None and math.isfinite(value):
            metrics[name] = float(value)
            counts[name] = int(n)

    for r in drift:
        prefix = "prediction_" if r.role == "prediction" else "feature_"
        suffix = "" if r.role == "prediction" else f".{r.feature}"
        for stat in ("psi", "js", "ks", "chi2_pvalue"):
            put(f"{prefix}{stat}{suffix}", getattr(r, stat), r.n_window)
        if r.limit and r.value is not None:  # the judged statistic's limit, and the value over it
            put(f"{prefix}drift_limit{suffix}", r.limit, r.n_window)
            put(f"{prefix}drift_score{suffix}", r.value / r.limit, r.n_window)
    if mv is not None:
        put("multivariate_reconstruction_error", mv["value"], mv["n_window"])
        if mv["limit"] is not None:
            put("multivariate_reconstruction_error_upper", mv["limit"], mv["n_window"])
            put("multivariate_reconstruction_error_lower", mv["lower_limit"], mv["n_window"])
    for q in quality:
        if q.schema == "appeared":
            continue
        kind = ref.features[q.feature].kind
        put(f"feature_missing_rate.{q.feature}", q.missing_rate, q.n)
        put(f"feature_type_mismatch_rate.{q.feature}", q.type_mismatch_rate, q.n)
        if kind == "numeric":
            put(f"feature_out_of_range_rate.{q.feature}", q.out_of_range_rate, q.n)
        else:
            put(f"feature_unseen_category_rate.{q.feature}", q.unseen_category_rate, q.n)
