"""Outcomes as the join stage sends them, for the sink's measurements (scenario 5, floor)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from driftline.schemas import validate_label, validate_prediction
from driftline.schemas.messages import make_outcome
from driftline.schemas.partitioning import partition_for
from driftline.streams.commit import OUTCOMES_PER_ENVELOPE


def outcome_chunks(preds: list[dict[str, Any]], labels: list[dict[str, Any]],
                   partitions: int) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """``(partition, outcomes)`` for every labelled prediction, in prediction order: chunks of
    ``OUTCOMES_PER_ENVELOPE`` per partition, the last ones shorter (``streams.commit`` sends a
    batch's outcomes so, one envelope per chunk)."""
    by_id = {lab["prediction_id"]: lab for lab in labels}
    now = time.time()
    chunk: dict[int, list[dict[str, Any]]] = {}
    for pe in preds:
        le = by_id.get(pe["prediction_id"])
        if le is None:
            continue
        o = make_outcome(validate_prediction(pe, now=now), validate_label(le, now=now))  # type: ignore[arg-type]
        part = partition_for(pe["prediction_id"], partitions)
        chunk.setdefault(part, []).append(dict(o))
        if len(chunk[part]) >= OUTCOMES_PER_ENVELOPE:
            yield part, chunk.pop(part)
    yield from chunk.items()
