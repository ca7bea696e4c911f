"""Records waiting in the join table, and the in-memory index of when they expire.

Keys in the join table (bytes): ``p:<prediction_id>`` for predictions waiting for their label,
``l:<prediction_id>`` for labels that arrived before their prediction. Values are compact
orjson arrays (not objects) without the id, because a million of them may wait at once.
Every record carries the source partition and offset that wrote it, so a replay of the
same message recognises its own write (not a duplicate).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import NamedTuple

import orjson

from driftline.schemas.events import Label, Prediction

_new = tuple.__new__


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


def encode_prediction(partition: int, offset: int, horizon: float, p: Prediction) -> bytes:
    """Compact record: no prediction id (the table key holds it), no features, no per-class
    or ranking scores (the join needs none of them), the label horizon instead of the expiry
    time, and no trailing null for a list of items.

    A million may wait at once: each field left out moves a record down a size class of
    CPython's allocator (16 B a step; ~40 MB at a million, measured).

    >>> from driftline.schemas.events import validate_prediction
    >>> p = validate_prediction({"prediction_id": "a", "model_id": "m", "timestamp": 1.8e9,
    ...     "prediction": {"score": 0.7}}, now=1.8e9)
    >>> raw = encode_prediction(0, 5, 86400.0, p)
    >>> raw
    b'[0,5,86400.0,"m","",1800000000.0,"binary",1,0.7,null,null,{}]'
    >>> rec = decode_prediction(raw, "a")
    >>> rec.pred.prediction_id, rec.pred.score, rec.expires_at
    ('a', 0.7, 1800086400.0)
    """
    rec = [partition, offset, horizon, p.model_id, p.model_version, p.timestamp, p.task, p.label, p.score,
           p.value, p.latency_ms, p.segments]
    if p.items is not None:
        rec.append(p.items)
    return orjson.dumps(rec)


def decode_prediction(raw: bytes, prediction_id: str) -> PendingPrediction:
    r = orjson.loads(raw)
    if not isinstance(r[5], (int, float)):
        # Written by an earlier version: [partition, offset, expires_at, id, model_id, version,
        # timestamp, task, label, score, scores, value, latency_ms, segments(, items)].
        items = r[14] if len(r) > 14 else None
        pred = Prediction(prediction_id, r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], {}, r[12], r[13], items)
        return PendingPrediction(r[0], r[1], r[2], pred)
    items = r[12] if len(r) > 12 else None
    # tuple.__new__ skips the NamedTuples' generated __new__: this runs once per joined label.
    pred = _new(Prediction, (prediction_id, r[3], r[4], r[5], r[6], r[7], r[8], None, r[9], {}, r[10], r[11], items,
                             None, None, None))
    return _new(PendingPrediction, (r[0], r[1], r[5] + r[2], pred))  # the expiry, as _on_prediction computed it


def encode_label(partition: int, offset: int, expires_at: float, lab: Label) -> bytes:
    """Compact early-label record, without the prediction id (the table key holds it).

    >>> from driftline.schemas.events import Label
    >>> decode_label(encode_label(1, 9, 5.0, Label("a", "m", 2.0, 1, None, None)), "a").label
    Label(prediction_id='a', model_id='m', timestamp=2.0, label=1, value=None, feedback=None)
    """
    return orjson.dumps([partition, offset, expires_at, lab.model_id, lab.timestamp, lab.label, lab.value, lab.feedback])


def decode_label(raw: bytes, prediction_id: str) -> EarlyLabel:
    r = orjson.loads(raw)
    if not isinstance(r[4], (int, float)) or isinstance(r[4], bool):
        # Written by an earlier version: the id at [3], and without feedback before ranking support.
        del r[3]
        r.append(None)
    return EarlyLabel(r[0], r[1], r[2], Label(prediction_id, r[3], r[4], r[5], r[6], r[7]))


class ExpiryIndex:
    """Keys of waiting records by the second they expire in (``ceil(expires_at)``).

    A key is due once ``now`` reaches its second, so a record expires within a second after
    its ``expires_at`` (horizons are minutes to days). Entries go stale when a key is joined or
    rewritten; the caller checks the store for each key it pops, which keeps joins O(1).
    The keys are the join table's own key objects: an entry costs one list slot (8 B) instead
    of a heap tuple, a float and a second copy of the key (~180 B, measured per waiting
    prediction at a million).

    >>> ix = ExpiryIndex()
    >>> ix.add(10.0, b"p:a"); ix.add(4.5, b"p:b"); ix.add(4.2, b"p:c")
    >>> ix.pop_due(4.9, 100), ix.pop_due(5.0, 100), len(ix)
    ([], [b'p:b', b'p:c'], 1)
    """

    def __init__(self) -> None:
        self._buckets: dict[int, list[bytes]] = {}
        self._seconds: list[int] = []  # min-heap of the buckets' seconds
        self._n = 0

    def add(self, expires_at: float, key: bytes) -> None:
        second = math.ceil(expires_at)
        keys = self._buckets.get(second)
        if keys is None:
            self._buckets[second] = [key]
            heapq.heappush(self._seconds, second)
        else:
            keys.append(key)
        self._n += 1

    def pop_due(self, now: float, limit: int) -> list[bytes]:
        """Up to ``limit`` keys due at ``now``, the earliest seconds first."""
        return self._pop(now, limit)

    def pop_oldest(self, n: int) -> list[bytes]:
        """The ``n`` keys that expire first, due or not."""
        return self._pop(math.inf, n)

    def keep_only(self, live: Callable[[bytes], bool]) -> None:
        """Drop every entry whose key ``live`` rejects (joined or expired records)."""
        for second in list(self._buckets):
            keys = [k for k in self._buckets[second] if live(k)]
            if keys:
                self._buckets[second] = keys
            else:
                del self._buckets[second]
        self._seconds = sorted(self._buckets)
        self._n = sum(len(keys) for keys in self._buckets.values())

    def _pop(self, now: float, limit: int) -> list[bytes]:
        out: list[bytes] = []
        seconds, buckets = self._seconds, self._buckets
        while seconds and seconds[0] <= now and len(out) < limit:
            keys = buckets[seconds[0]]
            take = min(limit - len(out), len(keys))  # >= 1: buckets are never empty
            out.extend(keys[-take:])  # from the end: O(take), whatever the bucket's size
            del keys[-take:]
            if not keys:
                del buckets[heapq.heappop(seconds)]
        self._n -= len(out)
        return out

    def __len__(self) -> int:
        return self._n

    def clear(self) -> None:
        self._buckets.clear()
        self._seconds.clear()
        self._n = 0
