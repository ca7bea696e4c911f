"""The per-partition processor: join, window partials, detectors. Pure logic, no I/O.

One ``PartitionProcessor`` owns one partition of the co-partitioned predictions and
labels topics. The faust agent (``driftline.streams.app``) hands it batches of raw messages and
applies what it returns: table writes in a fixed order, then output messages.

Exactly-once effect (at-least-once input)
-----------------------------------------
All writes of a partition go to one changelog partition, in this order per batch:
(1) new waiting records (``p:``/``l:`` keys), (2) the partition record ``s:<p>``
holding the applied offsets, open windows, detectors and the outbox, (3) deletes of
joined or expired records (also listed in the partition record). A crash leaves a
prefix of that sequence. On restart, messages at or below the applied offsets are
skipped; a replayed message finds its own waiting records (same source offset: not a
duplicate) and re-joins them because their deletes come after the partition record;
deletes the partition record lists but the changelog lost are redone on recovery.

Detector order
--------------
A detector instance runs per (model, version, partition) and sees that partition's
outcomes in join order: label-message offset order, then event order inside an
envelope (or prediction order when the label arrived first). That order is the
partition's log, so it is the same for a given input on every run and every worker.

Beyond accuracy (off unless configured)
---------------------------------------
A model with ``data_drift`` set and a reference profile in ``references`` gets a window
profile (``Profile.new_window_like(reference)``) in its whole-model partials, fed with the
features and prediction of each on-time prediction; a binary model with ``cbpe: true``
gets a ``CBPEAccumulator`` in every partial, fed with its scores and predicted labels.
A model with ``data_drift: {baseline: first_hours}`` and no reference yet gets an unbinned
profile (``Profile(infer=True)``) instead: the merge stage builds the reference from those.
A binary model with ``fairness`` gets, in its whole-model partials, one ``GroupRates`` per
protected segment key, fed with each joined outcome (group = the event's value of that key).
All live in the partials, so they follow the same exactly-once path as the counts.

Ranking models: a joined ranking prediction feeds its list and feedback to the window's
``RankingAccumulator`` (the task's accumulator, K from the models file); no drift detector
runs on them (docs/beyond-accuracy.md, "Ranking and recommendation").
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from driftline.detectors.cbpe import CBPEAccumulator
from driftline.detectors.drift import DetectorBank
from driftline.detectors.fairness import GroupRates
from driftline.detectors.policy import AlarmPolicy
from driftline.detectors.profile import Profile
from driftline.schemas.codec import decode_message
from driftline.schemas.events import Label, Prediction, Rejection, binary_label
from driftline.schemas.messages import (
    make_dead_letter,
    make_outcome,
)
from driftline.streams.detectorfeed import DetectorFeed
from driftline.streams.eventtime import EventClock
from driftline.streams.models import ModelConfig, ModelsConfig
from driftline.streams.pending import (
    ExpiryIndex,
    decode_label,
    decode_prediction,
    encode_label,
    encode_prediction,
)
from driftline.streams.reroute import owners, reason, unwrap_forward, wrap_forward
from driftline.streams.series import SeriesTables
from driftline.streams.statecheck import check_topics
from driftline.streams.windows import SeriesKey, WindowPartial, window_start

EXPIRE_PER_BATCH = 5000  # bounds the delete list a partition record carries
RECENT_JOINED = 50_000  # ids remembered to tell a second label from an unknown one
MIN_EXPIRY_COMPACT = 100_000  # the expiry index is compacted once it holds this many more entries than records


@dataclass
class Message:
    kind: str  # "prediction" | "label" | "forwarded" (from the repartition topic)
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    # A forwarded record's original (topic, partition, offset): where its dead letters point.
    origin: tuple[str, int, int] | None = None


@dataclass
class BatchResult:
    sets: dict[bytes, bytes] = field(default_factory=dict)
    state: bytes = b""
    deletes: list[bytes] = field(default_factory=list)
    dlq: list[tuple[bytes | None, dict[str, Any]]] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    partials: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    # Misrouted input for the repartition topic: (target partition, key, wrapped value).
    forwards: list[tuple[int, bytes | None, bytes]] = field(default_factory=list)


class PartitionProcessor:
    """Join, windows and detectors of one partition (see the module docstring)."""

    def __init__(
        self,
        partition: int,
        models: ModelsConfig,
        *,
        window_seconds: float = 60.0,
        allowed_lateness: float = 30.0,
        max_message_bytes: int = 1_048_576,
        max_pending: int = 5_000_000,
        max_series: int = 10_000,
        max_models: int = 1_000,
        max_segment_values: int = 500,
        store_get: Callable[[bytes], bytes | None],
        clock: Callable[[], float] = time.time,
        references: dict[str, Profile] | None = None,
        topics: Mapping[str, str] | None = None,
        partitions: int | None = None,
    ) -> None:
        self.partition = partition
        # The input topics' partition count: each record's partition is checked against
        # murmur2(prediction_id) for it, and a misrouted record is forwarded (None: no check).
        self.partitions = partitions
        # kind -> the topic its applied offsets are of; recorded so that another deployment's
        # state is refused instead of resumed (``driftline.streams.statecheck``).
        self.topics = dict(topics) if topics is not None else None
        self.models = models
        self.window_seconds = window_seconds
        self.allowed_lateness = allowed_lateness
        self.max_message_bytes = max_message_bytes
        self.max_pending = max_pending
        self.max_models = max_models  # models with a remembered task; (model, version) detector banks
        self._get = store_get
        # Waiting records start with their partition (``driftline.streams.pending``). One worker's table
        # holds several partitions' records in one store: this partition reads only its own, as
        # its writes and deletes go to its own changelog partition.
        self._own = b"[%d," % partition
        self.clock = clock
        self.references = dict(references or {})  # model_id -> reference profile (data drift)
        self.applied: dict[str, int] = {"prediction": -1, "label": -1, "forwarded": -1}
        # The last origin offset applied per "<kind>:<origin partition>" of forwarded records: a
        # record forwarded again after its sender's crash is applied once.
        self.forward_applied: dict[str, int] = {}
        self.eventtime = EventClock(window_seconds, allowed_lateness, clock)
        # The last window boundary reported per (model, version) (not persisted: a repeat after
        # a restart is harmless, the merge stage keeps the furthest).
        self._progress_sent: dict[tuple[str, str], float] = {}
        # Wall-clock time of the last prediction read per "model\x1fversion": the heartbeats
        # that let the merge stage tell a silent model (``heartbeat``).
        self.seen_at: dict[str, float] = {}
        self.tables = SeriesTables(models, max_series=max_series, max_models=max_models,
                                   max_segment_values=max_segment_values, count=self._count)
        self._partial = self.tables.partial
        self._series = self.tables.series
        self.detectors = DetectorFeed(models, partition, window_seconds, max_models, self._count)
        self.tasks: dict[str, str] = {}
        self.outbox: list[dict[str, Any]] = []
        self.seq = 0
        self.last_deleted: list[bytes] = []
        self.expiry = ExpiryIndex()
        self.pending_count = 0
        self._compact_at = MIN_EXPIRY_COMPACT
        self.recent_joined: OrderedDict[str, None] = OrderedDict()
        self.last_activity = clock()
        self.input_seen = False  # any message read since this processor was created

    # ---- state -------------------------------------------------------------------------
    def state_key(self) -> bytes:
        return b"s:%d" % self.partition

    def dump_state(self) -> bytes:
        return orjson.dumps(
            {
                "topics": self.topics,
                "applied": self.applied,
                "forward_applied": self.forward_applied,
                "watermarks": self.eventtime.to_state(),
                **self.tables.to_state(),
                **self.detectors.to_state(),
                "tasks": self.tasks,
                "seen_at": self.seen_at,
                "outbox": self.outbox,
                "seq": self.seq,
                "last_deleted": [k.decode() for k in self.last_deleted],
            }
        )

    def load_state(self, raw: bytes | None) -> None:
        if not raw:
            return
        d = orjson.loads(raw)
        if self.topics is not None:
            check_topics(d.get("topics"), self.topics, f"join partition {self.partition}")
        self.applied = {"forwarded": -1, **d["applied"]}
        self.forward_applied = d.get("forward_applied", {})
        self.eventtime.load_state(d.get("watermarks"))
        self.tables.load_state(d)
        self.detectors.load_state(d)
        self.tasks = d["tasks"]
        self.seen_at = d.get("seen_at", {})
        self.outbox = d["outbox"]
        self.seq = d["seq"]
        self.last_deleted = [k.encode() for k in d["last_deleted"]]

    def rebuild_index(self, records: Iterable[tuple[bytes, bytes]]) -> None:
        """Rebuild the expiry index from this partition's waiting records after recovery.

        ``records`` should yield the store's own key objects: the index keeps them, not copies.
        """
        self.expiry.clear()
        self.pending_count = 0
        for key, raw in records:
            if not raw.startswith(self._own):
                continue
            pid = key[2:].decode()
            waiting = key.startswith(b"p:")
            rec = decode_prediction(raw, pid) if waiting else decode_label(raw, pid)
            self.expiry.add(rec.expires_at, key)
            self.pending_count += waiting
        self._compact_at = len(self.expiry) + MIN_EXPIRY_COMPACT

    # ---- batch processing ----------------------------------------------------------------
    def process(self, messages: list[Message]) -> BatchResult:
        """Apply a batch of this partition's messages (in log order per topic)."""
        res = BatchResult()
        self._res = res
        self._overlay: dict[bytes, bytes | None] = {}
        self._joins: dict[tuple[str, str], list[tuple[Prediction, Label, int]]] = {}
        self._pbuf: dict[WindowPartial, tuple[list[float], list[float]]] = {}
        self._obuf: dict[WindowPartial, tuple[list[Any], list[Any], list[float], list[float]]] = {}
        self._fbuf: dict[WindowPartial, tuple[list[dict[str, Any]], list[Any]]] = {}
        self._cbuf: dict[WindowPartial, tuple[list[float], list[int]]] = {}
        self._gbuf: dict[WindowPartial, tuple[tuple[str, ...], list[dict[str, str]], list[int], list[int]]] = {}
        self.last_activity = self.clock()
        self.input_seen = True
        batch = [d for msg in messages if (d := self._decode(msg)) is not None]
        owners = self._owners(batch)
        at = 0
        for msg, events, forwarded in batch:
            mine = owners[at : at + len(events)] if owners is not None else None
            at += len(events)
            if mine is not None and not (mine == self.partition).all():
                events = self._reroute(msg, events, mine, forwarded)
            for ev in events:
                try:
                    if msg.kind == "prediction":
                        self._on_prediction(msg, ev)  # type: ignore[arg-type]
                    else:
                        self._on_label(msg, ev)  # type: ignore[arg-type]
                except Exception as exc:  # a poison event must not stop the partition
                    self._dead_letter(msg, Rejection("processing_error", "", f"{type(exc).__name__}: {exc}"), ev._asdict())
        self._flush_buffers()
        self._run_detectors()
        self._expire()
        self._compact_expiry()
        self._close_windows(force=False)
        return self._finish()

    def _decode(self, msg: Message) -> tuple[Message, list[Any], bool] | None:
        """A message's events (its rejections go to the dead-letter topic), or None to skip it.

        A forwarded record comes back as its original message, with this partition's own
        position on the repartition topic as its identity (``-1 - offset``: waiting records
        are tagged by partition and offset, and must read as this partition's).
        """
        if msg.offset <= self.applied[msg.kind]:
            self._count("replayed_skipped")
            return None
        self.applied[msg.kind] = msg.offset
        self._count(f"messages_{msg.kind}")
        if msg.kind == "forwarded":
            origin = unwrap_forward(msg.value)
            if origin is None:  # only workers write the internal topic: nothing to dead-letter
                self._count("forwarded_malformed")
                return None
            kind, from_partition, from_offset, value = origin
            source = f"{kind}:{from_partition}"
            if from_offset <= self.forward_applied.get(source, -1):
                self._count("forwarded_duplicates")
                return None
            self.forward_applied[source] = from_offset
            events, _ = decode_message(value, kind, max_bytes=self.max_message_bytes)  # type: ignore[arg-type]
            origin_topic = (self.topics or {}).get(kind, msg.topic)
            return (Message(kind, msg.topic, self.partition, -1 - msg.offset, msg.key, value,
                            (origin_topic, from_partition, from_offset)), events, True)
        events, rejections = decode_message(msg.value, msg.kind, max_bytes=self.max_message_bytes)  # type: ignore[arg-type]
        for rej, raw in rejections:
            self._dead_letter(msg, rej, raw)
        return msg, events, False

    def _owners(self, batch: list[tuple[Message, list[Any], bool]]) -> np.ndarray | None:
        """The partition each event of the batch belongs to (``driftline.streams.reroute``)."""
        if self.partitions is None:
            return None
        return owners([ev for _, events, _ in batch for ev in events], self.partitions)

    def _reroute(self, msg: Message, events: list[Any], owners: np.ndarray, forwarded: bool) -> list[Any]:
        """Forward a message holding other partitions' events to them; return this partition's.

        The whole message goes to each partition that owns one of its events, through the
        repartition topic; each keeps its own events. Forwards are a batch effect, sent before
        the partition record marks the message applied (``driftline.streams.app``).
        """
        own = owners == self.partition
        if forwarded:  # a message forwarded to several partitions: the others' events are theirs
            return [ev for ev, keep in zip(events, own, strict=True) if keep]
        self._count(f"rerouted_{msg.kind}s_{reason(msg.key, len(events))}", int((~own).sum()))
        wrapped = wrap_forward(msg.kind, msg.partition, msg.offset, msg.value or b"")
        for target in sorted(set(owners[~own].tolist())):
            self._res.forwards.append((int(target), msg.key, wrapped))
        return [ev for ev, keep in zip(events, own, strict=True) if keep]

    def _flush_buffers(self) -> None:
        """Apply the batch's buffered window updates: one numpy call per series, not per
        event (a sketch or histogram update costs ~30 µs whatever its size)."""
        for w, (lat, sc) in self._pbuf.items():
            w.add_predictions(np.asarray(lat, dtype=float), np.asarray(sc, dtype=float))
        for w, (yt, yp, sc, delay) in self._obuf.items():
            d = np.asarray(delay, dtype=float)
            if w.task == "ranking":
                w.add_ranking(yp, yt, d)
            elif w.task == "multiclass":
                w.add_outcomes(yt, yp, None, d)
            elif w.task == "binary":
                w.add_outcomes(np.asarray(yt, dtype=np.int64), np.asarray(yp, dtype=np.int64),
                               np.asarray(sc, dtype=float), d)
            else:
                w.add_outcomes(np.asarray(yt, dtype=float), np.asarray(yp, dtype=float), None, d)
        for w, (feats, preds) in self._fbuf.items():
            if w.profile is not None:
                w.profile.update_many(feats, preds)
        for w, (sc, yp) in self._cbuf.items():
            if w.cbpe is not None:
                w.cbpe.update_many(np.asarray(sc, dtype=float), np.asarray(yp, dtype=np.int64))
        for w, (keys, segs, yt_g, yp_g) in self._gbuf.items():
            if w.fairness is None:
                w.fairness = {}
            for k in keys:
                rates = w.fairness.get(k)
                if rates is None:
                    rates = w.fairness[k] = GroupRates()
                rates.update_many([s.get(k) for s in segs], yt_g, yp_g)
        self._pbuf = {}
        self._obuf = {}
        self._fbuf = {}
        self._cbuf = {}
        self._gbuf = {}

    def close_idle(self) -> BatchResult:
        """Close every open window (the partition has been idle); emit late deltas."""
        self._res = BatchResult()
        self._overlay = {}
        self._joins = {}
        self._pbuf, self._obuf, self._fbuf, self._cbuf, self._gbuf = {}, {}, {}, {}, {}
        self._run_detectors(force=True)
        self._close_windows(force=True)
        return self._finish()

    def checkpoint(self) -> BatchResult:
        """A partition record with no new input (to re-send a recovered outbox)."""
        self._res = BatchResult()
        self._overlay = {}
        self._joins = {}
        self._pbuf, self._obuf, self._fbuf, self._cbuf, self._gbuf = {}, {}, {}, {}, {}
        return self._finish()

    def heartbeat(self) -> BatchResult:
        """Tell the merge stage when this partition last read each model's predictions.

        Sent only while the partition is caught up (the app's timer decides): a partition with
        records waiting sends none, so the merge stage never judges silence on a backlog.
        """
        now = self.clock()
        for key, seen in self.seen_at.items():
            model, _, version = key.partition("\x1f")
            self.seq += 1
            self.outbox.append({"type": "heartbeat", "pid": f"{self.partition}:{self.seq}", "partition": self.partition,
                                "model_id": model, "model_version": version, "seen_at": seen, "at": now})
        return self.checkpoint()

    def outbox_delivered(self) -> None:
        """The app confirmed delivery of the outbox; the next partition record drops it."""
        self.outbox = []

    # ---- internals -------------------------------------------------------------------------
    def _finish(self) -> BatchResult:
        res = self._res
        for key, value in self._overlay.items():
            if value is None:
                res.deletes.append(key)
            else:
                res.sets[key] = value
        if self.late:
            for sk, w in self.late.items():
                self._emit_partial("late", sk, w)
            self.late = {}
        self.last_deleted = res.deletes
        res.partials = list(self.outbox)
        res.state = self.dump_state()
        return res

    @property
    def windows(self) -> dict[SeriesKey, WindowPartial]:
        """Open windows (``SeriesTables``)."""
        return self.tables.windows

    @property
    def late(self) -> dict[SeriesKey, WindowPartial]:
        """Closed windows this batch revises."""
        return self.tables.late

    @late.setter
    def late(self, table: dict[SeriesKey, WindowPartial]) -> None:
        self.tables.late = table

    @property
    def banks(self) -> dict[tuple[str, str], DetectorBank]:
        return self.detectors.banks

    @property
    def policies(self) -> dict[tuple[str, str], AlarmPolicy]:
        return self.detectors.policies

    def _count(self, name: str, n: int = 1) -> None:
        c = self._res.counters
        c[name] = c.get(name, 0) + n

    def _lookup(self, key: bytes) -> bytes | None:
        if key in self._overlay:
            return self._overlay[key]
        raw = self._get(key)
        if raw is not None and not raw.startswith(self._own):
            return None  # another partition's (a producer that does not co-partition by id)
        return raw

    def _dead_letter(self, msg: Message, rej: Rejection, raw: object) -> None:
        self._count(f"dlq_{rej.code}")
        topic, partition, offset = msg.origin or (msg.topic, msg.partition, msg.offset)
        rec = make_dead_letter(rej, raw, topic=topic, partition=partition, offset=offset)
        self._res.dlq.append((msg.key, dict(rec)))

    def _model(self, msg: Message, model_id: str, task: str | None, event: Prediction) -> ModelConfig | None:
        cfg = self.models.for_model(model_id)
        if cfg is None:
            self._dead_letter(msg, Rejection("unknown_model", "model_id", f"model {model_id!r} is not in the models file"), event._asdict())
            return None
        expected = cfg.task or self.tasks.get(model_id)
        if task is not None and expected is not None and task != expected:
            self._dead_letter(msg, Rejection("task_mismatch", "prediction", f"model {model_id!r} is {expected}, event is {task}"), event._asdict())
            return None
        if task is not None and model_id not in self.tasks:
            if len(self.tasks) < self.max_models:
                self.tasks[model_id] = task
            else:  # joined and windowed, but its first-seen task is not remembered
                self._count("models_overflow")
        return cfg

    def _is_closed(self, p: Prediction, ws: float) -> bool:
        return self.eventtime.is_closed(p.model_id, p.model_version, ws)

    def _on_prediction(self, msg: Message, p: Prediction) -> None:
        cfg = self._model(msg, p.model_id, p.task, p)
        if cfg is None:
            return
        pid = p.prediction_id.encode()
        key = b"p:" + pid
        ws = window_start(p.timestamp, self.window_seconds)
        existing = self._lookup(key)
        if existing is not None:
            rec = decode_prediction(existing, p.prediction_id)
            if (rec.partition, rec.offset) != (msg.partition, msg.offset):
                self._count("duplicate_predictions")
                for sk in self._series(cfg, p, ws):
                    if (w := self._partial(self.windows if not self._is_closed(p, ws) else self.late, sk, p.task)) is not None:
                        w.duplicate_predictions += 1
                return
        elif p.prediction_id in self.recent_joined:
            self._count("duplicate_predictions")
            return
        self.eventtime.advance(p.model_id, p.model_version, p.timestamp)
        self.seen_at[f"{p.model_id}\x1f{p.model_version}"] = self.last_activity
        closed = self._is_closed(p, ws)
        if closed and self.eventtime.too_late(p.model_id, p.model_version, ws, cfg.label_horizon_s):
            detail = (f"window {ws:.0f} of model {p.model_id!r} {p.model_version!r} is more than the label horizon "
                      f"({cfg.label_horizon_s:.0f} s) behind the model's event time: no revision can take it")
            self._dead_letter(msg, Rejection("too_late", "timestamp", detail), p._asdict())
            return
        lat = np.nan if p.latency_ms is None else p.latency_ms
        score = p.value if p.task == "regression" else (p.score if p.scores is None else max(p.scores.values(), default=np.nan))
        sc = np.nan if score is None else score
        # A prediction for a closed window counts exactly as an on-time one, in a ``late``
        # partial that revises the window: the same events give the same windows whenever
        # they are read (live, from a backlog, after a pause or a crash).
        # A model with a reference gets data drift and quality unless its entry says ``false``.
        ref = self.references.get(p.model_id) if cfg.data_drift is not False else None
        # No reference yet, and the model builds it from its first hours: profile unbinned.
        warmup = ref is None and bool(cfg.data_drift) and not closed and cfg.first_hours() is not None
        cbpe = cfg.cbpe and p.task == "binary"
        for sk in self._series(cfg, p, ws):
            w = self._partial(self.late if closed else self.windows, sk, p.task)
            if w is None:
                continue
            if closed:
                w.late_predictions += 1
            buf = self._pbuf.get(w)
            if buf is None:
                buf = self._pbuf[w] = ([], [])
            buf[0].append(lat)
            buf[1].append(sc)
            if p.status is not None:
                w.add_status(p.status == "error", p.error_code)
            if (ref is not None or warmup) and sk.segment == "":
                self._buffer_features(w, ref, p)
            if cbpe:
                self._buffer_cbpe(w, p)
        if closed:
            self._count("late_predictions")
        lkey = b"l:" + pid
        early_raw = self._lookup(lkey)
        if early_raw is not None:
            self._overlay[lkey] = None
            early = decode_label(early_raw, p.prediction_id).label
            if not self._kind_mismatch(msg, p, early):
                self._join(cfg, p, early, msg)
            return
        expires = p.timestamp + cfg.label_horizon_s
        self._overlay[key] = _exact(encode_prediction(msg.partition, msg.offset, cfg.label_horizon_s, p))
        self.expiry.add(expires, key)
        self.pending_count += 1
        if self.pending_count > self.max_pending:
            self._evict(self.pending_count - self.max_pending)

    def _on_label(self, msg: Message, lab: Label) -> None:
        self.eventtime.advance_labels(lab.timestamp)
        pid = lab.prediction_id.encode()
        key = b"p:" + pid
        raw = self._lookup(key)
        if raw is None:
            if lab.prediction_id in self.recent_joined:
                self._count("duplicate_labels")
                return
            lkey = b"l:" + pid
            existing = self._lookup(lkey)
            if existing is not None and decode_label(existing, lab.prediction_id)[:2] != (msg.partition, msg.offset):
                self._count("duplicate_labels")
                return
            wait = (self.models.for_model(lab.model_id or "") or self.models.defaults).early_label_wait_s
            self._overlay[lkey] = _exact(encode_label(msg.partition, msg.offset, lab.timestamp + wait, lab))
            self.expiry.add(lab.timestamp + wait, lkey)
            self._count("early_labels")
            return
        rec = decode_prediction(raw, lab.prediction_id)
        cfg = self.models.for_model(rec.pred.model_id) or self.models.defaults
        if self._kind_mismatch(msg, rec.pred, lab):
            return
        if lab.timestamp > rec.expires_at:
            self._count("labels_after_horizon")
        self._overlay[key] = None
        self.pending_count -= 1
        self._join(cfg, rec.pred, lab, msg)

    def _buffer_features(self, w: WindowPartial, ref: Profile | None, p: Prediction) -> None:
        """Keep the event's features and prediction for the window profile (``_flush_buffers``).

        ``ref`` None: the model's reference is still being built from its first hours, so the
        window profile is unbinned (sketches and categories, merged into the reference)."""
        if w.profile is None:
            w.profile = Profile(p.model_id, infer=True) if ref is None else Profile.new_window_like(ref)
        fb = self._fbuf.get(w)
        if fb is None:
            fb = self._fbuf[w] = ([], [])
        fb[0].append(p.features)
        # As ``Profile.from_records`` reads an inference event: score, else value, else label.
        fb[1].append(p.score if p.score is not None else p.value if p.value is not None else p.label)

    def _buffer_cbpe(self, w: WindowPartial, p: Prediction) -> None:
        """Keep the score and predicted label for the window's CBPE estimate."""
        if w.cbpe is None:
            w.cbpe = CBPEAccumulator()
        cb = self._cbuf.get(w)
        if cb is None:
            cb = self._cbuf[w] = ([], [])
        cb[0].append(np.nan if p.score is None else p.score)
        cb[1].append(int(p.label) if p.label in (0, 1) else 0)  # type: ignore[arg-type]

    def _kind_mismatch(self, msg: Message, p: Prediction, lab: Label) -> bool:
        """A label of another kind than the model's task (a class for a regression model, a
        value for a classifier, feedback for a non-ranking model or vice versa): dead letter."""
        given = "feedback" if lab.feedback is not None else "value" if lab.value is not None else "label"
        expected = {"regression": "value", "ranking": "feedback"}.get(p.task, "label")
        if given == expected:
            return False
        detail = f"model {p.model_id!r} is {p.task} (expects {expected}); the label event carries {given}"
        self._dead_letter(msg, Rejection("label_kind_mismatch", given, detail), lab._asdict())
        return True

    def _join(self, cfg: ModelConfig, p: Prediction, lab: Label, msg: Message) -> None:
        self._count("joins")
        self.recent_joined[p.prediction_id] = None
        if len(self.recent_joined) > RECENT_JOINED:
            self.recent_joined.popitem(last=False)
        outcome = make_outcome(p, lab)
        self._res.outcomes.append(dict(outcome))
        ws = window_start(p.timestamp, self.window_seconds)
        table = self.late if self._is_closed(p, ws) else self.windows
        delay = max(lab.timestamp - p.timestamp, 0.0)
        yt: Any
        yp: Any
        err: float | None
        sc = np.nan
        if p.task == "ranking":
            yt, yp = lab.feedback, p.items or []
            err = None  # no detector runs on a ranking model (docs/beyond-accuracy.md)
        elif p.task == "regression":
            yt, yp = float(lab.value), float(p.value)  # type: ignore[arg-type]
            err = abs(yp - yt)
        elif p.task == "binary":
            yt = _binary_truth(lab.label, cfg.positive_class)
            yp = int(p.label) if p.label in (0, 1) else 0  # type: ignore[arg-type]
            sc = np.nan if p.score is None else p.score
            err = float(yt != yp)
        else:
            yt, yp = str(lab.label), str(p.label)
            err = float(yt != yp)
        for sk in self._series(cfg, p, ws):
            if (w := self._partial(table, sk, p.task)) is not None:
                buf = self._obuf.get(w)
                if buf is None:
                    buf = self._obuf[w] = ([], [], [], [])
                buf[0].append(yt)
                buf[1].append(yp)
                buf[2].append(sc)
                buf[3].append(delay)
                if cfg.fairness is not None and p.task == "binary" and sk.segment == "":
                    gb = self._gbuf.get(w)
                    if gb is None:
                        gb = self._gbuf[w] = (cfg.fairness.protected, [], [], [])
                    gb[1].append(p.segments)
                    gb[2].append(yt)
                    gb[3].append(yp)
        if err is not None:
            self._joins.setdefault((p.model_id, p.model_version), []).append((p, lab, err))  # type: ignore[arg-type]

    def _run_detectors(self, force: bool = False) -> None:
        """Queue the batch's joins for the detectors; feed the settled ones (``DetectorFeed``)."""
        for (model, version), joined in self._joins.items():
            self.detectors.add(model, version, joined[0][0].task,
                               [(max(p.timestamp, lab.timestamp), p.prediction_id, err, p.timestamp)
                                for p, lab, err in joined])
        for alarm in self.detectors.release(self.eventtime.settled_through, force):
            self.seq += 1
            self.outbox.append({"type": "alarm", "pid": f"{self.partition}:{self.seq}", "model_id": alarm.model_id,
                                "drift_event": alarm.drift_event, "severity": alarm.severity,
                                "reason": alarm.reason})

    def _expire(self) -> None:
        # By the partition's furthest progress: the expiry index is one for all models.
        watermark = self.eventtime.partition_watermark
        for key in self.expiry.pop_due(watermark, EXPIRE_PER_BATCH):
            raw = self._lookup(key)
            if raw is None:
                continue
            pid = key[2:].decode()
            if key.startswith(b"p:"):
                rec = decode_prediction(raw, pid)
                if rec.expires_at > watermark:  # rewritten since: its own entry is indexed
                    continue
                self._expire_prediction(rec)
            else:
                if decode_label(raw, pid).expires_at > watermark:
                    continue
                self._count("orphan_labels")
            self._overlay[key] = None

    def _expire_prediction(self, rec: Any) -> None:
        p = rec.pred
        cfg = self.models.for_model(p.model_id) or self.models.defaults
        ws = window_start(p.timestamp, self.window_seconds)
        for sk in self._series(cfg, p, ws):
            if (w := self._partial(self.late if self._is_closed(p, ws) else self.windows, sk, p.task)) is not None:
                w.unlabeled_expired += 1
        self.pending_count -= 1
        self._count("unlabeled_expired")

    def _compact_expiry(self) -> None:
        """Drop index entries of records already joined or rewritten.

        A joined prediction's entry would otherwise stay until its label horizon passes
        (7 days by default), so a busy, well-labelled stream would grow the index without
        bound. Compaction runs when the index has grown by ``MIN_EXPIRY_COMPACT`` entries (or
        doubled) since the last one: amortised O(1) lookups per indexed record.
        """
        if len(self.expiry) < self._compact_at:
            return
        self.expiry.keep_only(lambda key: self._lookup(key) is not None)
        self._compact_at = 2 * len(self.expiry) + MIN_EXPIRY_COMPACT

    def _evict(self, n: int) -> None:
        """Evict the ``n`` waiting predictions that expire first (counted ``pending_evicted``).

        Index entries are popped one at a time: stale ones (joined records) are dropped, early
        labels' entries are put back, so nothing live leaves the index.
        """
        keep: list[tuple[float, bytes]] = []
        while n > 0 and len(self.expiry):
            key = self.expiry.pop_oldest(1)[0]
            raw = self._lookup(key)
            if raw is None:
                continue
            pid = key[2:].decode()
            if not key.startswith(b"p:"):
                keep.append((decode_label(raw, pid).expires_at, key))
                continue
            rec = decode_prediction(raw, pid)
            self._expire_prediction(rec)
            self._overlay[key] = None
            self._count("pending_evicted")
            n -= 1
        for expires_at, key in keep:
            self.expiry.add(expires_at, key)

    def _close_windows(self, force: bool) -> None:
        closed = self.eventtime.is_closed
        for key in sorted(self.windows, key=lambda k: k.window_start):
            if force or closed(key.model_id, key.model_version, key.window_start):
                self._emit_partial("closed", key, self.windows.pop(key))
                self._count("windows_closed")
        self._report_progress(force)

    def _report_progress(self, force: bool) -> None:
        """Tell the merge stage how far each model's windows are closed on this partition.

        The merge stage judges a window's volume only once every input partition has closed
        it (``WindowMerger``), never on a first partial. One record per model and window
        boundary crossed, so a few per window at most. Idle (``force``): every window up to
        the one holding the model's progress is closed.
        """
        w = self.window_seconds
        for (model, version), watermark in self.eventtime.watermarks.items():
            through = window_start(watermark, w) + w if force else watermark - self.allowed_lateness
            step = math.floor(through / w)
            if self._progress_sent.get((model, version), -math.inf) >= step:
                continue
            self._progress_sent[(model, version)] = step
            self.seq += 1
            self.outbox.append({"type": "progress", "pid": f"{self.partition}:{self.seq}",
                                "partition": self.partition, "model_id": model, "model_version": version,
                                "through": step * w})

    def _emit_partial(self, kind: str, key: SeriesKey, w: WindowPartial) -> None:
        self.seq += 1
        self.outbox.append({
            "type": kind, "pid": f"{self.partition}:{self.seq}", "partition": self.partition,
            "model_id": key.model_id, "model_version": key.model_version, "segment": key.segment,
            "window_start": key.window_start, "window_end": key.window_start + self.window_seconds,
            "state": w.to_state(),
        })


def _exact(data: bytes) -> bytes:
    """A right-sized copy of an ``orjson.dumps`` result kept long-term.

    orjson (3.13 here) returns bytes objects that keep their ~4 KiB write buffer: measured
    4.1 KB of RSS per 85-byte waiting record, so a million waiting predictions would take
    4 GB instead of ~140 MB. Records in the join table live for the label horizon.
    """
    return bytes(memoryview(data))


def _binary_truth(label: Any, positive_class: str) -> int:
    b = binary_label(label)
    if b is not None:
        return b
    return int(str(label) == positive_class)


__all__ = ["BatchResult", "Message", "PartitionProcessor"]
