"""Shared fixtures: one embedded Tansu broker per session, fresh topics per test."""

from __future__ import annotations

import importlib.abc
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from driftline.streams.broker import EmbeddedBroker
from driftline.streams.topics import create_topics


class _OldTopLevelNames(importlib.abc.MetaPathFinder):
    """Refuse ``import schemas`` (and streams, detectors, sinks): the product lives in ``driftline.*``.

    The repository root is on the test path (for ``bench``), where the four folders would
    otherwise import under their bare names and hide a missed ``driftline.`` prefix.
    """

    NAMES = frozenset({"schemas", "streams", "detectors", "sinks"})

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if fullname.partition(".")[0] in self.NAMES:
            raise ModuleNotFoundError(f"{fullname!r}: import it as 'driftline.{fullname}'")
        return None


sys.meta_path.insert(0, _OldTopLevelNames())

#: librdkafka's default session timeout makes the first group join take ~23 s on Tansu.
FAST_CONSUMER = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """A started embedded broker on a free port, shared by the whole session."""
    b = EmbeddedBroker(port=0)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="session")
def bootstrap(broker: EmbeddedBroker) -> str:
    return broker.bootstrap


@pytest.fixture
def topics(bootstrap: str) -> dict[str, str]:
    """Fresh topics under a unique prefix (4 partitions); returns logical key -> name."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    return create_topics(bootstrap, prefix, partitions=4)


@pytest.fixture
def topic_prefix(topics: dict[str, str]) -> str:
    return topics["predictions"][: -len("predictions")]


@pytest.fixture
def tmp_chdb(tmp_path: Path) -> str:
    """A chdb DSN for an on-disk, test-private ClickHouse store."""
    return f"chdb://{tmp_path.resolve()}/ch"  # absolute path: chdb:///tmp/...


@pytest.fixture
def consume(bootstrap: str) -> Callable[..., list[Any]]:
    """``consume(topic, expected, timeout=20, weigh=None)``: messages from the start.

    Stops when the summed weight (default 1 per message) reaches ``expected``.
    """

    def _consume(
        topic: str,
        expected: int,
        timeout: float = 20.0,
        weigh: Callable[[Any], int] | None = None,
    ) -> list[Any]:
        return consume_all(bootstrap, topic, expected, timeout, weigh)

    return _consume


def consume_all(
    bootstrap: str,
    topic: str,
    expected: int,
    timeout: float = 20.0,
    weigh: Callable[[Any], int] | None = None,
) -> list[Any]:
    """Read ``topic`` from the beginning until ``expected`` weight or ``timeout``.

    Assigns every partition explicitly instead of joining a group: no rebalance wait.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            **FAST_CONSUMER,
        }
    )
    out: list[Any] = []
    got = 0
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        deadline = time.monotonic() + timeout
        while got < expected and time.monotonic() < deadline:
            for m in c.consume(1000, 0.2):
                if m.error() is None:
                    out.append(m)
                    got += weigh(m) if weigh is not None else 1
    finally:
        c.close()
    return out
