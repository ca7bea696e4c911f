"""Partition processors + merge stage against scikit-learn, late labels and revisions.

The harness (a dict as the join table, ``driftline.streams.app._apply_join``'s write order) is the
one of ``tests/test_partition.py``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import orjson
import pytest
from sklearn import metrics as skm
from test_partition import T0, Feed, Harness, label, pred

from driftline.schemas.messages import segment_string
from driftline.schemas.partitioning import partition_for
from driftline.streams.merge import MergedWindow, MergeOutput, WindowMerger
from driftline.streams.models import ModelConfig, ModelsConfig, ThresholdRule
from driftline.streams.simulate import generate
from driftline.streams.windows import window_start

NPART = 3
W = 60.0
MODELS = ModelsConfig(
    models={
        "fraud": ModelConfig(task="binary", segment_keys=("country",)),
        "intent": ModelConfig(task="multiclass", segment_keys=("channel",)),
        "eta": ModelConfig(task="regression", segment_keys=("city",)),
    }
)
EXACT: dict[str, Any] = {"rel": 1e-9, "abs": 1e-12}

Key = tuple[str, str, str, float]


# ---- the pipeline run --------------------------------------------------------------------


def _arrival(
    preds: list[dict[str, Any]], labels: list[dict[str, Any]]
) -> list[tuple[str, dict[str, Any]]]:
    items = [(p["timestamp"], 0, "prediction", p) for p in preds] + [
        (lab["timestamp"], 1, "label", lab) for lab in labels
    ]
    items.sort(key=lambda t: (t[0], t[1]))
    return [(kind, ev) for _, _, kind, ev in items]


def _batches(feed: Feed, events: list[tuple[str, dict[str, Any]]], size: int) -> list[list[Any]]:
    """Batches of messages; runs of one kind become envelopes or single-event messages in turn."""
    out = []
    n_run = 0
    for lo in range(0, len(events), size):
        chunk = events[lo : lo + size]
        msgs: list[Any] = []
        i = 0
        while i < len(chunk):
            j = i
            while j < len(chunk) and chunk[j][0] == chunk[i][0] and j - i < 7:
                j += 1
            msgs += feed.events(chunk[i][0], [ev for _, ev in chunk[i:j]], envelope=n_run % 3 != 2)
            n_run += 1
            i = j
        out.append(msgs)
    return out


@pytest.fixture(scope="module")
def fleet() -> dict[str, Any]:
    preds, labels = generate(3000, seed=7, rate=10.0, start_ts=T0, label_delay=12.0)
    by_part: dict[int, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for kind, ev in _arrival(preds, labels):
        by_part[partition_for(ev["prediction_id"], NPART)].append((kind, ev))
    harnesses = []
    for p in range(NPART):
        h = Harness(p, MODELS, window_seconds=W, allowed_lateness=5.0)  # some labels come late
        for batch in _batches(Feed(p), by_part[p], 90):
            h.process(batch)
        h.close_idle()
        assert not h.dlq
        harnesses.append(h)
    merger = WindowMerger(MODELS, window_seconds=W, merge_wait=1.0, flush_interval=2.0)
    out = MergeOutput()
    # Partials arrive interleaved from the three partitions.
    streams = [list(h.partials) for h in harnesses]
    while any(streams):
        for s in streams:
            if s:
                merger.on_partial(orjson.loads(orjson.dumps(s.pop(0))), 100.0, out)
    merger.tick(100.5, out)
    assert out.metrics == []  # merge_wait not over
    merger.tick(101.0, out)
    final: dict[Key, dict[str, Any]] = {}
    for m in out.metrics:
        final[(m["model_id"], m["model_version"], m["segment"], m["window_start"])] = m
    counters: dict[str, int] = defaultdict(int)
    for h in harnesses:
        for k, v in h.counters.items():
            counters[k] += v
    return {
        "preds": preds,
        "labels": {lab["prediction_id"]: lab for lab in labels},
        "windows": final,
        "metrics": out.metrics,
        "counters": counters,
        "late_partials": sum(p["type"] == "late" for h in harnesses for p in h.partials),
    }


def _expected_groups(preds: list[dict[str, Any]]) -> dict[Key, list[dict[str, Any]]]:
    groups: dict[Key, list[dict[str, Any]]] = defaultdict(list)
    for p in preds:
        ws = window_start(p["timestamp"], W)
        keys = MODELS.models[p["model_id"]].segment_keys
        groups[(p["model_id"], p["model_version"], "", ws)].append(p)
        groups[
            (p["model_id"], p["model_version"], segment_string(p["segments"], list(keys)), ws)
        ].append(p)
    return groups


def test_pipeline_exercised(fleet: dict[str, Any]) -> None:
    c = fleet["counters"]
    assert c["joins"] == len(fleet["labels"])
    assert fleet["late_partials"] > 0 and "late_predictions" not in c
    windows = [(m["model_id"], m["model_version"], m["segment"], m["window_start"]) for m in fleet["metrics"]]
    assert len(windows) == len(set(windows))  # one emission per window here
    assert len({k[0] for k in fleet["windows"]}) == 3 and len({k[3] for k in fleet["windows"]}) == 5


def test_metrics_equal_sklearn(fleet: dict[str, Any]) -> None:
    labels = fleet["labels"]
    groups = _expected_groups(fleet["preds"])
    assert set(groups) == set(fleet["windows"])
    checked = 0
    for key, evs in groups.items():
        msg = fleet["windows"][key]
        m, counts = msg["metrics"], msg["counts"]
        task = MODELS.models[key[0]].task
        assert msg["task"] == task and msg["window_end"] == key[3] + W
        joined = [(p, labels[p["prediction_id"]]) for p in evs if p["prediction_id"] in labels]
        n, n_lab = len(evs), len(joined)
        assert m["prediction_count"] == n and counts["prediction_count"] == n
        assert m["labeled_count"] == n_lab == msg["labeled_count"]
        assert m["label_coverage"] == pytest.approx(n_lab / n, **EXACT)
        assert m["throughput"] == pytest.approx(n / W, **EXACT)
        lat = np.array([p["latency_ms"] for p in evs])
        for q, name in ((0.5, "latency_p50"), (0.95, "latency_p95"), (0.99, "latency_p99")):
            ref = float(np.quantile(lat, q, method="lower"))
            assert m[name] == pytest.approx(ref, rel=0.01), (key, name)
        delays = np.array([max(lab["timestamp"] - p["timestamp"], 0.0) for p, lab in joined])
        assert m["label_delay_p50"] == pytest.approx(
            float(np.quantile(delays, 0.5, method="lower")), rel=0.01
        )
        if task == "regression":
            values = np.array([p["prediction"]["value"] for p in evs])
            prefix = "prediction_value"
        elif task == "binary":
            values = np.array([p["prediction"]["score"] for p in evs])
            prefix = "score"
        else:
            values = np.array([max(p["prediction"]["scores"].values()) for p in evs])
            prefix = "score"
        assert m[f"{prefix}_mean"] == pytest.approx(values.mean(), **EXACT)
        assert m[f"{prefix}_std"] == pytest.approx(values.std(), rel=1e-9, abs=1e-9)
        assert (m[f"{prefix}_min"], m[f"{prefix}_max"]) == (values.min(), values.max())
        assert m[f"{prefix}_p50"] == pytest.approx(
            float(np.quantile(values, 0.5, method="lower")), rel=0.01
        )
        if task == "binary":
            _check_binary(m, counts, joined, key)
        elif task == "multiclass":
            _check_multiclass(m, counts, joined)
        else:
            _check_regression(m, counts, joined)
        checked += 1
    assert checked >= 60


def _check_binary(m: dict[str, float], counts: dict[str, int], joined: list[Any], key: Key) -> None:
    y = np.array([lab["label"] for _, lab in joined])
    yp = np.array([p["prediction"]["label"] for p, _ in joined])
    s = np.array([p["prediction"]["score"] for p, _ in joined])
    assert counts["accuracy"] == len(y)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, yp), **EXACT)
    assert m["precision"] == pytest.approx(skm.precision_score(y, yp, zero_division=0), **EXACT)
    assert m["recall"] == pytest.approx(skm.recall_score(y, yp, zero_division=0), **EXACT)
    assert m["f1"] == pytest.approx(skm.f1_score(y, yp, zero_division=0), **EXACT)
    assert m["positive_rate"] == pytest.approx(yp.mean(), **EXACT)
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, s), **EXACT)
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, s, labels=[0, 1]), **EXACT)
    tn, fp, fn, tp = skm.confusion_matrix(y, yp, labels=[0, 1]).ravel()
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (tp, fp, tn, fn)
    if len(set(y.tolist())) == 2:
        assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s), abs=0.005), key
    else:
        assert "roc_auc" not in m


def _check_multiclass(m: dict[str, float], counts: dict[str, int], joined: list[Any]) -> None:
    y = [str(lab["label"]) for _, lab in joined]
    yp = [str(p["prediction"]["label"]) for p, _ in joined]
    assert counts["accuracy"] == len(y)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, yp), **EXACT)
    for name, fn in (
        ("precision", skm.precision_score),
        ("recall", skm.recall_score),
        ("f1", skm.f1_score),
    ):
        for avg in ("macro", "micro", "weighted"):
            assert m[f"{name}_{avg}"] == pytest.approx(
                fn(y, yp, average=avg, zero_division=0), **EXACT
            ), (name, avg)


def _check_regression(m: dict[str, float], counts: dict[str, int], joined: list[Any]) -> None:
    y = np.array([lab["value"] for _, lab in joined])
    yp = np.array([p["prediction"]["value"] for p, _ in joined])
    assert counts["mae"] == len(y)
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, yp), **EXACT)
    assert m["mse"] == pytest.approx(skm.mean_squared_error(y, yp), **EXACT)
    assert m["rmse"] == pytest.approx(skm.root_mean_squared_error(y, yp), **EXACT)
    assert m["mape"] == pytest.approx(skm.mean_absolute_percentage_error(y, yp), **EXACT)
    if len(y) >= 2:
        assert m["r2"] == pytest.approx(skm.r2_score(y, yp), **EXACT)


# ---- late labels and revisions -----------------------------------------------------------

BIN = ModelsConfig(models={"m": ModelConfig(task="binary")})


def test_late_labels_make_revisions_at_most_once_per_flush_interval() -> None:
    rng = np.random.default_rng(1)
    h, f = Harness(0, BIN, window_seconds=W, allowed_lateness=30.0), Feed()
    truth = {f"a{i}": int(rng.random() < 0.5) for i in range(40)}
    scores = {pid: round(float(rng.random()), 3) for pid in truth}
    preds = [
        pred(pid, T0 + i, label=int(scores[pid] >= 0.5), score=scores[pid])
        for i, pid in enumerate(truth)
    ]
    ids = list(truth)
    h.process(
        f.events("prediction", preds)
        + f.events("label", [label(p, T0 + 45, label=truth[p]) for p in ids[:10]])
    )
    # The watermark closes the first window.
    h.process(f.events("prediction", [pred("b0", T0 + W + 30)]))
    assert [p["type"] for p in h.partials] == ["closed"]

    merger = WindowMerger(BIN, window_seconds=W, merge_wait=1.0, flush_interval=2.0)
    key = ("m", "v1", "", T0)

    def feed(now: float) -> None:
        for part in h.partials[feed.sent :]:  # type: ignore[attr-defined]
            merger.on_partial(orjson.loads(orjson.dumps(part)), now, out)
        feed.sent = len(h.partials)  # type: ignore[attr-defined]

    def emitted() -> list[dict[str, Any]]:
        return [
            m
            for m in out.metrics
            if (m["model_id"], m["model_version"], m["segment"], m["window_start"]) == key
        ]

    feed.sent = 0  # type: ignore[attr-defined]
    out = MergeOutput()
    feed(10.0)
    merger.tick(11.0, out)
    assert [m["revision"] for m in emitted()] == [0]
    _assert_binary(emitted()[-1], ids[:10], truth, scores)

    h.process(f.events("label", [label(p, T0 + 100, label=truth[p]) for p in ids[10:25]]))
    assert h.partials[-1]["type"] == "late" and h.counters["joins"] == 25
    feed(11.5)
    merger.tick(12.0, out)  # 1 s after revision 0: not yet
    assert [m["revision"] for m in emitted()] == [0]
    h.process(f.events("label", [label(p, T0 + 101, label=truth[p]) for p in ids[25:30]]))
    feed(12.5)
    merger.tick(13.0, out)
    # Two late partials merged since revision 0: revision 2 (it counts partials, not emissions).
    assert [m["revision"] for m in emitted()] == [0, 2]
    _assert_binary(emitted()[-1], ids[:30], truth, scores)

    h.process(f.events("label", [label(p, T0 + 102, label=truth[p]) for p in ids[30:]]))
    feed(13.1)
    # A re-sent partial is deduplicated.
    merger.on_partial(orjson.loads(orjson.dumps(h.partials[-1])), 13.2, out)
    merger.tick(14.0, out)
    merger.tick(14.9, out)
    assert [m["revision"] for m in emitted()] == [0, 2]
    merger.tick(15.0, out)
    merger.tick(30.0, out)  # nothing new: no more revisions
    assert [m["revision"] for m in emitted()] == [0, 2, 3]
    _assert_binary(emitted()[-1], ids, truth, scores)
    assert emitted()[-1]["metrics"]["label_coverage"] == 1.0


def _assert_binary(
    msg: dict[str, Any], ids: list[str], truth: dict[str, int], scores: dict[str, float]
) -> None:
    m = msg["metrics"]
    y = np.array([truth[p] for p in ids])
    s = np.array([scores[p] for p in ids])
    yp = (s >= 0.5).astype(int)
    assert m["prediction_count"] == 40 and m["labeled_count"] == len(ids) == msg["labeled_count"]
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, yp), **EXACT)
    assert m["f1"] == pytest.approx(skm.f1_score(y, yp, zero_division=0), **EXACT)
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, s, labels=[0, 1]), **EXACT)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s), abs=0.005)


def test_merger_deduplicates_partials_and_survives_state_round_trip() -> None:
    h, f = Harness(0, BIN, window_seconds=W), Feed()
    h.process(f.events("prediction", [pred("a", T0 + 1), pred("b", T0 + 2)]))
    h.close_idle()
    merger = WindowMerger(BIN, window_seconds=W)
    out = MergeOutput()
    for part in h.partials * 2:
        merger.on_partial(part, 0.0, out)
    key = next(iter(merger.windows))
    restored = MergedWindow.from_state(orjson.loads(orjson.dumps(merger.windows[key].to_state())))
    merger2 = WindowMerger(BIN, window_seconds=W)
    merger2.windows[key] = restored
    merger2.on_partial(h.partials[0], 0.5, out)  # already merged before the restart
    merger.tick(2.0, out)
    merger2.tick(2.0, out)
    a, b = out.metrics
    assert a["metrics"] == b["metrics"] and a["metrics"]["prediction_count"] == 2
    # A window that stays clean past its retention is dropped.
    merger3 = WindowMerger(BIN, window_seconds=W, keep_seconds=100.0)
    merger3.on_partial(h.partials[0], 0.0, out)
    merger3.tick(2.0, out)
    merger3.tick(50.0, out)
    assert merger3.windows
    merger3.tick(200.0, out)
    assert not merger3.windows and key in out.dropped_windows


def test_alarm_partials_become_drift_events_and_alerts_once() -> None:
    merger = WindowMerger(BIN, window_seconds=W)
    ev = {
        "event_id": "e1",
        "model_id": "m",
        "model_version": "v1",
        "partition": 0,
        "detector": "adwin",
        "kind": "drift",
        "direction": "up",
        "position": 118,
        "params": {},
        "estimate_before": 0.1,
        "estimate_after": 0.3,
        "window_start": T0,
        "window_end": T0 + W,
        "detected_at": T0 + 5,
        "emitted_at": 0.0,
    }
    msg = {
        "type": "alarm",
        "pid": "0:1",
        "model_id": "m",
        "drift_event": ev,
        "severity": "critical",
        "reason": "r",
    }
    out = MergeOutput()
    merger.on_partial(msg, 1.0, out)
    merger.on_partial(msg, 2.0, out)
    assert [e["event_id"] for e in out.drift_events] == ["e1"]
    assert [(a["status"], a["kind"], a["rule"]) for a in out.alerts] == [
        ("firing", "concept_drift", "adwin")
    ]


@pytest.mark.parametrize("seed", range(5))
def test_equal_revisions_hold_equal_content_across_a_crash(seed: int) -> None:
    """A merge stage that crashes after sending a revision but before recording it, then
    replays the partials in other batches, may send a revision number again: it must be
    the same message content, so ``argMax(value, revision)`` cannot pick a stale one."""
    rng = np.random.default_rng(seed)
    h, f = Harness(0, BIN, window_seconds=W, allowed_lateness=30.0), Feed()
    ids = [f"a{i}" for i in range(60)]
    h.process(f.events("prediction", [pred(pid, T0 + i % 50, score=0.5, label=1) for i, pid in enumerate(ids)]))
    h.process(f.events("prediction", [pred("b0", T0 + W + 30)]))  # closes the window
    lo = 0
    while lo < len(ids):  # late labels in random batches: one late partial each
        hi = lo + int(rng.integers(1, 8))
        h.process(f.events("label", [label(p, T0 + 100, label=int(rng.random() < 0.5)) for p in ids[lo:hi]]))
        lo = hi
    parts = [orjson.loads(orjson.dumps(p)) for p in h.partials]
    assert len(parts) >= 8

    def run(merger: WindowMerger, todo: list[dict[str, Any]], now: float) -> tuple[list[dict[str, Any]], float]:
        sent: list[dict[str, Any]] = []
        i = 0
        while i < len(todo):
            out = MergeOutput()
            step = int(rng.integers(1, 4))
            for p in todo[i : i + step]:
                merger.on_partial(p, now, out)
            i += step
            now += float(rng.choice([0.4, 2.5]))
            merger.tick(now, out)
            sent += out.metrics
        out = MergeOutput()
        merger.tick(now + 100, out)
        return sent + out.metrics, now + 100

    before_crash = int(rng.integers(2, len(parts) - 2))
    a = WindowMerger(BIN, window_seconds=W, merge_wait=1.0, flush_interval=2.0)
    sent_a, now = run(a, parts[:before_crash], 10.0)
    # State recorded a few partials before the crash; the replay starts there.
    recorded = int(rng.integers(1, before_crash))
    b0 = WindowMerger(BIN, window_seconds=W, merge_wait=1.0, flush_interval=2.0)
    run(b0, parts[:recorded], 10.0)
    b = WindowMerger(BIN, window_seconds=W, merge_wait=1.0, flush_interval=2.0)
    b.windows = {k: MergedWindow.from_state(orjson.loads(orjson.dumps(mw.to_state()))) for k, mw in b0.windows.items()}
    sent_b, _ = run(b, parts[recorded - 1 :] + parts[recorded:], now)  # re-read from before the record
    by_revision: dict[tuple[Any, ...], dict[str, Any]] = {}
    for m in sent_a + sent_b:
        k = (m["segment"], m["window_start"], m["revision"])
        if k in by_revision:
            assert by_revision[k]["metrics"] == m["metrics"] and by_revision[k]["counts"] == m["counts"]
        by_revision[k] = m
    last = max((m for m in sent_b if m["segment"] == ""), key=lambda m: m["revision"])
    assert last["revision"] == len(parts) - 1 and last["counts"]["accuracy"] == len(ids)


# ---- a crash between the merge stage's state writes -------------------------------------

ACCURACY_FLOOR = ModelsConfig(
    models={"m": ModelConfig(task="binary", thresholds=(ThresholdRule("accuracy", min=0.5, min_count=1),))}
)


def _partials_with_a_bad_window(rng: np.random.Generator) -> list[dict[str, Any]]:
    """Windows 0-5 (3 has no traffic). Window 2 turns bad only through late labels: its
    first revision has 4 right predictions, then 8 wrong ones come amid window 4's traffic, so
    its revisions disagree. Window 4's labels come at once; the others' 1-90 s late."""
    h, f = Harness(0, ACCURACY_FLOOR, window_seconds=W, allowed_lateness=5.0), Feed()
    events: list[tuple[float, str, dict[str, Any]]] = []
    for i in range(72):
        ts, window = T0 + i * 5.0, i // 12
        if window == 3:
            continue
        truth, delay = 1, float(rng.uniform(1.0, 90.0))
        if window == 2:
            truth, delay = (1, 0.5) if i % 12 < 4 else (0, T0 + 4 * W + float(rng.uniform(10.0, 40.0)) - ts)
        elif window == 4:
            delay = 0.5
        events.append((ts, "prediction", pred(f"p{i}", ts, score=0.8, label=1)))
        events.append((ts + delay, "label", label(f"p{i}", ts + delay, label=truth)))
    events.sort(key=lambda e: e[0])
    lo = 0
    while lo < len(events):
        hi = lo + int(rng.integers(1, 10))
        for kind in ("prediction", "label"):
            chunk = [ev for _, k, ev in events[lo:hi] if k == kind]
            if chunk:
                h.process(f.events(kind, chunk))
        lo = hi
    h.process(f.events("prediction", [pred("end", T0 + 20 * W)]))  # closes every window
    return [orjson.loads(orjson.dumps(p)) for p in h.partials]


def _merge_run(merger: WindowMerger, parts: list[dict[str, Any]], rng: np.random.Generator, now: float,
               table: dict[bytes, bytes], on_batch: Any = None, max_batch: int = 3) -> tuple[list[dict[str, Any]], float]:
    """The merge agent's loop over ``parts`` from ``merger.next_offset``: batches of random
    size, outputs sent, then the state records written to ``table`` (``_apply_merge``)."""
    sent: list[dict[str, Any]] = []
    while merger.next_offset < len(parts) or now < 1e6:
        out = MergeOutput()
        batch = range(merger.next_offset, min(len(parts), merger.next_offset + int(rng.integers(1, max_batch + 1))))
        for off in batch:
            merger.on_partial(parts[off], now, out)
        if batch:
            merger.next_offset = batch[-1] + 1
        now = now + float(rng.choice([0.3, 1.1, 2.5])) if merger.next_offset < len(parts) else 1e6
        merger.tick(now, out)
        sent += out.alerts
        records = merger.state_records(0, out, offsets=True)
        if on_batch is not None and on_batch(dict(table), records, list(sent), now):
            return sent, now
        for k, v in records:
            if v is None:
                table.pop(k, None)
            else:
                table[k] = v
    return sent, now


def _restored(table: dict[bytes, bytes]) -> WindowMerger:
    # Every dirty window is emitted at the next tick, so windows are judged in the order of
    # their partials whatever the batches (the alerts must not depend on replay timing).
    merger = WindowMerger(ACCURACY_FLOOR, window_seconds=W, merge_wait=0.2, flush_interval=0.1)
    for k, v in table.items():
        merger.restore_record(k, v, 0)
    return merger


@pytest.mark.parametrize("seed", range(3))
def test_a_crash_anywhere_in_the_merge_state_writes_raises_the_same_alerts(seed: int) -> None:
    """``_apply_merge`` sends the outputs, then writes ``state_records`` one by one: a SIGKILL
    may leave any prefix of them. For every batch and every cut, the restarted merge stage,
    replaying the partials in other batches, must send exactly the uninterrupted run's alerts
    (same ids, same detection times): never a second incident, nor a resolve by an older
    revision of the window that fired."""
    rng = np.random.default_rng(seed)
    parts = _partials_with_a_bad_window(rng)
    merger = _restored({})
    want, _ = _merge_run(merger, parts, rng, 10.0, {})
    merger.state_records(0, MergeOutput(changed_models={"m"}), offsets=False)
    assert merger.engine("m").judged == {}  # recorded windows cover every judgement: none kept
    fired = {a["alert_id"]: a for a in want if a["status"] == "firing"}
    assert [a["window_end"] for a in fired.values() if a["kind"] == "threshold"] == [T0 + 3 * W]
    assert [m for m in parts if m.get("window_start") == T0 + 2 * W][0]["type"] == "closed"
    assert any(a["status"] == "resolved" and a["window_end"] == T0 + 5 * W for a in want)
    expected = {(a["alert_id"], a["status"], a["detected_at"]) for a in want}

    crashes: list[tuple[dict[bytes, bytes], list[tuple[bytes, bytes | None]], list[dict[str, Any]], float]] = []

    def record(table: dict[bytes, bytes], records: list[Any], sent: list[dict[str, Any]], now: float) -> bool:
        crashes.append((table, records, sent, now))
        return False

    _merge_run(_restored({}), parts, np.random.default_rng(seed + 100), 10.0, {}, on_batch=record)
    cuts = 0
    for table, records, sent, now in crashes:
        for cut in range(len(records) + 1):
            state = dict(table)
            for k, v in records[:cut]:
                if v is None:
                    state.pop(k, None)
                else:
                    state[k] = v
            for max_batch in (1, 3):  # one partial a batch: every revision is emitted
                replayed, _ = _merge_run(_restored(state), parts, np.random.default_rng(cut), now + 5.0, dict(state),
                                         max_batch=max_batch)
                got = {(a["alert_id"], a["status"], a["detected_at"]) for a in sent + replayed}
                assert got == expected, f"crash after {cut} of {len(records)} records, replay batches <= {max_batch}"
            cuts += 1
    assert cuts > len(crashes) > 5
