"""Multivariate drift: PCA reconstruction error of the numeric features (NannyML's method).

A change in how features move *together* (a correlation that flips) leaves every marginal
distribution, hence every univariate statistic, unchanged. A PCA fitted on the reference
captures its correlation structure: the components that explain ``variance`` of the
standardised reference (default 65%, as NannyML's ``DataReconstructionDriftCalculator``)
reconstruct a reference-like row well, and a row whose features relate differently badly.

``PCAModel.fit`` standardises each numeric feature by the reference mean and standard deviation
(``ddof=0``, as ``sklearn.preprocessing.StandardScaler``), takes the principal axes by SVD of the
centred, standardised rows, and keeps the fewest components whose cumulative explained variance
reaches ``variance``. A row's reconstruction error is the Euclidean distance between its
standardised vector ``z`` and its reconstruction ``z C^T C`` (``C``: components as rows). A
missing or non-numeric value is imputed with the reference mean (0 after standardising), as
NannyML imputes before its PCA; a row without any numeric value is not counted.

Windows are merged from per-partition partials, so a window keeps ``ReconstructionSums``
(rows, sum and sum of squares of the errors): the window's mean error is ``sum / n`` whichever
way its partials were split. The model is plain numbers (``to_state``), never a pickle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .feature_profile import is_number

__all__ = ["PCAModel", "ReconstructionSums", "DEFAULT_VARIANCE", "compare_reconstruction"]

DEFAULT_VARIANCE = 0.65


def _number(v: Any) -> float:
    """A value as a float, NaN unless it is a number (a bool is not one)."""
    return float(v) if is_number(v) else math.nan


def _matrix(rows: Sequence[dict[str, Any] | None], features: Sequence[str]) -> np.ndarray:
    """Rows x features as floats; NaN where a value is missing, non-numeric or infinite.

    Runs in the join stage for every event of a model with a PCA: plain floats and ints take a
    type check only (a per-value ``isinstance`` chain tripled the window profile's cost)."""
    n = len(rows)
    out = np.empty((n, len(features)))
    dicts = [r or {} for r in rows]
    for j, f in enumerate(features):
        out[:, j] = np.fromiter(
            (v if (t := type(v)) is float or t is int else _number(v) for v in (d.get(f) for d in dicts)),
            dtype=np.float64, count=n)
    out[~np.isfinite(out)] = np.nan
    return out


def _shares(sq: np.ndarray) -> list[float]:
    total = float(np.sum(sq))
    return [float(v) / total for v in sq] if total > 0 else []


def _top_features(pca: PCAModel, sums: ReconstructionSums, top: int = 3) -> list[dict[str, Any]]:
    """The features whose share of the squared residuals moved most from the reference's."""
    win = _shares(np.asarray(sums.feature_sq))
    if len(win) != len(pca.features) or len(pca.residual_share) != len(win):
        return []
    moved = sorted(range(len(win)), key=lambda j: -abs(win[j] - pca.residual_share[j]))[:top]
    return [{"feature": pca.features[j], "reference": pca.residual_share[j], "window": win[j]} for j in moved]


@dataclass
class PCAModel:
    """Standardisation and principal components of a reference's numeric features.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.multivariate_normal([0, 0], [[1, 0.9], [0.9, 1]], 5000)
    >>> m = PCAModel.fit([{"a": float(a), "b": float(b)} for a, b in x], ["a", "b"])
    >>> m.n_components, round(m.explained[0], 2)
    (1, 0.95)
    >>> flipped = rng.multivariate_normal([0, 0], [[1, -0.9], [-0.9, 1]], 5000)
    >>> same = m.errors([{"a": float(a), "b": float(b)} for a, b in x]).mean()
    >>> moved = m.errors([{"a": float(a), "b": float(b)} for a, b in flipped]).mean()
    >>> bool(moved > 4 * same)
    True
    """

    features: list[str]
    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray  # n_components x n_features, orthonormal rows
    explained: list[float]  # explained variance ratio of each kept component
    variance: float = DEFAULT_VARIANCE
    # each feature's share of the reference's squared residuals: what a window's shares compare with
    residual_share: list[float] = field(default_factory=list)

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    @classmethod
    def fit(cls, rows: Sequence[dict[str, Any] | None], features: Sequence[str],
            variance: float = DEFAULT_VARIANCE) -> PCAModel | None:
        """Fit on reference rows; ``None`` with fewer than two usable features or rows."""
        if not 0.0 < variance <= 1.0:
            raise ValueError(f"variance must be in (0, 1], got {variance!r}")
        x = _matrix(rows, features)
        # A feature constant (or absent) in the reference carries no correlation: left out.
        keep = [j for j in range(x.shape[1]) if np.sum(~np.isnan(x[:, j])) >= 2 and np.nanstd(x[:, j]) > 0]
        x = x[:, keep]
        x = x[~np.all(np.isnan(x), axis=1)] if x.size else x
        if len(keep) < 2 or x.shape[0] < 2:
            return None
        mean = np.nanmean(x, axis=0)
        scale = np.nanstd(x, axis=0)
        z = np.nan_to_num((x - mean) / scale, nan=0.0)
        z = z - z.mean(axis=0)  # zero already unless values were imputed
        _, s, vt = np.linalg.svd(z, full_matrices=False)
        ratio = s**2 / np.sum(s**2)
        k = int(np.searchsorted(np.cumsum(ratio), variance - 1e-12) + 1)
        k = min(k, len(keep))
        model = cls([features[j] for j in keep], mean, scale, vt[:k].copy(), [float(r) for r in ratio[:k]], variance)
        model.residual_share = _shares(np.sum(model.residuals(rows) ** 2, axis=0))
        return model

    def residuals(self, rows: Sequence[dict[str, Any] | None]) -> np.ndarray:
        """Standardised row minus its reconstruction, per feature, for each row that has at least
        one of the model's features (rows x features)."""
        x = _matrix(rows, self.features)
        x = x[~np.all(np.isnan(x), axis=1)]
        z = np.nan_to_num((x - self.mean) / self.scale, nan=0.0)
        return np.asarray(z - (z @ self.components.T) @ self.components)

    def errors(self, rows: Sequence[dict[str, Any] | None]) -> np.ndarray:
        """Reconstruction error (Euclidean norm of the residuals) of each row with a feature."""
        return np.asarray(np.sqrt(np.sum(self.residuals(rows) ** 2, axis=1)))

    def to_state(self) -> dict[str, Any]:
        return {"features": list(self.features), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "components": self.components.tolist(), "explained": list(self.explained),
                "variance": self.variance, "residual_share": list(self.residual_share)}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> PCAModel:
        comps = np.asarray(d["components"], dtype=np.float64).reshape(-1, len(d["features"]))
        return cls([str(f) for f in d["features"]], np.asarray(d["mean"], dtype=np.float64),
                   np.asarray(d["scale"], dtype=np.float64), comps, [float(v) for v in d["explained"]],
                   float(d.get("variance", DEFAULT_VARIANCE)), [float(v) for v in d.get("residual_share", [])])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PCAModel) and self.to_state() == other.to_state()


@dataclass
class ReconstructionSums:
    """Mergeable reconstruction errors of a window: rows, sum and sum of squares, and each
    feature's sum of squared residuals (which features the error comes from).

    >>> a, b = ReconstructionSums(), ReconstructionSums()
    >>> a.add(np.array([1.0, 2.0])); b.add(np.array([3.0]))
    >>> a.merge(b); a.n, a.mean
    (3, 2.0)
    """

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    feature_sq: list[float] = field(default_factory=list)

    def add(self, errors: np.ndarray) -> None:
        self.n += int(errors.size)
        self.total += float(np.sum(errors))
        self.total_sq += float(np.sum(errors**2))

    def add_residuals(self, residuals: np.ndarray) -> None:
        """Add rows' residuals (``PCAModel.residuals``): their errors and per-feature squares."""
        sq = residuals**2
        self.add(np.sqrt(np.sum(sq, axis=1)))
        per = np.sum(sq, axis=0)
        self.feature_sq = (per if not self.feature_sq else np.asarray(self.feature_sq) + per).tolist()

    def merge(self, other: ReconstructionSums) -> None:
        self.n += other.n
        self.total += other.total
        self.total_sq += other.total_sq
        if other.feature_sq:
            self.feature_sq = (list(other.feature_sq) if not self.feature_sq
                               else (np.asarray(self.feature_sq) + np.asarray(other.feature_sq)).tolist())

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    def to_state(self) -> dict[str, Any]:
        return {"n": self.n, "sum": self.total, "sumsq": self.total_sq, "fsq": list(self.feature_sq)}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> ReconstructionSums:
        return cls(int(d["n"]), float(d["sum"]), float(d["sumsq"]), [float(v) for v in d.get("fsq", [])])


def compare_reconstruction(reference: Any, window: Any, sigmas: float = 3.0,
                           min_samples: int = 100) -> dict[str, Any] | None:
    """The window's mean reconstruction error against the reference's chunk limits.

    ``reference`` and ``window`` are ``Profile`` s (the reference with ``pca``, the window with
    ``reconstruction`` sums). ``None`` when either is missing. The limits are ``mean +- sigmas x
    sd`` of the reference chunks' mean errors, the spread scaled by ``sqrt(chunk / n)`` to a window
    of ``n`` rows (a mean of ``n`` errors); without chunk limits the error is reported, not judged.
    ``severity`` is ``"drift"`` outside the limits (a fall counts too: rows that fit the
    reference's components better than the reference itself did are also a change).
    """
    sums, pca = window.reconstruction, reference.pca
    if pca is None or sums is None or sums.n == 0:
        return None
    stats = None if reference.limits is None else reference.limits.multivariate
    out: dict[str, Any] = {"statistic": "reconstruction_error", "value": sums.mean, "n_window": sums.n,
                           "features": list(pca.features), "components": pca.n_components,
                           "explained_variance": float(sum(pca.explained)), "severity": None, "note": "",
                           "limit": None, "lower_limit": None, "reference_mean": None,
                           "top_features": _top_features(pca, sums)}
    if stats is None or stats.chunks < 10 or not math.isfinite(stats.std):
        out["note"] = "no reference chunk limits"
        return out
    spread = sigmas * stats.std * math.sqrt(reference.limits.chunk_size / sums.n)
    out.update(limit=stats.mean + spread, lower_limit=max(0.0, stats.mean - spread), reference_mean=stats.mean)
    if sums.n < min_samples:
        out["note"] = f"fewer than {min_samples} rows"
    elif not out["lower_limit"] <= sums.mean <= out["limit"]:
        out["severity"] = "drift"
    return out
