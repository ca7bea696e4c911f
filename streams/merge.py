"""The merge stage: per-partition window partials -> one metrics message per window revision.

Partials arrive on the internal ``partials`` topic keyed by model_id, so one merge
processor sees every partial of a model. Each partial has an id (source partition and
sequence); a window remembers the ids it has merged, so a partial re-sent after a crash
is merged once. A window is first emitted ``merge_wait`` seconds after its first partial
(other partitions close the same window within that time); later partials (late labels,
expirations, slower partitions) make it dirty and it is emitted again, at most once per
``flush_interval``. Consumers and ClickHouse keep the highest revision.

A revision is the number of distinct partials merged into the window, minus one, not a
count of emissions. Partials of a window reach the merge stage in the partials log's
order and duplicates are dropped, so the partials merged are always the first
``revision + 1`` of that log: equal revisions hold equal content. That survives crashes:
the merge stage sends a revision before it records it, so after a crash it may send
the same revision again, and it is then the same message, never a different window
under an old number. Revisions increase but may skip numbers (two partials merged
between emissions).

Data drift and quality (models with ``data_drift`` and a reference profile): every
revision of a whole-model window whose partials carry a profile is compared with the
reference (``driftline.detectors.datadrift.compare_profiles``, ``driftline.detectors.quality.check_quality``);
the statistics join the metrics message (``feature_psi.<f>``, ``feature_js.<f>``,
``feature_ks.<f>``, ``feature_chi2_pvalue.<f>``, ``feature_missing_rate.<f>``, ...,
``prediction_psi``, ``multivariate_reconstruction_error``: ``judgements.data_metrics``) and the
alert engine judges them (kinds ``data_drift``, one incident per feature, and ``data_quality``)
once every input partition has closed the window, like volume: a partial window is a smaller
sample, and judging it would make the incident's first window depend on which partition's
partial came first.

Reference from the first hours (``data_drift: {baseline: first_hours}``, no reference yet):
every whole-model partial's unbinned profile goes into the model's ``ReferenceBuilder`` as it
arrives (once: partial ids are deduplicated), kept in ``builders`` (the ``merge`` table, so it
survives restarts); when the span is covered the frozen profile is returned in
``MergeOutput.references`` for the app to save, and becomes the model's reference.

CBPE (binary models with ``cbpe: true``): the window's estimates read its scores through the
score calibrator of the model's reference profile, when it has one (``_calibrator``).

DLE (regression models with ``data_drift`` whose reference was labelled, so it carries a
``LossModel``): every revision of a whole-model window adds ``estimated_mae`` and
``estimated_rmse`` from its profile (``driftline.detectors.dle``), and ``dle_error_mae`` /
``dle_error_rmse`` = estimate - realised once it has labels.

Fairness (binary models with ``fairness``): every revision of a whole-model window adds the
``GroupRates`` metrics (``fairness.<key>.<disparity>``, ``fairness.<key>=<group>.<rate>``) and
the alert engine judges the disparities (kind ``fairness``).

Champion / challenger (models with ``champion``): whenever the whole-model window of the
champion or of a challenger is emitted, each challenger's window is compared with the
champion's of the same window (``driftline.detectors.comparison``); the result goes to the
``comparisons`` topic (revision = sum of both windows' revisions) and the alert engine judges
it (kind ``challenger``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from driftline.detectors.calibration import ScoreCalibrator
from driftline.detectors.datadrift import compare_profiles
from driftline.detectors.fairness import GroupRates
from driftline.detectors.multivariate import compare_reconstruction
from driftline.detectors.profile import Profile
from driftline.detectors.quality import check_quality
from driftline.schemas.messages import make_comparison, make_metrics
from driftline.streams import retained as records
from driftline.streams.alerts import AlertEngine, judgement_stage
from driftline.streams.baseline_cmd import ReferenceBuilder
from driftline.streams.judgements import (
    compare_windows,
    comparison_dict,
    data_metrics,
    fairness_metrics,
    quality_offenders,
)
from driftline.streams.models import ModelConfig, ModelsConfig
from driftline.streams.statecheck import check_topics
from driftline.streams.windows import SeriesKey, WindowPartial

MAX_IDS_PER_WINDOW = 4096
# (drift results, quality offenders by check, reference version, multivariate result)
DataChecks = tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]], int, dict[str, Any] | None]
RECENT_ALARMS = 10_000


@dataclass
class MergedWindow:
    partial: WindowPartial
    ids: list[str] = field(default_factory=list)
    revision: int = -1  # last emitted (-1: never)
    merged: int = 0  # distinct partials merged; ``ids`` keeps only the newest
    first_seen: float = 0.0
    last_emit: float = 0.0
    last_update: float = 0.0
    dirty: bool = True
    coverage_checked: bool = False
    volume_judged: bool = False  # volume is judged once, on the first emission of a complete window

    def to_state(self) -> dict[str, Any]:
        return {"p": self.partial.to_state(), "ids": self.ids, "rev": self.revision, "n": self.merged,
                "first": self.first_seen, "emit": self.last_emit, "upd": self.last_update, "dirty": self.dirty,
                "cov": self.coverage_checked, "vol": self.volume_judged}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> MergedWindow:
        return cls(WindowPartial.from_state(d["p"]), d["ids"], d["rev"], d.get("n", len(d["ids"])), d["first"],
                   d["emit"], d["upd"], d["dirty"], d.get("cov", False), d.get("vol", d["rev"] >= 0))


#: A partition whose last heartbeat is older than this is behind or down: no silence judgement.
HEARTBEAT_STALE_S = 30.0


def encode_window_record(partition: int, mw: MergedWindow) -> bytes:
    """A ``w:`` record: packed and deflated (``driftline.streams.retained``: a week of windows is kept)."""
    return records.encode_window_state(partition, mw.to_state())


@dataclass
class MergeOutput:
    metrics: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    drift_events: list[dict[str, Any]] = field(default_factory=list)
    changed_windows: set[SeriesKey] = field(default_factory=set)
    dropped_windows: set[SeriesKey] = field(default_factory=set)
    changed_models: set[str] = field(default_factory=set)
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    references: list[Profile] = field(default_factory=list)  # frozen first-hours references to save
    changed_builders: set[str] = field(default_factory=set)
    changed_progress: set[str] = field(default_factory=set)


class WindowMerger:
    """Merge state for the models one merge processor owns (see the module docstring)."""

    def __init__(self, models: ModelsConfig, *, window_seconds: float = 60.0, merge_wait: float = 0.5,
                 flush_interval: float = 2.0, keep_seconds: float | None = None,
                 references: dict[str, Profile] | None = None, source_topic: str | None = None,
                 input_partitions: int | None = None,
                 load: Callable[[bytes], bytes | None] | None = None) -> None:
        self.models = models
        self.references = dict(references or {})  # model_id -> reference profile (data drift)
        self.window_seconds = window_seconds
        self.merge_wait = merge_wait
        self.flush_interval = flush_interval
        self.keep_seconds = keep_seconds
        self.windows: dict[SeriesKey, MergedWindow] = {}
        # Settled windows (emitted, judged, recorded) leave memory: only their last update time
        # stays here, their state lives compressed in the merge table (``load`` reads it back
        # when a late partial revises one). Without ``load`` every window stays in memory.
        self.retained = records.RetainedIndex()
        self._load = load
        self.engines: dict[str, AlertEngine] = {}
        self.seen_alarms: dict[str, list[str]] = {}
        self.builders: dict[str, ReferenceBuilder] = {}  # model_id -> first-hours reference in progress
        # The partials offset after the last message applied (kept with the state in the merge
        # table; the consumer resumes here, not at the committed offset: ``driftline.streams.app``).
        self.next_offset = 0
        # How far each input partition has closed each (model, version)'s windows; with
        # ``input_partitions`` set, a window's volume is judged once all have closed it (None:
        # on its first emission, for callers that feed every partial before emitting).
        self.input_partitions = input_partitions
        self.progress: dict[str, dict[str, dict[str, float]]] = {}  # model -> version -> partition -> through
        # model -> version -> partition -> [last prediction read (wall clock), heartbeat time]
        self.liveness: dict[str, dict[str, dict[str, list[float]]]] = {}
        # The partials topic that offset is of (None: not checked); see driftline.streams.statecheck.
        self.source_topic = source_topic
        self._compare_due: set[tuple[str, float, str]] = set()  # (model, window_start, version emitted)

    # ---- state in the merge table -----------------------------------------------------------
    def state_records(self, partition: int, out: MergeOutput, *, offsets: bool) -> list[tuple[bytes, bytes | None]]:
        """The merge-table writes (value ``None``: delete) that record ``out``'s changes.

        A crash may cut them anywhere, leaving a prefix, and the partials after the recorded
        offset are then replayed (the outputs were sent before; replays send the same ids).
        The order makes every prefix safe: alert engines first, since windows recorded
        without their judgements would never be judged again (their replayed partials are
        duplicates), while a judgement recorded without its window is skipped when the window
        is emitted again (``AlertEngine.first_judgement``); reference builders next (they skip
        a partial added before, by id); windows; the offset last, so whatever a recorded
        offset covers is recorded too. The caller writes the records it is handed, in order,
        before it calls this again.
        """
        recs: list[tuple[bytes, bytes | None]] = []
        for model in sorted(out.changed_models | {k.model_id for k in out.dropped_windows}):
            eng = self.engine(model)
            # The map stays as small as what the last batches judged.
            eng.judged = {k: r for k, r in eng.judged.items() if not self._covered(SeriesKey.decode(k), r, out)}
            recs.append((b"a:" + model.encode(), orjson.dumps(
                {"partition": partition, "e": eng.to_state(), "seen": self.seen_alarms.get(model, [])})))
        for model in sorted(out.changed_progress):
            recs.append((b"g:" + model.encode(), orjson.dumps(
                {"partition": partition, "model_id": model, "progress": self.progress.get(model, {}),
                 "liveness": self.liveness.get(model, {})})))
        for model in sorted(out.changed_builders):
            rb = self.builders.get(model)
            if rb is not None:
                recs.append((b"r:" + model.encode(),
                             orjson.dumps({"partition": partition, "model_id": model, "b": rb.to_state()})))
        for key in sorted(out.changed_windows, key=_series_order):
            mw = self.windows.get(key)
            if mw is not None:
                recs.append((b"w:" + key.encode().encode(), encode_window_record(partition, mw)))
        for key in sorted(out.dropped_windows, key=_series_order):
            recs.append((b"w:" + key.encode().encode(), None))
        if offsets:
            recs.append((b"o:%d" % partition, orjson.dumps(
                {"partition": partition, "next": self.next_offset, "topic": self.source_topic})))
        return recs

    def restore_record(self, key: bytes, value: bytes, partition: int) -> None:
        """Load one record of ``state_records`` (a restart); others' records and markers are skipped."""
        if not value or key[:2] not in (b"w:", b"a:", b"r:", b"o:", b"g:"):
            return
        if key.startswith(b"w:"):
            self._restore_window(key, value, partition)
            return
        d = orjson.loads(value)
        if d.get("partition") != partition:
            return
        if key.startswith(b"a:"):
            self.engines[d["e"]["model_id"]] = AlertEngine.from_state(d["e"])
            self.seen_alarms[d["e"]["model_id"]] = d.get("seen", [])
        elif key.startswith(b"r:"):
            self.builders[d["model_id"]] = ReferenceBuilder.from_state(d["b"])
        elif key.startswith(b"g:"):
            self.progress[d["model_id"]] = d["progress"]
            self.liveness[d["model_id"]] = d.get("liveness", {})
        else:
            if self.source_topic is not None:
                recorded = {"partials": d["topic"]} if "topic" in d else None
                check_topics(recorded, {"partials": self.source_topic}, f"merge partition {partition}")
            self.next_offset = int(d["next"])

    def _restore_window(self, key: bytes, value: bytes, partition: int) -> None:
        """A ``w:`` record: a settled window goes to the index from the record's head alone."""
        head = records.decode_window_head(value)
        if head.get("partition") != partition:
            return
        skey = SeriesKey.decode(key[2:].decode())
        m = head["w"]  # the defaults are MergedWindow.from_state's, for records older than the fields
        if self._load is not None and _is_settled(skey, m["rev"], m["dirty"], m.get("vol", m["rev"] >= 0), m.get("cov", False)):
            self.retained.add(skey, m["upd"])
        else:
            self.windows[skey] = MergedWindow.from_state(records.decode_window_record(value)["w"])

    def _covered(self, key: SeriesKey, stage: float, out: MergeOutput) -> bool:
        """Whether a judgement is safe to forget: its window was dropped, or an earlier call
        recorded the window at that judgement stage or later (it changes only by an emission,
        which puts the window in ``changed_windows``: outside this call's it is as recorded;
        ``volume_judged`` is set by the first emission of a complete window)."""
        if key in out.dropped_windows or key in self.retained:  # retained: recorded before it settled
            return True
        mw = self.windows.get(key)
        return (mw is not None and key not in out.changed_windows
                and judgement_stage(mw.revision, mw.volume_judged) >= stage)

    def engine(self, model_id: str) -> AlertEngine:
        eng = self.engines.get(model_id)
        if eng is None:
            eng = self.engines[model_id] = AlertEngine(model_id)
        return eng

    def on_partial(self, msg: dict[str, Any], now: float, out: MergeOutput) -> None:
        """Merge one message of the partials topic (a window partial or a detector alarm)."""
        if msg["type"] == "alarm":
            self._on_alarm(msg, now, out)
            return
        if msg["type"] == "progress":
            self._on_progress(msg, out)
            return
        if msg["type"] == "heartbeat":
            per_version = self.liveness.setdefault(msg["model_id"], {}).setdefault(msg["model_version"], {})
            per_version[str(msg["partition"])] = [float(msg["seen_at"]), float(msg["at"])]
            out.changed_progress.add(msg["model_id"])
            return
        key = SeriesKey(msg["model_id"], msg["model_version"], msg["segment"], float(msg["window_start"]))
        mw = self.window(key)
        if mw is not None and msg["pid"] in mw.ids:
            return
        part = WindowPartial.from_state(msg["state"])
        if key.segment == "" and part.profile is not None and part.profile.infer:
            self._build_reference(key, float(msg["window_end"]), part.profile, msg["pid"], out)
        if mw is None:
            mw = self.windows[key] = MergedWindow(part, first_seen=now)
        else:
            mw.partial.merge(part)
        mw.ids.append(msg["pid"])
        mw.merged += 1
        del mw.ids[:-MAX_IDS_PER_WINDOW]
        mw.dirty = True
        mw.last_update = now
        out.changed_windows.add(key)

    def _on_progress(self, msg: dict[str, Any], out: MergeOutput) -> None:
        """An input partition closed a model's windows through ``msg["through"]``."""
        model, version = msg["model_id"], msg["model_version"]
        per_version = self.progress.setdefault(model, {}).setdefault(version, {})
        source = str(msg["partition"])
        if per_version.get(source, -math.inf) >= msg["through"]:
            return  # a repeat (after a restart, or replayed)
        per_version[source] = float(msg["through"])
        out.changed_progress.add(model)
        # Windows emitted before they were complete are emitted again, now with their volume.
        for key, mw in self.windows.items():
            if (key.model_id == model and key.model_version == version and key.segment == ""
                    and not mw.volume_judged and mw.revision >= 0 and self._complete(key)):
                mw.dirty = True
                out.changed_windows.add(key)

    def _complete(self, key: SeriesKey) -> bool:
        """Whether every input partition has closed this window (all its partials are in)."""
        if self.input_partitions is None:
            return True
        closed = self.progress.get(key.model_id, {}).get(key.model_version, {})
        end = key.window_start + self.window_seconds
        return len(closed) >= self.input_partitions and min(closed.values()) >= end

    def _build_reference(self, key: SeriesKey, window_end: float, profile: Profile, pid: str,
                         out: MergeOutput) -> None:
        """Add an unbinned whole-model partial profile to the model's first-hours reference."""
        cfg = self.models.for_model(key.model_id) or self.models.defaults
        hours = cfg.first_hours()
        if hours is None or key.model_id in self.references:
            return
        rb = self.builders.get(key.model_id)
        if rb is None:
            rb = self.builders[key.model_id] = ReferenceBuilder(hours, grace=self.window_seconds)
        if not rb.frozen:
            rb.add(key.window_start, window_end, profile, freeze=False, source_id=pid)  # frozen in ``tick``
            out.changed_builders.add(key.model_id)

    def _freeze_references(self, out: MergeOutput) -> None:
        """Freeze the first-hours references whose span (+ one window) is covered."""
        for model, rb in sorted(self.builders.items()):
            if model not in self.references and rb.freeze_if_covered():
                ref = rb.reference
                ref.model_id = model
                out.references.append(ref)
                out.changed_builders.add(model)
                self.references[model] = ref  # the app saves it (which sets its version)

    def install_reference(self, profile: Profile) -> None:
        """A reference saved (or found) for a model: compare its windows from now on."""
        self.references[profile.model_id] = profile

    def _on_alarm(self, msg: dict[str, Any], now: float, out: MergeOutput) -> None:
        ev = msg["drift_event"]
        model = ev["model_id"]
        seen = self.seen_alarms.setdefault(model, [])
        if ev["event_id"] in seen:
            return
        seen.append(ev["event_id"])
        del seen[:-RECENT_ALARMS]
        out.drift_events.append(ev)
        cfg = self.models.for_model(model) or self.models.defaults
        out.alerts += self.engine(model).on_alarm(cfg, msg, emitted_at=now)
        out.changed_models.add(model)

    def tick(self, now: float, out: MergeOutput) -> None:
        """Emit windows that are due; drop windows past their retention."""
        self._freeze_references(out)
        for key in sorted(self.windows, key=_series_order):
            mw = self.windows[key]
            if mw.dirty:
                due = (now - mw.first_seen >= self.merge_wait) if mw.revision < 0 else (now - mw.last_emit >= self.flush_interval)
                if due:
                    self._emit(key, mw, now, out)
                    cfg = self.models.for_model(key.model_id) or self.models.defaults
                    if cfg.champion is not None and key.segment == "":
                        self._compare_due.add((key.model_id, key.window_start, key.model_version))
            if not mw.coverage_checked and mw.revision >= 0 and key.segment == "":
                self._check_coverage(key, mw, now, out)
            if not mw.dirty and self._expired(key, mw.last_update, now):
                del self.windows[key]
                out.dropped_windows.add(key)
        self._compare(now, out)
        self._judge_silence(now, out)
        self._settle(now, out)

    def _judge_silence(self, now: float, out: MergeOutput) -> None:
        """Availability: a model version none of whose partitions read a prediction for
        ``silence_after_s``, judged only while each of them reports being caught up (a recent
        heartbeat): a worker behind on its input, or down, makes no judgement."""
        for model, versions in sorted(self.liveness.items()):
            cfg = self.models.for_model(model) or self.models.defaults
            if cfg.silence_after_s is None:
                continue
            for version, partitions in sorted(versions.items()):
                if not partitions or min(at for _, at in partitions.values()) < now - HEARTBEAT_STALE_S:
                    continue
                last = max(seen for seen, _ in partitions.values())
                alerts = self.engine(model).on_silence(cfg, version, now - last >= cfg.silence_after_s, last, now)
                if alerts:
                    out.alerts += alerts
                    out.changed_models.add(model)

    # ---- retained windows -------------------------------------------------------------------------
    def window(self, key: SeriesKey) -> MergedWindow | None:
        """The merged window of ``key``, read back from the merge table if it had settled."""
        mw = self.windows.get(key)
        if mw is None and key in self.retained and self._load is not None:
            raw = self._load(b"w:" + key.encode().encode())
            self.retained.pop(key)
            if raw:
                mw = self.windows[key] = MergedWindow.from_state(records.decode_window_record(raw)["w"])
        return mw

    def _settled(self, key: SeriesKey, mw: MergedWindow) -> bool:
        return _is_settled(key, mw.revision, mw.dirty, mw.volume_judged, mw.coverage_checked)

    def _settle(self, now: float, out: MergeOutput) -> None:
        """Move settled windows recorded by an earlier call out of memory; drop expired ones."""
        if self._load is None:
            return
        for key in [k for k, mw in self.windows.items() if k not in out.changed_windows and self._settled(k, mw)]:
            self.retained.add(key, self.windows.pop(key).last_update)
        out.dropped_windows.update(self.retained.expire(now, self._keep_seconds))

    # ---- champion / challenger -----------------------------------------------------------------
    def _compare(self, now: float, out: MergeOutput) -> None:
        """Compare the challengers' windows emitted this tick (or whose champion's was) with the champion's."""
        pairs: set[tuple[str, float, str]] = set()
        for model, ws, version in self._compare_due:
            champ = (self.models.for_model(model) or self.models.defaults).champion
            if champ is None:
                continue
            if version == champ.version:
                versions = [k.model_version for k in self.windows if k.model_id == model and k.window_start == ws
                            and k.segment == ""] + self.retained.versions_at(model, "", ws)  # not a scan of a week
                pairs.update((model, ws, v) for v in versions if champ.is_challenger(v))
            elif champ.is_challenger(version):
                pairs.add((model, ws, version))
        self._compare_due = set()
        for model, ws, challenger in sorted(pairs):
            cfg = self.models.for_model(model) or self.models.defaults
            champ = cfg.champion
            assert champ is not None
            a = self.window(SeriesKey(model, champ.version, "", ws))
            b = self.window(SeriesKey(model, challenger, "", ws))
            if a is None or b is None or a.revision < 0 or b.revision < 0 or a.partial.task != b.partial.task:
                continue
            results = compare_windows(a.partial, b.partial, champ)
            if not results:
                continue
            msg = make_comparison(model_id=model, champion_version=champ.version, challenger_version=challenger,
                                  window_start=ws, window_end=ws + self.window_seconds, mode=champ.mode,
                                  comparisons=[comparison_dict(c) for c in results],
                                  revision=a.revision + b.revision, emitted_at=now)
            out.comparisons.append(msg)
            out.alerts += self.engine(model).on_comparison(cfg, msg, emitted_at=now)
            out.changed_models.add(model)

    def _expired(self, key: SeriesKey, last_update: float, now: float) -> bool:
        return now - last_update > self._keep_seconds(key.model_id)

    def _keep_seconds(self, model_id: str) -> float:
        """How long a window of ``model_id`` is kept after its last update."""
        cfg = self.models.for_model(model_id) or self.models.defaults
        return self.keep_seconds if self.keep_seconds is not None else cfg.label_horizon_s

    def _emit(self, key: SeriesKey, mw: MergedWindow, now: float, out: MergeOutput) -> None:
        # Volume, data drift and data quality are judged on whole-model windows that every input
        # partition has closed: a partial window is a smaller sample (a "drop", a noisier
        # distribution), and which partition's partial came first is timing, not data.
        complete = key.segment == "" and self._complete(key)
        judge_volume = complete and not mw.volume_judged
        if judge_volume:
            mw.volume_judged = True
        mw.revision = mw.merged - 1
        mw.dirty = False
        mw.last_emit = now
        metrics, counts = mw.partial.metrics(self.window_seconds, self._calibrator(key.model_id))
        cfg = self.models.for_model(key.model_id) or self.models.defaults
        data = self._data_checks(key, mw, cfg, metrics, counts)
        self._loss_estimates(key, mw, cfg, metrics, counts)
        fairness = self._fairness(key, mw, cfg, metrics, counts)
        msg = make_metrics(model_id=key.model_id, model_version=key.model_version, segment=key.segment,
                           window_start=key.window_start, window_end=key.window_start + self.window_seconds,
                           task=mw.partial.task, metrics=metrics, counts=counts, revision=mw.revision,
                           final=True, labeled_count=mw.partial.labeled, emitted_at=now)
        out.metrics.append(dict(msg))
        out.changed_windows.add(key)
        out.changed_models.add(key.model_id)
        if not self.engine(key.model_id).first_judgement(dict(msg), complete):  # judged before a crash
            return
        alerts = self.engine(key.model_id).on_window(cfg, dict(msg), emitted_at=now, judge_volume=judge_volume)
        if data is not None and complete:
            alerts += self.engine(key.model_id).on_data(cfg, dict(msg), data[0], data[1], emitted_at=now,
                                                        reference_version=data[2], multivariate=data[3])
        if fairness:
            alerts += self.engine(key.model_id).on_fairness(cfg, dict(msg), fairness, emitted_at=now)
        if alerts:
            out.alerts += alerts

    def _calibrator(self, model_id: str) -> ScoreCalibrator | None:
        """The score calibrator of the model's reference (None: CBPE reads the scores as they are)."""
        ref = self.references.get(model_id)
        return None if ref is None else ref.calibrator

    def _loss_estimates(self, key: SeriesKey, mw: MergedWindow, cfg: ModelConfig, metrics: dict[str, float],
                        counts: dict[str, int]) -> None:
        """Add a regression window's DLE estimates (and their errors once labelled) to ``metrics``."""
        prof = mw.partial.profile
        ref = self.references.get(key.model_id)
        if (key.segment != "" or mw.partial.task != "regression" or prof is None or ref is None
                or ref.loss_model is None or cfg.data_drift is False or prof.infer or prof.version != ref.version):
            return
        est = ref.loss_model.estimate(prof)
        if est is None:
            return
        for name, value in est.items():
            metrics[name] = value
            counts[name] = prof.n_events
            realised = name.removeprefix("estimated_")
            if realised in metrics and mw.partial.acc.n:
                metrics[f"dle_error_{realised}"] = value - metrics[realised]
                counts[f"dle_error_{realised}"] = mw.partial.acc.n

    def _data_checks(self, key: SeriesKey, mw: MergedWindow, cfg: ModelConfig, metrics: dict[str, float],
                     counts: dict[str, int]) -> DataChecks | None:
        """Compare the window profile with the reference; add the statistics to ``metrics``.

        Returns (drift results, quality offenders by check, reference version, multivariate
        result or None) for the alert engine, or None when the window has no profile comparable
        with the reference.
        """
        prof = mw.partial.profile
        ref = self.references.get(key.model_id)
        if (key.segment != "" or prof is None or ref is None or cfg.data_drift is False or prof.infer
                or prof.version != ref.version):  # an unbinned profile feeds a first-hours reference
            return None
        try:
            drift_cfg = cfg.drift_config()
            drift = compare_profiles(ref, prof, drift_cfg)
            mv = compare_reconstruction(ref, prof, drift_cfg.default.sigmas, drift_cfg.default.min_samples)
            thresholds = cfg.quality_thresholds()
            quality = check_quality(ref, prof, thresholds)
        except ValueError:  # bins of another reference (cannot happen with one reference per run)
            return None

        data_metrics(ref, drift, quality, mv, metrics, counts)
        return ([r.to_dict() for r in drift], quality_offenders(ref, prof, quality, thresholds), ref.version, mv)

    def _fairness(self, key: SeriesKey, mw: MergedWindow, cfg: ModelConfig, metrics: dict[str, float],
                  counts: dict[str, int]) -> dict[str, GroupRates] | None:
        """Add the window's fairness metrics to ``metrics``; the rates per protected key, or None."""
        rates = mw.partial.fairness
        if key.segment != "" or cfg.fairness is None or not rates:
            return None
        for k in cfg.fairness.protected:
            r = rates.get(k)
            if r is not None and r.n:
                fm, fc = fairness_metrics(k, r)
                metrics.update(fm)
                counts.update(fc)
        return {k: r for k, r in rates.items() if k in cfg.fairness.protected}

    def _check_coverage(self, key: SeriesKey, mw: MergedWindow, now: float, out: MergeOutput) -> None:
        cfg = self.models.for_model(key.model_id) or self.models.defaults
        if cfg.label_coverage_min is None:
            mw.coverage_checked = True
            return
        window_end = key.window_start + self.window_seconds
        if now - window_end < cfg.coverage_after_s:
            return
        mw.coverage_checked = True
        metrics, counts = mw.partial.metrics(self.window_seconds, self._calibrator(key.model_id))
        win = {"model_id": key.model_id, "model_version": key.model_version, "segment": key.segment,
               "window_start": key.window_start, "window_end": window_end, "revision": mw.revision,
               "metrics": metrics, "counts": counts}
        out.alerts += self.engine(key.model_id).on_coverage(cfg, win, emitted_at=now)
        out.changed_windows.add(key)
        out.changed_models.add(key.model_id)



def _is_settled(key: SeriesKey, revision: int, dirty: bool, volume_judged: bool, coverage_checked: bool) -> bool:
    """Emitted, clean and judged: nothing will read the window until a late partial revises it."""
    return revision >= 0 and not dirty and ((volume_judged and coverage_checked) or key.segment != "")


def _series_order(k: SeriesKey) -> tuple[float, str, str, str]:
    return (k.window_start, k.model_id, k.model_version, k.segment)
