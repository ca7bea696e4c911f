"""Topic names and idempotent topic creation (confluent-kafka AdminClient)."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["TOPIC_KEYS", "TopicError", "topic_names", "create_topics", "input_partitions", "partition_counts"]

#: Logical topic keys; the physical name is ``prefix + key``.
TOPIC_KEYS: tuple[str, ...] = (
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
)
#: Internal topics the join reads with its inputs: they need the inputs' partition count.
COPARTITIONED: tuple[str, ...] = ("predictions", "labels", "repartition")


class TopicError(RuntimeError):
    """Topics could not be created or do not have the layout the join needs."""


def topic_names(prefix: str) -> dict[str, str]:
    """Physical topic names for a prefix.

    Examples
    --------
    >>> topic_names("driftline.")["predictions"]
    'driftline.predictions'
    >>> sorted(topic_names("x."))[:3]
    ['alerts', 'comparisons', 'dlq']
    """
    return {key: f"{prefix}{key}" for key in TOPIC_KEYS}


def partition_counts(
    bootstrap: str,
    names: list[str],
    client_config: dict[str, Any] | None = None,
    timeout: float = 10.0,
) -> dict[str, int]:
    """Partition count of each existing topic in ``names`` (missing topics are left out)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({**(client_config or {}), "bootstrap.servers": bootstrap})
    md = admin.list_topics(timeout=timeout)
    out: dict[str, int] = {}
    for name in names:
        t = md.topics.get(name)
        if t is not None and t.error is None and t.partitions:
            out[name] = len(t.partitions)
    return out


def create_topics(
    bootstrap: str,
    prefix: str,
    partitions: int,
    replication: int = 1,
    client_config: dict[str, Any] | None = None,
    timeout: float = 15.0,
    strict: bool = False,
) -> dict[str, str]:
    """Create every Driftline topic that does not exist yet; return ``topic_names(prefix)``.

    Idempotent: existing topics are kept. Every topic gets ``partitions`` partitions
    (outputs too: it keeps the per-partition processing parallel end to end).

    Parameters
    ----------
    bootstrap : str
        ``bootstrap.servers``.
    prefix : str
        Topic name prefix, e.g. ``"driftline."``.
    partitions : int
        Partition count for new topics.
    replication : int
        Replication factor for new topics.
    client_config : dict, optional
        Extra librdkafka settings (``security.protocol``, ``sasl.*``, ``ssl.*``).
    timeout : float
        Seconds to wait for metadata and creation.
    strict : bool
        Also fail if predictions or labels already exist with a count other than
        ``partitions`` (by default an existing, consistent layout is accepted as is).

    Raises
    ------
    TopicError
        If creation fails, or predictions and labels (existing or new) differ in
        partition count: the prediction-label join needs them co-partitioned.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    if partitions < 1:
        raise TopicError(f"partitions must be >= 1, got {partitions}")
    names = topic_names(prefix)
    conf = {**(client_config or {}), "bootstrap.servers": bootstrap}
    admin = AdminClient(conf)
    listed = admin.list_topics(timeout=timeout).topics
    missing = [n for n in names.values() if n not in listed]
    # An internal topic created next to existing inputs takes their partition count.
    inputs = listed.get(names["predictions"])
    input_count = len(inputs.partitions) if inputs is not None and inputs.partitions else partitions
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(n, num_partitions=input_count if n == names["repartition"] else partitions,
                         replication_factor=replication)
                for n in missing
            ],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        for name, fut in futures.items():
            try:
                fut.result(timeout)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                # Another process created it between our list and create: fine.
                if getattr(err, "code", lambda: None)() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                raise TopicError(f"could not create topic {name}: {exc}") from exc
    counts = _check_copartitioned(bootstrap, names, conf, timeout)
    if strict and counts != partitions:
        raise TopicError(
            f"{names['predictions']} and {names['labels']} exist with {counts} partitions, "
            f"not the requested {partitions}"
        )
    return names


def _check_copartitioned(
    bootstrap: str, names: dict[str, str], conf: dict[str, Any], timeout: float
) -> int:
    """The partition count shared by the join's topics, or a TopicError saying what to change."""
    group = [names[k] for k in COPARTITIONED]
    counts: dict[str, int] = {}
    # Metadata for a just-created topic can lag a moment behind the create response.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = partition_counts(bootstrap, group, conf, timeout)
        if len(counts) == len(group):
            break
        time.sleep(0.1)
    if len(counts) != len(group):
        raise TopicError(f"topics {group} not visible in metadata after creation")
    p, lab, rep = (counts[n] for n in group)
    if p != lab:
        raise TopicError(
            f"{group[0]} has {p} partitions but {group[1]} has {lab}: the prediction-label join "
            "needs the same partition count on both (labels are routed by murmur2 of the "
            "prediction id). Recreate one of them or add partitions to match."
        )
    if rep != p:
        raise TopicError(
            f"{group[2]} (internal: misrouted records are forwarded through it) has {rep} partitions "
            f"but {group[0]} has {p}: delete {group[2]} (it holds nothing once every worker is stopped "
            "and caught up) and restart a worker to recreate it."
        )
    return p


def input_partitions(bootstrap: str, prefix: str, client_config: dict[str, Any] | None = None,
                     timeout: float = 15.0) -> int:
    """The partition count of the join's topics, checked to agree (see ``_check_copartitioned``)."""
    conf = {**(client_config or {}), "bootstrap.servers": bootstrap}
    return _check_copartitioned(bootstrap, topic_names(prefix), conf, timeout)
