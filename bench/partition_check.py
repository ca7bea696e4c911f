"""What checking every input record's partition costs the join stage (misrouted ones are forwarded).

No broker: the join stage's own check (``PartitionProcessor._owners``: murmur2 of each event's
prediction id, numpy-vectorised per batch) timed on correctly partitioned batches, the common case.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from driftline.schemas.partitioning import partition_for, partitions_for


def _per_key_us(keys: list[bytes], partitions: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        partitions_for(keys, partitions)
        best = min(best, time.perf_counter() - t)
    return best / len(keys) * 1e6


def measure_partition_check() -> dict[str, Any]:
    ids = [str(uuid.uuid4()).encode() for _ in range(20_000)]
    t = time.perf_counter()
    for k in ids:
        partition_for(k, 8)
    one_by_one = (time.perf_counter() - t) / len(ids) * 1e6
    return {
        # A batch of 4,000 events (8 envelopes of 500): the join stage's usual batch.
        "batch_4000_us_per_record": round(_per_key_us(ids[:4000], 8, 20), 3),
        # A small batch of single-event messages (below 64 keys the C partitioner is used per key).
        "batch_32_us_per_record": round(_per_key_us(ids[:32], 8, 200), 3),
        "one_by_one_us_per_record": round(one_by_one, 3),
    }


if __name__ == "__main__":
    print(measure_partition_check())
