"""The sink contract (Quix Streams' shape): ``setup``, ``add``, ``flush``, abstract ``write``.

The stream decides when to flush; the sink only buffers and writes. Offsets move only after a
successful flush, so a crash between ``add`` and ``flush`` means the messages are read again
(at-least-once); sinks make the repeat harmless (idempotent writes).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


class SinkBackpressureError(Exception):
    """The destination cannot take the batch now; try again after ``retry_after`` seconds.

    The caller keeps (or rewinds to) the batch's offsets and pauses consumption: the batch has not
    been written, and nothing in it has been dropped.

    Parameters
    ----------
    retry_after : float
        Seconds the caller should wait before flushing again.
    message : str
        Human explanation (the last underlying error).
    """

    def __init__(self, retry_after: float, message: str = "") -> None:
        super().__init__(message or f"sink backpressure, retry after {retry_after:.2f}s")
        self.retry_after = float(retry_after)


@dataclass
class SinkItem:
    """One buffered message with its source position."""

    topic: str
    partition: int
    offset: int
    value: dict[str, Any] | bytes  # bytes: left undecoded for the sink (``Sink.wants_raw``)


@dataclass
class SinkBatch:
    """The messages buffered since the last flush, grouped by (topic, partition).

    Items keep their arrival order inside each (topic, partition).
    """

    items: dict[tuple[str, int], list[SinkItem]] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(v) for v in self.items.values())

    def __iter__(self) -> Iterator[SinkItem]:
        for items in self.items.values():
            yield from items

    def offsets(self) -> dict[tuple[str, int], tuple[int, int]]:
        """Return ``{(topic, partition): (first_offset, last_offset)}`` of the buffered items."""
        return {tp: (its[0].offset, its[-1].offset) for tp, its in self.items.items() if its}


class Sink(ABC):
    """Base class of Driftline sinks.

    Guarantees
    ----------
    * ``add`` only buffers: it never performs I/O and never raises for a well-formed call.
    * ``flush`` calls ``write`` once with everything added since the last flush, then clears the
      buffer **whether or not** ``write`` raised (``finally``). A caller that sees ``flush`` raise
      must re-read the messages from the source (rewind to its last committed offsets) or re-add
      them; the sink never silently keeps half a batch.
    * A temporary outage surfaces as :class:`SinkBackpressureError`; any other exception is a
      permanent error for that batch.
    * Thread-safety: ``add`` and ``flush`` hold an internal lock, so one consumer thread and one
      other thread (e.g. ``stop``) may call them; ``write`` runs under that lock.
    """

    def __init__(self) -> None:
        self._batch = SinkBatch()
        self._lock = threading.RLock()

    def setup(self) -> None:  # noqa: B027 - optional hook, not abstract on purpose
        """Connect and prepare the destination (create tables...). Called once before use."""

    def wants_raw(self, topic: str) -> bool:
        """Whether ``topic``'s messages should be added as their raw bytes, not decoded.

        A sink that can hand the bytes to its destination as they are says so, and the
        caller skips decoding them (default: no).
        """
        return False

    def add(self, topic: str, partition: int, offset: int, value: dict[str, Any] | bytes) -> None:
        """Buffer one message (decoded, or raw bytes where ``wants_raw``) with its source position."""
        with self._lock:
            self._batch.items.setdefault((topic, partition), []).append(
                SinkItem(topic, partition, offset, value)
            )

    @property
    def buffered(self) -> int:
        """Number of messages waiting for the next flush."""
        with self._lock:
            return len(self._batch)

    def flush(self) -> None:
        """Write everything buffered, then clear the buffer (also when writing failed).

        Raises
        ------
        SinkBackpressureError
            The destination is temporarily unavailable; nothing of this batch is acknowledged.
        """
        with self._lock:
            batch, self._batch = self._batch, SinkBatch()
            try:
                if len(batch):
                    self.write(batch)
            finally:
                batch.items.clear()

    @abstractmethod
    def write(self, batch: SinkBatch) -> None:
        """Write one batch to the destination; must be idempotent for a repeated batch."""

    def close(self) -> None:  # noqa: B027 - optional hook, not abstract on purpose
        """Release connections. Does not flush: call ``flush`` first if you want the buffer."""
