"""Data drift statistics against scipy and a direct PSI, and flags on seeded shifts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2, chisquare, ks_2samp

from driftline.detectors.datadrift import (
    DriftConfig,
    DriftThresholds,
    chi2_sf,
    compare_features,
    compare_profiles,
    ks_from_sketches,
    ks_statistic,
    psi,
)
from driftline.detectors.profile import FeatureProfile, Profile


def _numeric(
    seed: int, n_ref: int = 5000, n_win: int = 1000, shift: float = 0.0, scale: float = 1.0
):
    rng = np.random.default_rng(seed)
    r = rng.normal(0, 1, n_ref)
    w = rng.normal(shift, scale, n_win)
    ref = FeatureProfile.from_values("x", r.tolist())
    win = ref.empty_like()
    win.update(w.tolist())
    return r, w, ref, win


def _direct_psi(r: np.ndarray, w: np.ndarray, edges: np.ndarray, eps: float = 1e-4) -> float:
    # Bins: (-inf, e0), [e0, e1), ..., [e_{m-1}, e_m], (e_m, inf)
    def shares(x: np.ndarray) -> np.ndarray:
        c = [np.sum(x < edges[0])]
        for i in range(len(edges) - 1):
            hi = x <= edges[i + 1] if i == len(edges) - 2 else x < edges[i + 1]
            c.append(np.sum((x >= edges[i]) & hi))
        c.append(np.sum(x > edges[-1]))
        return np.maximum(np.array(c) / x.size, eps)

    p, q = shares(r), shares(w)
    return float(np.sum((q - p) * np.log(q / p)))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("shift", "scale"), [(0.0, 1.0), (0.3, 1.0), (0.0, 2.0), (-1.0, 0.5)])
def test_numeric_statistics_match_scipy_and_direct_psi(
    seed: int, shift: float, scale: float
) -> None:
    r, w, ref, win = _numeric(seed, shift=shift, scale=scale)
    res = compare_features(ref, win)
    assert res.psi == pytest.approx(_direct_psi(r, w, ref.edges), rel=1e-12)
    exact = ks_2samp(r, w).statistic
    assert ks_statistic(r, w) == pytest.approx(exact, abs=1e-12)
    assert res.ks is not None and res.ks_error_bound is not None
    assert res.ks - 1e-12 <= exact <= res.ks + res.ks_error_bound + 1e-12
    assert res.ks_error_bound < 0.01
    rs, ws = ref.hist / ref.hist.sum(), win.hist / win.hist.sum()
    assert res.js == pytest.approx(jensenshannon(rs, ws, base=2), abs=1e-12)
    assert res.chi2 is None


def test_ks_with_mixed_signs_zeros_and_ties() -> None:
    rng = np.random.default_rng(9)
    r = np.concatenate([rng.normal(0, 50, 3000), np.zeros(200), np.full(100, 7.0)])
    w = np.concatenate([rng.normal(5, 40, 800), np.zeros(10)])
    a, b = FeatureProfile.from_values("x", r.tolist()), FeatureProfile.from_values("x", w.tolist())
    ks, bound = ks_from_sketches(a, b)
    exact = ks_2samp(r, w).statistic
    assert ks - 1e-12 <= exact <= ks + bound + 1e-12


def _categorical(
    seed: int, p_ref, p_win, n_ref: int = 4000, n_win: int = 800, cats=("a", "b", "c", "d")
):
    rng = np.random.default_rng(seed)
    r = rng.choice(cats[: len(p_ref)], n_ref, p=p_ref)
    w = rng.choice(cats[: len(p_win)], n_win, p=p_win)
    ref = FeatureProfile.from_values("c", r.tolist())
    win = ref.empty_like()
    win.update(w.tolist())
    return ref, win


@pytest.mark.parametrize("seed", range(5))
def test_categorical_statistics_match_scipy(seed: int) -> None:
    ref, win = _categorical(seed, [0.4, 0.3, 0.2, 0.1], [0.3, 0.3, 0.25, 0.15])
    res = compare_features(ref, win)
    keys = list(ref.counts)
    rc = np.array([ref.counts[k] for k in keys], float)
    wc = np.array([win.counts[k] for k in keys], float)
    expected = rc / rc.sum() * wc.sum()
    sp = chisquare(wc, expected)
    assert res.chi2 == pytest.approx(sp.statistic, rel=1e-10)
    assert res.chi2_pvalue == pytest.approx(sp.pvalue, rel=1e-8, abs=1e-300)
    assert res.js == pytest.approx(jensenshannon(rc / rc.sum(), wc / wc.sum(), base=2), abs=1e-12)
    p, q = rc / rc.sum(), wc / wc.sum()
    assert res.psi == pytest.approx(float(np.sum((q - p) * np.log(q / p))), rel=1e-12)
    assert res.ks is None


def test_unseen_category_uses_epsilon() -> None:
    ref, win = _categorical(0, [0.5, 0.5], [0.4, 0.4, 0.2])
    res = compare_features(ref, win, DriftThresholds(epsilon=1e-3))
    assert res.severity == "drift" and res.top_shifted[0][0] == "c"
    assert res.top_shifted[0][1] == 0.0 and res.top_shifted[0][2] == pytest.approx(0.2, abs=0.05)
    rs = np.array([ref.counts["a"], ref.counts["b"], 0]) / sum(ref.counts.values())
    ws = np.array([win.counts["a"], win.counts["b"], win.counts["c"]]) / 800
    assert res.psi == pytest.approx(psi(rs, ws, 1e-3))
    exp = np.where(rs > 0, rs, 1e-3)
    assert res.chi2 == pytest.approx(
        chisquare(ws * 800, exp / exp.sum() * 800).statistic, rel=1e-10
    )


@pytest.mark.parametrize("x", [0.0, 0.5, 1.0, 3.84, 10.0, 50.0, 200.0, 1000.0])
@pytest.mark.parametrize("dof", [1, 2, 3, 10, 49])
def test_chi2_sf_matches_scipy(x: float, dof: int) -> None:
    assert chi2_sf(x, dof) == pytest.approx(chi2.sf(x, dof), rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("seed", range(10))
def test_shifted_feature_flagged_unshifted_not(seed: int) -> None:
    rng = np.random.default_rng(seed)

    def rows(n: int, shift: float, p_c) -> list[dict]:
        return [
            {"stable": float(a), "moved": float(b), "cat": str(c)}
            for a, b, c in zip(
                rng.normal(0, 1, n),
                rng.normal(shift, 1, n),
                rng.choice(["x", "y", "z"], n, p=p_c),
                strict=True,
            )
        ]

    ref = Profile.from_records(rows(5000, 0.0, [0.5, 0.3, 0.2]))
    win = Profile.new_window_like(ref)
    win.update_many(rows(1000, 0.8, [0.5, 0.3, 0.2]))
    sev = {r.feature: r.severity for r in compare_profiles(ref, win)}
    assert sev == {"stable": None, "moved": "drift", "cat": None}
    win2 = Profile.new_window_like(ref)
    win2.update_many(rows(1000, 0.0, [0.2, 0.3, 0.5]))
    sev2 = {r.feature: r.severity for r in compare_profiles(ref, win2)}
    assert sev2 == {"stable": None, "moved": None, "cat": "drift"}


def test_prediction_distribution_and_min_samples() -> None:
    rng = np.random.default_rng(1)
    ref = Profile.from_records([{"f": 1.0, "prediction": float(s)} for s in rng.beta(2, 5, 3000)])
    win = Profile.new_window_like(ref)
    win.update_many([{"f": 1.0}] * 50, rng.beta(5, 2, 50))
    res = {r.feature: r for r in compare_profiles(ref, win)}
    assert res["prediction"].severity is None and "fewer than 100" in res["prediction"].note
    assert (res["prediction"].psi or 0.0) > 0.25
    win.update_many([{"f": 1.0}] * 500, rng.beta(5, 2, 500))
    assert compare_profiles(ref, win)[-1].severity == "drift"


def test_config_per_feature_thresholds() -> None:
    r, w, ref, win = _numeric(0, shift=0.3)
    p = compare_features(ref, win).psi
    assert p is not None and 0.05 < p < 0.25
    cfg = DriftConfig.from_dict({"features": {"x": {"psi_warning": 0.01, "psi_drift": 0.05}}})
    assert compare_profiles(_prof(ref), _prof(win), cfg)[0].severity == "drift"
    with pytest.raises(ValueError, match="psi_warning"):
        DriftThresholds(psi_warning=0.5, psi_drift=0.1)


def _prof(fp: FeatureProfile) -> Profile:
    return Profile("m", {fp.name: fp})


def test_mismatched_bins_raise() -> None:
    a = FeatureProfile.from_values("x", [1.0, 2.0, 3.0])
    b = FeatureProfile.from_values("x", [4.0, 5.0, 6.0])
    with pytest.raises(ValueError, match="new_window_like"):
        compare_features(a, b)


def test_degenerate_inputs_give_none_not_nan() -> None:
    ref = FeatureProfile.from_values("c", ["a"] * 200)
    win = ref.empty_like()
    win.update(["a"] * 200)
    res = compare_features(ref, win)
    assert res.psi == 0.0 and res.chi2_pvalue is None and res.severity is None
    empty = compare_features(ref, ref.empty_like())
    assert empty.psi is None and empty.note == "no values"
    num = FeatureProfile.from_values("c", [1.0, 2.0])
    assert compare_features(num, win).psi is None
