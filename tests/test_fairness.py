"""GroupRates and FairnessRule against a direct numpy computation and sklearn per group."""

from __future__ import annotations

import pickle

import numpy as np
import orjson
import pytest
from sklearn.metrics import confusion_matrix, precision_score

from driftline.detectors.fairness import DISPARITY_METRICS, FairnessRule, GroupRates, check_rules

TOL = 1e-12


def _data(seed: int, n: int = 4000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2])
    y = (rng.random(n) < np.where(group == "c", 0.2, 0.4)).astype(int)
    flip = rng.random(n) < np.select([group == "a", group == "b"], [0.1, 0.2], 0.3)
    pred = np.where(flip, 1 - y, y)
    return group, y, pred


def _direct(group: np.ndarray, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """fairlearn's between-group definitions, written independently with masks."""
    sel, tpr, fpr = [], [], []
    for g in np.unique(group):
        m = group == g
        yt, yp = y[m], pred[m]
        sel.append(yp.mean())
        tpr.append(yp[yt == 1].mean() if (yt == 1).any() else 0.0)
        fpr.append(yp[yt == 0].mean() if (yt == 0).any() else 0.0)
    sel_, tpr_, fpr_ = np.array(sel), np.array(tpr), np.array(fpr)
    return {
        "demographic_parity_difference": sel_.max() - sel_.min(),
        "demographic_parity_ratio": sel_.min() / sel_.max(),
        "equal_opportunity_difference": tpr_.max() - tpr_.min(),
        "equal_opportunity_ratio": tpr_.min() / tpr_.max(),
        "equalized_odds_difference": max(tpr_.max() - tpr_.min(), fpr_.max() - fpr_.min()),
        "equalized_odds_ratio": min(tpr_.min() / tpr_.max(), fpr_.min() / fpr_.max()),
    }


def _round_trip(acc: GroupRates) -> GroupRates:
    acc = GroupRates.from_state(orjson.loads(orjson.dumps(acc.to_state())))
    return pickle.loads(pickle.dumps(acc))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_disparities_match_direct_computation(seed: int) -> None:
    group, y, pred = _data(seed)
    rates = GroupRates()
    rates.update_many(group, y, pred)
    got, want = rates.disparities(), _direct(group, y, pred)
    assert set(got) == set(DISPARITY_METRICS) == set(want)
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=TOL), k


def test_group_rates_match_sklearn_confusion_matrix_per_group() -> None:
    group, y, pred = _data(3)
    rates = GroupRates()
    rates.update_many(group, y, pred)
    per = rates.group_metrics()
    assert sorted(per) == ["a", "b", "c"]
    for g, m in per.items():
        mask = group == g
        # fairlearn's true/false_positive_rate: confusion_matrix(normalize="true").
        (tnr, fpr), (fnr, tpr) = confusion_matrix(
            y[mask], pred[mask], labels=[0, 1], normalize="true"
        )
        tn, fp, fn, tp = confusion_matrix(y[mask], pred[mask], labels=[0, 1]).ravel()
        assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (tn, fp, fn, tp)
        assert m["tpr"] == pytest.approx(tpr, abs=TOL)
        assert m["fpr"] == pytest.approx(fpr, abs=TOL)
        assert m["positive_rate"] == pytest.approx(pred[mask].mean(), abs=TOL)
        assert m["precision"] == pytest.approx(
            precision_score(y[mask], pred[mask], zero_division=0), abs=TOL
        )
        assert m["n"] == mask.sum()


def test_group_without_positives_has_tpr_zero_like_sklearn_normalize() -> None:
    rates = GroupRates()
    rates.update_many(["a", "a", "b", "b"], [1, 0, 0, 0], [1, 0, 1, 0])
    (_, _), (_, tpr_b) = confusion_matrix([0, 0], [1, 0], labels=[0, 1], normalize="true")
    assert rates.group_metrics()["b"]["tpr"] == tpr_b == 0.0
    assert rates.disparities()["equal_opportunity_difference"] == 1.0
    # ...and a rule refuses to judge it: group b has no actual positive.
    assert rates.min_denominator("equal_opportunity_difference") == 0
    assert (
        FairnessRule("equal_opportunity_difference", 0.1, min_group_events=1).check(rates) is None
    )


def test_split_merge_round_trip_equals_single_pass() -> None:
    group, y, pred = _data(4)
    whole = GroupRates()
    whole.update_many(group, y, pred)
    parts = []
    for lo, hi in ((0, 1000), (1000, 1001), (1001, 4000)):
        acc = GroupRates()
        acc.update_many(group[lo:hi], y[lo:hi], pred[lo:hi])
        parts.append(_round_trip(acc))
    total = GroupRates()
    for p in reversed(parts):  # another group order than the single pass
        total.merge(p)
    assert total.n == whole.n == 4000
    assert total.group_metrics() == whole.group_metrics()
    assert total.disparities() == pytest.approx(whole.disparities(), abs=TOL)


def test_groups_compared_as_strings_and_none_counted_apart() -> None:
    rates = GroupRates()
    rates.update_many([1, "1", None, 2], [1, 0, 1, 1], [1, 1, 1, 0])
    assert rates.groups == ["1", "2"]
    assert rates.n == 3 and rates.n_missing_group == 1
    assert rates.group_metrics()["1"]["n"] == 2.0


def test_empty_and_single_group() -> None:
    rates = GroupRates()
    assert rates.disparities() == {} and rates.metrics() == {}
    rates.update_many([], [], [])
    rates.update_many(["a"] * 10, [1, 0] * 5, [1] * 10)
    d = rates.disparities()
    assert d["demographic_parity_difference"] == 0.0 and d["demographic_parity_ratio"] == 1.0
    assert FairnessRule("demographic_parity_ratio", 0.99, min_group_events=1).check(rates) is None


def test_ratio_omitted_when_undefined() -> None:
    rates = GroupRates()
    rates.update_many(["a", "b"], [0, 1], [0, 0])  # nobody selected: 0 / 0
    d = rates.disparities()
    assert "demographic_parity_ratio" not in d and d["demographic_parity_difference"] == 0.0
    assert "equalized_odds_ratio" not in d


def test_rule_fires_only_with_enough_events_per_group() -> None:
    group, y, pred = _data(5)
    rates = GroupRates()
    rates.update_many(group, y, pred)
    want = _direct(group, y, pred)["equalized_odds_difference"]
    rule = FairnessRule("equalized_odds_difference", 0.05, min_group_events=50)
    v = rule.check(rates)
    assert v is not None and v.value == pytest.approx(want, abs=TOL)
    assert v.threshold == 0.05 and set(v.group_counts) == {"a", "b", "c"}
    assert v.worst_group != v.best_group and "equalized_odds_difference" in v.message
    # Group c has ~800 events but only ~160 actual positives: not enough for 500.
    assert (
        FairnessRule("equalized_odds_difference", 0.05, min_group_events=500).check(rates) is None
    )
    assert FairnessRule("demographic_parity_difference", 0.0, min_group_events=500).check(rates)
    assert FairnessRule("equalized_odds_difference", 0.5, min_group_events=50).check(rates) is None


def test_ratio_rule_names_the_disadvantaged_group() -> None:
    rates = GroupRates()
    rates.update_many(
        ["x"] * 200 + ["y"] * 200, [0] * 400, [1] * 100 + [0] * 100 + [1] * 40 + [0] * 160
    )
    v = FairnessRule("demographic_parity_ratio", 0.8, min_group_events=100).check(rates)
    assert v is not None and v.value == pytest.approx(0.4)
    assert (v.worst_group, v.best_group) == ("y", "x")
    rules = [v_ for v_ in (FairnessRule("demographic_parity_ratio", 0.3, 100),)]
    assert check_rules(rules, rates) == []
    assert len(check_rules([FairnessRule("demographic_parity_ratio", 0.8, 100)] * 2, rates)) == 2


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="metric"):
        FairnessRule("accuracy", 0.1)
    with pytest.raises(ValueError, match="min_group_events"):
        FairnessRule("demographic_parity_ratio", 0.8, min_group_events=0)
    with pytest.raises(ValueError, match="same length"):
        GroupRates().update_many(["a"], [1, 0], [1, 0])


def test_metrics_prefix() -> None:
    rates = GroupRates()
    rates.update_many(["a", "b"], [1, 1], [1, 0])
    assert rates.metrics("fairness.gender.")["fairness.gender.equal_opportunity_difference"] == 1.0
