"""The faust application: two agents, their tables, timers and web views.

- join stage: reads the co-partitioned predictions, labels and repartition topics a whole
  fetch at a time, bypassing faust's per-message stream (``faust_compat.divert_fetched``; the
  ``join`` agent only holds the subscription), and runs one ``PartitionProcessor`` per partition
  over each fetch; it commits the input offsets its state has applied.
  Its state is the ``join`` table: waiting predictions, early labels and one partition
  record per partition. Outputs: ``partials`` (window partials, detector alarms),
  ``outcomes``, ``dlq``.
- ``merge`` agent: consumes ``partials`` (keyed by model_id) and runs one
  ``WindowMerger`` per partials partition. State: the ``merge`` table. Outputs:
  ``metrics``, ``alerts``, ``drift_events``.
- A timer closes windows of idle partitions and emits due window revisions.
- Web views: ``/health``, ``/metrics`` (Prometheus), ``/query`` (read-only SQL when the
  worker owns an embedded chdb store).

Faust pitfalls avoided (docs/architecture.md, "Facts the design relies on"): default aiokafka transport (``kafka://``),
at-least-once with idempotent state, table writes aggregated per batch (not per event),
event-time windows closed by us, raw serializers with orjson done here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import faust
import orjson
from faust.types import TP

from driftline.detectors.profile import Profile
from driftline.schemas.codec import split_by_size
from driftline.streams import faust_compat
from driftline.streams.baselines import BaselineFeed
from driftline.streams.changelog import ChangelogWriter, read_range
from driftline.streams.commit import apply_join_batches, apply_merge
from driftline.streams.halt import halt_on_error
from driftline.streams.joininput import INPUT_ORDER, JoinInput
from driftline.streams.malloc import FreeMemoryReleaser
from driftline.streams.merge import MergeOutput, WindowMerger
from driftline.streams.models import ModelsConfig
from driftline.streams.observe import PipelineMetrics
from driftline.streams.outputs import OutputWriter
from driftline.streams.partition import BatchResult, Message, PartitionProcessor
from driftline.streams.recovery import plan_rewinds, with_skipped
from driftline.streams.references import References
from driftline.streams.settings import Settings, aiokafka_security
from driftline.streams.stageclock import StageClock
from driftline.streams.stageio import StageIO
from driftline.streams.topics import topic_names
from driftline.streams.web import add_views

log = logging.getLogger("driftline.worker")

TICK_SECONDS = 0.25
# Memory of each partition's RocksDB (one per table and partition): at most two 8 MB memtables
# and a 16 MB block cache, so 32 MB. faust's defaults allow 3 x 64 MB and a 2 GB cache each.
ROCKSDB_OPTIONS = {"write_buffer_size": 8 << 20, "max_write_buffer_number": 2, "block_cache_size": 16 << 20}


APPLY_AT = 50_000  # processed partitions are applied together until they hold this many outcomes + writes
# A partition's messages of one batch are processed (and applied) in steps of at most this many
# bytes of labels: a batch of 2,000 label envelopes (a million labels) was one step per
# partition, and the worker peaked at 1.9 GB of RSS (bench scenario 4). Labels are what make a
# step's outcomes, the memory it holds until applied; predictions only add waiting records, which
# stay anyway: cutting their runs too (an apply per 4 MB of predictions) raised the RSS at rest
# with a million waiting from ~385 to ~485 MB (the extra in live malloc'd blocks, not traced).
STEP_LABEL_BYTES = 4 << 20
# A caught-up join partition tells the merge stage this often when it last read each model
# (availability: a silent model); the merge stage ignores reports older than HEARTBEAT_STALE_S.
HEARTBEAT_SECONDS = 10.0


def _label_bytes(m: Message) -> int:
    return len(m.value or b"") if m.kind == "label" else 0


class Record(NamedTuple):
    """A record read outside faust (``read_range``), shaped like the faust message fields we use."""

    topic: str
    offset: int
    key: bytes | None
    value: bytes | None


class DriftlineApp:
    """Builds and owns the faust app of one worker process."""

    def __init__(self, settings: Settings, models: ModelsConfig, *, sink: Any = None, query: Any = None,
                 references: dict[str, Profile] | None = None, baselines: BaselineFeed | None = None) -> None:
        self.settings = settings
        self.models = models
        # Reference profiles of the models with ``data_drift`` (loaded once, at start).
        self.refs = References(models, settings.data_dir, references)
        self.references = self.refs.profiles  # shared with every processor and merger built
        self.topics = topic_names(settings.topic_prefix)
        self.metrics = PipelineMetrics()
        self.stages = StageClock()  # the worker's CPU by stage, in /health (``stage_cpu_s``)
        self.sink = sink
        self.query = query
        self.processors: dict[int, PartitionProcessor] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._merge_locks: dict[int, asyncio.Lock] = {}
        # Set when faust has recovered the tables of the current assignment; cleared when a
        # rebalance starts. Processors and mergers load their state from the tables.
        self._tables_ready = False
        self._join_raw: Any = None
        self._changelog: ChangelogWriter | None = None
        self._merge_changelog: ChangelogWriter | None = None
        self._outputs: OutputWriter | None = None
        self._releaser = FreeMemoryReleaser()
        self.mergers: dict[int, WindowMerger] = {}
        self._heartbeats: dict[int, float] = {}  # partition -> when it last sent one
        self.join_input = JoinInput(self._input_kinds_by_name(inverse=True))
        self.refs.on_install(self._install_reference)
        self.baselines = baselines
        self.app = self._build_app()
        self._join_io = StageIO(self, self._join_store, self.changelog, self.outputs)
        self._merge_io = StageIO(self, lambda: self.merge_table.data, self.merge_changelog, self.outputs)

    # ---- construction ----------------------------------------------------------------------
    def _build_app(self) -> faust.App:
        s = self.settings
        faust_compat.check_faust_version()
        faust_compat.shorten_fetch_wait()
        app = faust.App(
            s.application_id,
            broker=f"kafka://{s.bootstrap}",
            store=s.store,
            datadir=s.data_dir,
            key_serializer="raw",
            value_serializer="raw",
            topic_partitions=s.partitions,
            topic_allow_declare=True,
            broker_session_timeout=6.0,
            broker_heartbeat_interval=1.0,
            broker_commit_interval=1.0,
            consumer_auto_offset_reset="earliest",
            # aiokafka keeps each partition's last fetched chunk until its next fetch: at 16 MB a
            # worker held ~50 MB of already-processed input (bench scenario 4). Larger messages
            # still arrive (the broker returns a first batch whatever its size): the 10 MB
            # message of tests/test_hostile.py goes to the DLQ.
            consumer_max_fetch_size=2 * 1024 * 1024,
            producer_max_request_size=16 * 1024 * 1024,
            table_cleanup_interval=3600.0,
            # faust's default of one standby made each of two workers replay the other's join
            # changelog (one or two records per event) as it was written (bench scenario 3)
            table_standby_replicas=s.standby_replicas,
            web_enabled=True,
            web_bind=s.web_host,
            web_host=s.web_host,
            web_port=s.web_port,
            web_in_thread=False,
            # Tansu reports a partition's high watermark as the last *batch*'s base offset + 1,
            # so a RocksDB table's persisted offset can exceed it; the check would refuse to start.
            recovery_consistency_check=False,
            logging_config=None,
            **aiokafka_security(s.kafka),
        )
        t = self.topics
        # The repartition topic carries records that arrived on the wrong partition, forwarded
        # to the partition that owns their prediction id (``PartitionProcessor._reroute``).
        inputs = app.topic(t["predictions"], t["labels"], t["repartition"])
        self.partials_topic = app.topic(t["partials"], partitions=s.partitions)
        options = ROCKSDB_OPTIONS if s.store.startswith("rocksdb") else None
        self.join_table = app.Table("join", default=None, partitions=s.partitions, key_type=bytes, value_type=bytes,
                                    options=options)
        self.merge_table = app.Table("merge", default=None, partitions=s.partitions, key_type=bytes, value_type=bytes,
                                     options=options)
        app.agent(inputs, name="join")(self._join_agent)
        app.task(self._join_input)
        app.agent(self.partials_topic, name="merge")(self._merge_agent)
        app.timer(TICK_SECONDS)(self._tick)
        add_views(app, self)
        app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]
        app.on_rebalance_complete.connect(self._on_tables_ready)  # type: ignore[arg-type]
        return app

    # ---- join stage --------------------------------------------------------------------------
    def _processor(self, partition: int) -> PartitionProcessor:
        proc = self.processors.get(partition)
        if proc is not None:
            return proc
        s = self.settings
        table = self.join_table
        with faust_compat.partition_context(partition):
            proc = PartitionProcessor(
                partition, self.models, window_seconds=s.window_seconds, allowed_lateness=s.allowed_lateness,
                max_message_bytes=s.max_message_bytes, max_pending=max(1, s.max_pending // s.partitions),
                max_series=s.max_series, max_models=s.max_models, max_segment_values=s.max_segment_values,
                store_get=faust_compat.raw_store(table).get, references=self.references,
                topics=self._input_kinds_by_name(inverse=True), partitions=s.partitions, stages=self.stages,
            )
            proc.load_state(table.data.get(proc.state_key()))
            proc.rebuild_index((k, v) for k, v in table.data.items() if k[:2] in (b"p:", b"l:") and v is not None)
            # Deletes listed by the last partition record that the changelog may have lost.
            lost = [(key, None) for key in proc.last_deleted if table.data.get(key) is not None]
            if lost:
                self._join_io.write_table(partition, lost)
        self.processors[partition] = proc
        log.info("partition processor ready", extra={"partition": partition, "pending": proc.pending_count,
                                                     "open_windows": len(proc.windows), "outbox": len(proc.outbox)})
        return proc

    def changelog(self) -> ChangelogWriter:
        if self._changelog is None:
            topic = self.join_table.changelog_topic.get_topic_name()
            self._changelog = ChangelogWriter(self.settings.bootstrap, topic, self.settings.kafka)
        return self._changelog

    def outputs(self) -> OutputWriter:
        """The worker's output records (every topic but the tables' changelogs), via librdkafka."""
        if self._outputs is None:
            self._outputs = OutputWriter(self.settings.bootstrap, self.settings.kafka)
        return self._outputs

    def merge_changelog(self) -> ChangelogWriter:
        if self._merge_changelog is None:
            topic = self.merge_table.changelog_topic.get_topic_name()
            self._merge_changelog = ChangelogWriter(self.settings.bootstrap, topic, self.settings.kafka)
        return self._merge_changelog

    def close(self, timeout: float = 10.0) -> None:
        """At shutdown, once faust has stopped: deliver what the writers still queue, outputs
        before changelogs as in the apply order (``commit``). A changelog record is only ever
        queued after its batch's outputs were delivered, so a failed output flush (logged) does
        not hold the changelogs back; what is not delivered is processed again after a restart.
        """
        deadline = time.monotonic() + timeout  # for all of them: a broker that is gone costs it once
        writers = (self._outputs, self._changelog, self._merge_changelog)
        # Released, so their librdkafka producers go now, not at interpreter exit: a producer
        # left alive keeps reconnecting (and logging) once the broker is gone.
        self._outputs = self._changelog = self._merge_changelog = None
        for writer in writers:
            if writer is None:
                continue
            try:
                writer.close(max(deadline - time.monotonic(), 0.0))
            except Exception as exc:  # the broker is gone: the restart replays
                log.warning("records not delivered at shutdown: %s", exc)

    def _join_store(self) -> Any:
        """``_raw_store`` of the join table, looked up once (it is called per applied batch)."""
        if self._join_raw is None:
            self._join_raw = faust_compat.raw_store(self.join_table)
        return self._join_raw

    async def _join_agent(self, stream: Any) -> None:
        """Holds faust's subscription to the inputs (its assignor co-partitions the join table with
        them); their records reach ``_join_input`` whole, never this stream (``divert_fetched``)."""
        async for event in stream:  # pragma: no cover - nothing is delivered here
            log.error("input record reached faust's stream", extra={"topic": event.message.topic})

    async def _join_input(self) -> None:
        """The join stage's loop: fetches of input records, processed and applied whole."""
        while True:
            generation, records = await self.join_input.next_batch()
            if not (self._tables_ready and faust_compat.accepting(self.app, generation)):
                # A rebalance since the fetch: faust seeks to the committed offsets, and the
                # state's applied offsets decide what is read again (``_resume_from_state``).
                self.metrics.count({"fetches_dropped_by_rebalance": 1})
                continue
            with halt_on_error("join stage"):
                faust_compat.mark_processed(self.app, records)
                await self._join_batch(records)

    async def _join_batch(self, records: faust_compat.FetchedRecords) -> None:
        self.stages.start()
        kinds = self._input_kinds_by_name()
        by_partition: dict[int, list[Message]] = {}
        for tp in sorted(records, key=lambda tp: (tp.partition, INPUT_ORDER[kinds[tp.topic]])):
            kind, recs = kinds[tp.topic], records[tp]
            self.metrics.events_in.labels(topic=tp.topic).inc(len(recs))
            by_partition.setdefault(tp.partition, []).extend(
                [Message(kind, tp.topic, tp.partition, r.offset, r.key, r.value) for r in recs])
        self.stages.lap("read")
        # Every partition of the batch is processed, then applied together: one delivery wait
        # per stage for the whole batch, not one per partition (each is a broker round trip).
        async with contextlib.AsyncExitStack() as locks:
            for partition in sorted(by_partition):
                await locks.enter_async_context(self._partition_lock(partition))
            steps: list[tuple[PartitionProcessor, BatchResult]] = []
            held = 0  # outcomes and table writes processed but not applied yet
            for partition in sorted(by_partition):
                proc = self._processor(partition)
                msgs = by_partition[partition]
                for topic, kind in kinds.items():
                    msgs = await self._with_skipped(topic, partition, proc.applied[kind] + 1, msgs,
                                                    functools.partial(Message, kind, topic, partition))
                for j, chunk in enumerate(split_by_size(msgs, STEP_LABEL_BYTES, _label_bytes)):
                    # Applied first: the processor reads what its previous step wrote from the
                    # table; and a batch of large envelopes must bound what waits in memory.
                    if steps and (j or held >= APPLY_AT):
                        await self._apply_joins(steps)
                        steps, held = [], 0
                    with faust_compat.partition_context(partition):
                        res = proc.process(chunk)
                    steps.append((proc, res))
                    held += len(res.outcomes) + len(res.sets) + len(res.deletes)
            if steps:
                await self._apply_joins(steps)

    async def _with_skipped(self, topic: str, partition: int, expected: int, messages: list[Any],
                            make: Callable[[int, bytes | None, bytes | None], Any]) -> list[Any]:
        """``messages`` with the records faust's consumer skipped read again (``recovery``)."""

        async def read_missing(first: int, end: int) -> list[Any]:
            loop = asyncio.get_running_loop()
            records = await loop.run_in_executor(None, read_range, self.settings.bootstrap, topic, partition,
                                                 first, end, self.settings.kafka)
            return [make(*rec) for rec in records]

        out, reread = await with_skipped(messages, topic, expected, read_missing)
        if reread:
            self.metrics.count({"skipped_records_reread": reread})
        return out

    def _partition_lock(self, partition: int) -> asyncio.Lock:
        """Serialises a partition's (process, apply) steps between the join agent and the timer.

        ``_apply_join`` awaits output delivery before it writes the partition record; a timer
        step (idle close, outbox re-send) run in that gap would write a newer record that the
        agent's older one then overwrites, and a restart would reuse partial ids.
        """
        lock = self._locks.get(partition)
        if lock is None:
            lock = self._locks[partition] = asyncio.Lock()
        return lock

    async def _apply_join(self, proc: PartitionProcessor, res: BatchResult) -> None:
        await self._apply_joins([(proc, res)])

    def _input_kinds_by_name(self, inverse: bool = False) -> dict[str, str]:
        """Input topic name -> the message kind the join stage reads it as (or the inverse)."""
        kinds = {self.topics["predictions"]: "prediction", self.topics["labels"]: "label",
                 self.topics["repartition"]: "forwarded"}
        return {v: k for k, v in kinds.items()} if inverse else kinds

    async def _apply_joins(self, steps: list[tuple[PartitionProcessor, BatchResult]]) -> None:
        """Apply processed batches in the one order that makes them exactly-once (``commit``)."""
        self.stages.start()
        await apply_join_batches(steps, self._join_io)
        self.stages.lap("apply")  # outputs, changelog, partials: includes what ran during its awaits
        for proc, res in steps:
            self.join_input.applied(proc.partition, proc.applied)  # 4. offsets, committed by the timer
            self.metrics.count(res.counters)
            p = str(proc.partition)
            self.metrics.pending.labels(partition=p).set(proc.pending_count)
            self.metrics.open_windows.labels(partition=p).set(len(proc.windows))

    # ---- merge stage -------------------------------------------------------------------------
    def _merger(self, partition: int) -> WindowMerger:
        merger = self.mergers.get(partition)
        if merger is not None:
            return merger
        s = self.settings
        merger = WindowMerger(self.models, window_seconds=s.window_seconds, flush_interval=s.flush_interval,
                              references=self.references, source_topic=self.topics["partials"],
                              input_partitions=s.partitions, load=self.merge_table.data.get)
        with faust_compat.partition_context(partition):
            for k, v in self.merge_table.data.items():
                merger.restore_record(bytes(k), v, partition)
        self.mergers[partition] = merger
        return merger

    async def _merge_agent(self, stream: Any) -> None:
        async for events in stream.take_events(1000, within=0.05):
            with halt_on_error("merge agent"):
                self.stages.start()
                await self._merge_batch(events)
                self.stages.lap("merge")

    async def _merge_batch(self, events: Any) -> None:
        by_partition: dict[int, list[Any]] = {}
        for ev in events:
            by_partition.setdefault(ev.message.partition, []).append(ev.message)
        now = time.time()
        for partition, messages in by_partition.items():
            async with self._merge_lock(partition):
                merger = self._merger(partition)
                out = MergeOutput()
                topic = self.topics["partials"]
                messages = await self._with_skipped(topic, partition, merger.next_offset, messages,
                                                    functools.partial(Record, topic))
                for m in messages:
                    if m.offset < merger.next_offset:  # applied before a restart or rewind
                        continue
                    try:
                        merger.on_partial(orjson.loads(m.value), now, out)
                    except Exception:  # our own topic; a bad record is logged, never fatal
                        log.exception("bad partial record", extra={"partition": partition})
                merger.next_offset = max(merger.next_offset, messages[-1].offset + 1)
                merger.tick(now, out)
                await self._apply_merge(partition, merger, out, offsets=True)

    def _merge_lock(self, partition: int) -> asyncio.Lock:
        """What ``_partition_lock`` is to the join stage, for a partials partition: the merge
        agent and the timer's merge step interleave at ``_apply_merge``'s awaits, and a step still
        applying when its partition is revoked would write state the new owner never recovers."""
        lock = self._merge_locks.get(partition)
        if lock is None:
            lock = self._merge_locks[partition] = asyncio.Lock()
        return lock

    async def _apply_merge(self, partition: int, merger: WindowMerger, out: MergeOutput, *,
                           offsets: bool = False) -> None:
        """Outputs delivered, then the state that records them (``commit.apply_merge``)."""
        await apply_merge(partition, merger, out, self._merge_io, offsets=offsets)
        self.metrics.windows_emitted.inc(len(out.metrics))
        for a in out.alerts:
            self.metrics.alerts.labels(status=a["status"], severity=a["severity"], kind=a["kind"]).inc()
            log.warning("alert %s %s %s", a["status"], a["severity"], a["message"],
                        extra={"alert_id": a["alert_id"], "model_id": a["model_id"], "rule": a["rule"]})

    # ---- references -----------------------------------------------------------------------------
    def _apply_published_baselines(self) -> None:
        """Install profile versions newer than this worker's, as the baselines topic brings them."""
        for profile in self.baselines.take_new() if self.baselines is not None else []:
            have = self.references.get(profile.model_id)
            if have is None or profile.version > have.version:
                log.info("reference profile applied from the baselines topic",
                         extra={"model_id": profile.model_id, "version": profile.version,
                                "features": len(profile.features)})
                self.refs.install(profile)

    def _install_reference(self, ref: Profile) -> None:
        """A profile saved, found or received: this worker's processors and mergers use it now."""
        for proc in self.processors.values():
            proc.references[ref.model_id] = ref
        for merger in self.mergers.values():
            merger.install_reference(ref)

    # ---- timers, rebalance, views ------------------------------------------------------------
    async def _tick(self) -> None:
        with halt_on_error("timer"):
            await self._tick_step()

    async def _tick_step(self) -> None:
        # Processors and mergers load their state from the tables: never before recovery ends.
        if self.app.rebalancing or self.app.in_recovery or not self._tables_ready:
            return
        now = time.time()
        self._ensure_assigned()
        self.refs.refresh(now)
        self._apply_published_baselines()
        for proc in list(self.processors.values()):
            lock = self._partition_lock(proc.partition)
            if lock.locked():  # the join agent is applying a batch: its own record comes first
                continue
            async with lock:
                if self.processors.get(proc.partition) is not proc or self.app.rebalancing:
                    continue  # revoked (or being revoked) while this tick waited
                # A partition that has read nothing since it was (re)assigned is not idle yet: the
                # consumer may still be catching up, and closing recovered windows early would
                # turn the predictions that follow into late ones.
                idle_after = self.settings.idle_close_seconds * (1 if proc.input_seen else 3)
                # Idle only when caught up: while records of this partition wait in Kafka, its
                # windows close by event time alone (a backlog, a pause, a slow sink).
                caught_up = self._caught_up(proc.partition)
                idle = now - proc.last_activity >= idle_after and caught_up
                if idle and (proc.windows or proc.late):
                    with faust_compat.partition_context(proc.partition):
                        res = proc.close_idle()
                    await self._apply_join(proc, res)
                elif caught_up and proc.seen_at and now - self._heartbeats.get(proc.partition, 0.0) >= HEARTBEAT_SECONDS:
                    self._heartbeats[proc.partition] = now
                    with faust_compat.partition_context(proc.partition):
                        res = proc.heartbeat()
                    await self._apply_join(proc, res)
                elif proc.outbox:  # recovered undelivered partials: the merge stage deduplicates by id
                    with faust_compat.partition_context(proc.partition):
                        res = proc.checkpoint()
                    await self._apply_join(proc, res)
        for partition, merger in list(self.mergers.items()):
            lock = self._merge_lock(partition)
            if lock.locked():  # the merge agent is applying a batch; it ticks the merger itself
                continue
            async with lock:
                if self.mergers.get(partition) is not merger or self.app.rebalancing:
                    continue
                out = MergeOutput()
                merger.tick(now, out)
                if out.metrics or out.alerts or out.dropped_windows or out.comparisons or out.changed_builders:
                    await self._apply_merge(partition, merger, out)
        await self.join_input.commit_due(self.app.consumer, now)
        self._update_gauges()
        self._releaser.maybe_release(now)

    def _caught_up(self, partition: int) -> bool:
        """Whether this worker has applied every record of ``partition`` of its input topics.

        Judged on the processor's applied offsets (its own state), not on faust's read
        position: after a restart faust may hold no position for a partition it has nothing
        new to read from (seen on Tansu), which would keep the partition from ever being idle.
        """
        consumer = self.app.consumer
        proc = self.processors.get(partition)
        if proc is None:
            return False
        for topic, kind in self._input_kinds_by_name().items():
            try:
                high = consumer.highwater(TP(topic, partition))
            except Exception:  # no fetch answered yet for this partition
                return False
            # The high watermark is the offset after the last record (on Tansu, after the first
            # record of the last batch: never past the end).
            if high is not None and high > 0 and proc.applied[kind] < high - 1:
                return False
        return True

    def _ensure_assigned(self) -> None:
        """Create processors for assigned partitions that have seen no message yet, so
        their recovered windows still close and their outboxes are re-sent."""
        try:
            assignment = self.app.consumer.assignment()
        except Exception:
            return
        for tp in assignment:
            if tp.topic == self.topics["predictions"] and tp.partition not in self.processors:
                self._processor(tp.partition)
            elif tp.topic == self.topics["partials"] and tp.partition not in self.mergers:
                self._merger(tp.partition)

    async def _on_revoked(self, sender: Any, revoked: Any, **kwargs: Any) -> None:
        """faust awaits this before the partitions go to another worker. A timer step still
        applying a revoked partition would write its partition record and send partials after
        the new owner recovered an older record, which then reuses their ids: wait for it."""
        self._tables_ready = False
        for tp in revoked:
            if tp.topic == self.topics["predictions"]:
                async with self._partition_lock(tp.partition):
                    self.processors.pop(tp.partition, None)
            elif tp.topic == self.topics["partials"]:
                async with self._merge_lock(tp.partition):
                    self.mergers.pop(tp.partition, None)

    async def _on_tables_ready(self, sender: Any, **kwargs: Any) -> None:
        """faust sends ``on_rebalance_complete`` once the assignment's tables are recovered,
        right before it seeks the input to the committed offsets and resumes the streams."""
        self._tables_ready = True

    async def _on_assigned(self, sender: Any, assigned: Any, **kwargs: Any) -> None:
        """Make the consumer's seek to committed offsets (after table recovery) end at our state."""

        async def after_seek() -> None:
            # faust also seeks when the fetcher polls while the flow is paused, which it is
            # during recovery: state read from a table still being recovered would be empty
            # (a partition taken over without a standby replica started from nothing).
            if self._tables_ready:
                with halt_on_error("resuming from the recovered state"):
                    await self._resume_from_state()

        faust_compat.after_seek_to_committed(self.app.consumer, after_seek)
        inputs = frozenset(self._input_kinds_by_name())
        faust_compat.divert_fetched(self.app.consumer, inputs, self.join_input.put)

    async def _resume_from_state(self) -> None:
        """Rewind each input partition whose committed offset is past what our state has applied:
        the state's offset records say what its effects include (``driftline.streams.recovery``)."""
        consumer = self.app.consumer
        kinds = self._input_kinds_by_name()

        def resume_at(tp: Any) -> int | None:
            if tp.topic in kinds:
                return self._processor(tp.partition).applied[kinds[tp.topic]] + 1
            if tp.topic == self.topics["partials"]:
                return self._merger(tp.partition).next_offset
            return None

        rewinds = plan_rewinds(consumer.assignment(), resume_at,
                               lambda tp: faust_compat.read_position(consumer, tp))  # set by the seek to committed
        if rewinds:
            await consumer.seek_wait(rewinds)
            self.metrics.count({"offset_rewinds": len(rewinds)})

    def _update_gauges(self) -> None:
        with contextlib.suppress(Exception):
            consumer = self.app.consumer
            kinds = self._input_kinds_by_name()
            for tp in consumer.assignment():
                hw = consumer.highwater(tp)
                proc = self.processors.get(tp.partition) if tp.topic in kinds else None
                pos = proc.applied[kinds[tp.topic]] if proc is not None else faust_compat.read_position(consumer, tp)
                if hw is not None and pos is not None:
                    self.metrics.lag.labels(topic=tp.topic, partition=str(tp.partition)).set(max(hw - pos - 1, 0))
        if self.sink is not None:
            self.metrics.sink_stats(self.sink.stats())

    def health(self) -> dict[str, Any]:
        sink = self.sink.stats() if self.sink is not None else None
        healthy = sink is None or not sink.get("last_error") or not sink.get("backpressured")
        return {
            "status": "ok" if healthy else "degraded",
            "uptime_s": round(time.time() - self.metrics.started, 1),
            "rebalancing": bool(self.app.rebalancing),
            "partitions": sorted(self.processors),
            "merge_partitions": sorted(self.mergers),
            "pending_predictions": sum(p.pending_count for p in self.processors.values()),
            "open_windows": sum(len(p.windows) for p in self.processors.values()),
            "counters": self.metrics.counters,
            "stage_cpu_s": {k: round(v, 4) for k, v in self.stages.seconds.items()},
            "sink": sink,
        }
