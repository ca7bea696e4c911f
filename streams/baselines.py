"""Reference profiles as data on Kafka: the compacted ``<prefix>baselines`` topic.

``driftline baseline create`` publishes each new profile version (``Profile.to_state()`` as JSON,
key ``<model_id>@<version>``) to the topic as well as saving its file; every worker reads the
topic from its start in a thread of its own (``BaselineFeed``) and applies a newer version live,
without a restart and without a shared disk. The sink copies each version it sees into
ClickHouse's ``reference_profiles``. Compaction keeps every version (one key each), so a worker
that starts later still finds all of them.

Reading a profile executes nothing: ``Profile.from_state`` builds it from plain data, checked.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import orjson

from driftline.detectors.profile import Profile
from driftline.streams.topics import MAX_BASELINE_BYTES

log = logging.getLogger("driftline.baselines")

#: A profile of many features is larger than Kafka's default 1 MB message: the topic and its
#: clients allow this much (``driftline.streams.topics`` creates the topic with it).
MAX_PROFILE_BYTES = MAX_BASELINE_BYTES


def baseline_key(model_id: str, version: int) -> bytes:
    """The record key of one version: compaction keeps each version apart.

    >>> baseline_key("fraud", 3)
    b'fraud@3'
    """
    return f"{model_id}@{int(version)}".encode()


def publish_baseline(bootstrap: str, topic: str, profile: Profile, client_config: dict[str, Any] | None = None,
                     timeout: float = 30.0) -> None:
    """Write one profile version to the baselines topic and wait for the broker's ack."""
    from confluent_kafka import Producer

    errors: list[str] = []
    producer = Producer({**(client_config or {}), "bootstrap.servers": bootstrap, "acks": "all",
                         "message.max.bytes": MAX_PROFILE_BYTES, "compression.type": "lz4"})
    producer.produce(topic, key=baseline_key(profile.model_id, profile.version),
                     value=orjson.dumps(profile.to_state()),
                     on_delivery=lambda err, msg: errors.append(str(err)) if err else None)
    if producer.flush(timeout) or errors:
        raise RuntimeError(f"baseline {profile.model_id} v{profile.version} not published to {topic}: "
                           f"{errors[0] if errors else 'no answer from the broker'}")


def read_baselines(bootstrap: str, topic: str, client_config: dict[str, Any] | None = None,
                   timeout: float = 15.0) -> dict[str, Profile]:
    """The newest version of every model's profile on the topic now (for the CLI)."""
    feed = BaselineFeed(bootstrap, topic, client_config)
    try:
        feed.read_until_caught_up(timeout)
        return feed.latest()
    finally:
        feed.close()


class BaselineFeed:
    """The baselines topic read from its start: the newest version of each model's profile.

    ``start()`` reads in a daemon thread; ``take_new()`` hands over the versions that arrived
    since the last call (newer than what was handed over before), for the worker's timer.
    """

    def __init__(self, bootstrap: str, topic: str, client_config: dict[str, Any] | None = None) -> None:
        from confluent_kafka import Consumer

        self.topic = topic
        self._consumer = Consumer({**(client_config or {}), "bootstrap.servers": bootstrap,
                                   "group.id": "driftline-baselines-reader", "enable.auto.commit": False,
                                   "fetch.message.max.bytes": MAX_PROFILE_BYTES})
        self._lock = threading.Lock()
        self._latest: dict[str, Profile] = {}
        self._new: dict[str, Profile] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._assigned = False
        self.errors = 0

    def _assign(self) -> bool:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        md = self._consumer.list_topics(self.topic, timeout=5)
        meta = md.topics.get(self.topic)
        if meta is None or meta.error is not None or not meta.partitions:
            return False
        self._consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        self._assigned = True
        return True

    def poll_once(self, timeout: float = 0.5) -> int:
        """Read what is there (one poll); returns how many records were read."""
        if not self._assigned and not self._assign():
            return 0
        msgs = self._consumer.consume(100, timeout)
        for msg in msgs:
            value = msg.value()
            if msg.error() is not None or not value:
                continue
            try:
                profile = Profile.from_state(orjson.loads(value))
            except (ValueError, KeyError, TypeError) as exc:
                self.errors += 1
                log.warning("unreadable baseline record skipped: %s", exc,
                            extra={"partition": msg.partition(), "offset": msg.offset()})
                continue
            self._offer(profile)
        return len(msgs)

    def _offer(self, profile: Profile) -> None:
        with self._lock:
            have = self._latest.get(profile.model_id)
            if have is None or profile.version > have.version:
                self._latest[profile.model_id] = profile
                self._new[profile.model_id] = profile

    def read_until_caught_up(self, timeout: float) -> None:
        """Poll until the assigned partitions are read to their end (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.poll_once(0.5) == 0 and self._assigned and self._at_end():
                return

    def _at_end(self) -> bool:
        for tp in self._consumer.assignment():
            _, high = self._consumer.get_watermark_offsets(tp, timeout=5, cached=False)
            position = self._consumer.position([tp])[0].offset
            if high > 0 and position < high:
                return False
        return True

    def latest(self) -> dict[str, Profile]:
        with self._lock:
            return dict(self._latest)

    def take_new(self) -> list[Profile]:
        with self._lock:
            new, self._new = list(self._new.values()), {}
        return new

    def start(self) -> BaselineFeed:
        self._thread = threading.Thread(target=self._run, name="driftline-baselines", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once(1.0)
            except Exception:  # a broker hiccup must not end the feed
                log.exception("reading the baselines topic failed; retrying")
                self._stop.wait(2.0)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._consumer.close()
