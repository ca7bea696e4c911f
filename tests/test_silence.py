"""Availability: a model that stops serving raises an alert; a backlog never looks like silence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from worker_harness import Worker

from driftline.streams.merge import HEARTBEAT_STALE_S, MergeOutput, WindowMerger
from driftline.streams.models import ModelConfig, ModelsConfig
from driftline.streams.sdk import DriftlineProducer

MODELS = ModelsConfig(models={"m": ModelConfig(task="binary", silence_after_s=60.0, cooldown_s=1.0)})


def beat(partition: int, seen_at: float, at: float) -> dict[str, Any]:
    return {"type": "heartbeat", "pid": f"{partition}:{at}", "partition": partition, "model_id": "m",
            "model_version": "v1", "seen_at": seen_at, "at": at}


def step(merger: WindowMerger, now: float, *beats: dict[str, Any]) -> list[dict[str, Any]]:
    out = MergeOutput()
    for b in beats:
        merger.on_partial(orjson.loads(orjson.dumps(b)), now, out)
    merger.tick(now, out)
    return out.alerts


def test_silence_fires_once_when_every_partition_is_quiet_and_resolves_when_traffic_returns() -> None:
    merger = WindowMerger(MODELS, window_seconds=60.0)
    assert step(merger, 1030.0, beat(0, 1000.0, 1030.0), beat(1, 1020.0, 1030.0)) == []
    # 79 s without a prediction at 1099, but partition 0's last report (1030) is stale: its
    # worker may be behind on a backlog, so no judgement yet.
    assert HEARTBEAT_STALE_S < 1099.0 - 1030.0
    assert step(merger, 1099.0, beat(1, 1020.0, 1099.0)) == []
    fired = step(merger, 1100.0, beat(0, 1000.0, 1100.0), beat(1, 1020.0, 1100.0))
    assert [(a["kind"], a["rule"], a["status"]) for a in fired] == [("availability", "silence", "firing")]
    assert fired[0]["value"] == pytest.approx(80.0) and fired[0]["threshold"] == 60.0
    assert step(merger, 1105.0, beat(0, 1000.0, 1105.0), beat(1, 1020.0, 1105.0)) == []  # once
    back = step(merger, 1110.0, beat(0, 1108.0, 1110.0), beat(1, 1020.0, 1110.0))
    assert [(a["rule"], a["status"]) for a in back] == [("silence", "resolved")]


def test_no_judgement_while_a_partition_reports_nothing() -> None:
    merger = WindowMerger(MODELS, window_seconds=60.0)
    step(merger, 1000.0, beat(0, 900.0, 1000.0), beat(1, 900.0, 1000.0))
    # Only partition 0 keeps reporting: partition 1 is behind (or its worker down).
    for now in (1040.0, 1080.0, 1200.0):
        assert step(merger, now, beat(0, 900.0, now)) == []


@pytest.mark.integration
def test_a_model_that_stops_serving_raises_availability_and_resolves(bootstrap: str, topic_prefix: str,
                                                                     tmp_path: Path) -> None:
    models = tmp_path / "models.yaml"
    models.write_text("models:\n  quiet: {task: binary, silence_after_s: 8, cooldown_s: 1}\n")
    w = Worker(bootstrap, topic_prefix, tmp_path, config=str(models), sink=True).start()

    def send(n: int, tag: str) -> None:
        with DriftlineProducer(bootstrap, topic_prefix=topic_prefix) as sdk:
            for i in range(n):
                sdk.log_prediction(f"{tag}-{i}", "quiet", {"label": 1, "score": 0.9}, model_version="v1")
            sdk.flush(10)

    def alerts() -> list[tuple[str, str]]:
        rows = w.query("SELECT rule, status FROM driftline.alerts FINAL WHERE kind = 'availability' "
                       "ORDER BY emitted_at")
        return [(r["rule"], r["status"]) for r in rows]

    try:
        send(50, "a")
        w.wait_for(lambda: alerts() == [("silence", "firing")], 90, "the silence alert")
        send(5, "b")
        w.wait_for(lambda: alerts() == [("silence", "firing"), ("silence", "resolved")], 60, "its resolve")
    finally:
        w.stop()
