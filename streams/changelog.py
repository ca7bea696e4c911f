"""The tables' changelog writes, through librdkafka (``driftline.streams.kafkawrite``).

faust sends every table write as its own message through asyncio and aiokafka, ~40-80 µs
each (docs/architecture.md); the join stage writes one or two records per event, so that cost
alone capped the worker at a few thousand events/s. faust still owns the table: it creates the changelog topic, keeps the
in-memory (or RocksDB) copy that our code writes directly, and recovers the table from
this very topic after a restart or rebalance.

Tansu reports a partition's high watermark as the base offset of its last record *batch*
plus one (measured: 10 records in one batch -> high watermark 1), and faust's recovery
reads a changelog only up to the high watermark, so the tail of a multi-record batch would
be lost on recovery. After each flush we therefore append one marker record per partition
written, alone in its own batch: the high watermark then lies past every real record, on
Tansu and on Apache Kafka alike (where the marker is merely one ignored table key).

Guarantees: records of one partition are produced in call order by one idempotent
producer, so a crash leaves a prefix of them in the changelog (the join stage's
exactly-once argument, ``streams/partition.py``). ``flush()`` returns once every record
produced so far is acknowledged, and the join stage awaits it before the batch's input
offsets can be committed.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from driftline.streams.kafkawrite import RecordWriter

MARKER_KEY = b"\x00hw"


class ChangelogWriter(RecordWriter):
    """Append key/value records (value None = delete) to one changelog topic."""

    def __init__(self, bootstrap: str, topic: str, client_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(bootstrap, client_config)
        self.topic = topic
        # ``put_many`` runs on the event loop while ``flush`` runs in an executor thread, and several
        # partitions (join agent, timer, merge agent) share one writer: the dirty set is swapped
        # under this lock so a record put during a flush keeps its partition dirty for the next.
        self._lock = threading.Lock()
        self._dirty: set[int] = set()

    def put_many(self, partition: int, records: Sequence[tuple[bytes, bytes | None]]) -> None:
        """Append ``records`` (key, value or None) to ``partition``, in order."""
        produce, topic = self._producer.produce, self.topic
        with self._lock:
            self._dirty.add(partition)
            for key, value in records:
                try:
                    produce(topic, value=value, key=key, partition=partition)
                except BufferError:  # local queue full: wait for room, never drop
                    self._produce(topic, key, value, partition)

    def flush_blocking(self, timeout: float = 60.0) -> None:
        """Deliver every record put so far, then a marker after each partition written.

        Records put meanwhile (another coroutine, same writer) may share the marker's batch;
        their partition stays dirty and its writer's own ``flush`` appends the next marker.
        """
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        left = self._producer.flush(timeout)
        if left:
            with self._lock:
                self._dirty |= dirty
        elif dirty:
            with self._lock:
                for partition in dirty:
                    self._producer.produce(self.topic, value=b"", key=MARKER_KEY, partition=partition)
            left = self._producer.flush(timeout)
        self._raise_if_failed(left, f"changelog {self.topic}")


def read_range(bootstrap: str, topic: str, partition: int, start: int, end: int,
               client_config: Mapping[str, Any] | None = None, timeout: float = 30.0) -> list[tuple[int, bytes | None, bytes | None]]:
    """``(offset, key, value)`` of the records of ``topic[partition]`` in ``[start, end)``.

    ``end`` must be an offset that exists (a record already read): reading stops there. Offsets
    without a record (retention, compaction, transaction markers) are simply absent. Blocking:
    run it in an executor.
    """
    import time
    import uuid

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"driftline-gap-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest", **dict(client_config or {})})
    out: list[tuple[int, bytes | None, bytes | None]] = []
    try:
        c.assign([TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() > deadline:
                raise KafkaException(f"{topic}[{partition}]: records {start}..{end - 1} not read in {timeout:.0f}s")
            m = c.poll(0.5)
            if m is None or m.error() is not None:
                continue
            offset = int(m.offset() or 0)
            if offset >= end:
                return out
            if offset >= start:
                out.append((offset, m.key(), m.value()))
    finally:
        c.close()
