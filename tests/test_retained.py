"""Retained windows: a window restored from its merge-table record and revised emits exactly what
a window that never left memory emits; records of every earlier format stay readable; the index.

References: a ``WindowMerger`` without ``load`` (every window in memory, never encoded) and the
``WindowPartial`` of all the window's events merged in memory. Equality is exact (``==`` on the
metrics and counts dicts), not approximate.
"""

from __future__ import annotations

import random
import zlib
from typing import Any

import numpy as np
import orjson
import pytest

from driftline.detectors.cbpe import CBPEAccumulator
from driftline.streams.merge import MergedWindow, MergeOutput, WindowMerger
from driftline.streams.models import ModelConfig, ModelsConfig
from driftline.streams.retained import (
    RetainedIndex,
    decode_window_head,
    decode_window_record,
    encode_window_state,
)
from driftline.streams.windows import SeriesKey, WindowPartial

W = 60.0
T0 = 1_700_000_040.0


def _partial(task: str, n: int, rng: np.random.Generator) -> WindowPartial:
    """A join partition's partial of ``n`` labelled predictions (with statuses; CBPE for binary)."""
    w = WindowPartial(task)
    score = rng.random(n)
    w.add_predictions(rng.gamma(2.0, 10.0, n), score if task != "regression" else rng.normal(5, 2, n))
    for i in range(n):
        w.add_status(bool(rng.random() < 0.05), "TIMEOUT" if i % 3 else None)
    delays = rng.exponential(30.0, n)
    if task == "binary":
        w.add_outcomes((rng.random(n) < score).astype(int), (score >= 0.5).astype(int), score, delays)
        w.cbpe = CBPEAccumulator(0.5)
        w.cbpe.update_many(score)
    elif task == "multiclass":
        classes = np.array(["cat", "dog", "bird"])
        w.add_outcomes(list(classes[rng.integers(0, 3, n)]), list(classes[rng.integers(0, 3, n)]), None, delays)
    else:
        truth = rng.normal(5, 2, n)
        w.add_outcomes(truth, truth + rng.normal(0, 1, n), None, delays)
    return w


def _msg(key: SeriesKey, pid: str, w: WindowPartial) -> dict[str, Any]:
    """The partials-topic message of ``w`` (``driftline.streams.outbox.Outbox.partial``), through JSON."""
    return orjson.loads(orjson.dumps({
        "type": "late", "partition": int(pid.split(":")[0]), "model_id": key.model_id,
        "model_version": key.model_version, "segment": key.segment, "window_start": key.window_start,
        "window_end": key.window_start + W, "pid": pid, "state": w.to_state()}))


class _Run:
    """A merger fed batches of partials and ticked until its windows settle; its emitted metrics."""

    def __init__(self, models: ModelsConfig, retained: bool) -> None:
        self.store: dict[bytes, bytes] = {}
        self.merger = WindowMerger(models, window_seconds=W, merge_wait=0.0, flush_interval=0.0,
                                   load=self.store.get if retained else None)
        self.emitted: list[dict[str, Any]] = []
        self.now = 0.0

    def feed(self, msgs: list[dict[str, Any]]) -> None:
        for step in range(3):  # merge and emit, then settle (the records written by the first call)
            out = MergeOutput()
            for m in msgs if step == 0 else []:
                self.merger.on_partial(m, self.now, out)
            self.merger.tick(self.now + 700.0 * step, out)  # past coverage_after_s
            for key, value in self.merger.state_records(0, out, offsets=False):
                if value is None:
                    self.store.pop(key, None)
                else:
                    self.store[key] = value
            self.emitted += out.metrics
        self.now += 1.0


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_a_restored_window_revised_by_late_partials_emits_what_one_never_retained_does(task: str) -> None:
    models = ModelsConfig(models={"m": ModelConfig(task=task, cbpe=task == "binary")})
    rng = np.random.default_rng(7)
    keys = [SeriesKey("m", "v1", seg, T0 + W * i) for i in range(3) for seg in ("", "country=DE")]
    batches = [[_msg(k, f"{p}:{i}", _partial(task, int(rng.integers(20, 400)), rng)) for i, k in enumerate(keys)]
               for p in range(4)]  # the on-time partials, then three rounds of late ones
    lean, full = _Run(models, retained=True), _Run(models, retained=False)
    for batch in batches:
        for run in (lean, full):
            run.feed(batch)
        assert len(lean.merger.retained) == len(keys) and not lean.merger.windows  # left memory again
        assert set(lean.store) >= {b"w:" + k.encode().encode() for k in keys}
    assert lean.emitted == full.emitted  # every revision, bit for bit
    assert len(lean.emitted) == len(keys) * len(batches)
    for i, key in enumerate(keys):  # and equal to all the window's events merged in memory
        whole = WindowPartial.from_state(batches[0][i]["state"])
        for batch in batches[1:]:
            whole.merge(WindowPartial.from_state(batch[i]["state"]))
        metrics, counts = whole.metrics(W)
        (last,) = [m for m in lean.emitted if (m["segment"], m["window_start"]) == (key.segment, key.window_start)
                   and m["revision"] == len(batches) - 1]
        assert last["metrics"] == metrics and last["counts"] == counts


def _record(partition: int, mw: MergedWindow, fmt: str) -> bytes:
    if fmt == "packed":
        return encode_window_state(partition, mw.to_state())
    raw = orjson.dumps({"partition": partition, "w": mw.to_state()})
    return zlib.compress(raw, 6) if fmt == "zlib" else raw


@pytest.mark.parametrize("fmt", ["packed", "zlib", "json"])
def test_records_of_every_format_restore_and_revise(fmt: str) -> None:
    """A merge table written now, or before format 2 (zlib JSON, or plain JSON before that),
    restores on a restart, and its windows are revised exactly as ones never written."""
    models = ModelsConfig(models={"m": ModelConfig(task="binary")})
    rng = np.random.default_rng(3)
    key = SeriesKey("m", "v1", "", T0)
    first, late = _msg(key, "0:1", _partial("binary", 300, rng)), _msg(key, "1:1", _partial("binary", 40, rng))
    full = _Run(models, retained=False)
    full.feed([first])
    mw = full.merger.windows[key]
    restarted = _Run(models, retained=True)
    record = _record(0, mw, fmt)
    restarted.store[b"w:" + key.encode().encode()] = record
    restarted.merger.restore_record(b"w:" + key.encode().encode(), record, 0)
    restarted.merger.restore_record(b"w:" + key.encode().encode(), record, 1)  # another merge partition's: skipped
    assert key in restarted.merger.retained  # settled: restored into the index, not into memory
    full.emitted, restarted.now = [], full.now
    full.feed([late])
    restarted.feed([late])
    assert restarted.emitted == full.emitted and restarted.emitted[0]["revision"] == 1
    assert restarted.store[b"w:" + key.encode().encode()][:1] == b"\x02"  # rewritten in the current format


def test_the_head_alone_tells_a_restart_what_it_needs() -> None:
    """A restart reads a format-2 record's head only: every field but the accumulators and ids,
    equal to the full decode's, while a corrupt body is refused once a revision reads it."""
    full = _Run(ModelsConfig(models={"m": ModelConfig(task="binary")}), retained=False)
    key = SeriesKey("m", "v1", "", T0)
    full.feed([_msg(key, "0:1", _partial("binary", 300, np.random.default_rng(5)))])
    record = encode_window_state(3, full.merger.windows[key].to_state())
    whole = decode_window_record(record)
    head = decode_window_head(record)
    assert head["partition"] == whole["partition"] == 3
    assert head["w"] == {k: v for k, v in whole["w"].items() if k not in ("p", "ids")}
    assert whole["w"] == _json_round_trip(full.merger.windows[key].to_state())
    corrupt = record[:2 + record[1]] + b"\xff" * 20
    assert decode_window_head(corrupt) == head
    with pytest.raises(ValueError, match="window record"):
        decode_window_record(corrupt)


def _json_round_trip(state: Any) -> Any:
    return orjson.loads(orjson.dumps(state))


def test_a_record_of_an_unknown_format_is_refused_with_a_message() -> None:
    for raw in (b"\x03" + b"\x00" * 10, b"\x00", b""):
        with pytest.raises(ValueError, match="cannot read"):
            decode_window_record(raw)
    merger = WindowMerger(ModelsConfig(models={}), load={}.get)
    with pytest.raises(ValueError, match="written by a newer version"):
        merger.restore_record(b"w:m\x1fv1\x1f\x1f0.0", b"\x07whatever", 0)


def test_the_index_agrees_with_a_dict() -> None:
    rnd = random.Random(11)
    idx, ref = RetainedIndex(), {}
    keys = [SeriesKey(m, v, s, T0 + W * rnd.randrange(500)) for m in ("a", "b") for v in ("1", "2")
            for s in ("", "c=x") for _ in range(40)]
    for step in range(3000):
        k = rnd.choice(keys)
        op = rnd.random()
        if op < 0.6:
            idx.add(k, float(step))
            ref[k] = float(step)
        elif op < 0.9:
            assert idx.pop(k) == ref.pop(k, None)
        else:
            keep = {"a": 400.0, "b": 900.0}
            gone = idx.expire(float(step), keep.__getitem__)
            expected = [key for key, upd in ref.items() if step - upd > keep[key.model_id]]
            assert sorted(gone) == sorted(expected)
            for key in expected:
                del ref[key]
        assert len(idx) == len(ref)
        if step % 100 == 0:
            k = rnd.choice(keys)
            assert sorted(idx.versions_at(k.model_id, k.segment, k.window_start)) == sorted(
                r.model_version for r in ref if (r.model_id, r.segment, r.window_start) == (k.model_id, k.segment, k.window_start))
    assert sorted(idx) == sorted(ref) and all(k in idx for k in ref)
    assert SeriesKey("zz", "1", "", T0) not in idx and "not a key" not in idx


def test_a_record_of_a_newer_format_stops_the_worker_with_ex_config() -> None:
    """A restart would meet the same record: the worker exits 78 saying why, not 70 in a loop."""
    from worker_harness import run_halted_step

    run = run_halted_step("from driftline.streams.retained import decode_window_record",
                          "decode_window_record(b'\\x7f' + b'x' * 20)")
    assert run.returncode == 78, run.stderr
    assert "cannot read" in run.stderr
