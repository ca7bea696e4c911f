"""Score calibration for CBPE: isotonic regression fitted on a labelled reference.

CBPE (``driftline.detectors.cbpe``) reads a score as P(y = 1). Most served scores are not
calibrated (boosted trees, temperature-scaled networks, class-weighted training), and
CBPE's estimate is then biased by as much as the miscalibration. Like NannyML, the
reference fits a monotone map ``score -> P(y = 1 | score)`` and CBPE applies it to every
window's scores before it estimates.

Method (NannyML's, written here from its description):

1. **Isotonic regression** (pool-adjacent-violators, PAV): the non-decreasing step
   function that minimises the squared error to the 0/1 labels. Scores are sorted; equal
   scores are first pooled into one point whose target is their mean label and whose weight
   is their count (sklearn's ``_make_unique`` does the same, but also pools scores closer
   than 1e-15, the float64 resolution; we pool only exactly equal scores). Between fitted
   points the map is linear; outside the reference's range it is clipped to the end values
   (sklearn's ``IsotonicRegression(out_of_bounds="clip")``). The stored breakpoints are
   sklearn's ``X_thresholds_`` / ``y_thresholds_``: the first and last point of each plateau.
2. **Calibrate only when it helps.** Ten stratified shuffle splits hold out 10% of the
   reference each; the isotonic map fitted on the other 90% calibrates the held-out scores.
   When the expected calibration error (ECE, ten equal-count bins) of the pooled held-out
   calibrated scores is lower than that of the raw ones, the reference is miscalibrated and
   the map fitted on the whole reference is kept; otherwise the calibrator is the identity.
   A reference with one class, or whose scores separate the classes (ROC AUC > 0.999), is
   not calibrated either: isotonic regression would map it to 0/1 steps.

A ``ScoreCalibrator`` is plain data (breakpoints ``x``, ``y``), stored in the reference
profile (``driftline.detectors.profile.Profile.calibrator``): nothing executable is kept.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["ScoreCalibrator", "expected_calibration_error", "fit_calibrator", "isotonic_fit"]

# NannyML's settings for the check of step 2 (module docstring).
SPLITS = 10
TEST_SHARE = 0.1
ECE_BINS = 10
SEED = 42
SEPARATED_AUC = 0.999


def _pav(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted isotonic (non-decreasing) least-squares fit of ``y``, in input order.

    A stack of blocks (weighted mean, weight, length): each new point starts a block, and
    while the block before is not lower the two are pooled. O(n): every point is pooled once.
    """
    n = y.size
    mean = np.empty(n)
    weight = np.empty(n)
    length = np.empty(n, dtype=np.int64)
    k = -1
    for i in range(n):
        k += 1
        mean[k], weight[k], length[k] = y[i], w[i], 1
        while k > 0 and mean[k - 1] >= mean[k]:
            wsum = weight[k - 1] + weight[k]
            mean[k - 1] = (mean[k - 1] * weight[k - 1] + mean[k] * weight[k]) / wsum
            weight[k - 1] = wsum
            length[k - 1] += length[k]
            k -= 1
    return np.repeat(mean[: k + 1], length[: k + 1])


def isotonic_fit(
    score: npt.ArrayLike, y: npt.ArrayLike, sample_weight: npt.ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Breakpoints ``(x, y)`` of the isotonic regression of ``y`` on ``score``.

    Equal to sklearn's ``IsotonicRegression().fit(score, y)``'s ``X_thresholds_`` and
    ``y_thresholds_`` (see the module docstring for ties). Evaluate with ``np.interp``.

    Examples
    --------
    >>> x, fx = isotonic_fit([0.1, 0.2, 0.3, 0.4, 0.5], [0, 1, 0, 1, 1])
    >>> x.tolist(), fx.tolist()
    ([0.1, 0.2, 0.3, 0.4, 0.5], [0.0, 0.5, 0.5, 1.0, 1.0])
    """
    s = np.asarray(score, dtype=np.float64).ravel()
    t = np.asarray(y, dtype=np.float64).ravel()
    w = np.ones_like(s) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64).ravel()
    if not s.size == t.size == w.size:
        raise ValueError("score, y and sample_weight must have the same length")
    if s.size == 0:
        raise ValueError("isotonic_fit needs at least one point")
    # Pool equal scores: one point per distinct score, its target the weighted mean label.
    ux, inverse = np.unique(s, return_inverse=True)
    uw = np.bincount(inverse, weights=w, minlength=ux.size)
    uy = np.bincount(inverse, weights=w * t, minlength=ux.size) / uw
    fitted = _pav(uy, uw)
    # Keep the first and last point of each plateau: interpolation gives the rest.
    keep = np.ones(fitted.size, dtype=bool)
    keep[1:-1] = (fitted[:-2] != fitted[1:-1]) | (fitted[1:-1] != fitted[2:])
    return ux[keep], fitted[keep]


def expected_calibration_error(score: npt.ArrayLike, y: npt.ArrayLike, bins: int = ECE_BINS) -> float:
    """ECE over ``bins`` equal-count bins of the sorted scores: sum of |mean score - mean label| * share.

    >>> round(expected_calibration_error([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], bins=2), 3)
    0.15
    """
    s = np.asarray(score, dtype=np.float64).ravel()
    t = np.asarray(y, dtype=np.float64).ravel()
    order = np.argsort(s, kind="stable")
    s, t = s[order], t[order]
    bins = max(1, min(bins, s.size // 2))
    edges = np.linspace(0, s.size, bins + 1).astype(np.int64)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        if hi > lo:
            total += float(hi - lo) * abs(float(s[lo:hi].mean()) - float(t[lo:hi].mean()))
    return total / float(s.size)


class ScoreCalibrator:
    """A monotone map from a served score to a calibrated P(y = 1): breakpoints ``x``, ``y``.

    Parameters
    ----------
    x, y
        Breakpoints, ``x`` increasing; between them the map is linear, outside clipped.
    method
        ``"isotonic"``, or ``"identity"`` when the reference needed no calibration.
    ece_raw, ece_calibrated
        The held-out ECE of the raw and calibrated reference scores (the decision of step 2
        of the module docstring); ``None`` when the check could not run.
    n
        Reference events the map was fitted on.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> p = rng.uniform(0, 1, 20_000)                 # the true P(y = 1)
    >>> y = (rng.random(20_000) < p).astype(int)
    >>> cal = fit_calibrator(p**3, y)                 # served scores: p cubed, underconfident
    >>> cal.method, round(float(cal.calibrate([0.125])[0]), 1)
    ('isotonic', 0.5)
    >>> ScoreCalibrator.from_state(cal.to_state()) == cal
    True
    """

    def __init__(
        self,
        x: npt.ArrayLike = (0.0, 1.0),
        y: npt.ArrayLike = (0.0, 1.0),
        *,
        method: str = "isotonic",
        ece_raw: float | None = None,
        ece_calibrated: float | None = None,
        n: int = 0,
    ) -> None:
        if method not in ("isotonic", "identity"):
            raise ValueError(f"method must be 'isotonic' or 'identity', got {method!r}")
        self.x = np.asarray(x, dtype=np.float64).ravel()
        self.y = np.asarray(y, dtype=np.float64).ravel()
        if self.x.size == 0 or self.x.size != self.y.size:
            raise ValueError("x and y must be non-empty and of the same length")
        if np.any(np.diff(self.x) <= 0) or np.any(np.diff(self.y) < 0):
            raise ValueError("x must increase and y must not decrease")
        if self.y[0] < 0.0 or self.y[-1] > 1.0:
            raise ValueError("y must lie in [0, 1]")
        self.method = method
        self.ece_raw = ece_raw
        self.ece_calibrated = ece_calibrated
        self.n = int(n)

    @classmethod
    def identity(cls, **kw: Any) -> ScoreCalibrator:
        return cls((0.0, 1.0), (0.0, 1.0), method="identity", **kw)

    @property
    def is_identity(self) -> bool:
        return self.method == "identity"

    def calibrate(self, score: npt.ArrayLike) -> np.ndarray:
        """Calibrated P(y = 1) of each score (NaN stays NaN)."""
        s = np.asarray(score, dtype=np.float64)
        if self.is_identity:
            return np.clip(s, 0.0, 1.0)
        return np.interp(s, self.x, self.y)

    def to_state(self) -> dict[str, Any]:
        """JSON-safe state: the breakpoints and the decision that chose them."""
        return {
            "method": self.method,
            "x": self.x.tolist(),
            "y": self.y.tolist(),
            "ece_raw": self.ece_raw,
            "ece_calibrated": self.ece_calibrated,
            "n": self.n,
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> ScoreCalibrator:
        return cls(
            d["x"],
            d["y"],
            method=str(d["method"]),
            ece_raw=None if d.get("ece_raw") is None else float(d["ece_raw"]),
            ece_calibrated=None if d.get("ece_calibrated") is None else float(d["ece_calibrated"]),
            n=int(d.get("n", 0)),
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ScoreCalibrator) and self.to_state() == other.to_state()

    def __repr__(self) -> str:
        return f"ScoreCalibrator({self.method!r}, breakpoints={self.x.size}, n={self.n})"


def _rank_auc(score: np.ndarray, y: np.ndarray) -> float:
    """Mann-Whitney ROC AUC with tied scores counted half (average ranks)."""
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    # Average 1-based rank of each distinct score.
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    rank_sum = float(avg_rank[inverse][y == 1].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def _stratified_splits(y: np.ndarray, splits: int, test_share: float, seed: int) -> list[np.ndarray]:
    """Held-out masks: ``test_share`` of each class, drawn at random, ``splits`` times."""
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(splits):
        test = np.zeros(y.size, dtype=bool)
        for cls in (0, 1):
            idx = np.flatnonzero(y == cls)
            k = max(1, round(test_share * idx.size))
            test[rng.choice(idx, size=min(k, idx.size - 1), replace=False)] = True
        masks.append(test)
    return masks


def fit_calibrator(
    score: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    splits: int = SPLITS,
    test_share: float = TEST_SHARE,
    ece_bins: int = ECE_BINS,
    seed: int = SEED,
) -> ScoreCalibrator:
    """Isotonic calibrator of a labelled reference, or the identity when it does not help.

    ``score`` is the served P(y = 1) in [0, 1], ``y`` the 0/1 labels; NaN scores are
    dropped. See the module docstring for the decision.
    """
    s = np.asarray(score, dtype=np.float64).ravel()
    t = np.asarray(y, dtype=np.float64).ravel()
    if s.size != t.size:
        raise ValueError("score and y must have the same length")
    keep = np.isfinite(s) & np.isfinite(t)
    s, t = s[keep], t[keep].astype(np.int64)
    n = int(s.size)
    n_pos = int(t.sum())
    # One class (nothing to calibrate against) or too few of one class to hold any out.
    if n_pos < 2 or n - n_pos < 2:
        return ScoreCalibrator.identity(n=n)
    if _rank_auc(s, t) > SEPARATED_AUC:
        return ScoreCalibrator.identity(n=n)
    held_raw, held_cal, held_y = [], [], []
    for test in _stratified_splits(t, splits, test_share, seed):
        bx, by = isotonic_fit(s[~test], t[~test])
        held_raw.append(s[test])
        held_cal.append(np.interp(s[test], bx, by))
        held_y.append(t[test])
    ys = np.concatenate(held_y)
    ece_raw = expected_calibration_error(np.concatenate(held_raw), ys, ece_bins)
    ece_cal = expected_calibration_error(np.concatenate(held_cal), ys, ece_bins)
    if ece_cal >= ece_raw:
        return ScoreCalibrator.identity(ece_raw=ece_raw, ece_calibrated=ece_cal, n=n)
    bx, by = isotonic_fit(s, t)
    return ScoreCalibrator(bx, by, method="isotonic", ece_raw=ece_raw, ece_calibrated=ece_cal, n=n)
