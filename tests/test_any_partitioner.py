"""Any producer, any partitioner: records on the wrong partition are re-routed, not orphaned.

Real worker, real broker, real chdb. The same stream is sent correctly partitioned (the SDK,
murmur2) and then the ways other fleets send it: labels with librdkafka's default partitioner
(consistent_random, CRC32), labels without a key, predictions with the default partitioner;
every label must join and the windows must equal the correctly partitioned run's.
"""

from __future__ import annotations

import signal
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from worker_harness import Worker

from driftline.schemas import encode_event
from driftline.schemas.partitioning import partition_for
from driftline.streams.sdk import DriftlineProducer
from driftline.streams.simulate import FleetSimulator
from driftline.streams.topics import create_topics

pytestmark = pytest.mark.integration

PARTITIONS = 4
Event = tuple[str, dict[str, Any]]


def the_stream() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    start_ts = float(int(time.time()) // 60 * 60 - 1800)
    sim = FleetSimulator(3, 100.0, 20.0, None, start_ts=start_ts, label_delay=1.0)
    events = list(sim.events())
    return [e for k, e in events if k == "prediction"], [e for k, e in events if k == "label"]


def send_sdk(bootstrap: str, prefix: str, kind: str, events: list[dict[str, Any]]) -> None:
    with DriftlineProducer(bootstrap, topic_prefix=prefix) as sdk:
        for ev in events:
            assert sdk.log_event(kind, ev)
        sdk.flush(30)


def send_plain(bootstrap: str, topic: str, events: list[dict[str, Any]], *, keyed: bool,
               partitioner: str = "consistent_random") -> int:
    """One message per event from a plain confluent-kafka producer (librdkafka's default
    partitioner unless told); returns how many landed off their murmur2 partition."""
    off = 0

    def landed(err: Any, msg: Any) -> None:
        nonlocal off
        assert err is None, err
        pid = (msg.key() or b"").decode() or _pid(msg.value())
        off += msg.partition() != partition_for(pid, PARTITIONS)

    p = Producer({"bootstrap.servers": bootstrap, "partitioner": partitioner, "linger.ms": 5})
    for ev in events:
        key = ev["prediction_id"].encode() if keyed else None
        p.produce(topic, value=encode_event(ev), key=key, on_delivery=landed)
        p.poll(0)
    assert p.flush(30) == 0
    return off


def _pid(value: bytes) -> str:
    import orjson

    return str(orjson.loads(value)["prediction_id"])


def windows_of(w: Worker, n_labels: int) -> dict[tuple[Any, ...], float]:
    w.wait_for(lambda: w.health()["counters"].get("joins", 0) >= n_labels, 120, "every label joined")
    w.wait_idle(120)
    rows = w.query("SELECT model_id, model_version, segment, toFloat64(window_start) AS ws, metric, value "
                   "FROM driftline.metrics_latest WHERE metric IN ('prediction_count', 'labeled_count', "
                   "'accuracy', 'mae')")
    return {(r["model_id"], r["model_version"], r["segment"], r["ws"], r["metric"]): round(r["value"], 9)
            for r in rows}


def run(bootstrap: str, tmp: Path, how: str, preds: list[dict], labels: list[dict]) -> dict[str, Any]:
    prefix = f"ap{uuid.uuid4().hex[:6]}."
    names = create_topics(bootstrap, prefix, PARTITIONS)
    tmp.mkdir()
    w = Worker(bootstrap, prefix, tmp, partitions=PARTITIONS).start()
    try:
        misrouted = 0
        if how == "predictions_default_partitioner":
            misrouted += send_plain(bootstrap, names["predictions"], preds, keyed=True)
        else:
            send_sdk(bootstrap, prefix, "prediction", preds)
        if how == "reference":
            send_sdk(bootstrap, prefix, "label", labels)
        elif how == "labels_without_key":
            misrouted += send_plain(bootstrap, names["labels"], labels, keyed=False, partitioner="random")
        elif how == "predictions_default_partitioner":
            misrouted += send_plain(bootstrap, names["labels"], labels, keyed=True, partitioner="murmur2_random")
        else:
            misrouted += send_plain(bootstrap, names["labels"], labels, keyed=True)
        windows = windows_of(w, len(labels))
        counters = w.health()["counters"]
        with urllib.request.urlopen(w.url + "/metrics", timeout=5) as r:
            metrics = r.read().decode()
        return {"windows": windows, "counters": counters, "misrouted": misrouted, "metrics": metrics}
    finally:
        w.stop()


@pytest.fixture(scope="module")
def stream() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return the_stream()


@pytest.fixture(scope="module")
def reference(bootstrap: str, tmp_path_factory: pytest.TempPathFactory, stream: Any) -> dict[str, Any]:
    preds, labels = stream
    return run(bootstrap, tmp_path_factory.mktemp("ref") / "w", "reference", preds, labels)


@pytest.mark.parametrize("how,counter", [
    ("labels_default_partitioner", "rerouted_labels_wrong_partition"),
    ("labels_without_key", "rerouted_labels_no_key"),
    ("predictions_default_partitioner", "rerouted_predictions_wrong_partition"),
])
def test_misrouted_records_join_as_if_sent_right(bootstrap: str, tmp_path: Path, stream: Any,
                                                  reference: dict[str, Any], how: str, counter: str) -> None:
    preds, labels = stream
    got = run(bootstrap, tmp_path / "w", how, preds, labels)
    assert got["misrouted"] > len(labels) // 2  # most records did land elsewhere
    assert got["counters"].get(counter, 0) == got["misrouted"]
    assert f'driftline_pipeline_events_total{{name="{counter}"}} {float(got["misrouted"])}' in got["metrics"]
    assert got["counters"]["joins"] == len(labels) == reference["counters"]["joins"]
    assert got["counters"].get("orphan_labels", 0) == 0
    assert got["windows"] == reference["windows"]


def test_sigkill_while_rerouting_loses_and_doubles_nothing(bootstrap: str, tmp_path: Path, stream: Any,
                                                          reference: dict[str, Any]) -> None:
    preds, labels = stream
    prefix = f"ak{uuid.uuid4().hex[:6]}."
    names = create_topics(bootstrap, prefix, PARTITIONS)
    w = Worker(bootstrap, prefix, tmp_path, partitions=PARTITIONS).start()
    try:
        send_sdk(bootstrap, prefix, "prediction", preds)
        half = len(labels) // 2
        send_plain(bootstrap, names["labels"], labels[:half], keyed=True)
        w.wait_for(lambda: w.health()["counters"].get("rerouted_labels_wrong_partition", 0) > 0, 60,
                   "re-routing under way")
        w.kill(signal.SIGKILL)
        send_plain(bootstrap, names["labels"], labels[half:], keyed=True)
        w.start()
        # Every label joined exactly once: the windows (labelled counts, accuracy) are the
        # correctly partitioned run's, neither short (lost) nor over (doubled).
        w.wait_for(lambda: windows_of(w, 0) == reference["windows"], 120, "the reference windows")
    finally:
        w.stop()
