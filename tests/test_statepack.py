"""The packed state form: exactly what a JSON round trip gives, smaller, and refusing what it cannot read.

The reference is orjson: ``unpack_state(pack_state(s))`` must equal ``orjson.loads(orjson.dumps(s))``
for every accumulator's state and for arbitrary JSON-like trees, and the accumulators rebuilt
from either must give the same metrics.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.detectors.cbpe import CBPEAccumulator
from driftline.detectors.metrics import (
    BinaryAccumulator,
    MulticlassAccumulator,
    RegressionAccumulator,
    ScoreSummary,
)
from driftline.detectors.ranking import RankingAccumulator
from driftline.detectors.sketch import QuantileSketch
from driftline.detectors.statepack import FORMAT_VERSION, pack_state, unpack_state


def _json_round_trip(state: Any) -> Any:
    return orjson.loads(orjson.dumps(state))


def _states(n: int, seed: int) -> dict[str, Any]:
    """One accumulator of each kind fed ``n`` seeded events (dense and sparse histograms alike)."""
    rng = np.random.default_rng(seed)
    score = rng.random(n)
    y = (rng.random(n) < score).astype(int)
    binary = BinaryAccumulator()
    binary.update_many(y, (score >= 0.5).astype(int), score)
    multi = MulticlassAccumulator()
    classes = np.array(["a", "b", "c.d", "é"])
    multi.update_many(list(classes[rng.integers(0, 4, n)]), list(classes[rng.integers(0, 4, n)]))
    reg = RegressionAccumulator()
    truth = rng.normal(10, 3, n)
    reg.update_many(truth, truth + rng.normal(0, 1, n))
    summary = ScoreSummary()
    summary.update_many(score)
    sketch = QuantileSketch()
    sketch.add_many(np.concatenate([rng.lognormal(3, 1, n), -rng.lognormal(0, 2, n), np.zeros(3)]))
    cbpe = CBPEAccumulator(0.5)
    cbpe.update_many(score)
    ranking = RankingAccumulator(5, 100)
    items = [[f"i{j}" for j in rng.choice(100, 8, replace=False)] for _ in range(max(n // 20, 1))]
    rel = [list(it[: int(rng.integers(0, 3))]) for it in items]
    ranking.update_many(items, rel, rel, [[] for _ in items])
    return {"binary": binary, "multiclass": multi, "regression": reg, "summary": summary, "sketch": sketch,
            "cbpe": cbpe, "ranking": ranking}


@pytest.mark.parametrize("n", [1, 60, 300, 5000])
def test_every_accumulator_state_comes_back_as_json_gives_it(n: int) -> None:
    for name, acc in _states(n, seed=n).items():
        state = acc.to_state()
        assert unpack_state(pack_state(state)) == _json_round_trip(state), name
        rebuilt = type(acc).from_state(unpack_state(pack_state(state)))
        via_json = type(acc).from_state(_json_round_trip(state))
        if hasattr(acc, "metrics"):
            assert rebuilt.metrics() == via_json.metrics(), name  # bit for bit, NaN-free
        assert rebuilt.to_state() == via_json.to_state(), name


def test_packed_and_deflated_is_smaller_than_zlib_json() -> None:
    for n in (60, 300, 1000):
        for name, acc in _states(n, seed=n).items():
            state = acc.to_state()
            packed = zlib.compress(pack_state(state), 9)
            assert len(packed) <= len(zlib.compress(orjson.dumps(state), 9)), (name, n)


json_leaf = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
             | st.text(max_size=8))
int_arrays = st.lists(st.integers(-(2**63), 2**63 - 1) | st.integers(0, 3), min_size=2, max_size=60)
sparse_arrays = st.lists(st.sampled_from([0, 0, 0, 0, 1, 2, 7, 300, 2**40]), min_size=2, max_size=300)
sorted_arrays = st.lists(st.integers(0, 5000), min_size=2, max_size=200).map(sorted)
float_arrays = st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32) | st.floats(allow_nan=False,
                        allow_infinity=False), min_size=2, max_size=40)
json_trees = st.recursive(json_leaf | int_arrays | sparse_arrays | sorted_arrays | float_arrays,
                          lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=5),
                          max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(json_trees)
def test_any_json_tree_round_trips(tree: Any) -> None:
    assert unpack_state(pack_state(tree)) == tree


def test_floats_keep_their_bits() -> None:
    values = [-0.0, 0.0, 1e-310, 5e-324, 2.0**53, 2.0**53 + 2, -(2.0**60), 0.1, 1700000040.0, math.pi]
    for v in values:
        back = unpack_state(pack_state(v))
        assert math.copysign(1.0, back) == math.copysign(1.0, v) and back == v and type(back) is float
    back = unpack_state(pack_state(values))
    assert np.array_equal(np.asarray(back).view(np.uint64), np.asarray(values).view(np.uint64))
    assert unpack_state(pack_state([float("nan"), 1.0]))[0] != unpack_state(pack_state([float("nan"), 1.0]))[0]
    assert unpack_state(pack_state([True, 1, 0, False])) == [True, 1, 0, False]  # bools stay bools


def test_what_it_cannot_read_is_refused_with_a_message() -> None:
    packed = pack_state({"counts": list(range(100)), "x": "y"})
    with pytest.raises(ValueError, match="format version 2"):
        unpack_state(bytes([FORMAT_VERSION + 1]) + packed[1:])
    for cut in (1, len(packed) // 2, len(packed) - 1):
        with pytest.raises(ValueError, match="packed state"):
            unpack_state(packed[:cut])
    with pytest.raises(ValueError, match="trailing"):
        unpack_state(packed + b"\x00")
    with pytest.raises(ValueError, match="unknown tag"):
        unpack_state(bytes([FORMAT_VERSION, 200]))
    with pytest.raises(ValueError, match="empty"):
        unpack_state(b"")
    with pytest.raises(TypeError):
        pack_state({"x": object()})
