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

import bisect
import functools
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
    make_drift_event,
    make_outcome,
    segment_string,
)
from driftline.streams.eventtime import EventClock
from driftline.streams.models import ModelConfig, ModelsConfig
from driftline.streams.pending import (
    ExpiryIndex,
    decode_label,
    decode_prediction,
    encode_label,
    encode_prediction,
)
from driftline.streams.statecheck import check_topics
from driftline.streams.windows import SeriesKey, WindowPartial, window_start

#: The value a segment key takes once it has shown ``max_segment_values`` others on a partition.
OVERFLOW_SEGMENT = "__other__"
EXPIRE_PER_BATCH = 5000  # bounds the delete list a partition record carries
RECENT_JOINED = 50_000  # ids remembered to tell a second label from an unknown one
MIN_EXPIRY_COMPACT = 100_000  # the expiry index is compacted once it holds this many more entries than records


@dataclass
class Message:
    kind: str  # "prediction" | "label"
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class BatchResult:
    sets: dict[bytes, bytes] = field(default_factory=dict)
    state: bytes = b""
    deletes: list[bytes] = field(default_factory=list)
    dlq: list[tuple[bytes | None, dict[str, Any]]] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    partials: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)


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
    ) -> None:
        self.partition = partition
        # kind -> the topic its applied offsets are of; recorded so that another deployment's
        # state is refused instead of resumed (``driftline.streams.statecheck``).
        self.topics = dict(topics) if topics is not None else None
        self.models = models
        self.window_seconds = window_seconds
        self.allowed_lateness = allowed_lateness
        self.max_message_bytes = max_message_bytes
        self.max_pending = max_pending
        self.max_series = max_series  # open window series (model, version, segment, window) per table
        self.max_models = max_models
        # Distinct values kept per (model, segment key); further ones count in OVERFLOW_SEGMENT.
        self.max_segment_values = max_segment_values
        self.segment_values: dict[str, set[str]] = {}
        self._segment_state: dict[str, list[str]] | None = None  # serialised once per change  # models with a remembered task; (model, version) detector banks
        self._get = store_get
        # Waiting records start with their partition (``driftline.streams.pending``). One worker's table
        # holds several partitions' records in one store: this partition reads only its own, as
        # its writes and deletes go to its own changelog partition.
        self._own = b"[%d," % partition
        self.clock = clock
        self.references = dict(references or {})  # model_id -> reference profile (data drift)
        self.applied: dict[str, int] = {"prediction": -1, "label": -1}
        self.eventtime = EventClock(window_seconds, allowed_lateness, clock)
        # The last window boundary reported per (model, version) (not persisted: a repeat after
        # a restart is harmless, the merge stage keeps the furthest).
        self._progress_sent: dict[tuple[str, str], float] = {}
        # Joined outcomes waiting to be fed to their detectors in event-time order (see
        # ``_run_detectors``): (model, version) -> [task, [(time, prediction_id, error, prediction ts)]].
        self.detector_queue: dict[tuple[str, str], list[Any]] = {}
        self.windows: dict[SeriesKey, WindowPartial] = {}
        self.late: dict[SeriesKey, WindowPartial] = {}
        self.banks: dict[tuple[str, str], DetectorBank] = {}
        self.policies: dict[tuple[str, str], AlarmPolicy] = {}
        self.tasks: dict[str, str] = {}
        self.outbox: list[dict[str, Any]] = []
        self.seq = 0
        self.last_deleted: list[bytes] = []
        self.expiry = ExpiryIndex()
        self.pending_count = 0
        self._compact_at = MIN_EXPIRY_COMPACT
        self.recent_joined: OrderedDict[str, None] = OrderedDict()
        self._series_cache: dict[tuple[Any, ...], list[SeriesKey]] = {}
        self._state_cache: dict[SeriesKey, tuple[WindowPartial, str, dict[str, Any]]] = {}
        self._touched: set[WindowPartial] = set()
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
                "watermarks": self.eventtime.to_state(),
                "windows": self._open_window_states(),
                "late": {k.encode(): w.to_state() for k, w in self.late.items()},
                "banks": {f"{m}\x1f{v}": b.to_state() for (m, v), b in self.banks.items()},
                "policies": {f"{m}\x1f{v}": p.to_state() for (m, v), p in self.policies.items()},
                "tasks": self.tasks,
                "detector_queue": [[m, v, q[0], q[1]] for (m, v), q in self.detector_queue.items() if q[1]],
                "segment_values": self._segment_values_state(),
                "outbox": self.outbox,
                "seq": self.seq,
                "last_deleted": [k.decode() for k in self.last_deleted],
            }
        )

    def _segment_values_state(self) -> dict[str, list[str]]:
        if self._segment_state is None:
            self._segment_state = {k: sorted(v) for k, v in self.segment_values.items()}
        return self._segment_state

    def _open_window_states(self) -> dict[str, Any]:
        """The open windows' states for the partition record, re-serialised only when changed.

        Every batch writes every open window, but a batch touches few of them; turning an
        untouched window's sketches and histograms into lists again cost ~15% of the join
        stage's CPU. A window is touched when ``_partial`` hands it out (all changes go
        through it); the cache holds the window object itself, so a replaced one never matches.
        """
        cache: dict[SeriesKey, tuple[WindowPartial, str, dict[str, Any]]] = {}
        out: dict[str, Any] = {}
        for k, w in self.windows.items():
            hit = self._state_cache.get(k)
            if hit is None or hit[0] is not w or w in self._touched:
                hit = (w, k.encode(), w.to_state())
            cache[k] = hit
            out[hit[1]] = hit[2]
        self._state_cache = cache
        self._touched.clear()
        return out

    def load_state(self, raw: bytes | None) -> None:
        if not raw:
            return
        d = orjson.loads(raw)
        if self.topics is not None:
            check_topics(d.get("topics"), self.topics, f"join partition {self.partition}")
        self.applied = d["applied"]
        self.eventtime.load_state(d.get("watermarks"))
        self.windows = {SeriesKey.decode(k): WindowPartial.from_state(v) for k, v in d["windows"].items()}
        self.late = {SeriesKey.decode(k): WindowPartial.from_state(v) for k, v in d["late"].items()}
        self.banks = {tuple(k.split("\x1f")): DetectorBank.from_state(v) for k, v in d["banks"].items()}  # type: ignore[misc]
        self.policies = {tuple(k.split("\x1f")): AlarmPolicy.from_state(v) for k, v in d["policies"].items()}  # type: ignore[misc]
        self.tasks = d["tasks"]
        self.detector_queue = {(m, v): [task, [tuple(e) for e in entries]]
                               for m, v, task, entries in d.get("detector_queue", [])}
        self.segment_values = {k: set(v) for k, v in d.get("segment_values", {}).items()}
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
        for msg in messages:
            if msg.offset <= self.applied[msg.kind]:
                self._count("replayed_skipped")
                continue
            self.applied[msg.kind] = msg.offset
            self._count(f"messages_{msg.kind}")
            events, rejections = decode_message(msg.value, msg.kind, max_bytes=self.max_message_bytes)  # type: ignore[arg-type]
            for rej, raw in rejections:
                self._dead_letter(msg, rej, raw)
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
        rec = make_dead_letter(rej, raw, topic=msg.topic, partition=msg.partition, offset=msg.offset)
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

    def _partial(self, table: dict[SeriesKey, WindowPartial], key: SeriesKey, task: str) -> WindowPartial | None:
        """The partial of ``key``; None (counted) when ``table`` already holds ``max_series``.

        Whole-model series (segment ``""``) have a reserve of ``max_models`` above the cap: a
        flood of segments never starves a model's own metrics, and a flood of models is still
        bounded.
        """
        w = table.get(key)
        if w is None:
            if len(table) >= self.max_series + (0 if key.segment else self.max_models):
                self._count("series_overflow")
                return None
            if task == "ranking":
                cfg = self.models.for_model(key.model_id) or self.models.defaults
                w = table[key] = WindowPartial(task, cfg.ranking_k, cfg.catalog_size)
            else:
                w = table[key] = WindowPartial(task)
        self._touched.add(w)  # whoever asks for a partial may change it (see ``dump_state``)
        return w

    def _series(self, cfg: ModelConfig, p: Prediction, ws: float) -> list[SeriesKey]:
        """The series an event counts in: the whole model, then one per segmentation.

        Cached per batch: an envelope's events share a handful of (model, window, segment)
        combinations, and building the keys costs more than the rest of the event.
        """
        seg = p.segments
        values = tuple(seg.get(k, "") for k in _segment_fields(cfg.segment_keys)) if cfg.segment_keys and seg else ()
        ck = (p.model_id, p.model_version, ws, values)
        keys = self._series_cache.get(ck)
        if keys is None:
            keys = [SeriesKey(p.model_id, p.model_version, "", ws)]
            if cfg.segment_keys:
                seg = self._fold_segments(p.model_id, seg or {}, _segment_fields(cfg.segment_keys))
            for combo in cfg.segment_keys:
                keys.append(SeriesKey(p.model_id, p.model_version, segment_string(seg, combo.split(",")), ws))
            if len(self._series_cache) > 100_000:
                self._series_cache.clear()
            self._series_cache[ck] = keys
        return keys

    def _fold_segments(self, model_id: str, seg: dict[str, str], fields: tuple[str, ...]) -> dict[str, str]:
        """``seg`` with values past ``max_segment_values`` per (model, key) as ``OVERFLOW_SEGMENT``.

        A value once kept stays kept and the set only grows, so a value's fate is decided once,
        in log order, the same on every delivery (the sets are in the partition record).
        """
        out = seg
        for k in fields:
            value = seg.get(k, "")
            seen = self.segment_values.setdefault(f"{model_id}\x1f{k}", set())
            if value in seen:
                continue
            if len(seen) < self.max_segment_values:
                seen.add(value)
                self._segment_state = None
                continue
            if out is seg:
                out = dict(seg)
            out[k] = OVERFLOW_SEGMENT
            self._count("segment_overflow")
        return out

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
        ref = self.references.get(p.model_id) if cfg.data_drift else None
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
        """Feed the detectors the joined outcomes that are settled, in event-time order.

        A detector is order-sensitive, and the order in which joins complete depends on how
        the predictions and labels topics interleave in a batch: a backlog, a pause or a crash
        would change detection points. So outcomes queue per (model, version) and are fed
        sorted by (outcome time = the later of prediction and label time, prediction id) once
        both the model's predictions and the partition's labels have moved the allowed
        lateness past them (``EventClock.settled_through``), or all of them when the
        partition is idle (``force``). The queue is in the partition record: its size is the
        outcomes of the last ``allowed_lateness`` seconds. An outcome later than that is fed
        at once, after those already fed.
        """
        for (model, version), joined in self._joins.items():
            queue = self.detector_queue.get((model, version))
            if queue is None:
                queue = self.detector_queue[(model, version)] = [joined[0][0].task, []]
            queue[1].extend((max(p.timestamp, lab.timestamp), p.prediction_id, err, p.timestamp)
                            for p, lab, err in joined)
        for (model, version), queue in self.detector_queue.items():
            entries = queue[1]
            if not entries:
                continue
            cutoff = math.inf if force else self.eventtime.settled_through(model, version)
            entries.sort()
            n = len(entries) if cutoff == math.inf else bisect.bisect_right(entries, (cutoff, "\U0010ffff"))
            if n:
                queue[1] = entries[n:]
                self._feed_detectors(model, version, queue[0], entries[:n])

    def _feed_detectors(self, model: str, version: str, task: str,
                    joined: list[tuple[float, str, float, float]]) -> None:
        cfg = self.models.for_model(model) or self.models.defaults
        bank = self.banks.get((model, version))
        if bank is None:
            det_cfg = {k: dict(v) for k, v in cfg.detectors.items() if task != "regression" or k == "adwin"}
            if not det_cfg:  # no detector applies (``detectors: {}``, or a regressor without ADWIN)
                return
            if len(self.banks) >= self.max_models:  # joined and windowed, not watched by detectors
                self._count("models_overflow", len(joined))
                return
            bank = self.banks[(model, version)] = DetectorBank(det_cfg)
            self.policies[(model, version)] = AlarmPolicy(corroboration_window=cfg.corroboration_window, ddm_warmup=cfg.ddm_warmup,
                                                              warning_alerts=cfg.detector_warning_alerts)
        start = bank.n
        alarms = bank.update_many(np.array([e for _, _, e, _ in joined], dtype=float))
        decisions = self.policies[(model, version)].decide((model, version), alarms)
        for d in decisions:
            a = d.alarm
            severity = d.severity
            outcome_time, _, _, prediction_ts = joined[a.position - start]
            ws = window_start(prediction_ts, self.window_seconds)
            event = make_drift_event(
                model_id=model, model_version=version, partition=self.partition, detector=a.detector,
                kind=a.kind, direction=a.direction, position=a.position, window_start=ws,
                window_end=ws + self.window_seconds, detected_at=outcome_time,
                params=dict(bank.config.get(a.detector, {})), estimate_before=a.estimate_before,
                estimate_after=a.estimate_after,
            )
            self._count(f"detector_{a.detector}_{a.kind}")
            self.seq += 1
            self.outbox.append({"type": "alarm", "pid": f"{self.partition}:{self.seq}", "model_id": model,
                                "drift_event": dict(event), "severity": severity, "reason": d.reason})

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


@functools.lru_cache(maxsize=1024)
def _segment_fields(segment_keys: tuple[str, ...]) -> tuple[str, ...]:
    """Every segment field the segmentations read ("a,b" reads a and b)."""
    return tuple(sorted({k for combo in segment_keys for k in combo.split(",")}))


def _binary_truth(label: Any, positive_class: str) -> int:
    b = binary_label(label)
    if b is not None:
        return b
    return int(str(label) == positive_class)


__all__ = ["BatchResult", "Message", "PartitionProcessor"]
