"""Ranking / recommendation metrics over ranked lists of item ids and later feedback.

A ranking event carries the recommended item ids in rank order; its feedback (a label
event, see ``docs/wire-contract.md``) names the items clicked and converted. Per list:

- **engagement** (over every list): ``ctr`` = share of lists with a click on a
  recommended item, ``item_ctr`` = clicked recommended items / recommended items,
  ``conversion_rate`` = share of lists with a conversion on a recommended item;
- **ranking quality at K** with binary relevance (``relevant``, by default the clicked
  and converted items, recommended or not), averaged over the *judged* lists, those with at
  least one relevant item (as trec_eval skips queries without relevant documents):

  - ``precision_at_k`` = hits in the top K / K (a list shorter than K is not padded);
  - ``recall_at_k`` = hits in the top K / relevant items;
  - ``map_at_k`` = sum over hit ranks i <= K of precision@i, / min(relevant, K);
  - ``ndcg_at_k`` = DCG@K / IDCG@K with gain 1 and discount 1 / log2(rank + 1): sklearn's
    ``ndcg_score(k=K)`` on binary relevance, where IDCG counts min(relevant, K) hits;
  - ``mrr`` = 1 / rank of the first hit in the top K (0 without one);
  - ``hit_rate_at_k`` = share of judged lists with a hit in the top K.

  sklearn's ``ndcg_score`` scores an all-irrelevant row 0 and keeps it in its mean:
  ``ndcg_at_k * judged / lists`` is that mean.
- **coverage**: distinct items recommended in a top K (``distinct_items``), and
  ``catalog_coverage`` = that / ``catalog_size`` when the catalog size is known.

Repeated ids in a list count once, at their first rank. Distinct items are counted
exactly up to ``max_distinct`` ids, then estimated (k minimum values sketch, relative
standard error about 1 / sqrt(max_distinct)), so memory stays bounded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = ["DistinctCounter", "RankingAccumulator"]

# Item hashes are 53-bit so they stay exact in any JSON reader (doubles).
_HASH_BITS = 53
_SUMS = ("precision", "recall", "ap", "ndcg", "rr", "hit")


def _item_hash(item: str) -> int:
    # Not Python's hash(): it is salted per process, and partials merge across processes.
    digest = hashlib.blake2b(item.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - _HASH_BITS)


class DistinctCounter:
    """Mergeable distinct count: exact up to ``max_distinct`` ids, then a KMV estimate.

    Keeps the ``max_distinct`` smallest 53-bit hashes of the ids seen. With fewer distinct
    ids the count is exact (barring a 53-bit hash collision); beyond, the estimate is
    (k - 1) / (k-th smallest hash / 2^53) (Bar-Yossef et al.).

    Examples
    --------
    >>> c = DistinctCounter(max_distinct=1000)
    >>> c.update(f"item-{i % 700}" for i in range(5000))
    >>> c.count()
    700.0
    >>> c.update(f"item-{i}" for i in range(50_000))
    >>> round(c.count(), -3)
    50000.0
    """

    def __init__(self, max_distinct: int = 8192) -> None:
        if max_distinct < 2:
            raise ValueError(f"max_distinct must be >= 2, got {max_distinct!r}")
        self.max_distinct = int(max_distinct)
        self._reset()

    def _reset(self) -> None:
        self.hashes: set[int] = set()

    def _trim(self) -> None:
        if len(self.hashes) > self.max_distinct:
            h = np.fromiter(self.hashes, dtype=np.int64, count=len(self.hashes))
            keep = np.partition(h, self.max_distinct - 1)[: self.max_distinct]
            self.hashes = set(keep.tolist())

    def update(self, items: Iterable[str]) -> None:
        self.hashes.update(_item_hash(i) for i in items)
        # Trim lazily: sets twice the bound are cheap, a partition per list is not.
        if len(self.hashes) > 2 * self.max_distinct:
            self._trim()

    def count(self) -> float:
        self._trim()
        k = len(self.hashes)
        if k < self.max_distinct:
            return float(k)
        return (k - 1) * float(2**_HASH_BITS) / (max(self.hashes) + 1)

    def merge(self, other: DistinctCounter) -> None:
        if other.max_distinct != self.max_distinct:
            raise ValueError(
                f"cannot merge max_distinct {other.max_distinct} into {self.max_distinct}"
            )
        self.hashes |= other.hashes
        self._trim()

    def to_state(self) -> dict[str, Any]:
        self._trim()
        return {"max_distinct": self.max_distinct, "hashes": sorted(self.hashes)}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> DistinctCounter:
        c = cls(int(d["max_distinct"]))
        c.hashes = {int(h) for h in d["hashes"]}
        return c


class RankingAccumulator:
    """Engagement, ranking-quality-at-K and coverage sums over ranked lists with feedback.

    Parameters
    ----------
    k
        Cut-off of the @K metrics and of coverage.
    catalog_size
        Number of items that could be recommended; gives ``catalog_coverage``.
    max_distinct
        Exact distinct-item count up to this many ids (see ``DistinctCounter``).

    Examples
    --------
    >>> acc = RankingAccumulator(k=3, catalog_size=10)
    >>> acc.update(["a", "b", "c", "d"], clicked={"b"}, converted={"b"})
    >>> acc.update(["c", "a", "e"], clicked={"e", "z"})
    >>> acc.update(["b", "e", "f"])                   # shown, no feedback: not judged
    >>> {k: round(v, 4) for k, v in acc.metrics().items()}  # doctest: +NORMALIZE_WHITESPACE
    {'ctr': 0.6667, 'item_ctr': 0.2, 'conversion_rate': 0.3333, 'precision_at_k': 0.3333,
     'recall_at_k': 0.75, 'map_at_k': 0.3333, 'ndcg_at_k': 0.4688, 'mrr': 0.4167,
     'hit_rate_at_k': 1.0, 'distinct_items': 5.0, 'catalog_coverage': 0.5}
    """

    def __init__(self, k: int = 10, catalog_size: int | None = None, max_distinct: int = 8192):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k!r}")
        if catalog_size is not None and catalog_size < 1:
            raise ValueError(f"catalog_size must be >= 1 or None, got {catalog_size!r}")
        self.k = int(k)
        self.catalog_size = None if catalog_size is None else int(catalog_size)
        self.max_distinct = int(max_distinct)
        # Discount 1 / log2(rank + 1) for ranks 1..k and its prefix sums (the IDCG by hits).
        self._discount = 1.0 / np.log2(np.arange(2, self.k + 2))
        self._idcg = np.cumsum(self._discount)
        self._reset()

    def _reset(self) -> None:
        self.n_lists = 0
        self.n_judged = 0
        self.n_shown = 0  # recommended items (after de-duplication), all ranks
        self.n_clicked_shown = 0
        self.n_lists_clicked = 0
        self.n_lists_converted = 0
        self.sums = dict.fromkeys(_SUMS, 0.0)
        self.distinct = DistinctCounter(self.max_distinct)

    @property
    def n(self) -> int:
        return self.n_lists

    def update(
        self,
        ranked_items: Sequence[str],
        relevant: Iterable[str] | None = None,
        clicked: Iterable[str] = (),
        converted: Iterable[str] = (),
    ) -> None:
        """Add one list; ``relevant`` defaults to the clicked and converted items."""
        self.update_many([ranked_items], None if relevant is None else [relevant],
                         [clicked], [converted])  # fmt: skip

    def update_many(
        self,
        ranked_items: Sequence[Sequence[str]],
        relevant: Sequence[Iterable[str]] | None = None,
        clicked: Sequence[Iterable[str]] | None = None,
        converted: Sequence[Iterable[str]] | None = None,
    ) -> None:
        """Add a batch of lists with their feedback (``None`` = no clicks / conversions)."""
        m = len(ranked_items)
        for name, col in (("relevant", relevant), ("clicked", clicked), ("converted", converted)):
            if col is not None and len(col) != m:
                raise ValueError(f"{name} must have one entry per ranked list")
        if m == 0:
            return
        k = self.k
        hits = np.zeros((m, k), dtype=bool)
        n_rel = np.zeros(m, dtype=np.int64)
        for i, items in enumerate(ranked_items):
            ranked = list(dict.fromkeys(str(x) for x in items))
            clk = set() if clicked is None else {str(x) for x in clicked[i]}
            cnv = set() if converted is None else {str(x) for x in converted[i]}
            rel = clk | cnv if relevant is None else {str(x) for x in relevant[i]}
            shown_clicks = sum(1 for x in ranked if x in clk)
            self.n_shown += len(ranked)
            self.n_clicked_shown += shown_clicks
            self.n_lists_clicked += shown_clicks > 0
            self.n_lists_converted += any(x in cnv for x in ranked)
            top = ranked[:k]
            self.distinct.update(top)
            hits[i, : len(top)] = [x in rel for x in top]
            n_rel[i] = len(rel)
        self.n_lists += m
        judged = n_rel > 0
        if not judged.any():
            return
        hits, n_rel = hits[judged], n_rel[judged]
        n_hits = hits.sum(axis=1)
        cum_hits = np.cumsum(hits, axis=1)
        ranks = np.arange(1, k + 1)
        ideal = np.minimum(n_rel, k)
        first = np.argmax(hits, axis=1)
        s = self.sums
        s["precision"] += float(n_hits.sum()) / k
        s["recall"] += float((n_hits / n_rel).sum())
        s["ap"] += float(((hits * cum_hits / ranks).sum(axis=1) / ideal).sum())
        s["ndcg"] += float(((hits @ self._discount) / self._idcg[ideal - 1]).sum())
        s["rr"] += float(np.where(n_hits > 0, 1.0 / (first + 1), 0.0).sum())
        s["hit"] += float((n_hits > 0).sum())
        self.n_judged += int(judged.sum())

    def metrics(self) -> dict[str, float]:
        """The metric names of the module docstring; @K metrics only with a judged list."""
        if self.n_lists == 0:
            return {}
        out = {
            "ctr": self.n_lists_clicked / self.n_lists,
            "item_ctr": self.n_clicked_shown / self.n_shown if self.n_shown else 0.0,
            "conversion_rate": self.n_lists_converted / self.n_lists,
        }
        if self.n_judged:
            names = ("precision_at_k", "recall_at_k", "map_at_k", "ndcg_at_k", "mrr")
            for name, key in zip(names, _SUMS, strict=False):
                out[name] = self.sums[key] / self.n_judged
            out["hit_rate_at_k"] = self.sums["hit"] / self.n_judged
        distinct = self.distinct.count()
        out["distinct_items"] = distinct
        if self.catalog_size is not None:
            out["catalog_coverage"] = min(distinct / self.catalog_size, 1.0)
        return out

    def counts(self) -> dict[str, int]:
        """Denominators, for the ``counts`` of a metrics message."""
        return {"lists": self.n_lists, "judged_lists": self.n_judged, "items_shown": self.n_shown}

    def merge(self, other: RankingAccumulator) -> None:
        if (other.k, other.catalog_size) != (self.k, self.catalog_size):
            raise ValueError(
                f"cannot merge k={other.k}, catalog_size={other.catalog_size} into "
                f"k={self.k}, catalog_size={self.catalog_size}"
            )
        for name in ("n_lists", "n_judged", "n_shown", "n_clicked_shown"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.n_lists_clicked += other.n_lists_clicked
        self.n_lists_converted += other.n_lists_converted
        for key in _SUMS:
            self.sums[key] += other.sums[key]
        self.distinct.merge(other.distinct)

    def to_state(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "catalog_size": self.catalog_size,
            "n_lists": self.n_lists,
            "n_judged": self.n_judged,
            "n_shown": self.n_shown,
            "n_clicked_shown": self.n_clicked_shown,
            "n_lists_clicked": self.n_lists_clicked,
            "n_lists_converted": self.n_lists_converted,
            "sums": dict(self.sums),
            "distinct": self.distinct.to_state(),
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> RankingAccumulator:
        distinct = DistinctCounter.from_state(d["distinct"])
        acc = cls(int(d["k"]), d["catalog_size"], distinct.max_distinct)
        for name in ("n_lists", "n_judged", "n_shown", "n_clicked_shown"):
            setattr(acc, name, int(d[name]))
        acc.n_lists_clicked = int(d["n_lists_clicked"])
        acc.n_lists_converted = int(d["n_lists_converted"])
        acc.sums = {key: float(d["sums"][key]) for key in _SUMS}
        acc.distinct = distinct
        return acc
