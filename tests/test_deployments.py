"""Two deployments on one broker, told apart by their topic prefix (real worker, real broker).

Before, ``DRIFTLINE_APP_ID`` stayed ``driftline`` whatever the prefix: the second deployment
recovered the first one's windows and resumed its own topics at the first one's offsets.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from worker_harness import Worker

from driftline.streams.settings import Settings
from driftline.streams.simulate import run_simulation
from driftline.streams.topics import create_topics

pytestmark = pytest.mark.integration


def _deployment(bootstrap: str, prefix: str, tmp: Path, **env: str) -> Worker:
    tmp.mkdir(parents=True, exist_ok=True)
    # An empty DRIFTLINE_APP_ID: the worker derives it from the prefix, as a user's would.
    return Worker(bootstrap, prefix, tmp, sink=False, extra_env={"DRIFTLINE_APP_ID": "", **env})


def _feed(bootstrap: str, prefix: str, seed: int) -> dict[str, Any]:
    start_ts = float(int(time.time()) - 300)
    return run_simulation(bootstrap, prefix, 100.0, 8.0, seed=seed, realtime=False, progress=False,
                          start_ts=start_ts, label_delay=0.5)


def test_each_topic_prefix_is_its_own_deployment(bootstrap: str, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    first, second = f"a{tag}.", f"b{tag}."
    for prefix in (first, second):
        create_topics(bootstrap, prefix, partitions=4)

    counts = []
    for i, prefix in enumerate((first, second)):
        worker = _deployment(bootstrap, prefix, tmp_path / f"d{i}").start()
        try:
            stats = _feed(bootstrap, prefix, seed=i)
            worker.wait_for(lambda w=worker, s=stats: w.health()["counters"].get("joins", 0) >= s["labels"], 90,
                            "every label joined")
            time.sleep(2)
            counters = worker.health()["counters"]
        finally:
            worker.stop()
        counts.append((stats, counters))

    for stats, counters in counts:
        # Each deployment read its own topics from their start: every label joined once, no
        # prediction counted late against the other deployment's event-time progress.
        assert counters["joins"] == stats["labels"]
        assert counters.get("late_predictions", 0) == 0

    # Sharing an app id by hand: the second prefix's worker meets the first one's state and
    # refuses it, with a message that says what to change.
    shared = Settings(topic_prefix=first).application_id
    intruder = _deployment(bootstrap, second, tmp_path / "shared", DRIFTLINE_APP_ID=shared)
    with pytest.raises(RuntimeError, match="worker exited 78"):
        intruder.start(timeout=60)
    assert "refusing another deployment's state" in intruder.log()
    assert "DRIFTLINE_APP_ID" in intruder.log()
