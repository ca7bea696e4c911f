"""What a closed window kept for revisions costs the merge worker (issue: a week of windows).

No broker: real join partials of a binary model (scores, labels, latencies) at several event
densities go through a ``WindowMerger`` whose settled windows leave memory; the cost of one
retained window is its entry in the memory store (the record, its key and the dict slot,
measured with tracemalloc) plus its entry in the merger's index (measured on an index holding
a week of windows per series), and the figure for 100 series x 7 days of 60 s windows follows.
"""

from __future__ import annotations

import sys
import time
import tracemalloc
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from driftline.schemas import encode_envelope
from driftline.streams.merge import MergedWindow, MergeOutput, WindowMerger, encode_window_record
from driftline.streams.models import ModelConfig, ModelsConfig
from driftline.streams.partition import Message, PartitionProcessor
from driftline.streams.retained import RetainedIndex, decode_window_head, decode_window_record
from driftline.streams.windows import SeriesKey

T0 = 1_700_000_040.0
WEEK_OF_WINDOWS = 7 * 1440
SERIES = 100


def _merged_window(events: int, seed: int) -> MergedWindow:
    """The merged state of one settled window with ``events`` labelled predictions."""
    models = ModelsConfig(models={"m": ModelConfig(task="binary")})
    proc = PartitionProcessor(0, models, store_get=lambda k: None, clock=lambda: 2.0e9)
    rng = np.random.default_rng(seed)
    scores = rng.random(events)
    step = 59.0 / events
    preds = [{"prediction_id": f"p{i}", "model_id": "m", "timestamp": T0 + i * step, "latency_ms": float(rng.gamma(2, 10)),
              "prediction": {"label": int(s > 0.5), "score": float(s)}} for i, s in enumerate(scores)]
    labels = [{"prediction_id": f"p{i}", "timestamp": T0 + i * step + 2, "label": int(rng.random() < 0.3)}
              for i in range(events)]
    partials = proc.process([Message("prediction", "p", 0, 0, None, encode_envelope(preds)),
                             Message("label", "l", 0, 0, None, encode_envelope(labels))]).partials
    partials += proc.close_idle().partials
    merger = WindowMerger(models, window_seconds=60.0, merge_wait=0.0)
    out = MergeOutput()
    for part in partials:
        merger.on_partial(orjson.loads(orjson.dumps(part)), 0.0, out)
    merger.tick(1.0, out)
    (mw,) = merger.windows.values()
    return mw


def _window_record(events: int, seed: int) -> bytes:
    """The merge-table record of one settled window with ``events`` labelled predictions."""
    return encode_window_record(0, _merged_window(events, seed))


def _series(i: int) -> tuple[str, str, str]:
    return ("fraud", "v1", f"country=c{i}")


def _allocated(build: Callable[[], Any]) -> tuple[float, Any]:
    """Bytes Python allocated while ``build`` ran (what it keeps), and what it built."""
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    built = build()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    return sum(s.size_diff for s in after.compare_to(before, "filename")), built


def _index_entry_bytes(series: int = 10) -> float:
    """Memory of one entry of a ``RetainedIndex`` holding a week of windows per series (its cost
    per window does not depend on the number of series: two arrays per series)."""
    def build() -> RetainedIndex:
        idx = RetainedIndex()
        for i in range(series):
            for w in range(WEEK_OF_WINDOWS):
                idx.add(SeriesKey(*_series(i), T0 + 60.0 * w), T0 + 60.0 * w + 90.0)
        return idx
    size, idx = _allocated(build)
    return size / len(idx)


def _store_entry_bytes(record_len: int, n: int = 20_000) -> float:
    """Memory of one ``w:`` entry of the memory store (a dict of bytes keys to bytes records):
    key, record and dict slot, for ``n`` records of ``record_len`` bytes."""
    keys = [b"w:" + SeriesKey(*_series(i % SERIES), T0 + 60.0 * (i // SERIES)).encode().encode() for i in range(n)]
    size, store = _allocated(lambda: {k: bytes(record_len) for k in keys})
    key_bytes = sum(sys.getsizeof(k) for k in keys)  # built outside the measured block
    return (size + key_bytes) / len(store)


def _codec_us(mw: MergedWindow, rounds: int = 50) -> tuple[float, float, float]:
    """Microseconds to write one record and to read it back (``to_state`` and ``from_state``
    included), and to read what a restart reads of a settled window (its head)."""
    def per_call(f: Callable[[], Any]) -> float:
        t = time.perf_counter()
        for _ in range(rounds):
            f()
        return (time.perf_counter() - t) / rounds * 1e6
    raw = encode_window_record(0, mw)
    return (per_call(lambda: encode_window_record(0, mw)),
            per_call(lambda: MergedWindow.from_state(decode_window_record(raw)["w"])),
            per_call(lambda: decode_window_head(raw)))


def measure_retained() -> dict[str, Any]:
    entry = _index_entry_bytes()
    out: dict[str, Any] = {"index_entry_bytes": round(entry, 1), "per_density": {}}
    for events in (60, 300, 1000):
        mw = _merged_window(events, seed=events)
        record = len(encode_window_record(0, mw))
        zlib_json = len(zlib.compress(orjson.dumps({"partition": 0, "w": mw.to_state()}), 6))
        store = _store_entry_bytes(record)
        per_window = store + entry
        enc_us, dec_us, head_us = _codec_us(mw)
        out["per_density"][str(events)] = {
            "record_bytes": record,
            "zlib_json_record_bytes": zlib_json,
            "store_entry_bytes": round(store),
            "bytes_per_window": round(per_window),
            "mb_per_series_week": round(per_window * WEEK_OF_WINDOWS / 1e6, 2),
            "mb_100_series_week": round(per_window * WEEK_OF_WINDOWS * SERIES / 1e6),
            "encode_us": round(enc_us), "decode_us": round(dec_us), "restart_read_us": round(head_us, 1),
        }
    out["mb_100_series_week_at_300"] = out["per_density"]["300"]["mb_100_series_week"]
    return out


if __name__ == "__main__":
    print(orjson.dumps(measure_retained(), option=orjson.OPT_INDENT_2).decode(), file=sys.stdout)
