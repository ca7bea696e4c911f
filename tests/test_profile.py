"""Profiles: binning, kinds, missing/mismatch counts, merge, state, file loading, baselines."""

from __future__ import annotations

import json
import pickle
import time

import numpy as np
import pytest

from driftline.detectors.profile import OTHER, FeatureProfile, Profile, infer_kind, load_records
from driftline.streams.baseline_cmd import ReferenceBuilder, create_baseline, load_latest


def _rows(seed: int, n: int, shift: float = 0.0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "amount": float(a),
            "age": int(g),
            "country": str(c),
            "is_new": bool(b),
            "prediction": float(s),
            "label": int(rng.uniform() < s),
        }
        for a, g, c, b, s in zip(
            rng.lognormal(3 + shift, 1, n),
            rng.integers(18, 90, n),
            rng.choice(["DE", "FR", "IT", "ES"], n, p=[0.4, 0.3, 0.2, 0.1]),
            rng.uniform(size=n) < 0.2,
            rng.uniform(size=n),
            strict=True,
        )
    ]


def test_reference_bins_are_quantiles_and_hold_every_value() -> None:
    ref = Profile.from_records(_rows(0, 5000), model_id="fraud")
    amount = ref.features["amount"]
    assert amount.kind == "numeric" and amount.edges is not None and amount.edges.size == 11
    assert amount.hist[0] == 0 and amount.hist[-1] == 0
    assert np.all(np.abs(amount.hist[1:-1] - 500) <= 1)
    assert amount.count == 5000 and amount.min == amount.edges[0] and amount.max == amount.edges[-1]
    assert ref.features["country"].kind == "categorical"
    assert ref.features["is_new"].kind == "categorical"
    assert set(ref.features["is_new"].counts) == {"true", "false"}
    assert ref.prediction is not None and ref.prediction.kind == "numeric"
    assert {"accuracy", "roc_auc", "log_loss"} <= set(ref.metrics)
    assert "prediction" not in ref.features and "label" not in ref.features


def test_feature_names_restrict_and_missing_features_count_as_missing() -> None:
    ref = Profile.from_records(_rows(0, 100), ["amount", "ghost"])
    assert list(ref.features) == ["amount", "ghost"]
    assert ref.features["ghost"].missing == 100 and ref.features["ghost"].count == 0


def test_type_mismatch_and_missing() -> None:
    fp = FeatureProfile.from_values(
        "x", [1.0, 2, None, float("nan"), float("inf"), "3", True, np.float32(4)]
    )
    assert fp.kind == "numeric"
    assert (fp.count, fp.missing, fp.mismatch, fp.n) == (3, 3, 2, 8)
    cat = FeatureProfile.from_values("c", ["a", "b", 7, None, 1.5, [1]], kind="categorical")
    assert cat.counts == {"a": 1, "b": 1, "7": 1}
    assert (cat.count, cat.missing, cat.mismatch) == (3, 1, 2)
    assert infer_kind([None, None]) == "categorical"


def test_category_cap_and_window_room() -> None:
    fp = FeatureProfile.from_values("c", [f"v{i}" for i in range(10)] * 3, max_categories=4)
    assert len(fp.counts) == 5 and fp.counts[OTHER] == 18
    win = fp.empty_like()
    assert list(win.counts) == ["v0", "v1", "v2", "v3"] and win.max_categories == 24
    win.update(["v0"] + [f"new{i}" for i in range(30)])
    assert win.counts["v0"] == 1 and win.counts[OTHER] == 10 and win.count == 31


def test_window_merge_equals_one_pass_and_state_round_trips() -> None:
    ref = Profile.from_records(_rows(0, 2000))
    rows = _rows(1, 900)
    feats = [{k: v for k, v in r.items() if k not in ("prediction", "label")} for r in rows]
    preds = np.array([r["prediction"] for r in rows])
    whole = Profile.new_window_like(ref)
    whole.update_many(feats, preds)
    parts = [Profile.new_window_like(ref) for _ in range(3)]
    for i, p in enumerate(parts):
        p.update_many(feats[i::3], preds[i::3])
    merged = parts[0]
    merged.merge(parts[1])
    merged.merge(parts[2])
    for name in ref.features:
        a, b = whole.features[name], merged.features[name]
        assert (a.count, a.missing, a.mismatch) == (b.count, b.missing, b.mismatch)
        if a.kind == "numeric":
            assert a.hist.tolist() == b.hist.tolist() and a.sketch == b.sketch
        else:
            assert a.counts == b.counts
    state = json.loads(json.dumps(merged.to_state()))
    assert Profile.from_state(state) == merged
    assert pickle.loads(pickle.dumps(merged)) == merged


def test_merge_rejects_different_edges() -> None:
    a = FeatureProfile.from_values("x", [1.0, 2.0, 3.0])
    b = FeatureProfile.from_values("x", [5.0, 6.0, 7.0])
    with pytest.raises(ValueError, match="different bin edges"):
        a.merge(b)


def test_schema_drift_counts_unknown_features() -> None:
    ref = Profile.from_records([{"a": 1.0}] * 10)
    win = Profile.new_window_like(ref)
    win.update_many([{"a": 1.0, "b": 2}, {"b": 3, "c": "x"}, None])
    assert win.unknown_features == {"b": 2, "c": 1}
    assert win.features["a"].missing == 2 and win.n_events == 3


def test_event_shaped_rows() -> None:
    rows = [
        {"prediction_id": str(i), "features": {"x": float(i)}, "prediction": {"score": 0.5}}
        for i in range(20)
    ]
    p = Profile.from_records(rows)
    assert list(p.features) == ["x"] and p.prediction is not None and p.prediction.count == 20


def test_load_records_csv_jsonl_parquet(tmp_path) -> None:
    (tmp_path / "a.csv").write_text("x,c,n\n1.5,DE,3\n,FR,-2\nnan,1_0,1e3\n")
    rows = load_records(tmp_path / "a.csv")
    assert rows[0] == {"x": 1.5, "c": "DE", "n": 3}
    assert rows[1]["x"] is None and rows[1]["n"] == -2
    assert np.isnan(rows[2]["x"]) and rows[2]["c"] == "1_0" and rows[2]["n"] == 1000.0
    (tmp_path / "a.jsonl").write_text('{"x": 1}\n\n{"x": null}\n')
    assert load_records(tmp_path / "a.jsonl") == [{"x": 1}, {"x": None}]
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1.0, 2.0], "c": ["a", "b"]}), tmp_path / "a.parquet")
    assert load_records(tmp_path / "a.parquet") == [{"x": 1.0, "c": "a"}, {"x": 2.0, "c": "b"}]
    with pytest.raises(ValueError, match="unsupported"):
        load_records(tmp_path / "a.txt")


def test_parquet_without_pyarrow_names_the_install(tmp_path, monkeypatch) -> None:
    import builtins

    real = builtins.__import__

    def fake(name, *a, **k):
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(ImportError, match="pip install pyarrow"):
        load_records(tmp_path / "a.parquet")


def test_baseline_versions_and_latest(tmp_path) -> None:
    src = tmp_path / "ref.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in _rows(0, 300)))
    out = tmp_path / "profiles"
    p1 = create_baseline("fraud", src, out)
    p2 = create_baseline("fraud", src, out)
    assert (p1.name, p2.name) == ("profile-v1.json", "profile-v2.json")
    latest = json.loads((out / "fraud" / "latest.json").read_text())
    assert latest["version"] == 2 and latest["file"] == "profile-v2.json"
    prof = load_latest("fraud", out)
    assert prof.version == 2 and prof.model_id == "fraud" and prof.n_events == 300
    assert json.loads(p1.read_text())["version"] == 1
    with pytest.raises(FileNotFoundError, match="no baseline"):
        load_latest("other", out)
    with pytest.raises(ValueError, match="folder name"):
        create_baseline("../evil", src, out)
    assert not list((out / "fraud").glob(".*tmp"))


def _miscalibrated_rows(seed: int, n: int) -> list[dict]:
    """A binary model whose served score is the true P(y = 1) squared."""
    rng = np.random.default_rng(seed)
    p = 1 / (1 + np.exp(-2 * rng.normal(size=n)))
    return [{"x": float(v), "prediction": float(v**2), "label": int(u < v)}
            for v, u in zip(p, rng.uniform(size=n), strict=True)]


def test_baseline_of_a_miscalibrated_binary_model_stores_a_calibrator(tmp_path) -> None:
    src = tmp_path / "ref.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in _miscalibrated_rows(1, 5000)))
    path = create_baseline("churn", src, tmp_path / "profiles")
    state = json.loads(path.read_text())
    assert state["format"] == 3 and state["calibrator"]["method"] == "isotonic"
    prof = load_latest("churn", tmp_path / "profiles")
    assert prof.calibrator is not None and prof.calibrator.method == "isotonic" and prof.calibrator.n == 5000
    s = np.array([r["prediction"] for r in _miscalibrated_rows(1, 5000)])
    np.testing.assert_array_equal(prof.calibrator.x, state["calibrator"]["x"])
    assert prof.calibrator.calibrate(s).mean() == pytest.approx(np.sqrt(s).mean(), abs=0.01)
    # Every labelled binary reference records the decision; unlabelled, regression and
    # multiclass references carry none, nor do window profiles.
    assert Profile.from_records(_rows(0, 3000)).calibrator is not None
    assert Profile.from_records(_rows(0, 3000), calibrate=False).calibrator is None
    unlabelled = [{k: v for k, v in r.items() if k != "label"} for r in _rows(0, 100)]
    assert Profile.from_records(unlabelled).calibrator is None
    assert Profile.from_records([{"x": 1.0, "prediction": 3.5, "label": 2.0}] * 5).calibrator is None
    win = Profile.new_window_like(prof)
    assert win.calibrator is None and "calibrator" not in win.to_state()


def test_format_1_profiles_still_load_and_newer_ones_are_refused() -> None:
    ref = Profile.from_records(_miscalibrated_rows(2, 2000))
    state = ref.to_state()
    old = {k: v for k, v in state.items() if k != "calibrator"} | {"format": 1}
    back = Profile.from_state(old)
    assert back.calibrator is None and back.features.keys() == ref.features.keys()
    assert Profile.from_state(json.loads(json.dumps(state))) == ref
    with pytest.raises(ValueError, match="newer"):
        Profile.from_state(state | {"format": 4})


def test_reference_builder_freezes_after_hours_and_round_trips() -> None:
    rng = np.random.default_rng(4)
    rb = ReferenceBuilder(hours=2.0)
    data = []
    for i, start in enumerate(range(0, 3 * 3600, 900)):
        w = Profile("m", infer=True)
        vals = rng.normal(10, 2, 300)
        data.append(vals)
        feats = [{"x": float(v), "c": "a" if v > 10 else "b"} for v in vals]
        if i >= 2:
            feats[0]["late"] = 1.0
        w.update_many(feats, rng.uniform(size=300))
        done = rb.add(float(start), start + 900.0, w, source_id=f"0:{i}")
        if not rb.frozen:
            with pytest.raises(RuntimeError, match="not ready"):
                _ = rb.reference
            rb = ReferenceBuilder.from_state(json.loads(json.dumps(rb.to_state())))
            # the merge stage replaying a partial after a crash: counted once (n_events below)
            assert not rb.add(float(start), start + 900.0, w, source_id=f"0:{i}")
        if done:
            assert i == 7
    ref = rb.reference
    assert ref.n_events == 8 * 300
    x = ref.features["x"]
    assert x.hist.sum() == 2400 and x.edges is not None
    # Edges lie on sketch bucket bounds: the histogram is exact; bins hold ~10% each.
    exact = np.bincount(
        FeatureProfile("x", "numeric", x.edges)._bin_index(np.concatenate(data[:8])), minlength=12
    )
    assert x.hist.tolist() == exact.tolist()
    assert np.all(np.abs(x.hist[1:-1] / 2400 - 0.1) < 0.05)
    assert ref.features["late"].missing == 2400 - 6
    win = Profile.new_window_like(ref)
    win.update_many([{"x": 1.0}])
    assert win.features["x"].hist[0] == 1


def test_update_many_cost() -> None:
    ref = Profile.from_records(
        [{f"f{j}": float(j) if j < 7 else f"c{j % 3}" for j in range(10)}] * 100
    )
    rng = np.random.default_rng(0)
    events = [
        {f"f{j}": float(rng.normal()) if j < 7 else f"c{rng.integers(5)}" for j in range(10)}
        for _ in range(500)
    ]
    win = Profile.new_window_like(ref)
    t0 = time.perf_counter()
    for _ in range(20):
        win.update_many(events)
    per_event = (time.perf_counter() - t0) / (20 * 500)
    assert per_event < 200e-6  # generous: ~10 us measured


def test_warmup_profile_waits_for_a_present_value_to_infer_the_kind() -> None:
    p = Profile("m", infer=True)
    p.update_many([{"x": None}, {"x": None}])
    assert "x" not in p.features and p.unknown_features == {"x": 2}
    p.update_many([{"x": 1.5}, {"x": 2.5}])
    assert p.features["x"].kind == "numeric"
    assert (p.features["x"].count, p.features["x"].missing) == (2, 2)
