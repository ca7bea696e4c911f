"""Kafka -> sink loop: consume Driftline's output topics and write them with a :class:`Sink`.

Guarantees
----------
* Offsets are committed only after the sink wrote everything up to them (write, then commit):
  a crash replays at most the uncommitted batch, and the sink's idempotence (dedup tokens and
  ``resume_offsets``) turns the replay into no new rows: each row once.
* On assignment, a partition starts at ``sink.resume_offsets()`` (what ClickHouse already holds)
  when the sink has rows for it, else at the group's committed offset (else earliest).
* Nothing is dropped silently: a destination outage keeps the batch in memory and retries it
  with exponential backoff; while ``max_buffer_rows`` messages are waiting, partitions are
  paused (no more reads) and resumed once the backlog is written. Undecodable messages are
  counted (``stats()["undecodable"]``) and logged, then skipped: these topics are written by
  Driftline itself, so such a message is a bug to report, not data to keep.
* ``jobs`` (e.g. copying reference profiles into ClickHouse) run in the consumer thread, the only
  thread that uses the sink's client: at start, then every ``interval`` seconds. A failing job is
  logged, counted (``stats()["job_failures"]``) and run again at its next interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, TopicPartition

from driftline.sinks.base import Sink, SinkBackpressureError

log = logging.getLogger(__name__)

Pending = tuple[str, int, int, dict[str, Any] | bytes | None]
Job = tuple[float, Callable[[], object]]  # (interval in seconds, function)

#: A batch is written once its message values add up to this many bytes (``batch_bytes``).
BATCH_BYTES = 8 << 20


def consumer_config(bootstrap: str, group_id: str, client_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """librdkafka settings of a consumer that commits offsets itself, after its writes.

    >>> consumer_config("k:9092", "g", {"session.timeout.ms": 10000})["session.timeout.ms"]
    10000
    """
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,  # Tansu: the 45 s default makes a join take ~23 s
        "enable.partition.eof": False,
        **(client_config or {}),
    }


class SinkRunner:
    """Run a consumer thread feeding ``sink``.

    Parameters
    ----------
    bootstrap : str
        Kafka bootstrap servers.
    topics : list[str]
        Topics to consume.
    sink : Sink
        Already constructed; ``setup()`` is called by :meth:`start`. If it has
        ``resume_offsets()`` it is used on assignment.
    group_id : str
        Consumer group.
    batch_rows, batch_seconds : int, float
        Flush when this many messages are buffered or this long after the first one.
    batch_bytes : int
        Also flush once the buffered message values add up to this many bytes: one outcome
        envelope holds up to 1,000 rows, so a message count says little about a batch's size.
    max_buffer_rows : int
        While this many messages wait for an outage to end, partitions are paused.
    client_config : dict, optional
        Extra librdkafka settings (override the defaults).
    jobs : sequence of (interval, function), optional
        Housekeeping run in the consumer thread at start and every ``interval`` seconds.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: list[str],
        sink: Sink,
        *,
        group_id: str = "driftline-sink",
        batch_rows: int = 20000,
        batch_seconds: float = 1.0,
        batch_bytes: int = BATCH_BYTES,
        max_buffer_rows: int = 200000,
        client_config: dict[str, Any] | None = None,
        jobs: Sequence[Job] = (),
    ) -> None:
        if not topics:
            raise ValueError("topics: need at least one topic")
        if batch_rows < 1 or max_buffer_rows < batch_rows:
            raise ValueError("batch_rows must be >= 1 and max_buffer_rows >= batch_rows")
        if batch_seconds <= 0:
            raise ValueError("batch_seconds: must be > 0")
        if batch_bytes < 1:
            raise ValueError("batch_bytes: must be >= 1")
        self.batch_bytes = batch_bytes
        self._pending_bytes = 0
        if any(interval <= 0 for interval, _ in jobs):
            raise ValueError("jobs: every interval must be > 0")
        self.jobs = list(jobs)
        self._jobs_due = [0.0] * len(self.jobs)  # 0: the first round runs at start
        self.topics, self.sink = list(topics), sink
        self.batch_rows, self.batch_seconds, self.max_buffer_rows = (
            batch_rows,
            batch_seconds,
            max_buffer_rows,
        )
        self.config = consumer_config(bootstrap, group_id, client_config)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Any = None
        self._pending: list[Pending] = []
        self._first_at: float | None = None
        self._retry_at = 0.0
        self._backoff = 0.0
        self._paused = False
        self._assigned: set[tuple[str, int]] = set()
        self._stats: dict[str, Any] = {
            "messages": 0, "batches": 0, "retries": 0, "failures": 0, "undecodable": 0,
            "commits": 0, "buffered_rows": 0, "backpressured": False, "last_error": None,
            "assigned": 0, "running": False, "pauses": 0, "job_failures": 0,
        }  # fmt: skip
        self._error: BaseException | None = None
        self._raw_topics: dict[str, bool] = {}
        # The consumer thread's own CPU seconds: reading (consume and buffer) and writing (the
        # sink's flush, which for chdb runs ClickHouse in this thread), in ``stats()["cpu_s"]``.
        # ClickHouse's own pool threads are not counted: they show in the process's threads.
        self._cpu = {"read": 0.0, "write": 0.0, "jobs": 0.0}

    def _wants_raw(self, topic: str) -> bool:
        raw = self._raw_topics.get(topic)
        if raw is None:
            raw = self._raw_topics[topic] = self.sink.wants_raw(topic)
        return raw

    # ---- public ---------------------------------------------------------------------------

    def start(self) -> SinkRunner:
        """Set up the sink and start the consumer thread; returns self."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("SinkRunner already started")
            self.sink.setup()
            self._consumer = Consumer(self.config)
            self._consumer.subscribe(
                self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke
            )
            self._thread = threading.Thread(target=self._run, name="driftline-sink", daemon=True)
            self._stats["running"] = True
            self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop: flush what is buffered, commit it, close the consumer, then close the sink.

        If the final flush fails the uncommitted messages are simply read again next time.
        """
        self._stop.set()
        t = self._thread
        if t is not None:
            t.join(timeout)
            if t.is_alive():
                log.error("sink runner did not stop within %.1fs", timeout)

    def stats(self) -> dict[str, Any]:
        """Counters: messages, batches, retries, failures, undecodable, commits, buffered_rows,
        backpressured, last_error, the consumer thread's CPU seconds (``cpu_s``: read, write,
        jobs), and the sink's own (``rows_written`` per table...)."""
        with self._lock:
            out = dict(self._stats)
            out["cpu_s"] = {k: round(v, 4) for k, v in self._cpu.items()}
        sink_stats = getattr(self.sink, "stats", None)
        if callable(sink_stats):
            s = sink_stats()
            out["rows_written"] = s.get("rows_written", {})
            out["undecodable"] += s.get("undecodable", 0)  # raw messages the sink decodes itself
            out["sink"] = s
        return out

    def __enter__(self) -> SinkRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- consumer thread --------------------------------------------------------------------

    def _run(self) -> None:
        c = self._consumer
        try:
            while not self._stop.is_set():
                at = time.thread_time()
                self._run_jobs()
                at = self._charge("jobs", at)
                for m in self._consume(c):
                    self._take(m)
                with self._lock:
                    self._stats["buffered_rows"] = len(self._pending)
                now = time.monotonic()
                due = self._pending and (
                    len(self._pending) >= self.batch_rows
                    or self._pending_bytes >= self.batch_bytes
                    or (self._first_at is not None and now - self._first_at >= self.batch_seconds)
                )
                at = self._charge("read", at)
                if due and now >= self._retry_at:
                    self._flush()
                    self._charge("write", at)
            at = time.thread_time()
            self._flush()
            self._charge("write", at)
        except BaseException as exc:  # surfaced via stats(); the thread must not die silently
            log.exception("sink runner crashed")
            self._error = exc
            with self._lock:
                self._stats["last_error"] = f"{type(exc).__name__}: {exc}"
        finally:
            try:
                c.close()
                self.sink.close()  # start() set it up; a chdb path is free again after this
            finally:
                with self._lock:
                    self._stats["running"] = False

    def _charge(self, part: str, since: float) -> float:
        """Add this thread's CPU since ``since`` to ``part``; return the clock's reading."""
        now = time.thread_time()
        with self._lock:
            self._cpu[part] += now - since
        return now

    def _consume(self, c: Any) -> list[Any]:
        """What the consumer has fetched, or else the next message within 0.1 s.

        ``consume(n, timeout)`` returns early only once it has ``n`` messages: outcome
        envelopes are large and few, so it waited out its whole timeout on every call (77% of
        the sink thread's time, profiled). Paused partitions return nothing, but ``poll`` keeps
        serving the group (heartbeats, rebalance callbacks) while an outage lasts.
        """
        msgs: list[Any] = c.consume(num_messages=min(self.batch_rows, 10000), timeout=0)
        if msgs:
            return msgs
        m = c.poll(0.1)
        return [] if m is None else [m]

    def _run_jobs(self) -> None:
        now = time.monotonic()
        for i, (interval, job) in enumerate(self.jobs):
            if now < self._jobs_due[i]:
                continue
            self._jobs_due[i] = now + interval
            try:
                job()
            except Exception as exc:  # housekeeping must never stop the consumer
                log.warning("sink job %r failed (retried in %.0fs): %s", job, interval, exc)
                with self._lock:
                    self._stats["job_failures"] += 1

    def _take(self, m: Any) -> None:
        err = m.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", err)
            return
        with self._lock:
            self._stats["messages"] += 1
        value: dict[str, Any] | bytes | None = None
        try:
            raw: bytes = m.value()
            if self._wants_raw(m.topic()):
                if not raw:
                    raise ValueError("empty message")
                value = raw
            else:
                value = orjson.loads(raw)
                if not isinstance(value, dict):
                    raise ValueError("not a JSON object")
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            with self._lock:
                self._stats["undecodable"] += 1
            log.error(
                "undecodable message at %s[%d]@%d skipped: %s",
                m.topic(),
                m.partition(),
                m.offset(),
                exc,
            )
            # still counts as consumed: its offset is committed with the next write
            value = None
        if not self._pending:
            self._first_at = time.monotonic()
        self._pending_bytes += len(m.value() or b"")
        self._pending.append((m.topic(), m.partition(), m.offset(), value))
        if len(self._pending) >= self.max_buffer_rows and not self._paused:
            self._pause(True)

    def _flush(self) -> None:
        if not self._pending:
            return
        batch = self._pending
        last: dict[tuple[str, int], int] = {}
        for topic, part, off, value in batch:
            last[(topic, part)] = off
            if value is not None:
                self.sink.add(topic, part, off, value)
        try:
            self.sink.flush()
        except Exception as exc:
            # the sink cleared its buffer; ours still holds the batch: retry it later, whole
            # (the sink skips what it already wrote)
            retry_after = exc.retry_after if isinstance(exc, SinkBackpressureError) else 1.0
            self._backoff = min(max(retry_after, self._backoff * 2.0, 0.05), 30.0)
            self._retry_at = time.monotonic() + self._backoff
            with self._lock:
                self._stats["failures"] += 1
                self._stats["retries"] += 1
                self._stats["backpressured"] = True
                self._stats["buffered_rows"] = len(batch)
                self._stats["last_error"] = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("sink write failed (%s); retrying in %.2fs with %d messages buffered",
                        exc, self._backoff, len(batch))  # fmt: skip
            if len(batch) >= self.max_buffer_rows and not self._paused:
                self._pause(True)
            return
        self._pending, self._first_at, self._backoff, self._pending_bytes = [], None, 0.0, 0
        offsets = [
            TopicPartition(t, p, o + 1) for (t, p), o in last.items() if (t, p) in self._assigned
        ]
        if offsets:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        with self._lock:
            self._stats["batches"] += 1
            self._stats["commits"] += 1 if offsets else 0
            self._stats["buffered_rows"] = 0
            self._stats["backpressured"] = False
        if self._paused:
            self._pause(False)

    def _pause(self, pause: bool) -> None:
        parts = [TopicPartition(t, p) for t, p in self._assigned]
        if parts:
            (self._consumer.pause if pause else self._consumer.resume)(parts)
        self._paused = pause
        with self._lock:
            self._stats["pauses"] += 1 if pause else 0
        log.info("%s %d partitions", "paused" if pause else "resumed", len(parts))

    # ---- rebalance callbacks (run inside consume/poll, in the consumer thread) --------------

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        resume: dict[tuple[str, int], int] = {}
        if hasattr(self.sink, "resume_offsets"):
            try:
                resume = self.sink.resume_offsets()
                if hasattr(self.sink, "reset_offsets"):
                    self.sink.reset_offsets(resume)  # another process may have written meanwhile
            except (
                Exception
            ) as exc:  # destination down: committed offsets + dedup tokens still hold
                log.warning("resume_offsets failed (%s); starting from committed offsets", exc)
        committed: dict[tuple[str, int], int] = {}
        if resume:
            try:
                for tp in consumer.committed(partitions, timeout=10):
                    if tp.offset >= 0:
                        committed[(tp.topic, tp.partition)] = tp.offset
            except Exception as exc:
                log.warning("reading committed offsets failed (%s)", exc)
        for tp in partitions:
            key = (tp.topic, tp.partition)
            if key in resume:
                # the later of the two: resume_offsets lags when the last messages made no rows
                # (undecodable, sampled out); the commit lags when a crash hit between write and
                # commit
                tp.offset = max(resume[key], committed.get(key, 0))
            self._assigned.add(key)
        log.info("assigned %s", [(tp.topic, tp.partition, tp.offset) for tp in partitions])
        consumer.assign(partitions)
        if self._paused:
            consumer.pause(partitions)
        with self._lock:
            self._stats["assigned"] = len(self._assigned)

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        log.info("revoked %s", sorted(revoked))
        try:
            self._flush()
        except Exception as exc:
            log.warning("flush on revoke failed: %s", exc)
        if self._pending:
            # not written: the next owner re-reads them from the committed offset
            self._pending = [p for p in self._pending if (p[0], p[1]) not in revoked]
            if not self._pending:
                self._pending_bytes = 0
            with self._lock:
                self._stats["buffered_rows"] = len(self._pending)
        self._assigned -= revoked
        if hasattr(self.sink, "forget_partitions"):
            self.sink.forget_partitions(list(revoked))
        consumer.unassign()
        with self._lock:
            self._stats["assigned"] = len(self._assigned)
