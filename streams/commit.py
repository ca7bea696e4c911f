"""The order in which a batch's effects become durable: one place, for the worker and its tests.

Offsets and state together (at-least-once input, exactly-once effect) rest on this order, as
in Quix Streams' checkpoint; ``driftline.streams.app`` supplies the I/O (``JoinEffects``,
``MergeEffects``) and the tests a dict-backed table, and both run these functions.

Join stage, per batch of one or several partitions (``apply_join_batches``):

1. Outputs delivered: dead letters, forwarded (misrouted) records, joined outcomes. A crash
   after this re-sends them on replay (deduplicated downstream: outcomes by prediction id,
   forwards by origin offset), never loses them.
2. Table writes, in ``join_table_writes`` order: new waiting records, then the partition record
   (applied offsets, windows, detectors, outbox), then deletes; their changelog made durable.
   A crash leaves a prefix of that sequence, each prefix safe (``driftline.streams.partition``).
3. Partials (window partials, alarms, progress) sent from the partition's last outbox, after the
   record that holds the outbox is durable, so a replay never reuses their ids for other content.
4. Only then are the batch's input offsets committed (``DriftlineApp._commit_inputs``, from
   the applied offsets the partition record holds).

Merge stage (``apply_merge``): outputs (metrics, drift events, comparisons, alerts) delivered,
references saved, then the merger's state records, in ``WindowMerger.state_records`` order,
their changelog durable; offsets last.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import orjson

from driftline.schemas.codec import encode_envelope
from driftline.streams.merge import MergeOutput, WindowMerger
from driftline.streams.partition import BatchResult, PartitionProcessor

#: Outcomes leave as envelopes, like the input: one Kafka message per event would cost more
#: than the rest of the event's processing.
OUTCOMES_PER_ENVELOPE = 1000

Write = tuple[bytes, bytes | None]  # (key, value); value None: delete


class JoinEffects(Protocol):
    """What the join stage's apply order needs from the world."""

    async def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None = None) -> None: ...
    async def flush_outputs(self) -> None: ...
    def write_table(self, partition: int, writes: list[Write]) -> None: ...
    async def flush_table(self) -> None: ...


class MergeEffects(Protocol):
    """What the merge stage's apply order needs from the world."""

    async def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None = None) -> None: ...
    async def flush_outputs(self) -> None: ...
    def save_reference(self, profile: Any) -> None: ...
    def write_table(self, partition: int, writes: list[Write]) -> None: ...
    async def flush_table(self) -> None: ...


def join_table_writes(proc: PartitionProcessor, res: BatchResult) -> list[Write]:
    """The table writes of one processed batch, in the order that makes every prefix safe.

    >>> from driftline.streams.models import ModelsConfig
    >>> proc = PartitionProcessor(0, ModelsConfig(), store_get=lambda k: None)
    >>> res = BatchResult(sets={b"p:a": b"1"}, state=b"{}", deletes=[b"l:b"])
    >>> join_table_writes(proc, res)
    [(b'p:a', b'1'), (b's:0', b'{}'), (b'l:b', None)]
    """
    writes: list[Write] = list(res.sets.items())
    writes.append((proc.state_key(), res.state))
    writes += [(key, None) for key in res.deletes]
    return writes


async def apply_join_batches(steps: list[tuple[PartitionProcessor, BatchResult]], io: JoinEffects) -> None:
    """Apply processed batches of several partitions; each stage for all of them at once keeps
    the order per partition and waits for the broker once per stage."""
    sent = False
    for proc, res in steps:  # 1. outputs
        for key, rec in res.dlq:
            await io.send("dlq", key, orjson.dumps(rec))
        for target, key, wrapped in res.forwards:
            await io.send("repartition", key, wrapped, target)
        for i in range(0, len(res.outcomes), OUTCOMES_PER_ENVELOPE):
            chunk = res.outcomes[i : i + OUTCOMES_PER_ENVELOPE]
            await io.send("outcomes", None, encode_envelope(chunk), proc.partition)
        sent = sent or bool(res.dlq or res.outcomes or res.forwards)
    if sent:
        await io.flush_outputs()
    for proc, res in steps:  # 2. state
        io.write_table(proc.partition, join_table_writes(proc, res))
    await io.flush_table()
    # 3. partials: a partition's later step carries its earlier steps' too (the outbox empties
    # only once delivered), so each partition's last result is sent.
    last = {proc.partition: res for proc, res in steps}
    partials = [(proc, res) for proc, res in steps if last[proc.partition] is res and res.partials]
    for _, res in partials:
        for part in res.partials:
            await io.send("partials", part["model_id"].encode(), orjson.dumps(part))
    if partials:
        await io.flush_outputs()
    for proc, _ in partials:
        proc.outbox_delivered()


async def apply_merge(partition: int, merger: WindowMerger, out: MergeOutput, io: MergeEffects, *,
                      offsets: bool = False) -> list[Write]:
    """Deliver a merge step's outputs, then record its state; returns the writes made."""
    outputs: Iterable[tuple[str, list[dict[str, Any]]]] = (
        ("metrics", out.metrics), ("drift_events", out.drift_events), ("comparisons", out.comparisons),
        ("alerts", out.alerts))
    sent = False
    for topic, messages in outputs:
        for m in messages:
            await io.send(topic, m["model_id"].encode(), orjson.dumps(m))
            sent = True
    if sent:
        await io.flush_outputs()
    for ref in out.references:  # saved before the changelog records the builder as frozen
        io.save_reference(ref)
    records = merger.state_records(partition, out, offsets=offsets)
    if records:
        io.write_table(partition, records)
        await io.flush_table()
    return records
