"""Producer SDK for serving fleets: log predictions and labels without ever blocking.

``log_prediction`` / ``log_label`` build a small dict and append it to an in-memory queue
(~1 µs); a background thread partitions events by murmur2 of the prediction id (the
partition a Java/kafka-python/aiokafka client would pick, so labels from any client meet
their prediction), packs each partition's events into envelopes ``{"events": [...]}``
and hands them to a confluent-kafka ``Producer`` with an explicit partition.

Guarantees
----------
* The calling thread never waits on the network, a lock held by I/O, or a full queue.
* Memory is bounded: events queued, packed or in flight (produced, not yet acknowledged)
  never exceed ``max_buffered_events``; beyond it an event is dropped and counted.
* At-least-once up to ``close()``: ``flush``/``close`` wait (up to ``timeout``) for every
  accepted event's delivery report. Events still undelivered when the process dies are lost.
* Failed deliveries are counted and reported through ``on_delivery_error(err, n_events)``,
  called from the background thread or from the thread calling ``flush``/``close``.
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import orjson

from driftline.schemas.partitioning import partition_for

__all__ = ["DriftlineProducer", "prediction_event", "label_event"]

log = logging.getLogger(__name__)
_kafka_log = logging.getLogger("driftline.kafka")
# Library convention: no output unless the application configures logging.
_kafka_log.addHandler(logging.NullHandler())
_PRED, _LABEL = 0, 1
_DUMPS_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
_now = time.time


def prediction_event(
    prediction_id: str,
    model_id: str,
    prediction: Any,
    *,
    model_version: str = "",
    timestamp: float | None = None,
    features: dict[str, Any] | None = None,
    latency_ms: float | None = None,
    segments: dict[str, str] | None = None,
    status: str | None = None,
    error_code: str | None = None,
) -> dict[str, Any]:
    """Inference event dict as sent on the predictions topic (docs/wire-contract.md).

    ``prediction`` is the wire ``prediction`` object (``{"label": 1, "score": 0.9}``,
    ``{"label": "cat", "scores": {...}}``, ``{"value": 3.2}``, a ranked list
    ``{"items": ["sku-1", "sku-2"], "scores": [0.9, 0.4]}``) or a scalar shorthand:
    a float becomes ``{"value": x}``, anything else (str, int, bool) ``{"label": x}``.
    ``status`` (``"ok"`` or ``"error"``) and ``error_code`` (a short string) report the
    serving outcome of the request; any other ``status`` raises ``ValueError``.

    Examples
    --------
    >>> e = prediction_event("p1", "fraud", {"label": 1, "score": 0.93}, timestamp=1.7e9)
    >>> e["prediction"], e["model_version"]
    ({'label': 1, 'score': 0.93}, '')
    >>> prediction_event("p2", "eta", 12.5, timestamp=1.7e9)["prediction"]
    {'value': 12.5}
    >>> e = prediction_event("p3", "fraud", {"score": 0.5}, timestamp=1.7e9, status="error", error_code="TIMEOUT")
    >>> e["status"], e["error_code"]
    ('error', 'TIMEOUT')
    """
    ev: dict[str, Any] = {
        "prediction_id": prediction_id,
        "model_id": model_id,
        "model_version": model_version,
        "timestamp": time.time() if timestamp is None else timestamp,
    }
    cls = prediction.__class__
    if cls is dict:
        ev["prediction"] = prediction
    elif cls is float:
        ev["prediction"] = {"value": prediction}
    else:
        ev["prediction"] = {"label": prediction}
    if features is not None:
        ev["features"] = features
    if latency_ms is not None:
        ev["latency_ms"] = latency_ms
    if segments is not None:
        ev["segments"] = segments
    if status is not None or error_code is not None:
        _add_status(ev, status, error_code)
    return ev


def _add_status(ev: dict[str, Any], status: str | None, error_code: str | None) -> None:
    if status is not None:
        if status != "ok" and status != "error":
            raise ValueError(f'status must be "ok" or "error", not {status!r}')
        ev["status"] = status
    if error_code is not None:
        ev["error_code"] = error_code


def label_event(
    prediction_id: str,
    label: Any = None,
    *,
    value: float | None = None,
    model_id: str | None = None,
    timestamp: float | None = None,
    feedback: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Label (ground truth) event dict as sent on the labels topic.

    Give one of ``label`` (classification), ``value`` (regression) or ``feedback``
    (ranking: ``{"clicked": [...], "converted": [...]}``, optionally ``"relevant"``).

    Examples
    --------
    >>> label_event("p1", 1, timestamp=1.7e9)
    {'prediction_id': 'p1', 'timestamp': 1700000000.0, 'label': 1}
    >>> label_event("p2", value=3.5, model_id="eta", timestamp=1.7e9)["value"]
    3.5
    >>> label_event("req-1", feedback={"clicked": ["sku-2"], "converted": []}, timestamp=1.7e9)["feedback"]
    {'clicked': ['sku-2'], 'converted': []}
    """
    ev: dict[str, Any] = {
        "prediction_id": prediction_id,
        "timestamp": time.time() if timestamp is None else timestamp,
    }
    if label is not None:
        ev["label"] = label
    if value is not None:
        ev["value"] = value
    if feedback is not None:
        ev["feedback"] = feedback
    if model_id is not None:
        ev["model_id"] = model_id
    return ev


class DriftlineProducer:
    """Non-blocking producer of prediction and label events (see module docstring).

    Parameters
    ----------
    bootstrap : str
        ``bootstrap.servers``.
    topic_prefix : str
        Topics are ``prefix + "predictions"`` and ``prefix + "labels"``; they must exist.
    max_events_per_envelope, max_envelope_bytes : int
        An envelope is sent when either would be exceeded (keep bytes under the
        broker's ``message.max.bytes``, 1 MB by default).
    linger_ms : float
        Longest time an event waits for its envelope to fill.
    max_buffered_events : int
        Bound on events queued, packed or in flight; further events are dropped.
    on_delivery_error : callable, optional
        ``f(err, n_events)`` on each failed delivery.
    client_config : dict, optional
        Extra librdkafka settings (security, ``message.timeout.ms``, compression...).
    single_event : bool
        One Kafka message per event, keyed by ``prediction_id`` with the ``murmur2_random``
        partitioner (for consumers that want plain keyed events). Slower for the worker.
    num_partitions : int, optional
        Skip the metadata lookup and assume this partition count for both topics.
    metadata_timeout : float
        Seconds the constructor waits for metadata; if the broker is unreachable it
        carries on and the background thread retries (events queue up meanwhile).
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        topic_prefix: str = "driftline.",
        max_events_per_envelope: int = 500,
        max_envelope_bytes: int = 900_000,
        linger_ms: float = 50,
        max_buffered_events: int = 100_000,
        on_delivery_error: Callable[[Any, int], None] | None = None,
        client_config: dict[str, Any] | None = None,
        single_event: bool = False,
        num_partitions: int | None = None,
        metadata_timeout: float = 10.0,
    ) -> None:
        from confluent_kafka import Producer

        for name, v in (
            ("max_events_per_envelope", max_events_per_envelope),
            ("max_envelope_bytes", max_envelope_bytes),
            ("max_buffered_events", max_buffered_events),
        ):
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        self.topics = (topic_prefix + "predictions", topic_prefix + "labels")
        self.max_events_per_envelope = max_events_per_envelope
        self.max_envelope_bytes = max_envelope_bytes
        self.linger_ms = linger_ms
        self.max_buffered_events = max_buffered_events
        self.on_delivery_error = on_delivery_error
        self.single_event = single_event
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            # We batch ourselves; librdkafka's own linger only adds latency.
            "linger.ms": 5,
            # Never let a metadata lookup auto-create a topic with the broker's default
            # partition count: that would silently break co-partitioning.
            "allow.auto.create.topics": False,
            # Java-compatible, used only in single_event mode (envelopes set partitions).
            "partitioner": "murmur2_random",
            # librdkafka logs (connection refused...) go to logging, not the serving
            # process's stderr; they are emitted from poll() in the background thread.
            "logger": _kafka_log,
        }
        conf.update(client_config or {})
        self._producer = Producer(conf)
        self._queue: collections.deque[tuple[int, str, dict[str, Any]]] = collections.deque()
        self._nparts: list[int] = [num_partitions or 0, num_partitions or 0]
        # Buffers owned by the background thread: (topic, partition) -> [parts, bytes, t0].
        self._buffers: dict[tuple[int, int], list[Any]] = {}
        self._lock = threading.Lock()  # guards the counters below (two writer threads)
        self._held = 0  # events packed or in flight
        self._drained = 0
        self._dropped = 0
        self._sent_envelopes = 0
        self._delivered = 0
        self._failed = 0
        self._delivery_errors = 0
        self._closed = False
        self._stop = False
        self._flush_req = 0
        self._flush_done = 0
        self._cond = threading.Condition()
        self._paused = threading.Event()  # tests: hold the background thread
        self._warned = False
        if not num_partitions:
            self._resolve_partitions(metadata_timeout, raise_missing=True)
        self._thread = threading.Thread(target=self._run, name="driftline-producer", daemon=True)
        self._thread.start()

    # ---- caller side: cheap, never blocks ------------------------------------------------

    def log_prediction(
        self,
        prediction_id: str,
        model_id: str,
        prediction: Any,
        *,
        model_version: str = "",
        timestamp: float | None = None,
        features: dict[str, Any] | None = None,
        latency_ms: float | None = None,
        segments: dict[str, str] | None = None,
        status: str | None = None,
        error_code: str | None = None,
    ) -> bool:
        """Queue one prediction (see :func:`prediction_event`); False if it was dropped.

        ``status="error"`` (optionally with ``error_code``) marks a request the service failed:
        log what it returned (its fallback output) as ``prediction``. ``ValueError`` for a
        ``status`` other than ``"ok"`` / ``"error"``.
        """
        # Inlined prediction_event(): this is the serving hot path (~1 µs budget).
        if prediction_id.__class__ is not str or model_id.__class__ is not str:
            raise TypeError("prediction_id and model_id must be str")
        q = self._queue
        if len(q) + self._held >= self.max_buffered_events or self._closed:
            return self._drop()
        ev = {
            "prediction_id": prediction_id,
            "model_id": model_id,
            "model_version": model_version,
            "timestamp": _now() if timestamp is None else timestamp,
        }
        cls = prediction.__class__
        if cls is dict:
            ev["prediction"] = prediction
        elif cls is float:
            ev["prediction"] = {"value": prediction}
        else:
            ev["prediction"] = {"label": prediction}
        if features is not None:
            ev["features"] = features
        if latency_ms is not None:
            ev["latency_ms"] = latency_ms
        if segments is not None:
            ev["segments"] = segments
        if status is not None or error_code is not None:
            _add_status(ev, status, error_code)
        q.append((_PRED, prediction_id, ev))
        return True

    def log_label(
        self,
        prediction_id: str,
        label: Any = None,
        *,
        value: float | None = None,
        model_id: str | None = None,
        timestamp: float | None = None,
        feedback: dict[str, Any] | None = None,
    ) -> bool:
        """Queue one label or ranking feedback (see :func:`label_event`); False if it was dropped."""
        if prediction_id.__class__ is not str:
            raise TypeError("prediction_id must be str")
        if len(self._queue) + self._held >= self.max_buffered_events or self._closed:
            return self._drop()
        self._queue.append(
            (
                _LABEL,
                prediction_id,
                label_event(
                    prediction_id,
                    label,
                    value=value,
                    model_id=model_id,
                    timestamp=timestamp,
                    feedback=feedback,
                ),
            )
        )
        return True

    def log_event(self, kind: str, event: dict[str, Any]) -> bool:
        """Queue an already-built event dict (``kind`` "prediction" or "label").

        For bridges and the simulator, which build wire-format events themselves; the
        dict must carry a str ``prediction_id`` and must not be mutated afterwards.
        """
        pid = event.get("prediction_id")
        if pid.__class__ is not str:
            raise TypeError("event['prediction_id'] must be a str")
        if len(self._queue) + self._held >= self.max_buffered_events or self._closed:
            return self._drop()
        self._queue.append((_LABEL if kind == "label" else _PRED, pid, event))  # type: ignore[arg-type]
        return True

    def _drop(self, n: int = 1) -> bool:
        with self._lock:
            self._dropped += n
        return False

    def stats(self) -> dict[str, int]:
        """Counters: logged (accepted), buffered (queued + packed + in flight), sent_envelopes
        (Kafka messages produced), delivered_events, dropped_events, delivery_errors
        (failed messages), failed_events."""
        q = len(self._queue)
        return {
            "logged": self._drained + q,
            "buffered": q + self._held,
            "sent_envelopes": self._sent_envelopes,
            "delivered_events": self._delivered,
            "dropped_events": self._dropped,
            "delivery_errors": self._delivery_errors,
            "failed_events": self._failed,
        }

    def flush(self, timeout: float = 30.0) -> int:
        """Send everything queued and wait for delivery reports; return events still buffered."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flush_req += 1
            req = self._flush_req
            while self._flush_done < req and self._thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.1))
        while self._held and time.monotonic() < deadline:
            self._producer.flush(min(0.1, max(0.0, deadline - time.monotonic())))
        return len(self._queue) + self._held

    def close(self, timeout: float = 30.0) -> int:
        """Flush, stop the background thread; return events left undelivered. Idempotent."""
        self._closed = True
        left = self.flush(timeout) if self._thread.is_alive() else len(self._queue) + self._held
        self._stop = True
        self._paused.clear()
        self._thread.join(5.0)
        return left

    def __enter__(self) -> DriftlineProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- background side ------------------------------------------------------------------

    def _resolve_partitions(self, timeout: float, raise_missing: bool) -> bool:
        from confluent_kafka import KafkaException

        try:
            # All topics, not one: a per-topic request may auto-create the topic.
            md = self._producer.list_topics(timeout=timeout)
        except KafkaException as exc:
            if not self._warned:
                self._warned = True
                log.warning("driftline producer: no metadata yet (%s); retrying in background", exc)
            return False
        for i, name in enumerate(self.topics):
            t = md.topics.get(name)
            if t is None or t.error is not None or not t.partitions:
                msg = (
                    f"topic {name!r} does not exist: create it first (driftline.streams.topics.create_topics)"
                )
                if raise_missing:
                    raise ValueError(msg)
                if not self._warned:
                    self._warned = True
                    log.warning("driftline producer: %s", msg)
                return False
            self._nparts[i] = len(t.partitions)
        return True

    def _run(self) -> None:
        q, poll = self._queue, self._producer.poll
        linger = self.linger_ms / 1000.0
        while True:
            if self._paused.is_set():
                time.sleep(0.005)
                continue
            if not all(self._nparts) and not self._resolve_partitions(1.0, raise_missing=False):
                if self._stop:
                    break
                time.sleep(0.5)
                continue
            n = 0
            while q and n < 20_000:  # bounded batch: keep linger checks and polls regular
                self._add(*q.popleft())
                n += 1
            if n:
                with self._lock:
                    self._drained += n
            flush_req = self._flush_req
            self._send_ready(flush_req > self._flush_done or self._stop, linger)
            if flush_req > self._flush_done and not q:
                with self._cond:
                    self._flush_done = flush_req
                    self._cond.notify_all()
            if self._stop and not q and not self._buffers:
                break
            # poll() doubles as the idle sleep and serves delivery reports.
            poll(0 if q else min(0.005, linger))
        poll(0)

    def _add(self, topic: int, key: str, ev: dict[str, Any]) -> None:
        try:
            data = orjson.dumps(ev, option=_DUMPS_OPTS)
        except TypeError as exc:
            log.warning("driftline producer: dropping unserialisable event %r: %s", key, exc)
            self._drop()
            return
        with self._lock:
            self._held += 1
        if self.single_event:
            self._produce(self.topics[topic], None, data, key, 1)
            return
        part = partition_for(key, self._nparts[topic])
        buf = self._buffers.get((topic, part))
        if buf is not None and buf[1] + len(data) + 1 > self.max_envelope_bytes - 16:
            self._send((topic, part))
            buf = None
        if buf is None:
            buf = self._buffers[(topic, part)] = [[], 0, time.monotonic()]
        buf[0].append(data)
        buf[1] += len(data) + 1
        if len(buf[0]) >= self.max_events_per_envelope:
            self._send((topic, part))

    def _send_ready(self, everything: bool, linger: float) -> None:
        now = time.monotonic()
        for bkey in [k for k, b in self._buffers.items() if everything or now - b[2] >= linger]:
            self._send(bkey)

    def _send(self, bkey: tuple[int, int]) -> None:
        parts = self._buffers.pop(bkey)[0]
        value = b'{"events":[' + b",".join(parts) + b"]}"
        # key=None: routing is by the explicit partition, and an envelope holds many ids,
        # so any single id as key would mislead consumers that read keys.
        self._produce(self.topics[bkey[0]], bkey[1], value, None, len(parts))

    def _produce(self, topic: str, part: int | None, value: bytes, key: str | None, n: int) -> None:
        cb = functools.partial(self._on_delivery, n)
        kwargs: dict[str, Any] = {"key": key, "on_delivery": cb}
        if part is not None:
            kwargs["partition"] = part
        for attempt in (0, 1):
            try:
                self._producer.produce(topic, value, **kwargs)
                self._sent_envelopes += 1
                return
            except BufferError:
                # librdkafka's queue is full (queue.buffering.max.*): serve reports once,
                # then give up on this message rather than stall flush/close.
                if attempt == 0:
                    self._producer.poll(0.05)
        with self._lock:
            self._held -= n
            self._dropped += n

    def _on_delivery(self, n: int, err: Any, msg: Any) -> None:
        with self._lock:
            self._held -= n
            if err is None:
                self._delivered += n
                return
            self._failed += n
            self._delivery_errors += 1
        if self.on_delivery_error is not None:
            try:
                self.on_delivery_error(err, n)
            except Exception:  # a user callback must not kill the producer thread
                log.exception("driftline producer: on_delivery_error raised")
