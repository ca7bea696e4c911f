"""A real worker (Tansu + chdb): a per-feature data-drift incident fires and resolves, and the PCA
reconstruction error of a correlation flip reaches ClickHouse and alerts.

The reference comes from ``driftline baseline create``'s code (``create_baseline`` with chunk
limits); the expected reconstruction errors are computed independently with scikit-learn.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from driftline.streams.baseline_cmd import create_baseline

W = 10.0  # worker_harness.FAST_WINDOWS
PER_WINDOW = 400
MODELS = """\
models:
  mv:
    task: binary
    data_drift: {baseline: latest, min_samples: 200}
"""


CATS = ["a", "b", "c", "d"]


def _rows(rng: np.random.Generator, n: int, rho: float, shift: float) -> list[dict[str, Any]]:
    """x, y ~ N(0, 1) with correlation ``rho``; category c, its top share moved by ``shift``.

    The shifted feature is categorical (the PCA reads the numeric ones): a marginal shift of x
    would also move the reconstruction error, since it breaks x ~ y as well."""
    xy = rng.multivariate_normal([0.0, 0.0], [[1.0, rho], [rho, 1.0]], n)
    p = np.array([0.4 - shift, 0.3, 0.2, 0.1 + shift])
    cs = rng.choice(CATS, n, p=p)
    return [{"x": float(a), "y": float(b), "c": str(c)} for (a, b), c in zip(xy, cs, strict=True)]


@pytest.mark.integration
def test_worker_per_feature_incident_and_multivariate_signal(bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    from worker_harness import Worker

    from driftline import DriftlineProducer

    rng = np.random.default_rng(3)
    ref_rows = _rows(rng, 12_000, 0.9, 0.0)
    src = tmp_path / "ref.jsonl"
    src.write_text("\n".join(json.dumps(r | {"prediction": 0.5}) for r in ref_rows))
    create_baseline("mv", src, tmp_path / "state" / "profiles", chunk_size=PER_WINDOW)
    config = tmp_path / "models.yaml"
    config.write_text(MODELS)
    # windows 0-1 clean, 2-3 c's top category share moved, 4-5 clean, 6-7 correlation flipped (marginals unchanged), 8 clean
    plan = [(0.9, 0.0)] * 2 + [(0.9, 0.25)] * 2 + [(0.9, 0.0)] * 2 + [(-0.9, 0.0)] * 2 + [(0.9, 0.0)]
    start = float(int(time.time() // W) * W - W * (len(plan) + 4))
    sent: dict[float, list[dict[str, Any]]] = {}
    worker = Worker(bootstrap, topic_prefix, tmp_path, config=str(config)).start()
    try:
        with DriftlineProducer(bootstrap, topic_prefix=topic_prefix) as dl:
            for i, (rho, shift) in enumerate(plan):
                ws = start + i * W
                sent[ws] = rows = _rows(rng, PER_WINDOW, rho, shift)
                for j, r in enumerate(rows):
                    dl.log_prediction(f"p{i}-{j}", "mv", {"label": 1, "score": 0.5}, model_version="v1",
                                      timestamp=ws + j * (W / PER_WINDOW), features=r)
            # a later window moves event time past the last planned one, so every window closes
            for j in range(50):
                dl.log_prediction(f"tail-{j}", "mv", {"label": 1, "score": 0.5}, model_version="v1",
                                  timestamp=start + (len(plan) + 2) * W + j * 0.1, features=_rows(rng, 1, 0.9, 0)[0])
            dl.flush()

        def alerts() -> list[dict[str, Any]]:
            return worker.query("SELECT rule, feature, status, toUnixTimestamp(window_start) AS ws, evidence "
                                "FROM driftline.alerts FINAL WHERE kind = 'data_drift' ORDER BY detected_at, status")

        def done() -> bool:
            got = {(a["rule"], a["feature"], a["status"]) for a in alerts()}
            return {("feature_drift", "c", "resolved"), ("multivariate_drift", "", "resolved")} <= got

        worker.wait_for(done, 90, "c's incident and the multivariate incident, fired and resolved")
        worker.wait_idle(30)
        got = alerts()
        x = [a for a in got if a["feature"] == "c"]
        assert [(a["status"], float(a["ws"])) for a in x] == [("firing", start + 2 * W), ("resolved", start + 4 * W)]
        ev = json.loads(x[0]["evidence"])
        assert ev["statistic"] == "js" and ev["limits"] == "reference" and ev["value"] > ev["limit"]
        assert ev["top_shifted"]
        mv = [a for a in got if a["rule"] == "multivariate_drift"]
        mv_ev = json.loads(mv[0]["evidence"]) if mv else {}
        assert mv_ev.get("features") == ["x", "y"] and {f["feature"] for f in mv_ev["top_features"]} == {"x", "y"}
        assert [(a["status"], float(a["ws"])) for a in mv] == [("firing", start + 6 * W), ("resolved", start + 8 * W)]
        assert not [a for a in got if a["feature"] in ("x", "y")]  # their marginals never moved
        # One row per incident, each naming its feature (migration 009).
        # A resolved incident reads resolved, though its firing and resolve may share emitted_at.
        incidents = worker.query("SELECT rule, feature, status FROM driftline.incidents "
                                 "WHERE model_id = 'mv' AND rule IN ('feature_drift', 'multivariate_drift')")
        assert sorted((i["rule"], i["feature"], i["status"]) for i in incidents) == [
            ("feature_drift", "c", "resolved"), ("multivariate_drift", "", "resolved")]
        rows = worker.query("SELECT toUnixTimestamp(window_start) AS ws, "
                            "maxIf(value, metric = 'multivariate_reconstruction_error') AS err "
                            "FROM driftline.metrics_latest WHERE model_id = 'mv' AND segment = '' GROUP BY ws")
        by_ws = {float(r["ws"]): float(r["err"]) for r in rows}
        ref = np.array([[r["x"], r["y"]] for r in ref_rows])
        scaler = StandardScaler().fit(ref)
        pca = PCA(n_components=0.65, svd_solver="full").fit(scaler.transform(ref))
        for ws, win in sent.items():
            z = scaler.transform(np.array([[r["x"], r["y"]] for r in win]))  # c is not numeric: not in the PCA
            direct = float(np.mean(np.linalg.norm(z - pca.inverse_transform(pca.transform(z)), axis=1)))
            assert by_ws[ws] == pytest.approx(direct, rel=1e-6), ws
    finally:
        worker.stop()
