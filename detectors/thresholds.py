"""Drift limits from the reference's own chunk-to-chunk variability (NannyML's method).

A fixed cut (PSI 0.25) means different things for different features and window sizes: a
feature with ten balanced bins over 200 events has a PSI around 0.05 by chance alone, one with
a long tail and 2,000 events far less. NannyML instead splits the reference into chunks of the
analysis chunk's size, computes the statistic of each chunk against the whole reference, and
alerts when an analysis chunk's value leaves ``mean +- 3 standard deviations`` of those values
(``StandardDeviationThreshold``: ``np.std``, ddof 0, multiplier 3). Driftline does the same at
``driftline baseline create``: contiguous chunks of ``chunk_size`` rows in the file's order (an
incomplete last chunk is dropped, as NannyML's size-based chunker does), the PSI and the
Jensen-Shannon distance of every feature and of the prediction, and the mean PCA reconstruction
error (``driftline.detectors.multivariate``). One departure from NannyML: each chunk is compared
with the reference *without* that chunk (its bin counts minus the chunk's). A chunk compared with
a reference that contains it looks closer to it than a new window would (by a factor ``1 - f``
in shares for a chunk holding ``f`` of the rows), so with 5 chunks the limits came out so tight
that 27-38% of clean windows crossed them (measured by ``bench/drift_limits.py``). It stores each statistic's mean and standard
deviation over the chunks; the multiplier is applied when a window is judged (``sigmas`` in the
model's ``data_drift`` settings), so it can be changed without a new baseline.

A window seldom holds exactly ``chunk_size`` events, and a statistic's spread under no drift
depends on the sample sizes: PSI grows about as ``1/n_window + 1/n_reference``, the JS distance
as its square root (both are chi-square-like in the bin shares). ``scale`` therefore moves the
chunk limits to a window of ``n`` events by that ratio, so one baseline serves windows of any
size; the measured false alarms with and without it are in ``bench/RESULTS.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .multivariate import PCAModel
    from .profile import Profile

__all__ = ["ChunkStats", "ReferenceLimits", "chunk_stats", "reference_limits", "STATISTICS", "MIN_CHUNKS"]

STATISTICS = ("psi", "js")
# With fewer chunks the standard deviation is too uncertain: with 5 chunks 4-11% of clean
# windows crossed mean + 3 sd (bench/drift_limits.py); the fixed cuts stay in force.
MIN_CHUNKS = 10


@dataclass(frozen=True)
class ChunkStats:
    """Mean and standard deviation (ddof 0) of a statistic over the reference chunks.

    >>> s = chunk_stats([0.1, 0.2, 0.3])
    >>> round(s.upper(3.0), 4), s.lower(3.0)
    (0.4449, 0.0)
    """

    mean: float
    std: float
    chunks: int

    def upper(self, sigmas: float) -> float:
        return self.mean + sigmas * self.std

    def lower(self, sigmas: float) -> float:
        """The lower limit, never below 0 (every statistic here is a distance or an error)."""
        return max(0.0, self.mean - sigmas * self.std)

    def to_state(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "chunks": self.chunks}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> ChunkStats:
        return cls(float(d["mean"]), float(d["std"]), int(d["chunks"]))


def chunk_stats(values: Sequence[float]) -> ChunkStats:
    """``ChunkStats`` of the finite values (NaN: a chunk where the statistic was undefined)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return ChunkStats(math.nan, math.nan, 0)
    return ChunkStats(float(v.mean()), float(v.std()), int(v.size))


@dataclass
class ReferenceLimits:
    """Per-statistic ``ChunkStats`` of each feature, the prediction and the multivariate error."""

    chunk_size: int
    chunks: int
    n_reference: int = 0
    features: dict[str, dict[str, ChunkStats]] = field(default_factory=dict)
    prediction: dict[str, ChunkStats] = field(default_factory=dict)
    multivariate: ChunkStats | None = None

    def get(self, name: str, statistic: str, role: str = "feature") -> ChunkStats | None:
        """The stats of a feature's (``role="feature"``) or the prediction's statistic, if usable."""
        per = self.prediction if role == "prediction" else self.features.get(name, {})
        s = per.get(statistic)
        return s if s is not None and s.chunks >= MIN_CHUNKS and math.isfinite(s.std) else None

    def scale(self, statistic: str, n: int) -> float:
        """Factor from the chunks' statistic to a window of ``n`` events (see the module docstring).

        >>> lim = ReferenceLimits(1000, 20, 20_000)
        >>> round(lim.scale("psi", 1000), 3), round(lim.scale("psi", 250), 3), round(lim.scale("js", 250), 3)
        (0.997, 3.847, 1.962)
        """
        m, big = self.chunk_size, max(self.n_reference, self.chunk_size + 1)
        if n <= 0:
            return 1.0
        ratio = (1.0 / n + 1.0 / big) / (1.0 / m + 1.0 / (big - m))
        return math.sqrt(ratio) if statistic in ("js", "multivariate") else ratio

    def to_state(self) -> dict[str, Any]:
        return {
            "chunk_size": self.chunk_size,
            "chunks": self.chunks,
            "n_reference": self.n_reference,
            "features": {f: {s: c.to_state() for s, c in per.items()} for f, per in self.features.items()},
            "prediction": {s: c.to_state() for s, c in self.prediction.items()},
            "multivariate": None if self.multivariate is None else self.multivariate.to_state(),
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> ReferenceLimits:
        mv = d.get("multivariate")
        return cls(
            int(d["chunk_size"]),
            int(d["chunks"]),
            int(d.get("n_reference", 0)),
            {f: {s: ChunkStats.from_state(c) for s, c in per.items()} for f, per in d["features"].items()},
            {s: ChunkStats.from_state(c) for s, c in d["prediction"].items()},
            None if mv is None else ChunkStats.from_state(mv),
        )


def reference_limits(reference: Profile, features: Sequence[dict[str, Any] | None],
                     predictions: Sequence[Any] | None, chunk_size: int,
                     pca: PCAModel | None = None) -> ReferenceLimits | None:
    """Limits from contiguous chunks of the reference rows; ``None`` with fewer than 3 chunks.

    ``reference`` is the profile built from these rows (its bins are the chunks' bins);
    ``features`` the rows' feature dicts and ``predictions`` their predictions, in order.
    """
    from .datadrift import distances
    from .multivariate import ReconstructionSums
    from .profile import Profile

    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size!r}")
    n_chunks = len(features) // chunk_size
    if n_chunks < MIN_CHUNKS:
        return None
    values: dict[tuple[str, str], dict[str, list[float]]] = {}
    mv: list[float] = []
    for i in range(n_chunks):
        rows = features[i * chunk_size:(i + 1) * chunk_size]
        preds = None if predictions is None else predictions[i * chunk_size:(i + 1) * chunk_size]
        win = Profile.new_window_like(reference)
        win.update_many(rows, preds)
        pairs = [(("feature", name), fp, win.features[name]) for name, fp in reference.features.items()]
        if reference.prediction is not None and win.prediction is not None:
            pairs.append((("prediction", ""), reference.prediction, win.prediction))
        for key, ref_fp, win_fp in pairs:
            per = values.setdefault(key, {s: [] for s in STATISTICS})
            stats = distances(ref_fp, win_fp, leave_out=True)
            for s in STATISTICS:
                per[s].append(stats.get(s, math.nan))
        if pca is not None:
            sums = ReconstructionSums()
            sums.add(pca.errors(rows))
            mv.append(sums.mean)
    out = ReferenceLimits(chunk_size, n_chunks, len(features))
    for (role, name), per in values.items():
        summary = {s: chunk_stats(v) for s, v in per.items()}
        if role == "prediction":
            out.prediction = summary
        else:
            out.features[name] = summary
    if pca is not None:
        out.multivariate = chunk_stats(mv)
    return out
