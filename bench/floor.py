"""The floor: what any join stage built from this product's packages pays per event.

Issue 15's envelope target is 250,000 events per worker CPU-second end to end, i.e. 4 CPU-µs
per event for everything: consume, decode, validate, join, windows, detectors, state, outputs
and the ClickHouse sink. This measures the parts no design can leave out, cumulatively, on the
bench's events (partition 0 of 8, envelopes of 500), in this process:

1. ``orjson.loads`` of each envelope (the only JSON decoder among the product's packages);
2. the fields a join and a window need, pulled into columns (no validation);
3. the join itself: predictions into a dict by id, labels popping them;
4. each waiting prediction encoded as bytes (the join table's value);
5. one changelog record per waiting prediction and one per delete, handed to librdkafka
   (``Producer.produce``; records kept by the table survive a crash only through these).

Nothing up to there validates, windows, detects or sends an output: every design that keeps a
durable record per waiting prediction pays at least this, and what it adds on top is the
difference to the target. A sixth figure adds our validators (``schemas.events``), run on
every event as the join stage runs them, to show what checking the input costs on top.

The target counts the sink too, and the embedded default's ClickHouse (chdb) runs inside the
worker's process. So two last figures follow every joined outcome to its row: encoding the
outcome envelopes as the join stage sends them (the outcome contract is JSON), and ClickHouse
storing them through the sink's raw path (``ClickHouseSink``: ClickHouse parses the
envelopes) in the sink runner's batches, timed as this process's CPU (ClickHouse's pool
threads included). Both per input event; the outcome dicts themselves are not counted.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

from bench.outcomes import outcome_chunks
from driftline.schemas.codec import encode_envelope
from driftline.schemas.events import _label, _prediction
from driftline.schemas.partitioning import partition_for
from driftline.sinks.clickhouse import ClickHouseSink
from driftline.sinks.runner import BATCH_BYTES

PARTITIONS = 8
ENVELOPE_EVENTS = 500


def _envelopes(events: list[dict[str, Any]]) -> list[bytes]:
    mine = [orjson.dumps(ev) for ev in events if partition_for(ev["prediction_id"], PARTITIONS) == 0]
    return [b'{"events":[' + b",".join(mine[i : i + ENVELOPE_EVENTS]) + b"]}"
            for i in range(0, len(mine), ENVELOPE_EVENTS)]


def _cpu(fn: Callable[[], int], repeat: int = 3) -> tuple[float, int]:
    """Best CPU seconds of ``repeat`` runs of ``fn`` in this thread (what the join stage pays;
    librdkafka's own threads send), and the events it handled."""
    best, n = float("inf"), 0
    for _ in range(repeat):
        t = time.thread_time()
        n = fn()
        best = min(best, time.thread_time() - t)
    return best, n


def measure_outputs_and_sink(preds: list[dict[str, Any]], labels: list[dict[str, Any]], tmp: Path,
                              repeat: int = 3) -> tuple[float, float]:
    """CPU-µs per input event (best of ``repeat``) of encoding the outcome envelopes, and of
    ClickHouse storing their rows."""
    chunks = list(outcome_chunks(preds, labels, PARTITIONS))
    expected = sum(len(c) for _, c in chunks)
    best_encode = best_store = float("inf")
    for i in range(repeat):
        t = time.process_time()
        envelopes = [(part, encode_envelope(c)) for part, c in chunks]
        best_encode = min(best_encode, time.process_time() - t)
        sink = ClickHouseSink(f"chdb://{tmp / f'floor-{i}'}")
        sink.setup()  # the schema's migrations: once per store, not per row
        offsets: dict[int, int] = {}
        pending = 0
        t = time.process_time()  # every thread of this process: ClickHouse's pool parses too
        for part, envelope in envelopes:
            offsets[part] = offsets.get(part, -1) + 1
            sink.add("outcomes", part, offsets[part], envelope)
            pending += len(envelope)
            if pending >= BATCH_BYTES:  # as the sink runner flushes
                sink.flush()
                pending = 0
        sink.flush()
        best_store = min(best_store, time.process_time() - t)
        rows = sink.stats()["rows_written"]["outcomes"]
        sink.close()
        if rows != expected:  # every row stored, or the figure is not the cost of storing them
            raise RuntimeError(f"floor sink: {rows} outcome rows written of {expected}")
    events = len(preds) + len(labels)
    return best_encode / events * 1e6, best_store / events * 1e6


def measure_floor(preds: list[dict[str, Any]], labels: list[dict[str, Any]], tmp: Path | None = None) -> dict[str, Any]:
    pred_msgs, label_msgs = _envelopes(preds), _envelopes(labels)
    # No broker: produce() only queues (what the worker's hot path pays; sending is librdkafka's thread).
    producer = Producer({"bootstrap.servers": "127.0.0.1:9", "queue.buffering.max.messages": 2_000_000,
                         "queue.buffering.max.kbytes": 2_097_151, "linger.ms": 1000, "log_level": 0})

    now = time.time()

    def run(depth: int) -> int:
        waiting: dict[str, Any] = {}
        n = 0
        for kind, msgs in (("p", pred_msgs), ("l", label_msgs)):
            for value in msgs:
                evs = orjson.loads(value)["events"]
                n += len(evs)
                if depth >= 6:  # our validators, as the join stage runs them
                    check = _prediction if kind == "p" else _label
                    for e in evs:
                        check(e, now)
                if depth < 2:
                    continue
                ids = [e["prediction_id"] for e in evs]
                if kind == "p":
                    cols = (ids, [e["model_id"] for e in evs], [e.get("model_version") for e in evs],
                            [e["timestamp"] for e in evs], [e["prediction"] for e in evs],
                            [e.get("latency_ms") for e in evs], [e.get("segments") for e in evs])
                    if depth < 3:
                        continue
                    for row in zip(*cols, strict=True):
                        rec = orjson.dumps(row[1:]) if depth >= 4 else row
                        waiting[row[0]] = rec
                        if depth >= 5:
                            producer.produce("changelog", rec, b"p:" + row[0].encode(), partition=0)
                else:
                    cols = (ids, [e["timestamp"] for e in evs], [e.get("label") for e in evs])
                    if depth < 3:
                        continue
                    for pid in ids:
                        if waiting.pop(pid, None) is not None and depth >= 5:
                            producer.produce("changelog", None, b"p:" + pid.encode(), partition=0)
        producer.purge()  # nothing is sent: only produce()'s own cost is measured
        producer.flush(0)
        return n

    steps = ("decode", "columns", "join", "encode", "changelog", "validation")
    out: dict[str, Any] = {"events": 0, "cumulative_us_per_event": {}}
    for depth, name in enumerate(steps, start=1):
        cpu, n = _cpu(lambda d=depth: run(d))  # type: ignore[misc]
        out["events"] = n
        out["cumulative_us_per_event"][name] = round(cpu / n * 1e6, 2)
    total = out["cumulative_us_per_event"]["changelog"]  # the floor: no validation
    out["floor_us_per_event"] = total
    out["events_per_cpu_s"] = round(1e6 / total)
    with tempfile.TemporaryDirectory(dir=tmp) as d:
        outputs, sink = measure_outputs_and_sink(preds, labels, Path(d))
    out["outputs_us_per_event"] = round(outputs, 2)
    out["sink_us_per_event"] = round(sink, 2)
    # What is left of the target's 4 µs once the outcomes are encoded and ClickHouse has stored
    # their rows: with and without the durable record per waiting prediction.
    joined = out["cumulative_us_per_event"]["join"]
    out["floor_with_sink_us_per_event"] = round(total + outputs + sink, 2)
    out["join_with_sink_us_per_event"] = round(joined + outputs + sink, 2)
    out["events_per_cpu_s_with_sink"] = round(1e6 / (total + outputs + sink))
    return out


if __name__ == "__main__":
    from driftline.streams.simulate import generate

    print(orjson.dumps(measure_floor(*generate(50_000, seed=11, missing_label_rate=0.0)),
                       option=orjson.OPT_INDENT_2).decode())
