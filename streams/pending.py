"""Records waiting in the join table, and the in-memory index of when they expire.

Keys in the join table: ``p:<prediction_id>`` for predictions waiting for their label,
``l:<prediction_id>`` for labels that arrived before their prediction. Values are compact
orjson arrays (not objects) because a million of them may wait at once.
Every record carries the source partition and offset that wrote it, so a replay of the
same message recognises its own write (not a duplicate).
"""

from __future__ import annotations

import heapq
from typing import NamedTuple

import orjson

from schemas.events import Label, Prediction


class PendingPrediction(NamedTuple):
    partition: int
    offset: int
    expires_at: float
    pred: Prediction


class EarlyLabel(NamedTuple):
    partition: int
    offset: int
    expires_at: float
    label: Label


def encode_prediction(partition: int, offset: int, expires_at: float, p: Prediction) -> bytes:
    """Compact record; features and ranking scores are not kept (the join needs neither).

    >>> from schemas.events import validate_prediction
    >>> p = validate_prediction({"prediction_id": "a", "model_id": "m", "timestamp": 1.8e9,
    ...     "prediction": {"score": 0.7}}, now=1.8e9)
    >>> decode_prediction(encode_prediction(0, 5, 2e9, p)).pred.score
    0.7
    """
    return orjson.dumps(
        [partition, offset, expires_at, p.prediction_id, p.model_id, p.model_version, p.timestamp,
         p.task, p.label, p.score, p.scores, p.value, p.latency_ms, p.segments, p.items]
    )


def decode_prediction(raw: bytes) -> PendingPrediction:
    r = orjson.loads(raw)
    # Records written before ranking support have 14 fields (no items).
    items = r[14] if len(r) > 14 else None
    pred = Prediction(r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], {}, r[12], r[13], items)
    return PendingPrediction(r[0], r[1], r[2], pred)


def encode_label(partition: int, offset: int, expires_at: float, lab: Label) -> bytes:
    return orjson.dumps([partition, offset, expires_at, lab.prediction_id, lab.model_id, lab.timestamp, lab.label, lab.value,
                         lab.feedback])


def decode_label(raw: bytes) -> EarlyLabel:
    r = orjson.loads(raw)
    feedback = r[8] if len(r) > 8 else None  # absent in records written before ranking support
    return EarlyLabel(r[0], r[1], r[2], Label(r[3], r[4], r[5], r[6], r[7], feedback))



class ExpiryIndex:
    """Min-heap of (expires_at, key); entries go stale when a key is joined or rewritten.

    Stale entries are skipped when popped (the caller checks the store), which keeps
    joins O(1) instead of O(log n) deletions from the heap.

    >>> ix = ExpiryIndex()
    >>> ix.add(10.0, "p:a"); ix.add(5.0, "p:b")
    >>> ix.pop_due(7.0, 100)
    [(5.0, 'p:b')]
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, str]] = []

    def add(self, expires_at: float, key: str) -> None:
        heapq.heappush(self._heap, (expires_at, key))

    def pop_due(self, now: float, limit: int) -> list[tuple[float, str]]:
        out: list[tuple[float, str]] = []
        heap = self._heap
        while heap and heap[0][0] <= now and len(out) < limit:
            out.append(heapq.heappop(heap))
        return out

    def pop_oldest(self, n: int) -> list[tuple[float, str]]:
        return [heapq.heappop(self._heap) for _ in range(min(n, len(self._heap)))]

    def __len__(self) -> int:
        return len(self._heap)

    def clear(self) -> None:
        self._heap.clear()

