"""The worker's output writer on the real broker: where records land, in what order, and failure.

Outputs went through faust's aiokafka producer before; keyed outputs (metrics, alerts, partials
keyed by model id) must still land on murmur2(key)'s partition, which the merge stage and any
consumer that reads by key rely on.
"""

from __future__ import annotations

import socket
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from driftline.schemas.partitioning import partition_for
from driftline.streams.outputs import OutputWriter

PARTITIONS = 4


def _read_all(bootstrap: str, topic: str) -> dict[int, list[tuple[bytes | None, bytes | None]]]:
    """Every record of ``topic`` by partition, read to the end (Tansu's high watermark is the last
    batch's base offset + 1, so the end is the consumer's end-of-partition event)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g{uuid.uuid4().hex}", "enable.auto.commit": False,
                  "enable.partition.eof": True})
    out: dict[int, list[tuple[bytes | None, bytes | None]]] = {}
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        at_end: set[int] = set()
        while len(at_end) < PARTITIONS:
            msg = c.poll(5)
            assert msg is not None, f"stuck with partitions {sorted(at_end)} read"
            if msg.error() is not None:
                assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                at_end.add(msg.partition())
                continue
            out.setdefault(msg.partition(), []).append((msg.key(), msg.value()))
    finally:
        c.close()
    return out


@pytest.mark.integration
def test_keyed_outputs_land_on_murmur2_partitions_in_order(bootstrap: str) -> None:
    topic = _new_topic(bootstrap)
    w = OutputWriter(bootstrap)
    keys = [f"model-{i % 7}".encode() for i in range(200)]
    for i, key in enumerate(keys):
        w.send(topic, key, b'{"n":%d}' % i)
    w.send(topic, None, b"unkeyed, to partition 2", partition=2)
    w.send(topic, b"model-0", b"keyed, but to partition 3", partition=3)
    w.flush_blocking(30)
    got = _read_all(bootstrap, topic)
    expected: dict[int, list[tuple[bytes | None, bytes | None]]] = {}
    for i, key in enumerate(keys):
        expected.setdefault(partition_for(key, PARTITIONS), []).append((key, b'{"n":%d}' % i))
    expected.setdefault(2, []).append((None, b"unkeyed, to partition 2"))
    expected.setdefault(3, []).append((b"model-0", b"keyed, but to partition 3"))
    assert got == expected  # murmur2 of the key, as Java and aiokafka; call order per partition


def _new_topic(bootstrap: str) -> str:
    topic = f"outputs-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(10)
    return topic


@pytest.mark.integration
def test_flush_raises_on_a_delivery_error_then_the_writer_carries_on(bootstrap: str) -> None:
    """The broker is up, the record cannot be delivered (a partition the topic does not have):
    the error comes back as a delivery report, and ``flush`` raises it instead of returning."""
    topic = _new_topic(bootstrap)
    w = OutputWriter(bootstrap)
    w.send(topic, b"k", b"to a partition that does not exist", partition=PARTITIONS + 3)
    w.send(topic, b"k", b"delivered", partition=1)
    with pytest.raises(KafkaException, match="outputs: 0 records undelivered; errors: .*[Pp]artition"):
        w.flush_blocking(30)
    w.send(topic, b"k", b"after the failure", partition=1)
    w.flush_blocking(30)  # the failure was reported once, not to every later flush
    assert _read_all(bootstrap, topic) == {1: [(b"k", b"delivered"), (b"k", b"after the failure")]}


@pytest.mark.integration
def test_a_record_refused_at_once_fails_the_next_flush_the_same_way(bootstrap: str) -> None:
    """Once librdkafka knows the topic's partitions it refuses a record for a missing one inside
    ``produce``: ``send`` still queues the rest, and ``flush`` raises, as for a delivery report."""
    topic = _new_topic(bootstrap)
    w = OutputWriter(bootstrap)
    w.send(topic, b"k", b"first", partition=1)
    w.flush_blocking(30)  # the writer now holds the topic's metadata
    w.send(topic, b"k", b"to a partition that does not exist", partition=PARTITIONS + 3)
    w.send(topic, b"k", b"delivered", partition=1)
    with pytest.raises(KafkaException, match="outputs: 0 records undelivered; errors: .*[Pp]artition"):
        w.flush_blocking(30)
    w.flush_blocking(30)  # reported once
    assert _read_all(bootstrap, topic) == {1: [(b"k", b"first"), (b"k", b"delivered")]}


@pytest.mark.integration
def test_worker_close_delivers_queued_outputs(bootstrap: str, tmp_path: Path) -> None:
    """At shutdown the worker flushes its output writer (``DriftlineApp.close``, from
    ``run_worker``): records queued but not flushed yet reach the broker then, not later."""
    from driftline.streams.app import DriftlineApp
    from driftline.streams.models import ModelsConfig
    from driftline.streams.settings import Settings

    topic = _new_topic(bootstrap)
    # librdkafka would hold the records for a minute before sending them (a setting from the
    # environment, as SASL/TLS ones reach the writer); only a flush sends them sooner.
    env = {"DRIFTLINE_BOOTSTRAP": bootstrap, "DRIFTLINE_DATA_DIR": str(tmp_path), "DRIFTLINE_KAFKA_LINGER_MS": "60000"}
    dl = DriftlineApp(Settings.from_env(env), ModelsConfig())
    for i in range(50):
        dl.outputs().send(topic, None, b"%d" % i, partition=i % PARTITIONS)
    assert _read_all(bootstrap, topic) == {}  # still queued
    dl.close(10)
    got = _read_all(bootstrap, topic)
    assert {p: [v for _, v in recs] for p, recs in got.items()} == {
        p: [b"%d" % i for i in range(p, 50, PARTITIONS)] for p in range(PARTITIONS)}


def test_worker_output_writer_gets_the_client_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``DRIFTLINE_KAFKA_*`` (SASL/TLS) reach the output writer's librdkafka producer as they are."""
    import driftline.streams.kafkawrite as kafkawrite
    from driftline.streams.app import DriftlineApp
    from driftline.streams.models import ModelsConfig
    from driftline.streams.settings import Settings

    seen: list[dict[str, Any]] = []
    real = kafkawrite.Producer

    def spy(conf: dict[str, Any]) -> Any:
        seen.append(dict(conf))
        return real({**conf, "log_level": 0})  # librdkafka itself accepts them (quiet: nothing listens)

    monkeypatch.setattr(kafkawrite, "Producer", spy)
    env = {"DRIFTLINE_BOOTSTRAP": "127.0.0.1:1", "DRIFTLINE_DATA_DIR": str(tmp_path),
           "DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "DRIFTLINE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
           "DRIFTLINE_KAFKA_SASL_USERNAME": "u", "DRIFTLINE_KAFKA_SASL_PASSWORD": "p"}
    dl = DriftlineApp(Settings.from_env(env), ModelsConfig())
    dl.outputs()
    assert len(seen) == 1
    conf = seen[0]
    assert {k: conf[k] for k in ("security.protocol", "sasl.mechanism", "sasl.username", "sasl.password")} == {
        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "u",
        "sasl.password": "p"}
    assert conf["partitioner"] == "murmur2_random" and conf["enable.idempotence"] is True
    assert conf["queue.buffering.max.kbytes"] * 1024 >= conf["message.max.bytes"]  # the largest record fits


def test_flush_raises_when_records_are_not_delivered() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    w = OutputWriter(f"127.0.0.1:{port}", {"message.timeout.ms": 300, "log_level": 0})
    w.send("anything", b"k", b"v")
    with pytest.raises(KafkaException, match="undelivered"):
        w.flush_blocking(10)
