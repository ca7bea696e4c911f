"""Data quality of a window against the reference: missing values, types, ranges, schema.

Per feature and window (rates are shares of the window's events, ``Profile.n_events``):

==========================  ===================================================  =========  ========
check                       rate                                                 warning    critical
==========================  ===================================================  =========  ========
missing values              missing rate minus the reference's missing rate      > 0.05     > 0.20
type mismatches             e.g. a string in a numeric feature                   > 0.01     > 0.05
out of reference range      numeric values below the reference min / above max   > 0.01     > 0.05
unseen categories           values of categories the reference never saw         > 0.01     > 0.05
feature vanished            a reference feature without any value in the window  -          always
feature appeared            a feature the reference does not know                always     -
==========================  ===================================================  =========  ========

A window with fewer than ``min_samples`` events (default 100) is reported without a
severity. Out-of-range and unseen-category rates are expected to be small, not zero: a
fresh sample of the reference distribution falls outside ``[min, max]`` of ``n`` reference
values with probability about ``2 / (n + 1)``. When the reference capped its categories
(it holds ``"__other__"``), a category outside its top ``max_categories`` cannot be told
from a new one, so unseen categories are listed but do not raise the severity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .profile import OTHER, FeatureProfile, Profile

__all__ = ["QualityResult", "QualityThresholds", "check_quality"]

_RANK = {None: 0, "warning": 1, "critical": 2}


@dataclass(frozen=True)
class QualityThresholds:
    """(warning, critical) levels of each rate; see the module docstring for the defaults."""

    missing_increase: tuple[float, float] = (0.05, 0.20)
    type_mismatch: tuple[float, float] = (0.01, 0.05)
    out_of_range: tuple[float, float] = (0.01, 0.05)
    unseen_categories: tuple[float, float] = (0.01, 0.05)
    min_samples: int = 100

    def __post_init__(self) -> None:
        for name in ("missing_increase", "type_mismatch", "out_of_range", "unseen_categories"):
            warn, crit = getattr(self, name)
            if not 0.0 <= warn <= crit:
                raise ValueError(f"{name}: need 0 <= warning <= critical, got {warn}, {crit}")


@dataclass(frozen=True)
class QualityResult:
    """Quality of one feature in one window; ``severity`` is ``None``, ``"warning"`` or ``"critical"``.

    ``schema`` is ``""``, ``"vanished"`` or ``"appeared"``; ``issues`` names each check
    that passed its warning level, e.g. ``"missing_rate 0.31 (reference 0.00)"``.
    """

    feature: str
    n: int
    missing_rate: float = 0.0
    reference_missing_rate: float = 0.0
    type_mismatch_rate: float = 0.0
    out_of_range_rate: float = 0.0
    unseen_category_rate: float = 0.0
    unseen_categories: list[str] = field(default_factory=list)
    schema: str = ""
    issues: list[str] = field(default_factory=list)
    severity: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _level(value: float, levels: tuple[float, float]) -> str | None:
    if value > levels[1]:
        return "critical"
    if value > levels[0]:
        return "warning"
    return None


def _check_feature(
    ref: FeatureProfile, win: FeatureProfile, n: int, t: QualityThresholds
) -> QualityResult:
    ref_missing = ref.missing / ref.n if ref.n else 0.0
    missing = win.missing / n
    mismatch = win.mismatch / n
    oor = unseen_rate = 0.0
    unseen: list[str] = []
    if win.kind == "numeric" and win.hist.size and ref.kind == "numeric":
        oor = float(win.hist[0] + win.hist[-1]) / n
    elif win.kind == "categorical":
        unseen = [
            k for k, v in win.counts.items() if v and (ref.counts.get(k, 0) == 0 or k == OTHER)
        ]
        unseen_rate = sum(win.counts[k] for k in unseen) / n
    checks: list[tuple[str, float, tuple[float, float], str]] = [
        (
            "missing_rate",
            missing - ref_missing,
            t.missing_increase,
            f"missing_rate {missing:.2f} (reference {ref_missing:.2f})",
        ),
        ("type_mismatch", mismatch, t.type_mismatch, f"type_mismatch_rate {mismatch:.3f}"),
        (
            "out_of_range",
            oor,
            t.out_of_range,
            f"out_of_range_rate {oor:.3f} (reference [{ref.min:.4g}, {ref.max:.4g}])",
        ),
    ]
    if OTHER not in ref.counts:
        checks.append(
            (
                "unseen",
                unseen_rate,
                t.unseen_categories,
                f"unseen_category_rate {unseen_rate:.3f}: {', '.join(unseen[:5])}",
            )
        )
    issues, severity = [], None
    vanished = win.count == 0 and win.mismatch == 0 and ref.count > 0
    for _, value, levels, text in checks:
        lvl = _level(value, levels)
        if lvl:
            issues.append(text)
            severity = lvl if _RANK[lvl] > _RANK[severity] else severity
    if vanished:
        issues.append("feature vanished: no value in the window")
        severity = "critical"
    if n < t.min_samples:
        severity = None
    return QualityResult(
        ref.name,
        n,
        missing,
        ref_missing,
        mismatch,
        oor,
        unseen_rate,
        unseen,
        "vanished" if vanished else "",
        issues,
        severity,
    )


def check_quality(
    reference: Profile, window: Profile, thresholds: QualityThresholds | None = None
) -> list[QualityResult]:
    """One ``QualityResult`` per reference feature, then one per feature that appeared.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(5)
    >>> ref = Profile.from_records([{"x": float(v), "c": "a" if v > 0 else "b"} for v in rng.normal(size=1000)])
    >>> win = Profile.new_window_like(ref)
    >>> win.update_many([{"x": float(v), "c": "zz", "extra": 1} if i % 4 == 0 else {"c": "a"}
    ...                  for i, v in enumerate(rng.normal(size=400))])
    >>> [(r.feature, r.schema, r.severity) for r in check_quality(ref, win)]
    [('x', '', 'critical'), ('c', '', 'critical'), ('extra', 'appeared', 'warning')]
    """
    t = thresholds or QualityThresholds()
    n = window.n_events
    out: list[QualityResult] = []
    if n == 0:
        return out
    for name, ref in reference.features.items():
        win = window.features.get(name)
        if win is None:
            win = ref.empty_like()
            win.missing = n
        out.append(_check_feature(ref, win, n, t))
    for name, count in window.unknown_features.items():
        if name not in reference.features:
            sev = "warning" if n >= t.min_samples else None
            out.append(
                QualityResult(
                    name,
                    n,
                    schema="appeared",
                    issues=[f"feature appeared in {count} events"],
                    severity=sev,
                )
            )
    return out
