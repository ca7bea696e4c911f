"""Mergeable quantile sketch with a relative-error guarantee (DDSketch).

A value ``x > 0`` falls in bucket ``i = ceil(log(x) / log(gamma))`` with
``gamma = (1 + a) / (1 - a)``, so bucket ``i`` covers ``(gamma**(i-1), gamma**i]``.
Reporting ``2 * gamma**i / (gamma + 1)`` for any value in that bucket is within a
relative error ``a`` of it. Negative values go to a mirror store keyed by ``|x|``;
values with ``|x|`` below ``min_indexable`` (underflow of ``log``) count as zero.

Rank definition: ``quantile(q)`` estimates the element of 0-based rank
``floor(q * (count - 1))`` in the sorted data, which is what
``numpy.quantile(data, q, method="lower")`` returns. The estimate is within a
relative error ``relative_accuracy`` of that element, unless buckets were collapsed.

Bounded memory: each store keeps at most ``max_buckets`` (default 2048) contiguous
buckets. When a store would span more, its lowest buckets (smallest magnitudes) are
collapsed into the lowest kept bucket, so only the quantiles that fall there lose
the guarantee (they are over-estimated in magnitude). At ``a = 0.01`` 2048 buckets
span ``gamma**2048 ~ 6e17``: seventeen orders of magnitude of latencies before anything
collapses.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["QuantileSketch"]

# Values this close to zero would give log() = -inf or huge negative bucket indices.
_MIN_INDEXABLE = 1e-300


class _Store:
    """Dense bucket counts for indices ``offset .. offset + len(counts) - 1``."""

    __slots__ = ("counts", "offset", "max_buckets")

    def __init__(self, max_buckets: int) -> None:
        self.max_buckets = max_buckets
        self.counts = np.zeros(0, dtype=np.int64)
        self.offset = 0

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def add_counts(self, lo: int, counts: np.ndarray) -> None:
        """Add ``counts`` for indices ``lo .. lo + len(counts) - 1``, then re-bound."""
        if counts.size == 0:
            return
        if self.counts.size == 0:
            self.counts, self.offset = counts.astype(np.int64, copy=True), lo
        else:
            new_lo = min(lo, self.offset)
            new_hi = max(lo + counts.size, self.offset + self.counts.size)
            merged = np.zeros(new_hi - new_lo, dtype=np.int64)
            merged[self.offset - new_lo : self.offset - new_lo + self.counts.size] += self.counts
            merged[lo - new_lo : lo - new_lo + counts.size] += counts
            self.counts, self.offset = merged, new_lo
        self._collapse()

    def add_indices(self, idx: np.ndarray) -> None:
        if idx.size == 0:
            return
        hi = int(idx.max())
        if self.counts.size:
            hi = max(hi, self.offset + self.counts.size - 1)
        # Clamp before bincount so that one tiny outlier cannot allocate a huge array.
        floor = hi - self.max_buckets + 1
        lo = int(idx.min())
        if lo < floor:
            idx = np.maximum(idx, floor)
            lo = floor
        self.add_counts(lo, np.bincount(idx - lo))

    def _collapse(self) -> None:
        excess = self.counts.size - self.max_buckets
        if excess > 0:
            folded = self.counts[: excess + 1].sum()
            self.counts = self.counts[excess:].copy()
            self.counts[0] = folded
            self.offset += excess
        # Trim empty edges so that the state stays small and the span honest.
        nz = np.flatnonzero(self.counts)
        if nz.size == 0:
            self.counts, self.offset = np.zeros(0, dtype=np.int64), 0
        elif nz[0] > 0 or nz[-1] < self.counts.size - 1:
            self.offset += int(nz[0])
            self.counts = self.counts[nz[0] : nz[-1] + 1].copy()

    def to_state(self) -> dict[str, Any]:
        return {"offset": self.offset, "counts": self.counts.tolist()}

    @classmethod
    def from_state(cls, d: dict[str, Any], max_buckets: int) -> _Store:
        s = cls(max_buckets)
        s.offset = int(d["offset"])
        s.counts = np.asarray(d["counts"], dtype=np.int64)
        return s


class QuantileSketch:
    """DDSketch-style quantile sketch: relative-error guarantee, mergeable, bounded.

    Parameters
    ----------
    relative_accuracy
        Relative error ``a`` of every reported quantile, ``0 < a < 1``.
    max_buckets
        Most buckets per store (positive and negative values); see the module docstring.

    Notes
    -----
    Non-finite values (NaN, +-inf) are ignored by ``add`` and ``add_many``: the wire
    validation rejects them, and one of them would otherwise poison every quantile.
    ``quantile`` of an empty sketch is NaN.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(7)
    >>> latencies = rng.lognormal(mean=3.0, sigma=0.5, size=10_000)
    >>> s = QuantileSketch(relative_accuracy=0.01)
    >>> s.add_many(latencies)
    >>> exact = np.quantile(latencies, 0.99, method="lower")
    >>> bool(abs(s.quantile(0.99) - exact) <= 0.01 * exact)
    True
    >>> s.count
    10000
    """

    __slots__ = (
        "relative_accuracy",
        "max_buckets",
        "_gamma",
        "_inv_log_gamma",
        "_pos",
        "_neg",
        "_zero",
    )

    def __init__(self, relative_accuracy: float = 0.01, max_buckets: int = 2048) -> None:
        if not 0.0 < relative_accuracy < 1.0:
            raise ValueError(f"relative_accuracy must be in (0, 1), got {relative_accuracy!r}")
        if max_buckets < 2:
            raise ValueError(f"max_buckets must be >= 2, got {max_buckets!r}")
        self.relative_accuracy = float(relative_accuracy)
        self.max_buckets = int(max_buckets)
        self._gamma = (1.0 + self.relative_accuracy) / (1.0 - self.relative_accuracy)
        self._inv_log_gamma = 1.0 / math.log(self._gamma)
        self._reset()

    def _reset(self) -> None:
        self._pos = _Store(self.max_buckets)
        self._neg = _Store(self.max_buckets)
        self._zero = 0

    @property
    def count(self) -> int:
        """Number of (finite) values added."""
        return self._pos.total + self._neg.total + self._zero

    def add(self, x: float) -> None:
        """Add one value (the slow path: prefer ``add_many``)."""
        self.add_many(np.asarray([x], dtype=np.float64))

    def add_many(self, values: np.ndarray) -> None:
        """Add an array of values, vectorised (``log``, ``ceil`` and ``bincount``)."""
        x = np.asarray(values, dtype=np.float64).ravel()
        if x.size == 0:
            return
        x = x[np.isfinite(x)]
        pos = x[x > _MIN_INDEXABLE]
        neg = -x[x < -_MIN_INDEXABLE]
        self._zero += int(x.size - pos.size - neg.size)
        if pos.size:
            self._pos.add_indices(self._index(pos))
        if neg.size:
            self._neg.add_indices(self._index(neg))

    def _index(self, magnitudes: np.ndarray) -> np.ndarray:
        return np.ceil(np.log(magnitudes) * self._inv_log_gamma).astype(np.int64)

    def _value(self, index: int) -> float:
        return 2.0 * self._gamma**index / (self._gamma + 1.0)

    def quantile(self, q: float) -> float:
        """Estimate of the element of 0-based rank ``floor(q * (count - 1))``."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {q!r}")
        n = self.count
        if n == 0:
            return math.nan
        rank = math.floor(q * (n - 1))
        # Sorted order: negatives (largest magnitude first), zeros, positives.
        n_neg = self._neg.total
        if rank < n_neg:
            # Rank r among negatives sorted ascending = rank n_neg-1-r by magnitude.
            return -self._value(self._store_rank(self._neg, n_neg - 1 - rank))
        if rank < n_neg + self._zero:
            return 0.0
        return self._value(self._store_rank(self._pos, rank - n_neg - self._zero))

    @staticmethod
    def _store_rank(store: _Store, rank: int) -> int:
        cum = np.cumsum(store.counts)
        # First bucket whose cumulative count exceeds the 0-based rank.
        return store.offset + int(np.searchsorted(cum, rank, side="right"))

    def merge(self, other: QuantileSketch) -> None:
        """Add ``other``'s counts into this sketch (in place)."""
        if (other.relative_accuracy, other.max_buckets) != (
            self.relative_accuracy,
            self.max_buckets,
        ):
            raise ValueError("cannot merge sketches with different relative_accuracy/max_buckets")
        self._pos.add_counts(other._pos.offset, other._pos.counts)
        self._neg.add_counts(other._neg.offset, other._neg.counts)
        self._zero += other._zero

    def to_state(self) -> dict[str, Any]:
        """JSON-safe state (lists, ints, floats)."""
        return {
            "relative_accuracy": self.relative_accuracy,
            "max_buckets": self.max_buckets,
            "zero": self._zero,
            "pos": self._pos.to_state(),
            "neg": self._neg.to_state(),
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> QuantileSketch:
        """Rebuild a sketch from ``to_state()`` output."""
        s = cls(float(d["relative_accuracy"]), int(d["max_buckets"]))
        s._zero = int(d["zero"])
        s._pos = _Store.from_state(d["pos"], s.max_buckets)
        s._neg = _Store.from_state(d["neg"], s.max_buckets)
        return s

    def __getstate__(self) -> dict[str, Any]:
        return self.to_state()

    def __setstate__(self, state: dict[str, Any]) -> None:
        s = QuantileSketch.from_state(state)
        for name in self.__slots__:
            setattr(self, name, getattr(s, name))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantileSketch):
            return NotImplemented
        return self.to_state() == other.to_state()

    def __repr__(self) -> str:
        return f"QuantileSketch(relative_accuracy={self.relative_accuracy}, count={self.count})"
