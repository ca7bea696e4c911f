"""Data drift of a window against the reference, feature by feature (pure numpy, no scipy).

Statistics (window ``w`` against reference ``r``; shares are bin or category proportions):

- **PSI** ``sum((w_i - r_i) * ln(w_i / r_i))`` over the reference bins: numeric features
  by the reference-quantile bins plus underflow and overflow, categorical features by
  category (window categories the reference lacks count as their own bins). A share of 0
  would make PSI infinite, so every share is floored at ``epsilon`` (default 1e-4) before
  the sum: an empty bin then contributes as if it held 0.01% of the events.
- **Kolmogorov-Smirnov** statistic (numeric): ``sup_x |F_w(x) - F_r(x)|`` evaluated from
  the two ``QuantileSketch`` es at every bucket boundary, where both empirical CDFs are
  exact. Inside a bucket the CDFs are unknown, so the statistic of the raw samples lies in
  ``[ks, ks + ks_error_bound]``: within bucket ``k`` the CDF difference can move from its
  value at the lower bound by at most the reference's (upwards) or the window's
  (downwards) share of that bucket, and the bound is the worst such excursion. Buckets
  are ``2a|x|`` wide (``a`` = 1% sketch accuracy), so the bound is about a bucket's share
  near where the CDFs differ most: at most 0.007 over 180 seeded runs of 5,000 vs 1,000
  normal values with shifts and scale changes (``tests/test_datadrift.py`` checks < 0.01).
  ``ks_statistic(a, b)`` gives the exact value when raw samples are at hand.
- **Jensen-Shannon distance**, base 2 (0 = same, 1 = disjoint), on the unsmoothed shares,
  as ``scipy.spatial.distance.jensenshannon(p, q, base=2)``.
- **Chi-square** (categorical): ``scipy.stats.chisquare(observed, expected)`` with observed =
  window counts and expected = reference shares x window count; only a category the
  reference never saw gets the ``epsilon`` share (then the expected counts are rescaled to
  the window total). The p-value is the chi-square survival function with ``k - 1``
  degrees of freedom (regularised incomplete gamma, computed here to 1e-12).

A result counts (``severity`` set) only when both samples hold ``min_samples`` values
(default 100). Which statistic judges (``statistic``: ``psi``, ``js``, or ``auto``, the
default: JS when the reference has chunk limits, else PSI) and against which limit (``limits``,
default ``reference``):

- ``fixed``: severity is ``"drift"`` at ``psi >= psi_drift`` (0.25), ``"warning"`` at
  ``psi >= psi_warning`` (0.1); for JS at ``js_drift`` (0.1, NannyML's constant) and
  ``js_warning`` (0.05).
- ``reference``: ``"drift"`` when the statistic exceeds ``mean + sigmas x std`` of its values
  over reference chunks of a window's size (``driftline.detectors.thresholds``, stored in the
  profile by ``driftline baseline create``); a profile without such limits (older, or built
  from the first hours) falls back to the fixed cuts, and the result says which applied.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .profile import LEGACY_PREDICTION, OTHER, FeatureProfile, Profile, sketch_buckets
from .thresholds import ChunkStats, ReferenceLimits

__all__ = [
    "LIMIT_MODES",
    "PREDICTION_NAME",
    "STATISTICS",
    "DriftConfig",
    "DriftResult",
    "DriftThresholds",
    "chi2_sf",
    "distances",
    "judged_statistic",
    "compare_features",
    "compare_profiles",
    "ks_from_sketches",
    "ks_statistic",
    "psi",
]


STATISTICS = ("auto", "psi", "js")
LIMIT_MODES = ("fixed", "reference")
# What users see for the model output, in settings, metrics, alerts and rows.
PREDICTION_NAME = "prediction"


@dataclass(frozen=True)
class DriftThresholds:
    """How one feature is judged: statistic and limits mode, the fixed PSI and JS cuts, the
    multiplier of the reference chunks' standard deviation, samples needed, empty-bin share."""

    psi_warning: float = 0.1
    psi_drift: float = 0.25
    min_samples: int = 100
    epsilon: float = 1e-4
    top_bins: int = 3
    statistic: str = "auto"
    limits: str = "reference"
    js_warning: float = 0.05
    js_drift: float = 0.1
    sigmas: float = 3.0

    def __post_init__(self) -> None:
        if self.statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {STATISTICS}, got {self.statistic!r}")
        if self.limits not in LIMIT_MODES:
            raise ValueError(f"limits must be one of {LIMIT_MODES}, got {self.limits!r}")
        if not 0.0 <= self.js_warning <= self.js_drift <= 1.0:
            raise ValueError(f"need 0 <= js_warning <= js_drift <= 1, got {self.js_warning}, {self.js_drift}")
        if self.sigmas <= 0:
            raise ValueError(f"sigmas must be > 0, got {self.sigmas!r}")
        if not 0.0 <= self.psi_warning <= self.psi_drift:
            raise ValueError(
                f"need 0 <= psi_warning <= psi_drift, got {self.psi_warning}, {self.psi_drift}"
            )
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {self.min_samples!r}")
        if not 0.0 < self.epsilon < 1.0:
            raise ValueError(f"epsilon must be in (0, 1), got {self.epsilon!r}")


@dataclass(frozen=True)
class DriftConfig:
    """Thresholds of one model: ``default`` plus overrides by feature (or ``"prediction"``).

    Examples
    --------
    >>> cfg = DriftConfig.from_dict({"psi_drift": 0.3, "features": {"amount": {"psi_warning": 0.05}}})
    >>> cfg.for_feature("amount").psi_warning, cfg.for_feature("amount").psi_drift
    (0.05, 0.3)
    >>> cfg.for_feature("country") == DriftThresholds(psi_drift=0.3)
    True
    """

    default: DriftThresholds = DriftThresholds()
    features: Mapping[str, DriftThresholds] = field(default_factory=dict)

    def for_feature(self, name: str) -> DriftThresholds:
        return self.features.get(name, self.default)

    def for_prediction(self) -> DriftThresholds:
        """The model output's: ``features: {prediction: ...}`` (``__prediction__`` before format 3)."""
        return self.features.get(PREDICTION_NAME) or self.features.get(LEGACY_PREDICTION, self.default)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DriftConfig:
        """From a models-file mapping: default keys at the top, ``features: {name: {...}}``."""
        top = {k: v for k, v in d.items() if k != "features"}
        default = DriftThresholds(**top)
        per = {
            name: DriftThresholds(**{**top, **o}) for name, o in (d.get("features") or {}).items()
        }
        return cls(default, per)


@dataclass(frozen=True)
class DriftResult:
    """Drift statistics of one feature; ``severity`` is ``None``, ``"warning"`` or ``"drift"``.

    ``top_shifted`` lists ``(bin label, reference share, window share)`` of the bins whose
    share moved most. ``note`` says why no severity was judged (too few samples, no
    values, a changed kind); statistics that could not be computed are ``None``, so
    ``to_dict()`` is JSON-safe. ``role`` is ``"feature"`` or ``"prediction"`` (the model
    output, named ``"prediction"``); ``statistic``, ``value`` and ``limit`` say what judged
    it: the statistic's name and value and the drift limit it was held against, from the
    ``limits`` mode that applied (``"fixed"`` or ``"reference"``).
    """

    feature: str
    kind: str
    n_reference: int
    n_window: int
    psi: float | None
    js: float | None
    ks: float | None = None
    ks_error_bound: float | None = None
    chi2: float | None = None
    chi2_pvalue: float | None = None
    severity: str | None = None
    top_shifted: list[tuple[str, float, float]] = field(default_factory=list)
    note: str = ""
    role: str = "feature"
    statistic: str = "psi"
    value: float | None = None
    limit: float | None = None
    limits: str = "fixed"

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def psi(ref_share: np.ndarray, win_share: np.ndarray, epsilon: float = 1e-4) -> float:
    """Population stability index with shares floored at ``epsilon``.

    >>> round(psi(np.array([0.5, 0.5]), np.array([0.9, 0.1])), 4)
    0.8789
    """
    r = np.maximum(np.asarray(ref_share, dtype=np.float64), epsilon)
    w = np.maximum(np.asarray(win_share, dtype=np.float64), epsilon)
    return float(np.sum((w - r) * np.log(w / r)))


def _js(p: np.ndarray, q: np.ndarray) -> float:
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return math.sqrt(max(0.5 * (kl(p) + kl(q)), 0.0))


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Exact two-sample KS statistic of raw samples (as ``scipy.stats.ks_2samp``)."""
    a, b = np.sort(np.asarray(a, dtype=np.float64)), np.sort(np.asarray(b, dtype=np.float64))
    x = np.concatenate([a, b])
    fa = np.searchsorted(a, x, side="right") / a.size
    fb = np.searchsorted(b, x, side="right") / b.size
    return float(np.max(np.abs(fa - fb)))


def ks_from_sketches(ref: FeatureProfile, win: FeatureProfile) -> tuple[float, float]:
    """(KS statistic at the sketch bucket boundaries, error bound); see the module docstring."""
    ur, cr = sketch_buckets(ref.sketch)
    uw, cw = sketch_buckets(win.sketch)
    if cr.sum() == 0 or cw.sum() == 0:
        return math.nan, math.nan
    x = np.union1d(ur, uw)
    fr = np.concatenate([[0], np.cumsum(cr)])[np.searchsorted(ur, x, side="right")] / cr.sum()
    fw = np.concatenate([[0], np.cumsum(cw)])[np.searchsorted(uw, x, side="right")] / cw.sum()
    d = np.concatenate([[0.0], fr - fw])
    ks = float(np.max(np.abs(d)))
    # Inside bucket k, d moves from d[k-1] by at most +pr_k (reference mass) or -pw_k.
    pr, pw = np.diff(np.concatenate([[0.0], fr])), np.diff(np.concatenate([[0.0], fw]))
    upper = max(ks, float(np.max(d[:-1] + pr)), float(np.max(pw - d[:-1])))
    return ks, upper - ks


def chi2_sf(x: float, dof: int) -> float:
    """Survival function of the chi-square distribution (regularised upper gamma Q).

    >>> round(chi2_sf(3.841458820694124, 1), 6)
    0.05
    """
    if dof < 1:
        return math.nan
    if x <= 0:
        return 1.0
    a, z = 0.5 * dof, 0.5 * x
    log_pre = a * math.log(z) - z - math.lgamma(a)
    if z < a + 1.0:  # series for P(a, z)
        term = total = 1.0 / a
        n = a
        while abs(term) > abs(total) * 1e-15:
            n += 1.0
            term *= z / n
            total += term
        return max(0.0, 1.0 - total * math.exp(log_pre))
    # Continued fraction for Q(a, z) (modified Lentz).
    tiny = 1e-300
    b = z + 1.0 - a
    c, d = 1.0 / tiny, 1.0 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return min(1.0, math.exp(log_pre) * h)


def _aligned_counts(
    ref: FeatureProfile, win: FeatureProfile
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Labels and counts of the bins both profiles share (categories: the union)."""
    if ref.kind == "numeric":
        if ref.edges is None or win.edges is None or not np.array_equal(ref.edges, win.edges):
            raise ValueError(
                f"feature {ref.name!r}: window bins differ from the reference's (use Profile.new_window_like)"
            )
        return ref.bin_labels(), ref.hist.astype(np.float64), win.hist.astype(np.float64)
    labels = list(dict.fromkeys([*ref.counts, *win.counts]))
    # Keep __other__ last so that labels read naturally.
    if OTHER in labels:
        labels.remove(OTHER)
        labels.append(OTHER)
    r = np.array([ref.counts.get(k, 0) for k in labels], dtype=np.float64)
    w = np.array([win.counts.get(k, 0) for k in labels], dtype=np.float64)
    return labels, r, w


def _judge(t: DriftThresholds, statistic: str, value: float, stats: ChunkStats | None,
           scale: float) -> tuple[str | None, float]:
    """(severity, drift limit) of a statistic's value; ``stats`` None: the fixed cuts."""
    if stats is not None:
        upper = stats.upper(t.sigmas) * scale
        return ("drift" if value > upper else None), upper
    warn, drift = (t.psi_warning, t.psi_drift) if statistic == "psi" else (t.js_warning, t.js_drift)
    return ("drift" if value >= drift else "warning" if value >= warn else None), drift


def judged_statistic(t: DriftThresholds, has_limits: bool) -> tuple[str, str]:
    """(statistic, limits mode) that judge a feature: ``auto`` is JS against reference limits
    when the reference has them, else PSI against the fixed cuts (bench/RESULTS.md says why)."""
    mode = "reference" if t.limits == "reference" and has_limits else "fixed"
    if t.statistic != "auto":
        return t.statistic, mode
    return ("js" if mode == "reference" else "psi"), mode


def distances(ref: FeatureProfile, win: FeatureProfile, epsilon: float = 1e-4,
              leave_out: bool = False) -> dict[str, float]:
    """PSI and JS distance of a window's bins against the reference's (``{}`` without values).

    ``leave_out``: the window's rows are part of the reference (a reference chunk); compare
    with the reference's counts minus the window's (``driftline.detectors.thresholds``).
    """
    if ref.kind != win.kind:
        return {}
    _, rc, wc = _aligned_counts(ref, win)
    if leave_out:
        rc = np.maximum(rc - wc, 0.0)
    n_r, n_w = rc.sum(), wc.sum()
    if n_r == 0 or n_w == 0:
        return {}
    return {"psi": psi(rc / n_r, wc / n_w, epsilon), "js": _js(rc / n_r, wc / n_w)}


def compare_features(
    ref: FeatureProfile, win: FeatureProfile, thresholds: DriftThresholds | None = None,
    limits: ReferenceLimits | None = None, role: str = "feature",
) -> DriftResult:
    """Drift statistics of one feature profile against its reference profile.

    ``limits``: the reference's chunk limits (used with ``limits: reference``); ``role``:
    ``"feature"`` or ``"prediction"``, carried into the result.
    """
    t = thresholds or DriftThresholds()
    stats_of = (lambda s: None) if limits is None else (lambda s: limits.get(ref.name, s, role))
    statistic, mode = judged_statistic(t, stats_of("js" if t.statistic == "auto" else t.statistic) is not None)
    name = PREDICTION_NAME if role == "prediction" else ref.name
    if ref.kind != win.kind:
        return DriftResult(
            name,
            ref.kind,
            ref.count,
            win.count,
            None,
            None,
            note=f"kind changed to {win.kind}",
            role=role,
            statistic=statistic,
        )
    labels, rc, wc = _aligned_counts(ref, win)
    n_r, n_w = int(rc.sum()), int(wc.sum())
    if n_r == 0 or n_w == 0:
        return DriftResult(name, ref.kind, n_r, n_w, None, None, note="no values", role=role,
                           statistic=statistic)
    rs, ws = rc / n_r, wc / n_w
    res: dict[str, Any] = {"psi": psi(rs, ws, t.epsilon), "js": _js(rs, ws)}
    if ref.kind == "numeric":
        res["ks"], res["ks_error_bound"] = ks_from_sketches(ref, win)
    else:
        keep = (rc > 0) | (wc > 0)
        exp_share = np.where(rs > 0, rs, t.epsilon)[keep]
        expected = exp_share / exp_share.sum() * n_w
        stat = float(np.sum((wc[keep] - expected) ** 2 / expected))
        dof = int(keep.sum()) - 1
        res["chi2"], res["chi2_pvalue"] = stat, (chi2_sf(stat, dof) if dof >= 1 else None)
    order = np.argsort(-np.abs(ws - rs), kind="stable")[: t.top_bins]
    top = [(labels[i], float(rs[i]), float(ws[i])) for i in order]
    value = float(res[statistic])
    stats = stats_of(statistic) if mode == "reference" else None
    scale = 1.0 if limits is None or stats is None else limits.scale(statistic, n_w)
    severity, limit = _judge(t, statistic, value, stats, scale)
    note = ""
    if min(n_r, n_w) < t.min_samples:
        severity, note = None, f"fewer than {t.min_samples} values"
    return DriftResult(
        name, ref.kind, n_r, n_w, severity=severity, top_shifted=top, note=note, role=role,
        statistic=statistic, value=value, limit=limit, limits=mode, **res
    )


def compare_profiles(
    reference: Profile, window: Profile, config: DriftConfig | None = None
) -> list[DriftResult]:
    """One ``DriftResult`` per reference feature present in the window, then the prediction.

    The reference's chunk limits (``reference.limits``) are used for features whose
    thresholds say ``limits: "reference"``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ref = Profile.from_records([{"x": float(v), "c": str(c)} for v, c in
    ...                             zip(rng.normal(0, 1, 2000), rng.integers(0, 3, 2000))])
    >>> win = Profile.new_window_like(ref)
    >>> win.update_many([{"x": float(v), "c": str(c)} for v, c in
    ...                  zip(rng.normal(1, 1, 500), rng.integers(0, 3, 500))])
    >>> [(r.feature, r.severity) for r in compare_profiles(ref, win)]
    [('x', 'drift'), ('c', None)]
    """
    cfg = config or DriftConfig()
    lim = reference.limits
    out = [
        compare_features(fp, window.features[name], cfg.for_feature(name), lim)
        for name, fp in reference.features.items()
        if name in window.features
    ]
    if reference.prediction is not None and window.prediction is not None:
        out.append(compare_features(reference.prediction, window.prediction, cfg.for_prediction(), lim,
                                    role="prediction"))
    return out
