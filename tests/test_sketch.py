"""QuantileSketch: relative error against numpy's 'lower' quantile, merge, state, bounds."""

from __future__ import annotations

import pickle

import numpy as np
import orjson
import pytest

from driftline.detectors import QuantileSketch

QS = [0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0]


def _data(kind: str, seed: int, n: int = 20_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "lognormal":
        return rng.lognormal(3.0, 1.0, n)
    if kind == "exponential":
        return rng.exponential(25.0, n)
    if kind == "mixed_sign":
        return np.concatenate([rng.normal(0, 50, n), np.zeros(100)])
    raise AssertionError(kind)


def _assert_close(sketch: QuantileSketch, data: np.ndarray, acc: float) -> None:
    for q in QS:
        # Rank definition: 0-based floor(q * (n - 1)), i.e. numpy method="lower".
        exact = float(np.quantile(data, q, method="lower"))
        got = sketch.quantile(q)
        assert abs(got - exact) <= acc * abs(exact) * (1 + 1e-9), (q, got, exact)


@pytest.mark.parametrize("kind", ["lognormal", "exponential", "mixed_sign"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_relative_error_within_accuracy(kind: str, seed: int) -> None:
    data = _data(kind, seed)
    s = QuantileSketch(0.01)
    for chunk in np.array_split(data, 37):
        s.add_many(chunk)
    assert s.count == data.size
    _assert_close(s, data, 0.01)


def test_add_equals_add_many() -> None:
    data = _data("lognormal", 5, 2000)
    a, b = QuantileSketch(), QuantileSketch()
    for x in data:
        a.add(float(x))
    b.add_many(data)
    assert a == b


def test_merge_equals_sketch_of_concatenation() -> None:
    x, y = _data("lognormal", 3), _data("exponential", 4)
    a, b, whole = QuantileSketch(), QuantileSketch(), QuantileSketch()
    a.add_many(x)
    b.add_many(-y)
    whole.add_many(np.concatenate([x, -y]))
    a.merge(b)
    assert a == whole
    assert a.to_state() == whole.to_state()
    _assert_close(a, np.concatenate([x, -y]), 0.01)


def test_merge_rejects_other_accuracy() -> None:
    with pytest.raises(ValueError):
        QuantileSketch(0.01).merge(QuantileSketch(0.02))


def test_state_round_trip_json_and_pickle() -> None:
    s = QuantileSketch()
    s.add_many(_data("mixed_sign", 9))
    state = orjson.loads(orjson.dumps(s.to_state()))
    t = QuantileSketch.from_state(state)
    assert t == s
    assert [t.quantile(q) for q in QS] == [s.quantile(q) for q in QS]
    u = pickle.loads(pickle.dumps(s))
    assert u == s
    # The restored sketch keeps accumulating like the original.
    more = _data("lognormal", 10, 500)
    s.add_many(more)
    t.add_many(more)
    assert t == s


def test_empty_zero_and_non_finite() -> None:
    s = QuantileSketch()
    assert s.count == 0 and np.isnan(s.quantile(0.5))
    s.add_many(np.array([0.0, 0.0, np.nan, np.inf, -np.inf, 1e-320]))
    assert s.count == 3  # NaN/inf ignored; 1e-320 is below min_indexable: counted as zero
    assert s.quantile(0.5) == 0.0
    with pytest.raises(ValueError):
        s.quantile(1.5)


def test_bucket_count_bounded_collapses_lowest() -> None:
    s = QuantileSketch(0.01, max_buckets=64)
    data = np.geomspace(1e-6, 1e6, 5000)
    s.add_many(data)
    assert s._pos.counts.size <= 64
    assert s.count == data.size
    # High quantiles keep the guarantee; the collapsed low end is over-estimated.
    for q in (0.97, 0.99, 1.0):  # top 64 buckets span gamma**64 ~ 3.6x
        exact = float(np.quantile(data, q, method="lower"))
        assert abs(s.quantile(q) - exact) <= 0.01 * exact * (1 + 1e-9)
    assert s.quantile(0.0) > data[0]
    # A single tiny outlier must not allocate a huge temporary array or break the bound.
    d = QuantileSketch()
    d.add_many(np.array([1e300, 1e-300, 5.0]))
    assert d._pos.counts.size <= d.max_buckets and d.count == 3
