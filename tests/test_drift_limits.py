"""Reference chunk limits, Jensen-Shannon judging, PCA reconstruction error, per-feature incidents.

Every figure is checked against an independent computation: chunk statistics with numpy and
``scipy.spatial.distance.jensenshannon``, the PCA with scikit-learn's ``StandardScaler`` + ``PCA``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from driftline.detectors.datadrift import DriftConfig, compare_profiles
from driftline.detectors.multivariate import PCAModel, ReconstructionSums, compare_reconstruction
from driftline.detectors.profile import Profile
from driftline.detectors.thresholds import MIN_CHUNKS
from driftline.sinks.alertmanager import alert_labels
from driftline.streams.alerts import AlertEngine
from driftline.streams.models import ModelConfig

CATS = np.array(["a", "b", "c", "d"])


def _rows(rng: np.random.Generator, n: int, rho: float = 0.9, shift: float = 0.0) -> list[dict[str, Any]]:
    x = rng.multivariate_normal([0.0, 0.0], [[1.0, rho], [rho, 1.0]], n)
    cat = rng.choice(CATS, n, p=[0.4, 0.3, 0.2, 0.1])
    return [{"x": float(a) + shift, "y": float(b), "c": str(c)} for (a, b), c in zip(x, cat, strict=True)]


def test_chunk_limits_equal_numpy_and_scipy_over_leave_one_out_chunks() -> None:
    rng = np.random.default_rng(11)
    rows = _rows(rng, 12_000)
    ref = Profile.from_records(rows, chunk_size=1000)
    assert ref.limits is not None and ref.limits.chunks == 12 >= MIN_CHUNKS
    cats = np.array([r["c"] for r in rows])
    xs = np.array([r["x"] for r in rows])
    edges = ref.features["x"].edges
    assert edges is not None
    js_c, js_x, psi_c = [], [], []
    for i in range(12):
        sl = slice(i * 1000, (i + 1) * 1000)
        win = np.array([np.sum(cats[sl] == k) for k in CATS], dtype=float)
        rest = np.array([np.sum(cats == k) for k in CATS], dtype=float) - win
        js_c.append(jensenshannon(rest / rest.sum(), win / win.sum(), base=2))
        r, w = np.maximum(rest / rest.sum(), 1e-4), np.maximum(win / win.sum(), 1e-4)
        psi_c.append(float(np.sum((w - r) * np.log(w / r))))
        # the reference-quantile bins as numpy's histogram closes them (the edges are the
        # reference's min and max, so nothing of the reference under- or overflows)
        hist_w = np.histogram(xs[sl], bins=edges)[0].astype(float)
        rest_x = np.histogram(xs, bins=edges)[0] - hist_w
        js_x.append(jensenshannon(rest_x / rest_x.sum(), hist_w / hist_w.sum(), base=2))
    lim = ref.limits
    assert lim.features["c"]["js"].mean == pytest.approx(np.mean(js_c), abs=1e-12)
    assert lim.features["c"]["js"].std == pytest.approx(np.std(js_c), abs=1e-12)
    assert lim.features["c"]["psi"].mean == pytest.approx(np.mean(psi_c), abs=1e-12)
    assert lim.features["x"]["js"].mean == pytest.approx(np.mean(js_x), abs=1e-12)
    assert lim.features["x"]["js"].std == pytest.approx(np.std(js_x), abs=1e-12)
    # the state is plain JSON and round-trips
    back = Profile.from_state(json.loads(json.dumps(ref.to_state())))
    assert back == ref and back.limits is not None and back.pca is not None


def test_too_few_chunks_keep_the_fixed_psi_cuts() -> None:
    rng = np.random.default_rng(2)
    ref = Profile.from_records(_rows(rng, 3000), chunk_size=1000)
    assert ref.limits is None
    win = Profile.new_window_like(ref)
    win.update_many(_rows(rng, 500, shift=1.0))
    res = {r.feature: r for r in compare_profiles(ref, win)}
    assert res["x"].statistic == "psi" and res["x"].limits == "fixed" and res["x"].limit == 0.25
    assert res["x"].severity == "drift"


def test_js_against_reference_limits_is_the_default_and_names_its_limit() -> None:
    rng = np.random.default_rng(5)
    ref = Profile.from_records(_rows(rng, 20_000), chunk_size=1000)
    assert ref.limits is not None
    clean = Profile.new_window_like(ref)
    clean.update_many(_rows(rng, 1000))
    shifted = Profile.new_window_like(ref)
    shifted.update_many(_rows(rng, 1000, shift=0.3))
    for r in compare_profiles(ref, clean):
        assert r.statistic == "js" and r.limits == "reference" and r.severity is None
    res = {r.feature: r for r in compare_profiles(ref, shifted)}
    st = ref.limits.features["x"]["js"]
    scale = ref.limits.scale("js", 1000)
    assert res["x"].limit == pytest.approx((st.mean + 3 * st.std) * scale)
    assert res["x"].value == pytest.approx(res["x"].js) and res["x"].severity == "drift"
    assert res["c"].severity is None and res["y"].severity is None
    # an explicit PSI with fixed cuts still works
    fixed = {r.feature: r for r in compare_profiles(ref, shifted, DriftConfig.from_dict({"statistic": "psi",
                                                                                         "limits": "fixed"}))}
    assert fixed["x"].statistic == "psi" and fixed["x"].limit == 0.25


def test_pca_and_reconstruction_error_equal_sklearn() -> None:
    rng = np.random.default_rng(8)
    x = rng.multivariate_normal([1.0, -2.0, 0.0], [[4.0, 1.5, 0.3], [1.5, 1.0, 0.2], [0.3, 0.2, 2.0]], 5000)
    rows = [{"a": float(a), "b": float(b), "z": float(z)} for a, b, z in x]
    model = PCAModel.fit(rows, ["a", "b", "z"], 0.65)
    assert model is not None
    scaler = StandardScaler().fit(x)
    pca = PCA(n_components=0.65, svd_solver="full").fit(scaler.transform(x))
    assert model.n_components == pca.n_components_
    assert np.allclose(np.abs(model.components), np.abs(pca.components_), atol=1e-8)
    new = rng.multivariate_normal([1.0, -2.0, 0.0], [[4.0, -1.5, 0.3], [-1.5, 1.0, 0.2], [0.3, 0.2, 2.0]], 700)
    z = scaler.transform(new)
    expected = np.linalg.norm(z - pca.inverse_transform(pca.transform(z)), axis=1)
    new_rows = [{"a": float(a), "b": float(b), "z": float(c)} for a, b, c in new]
    got = model.errors(new_rows)
    assert np.allclose(got, expected, atol=1e-9)
    # per-feature shares of the squared residuals, window and reference, as sklearn's residuals give them
    sums = ReconstructionSums()
    sums.add_residuals(model.residuals(new_rows[:300]))
    other = ReconstructionSums()
    other.add_residuals(model.residuals(new_rows[300:]))
    sums.merge(ReconstructionSums.from_state(json.loads(json.dumps(other.to_state()))))
    res_new = (z - pca.inverse_transform(pca.transform(z))) ** 2
    zr = scaler.transform(x)
    res_ref = (zr - pca.inverse_transform(pca.transform(zr))) ** 2
    assert np.allclose(model.residual_share, res_ref.sum(0) / res_ref.sum(), atol=1e-9)
    assert sums.n == 700 and sums.mean == pytest.approx(expected.mean(), rel=1e-12)
    assert np.allclose(np.asarray(sums.feature_sq) / sum(sums.feature_sq), res_new.sum(0) / res_new.sum(), atol=1e-9)


def test_a_correlation_flip_fires_the_pca_signal_and_no_univariate_statistic() -> None:
    rng = np.random.default_rng(21)
    ref = Profile.from_records(_rows(rng, 20_000, rho=0.9), chunk_size=1000)
    assert ref.pca is not None and ref.pca.n_components == 1
    rows_ref = np.array([[r["x"], r["y"]] for r in _rows(np.random.default_rng(21), 20_000, rho=0.9)])
    scaler = StandardScaler().fit(rows_ref)
    pca = PCA(n_components=0.65, svd_solver="full").fit(scaler.transform(rows_ref))

    def window(rho: float, n: int = 1000) -> tuple[Profile, float]:
        rows = _rows(rng, n, rho=rho)
        halves = [Profile.new_window_like(ref), Profile.new_window_like(ref)]  # two partitions, merged
        halves[0].update_many(rows[: n // 3])
        halves[1].update_many(rows[n // 3:])
        merged = Profile.from_state(json.loads(json.dumps(halves[0].to_state())))
        merged.merge(Profile.from_state(json.loads(json.dumps(halves[1].to_state()))))
        z = scaler.transform(np.array([[r["x"], r["y"]] for r in rows]))
        direct = float(np.mean(np.linalg.norm(z - pca.inverse_transform(pca.transform(z)), axis=1)))
        return merged, direct

    clean, clean_direct = window(0.9)
    flipped, flipped_direct = window(-0.9)
    c = compare_reconstruction(ref, clean)
    f = compare_reconstruction(ref, flipped)
    assert c is not None and f is not None
    assert c["value"] == pytest.approx(clean_direct, rel=1e-9) and f["value"] == pytest.approx(flipped_direct, rel=1e-9)
    assert c["severity"] is None and f["severity"] == "drift" and f["value"] > 3 * f["limit"]
    assert all(r.severity is None for r in compare_profiles(ref, flipped))  # marginals stay N(0, 1)


def _result(feature: str, value: float, limit: float = 0.1, role: str = "feature") -> dict[str, Any]:
    return {"feature": feature, "kind": "numeric", "role": role, "statistic": "js", "value": value, "js": value,
            "psi": value, "limit": limit, "limits": "reference", "n_window": 500, "n_reference": 9000,
            "severity": "drift" if value > limit else None, "note": "",
            "top_shifted": [("(0.1, 0.5]", 0.1, 0.3)]}


def win(i: int) -> dict[str, Any]:
    """Whole-model window ``i`` of model m: 60 s, 500 predictions."""
    return {"model_id": "m", "model_version": "v1", "segment": "", "window_start": 60.0 * i,
            "window_end": 60.0 * (i + 1), "revision": 0, "metrics": {}, "counts": {"prediction_count": 500}}


def test_each_drifting_feature_is_its_own_incident() -> None:
    eng, cfg = AlertEngine("m"), ModelConfig()

    steps = [
        {"a": 0.3, "b": 0.05, "p": 0.05},  # a drifts
        {"a": 0.3, "b": 0.3, "p": 0.05},  # a stays, b drifts
        {"a": 0.05, "b": 0.3, "p": 0.3},  # a recovers, prediction drifts
        {"a": 0.05, "b": 0.05, "p": 0.05},  # all clean
    ]
    seen: list[tuple[int, str, str]] = []
    for i, s in enumerate(steps):
        drift = [_result("a", s["a"]), _result("b", s["b"]), _result("prediction", s["p"], role="prediction")]
        mv = {"value": 2.0 if i == 1 else 0.5, "limit": 1.0, "lower_limit": 0.2, "n_window": 500, "note": "",
              "severity": "drift" if i == 1 else None, "features": ["a", "b"], "components": 1,
              "statistic": "reconstruction_error", "reference_mean": 0.5, "explained_variance": 0.9}
        for a in eng.on_data(cfg, win(i), drift, {}, emitted_at=60.0 * (i + 1), multivariate=mv):
            seen.append((i, a["status"], a.get("feature") or a["rule"]))
            if a["status"] == "firing" and a["rule"] == "feature_drift":
                ev = a["evidence"]
                assert ev["statistic"] == "js" and ev["limit"] == 0.1 and ev["value"] == a["value"]
                assert ev["top_shifted"][0] == {"bin": "(0.1, 0.5]", "reference": 0.1, "window": 0.3}
                assert alert_labels(a)["feature"] == a["feature"]
    assert seen == [(0, "firing", "a"), (1, "firing", "b"), (1, "firing", "multivariate_drift"),
                    (2, "resolved", "a"), (2, "firing", "prediction"), (2, "resolved", "multivariate_drift"),
                    (3, "resolved", "b"), (3, "resolved", "prediction")]


def test_a_feature_warning_that_turns_to_drift_escalates_its_incident() -> None:
    eng, cfg = AlertEngine("m"), ModelConfig()

    warn = {**_result("a", 0.08), "severity": "warning"}  # past the warning cut, under the limit
    seen = [eng.on_data(cfg, win(i), [r], {}, emitted_at=60.0 * (i + 1))
            for i, r in enumerate([warn, _result("a", 0.3), _result("a", 0.3), warn, _result("a", 0.05)])]
    (fired,), (up,), again, stays, (resolved,) = seen
    assert (fired["status"], fired["severity"]) == ("firing", "warning")
    assert (up["status"], up["severity"], up["feature"], up["value"], up["threshold"]) == (
        "firing", "critical", "a", 0.3, 0.1)
    assert up["incident_id"] == fired["incident_id"] and up["alert_id"] != fired["alert_id"]
    assert up["evidence"]["statistic"] == "js" and up["message"].startswith("escalated to critical: data drift")
    assert again == [] and stays == []  # critical stays critical while the feature drifts
    assert (resolved["status"], resolved["severity"]) == ("resolved", "critical")


def test_old_profiles_load_and_report_the_prediction_as_prediction() -> None:
    rng = np.random.default_rng(4)
    rows = [{"x": float(v), "prediction": float(s)} for v, s in zip(rng.normal(0, 1, 3000), rng.uniform(0, 1, 3000),
                                                                   strict=True)]
    ref = Profile.from_records(rows)
    old = ref.to_state() | {"format": 2}
    assert old["prediction"]["name"] == "__prediction__"
    back = Profile.from_state(json.loads(json.dumps(old)))
    win = Profile.new_window_like(back)
    win.update_many([{"x": 0.0}] * 200, rng.uniform(0.5, 1, 200).tolist())
    res = compare_profiles(back, win)
    assert [(r.feature, r.role) for r in res] == [("x", "feature"), ("prediction", "prediction")]
    assert res[1].severity == "drift"


def test_baseline_create_takes_the_chunk_size_or_derives_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from driftline.streams.baseline_cmd import (
        create_baseline,
        default_chunk_size,
        limits_note,
        load_latest,
    )

    rng = np.random.default_rng(9)
    rows = _rows(rng, 4000)
    src = tmp_path / "ref.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows))
    create_baseline("m", src, tmp_path / "p", chunk_size=250)
    p = load_latest("m", tmp_path / "p")
    assert p.limits is not None and (p.limits.chunk_size, p.limits.chunks, p.limits.n_reference) == (250, 16, 4000)
    assert "16 reference chunks of 250 rows" in limits_note(p)
    create_baseline("m", src, tmp_path / "p")  # default: 4000 / 20 = 200 rows, 20 chunks
    p = load_latest("m", tmp_path / "p")
    assert p.limits is not None and p.limits.chunk_size == default_chunk_size(4000) == 200 and p.limits.chunks == 20
    assert p.pca is not None and sorted(p.pca.features) == ["x", "y"]  # c is categorical


def test_missing_and_mistyped_values_are_imputed_with_the_reference_mean() -> None:
    rng = np.random.default_rng(12)
    x = rng.multivariate_normal([2.0, 5.0], [[1.0, 0.7], [0.7, 2.0]], 3000)
    model = PCAModel.fit([{"a": float(a), "b": float(b)} for a, b in x], ["a", "b"], 0.65)
    assert model is not None
    scaler = StandardScaler().fit(x)
    pca = PCA(n_components=0.65, svd_solver="full").fit(scaler.transform(x))
    rows: list[dict[str, Any] | None] = [{"a": 3.0, "b": None}, {"a": "x", "b": 4.0}, {"a": True, "b": float("inf")},
                                         {"a": np.float32(1.5), "b": np.int64(6)}, None, {"c": 1.0}]
    # independent: a value that is not a finite number becomes the reference mean
    filled = np.array([[3.0, x[:, 1].mean()], [x[:, 0].mean(), 4.0], [1.5, 6.0]])
    z = scaler.transform(filled)
    expected = np.linalg.norm(z - pca.inverse_transform(pca.transform(z)), axis=1)
    got = model.errors(rows)  # rows without any usable value (True and inf, None, no feature) are not counted
    assert got.size == 3 and np.allclose(got, expected, atol=1e-6)


def test_models_file_selects_statistic_and_limits() -> None:
    from driftline.streams.models import ConfigError, parse_models_config

    cfg = parse_models_config({"models": {"m": {"data_drift": {
        "statistic": "psi", "limits": "reference", "sigmas": 4, "features": {"prediction": {"statistic": "js"}}}}}})
    dc = cfg.models["m"].drift_config()
    assert (dc.default.statistic, dc.default.limits, dc.default.sigmas) == ("psi", "reference", 4)
    assert dc.for_prediction().statistic == "js" and dc.for_feature("x").statistic == "psi"
    assert DriftConfig().default.statistic == "auto" and DriftConfig().default.limits == "reference"
    for bad in ({"statistic": "ks"}, {"limits": "adaptive"}, {"sigmas": 0}):
        with pytest.raises(ConfigError, match="models.m.data_drift"):
            parse_models_config({"models": {"m": {"data_drift": bad}}})


def test_a_quality_warning_that_turns_critical_escalates_its_incident() -> None:
    eng, cfg = AlertEngine("m"), ModelConfig()

    def missing(rate: float, level: str) -> dict[str, list[dict[str, Any]]]:
        return {"missing_rate": [{"feature": "a", "value": rate, "level": level, "threshold": 0.05}]}

    seen = [eng.on_data(cfg, win(i), [], q, emitted_at=60.0 * (i + 1))
            for i, q in enumerate([missing(0.1, "warning"), missing(0.3, "critical"), missing(0.3, "critical"),
                                   {"missing_rate": []}])]
    (fired,), (up,), again, (resolved,) = seen
    assert (fired["status"], fired["severity"]) == ("firing", "warning")
    assert (up["status"], up["severity"], up["value"]) == ("firing", "critical", 0.3)
    assert up["incident_id"] == fired["incident_id"] and up["alert_id"] != fired["alert_id"]
    assert again == []
    assert (resolved["status"], resolved["severity"]) == ("resolved", "critical")
