"""Records to Kafka through librdkafka: the base of the worker's output writer
(``driftline.streams.outputs``) and of its tables' changelog writers (``driftline.streams.changelog``).

faust sends every record through asyncio and aiokafka, tens of µs each (docs/architecture.md);
librdkafka queues the same record for ~1 µs and batches it on its own thread. A writer's
``produce`` never waits on the broker (only for room in librdkafka's queue); ``flush`` waits,
in an executor thread, until every record queued so far is acknowledged, and raises if any
failed. The apply order (``driftline.streams.commit``) moves on only after a flush, so a record
either reached the broker before what depends on it, or is produced again on replay.

Records of one partition are produced in call order by one idempotent producer: a crash leaves
a prefix of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaException, Producer

#: The largest record a writer sends (librdkafka's ``message.max.bytes``).
MAX_RECORD_BYTES = 16 * 1024 * 1024
#: The most a writer's queue holds (librdkafka's ``queue.buffering.max.kbytes``, 1 GB by
#: default, per producer, and the worker has three). The apply order flushes after every stage,
#: so the queue holds one batch's records; a larger burst waits for room (``_produce``). Four
#: of the largest records, so that one always fits.
QUEUE_KBYTES = 4 * MAX_RECORD_BYTES // 1024


class RecordWriter:
    """One idempotent librdkafka producer, with delivery failures collected for ``flush``."""

    what = "records"  # what a failed flush says was not delivered

    def __init__(self, bootstrap: str, client_config: Mapping[str, Any] | None = None,
                 settings: Mapping[str, Any] | None = None) -> None:
        self._errors: list[str] = []
        self._producer = Producer({
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,  # in order, no duplicates, across retries
            "linger.ms": 2,
            "batch.num.messages": 10000,
            "message.max.bytes": MAX_RECORD_BYTES,
            "queue.buffering.max.kbytes": QUEUE_KBYTES,
            # Delivery reports for failures only: a Python callback per record cost ~1 us.
            "on_delivery": self._on_delivery,
            "delivery.report.only.error": True,
            **dict(settings or {}),
            **dict(client_config or {}),  # the deployment's security settings
        })

    def _produce(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None) -> None:
        """Queue one record, waiting for room in librdkafka's queue (never dropping it)."""
        while True:
            try:
                if partition is None:  # by the key's murmur2 (or any partition without a key)
                    self._producer.produce(topic, value=value, key=key)
                else:
                    self._producer.produce(topic, value=value, key=key, partition=partition)
                return
            except BufferError:  # local queue full: let librdkafka drain it
                self._producer.poll(0.05)

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._errors.append(str(err))

    def _raise_if_failed(self, left: int, what: str) -> None:
        """Raise if ``left`` records are still undelivered after a flush, or any failed."""
        if left or self._errors:
            errors, self._errors = self._errors[:5], []
            raise KafkaException(f"{what}: {left} records undelivered; errors: {errors}")

    def flush_blocking(self, timeout: float = 60.0) -> None:
        """Wait until every record queued so far is delivered; raise if one was not."""
        self._raise_if_failed(self._producer.flush(timeout), self.what)

    async def flush(self, timeout: float = 60.0) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.flush_blocking, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """At shutdown: deliver what is queued (``flush_blocking``: raises if some was not).

        The producer stays usable; librdkafka drops what is still queued when it is destroyed.
        """
        self.flush_blocking(timeout)
