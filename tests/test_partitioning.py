"""murmur2 / partition_for agree with the Java client (via kafka-python, an independent port)."""

from __future__ import annotations

import random
import time
import uuid
import warnings

import pytest

with warnings.catch_warnings():  # kafka-python 3.0 uses deprecated importlib.resources calls
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.partitioner.default import murmur2 as kp_murmur2

from driftline.schemas import partitioning
from driftline.schemas.partitioning import murmur2, partition_for, partition_for_pure

# From Kafka's clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java (testMurmur2).
JAVA_VECTORS = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}


@pytest.mark.parametrize(("key", "expected"), sorted(JAVA_VECTORS.items()))
def test_java_vectors(key: str, expected: int) -> None:
    assert murmur2(key.encode()) == expected
    # kafka-python returns the same bits as an unsigned int.
    assert kp_murmur2(key.encode()) == expected & 0xFFFFFFFF


def _random_key(rng: random.Random) -> bytes:
    kind = rng.random()
    n = rng.randint(0, 80)
    if kind < 0.4:
        return bytes(rng.getrandbits(8) for _ in range(n))
    if kind < 0.7:
        return str(uuid.UUID(int=rng.getrandbits(128))).encode()
    # non-ASCII text: Latin-1, CJK, emoji
    alphabet = "abcXYZ019-_éüßøΩжф中文字🙂✓"
    return "".join(rng.choice(alphabet) for _ in range(n)).encode("utf-8")


def test_agrees_with_kafka_python_on_random_keys() -> None:
    rng = random.Random(20261101)
    for _ in range(10_000):
        key = _random_key(rng)
        h = murmur2(key)
        assert -(2**31) <= h < 2**31
        ref = kp_murmur2(key)
        assert h & 0xFFFFFFFF == ref
        n = rng.randint(1, 64)
        expected = (ref & 0x7FFFFFFF) % n  # kafka-python DefaultPartitioner math
        assert partition_for(key, n) == expected
        assert partition_for_pure(key, n) == expected


def test_all_partition_counts_and_str_keys() -> None:
    rng = random.Random(7)
    keys = ["".join(rng.choice("aé中🙂0") for _ in range(rng.randint(1, 40))) for _ in range(300)]
    for n in range(1, 65):
        for k in keys:
            assert partition_for(k, n) == (kp_murmur2(k.encode("utf-8")) & 0x7FFFFFFF) % n


def test_rejects_bad_partition_count() -> None:
    with pytest.raises(ValueError):
        partition_for("x", 0)
    with pytest.raises(ValueError):
        partition_for_pure("x", -1)


def test_fast_path_speed() -> None:
    key = str(uuid.uuid4())
    n = 50_000
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            partition_for(key, 8)
        best = min(best, (time.perf_counter() - t0) / n)
    print(f"partition_for, 36-char id: {best * 1e6:.2f} us (fast path: {partitioning.FAST_PATH})")
    # Generous bound for shared CI machines; the typical figure is ~1 us.
    assert best < (10e-6 if partitioning.FAST_PATH else 40e-6)


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # kafka-python's importlib use
def test_kafka_python_producer_lands_on_partition_for(
    bootstrap: str, topics: dict[str, str], consume
) -> None:
    """A label sent by any Java-compatible client lands on its prediction's partition."""
    from kafka import KafkaProducer

    topic = topics["labels"]
    keys = [str(uuid.uuid4()) for _ in range(200)] + ["21", "foobar", "é中🙂"]
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        n = len(producer.partitions_for(topic))
        assert n == 4
        for k in keys:
            producer.send(topic, key=k.encode("utf-8"), value=b"{}")
        producer.flush(15)
    finally:
        producer.close(5)
    msgs = consume(topic, len(keys))
    assert len(msgs) == len(keys)
    for m in msgs:
        assert m.partition() == partition_for(m.key(), n), m.key()
