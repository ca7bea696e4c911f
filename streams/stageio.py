"""The I/O one stage's apply order needs (``driftline.streams.commit``), on faust.

Outputs go through the worker's librdkafka output writer (``driftline.streams.outputs``),
state through the stage's faust table (in the partition's changelog context) and its changelog
writer; ``save_reference`` stores a first-hours reference the merge stage froze.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from typing import Any

from driftline.detectors.profile import Profile
from driftline.streams import faust_compat
from driftline.streams.changelog import ChangelogWriter
from driftline.streams.outputs import OutputWriter


class StageIO:
    """The I/O of one stage's apply order (``driftline.streams.commit``): the output writer for
    outputs, the stage's table and its changelog writer for state."""

    def __init__(self, owner: Any, store: Callable[[], MutableMapping[bytes, bytes]],
                 changelog: Callable[[], ChangelogWriter], outputs: Callable[[], OutputWriter]) -> None:
        self.owner = owner
        self.store = store  # the stage table's store (the memory store's own dict when it is one)
        self.changelog = changelog
        self.outputs = outputs  # shared by the stages: one producer for the worker's outputs

    async def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None = None) -> None:
        """Queue an output record for ``topic`` (a key of ``topic_names``); ``flush_outputs`` delivers."""
        self.outputs().send(self.owner.topics[topic], key, value, partition)

    async def flush_outputs(self) -> None:
        await self.outputs().flush()

    def write_table(self, partition: int, writes: Sequence[tuple[bytes, bytes | None]]) -> None:
        store = self.store()
        with faust_compat.partition_context(partition):
            for key, value in writes:
                if value is None:
                    store.pop(key, None)
                else:
                    store[key] = value  # the key object the expiry index holds
        self.changelog().put_many(partition, writes)

    async def flush_table(self) -> None:
        await self.changelog().flush()

    def save_reference(self, profile: Profile) -> None:
        self.owner.refs.save(profile)
