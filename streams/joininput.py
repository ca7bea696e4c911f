"""The join stage's input: fetches queued whole, joined into batches, and the offsets to commit.

The join stage reads its input topics a fetch at a time, outside faust's per-message stream
(``faust_compat.divert_fetched``). Fetches wait here until the stage takes them; the ones waiting
when it does are joined into one batch, whose apply then waits for the broker once. After a batch
is applied, the input offsets its partition records hold are committed (every ``COMMIT_SECONDS``):
the state decides where a partition resumes, so a commit only saves reading records again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from faust.types import TP

from driftline.streams import faust_compat

COMMIT_SECONDS = 1.0  # input offsets the join stage applied are committed this often
FETCHES_QUEUED = 4  # fetches of input records waiting for the join stage (joined into one batch)
#: The join stage processes a batch's records of one partition in this order of kinds: a label
#: then finds its prediction waiting instead of becoming an early label (same windows either way).
INPUT_ORDER = {"prediction": 0, "forwarded": 1, "label": 2}


class JoinInput:
    """Fetched input records waiting for the join stage, and the offsets it has applied."""

    def __init__(self, topic_of_kind: Mapping[str, str]) -> None:
        self.topic_of_kind = dict(topic_of_kind)  # message kind -> input topic name
        self.inbox: asyncio.Queue[tuple[int, faust_compat.FetchedRecords]] = asyncio.Queue(FETCHES_QUEUED)
        self.to_commit: dict[TP, int] = {}  # input offsets applied, not committed yet
        self.committed_at = 0.0

    async def put(self, records: faust_compat.FetchedRecords, generation: int) -> None:
        """Queue a fetch's input records (a full queue holds faust's fetcher: back-pressure)."""
        await self.inbox.put((generation, records))

    async def next_batch(self) -> tuple[int, faust_compat.FetchedRecords]:
        """The next fetch joined with those waiting behind it, and the consumer generation they
        were read in; fetches of an older generation than the last are left out (read again
        after the rebalance's seek)."""
        fetches = [await self.inbox.get()]
        while not self.inbox.empty():
            fetches.append(self.inbox.get_nowait())
        generation = fetches[-1][0]
        merged: faust_compat.FetchedRecords = {}
        for gen, records in fetches:
            if gen == generation:
                for tp, recs in records.items():
                    merged.setdefault(tp, []).extend(recs)
        return generation, merged

    def applied(self, partition: int, offsets: Mapping[str, int]) -> None:
        """Record the last offset per kind a partition's durable state includes, to commit."""
        for kind, offset in offsets.items():
            if offset >= 0:
                self.to_commit[TP(self.topic_of_kind[kind], partition)] = offset + 1

    async def commit_due(self, consumer: Any, now: float) -> None:
        """Commit what was applied since the last commit, at most every ``COMMIT_SECONDS``."""
        if self.to_commit and now - self.committed_at >= COMMIT_SECONDS:
            offsets, self.to_commit = self.to_commit, {}
            self.committed_at = now
            await faust_compat.commit_offsets(consumer, offsets)
