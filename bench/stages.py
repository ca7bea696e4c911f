"""The join stage's CPU per event by stage, in this process, without Kafka.

The live scenarios measure the worker end to end, but their figures move by ±15-30% from run
to run on a shared 2-core machine (the stages' own per-event costs move with them). This
scenario feeds the bench's events straight to one ``PartitionProcessor`` (partition 0 of 8,
the memory store, the worker's GC settings) in the batches the worker would take, and times
each stage with the worker's own ``StageClock``: a change to the hot path shows here first,
stage by stage, with the noise of one process only.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import orjson

from driftline.schemas.partitioning import partition_for
from driftline.streams.inputlog import Message
from driftline.streams.models import parse_models_config
from driftline.streams.partition import PartitionProcessor

PARTITIONS = 8
ENVELOPE_EVENTS = 500  # as the SDK packs them
ENVELOPES_PER_STEP = 8  # ~4,000 events: a live fetch of envelopes
SINGLES_PER_STEP = 2_000  # a live fetch of single-event messages


def _values(events: list[dict[str, Any]], single_event: bool) -> list[tuple[bytes | None, bytes]]:
    """Partition 0's events as Kafka message (key, value)s: one per event keyed by its
    prediction id, or envelopes of 500 without a key (as the SDK sends either)."""
    mine = [ev for ev in events if partition_for(ev["prediction_id"], PARTITIONS) == 0]
    if single_event:
        return [(ev["prediction_id"].encode(), orjson.dumps(ev)) for ev in mine]
    values = [orjson.dumps(ev) for ev in mine]
    return [(None, b'{"events":[' + b",".join(values[i : i + ENVELOPE_EVENTS]) + b"]}")
            for i in range(0, len(values), ENVELOPE_EVENTS)]


def _steps(preds: list[dict[str, Any]], labels: list[dict[str, Any]], single_event: bool) -> tuple[list[list[Message]], int]:
    """The messages in the worker's steps (predictions first, as the bench sends them), and
    the number of events they hold."""
    items = [("prediction", v) for v in _values(preds, single_event)] + [("label", v) for v in _values(labels, single_event)]
    per_step = SINGLES_PER_STEP if single_event else ENVELOPES_PER_STEP
    offsets = {"prediction": 0, "label": 0}
    steps: list[list[Message]] = []
    for i in range(0, len(items), per_step):
        step = []
        for kind, (key, value) in items[i : i + per_step]:
            step.append(Message(kind, kind + "s", 0, offsets[kind], key, value))
            offsets[kind] += 1
        steps.append(step)
    events = sum(1 for ev in preds + labels if partition_for(ev["prediction_id"], PARTITIONS) == 0)
    return steps, events


def _run(steps: list[list[Message]], events: int) -> dict[str, Any]:
    store: dict[bytes, bytes] = {}
    proc = PartitionProcessor(0, parse_models_config({}), store_get=store.get, partitions=PARTITIONS,
                              topics={"prediction": "predictions", "label": "labels"})
    joins = 0
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)  # as the worker runs (``driftline.streams.worker``)
    t0 = time.process_time()
    for step in steps:
        res = proc.process(step)
        store.update(res.sets)  # the apply stage's table writes, without the changelog
        for key in res.deletes:
            store.pop(key, None)
        joins += len(res.outcomes)
    cpu = time.process_time() - t0
    gc.unfreeze()
    by_stage = {k: round(v / events * 1e6, 2) for k, v in proc.stages.seconds.items()}
    return {"events": events, "joins": joins, "steps": len(steps), "cpu_s": round(cpu, 3),
            "cpu_us_per_event": round(cpu / events * 1e6, 2), "events_per_cpu_s": round(events / cpu),
            "cpu_us_per_event_by_stage": by_stage}


def measure_stages(preds: list[dict[str, Any]], labels: list[dict[str, Any]]) -> dict[str, Any]:
    """Envelopes and single-event messages through one partition's processor (best of 3)."""
    out: dict[str, Any] = {}
    for name, single in (("envelopes", False), ("single", True)):
        steps, events = _steps(preds, labels, single)
        runs = [_run(steps, events) for _ in range(3)]
        out[name] = min(runs, key=lambda r: r["cpu_s"])
    return out


if __name__ == "__main__":
    from driftline.streams.simulate import generate

    print(orjson.dumps(measure_stages(*generate(50_000, seed=11, missing_label_rate=0.0)),
                       option=orjson.OPT_INDENT_2).decode())
