"""One feature's mergeable profile: a numeric histogram with reference-quantile bins and a
quantile sketch, or capped category counts; missing and mismatched values counted apart.

See ``driftline.detectors.profile`` for the profile of a model (its features and prediction).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .sketch import QuantileSketch

__all__ = ["FeatureProfile", "infer_kind", "is_number", "sketch_buckets", "OTHER", "NEW_CATEGORY_ROOM"]

OTHER = "__other__"
# A window may hold this many categories the reference never saw, then "__other__".
NEW_CATEGORY_ROOM = 20
_NUM = (int, float, np.number)


def is_number(v: Any) -> bool:
    return isinstance(v, _NUM) and not isinstance(v, bool | np.bool_)


def infer_kind(values: Iterable[Any]) -> str:
    """``"numeric"`` when numbers (not bools) are most of the present values, else categorical.

    >>> infer_kind([1, 2.5, None, "x"]), infer_kind([True, False]), infer_kind(["a", 1])
    ('numeric', 'categorical', 'categorical')
    """
    n_num = n_other = 0
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if is_number(v):
            n_num += 1
        else:
            n_other += 1
    return "numeric" if n_num > n_other else "categorical"


def sketch_buckets(sketch: QuantileSketch) -> tuple[np.ndarray, np.ndarray]:
    """Sorted bucket upper bounds and counts of a ``QuantileSketch`` (its exact CDF steps).

    A value ``x`` is counted in the first bucket whose upper bound is ``>= x``: positive
    bucket ``i`` covers ``(g**(i-1), g**i]``, negative bucket ``i`` covers
    ``[-g**i, -g**(i-1))`` and zero has its own bucket (upper bound 0).
    """
    g = sketch._gamma
    pos, neg = sketch._pos, sketch._neg
    up_neg = -(g ** (neg.offset + np.arange(neg.counts.size, dtype=np.float64) - 1.0))
    up_pos = g ** (pos.offset + np.arange(pos.counts.size, dtype=np.float64))
    upper = np.concatenate([up_neg[::-1], [0.0], up_pos])
    counts = np.concatenate([neg.counts[::-1], [sketch._zero], pos.counts]).astype(np.int64)
    keep = counts > 0
    return upper[keep], counts[keep]


class FeatureProfile:
    """Mergeable summary of one feature (see the module docstring).

    Parameters
    ----------
    name
        Feature name.
    kind
        ``"numeric"`` or ``"categorical"``.
    edges
        Numeric only: sorted unique bin edges (reference quantiles), or ``None`` (unbinned).
    categories
        Categorical only: categories to keep from the start (counted 0 until seen).
    max_categories
        Most distinct categories kept (``"__other__"`` excluded).
    sketch_accuracy
        Relative accuracy of the numeric ``QuantileSketch``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> ref = FeatureProfile.from_values("amount", rng.normal(100, 10, 1000).tolist(), bins=4)
    >>> ref.hist.tolist(), ref.count
    ([0, 250, 250, 250, 250, 0], 1000)
    >>> win = ref.empty_like()
    >>> win.update([50.0, 100.0, "oops", None, 1e6])
    >>> win.hist.tolist(), win.count, win.missing, win.mismatch
    ([1, 0, 0, 1, 0, 1], 3, 1, 1)
    """

    def __init__(
        self,
        name: str,
        kind: str,
        edges: Sequence[float] | np.ndarray | None = None,
        categories: Iterable[str] = (),
        max_categories: int = 50,
        sketch_accuracy: float = 0.01,
    ) -> None:
        if kind not in ("numeric", "categorical"):
            raise ValueError(f"kind must be 'numeric' or 'categorical', got {kind!r}")
        if max_categories < 1:
            raise ValueError(f"max_categories must be >= 1, got {max_categories!r}")
        self.name = name
        self.kind = kind
        self.max_categories = int(max_categories)
        self.sketch_accuracy = float(sketch_accuracy)
        self.edges = None if edges is None else np.unique(np.asarray(edges, dtype=np.float64))
        self._reset(categories)

    def _reset(self, categories: Iterable[str] = ()) -> None:
        self.count = self.missing = self.mismatch = 0
        self.min, self.max = math.inf, -math.inf
        self.sketch = QuantileSketch(self.sketch_accuracy)
        n_bins = 0 if self.edges is None else max(self.edges.size - 1, 1) + 2
        self.hist = np.zeros(n_bins, dtype=np.int64)
        self.counts: dict[str, int] = dict.fromkeys(categories, 0)

    @classmethod
    def from_values(
        cls, name: str, values: Sequence[Any], kind: str | None = None, bins: int = 10, **kw: Any
    ) -> FeatureProfile:
        """Reference profile of raw values: kind inferred, edges = ``bins`` quantile bins."""
        kind = kind or infer_kind(values)
        edges = None
        if kind == "numeric":
            nums = np.array([v for v in values if is_number(v)], dtype=np.float64)
            nums = nums[np.isfinite(nums)]
            if nums.size:
                edges = np.quantile(nums, np.linspace(0.0, 1.0, bins + 1))
        fp = cls(name, kind, edges, **kw)
        fp.update(values)
        return fp

    def empty_like(self, window: bool = True) -> FeatureProfile:
        """Empty profile with the same bins (and, for windows, room for new categories)."""
        room = NEW_CATEGORY_ROOM if window else 0
        cats = [c for c in self.counts if c != OTHER]
        return FeatureProfile(
            self.name,
            self.kind,
            self.edges,
            cats,
            max(self.max_categories, len(cats) + room),
            self.sketch_accuracy,
        )

    @property
    def n(self) -> int:
        """Events seen: present + missing + mismatched values."""
        return self.count + self.missing + self.mismatch

    def update(self, values: Sequence[Any]) -> None:
        """Add one value per event (``None`` for an absent key)."""
        if self.kind == "numeric":
            self._update_numeric(values)
        else:
            self._update_categorical(values)

    def _update_numeric(self, values: Sequence[Any]) -> None:
        nums: list[float] = []
        missing = mismatch = 0
        for v in values:
            t = type(v)
            if t is float or t is int:
                nums.append(v)
            elif v is None:
                missing += 1
            elif is_number(v):
                nums.append(float(v))
            else:
                mismatch += 1
        x = np.array(nums, dtype=np.float64)
        finite = np.isfinite(x)
        if not finite.all():
            missing += int(x.size - finite.sum())
            x = x[finite]
        self.missing += missing
        self.mismatch += mismatch
        if x.size == 0:
            return
        self.count += int(x.size)
        self.min = min(self.min, float(x.min()))
        self.max = max(self.max, float(x.max()))
        self.sketch.add_many(x)
        if self.edges is not None:
            self.hist += np.bincount(self._bin_index(x), minlength=self.hist.size)

    def _bin_index(self, x: np.ndarray) -> np.ndarray:
        e = self.edges
        assert e is not None
        idx = np.searchsorted(e[1:-1], x, side="right") + 1
        idx[x < e[0]] = 0
        idx[x > e[-1]] = self.hist.size - 1
        return idx

    def _update_categorical(self, values: Sequence[Any]) -> None:
        keys: list[str] = []
        for v in values:
            t = type(v)
            if t is str:
                keys.append(v)
            elif v is None or (t is float and math.isnan(v)):
                self.missing += 1
            elif t is bool or isinstance(v, np.bool_):
                keys.append("true" if v else "false")
            elif isinstance(v, int | np.integer):
                keys.append(str(int(v)))
            else:
                self.mismatch += 1
        self.count += len(keys)
        self._add_counts(Counter(keys))

    def _add_counts(self, counts: dict[str, int]) -> None:
        c = self.counts
        for key, k in counts.items():
            if key in c:
                c[key] += k
            elif len(c) - (OTHER in c) < self.max_categories and key != OTHER:
                c[key] = k
            else:
                c[OTHER] = c.get(OTHER, 0) + k

    def bin_labels(self) -> list[str]:
        """Human-readable label of each histogram bin (numeric) or category."""
        if self.kind == "categorical":
            return list(self.counts)
        if self.edges is None:
            return []
        e = [f"{v:.4g}" for v in self.edges]
        if len(e) == 1:
            return [f"< {e[0]}", f"= {e[0]}", f"> {e[0]}"]
        mid = [f"[{a}, {b})" for a, b in zip(e[:-2], e[1:-1], strict=True)] + [
            f"[{e[-2]}, {e[-1]}]"
        ]
        return [f"< {e[0]}", *mid, f"> {e[-1]}"]

    def freeze_bins(self, bins: int = 10) -> None:
        """Give an unbinned numeric profile quantile edges from its sketch; fill the histogram.

        Interior edges are the upper bounds of the sketch buckets holding the quantiles, so
        no bucket straddles an edge and the histogram is exact for the values sketched
        (a bin's share may differ from ``1 / bins`` by one bucket's share).
        """
        if self.kind != "numeric" or self.edges is not None or self.count == 0:
            return
        upper, counts = sketch_buckets(self.sketch)
        cum = np.cumsum(counts)
        ranks = np.floor(np.linspace(0.0, 1.0, bins + 1)[1:-1] * (cum[-1] - 1))
        inner = upper[np.searchsorted(cum, ranks, side="right")]
        self.edges = np.unique(np.clip(np.array([self.min, *inner, self.max]), self.min, self.max))
        self.hist = np.zeros(max(self.edges.size - 1, 1) + 2, dtype=np.int64)
        g = self.sketch._gamma
        # A point strictly inside each bucket: (lower + upper) / 2.
        mid = np.where(upper > 0, upper * (1 + 1 / g) / 2, upper * (1 + g) / 2)
        mid = np.clip(mid, self.min, self.max)
        self.hist += np.bincount(
            self._bin_index(mid), weights=counts, minlength=self.hist.size
        ).astype(np.int64)

    def merge(self, other: FeatureProfile) -> None:
        """Add ``other`` (same name, kind and edges) into this profile, in place.

        A kind conflict (a feature inferred numeric in one unbinned partial and categorical
        in another) keeps this profile's kind and counts ``other``'s values as mismatches.
        """
        self.missing += other.missing
        if other.kind != self.kind:
            self.mismatch += other.mismatch + other.count
            return
        self.mismatch += other.mismatch
        self.count += other.count
        if self.kind == "categorical":
            self._add_counts(other.counts)
            return
        same = (self.edges is None and other.edges is None) or (
            self.edges is not None
            and other.edges is not None
            and np.array_equal(self.edges, other.edges)
        )
        if not same:
            raise ValueError(
                f"feature {self.name!r}: cannot merge profiles with different bin edges"
            )
        self.min, self.max = min(self.min, other.min), max(self.max, other.max)
        self.sketch.merge(other.sketch)
        self.hist += other.hist

    def to_state(self) -> dict[str, Any]:
        """JSON-safe state (min/max of an empty profile are ``None``)."""
        d: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "max_categories": self.max_categories,
            "count": self.count,
            "missing": self.missing,
            "mismatch": self.mismatch,
        }
        if self.kind == "categorical":
            d["counts"] = dict(self.counts)
        else:
            d["sketch_accuracy"] = self.sketch_accuracy
            d["edges"] = None if self.edges is None else self.edges.tolist()
            d["hist"] = self.hist.tolist()
            d["min"] = self.min if self.count else None
            d["max"] = self.max if self.count else None
            d["sketch"] = self.sketch.to_state()
        return d

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> FeatureProfile:
        fp = cls(
            d["name"],
            d["kind"],
            d.get("edges"),
            (),
            int(d["max_categories"]),
            float(d.get("sketch_accuracy", 0.01)),
        )
        fp.count, fp.missing, fp.mismatch = int(d["count"]), int(d["missing"]), int(d["mismatch"])
        if fp.kind == "categorical":
            fp.counts = {str(k): int(v) for k, v in d["counts"].items()}
        else:
            fp.hist = np.asarray(d["hist"], dtype=np.int64)
            fp.min = math.inf if d["min"] is None else float(d["min"])
            fp.max = -math.inf if d["max"] is None else float(d["max"])
            fp.sketch = QuantileSketch.from_state(d["sketch"])
        return fp

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeatureProfile) and self.to_state() == other.to_state()

    def __repr__(self) -> str:
        return f"FeatureProfile({self.name!r}, {self.kind!r}, count={self.count})"
