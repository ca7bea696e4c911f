"""Baselines as data on Kafka: ``baseline create`` on another machine, running workers apply it.

Real worker (no models-file entry for the model, no shared disk), real broker, real chdb: the
profile reaches the worker through the compacted baselines topic, turns data drift on with the
documented defaults, and lands in ClickHouse's reference_profiles.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from worker_harness import Worker

from driftline.streams.baselines import read_baselines
from driftline.streams.simulate import generate, run_simulation
from driftline.streams.topics import topic_names

pytestmark = pytest.mark.integration


def create_baseline_elsewhere(bootstrap: str, prefix: str, tmp: Path, rows: list[dict[str, Any]]) -> str:
    """``driftline baseline create`` as a user runs it on their laptop: its own data dir."""
    tmp.mkdir(parents=True, exist_ok=True)
    ref = tmp / "reference.jsonl"
    ref.write_bytes(b"\n".join(orjson.dumps(r) for r in rows))
    env = {**os.environ, "DRIFTLINE_BOOTSTRAP": bootstrap, "DRIFTLINE_TOPIC_PREFIX": prefix,
           "DRIFTLINE_DATA_DIR": str(tmp / "laptop")}
    proc = subprocess.run([sys.executable, "-m", "driftline.streams.cli", "baseline", "create", "--model", "fraud",
                           "--from", str(ref)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_a_published_baseline_reaches_a_running_worker_and_turns_data_drift_on(
        bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    worker = Worker(bootstrap, topic_prefix, tmp_path / "w").start()  # no models file at all
    try:
        ref_preds, _ = generate(20_000, seed=101, rate=200.0, start_ts=time.time() - 86400)
        out = create_baseline_elsewhere(bootstrap, topic_prefix, tmp_path,
                                        [p for p in ref_preds if p["model_id"] == "fraud" and p["model_version"] == "v1"])
        assert f"published to {topic_prefix}baselines as fraud@1" in out
        worker.wait_for(lambda: "reference profile applied from the baselines topic" in worker.log(), 60,
                        "the worker to apply the published baseline")

        start_ts = float(int(time.time()) // 10 * 10 - 200)
        drift_at = 30.0
        run_simulation(bootstrap, topic_prefix, 200.0, 60.0, seed=5, realtime=False, progress=False,
                       start_ts=start_ts, covariate_drift_at=drift_at)

        def drift_alerts() -> list[dict[str, Any]]:
            # The reference is v1's traffic: v2 (a challenger with its own scores) differs from it.
            return worker.query("SELECT model_id, rule, status, toUnixTimestamp(window_start) AS ws, message "
                                "FROM driftline.alerts WHERE kind = 'data_drift' AND model_version = 'v1'")

        worker.wait_for(lambda: [a for a in drift_alerts() if a["model_id"] == "fraud"], 60, "a data_drift alert")
        assert all(float(a["ws"]) >= start_ts + drift_at for a in drift_alerts())  # none on the clean half
        worker.wait_for(lambda: worker.query("SELECT count() AS n FROM driftline.reference_profiles "
                                             "WHERE model_id = 'fraud' AND version = 1")[0]["n"] > 0,
                        60, "reference_profiles to follow the topic")
    finally:
        worker.stop()

    # A second create continues the topic's versions, wherever it runs.
    out = create_baseline_elsewhere(bootstrap, topic_prefix, tmp_path / "other", [p for p in ref_preds[:2000]
                                                                                   if p["model_id"] == "fraud"])
    assert "as fraud@2" in out
    assert read_baselines(bootstrap, topic_names(topic_prefix)["baselines"])["fraud"].version == 2
