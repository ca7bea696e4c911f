"""RankingAccumulator against a direct per-list implementation and sklearn's ndcg_score."""

from __future__ import annotations

import math
import pickle

import numpy as np
import orjson
import pytest
from sklearn.metrics import ndcg_score

from driftline.detectors.ranking import DistinctCounter, RankingAccumulator

CATALOG = [f"i{j}" for j in range(200)]


def _lists(seed: int, n: int = 600, k: int = 10) -> list[tuple[list[str], set[str], set[str]]]:
    """(ranked list of >= k distinct items, clicked, converted), some lists without feedback."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ranked = list(rng.choice(CATALOG, rng.integers(k, 2 * k), replace=False))
        clicked = {x for x in ranked if rng.random() < 0.1}
        if rng.random() < 0.3:
            clicked.add(str(rng.choice(CATALOG)))  # relevant, maybe not recommended
        converted = {x for x in clicked if rng.random() < 0.3}
        if rng.random() < 0.2:
            clicked, converted = set(), set()
        out.append((ranked, clicked, converted))
    return out


def _direct(data: list[tuple[list[str], set[str], set[str]]], k: int) -> dict[str, float]:
    """Textbook definitions, one list at a time, relevance = clicked | converted."""
    prec, rec, ap, ndcg, rr, hit = [], [], [], [], [], []
    clicked_lists = converted_lists = shown = clicked_shown = 0
    for ranked, clk, cnv in data:
        shown += len(ranked)
        clicked_shown += len(set(ranked) & clk)
        clicked_lists += bool(set(ranked) & clk)
        converted_lists += bool(set(ranked) & cnv)
        rel = clk | cnv
        if not rel:
            continue
        top = ranked[:k]
        h = [x in rel for x in top]
        prec.append(sum(h) / k)
        rec.append(sum(h) / len(rel))
        ap.append(sum(sum(h[: i + 1]) / (i + 1) for i in range(len(h)) if h[i]) / min(len(rel), k))
        dcg = sum(1 / math.log2(i + 2) for i in range(len(h)) if h[i])
        idcg = sum(1 / math.log2(i + 2) for i in range(min(len(rel), k)))
        ndcg.append(dcg / idcg)
        rr.append(next((1 / (i + 1) for i in range(len(h)) if h[i]), 0.0))
        hit.append(float(any(h)))
    n = len(data)
    return {
        "ctr": clicked_lists / n,
        "item_ctr": clicked_shown / shown,
        "conversion_rate": converted_lists / n,
        "precision_at_k": float(np.mean(prec)),
        "recall_at_k": float(np.mean(rec)),
        "map_at_k": float(np.mean(ap)),
        "ndcg_at_k": float(np.mean(ndcg)),
        "mrr": float(np.mean(rr)),
        "hit_rate_at_k": float(np.mean(hit)),
        "distinct_items": float(len({x for ranked, _, _ in data for x in ranked[:k]})),
    }


def _accumulate(data: list[tuple[list[str], set[str], set[str]]], **kw: int) -> RankingAccumulator:
    acc = RankingAccumulator(**kw)
    acc.update_many(
        [d[0] for d in data], clicked=[d[1] for d in data], converted=[d[2] for d in data]
    )
    return acc


@pytest.mark.parametrize(("seed", "k"), [(0, 10), (1, 5), (2, 1)])
def test_matches_direct_implementation(seed: int, k: int) -> None:
    data = _lists(seed, k=k)
    m = _accumulate(data, k=k, catalog_size=400).metrics()
    want = _direct(data, k)
    for key, v in want.items():
        assert m[key] == pytest.approx(v, rel=1e-12), key
    assert m["catalog_coverage"] == pytest.approx(want["distinct_items"] / 400)


@pytest.mark.parametrize("k", [3, 10])
def test_ndcg_matches_sklearn_binary_relevance(k: int) -> None:
    data = [d for d in _lists(3, k=k) if d[1] | d[2]]
    acc = _accumulate(data, k=k)
    # One row per list over the catalogue: scores fall with rank, unranked items score
    # below every ranked one (lists hold >= k items, so they never enter the top k).
    idx = {x: j for j, x in enumerate(CATALOG)}
    y_true = np.zeros((len(data), len(CATALOG)))
    y_score = np.full((len(data), len(CATALOG)), -1.0)
    for r, (ranked, clk, cnv) in enumerate(data):
        for pos, x in enumerate(ranked):
            y_score[r, idx[x]] = len(ranked) - pos
        for x in clk | cnv:
            y_true[r, idx[x]] = 1.0
    want = ndcg_score(y_true, y_score, k=k)
    assert acc.metrics()["ndcg_at_k"] == pytest.approx(want, rel=1e-12)


def test_sklearn_all_irrelevant_rows_relation() -> None:
    data = _lists(4)
    acc = _accumulate(data)
    judged = acc.counts()["judged_lists"]
    assert 0 < judged < acc.n == len(data)
    idx = {x: j for j, x in enumerate(CATALOG)}
    y_true = np.zeros((len(data), len(CATALOG)))
    y_score = np.full((len(data), len(CATALOG)), -1.0)
    for r, (ranked, clk, cnv) in enumerate(data):
        for pos, x in enumerate(ranked):
            y_score[r, idx[x]] = len(ranked) - pos
        for x in clk | cnv:
            y_true[r, idx[x]] = 1.0
    assert acc.metrics()["ndcg_at_k"] * judged / acc.n == pytest.approx(
        ndcg_score(y_true, y_score, k=10), rel=1e-12
    )


def test_split_merge_round_trip_equals_single_pass() -> None:
    data = _lists(5)
    whole = _accumulate(data, k=10, catalog_size=300)
    total = RankingAccumulator(k=10, catalog_size=300)
    for lo, hi in ((0, 1), (1, 250), (250, 600)):
        part = _accumulate(data[lo:hi], k=10, catalog_size=300)
        part = RankingAccumulator.from_state(orjson.loads(orjson.dumps(part.to_state())))
        total.merge(pickle.loads(pickle.dumps(part)))
    assert total.counts() == whole.counts()
    assert total.metrics() == pytest.approx(whole.metrics(), rel=1e-12)


def test_explicit_relevance_duplicates_and_short_lists() -> None:
    acc = RankingAccumulator(k=4)
    acc.update(["a", "a", "b"], relevant={"a", "c"}, clicked=["b"])
    m = acc.metrics()
    # Deduplicated to [a, b]; relevance {a, c}; precision divides by k, not the length.
    assert m["precision_at_k"] == 0.25 and m["recall_at_k"] == 0.5 and m["mrr"] == 1.0
    assert m["ndcg_at_k"] == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert m["ctr"] == 1.0 and m["item_ctr"] == 0.5 and m["conversion_rate"] == 0.0
    assert acc.counts() == {"lists": 1, "judged_lists": 1, "items_shown": 2}


def test_no_feedback_and_empty() -> None:
    acc = RankingAccumulator(k=2)
    assert acc.metrics() == {}
    acc.update_many([])
    acc.update_many([["x", "y"], []])
    m = acc.metrics()
    assert m == {"ctr": 0.0, "item_ctr": 0.0, "conversion_rate": 0.0, "distinct_items": 2.0}


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="k must"):
        RankingAccumulator(k=0)
    with pytest.raises(ValueError, match="catalog_size"):
        RankingAccumulator(catalog_size=0)
    with pytest.raises(ValueError, match="clicked"):
        RankingAccumulator().update_many([["a"]], clicked=[])
    with pytest.raises(ValueError, match="merge"):
        RankingAccumulator(k=3).merge(RankingAccumulator(k=4))


def test_distinct_counter_exact_then_bounded_estimate() -> None:
    c = DistinctCounter(max_distinct=512)
    c.update(str(i) for i in range(511))
    assert c.count() == 511.0
    parts = [DistinctCounter(512) for _ in range(4)]
    for j, p in enumerate(parts):
        p.update(f"item-{i}" for i in range(j * 20_000, j * 20_000 + 30_000))  # overlapping
    total = DistinctCounter(512)
    for p in parts:
        total.merge(DistinctCounter.from_state(orjson.loads(orjson.dumps(p.to_state()))))
    assert len(total.hashes) == 512
    # 90,000 distinct; relative standard error ~ 1 / sqrt(512) = 4.4%.
    assert total.count() == pytest.approx(90_000, rel=0.15)
    assert max(total.to_state()["hashes"]) < 2**53
