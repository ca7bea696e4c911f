"""One result, four deliveries: the same stream read live, as a backlog, with pauses, or
through a SIGKILL and an outage gives the same windows, drift events and detector alerts.

Real worker, real broker (Tansu), real chdb. The stream has historical timestamps, delayed
labels and a concept drift on ``fraud``; final windows are also checked against sklearn.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import accuracy_score
from worker_harness import FAST_WINDOWS, Worker

from driftline.streams.sdk import DriftlineProducer
from driftline.streams.simulate import FleetSimulator
from driftline.streams.topics import create_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

IDLE_S = float(FAST_WINDOWS["DRIFTLINE_IDLE_CLOSE_SECONDS"])
WINDOW_S = float(FAST_WINDOWS["DRIFTLINE_WINDOW_SECONDS"])
#: How long the worker stays dead in the crash delivery while the fleet keeps sending.
OUTAGE_S = 60.0
Event = tuple[str, dict[str, Any]]


def the_stream() -> list[Event]:
    """~6,000 predictions over 60 s of event time an hour ago, labels ~2 s later, drift at 30 s."""
    start_ts = float(int(time.time()) // 60 * 60 - 3600)
    sim = FleetSimulator(7, 100.0, 60.0, 30.0, start_ts=start_ts, label_delay=2.0)
    return list(sim.events())


def send(bootstrap: str, prefix: str, events: list[Event], *, pace: float | None = None) -> None:
    """Through the SDK; ``pace`` events per second (None: as fast as it goes)."""
    t0 = time.monotonic()
    with DriftlineProducer(bootstrap, topic_prefix=prefix, linger_ms=20) as sdk:
        for i, (kind, ev) in enumerate(events):
            assert sdk.log_event(kind, ev)
            if pace is not None and i % 100 == 99:
                time.sleep(max(0.0, t0 + (i + 1) / pace - time.monotonic()))
        sdk.flush(30)


def thirds(events: list[Event]) -> list[list[Event]]:
    k = len(events) // 3
    return [events[:k], events[k:2 * k], events[2 * k:]]


def live(w: Worker, bootstrap: str, prefix: str, events: list[Event]) -> None:
    w.start()
    send(bootstrap, prefix, events, pace=1500.0)


def backlog(w: Worker, bootstrap: str, prefix: str, events: list[Event]) -> None:
    send(bootstrap, prefix, events)
    w.start()


def with_pauses(w: Worker, bootstrap: str, prefix: str, events: list[Event]) -> None:
    w.start()
    for part in thirds(events):
        send(bootstrap, prefix, part)
        time.sleep(2 * IDLE_S + 1.0)  # twice the idle period: windows close by idleness meanwhile


def through_a_crash(w: Worker, bootstrap: str, prefix: str, events: list[Event]) -> None:
    first, second, third = thirds(events)
    w.start()
    send(bootstrap, prefix, first, pace=1500.0)
    w.kill(signal.SIGKILL)
    t0 = time.monotonic()
    send(bootstrap, prefix, second, pace=300.0)  # the fleet keeps sending during the outage
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - t0)))
    w.start()
    send(bootstrap, prefix, third, pace=1500.0)


DELIVERIES: dict[str, Callable[[Worker, str, str, list[Event]], None]] = {
    "live": live, "backlog": backlog, "pauses": with_pauses, "crash": through_a_crash,
}


def outcome(w: Worker, n_labels: int) -> dict[str, Any]:
    w.wait_for(lambda: w.query("SELECT count() AS n FROM driftline.outcomes FINAL")[0]["n"] >= n_labels, 120,
               "every outcome in ClickHouse")
    w.wait_idle(120)
    rows = w.query("SELECT model_id, model_version, segment, toFloat64(window_start) AS ws, metric, value "
                   "FROM driftline.metrics_latest WHERE metric IN ('prediction_count', 'labeled_count', "
                   "'accuracy', 'mae', 'f1')")
    windows = {(r["model_id"], r["model_version"], r["segment"], round(r["ws"], 3), r["metric"]): round(r["value"], 9)
               for r in rows}
    drift = sorted((r["model_id"], r["model_version"], r["detector"], r["position"]) for r in w.query(
        "SELECT model_id, model_version, detector, position FROM driftline.drift_events FINAL"))
    alerts = sorted((r["alert_id"], r["status"]) for r in w.query(
        "SELECT alert_id, status FROM driftline.alerts FINAL WHERE rule IN ('adwin', 'ddm')"))
    return {"windows": windows, "drift": drift, "alerts": alerts}


def test_four_deliveries_give_one_result(bootstrap: str, tmp_path: Path) -> None:
    events = the_stream()
    n_labels = sum(1 for kind, _ in events if kind == "label")
    results: dict[str, dict[str, Any]] = {}
    for name, deliver in DELIVERIES.items():
        prefix = f"et{uuid.uuid4().hex[:6]}."
        create_topics(bootstrap, prefix, partitions=4)
        w = Worker(bootstrap, prefix, tmp_path / name, name=name)
        (tmp_path / name).mkdir()
        try:
            deliver(w, bootstrap, prefix, events)
            results[name] = outcome(w, n_labels)
        finally:
            w.stop()

    reference = results["live"]
    assert reference["drift"], "the drift in the stream raised no drift event"
    for name, got in results.items():
        assert got["windows"] == reference["windows"], name
        assert got["drift"] == reference["drift"], name
        assert got["alerts"] == reference["alerts"], name

    # And the windows are sklearn's on the same events.
    truth = {ev["prediction_id"]: ev["label"] for kind, ev in events if kind == "label" and "label" in ev}
    by_window: dict[float, list[dict[str, Any]]] = defaultdict(list)
    for kind, ev in events:
        if kind == "prediction" and ev["model_id"] == "fraud" and ev["model_version"] == "v1":
            by_window[float(ev["timestamp"] // WINDOW_S * WINDOW_S)].append(ev)
    for ws, preds in by_window.items():
        labelled = [p for p in preds if p["prediction_id"] in truth]
        key = ("fraud", "v1", "", round(ws, 3))
        assert reference["windows"][key + ("prediction_count",)] == len(preds)
        assert reference["windows"][key + ("labeled_count",)] == len(labelled)
        y = np.array([int(truth[p["prediction_id"]]) for p in labelled])
        yp = np.array([int(p["prediction"]["label"]) for p in labelled])
        assert reference["windows"][key + ("accuracy",)] == pytest.approx(accuracy_score(y, yp), abs=1e-9)
