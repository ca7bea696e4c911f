"""Every use of faust's private API, in one place, behind a check of faust's version.

The worker relies on faust-streaming internals that no public API offers (``pyproject.toml``
pins faust-streaming below its next minor version for that reason):

- the current-event context variable, to write tables outside an agent's event;
- the memory store's own dict, for lookups that mostly miss;
- the aiokafka consumer thread's fetch wait, which Tansu makes every hop pay;
- the consumer's read positions and its seek to committed offsets after table recovery;
- the consumer's fetch, whose records of the input topics go to the join stage in whole batches
  instead of through faust's per-message stream, and the commit of the offsets that stage applied.

:func:`check_faust_version` runs when the app is built: on another faust minor version the
worker refuses to start instead of misbehaving.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from types import SimpleNamespace
from typing import Any

#: faust-streaming versions whose internals this module was written and tested against.
SUPPORTED = ((0, 15, 2), (0, 16, 0))  # [low, high)
FETCH_MAX_WAIT_MS = 100


def check_faust_version(version: str | None = None) -> None:
    """Raise RuntimeError unless faust-streaming's version is in ``SUPPORTED``.

    >>> check_faust_version("0.15.3")
    >>> check_faust_version("0.16.0")
    Traceback (most recent call last):
    ...
    RuntimeError: faust-streaming 0.16.0 is not supported: the worker uses its internals (driftline.streams.faust_compat) and was tested with >=0.15.2,<0.16.0
    """
    if version is None:
        import faust

        version = str(faust.__version__)
    parts = tuple(int(p) for p in version.split(".")[:3] if p.isdigit())
    low, high = SUPPORTED
    if not low <= parts < high:
        raise RuntimeError(
            f"faust-streaming {version} is not supported: the worker uses its internals "
            f"(driftline.streams.faust_compat) and was tested with >={'.'.join(map(str, low))},"
            f"<{'.'.join(map(str, high))}"
        )


def shorten_fetch_wait() -> None:
    """Cap the consumer's fetch wait at ``FETCH_MAX_WAIT_MS``.

    faust hard-codes ``fetch_max_wait_ms=1500`` and Tansu answers a fetch only when that
    wait ends, even when data arrives meanwhile (measured: ~480 ms per hop with 1500,
    ~13 ms with 100), so every hop (input -> join -> partials -> merge) added up to half a
    second. Apache Kafka answers as soon as data arrives; the shorter wait only adds idle
    fetch requests there.
    """
    from faust.transport.drivers import aiokafka as driver

    thread = driver.AIOKafkaConsumerThread
    if getattr(thread, "_driftline_fetch_wait", False):
        return
    create = thread._create_worker_consumer

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer

    thread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]
    thread._driftline_fetch_wait = True  # type: ignore[attr-defined]


class _PartitionEvent:
    """The two attributes of a faust event that tables read: ``message.partition``."""

    __slots__ = ("message", "__weakref__")

    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition)


def raw_store(table: Any) -> Any:
    """A faust table's store, as the memory store's own dict when it is one.

    faust's store is a ``Mapping``: ``get`` or ``del`` on a missing key raises and catches
    ``KeyError`` inside ``__getitem__``; most join lookups miss (a label's early-label key, a
    new prediction), and that path measured 12% of the join stage's CPU. Other stores
    (RocksDB) are used as they are.
    """
    store = table.data
    raw = getattr(store, "data", None)
    return raw if isinstance(raw, dict) else store


@contextlib.contextmanager
def partition_context(partition: int) -> Iterator[None]:
    """Make faust tables read and write ``partition`` outside an agent's event.

    faust takes a table write's changelog partition from the current event; our
    writes are per batch and per timer tick, so we name the partition ourselves.
    """
    stub = _PartitionEvent(partition)
    from faust.streams import _current_event

    token = _current_event.set(weakref.ref(stub))  # type: ignore[arg-type]
    try:
        yield
    finally:
        _current_event.reset(token)


def read_position(consumer: Any, tp: Any) -> int | None:
    """The consumer's next read offset of ``tp`` (faust exposes no public position)."""
    pos = consumer._read_offset.get(tp)
    return None if pos is None else int(pos)


def after_seek_to_committed(consumer: Any, after: Callable[[], Awaitable[None]]) -> None:
    """Run ``after()`` each time the consumer has sought its partitions to the committed offsets.

    faust seeks there once the assignment's tables are recovered, then resumes the streams;
    ``after`` may seek again (to the state's offsets) before any record is read. Idempotent.
    """
    if getattr(consumer, "_driftline_seek", False):
        return
    seek_to_committed = consumer.perform_seek

    async def perform_seek() -> None:
        await seek_to_committed()
        await after()

    consumer.perform_seek = perform_seek
    consumer._driftline_seek = True


FetchedRecords = dict[Any, list[Any]]  # topic-partition -> aiokafka ConsumerRecords, in log order


def divert_fetched(consumer: Any, topics: frozenset[str],
                   handle: Callable[[FetchedRecords, int], Awaitable[None]]) -> None:
    """Hand each fetch's records of ``topics`` to ``handle(records, generation)``, not to faust.

    faust turns every fetched record into a message, an event and a queue hand-off (and waits on
    two tasks per message): ~130 us per Kafka message, which made single-event input ten times
    slower than the processing it feeds. The join stage reads its input as whole fetches
    instead; ``handle`` awaiting is the back-pressure on the fetcher. faust never sees these
    records, so it neither acks nor commits them: ``commit_offsets`` does, from the state.
    Idempotent.
    """
    if getattr(consumer, "_driftline_divert", False):
        return
    fetch = consumer._getmany

    async def _getmany(active_partitions: Any, timeout: float) -> FetchedRecords:
        records = await fetch(active_partitions, timeout)
        mine = {tp: recs for tp, recs in records.items() if tp.topic in topics and recs}
        if not mine:
            return records  # type: ignore[no-any-return]
        await handle(mine, consumer.app.consumer_generation_id)
        return {tp: recs for tp, recs in records.items() if tp.topic not in topics}

    consumer._getmany = _getmany
    consumer._driftline_divert = True


def accepting(app: Any, generation: int) -> bool:
    """Whether records fetched in ``generation`` may still be processed: no rebalance since.

    After a rebalance faust seeks every assigned partition to its committed offset, so records
    fetched before it are read again; processing the old ones could touch a revoked partition.
    """
    return bool(app.consumer.flow_active) and not app.rebalancing and app.consumer_generation_id == generation


def mark_processed(app: Any, tps: Any) -> None:
    """Tell faust's stall monitor the partitions are being processed (it watches its own streams
    and would log "stream idle" warnings for diverted input)."""
    inbound = app.monitor.stream_inbound_time
    now = time.monotonic()
    for tp in tps:
        inbound[tp] = now


async def commit_offsets(consumer: Any, offsets: dict[Any, int]) -> None:
    """Commit ``offsets`` (next offset to read) of assigned partitions, as faust commits its own."""
    await consumer._commit_offsets(offsets)
