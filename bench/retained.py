"""What a closed window kept for revisions costs the merge worker (issue: a week of windows).

No broker: real join partials of a binary model (scores, labels, latencies) at several event
densities go through a ``WindowMerger`` whose settled windows leave memory; the cost of one
retained window is its compressed record in the merge table plus its entry in the merger's
index, and the figure for 100 series x 7 days of 60 s windows follows.
"""

from __future__ import annotations

import sys
import tracemalloc
from typing import Any

import numpy as np
import orjson

from driftline.schemas import encode_envelope
from driftline.streams.merge import MergeOutput, WindowMerger, encode_window_record
from driftline.streams.models import ModelConfig, ModelsConfig
from driftline.streams.partition import Message, PartitionProcessor
from driftline.streams.windows import SeriesKey

T0 = 1_700_000_040.0
WEEK_OF_WINDOWS = 7 * 1440
SERIES = 100


def _window_record(events: int, seed: int) -> bytes:
    """The merge-table record of one settled window with ``events`` labelled predictions."""
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
    return encode_window_record(0, mw)


def _index_entry_bytes(n: int = 20_000) -> float:
    """Python memory of one entry of ``WindowMerger.retained`` (a SeriesKey and a float)."""
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    index = {SeriesKey("model", "v1", f"country=c{i % 50}", T0 + 60.0 * i): float(i) for i in range(n)}
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    size = sum(s.size_diff for s in after.compare_to(before, "filename"))
    del index
    return size / n


def measure_retained() -> dict[str, Any]:
    entry = _index_entry_bytes()
    out: dict[str, Any] = {"index_entry_bytes": round(entry), "per_density": {}}
    for events in (60, 300, 1000):
        record = len(_window_record(events, seed=events))
        per_window = record + entry + 40  # + the store's dict slot and bytes header (approx.)
        out["per_density"][str(events)] = {
            "record_bytes": record,
            "bytes_per_window": round(per_window),
            "mb_per_series_week": round(per_window * WEEK_OF_WINDOWS / 1e6, 1),
            "mb_100_series_week": round(per_window * WEEK_OF_WINDOWS * SERIES / 1e6),
        }
    out["mb_100_series_week_at_300"] = out["per_density"]["300"]["mb_100_series_week"]
    return out


if __name__ == "__main__":
    print(orjson.dumps(measure_retained(), option=orjson.OPT_INDENT_2).decode(), file=sys.stdout)
