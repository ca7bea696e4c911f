"""Where each input partition resumes: offsets and state together, whatever faust committed.

faust commits a ``take_events`` batch when its generator closes, also when the agent was
cancelled or crashed mid-batch, and its consumer can drop fetched records while a partition is
paused and count them as acked. The join stage's partition records and the merge stage's ``o:``
records say which input offsets their effects include; these two functions make reading
follow them: rewind a partition whose committed offset is past its state, and put back records
the consumer skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

log = logging.getLogger("driftline.recovery")


def plan_rewinds(assignment: Iterable[Any], resume_at: Callable[[Any], int | None],
                 position: Callable[[Any], int | None]) -> dict[Any, int]:
    """Topic-partition -> offset to seek to, for each one whose read position (after faust's seek
    to the committed offset) is past where the state says reading must resume."""
    rewinds: dict[Any, int] = {}
    for tp in assignment:
        want = resume_at(tp)
        committed = position(tp)
        if want is not None and committed is not None and want < committed:
            rewinds[tp] = want
            log.warning("committed offset is past the applied state: reading again from there",
                        extra={"topic": tp.topic, "partition": tp.partition, "committed": committed, "resume": want})
    return rewinds


async def with_skipped(messages: list[Any], topic: str, expected: int,
                       read_missing: Callable[[int, int], Awaitable[list[Any]]]) -> tuple[list[Any], int]:
    """``messages`` with the records of ``topic`` the consumer skipped put back in place.

    From ``expected`` (the state's next offset) on, every offset of the partition must arrive in
    order; a jump is read again (``read_missing(first, end)``, made into messages) and goes right
    after this topic's previous record in the batch. Returns the messages and how many were put back.
    """
    out: list[Any] = []
    after = 0
    reread = 0
    for m in messages:
        if m.topic == topic and m.offset > expected >= 0:
            missing = await read_missing(expected, m.offset)
            if missing:
                log.warning("records skipped by the consumer, read again",
                            extra={"topic": topic, "from": expected, "to": m.offset - 1, "records": len(missing)})
                reread += len(missing)
            out[after:after] = missing
        out.append(m)
        if m.topic == topic:
            expected = max(expected, m.offset + 1)
            after = len(out)
    return out, reread
