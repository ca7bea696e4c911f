"""Reading a join partition's input: offsets applied, decoding, dead letters, misrouted records.

Messages at or below the applied offset of their kind are a replay and skipped. Each message is
decoded (its rejections go to the dead-letter topic); the events of a batch are checked against
murmur2 of their prediction id (``driftline.streams.reroute``), and a message holding other
partitions' events is forwarded to them as a batch effect. A forwarded record read back from
the repartition topic is applied once per origin offset.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftline.schemas.codec import decode_clean_event, decode_message
from driftline.schemas.events import Rejection
from driftline.schemas.messages import Outcome, make_dead_letter
from driftline.streams.reroute import owners, reason, unwrap_forward, wrap_forward


@dataclass
class Message:
    kind: str  # "prediction" | "label" | "forwarded" (from the repartition topic)
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    # A forwarded record's original (topic, partition, offset): where its dead letters point.
    origin: tuple[str, int, int] | None = None


@dataclass
class BatchResult:
    sets: dict[bytes, bytes] = field(default_factory=dict)
    state: bytes = b""
    deletes: list[bytes] = field(default_factory=list)
    dlq: list[tuple[bytes | None, dict[str, Any]]] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    partials: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    # Misrouted input for the repartition topic: (target partition, key, wrapped value).
    forwards: list[tuple[int, bytes | None, bytes]] = field(default_factory=list)


class InputLog:
    """The input position and decoding of one partition."""

    def __init__(self, partition: int, partitions: int | None, topics: dict[str, str] | None,
                 max_message_bytes: int, count: Callable[[str, int], None]) -> None:
        self.partition = partition
        # The input topics' partition count: each event's partition is checked against
        # murmur2(prediction_id) for it, and a misrouted record is forwarded (None: no check).
        self.partitions = partitions
        self.topics = topics
        self.max_message_bytes = max_message_bytes
        self.count = count
        self.applied: dict[str, int] = {"prediction": -1, "label": -1, "forwarded": -1}
        # The last origin offset applied per "<kind>:<origin partition>" of forwarded records: a
        # record forwarded again after its sender's crash is applied once.
        self.forward_applied: dict[str, int] = {}
        self._res = BatchResult()
        self._read: dict[str, int] = {}  # messages read in this batch, by kind
        self._now = time.time()

    def load_state(self, d: dict[str, Any]) -> None:
        self.applied = {"forwarded": -1, **d["applied"]}
        self.forward_applied = d.get("forward_applied", {})

    def read(self, messages: list[Message], res: BatchResult) -> list[tuple[Message, list[Any]]]:
        """Each new message with this partition's events of it (dead letters, forwards into ``res``)."""
        self._res = res
        self._read = dict.fromkeys(self.applied, 0)
        self._now = time.time()  # the future-timestamp bound, once per batch
        batch = [d for msg in messages if (d := self._decode(msg)) is not None]
        for kind, n in self._read.items():  # counted per batch: a counter per message cost ~1 us
            if n:
                self.count(f"messages_{kind}", n)
        owned = self._owners(batch)
        if owned is None or (owned == self.partition).all():  # the common case: no per-message check
            return [(msg, events) for msg, events, _ in batch]
        out = []
        ends = np.cumsum([len(events) for _, events, _ in batch])
        for (msg, events, forwarded), end in zip(batch, ends.tolist(), strict=True):
            mine = owned[end - len(events) : end]
            if not (mine == self.partition).all():
                events = self._reroute(msg, events, mine, forwarded)
            out.append((msg, events))
        return out

    def dead_letter(self, msg: Message, rej: Rejection, raw: object) -> None:
        self.count(f"dlq_{rej.code}", 1)
        topic, partition, offset = msg.origin or (msg.topic, msg.partition, msg.offset)
        rec = make_dead_letter(rej, raw, topic=topic, partition=partition, offset=offset)
        self._res.dlq.append((msg.key, dict(rec)))

    def _decode(self, msg: Message) -> tuple[Message, list[Any], bool] | None:
        """A message's events (its rejections go to the dead-letter topic), or None to skip it.

        A forwarded record comes back as its original message, with this partition's own
        position on the repartition topic as its identity (``-1 - offset``: waiting records
        are tagged by partition and offset, and must read as this partition's).
        """
        if msg.offset <= self.applied[msg.kind]:
            self.count("replayed_skipped", 1)
            return None
        self.applied[msg.kind] = msg.offset
        self._read[msg.kind] += 1
        if msg.kind == "forwarded":
            origin = unwrap_forward(msg.value)
            if origin is None:  # only workers write the internal topic: nothing to dead-letter
                self.count("forwarded_malformed", 1)
                return None
            kind, from_partition, from_offset, value = origin
            source = f"{kind}:{from_partition}"
            if from_offset <= self.forward_applied.get(source, -1):
                self.count("forwarded_duplicates", 1)
                return None
            self.forward_applied[source] = from_offset
            events, _ = decode_message(value, kind, max_bytes=self.max_message_bytes, now=self._now)  # type: ignore[arg-type]
            origin_topic = (self.topics or {}).get(kind, msg.topic)
            return (Message(kind, msg.topic, self.partition, -1 - msg.offset, msg.key, value,
                            (origin_topic, from_partition, from_offset)), events, True)
        if msg.key is not None:  # keyed: a single event by the wire contract (envelopes carry no key)
            event = decode_clean_event(msg.value, msg.kind, self.max_message_bytes, self._now)
            if event is not None:  # a clean one, the common message of non-SDK producers
                return msg, [event], False
        events, rejections = decode_message(msg.value, msg.kind, max_bytes=self.max_message_bytes, now=self._now)  # type: ignore[arg-type]
        for rej, raw in rejections:
            self.dead_letter(msg, rej, raw)
        return msg, events, False

    def _owners(self, batch: list[tuple[Message, list[Any], bool]]) -> np.ndarray | None:
        """The partition each event of the batch belongs to (``driftline.streams.reroute``)."""
        if self.partitions is None:
            return None
        return owners([ev for _, events, _ in batch for ev in events], self.partitions)

    def _reroute(self, msg: Message, events: list[Any], owned: np.ndarray, forwarded: bool) -> list[Any]:
        """Forward a message holding other partitions' events to them; return this partition's.

        The whole message goes to each partition that owns one of its events, through the
        repartition topic; each keeps its own events. Forwards are a batch effect, sent before
        the partition record marks the message applied (``driftline.streams.commit``).
        """
        own = owned == self.partition
        if forwarded:  # a message forwarded to several partitions: the others' events are theirs
            return [ev for ev, keep in zip(events, own, strict=True) if keep]
        self.count(f"rerouted_{msg.kind}s_{reason(msg.key, len(events))}", int((~own).sum()))
        wrapped = wrap_forward(msg.kind, msg.partition, msg.offset, msg.value or b"")
        for target in sorted(set(owned[~own].tolist())):
            self._res.forwards.append((int(target), msg.key, wrapped))
        return [ev for ev, keep in zip(events, own, strict=True) if keep]
