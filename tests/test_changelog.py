"""The changelog writer on the real broker: what a flush returns for is recoverable.

faust recovers a table by reading its changelog up to the high watermark. Tansu reports that
watermark as the base offset of the last record batch + 1, so the writer appends a marker after
each flush. Several coroutines share one writer (join agent, timer, partitions) while a flush
runs in an executor thread: records put during a flush must still end up below a marker.
"""

from __future__ import annotations

import sys
import threading
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from driftline.streams.changelog import MARKER_KEY, ChangelogWriter

PARTITIONS = 4


def recovered(bootstrap: str, topic: str, partition: int) -> dict[bytes, bytes | None]:
    """The table a recovery builds: records below the high watermark, last write wins."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g{uuid.uuid4().hex}",
                  "enable.auto.commit": False})
    try:
        _, high = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        table: dict[bytes, bytes | None] = {}
        if high <= 0:
            return table
        c.assign([TopicPartition(topic, partition, 0)])
        pos = 0
        while pos < high:
            msg = c.poll(5)
            assert msg is not None, f"partition {partition}: stuck at {pos} of {high}"
            assert msg.error() is None, msg.error()
            pos = msg.offset() + 1
            if msg.offset() < high and msg.key() != MARKER_KEY:
                table[msg.key()] = msg.value()
        return table
    finally:
        c.close()


@pytest.mark.integration
def test_records_put_during_concurrent_flushes_are_all_recoverable(bootstrap: str) -> None:
    topic = f"cl{uuid.uuid4().hex[:8]}-changelog"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
    writer = ChangelogWriter(bootstrap, topic)
    errors: list[BaseException] = []
    done = threading.Event()

    def flusher() -> None:  # the executor thread of other coroutines' flushes
        try:
            while not done.is_set():
                writer.flush_blocking(30)
        except BaseException as exc:
            errors.append(exc)

    expected: dict[int, dict[bytes, bytes | None]] = {p: {} for p in range(PARTITIONS)}
    t = threading.Thread(target=flusher)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # interleave the two threads as finely as the GIL allows
    t.start()
    try:
        for i in range(3000):
            p = i % PARTITIONS
            key, value = f"k{i % 97}".encode(), (None if i % 11 == 0 else f"v{i}".encode())
            writer.put_many(p, [(key, value)])
            expected[p][key] = value
            if i % 50 == 49:  # this "coroutine" awaits its own flush, as _apply_join does
                writer.flush_blocking(30)
    finally:
        done.set()
        t.join(60)
        sys.setswitchinterval(switch)
    writer.flush_blocking(30)
    writer.close()
    assert not errors, errors
    for p in range(PARTITIONS):
        assert recovered(bootstrap, topic, p) == expected[p], f"partition {p}"
