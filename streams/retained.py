"""Closed windows kept for revisions: their record in the merge table and their index in memory.

A window that has been emitted and judged leaves memory (``driftline.streams.merge``): its state
lives as a ``w:`` record in the merge table, read back when a late partial revises it, and the
merger keeps only a :class:`RetainedIndex` entry to know it is there and when it expires. With
the memory store (the default) the records are in the merge worker's memory as well, so both
are kept small: a week of windows per series is what the default label horizon retains.

Record formats (the first byte tells them apart; every one stays readable):

- ``0x02`` (written now): the state packed by ``driftline.detectors.statepack`` and deflated
  (raw deflate, no header or checksum: the changelog's record CRC covers it) with the preset
  dictionary :data:`_ZDICT`, so the key names and the fixed fields every window repeats cost
  next to nothing. In two parts: a head of a few dozen bytes (the revision, flags and times a
  restart needs to tell a settled window, ``decode_window_head``) and the body (accumulators,
  partial ids), so a restart over a week of windows does not inflate a week of accumulators;
- ``0x78`` (zlib's first byte): zlib-compressed JSON, written before format 2;
- ``{``: plain JSON, written before compression.

Any other first byte is refused with a message: a record from a newer Driftline is never
misread. Restoring executes nothing (no pickle): see the statepack module.
"""

from __future__ import annotations

import zlib
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import orjson

from driftline.detectors.statepack import pack_state, unpack_state
from driftline.streams.statecheck import UnknownStateFormatError
from driftline.streams.windows import SeriesKey

__all__ = ["RECORD_FORMAT", "RetainedIndex", "decode_window_head", "decode_window_record", "encode_window_state"]

RECORD_FORMAT = 2
_PACKED = bytes([RECORD_FORMAT])
_ZLIB_JSON = b"\x78"
_JSON = b"{"
# The preset dictionary of format 2: pack_state (format 1) of an empty binary window record. Its
# bytes are part of the format (a record deflated with it inflates only with it): never edit
# them; a better dictionary is a new format byte, with this one kept for reading.
_ZDICT = bytes.fromhex(
    "01080209706172746974696f6e03000177080a0170080a047461736b060662696e617279016e0300036c617408051172"
    "656c61746976655f6163637572616379047b14ae47e17a843f0b6d61785f6275636b657473038020047a65726f030003"
    "706f730802066f6666736574030006636f756e74730700036e65670802066f6666736574030006636f756e7473070002"
    "736308071172656c61746976655f6163637572616379047b14ae47e17a843f05636f756e740300046d65616e0500026d"
    "320500036d696e00036d61780006736b6574636808051172656c61746976655f6163637572616379047b14ae47e17a84"
    "3f0b6d61785f6275636b657473038020047a65726f030003706f730802066f6666736574030006636f756e7473070003"
    "6e65670802066f6666736574030006636f756e74730700036c6162030003646c7908051172656c61746976655f616363"
    "7572616379047b14ae47e17a843f0b6d61785f6275636b657473038020047a65726f030003706f730802066f66667365"
    "74030006636f756e74730700036e65670802066f6666736574030006636f756e7473070003616363080c0462696e7303"
    "a01f0c6c6f675f6c6f73735f65707304000000000000b03c0274700300026670030002746e030002666e030008706f73"
    "5f68697374080201690700016e0700086e65675f68697374080201690700016e0700086e5f73636f72656403000c7375"
    "6d5f6c6f675f6c6f737305000973756d5f627269657205000363616c0803016e0b0a0001730d0a000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000001700b0a0003756e6c0300046c61746503"
    "000364757003000369647307010603303a31037265760301016e0300056669727374050004656d697405000375706405"
    "000564697274790203636f760103766f6c01"
)


#: What a restart reads of a record to learn whether its window is settled (and since when): the
#: head; the accumulators and partial ids are in the body, inflated only when a revision needs them.
_BODY_FIELDS = ("p", "ids")


def encode_window_state(partition: int, state: dict[str, Any]) -> bytes:
    """A ``w:`` record (format 2) of a merged window's ``to_state`` on merge ``partition``:
    the format byte, the head's length (one byte), the deflated head, the deflated body."""
    head = _deflate(pack_state({"partition": partition, **{k: v for k, v in state.items() if k not in _BODY_FIELDS}}))
    if len(head) > 255:
        raise ValueError(f"window record head of {len(head)} bytes (at most 255)")
    body = _deflate(pack_state({k: state[k] for k in _BODY_FIELDS if k in state}))
    return _PACKED + bytes([len(head)]) + head + body


def decode_window_head(raw: bytes) -> dict[str, Any]:
    """``{"partition": p, "w": state}`` of a ``w:`` record without what only a revision needs
    (``p``, ``ids``): cheap for format 2, a full decode for the earlier formats."""
    if raw[:1] != _PACKED:
        return decode_window_record(raw)
    meta = _unpack_mapping(_inflate(raw[2:2 + raw[1]]))
    return {"partition": meta.pop("partition", None), "w": meta}


def decode_window_record(raw: bytes) -> dict[str, Any]:
    """``{"partition": p, "w": state}`` of a ``w:`` record of any format (see the module docstring)."""
    head = raw[:1]
    if head == _PACKED:
        if len(raw) < 2 or len(raw) < 2 + raw[1]:
            raise ValueError("merge table: a truncated window record")
        meta = _unpack_mapping(_inflate(raw[2:2 + raw[1]]))
        body = _unpack_mapping(_inflate(raw[2 + raw[1]:]))
        return {"partition": meta.pop("partition", None), "w": {**body, **meta}}
    if head == _ZLIB_JSON:
        value = orjson.loads(zlib.decompress(raw))
    elif head == _JSON:
        value = orjson.loads(raw)
    else:
        raise UnknownStateFormatError(f"merge table: a window record of format {raw[:1].hex() or 'empty'} this Driftline "
                         f"cannot read (it reads {RECORD_FORMAT}, zlib JSON and JSON): written by a newer version?")
    if not isinstance(value, dict):
        raise ValueError("merge table: a window record that is not a mapping")
    return value


def _deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, zdict=_ZDICT)
    return c.compress(data) + c.flush()


def _inflate(data: bytes) -> bytes:
    d = zlib.decompressobj(-15, zdict=_ZDICT)
    try:
        out = d.decompress(data) + d.flush()
    except zlib.error as e:
        raise ValueError(f"merge table: a corrupt window record ({e})") from None
    if not d.eof:
        raise ValueError("merge table: a truncated window record")
    return out


def _unpack_mapping(data: bytes) -> dict[str, Any]:
    value = unpack_state(data)
    if not isinstance(value, dict):
        raise ValueError("merge table: a window record that is not a mapping")
    return value


class RetainedIndex:
    """Which settled windows the merge table holds, and when each was last updated.

    Per series (model, version, segment), two parallel ``array('d')`` sorted by window start:
    16 bytes a window, where a dict of ``SeriesKey`` to float took ~217. Windows settle about in
    window order, so an insertion lands at or near the end; expiry is one vectorised pass.

    >>> idx = RetainedIndex()
    >>> idx.add(SeriesKey("m", "v1", "", 120.0), 5.0)
    >>> idx.add(SeriesKey("m", "v1", "", 60.0), 9.0)
    >>> SeriesKey("m", "v1", "", 60.0) in idx, len(idx), idx.expire(20.0, lambda model: 12.0)
    (True, 2, [SeriesKey(model_id='m', model_version='v1', segment='', window_start=120.0)])
    >>> idx.pop(SeriesKey("m", "v1", "", 60.0)), len(idx)
    (9.0, 0)
    """

    __slots__ = ("_series", "_n")

    def __init__(self) -> None:
        self._series: dict[tuple[str, str, str], tuple[array[float], array[float]]] = {}
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def __contains__(self, key: object) -> bool:
        return isinstance(key, SeriesKey) and self._find(key) is not None

    def __iter__(self) -> Iterator[SeriesKey]:
        for (model, version, segment), (starts, _) in list(self._series.items()):
            for ws in starts:
                yield SeriesKey(model, version, segment, ws)

    def add(self, key: SeriesKey, last_update: float) -> None:
        """Record that ``key``'s window is in the merge table, last updated at ``last_update``."""
        starts, updates = self._series.setdefault(key[:3], (array("d"), array("d")))
        i = bisect_left(starts, key.window_start)
        if i < len(starts) and starts[i] == key.window_start:
            updates[i] = last_update
            return
        starts.insert(i, key.window_start)
        updates.insert(i, last_update)
        self._n += 1

    def pop(self, key: SeriesKey) -> float | None:
        """Forget ``key``; its last update time, or None if it was not here."""
        found = self._find(key)
        if found is None:
            return None
        starts, updates = self._series[key[:3]]
        last = updates.pop(found)
        del starts[found]
        self._n -= 1
        if not starts:
            del self._series[key[:3]]
        return last

    def expire(self, now: float, keep: Callable[[str], float]) -> list[SeriesKey]:
        """Forget and return the windows last updated more than ``keep(model_id)`` before ``now``."""
        gone: list[SeriesKey] = []
        for series, (starts, updates) in list(self._series.items()):
            old = now - np.frombuffer(updates, dtype=np.float64) > keep(series[0])
            if not old.any():
                continue
            ws = np.frombuffer(starts, dtype=np.float64)
            gone += [SeriesKey(*series, float(s)) for s in ws[old]]
            kept = ~old
            if kept.any():
                self._series[series] = (array("d", ws[kept].tobytes()),
                                        array("d", np.frombuffer(updates, dtype=np.float64)[kept].tobytes()))
            else:
                del self._series[series]
        self._n -= len(gone)
        return gone

    def versions_at(self, model_id: str, segment: str, window_start: float) -> list[str]:
        """The versions of ``model_id`` whose ``segment`` window starting at ``window_start`` is here."""
        return [version for (model, version, seg) in self._series if model == model_id and seg == segment
                and SeriesKey(model, version, seg, window_start) in self]

    def _find(self, key: SeriesKey) -> int | None:
        arrays = self._series.get(key[:3])
        if arrays is None:
            return None
        starts = arrays[0]
        i = bisect_left(starts, key.window_start)
        return i if i < len(starts) and starts[i] == key.window_start else None
