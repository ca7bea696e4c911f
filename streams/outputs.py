"""The worker's output records, through librdkafka (``driftline.streams.kafkawrite``).

Outcomes, dead letters, forwarded (misrouted) records, window partials, metrics, drift events,
comparisons and alerts: every record the join and merge stages send, through one writer shared
by both (``driftline.streams.stageio``). Their topics are created at start
(``driftline.streams.topics.create_topics``); faust's producer sends none of them.

Keyed records are partitioned by murmur2 of the key, as Java's and aiokafka's default
partitioners do (librdkafka's own default, CRC32, would put them elsewhere): records keyed by
model id (partials, metrics, alerts) land where they did when faust's producer sent them, and
the merge stage, which reads the partials by partition, still finds each model's on one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaException

from driftline.streams.kafkawrite import RecordWriter


class OutputWriter(RecordWriter):
    """Queue output records (``send``); ``flush`` delivers them or raises."""

    what = "outputs"

    def __init__(self, bootstrap: str, client_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(bootstrap, client_config, {"partitioner": "murmur2_random"})

    def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None = None) -> None:
        """Queue one record: to ``partition``, else to murmur2(``key``)'s, else to any.

        A record librdkafka refuses at once (a partition the topic does not have, once it knows
        the topic's metadata) fails the next ``flush``, as one the broker refuses does: whether
        librdkafka knew yet is timing, so the error comes back in one place either way. (The
        changelog writer raises at once instead: nothing may follow a record it lost.)
        """
        try:
            self._produce(topic, key, value, partition)
        except KafkaException as exc:
            self._errors.append(str(exc))
