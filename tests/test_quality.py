"""Data quality checks: missing, type mismatch, range, unseen categories, schema drift."""

from __future__ import annotations

import numpy as np
import pytest

from driftline.detectors.profile import Profile
from driftline.detectors.quality import QualityThresholds, check_quality


def _ref(seed: int = 0, n: int = 2000) -> Profile:
    rng = np.random.default_rng(seed)
    rows = [
        {"x": float(v), "c": str(c), "maybe": None if i % 10 == 0 else 1.0}
        for i, (v, c) in enumerate(
            zip(rng.normal(0, 1, n), rng.choice(["a", "b", "c"], n), strict=True)
        )
    ]
    return Profile.from_records(rows)


def _window(ref: Profile, rows: list[dict]) -> dict:
    win = Profile.new_window_like(ref)
    win.update_many(rows)
    return {r.feature: r for r in check_quality(ref, win)}


def _clean(seed: int, n: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {"x": float(v), "c": str(c), "maybe": None if i % 10 == 0 else 1.0}
        for i, (v, c) in enumerate(
            zip(rng.normal(0, 1, n), rng.choice(["a", "b", "c"], n), strict=True)
        )
    ]


@pytest.mark.parametrize("seed", range(5))
def test_clean_window_has_no_issue(seed: int) -> None:
    res = _window(_ref(), _clean(seed + 1, 500))
    assert set(res) == {"x", "c", "maybe"}
    assert all(r.severity is None and not r.issues for r in res.values()), res
    assert res["maybe"].reference_missing_rate == pytest.approx(0.1)
    assert res["maybe"].missing_rate == pytest.approx(0.1)


def test_missing_rate_increase_levels() -> None:
    ref = _ref()
    rows = _clean(1, 500)
    for r in rows[:50]:  # +10%: warning
        r["x"] = None
    assert _window(ref, rows)["x"].severity == "warning"
    for r in rows[:150]:  # +30%: critical
        r.pop("x", None)
    res = _window(ref, rows)["x"]
    assert res.severity == "critical" and res.missing_rate == pytest.approx(0.3)
    assert "missing_rate 0.30" in res.issues[0]


def test_type_mismatch_and_out_of_range() -> None:
    rows = _clean(1, 500)
    for r in rows[:10]:
        r["x"] = "n/a"
    for r in rows[10:40]:
        r["x"] = 1e6
    res = _window(_ref(), rows)["x"]
    assert res.type_mismatch_rate == pytest.approx(0.02)
    assert res.out_of_range_rate == pytest.approx(0.06, abs=0.005)
    assert res.severity == "critical" and len(res.issues) == 2


def test_unseen_categories() -> None:
    rows = _clean(1, 500)
    for r in rows[:20]:
        r["c"] = "zz"
    res = _window(_ref(), rows)["c"]
    assert res.unseen_categories == ["zz"] and res.unseen_category_rate == pytest.approx(0.04)
    assert res.severity == "warning"


def test_capped_reference_lists_but_does_not_judge_unseen() -> None:
    rows = [{"c": f"v{i % 80}"} for i in range(2000)]
    ref = Profile.from_records(rows, max_categories=10)
    win = Profile.new_window_like(ref)
    win.update_many([{"c": f"v{i % 80}"} for i in range(500)])
    res = check_quality(ref, win)[0]
    assert res.unseen_category_rate > 0.5 and res.severity is None


def test_schema_drift_vanished_and_appeared() -> None:
    rows = [{"c": "a", "new_feature": 3} for _ in range(200)]
    res = _window(_ref(), rows)
    assert res["x"].schema == "vanished" and res["x"].severity == "critical"
    assert res["new_feature"].schema == "appeared" and res["new_feature"].severity == "warning"
    assert res["c"].severity is None


def test_small_windows_are_not_judged() -> None:
    res = _window(_ref(), [{"c": "a"}] * 20)
    assert res["x"].schema == "vanished" and res["x"].severity is None


def test_thresholds_validated_and_configurable() -> None:
    with pytest.raises(ValueError, match="type_mismatch"):
        QualityThresholds(type_mismatch=(0.5, 0.1))
    ref = _ref()
    rows = _clean(1, 500)
    rows[0]["x"] = "bad"
    win = Profile.new_window_like(ref)
    win.update_many(rows)
    assert check_quality(ref, win)[0].severity is None
    strict = QualityThresholds(type_mismatch=(0.0, 0.5))
    assert check_quality(ref, win, strict)[0].severity == "warning"
    assert check_quality(ref, Profile.new_window_like(ref)) == []
