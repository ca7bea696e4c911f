"""Event time in the join stage: per-model progress, late predictions revise, the bound.

Processor-level (no broker), with the ``Harness`` of ``tests/test_partition.py``; the final
windows are compared between arrival orders and with sklearn on the same events.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from sklearn.metrics import accuracy_score
from test_partition import T0, Feed, Harness, label, merge_all, pred

from driftline.streams.models import ModelConfig, ModelsConfig

TWO_MODELS = ModelsConfig(models={
    "a": ModelConfig(task="binary", segment_keys=("country",), label_horizon_s=3600.0),
    "b": ModelConfig(task="binary", segment_keys=("country",), label_horizon_s=3600.0),
})


def stream(model: str, n: int, seed: int) -> tuple[list[dict], list[dict]]:
    """``n`` predictions over 5 minutes of event time and their labels (20 s later)."""
    rng = random.Random(seed)
    preds, labels = [], []
    for i in range(n):
        ts = T0 + i * (300.0 / n)
        y = int(rng.random() < 0.3)
        yhat = y if rng.random() < 0.8 else 1 - y
        preds.append(pred(f"{model}-{i}", ts, model, label=yhat, score=0.9 if yhat else 0.1))
        labels.append(label(f"{model}-{i}", ts + 20.0, model, label=y))
    return preds, labels


def run(batches: list[tuple[str, list[dict]]], close_between: bool = False) -> Harness:
    h, f = Harness(0, TWO_MODELS, allowed_lateness=10.0), Feed()
    for kind, events in batches:
        h.process(f.events(kind, events))
        if close_between:  # the worker was caught up and idle between these batches
            h.close_idle()
    h.close_idle()
    return h


def windows(h: Harness) -> dict:
    final = merge_all(h.partials, TWO_MODELS)
    return {k: {m: v for m, v in w["metrics"].items() if m in ("prediction_count", "labeled_count", "accuracy")}
            for k, w in final.items()}


def test_one_models_progress_never_closes_anothers_windows() -> None:
    pa, la = stream("a", 600, 1)
    pb, lb = stream("b", 600, 2)
    # Model b's events arrive after all of model a's, for the same event times (a backfill).
    h = run([("prediction", pa), ("label", la), ("prediction", pb), ("label", lb)])
    assert h.counters.get("late_predictions", 0) == 0
    alone = run([("prediction", pb), ("label", lb)])
    got = windows(h)
    for key, metrics in windows(alone).items():
        assert got[key] == metrics
    assert sum(m["prediction_count"] for k, m in got.items() if k[0] == "b" and k[2] == "") == 600


@pytest.mark.parametrize("chunks", [2, 7])
def test_late_predictions_revise_their_window(chunks: int) -> None:
    """Windows closed by idleness between chunks (a paused fleet) end as one uninterrupted run's."""
    pa, la = stream("a", 900, 3)
    order = list(range(len(pa)))
    random.Random(4).shuffle(order)  # out of order inside the stream: some arrive after their window closed
    shuffled = [pa[i] for i in order]
    step = len(pa) // chunks + 1
    paused = run([("prediction", shuffled[i:i + step]) for i in range(0, len(pa), step)] + [("label", la)],
                 close_between=True)
    assert paused.counters.get("late_predictions", 0) > 0  # the pauses did make some late
    straight = run([("prediction", pa), ("label", la)])
    assert windows(paused) == windows(straight)

    # And both equal sklearn on the same events, window by window.
    y_true = {e["prediction_id"]: e["label"] for e in la}
    for (_model, _v, segment, ws), metrics in windows(paused).items():
        if segment:
            continue
        in_window = [p for p in pa if ws <= p["timestamp"] < ws + 60.0]
        assert metrics["prediction_count"] == len(in_window)
        truth = [y_true[p["prediction_id"]] for p in in_window]
        assert metrics["accuracy"] == pytest.approx(accuracy_score(truth, [p["prediction"]["label"] for p in in_window]))


def test_a_prediction_past_the_horizon_goes_to_the_dead_letter_topic() -> None:
    h, f = Harness(0, TWO_MODELS, allowed_lateness=10.0), Feed()
    h.process(f.events("prediction", [pred("new", T0 + 7200.0, "a")]))
    h.process(f.events("prediction", [pred("old", T0, "a"), pred("recent", T0 + 7000.0, "a")]))
    assert [d["reason"] for d in h.dlq] == ["too_late"]
    assert h.counters.get("dlq_too_late") == 1 and h.counters.get("late_predictions") == 1
    h.close_idle()
    counts = {k[3]: m["prediction_count"] for k, m in windows(h).items() if k[2] == ""}
    assert T0 not in counts and counts[np.floor((T0 + 7000.0) / 60) * 60] == 1


def test_the_series_cap_never_starves_the_whole_model() -> None:
    models = ModelsConfig(models={"a": ModelConfig(task="binary", segment_keys=("country",))})
    h, f = Harness(0, models, max_series=3), Feed()
    events = [dict(pred(f"p{i}", T0 + i * 0.01, "a"), segments={"country": f"c{i}"}) for i in range(20)]
    h.process(f.events("prediction", events))
    h.close_idle()
    got = merge_all(h.partials, models)
    assert got[("a", "v1", "", T0)]["metrics"]["prediction_count"] == 20
    assert h.counters["series_overflow"] > 0  # the segments did hit the cap


def test_segment_values_past_the_cap_fold_into_the_overflow_segment() -> None:
    models = ModelsConfig(models={"a": ModelConfig(task="binary", segment_keys=("country",))})
    h, f = Harness(0, models, max_segment_values=3), Feed()
    countries = ["DE", "FR", "IT", "ES", "PT", "DE", "NL"]
    events = [dict(pred(f"p{i}", T0 + i * 0.01, "a"), segments={"country": c}) for i, c in enumerate(countries)]
    h.process(f.events("prediction", events[:4]))
    h.restart()  # the kept values survive a restart: a value's fate does not depend on when it is read
    h.process(f.events("prediction", events[4:]))
    h.close_idle()
    counts = {k[2]: m["metrics"]["prediction_count"] for k, m in merge_all(h.partials, models).items()}
    assert counts == {"": 7, "country=DE": 2, "country=FR": 1, "country=IT": 1, "country=__other__": 3}
    assert h.counters["segment_overflow"] == 3


def _volume_run(input_partitions: int | None) -> list[dict]:
    """Two partitions, twelve steady windows of model ``a``; partition 1's records of window 10
    reach the merge stage only after that window was first emitted."""
    import orjson

    from driftline.streams.merge import MergeOutput, WindowMerger

    models = ModelsConfig(models={"a": ModelConfig(task="binary", volume_min_count=10, volume_drop=0.8)})
    procs = [Harness(p, models, allowed_lateness=0.0) for p in (0, 1)]
    feeds = [Feed(0), Feed(1)]
    merger = WindowMerger(models, window_seconds=60.0, merge_wait=0.0, flush_interval=0.0,
                          input_partitions=input_partitions)
    alerts: list[dict] = []
    held: list[dict] = []
    now = 0.0

    def deliver(records: list[dict]) -> None:
        nonlocal now
        out = MergeOutput()
        for rec in records:
            merger.on_partial(orjson.loads(orjson.dumps(rec)), now, out)
        now += 1.0
        merger.tick(now, out)
        alerts.extend(out.alerts)

    for window in range(12):
        batch: list[dict] = []
        for p in (0, 1):
            events = [pred(f"w{window}-p{p}-{i}", T0 + window * 60 + i, "a") for i in range(30)]
            before = len(procs[p].sent)
            procs[p].process(feeds[p].events("prediction", events))
            new = procs[p].sent[before:]
            # From where partition 1 closes window 9, its records (in their order) come late.
            if p == 1 and (held or any(r.get("window_start") == T0 + 9 * 60 for r in new)):
                held += new
            else:
                batch += new
        deliver(batch)
    deliver(held)
    return alerts


def test_volume_is_judged_only_on_complete_windows() -> None:
    # Judged on the first emission (no completeness), the half-filled window is a "drop":
    # the scenario does exercise the rule.
    assert any(a["rule"] == "volume_drop" for a in _volume_run(input_partitions=None))
    assert [a for a in _volume_run(input_partitions=2) if a["kind"] == "volume"] == []


def test_settled_windows_leave_memory_and_late_records_still_revise_them() -> None:
    """A merger whose settled windows live only in the merge table (compressed) ends with the
    same final windows as one that keeps every window in memory."""
    import orjson

    from driftline.streams.merge import MergeOutput, WindowMerger

    pa, la = stream("a", 600, 5)
    h = run([("prediction", pa[:400]), ("label", la[:300])], close_between=True)
    late = run([("prediction", pa[400:]), ("label", la[300:])])  # another partition's, later
    store: dict[bytes, bytes] = {}
    lean = WindowMerger(TWO_MODELS, window_seconds=60.0, merge_wait=0.0, flush_interval=0.0, load=store.get)
    full = WindowMerger(TWO_MODELS, window_seconds=60.0, merge_wait=0.0, flush_interval=0.0)
    finals: dict[str, dict] = {"lean": {}, "full": {}}
    now = 0.0
    for first, batch in ((True, h.partials), (False, late.partials)):
        for name, merger in (("lean", lean), ("full", full)):
            for step in (0, 1, 2):  # a few ticks: emit, then settle
                out = MergeOutput()
                if step == 0:
                    for part in batch:
                        merger.on_partial(orjson.loads(orjson.dumps(part)), now, out)
                merger.tick(now + 700.0 * step, out)  # past coverage_after_s: whole-model windows judge coverage
                records = merger.state_records(0, out, offsets=False)
                if merger is lean:
                    for key, value in records:
                        if value is None:
                            store.pop(key, None)
                        else:
                            store[key] = value
                for m in out.metrics:
                    finals[name][(m["model_id"], m["segment"], m["window_start"])] = m["metrics"]
        if first:
            assert lean.retained and len(lean.windows) < len(full.windows)  # settled windows left memory
        now += 1.0
    assert finals["lean"] == finals["full"]
    assert all(v[:1] == b"\x02" for k, v in store.items() if k.startswith(b"w:"))  # packed records (format 2)


def _drift_run(lagged: bool) -> list[tuple[str, str, float]]:
    """Two partitions, six windows of model ``d``: feature c's top category share moves in
    windows 2-3. Partition 0 holds 110 of window 2's 300 events and 190 of window 3's (a
    partial of 110 is under ``min_samples``, one of 190 is not). ``lagged``: the merge stage
    reads all of partition 0's records before partition 1's, and partition 1's window
    partials one batch before its progress records. Returns the data-drift alerts."""
    import orjson

    from driftline.detectors.profile import Profile
    from driftline.streams.merge import MergeOutput, WindowMerger

    rng = np.random.default_rng(5)

    def rows(n: int, shift: float) -> list[str]:
        return [str(c) for c in rng.choice(list("abcd"), n, p=[0.4 - shift, 0.3, 0.2, 0.1 + shift])]

    ref = Profile.from_records([{"c": c, "prediction": 0.5} for c in rows(6000, 0.0)], model_id="d")
    ref.version = 1
    models = ModelsConfig(models={"d": ModelConfig(task="binary", data_drift={"baseline": "latest",
                                                                                "min_samples": 150})})
    procs = [Harness(p, models, allowed_lateness=0.0, references={"d": ref}) for p in (0, 1)]
    feeds = [Feed(0), Feed(1)]
    shifts, first_share = [0.0, 0.0, 0.3, 0.3, 0.0, 0.0], {2: 110, 3: 190}
    sent: list[list[dict]] = [[], []]
    for w, shift in enumerate(shifts):
        events = [dict(pred(f"w{w}-{i}", T0 + w * 60 + i * 0.1, "d", label=1, score=0.5), features={"c": c})
                  for i, c in enumerate(rows(300, shift))]
        k = first_share.get(w, 150)
        for p, part in ((0, events[:k]), (1, events[k:])):
            before = len(procs[p].sent)
            procs[p].process(feeds[p].events("prediction", part))
            sent[p].append(procs[p].sent[before:])
    for p in (0, 1):
        before = len(procs[p].sent)
        procs[p].close_idle()
        sent[p].append(procs[p].sent[before:])
    if lagged:
        later = [[r for r in b if r["type"] != "progress"] for b in sent[1]]
        later += [[r for r in b if r["type"] == "progress"] for b in sent[1]]
        batches = sent[0] + later
    else:
        batches = [a + b for a, b in zip(sent[0], sent[1], strict=True)]
    merger = WindowMerger(models, window_seconds=60.0, merge_wait=0.0, flush_interval=0.0, input_partitions=2,
                          references={"d": ref})
    alerts: list[dict] = []
    for now, batch in enumerate(batches, 1):
        out = MergeOutput()
        for rec in batch:
            merger.on_partial(orjson.loads(orjson.dumps(rec)), float(now), out)
        merger.tick(float(now), out)
        alerts += out.alerts
    return [(a["feature"], a["status"], a["window_start"] - T0) for a in alerts if a["kind"] == "data_drift"]


def test_a_data_drift_incident_starts_at_its_first_drifting_window_whichever_partition_lags() -> None:
    # Judged on partials, the lagged delivery fires at window 3 (partition 0's 190 events),
    # before window 2 has enough of its events to be judged.
    assert _drift_run(lagged=False) == [("c", "firing", 120.0), ("c", "resolved", 240.0)]
    assert _drift_run(lagged=True) == _drift_run(lagged=False)
