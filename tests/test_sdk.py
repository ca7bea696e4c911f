"""DriftlineProducer: envelopes per partition, single events, bounded memory, non-blocking."""

from __future__ import annotations

import socket
import time
import uuid
from collections import Counter
from typing import Any

import orjson
import pytest

from driftline.schemas.partitioning import partition_for
from driftline.streams.sdk import DriftlineProducer, label_event, prediction_event


def envelope_size(msg: Any) -> int:
    """Number of events in a message (an envelope or a single event)."""
    obj = orjson.loads(msg.value())
    return len(obj["events"]) if isinstance(obj, dict) and "events" in obj else 1


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # closed again when the block exits


def test_event_builders() -> None:
    e = prediction_event(
        "p",
        "m",
        {"label": "a", "scores": {"a": 0.7}},
        model_version="v2",
        timestamp=5.0,
        features={"x": 1.0},
        latency_ms=2.0,
        segments={"country": "DE"},
    )
    assert e == {
        "prediction_id": "p",
        "model_id": "m",
        "model_version": "v2",
        "timestamp": 5.0,
        "prediction": {"label": "a", "scores": {"a": 0.7}},
        "features": {"x": 1.0},
        "latency_ms": 2.0,
        "segments": {"country": "DE"},
    }
    assert prediction_event("p", "m", 1, timestamp=1.0)["prediction"] == {"label": 1}
    assert prediction_event("p", "m", True, timestamp=1.0)["prediction"]["label"] is True
    assert label_event("p", None, value=2.0, timestamp=1.0) == {
        "prediction_id": "p",
        "timestamp": 1.0,
        "value": 2.0,
    }
    before = time.time()
    assert label_event("p", 1)["timestamp"] >= before


def test_serving_status_in_builders_and_checked_cheaply() -> None:
    from driftline.schemas import Prediction, validate_prediction

    assert "status" not in prediction_event("p", "m", 1, timestamp=1.0)
    for status, code in (("ok", None), ("error", None), ("error", "UPSTREAM_503"), (None, "OOM")):
        ev = prediction_event("p", "m", {"score": 0.2}, status=status, error_code=code)
        assert ev.get("status") == status and ev.get("error_code") == code
        p = validate_prediction(ev)
        assert isinstance(p, Prediction) and p.status == (status or "error") and p.error_code == code
    with pytest.raises(ValueError, match="status"):
        prediction_event("p", "m", 1, status="failed")
    with DriftlineProducer(_closed_port(), num_partitions=4) as prod:
        with pytest.raises(ValueError, match="status"):
            prod.log_prediction("p", "m", 1, status="ERROR")
        assert prod.log_prediction("p", "m", 1, status="error", error_code="TIMEOUT")
        assert prod.stats()["logged"] == 1


def test_cheap_type_checks() -> None:
    with DriftlineProducer(_closed_port(), num_partitions=4) as p:
        with pytest.raises(TypeError):
            p.log_prediction(123, "m", 1)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            p.log_label(None, 1)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            DriftlineProducer(_closed_port(), num_partitions=4, max_buffered_events=0)


def _decode(msgs: list) -> list[tuple[int, dict]]:
    out = []
    for m in msgs:
        for ev in orjson.loads(m.value())["events"]:
            out.append((m.partition(), ev))
    return out


@pytest.mark.integration
def test_envelopes_round_trip(
    bootstrap: str, topics: dict[str, str], topic_prefix: str, consume
) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3000)]
    with DriftlineProducer(
        bootstrap, topic_prefix=topic_prefix, max_events_per_envelope=100, linger_ms=20
    ) as p:
        for i, pid in enumerate(ids):
            assert p.log_prediction(
                pid,
                "fraud",
                {"label": i % 2, "score": 0.25},
                model_version="v1",
                timestamp=1.7e9 + i,
                features={"amount": float(i), "country": "DE"},
                segments={"country": "DE"},
                latency_ms=1.5,
            )
        for pid in ids[:1000]:
            assert p.log_label(pid, 1, timestamp=1.8e9)
        assert p.flush(20) == 0
        st = p.stats()
    assert st["logged"] == 4000 and st["delivered_events"] == 4000 and st["buffered"] == 0
    assert st["dropped_events"] == 0 and st["delivery_errors"] == 0
    pmsgs = consume(topics["predictions"], 3000, weigh=envelope_size)
    preds = _decode(pmsgs)
    labels = _decode(consume(topics["labels"], 1000, weigh=envelope_size))
    assert len(preds) == 3000 and len(labels) == 1000
    assert max(Counter(p for p, _ in preds).values()) <= 3000  # spread over partitions
    assert len({p for p, _ in preds}) == 4
    by_id = {ev["prediction_id"]: (part, ev) for part, ev in preds}
    for i, pid in enumerate(ids):
        part, ev = by_id[pid]
        assert part == partition_for(pid, 4)
        assert ev["timestamp"] == 1.7e9 + i and ev["prediction"] == {"label": i % 2, "score": 0.25}
        assert ev["features"] == {"amount": float(i), "country": "DE"}
    for part, ev in labels:
        # a label lands on its prediction's partition: the join's co-partitioning
        assert part == by_id[ev["prediction_id"]][0] == partition_for(ev["prediction_id"], 4)
    # envelopes respect the size cap in events
    assert all(envelope_size(m) <= 100 for m in pmsgs)


@pytest.mark.integration
def test_envelope_byte_cap(
    bootstrap: str, topics: dict[str, str], topic_prefix: str, consume
) -> None:
    with DriftlineProducer(bootstrap, topic_prefix=topic_prefix, max_envelope_bytes=2000) as p:
        for i in range(200):
            p.log_prediction(f"id-{i}", "m", 0.5, features={"pad": "x" * 100})
        assert p.flush(20) == 0
    msgs = consume(topics["predictions"], 200, weigh=envelope_size)
    assert sum(len(orjson.loads(m.value())["events"]) for m in msgs) == 200
    assert all(len(m.value()) <= 2000 for m in msgs)


@pytest.mark.integration
def test_single_event_mode(
    bootstrap: str, topics: dict[str, str], topic_prefix: str, consume
) -> None:
    ids = [str(uuid.uuid4()) for _ in range(300)]
    with DriftlineProducer(bootstrap, topic_prefix=topic_prefix, single_event=True) as p:
        for pid in ids:
            p.log_prediction(pid, "eta", 12.5, timestamp=1.7e9)
            p.log_label(pid, value=13.0, timestamp=1.7e9 + 60)
        assert p.close(20) == 0
    assert p.stats()["sent_envelopes"] == 600
    for topic in (topics["predictions"], topics["labels"]):
        msgs = consume(topic, 300)
        assert len(msgs) == 300
        for m in msgs:
            ev = orjson.loads(m.value())
            assert m.key().decode() == ev["prediction_id"]
            assert m.partition() == partition_for(ev["prediction_id"], 4)


@pytest.mark.integration
def test_drops_counted_when_bound_exceeded(bootstrap: str, topic_prefix: str) -> None:
    p = DriftlineProducer(bootstrap, topic_prefix=topic_prefix, max_buffered_events=10)
    try:
        p._paused.set()  # hold the background thread: nothing leaves the queue
        time.sleep(0.05)
        accepted = [p.log_prediction(f"id-{i}", "m", 1) for i in range(25)]
        assert accepted == [True] * 10 + [False] * 15
        assert not p.log_label("id-0", 1)
        st = p.stats()
        assert st["dropped_events"] == 16 and st["buffered"] == 10 and st["logged"] == 10
        p._paused.clear()
        assert p.flush(20) == 0
        assert p.stats()["delivered_events"] == 10
    finally:
        p.close(5)


def test_broker_down_never_blocks_and_bounds_memory() -> None:
    errors: list[tuple[object, int]] = []
    t0 = time.perf_counter()
    p = DriftlineProducer(
        _closed_port(),
        metadata_timeout=0.2,
        max_buffered_events=5000,
        on_delivery_error=lambda err, n: errors.append((err, n)),
        client_config={"message.timeout.ms": 1000},
    )
    construct = time.perf_counter() - t0
    lat = []
    pc = time.perf_counter_ns
    for i in range(10_000):
        s = pc()
        p.log_prediction(f"id-{i}", "fraud", {"label": 1, "score": 0.9}, features={"a": 1.0})
        lat.append(pc() - s)
    total = sum(lat) / 1e9
    lat.sort()
    print(
        f"\nbroker down: construct {construct * 1e3:.0f} ms, 10k calls {total * 1e3:.1f} ms, "
        f"median {lat[5000] / 1e3:.2f} us, p99 {lat[9900] / 1e3:.2f} us"
    )
    assert construct < 2.0 and total < 1.0
    st = p.stats()
    assert st["logged"] == 5000 and st["dropped_events"] == 5000
    assert p.close(0.5) == 5000  # nothing could be delivered
    assert not p.log_prediction("late", "m", 1)  # closed: dropped, not raised


def test_delivery_errors_reported(topic_prefix: str = "x.") -> None:
    """Partitions known, broker down: envelopes time out and are reported as failures."""
    errors: list[tuple[object, int]] = []
    p = DriftlineProducer(
        _closed_port(),
        num_partitions=2,
        linger_ms=1,
        on_delivery_error=lambda err, n: errors.append((err, n)),
        client_config={"message.timeout.ms": 300},
    )
    for i in range(50):
        p.log_label(f"id-{i}", 0)
    p.flush(5)
    st = p.stats()
    p.close(1)
    assert st["failed_events"] == 50 and st["delivery_errors"] >= 1
    assert sum(n for _, n in errors) == 50 and st["buffered"] == 0


def test_builders_pass_the_wire_contract_validator() -> None:
    from driftline.schemas import Rejection, validate_label, validate_prediction

    for pred in ({"label": 1, "score": 0.9}, {"label": "a", "scores": {"a": 0.7}}, 2.5, "cat", 1):
        ev = prediction_event(
            "p", "m", pred, features={"x": 1.0}, segments={"c": "DE"}, latency_ms=3.0
        )
        assert not isinstance(validate_prediction(ev), Rejection), ev
    assert not isinstance(validate_label(label_event("p", 1)), Rejection)
    assert not isinstance(validate_label(label_event("p", value=2.0, model_id="m")), Rejection)
