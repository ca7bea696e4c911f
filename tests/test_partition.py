"""Unit tests of the per-partition processor: join semantics, replay, detectors.

No broker: ``Harness`` plays the part of ``driftline.streams.app`` (``_processor`` and ``_apply_join``)
over a plain dict standing in for the join table.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson
import pytest

from driftline.detectors.policy import DEFAULT_BANK_CONFIG
from driftline.schemas import encode_envelope, encode_event
from driftline.streams.commit import apply_join_batches, join_table_writes
from driftline.streams.merge import MergeOutput, WindowMerger
from driftline.streams.models import ModelConfig, ModelsConfig
from driftline.streams.partition import BatchResult, Message, PartitionProcessor

T0 = 1_700_000_040.0  # event time of the test data (epoch s, on a window boundary)
CLOCK = 2.0e9  # the processors' wall clock: far ahead, so it never caps the watermark

# ---- harness -----------------------------------------------------------------------------


def write_sequence(proc: PartitionProcessor, res: BatchResult) -> list[tuple[bytes, bytes | None]]:
    """The table writes of one batch, in the worker's order (``commit.join_table_writes``)."""
    return join_table_writes(proc, res)


def apply_writes(store: dict[bytes, bytes], writes: Iterable[tuple[bytes, bytes | None]]) -> None:
    for key, value in writes:
        if value is None:
            store.pop(key, None)
        else:
            store[key] = value


class DictJoinIO:
    """``commit.JoinEffects`` over a dict table, recording what the worker would send."""

    def __init__(self, store: dict[bytes, bytes]) -> None:
        self.store = store
        self.sent: list[tuple[str, bytes | None, bytes, int | None]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None = None) -> None:
        self.sent.append((topic, key, value, partition))

    async def flush_outputs(self) -> None:
        return None

    def write_table(self, partition: int, writes: list[tuple[bytes, bytes | None]]) -> None:
        apply_writes(self.store, writes)

    async def flush_table(self) -> None:
        return None


def run_now(coro: Any) -> Any:
    """Run a coroutine that never waits (dict-backed effects) without an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("the coroutine waited")


def recover(
    partition: int, models: ModelsConfig, store: dict[bytes, bytes], **kw: Any
) -> PartitionProcessor:
    """A processor rebuilt from the persisted table, as ``driftline.streams.app._processor`` does."""
    proc = PartitionProcessor(partition, models, store_get=store.get, clock=lambda: CLOCK, **kw)
    proc.load_state(store.get(proc.state_key()))
    proc.rebuild_index((k, v) for k, v in store.items() if k[:2] in (b"p:", b"l:"))
    for key in proc.last_deleted:  # deletes the changelog may have lost
        store.pop(key, None)
    return proc


class Harness:
    """One partition's processor, its join table (a dict) and everything it emitted."""

    def __init__(self, partition: int, models: ModelsConfig, **kw: Any) -> None:
        self.partition = partition
        self.models = models
        self.kw = kw
        self.store: dict[bytes, bytes] = {}
        self.proc = recover(partition, models, self.store, **kw)
        self.partials: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []  # everything for the partials topic, in order
        self.outcomes: list[dict[str, Any]] = []
        self.dlq: list[dict[str, Any]] = []
        self.counters: dict[str, int] = {}

    def apply(self, res: BatchResult) -> BatchResult:
        """Apply ``res`` in the worker's order (``commit.apply_join_batches``)."""
        self.collect(res)
        run_now(apply_join_batches([(self.proc, res)], DictJoinIO(self.store)))
        self.proc.outbox_delivered()  # (also when the batch had no partials)
        return res

    def collect(self, res: BatchResult) -> None:
        # Window partials and alarms; the progress records (volume completeness) apart.
        self.sent += res.partials
        self.partials += [p for p in res.partials if p["type"] != "progress"]
        self.outcomes += res.outcomes
        self.dlq += [rec for _, rec in res.dlq]
        for k, v in res.counters.items():
            self.counters[k] = self.counters.get(k, 0) + v

    def process(self, msgs: list[Message]) -> BatchResult:
        return self.apply(self.proc.process(msgs))

    def close_idle(self) -> BatchResult:
        return self.apply(self.proc.close_idle())

    def restart(self) -> None:
        self.proc = recover(self.partition, self.models, self.store, **self.kw)


class Feed:
    """Builds the messages of one partition with per-topic offsets."""

    def __init__(self, partition: int = 0) -> None:
        self.partition = partition
        self.offsets = {"prediction": 0, "label": 0}

    def msg(self, kind: str, value: bytes | None, key: bytes | None = None) -> Message:
        off = self.offsets[kind]
        self.offsets[kind] += 1
        return Message(kind, kind + "s", self.partition, off, key, value)

    def events(
        self, kind: str, events: list[dict[str, Any]], envelope: bool = True
    ) -> list[Message]:
        if envelope:
            return [self.msg(kind, encode_envelope(events))]
        return [self.msg(kind, encode_event(e)) for e in events]


def merge_all(
    partials: list[dict[str, Any]],
    models: ModelsConfig,
    *,
    window_seconds: float = 60.0,
    now: float = 1000.0,
) -> dict[tuple[str, str, str, float], dict[str, Any]]:
    """Feed partials to a merger, tick past every wait; the last revision of each window."""
    merger = WindowMerger(models, window_seconds=window_seconds, merge_wait=1.0, flush_interval=2.0)
    out = MergeOutput()
    for part in partials:
        merger.on_partial(orjson.loads(orjson.dumps(part)), now, out)
    merger.tick(now + 10.0, out)
    final: dict[tuple[str, str, str, float], dict[str, Any]] = {}
    for m in out.metrics:
        key = (m["model_id"], m["model_version"], m["segment"], m["window_start"])
        if key not in final or m["revision"] > final[key]["revision"]:
            final[key] = m
    return final


def pred(
    pid: str, ts: float, model: str = "m", *, version: str = "v1", **prediction: Any
) -> dict[str, Any]:
    if not prediction:
        prediction = {"label": 1, "score": 0.8}
    return {
        "prediction_id": pid,
        "model_id": model,
        "model_version": version,
        "timestamp": ts,
        "prediction": prediction,
        "latency_ms": 10.0,
        "segments": {"country": "DE"},
    }


def label(pid: str, ts: float, model: str | None = "m", **truth: Any) -> dict[str, Any]:
    ev = {"prediction_id": pid, "timestamp": ts, **(truth or {"label": 1})}
    if model is not None:
        ev["model_id"] = model
    return ev


BINARY = ModelsConfig(models={"m": ModelConfig(task="binary", segment_keys=("country",))})

# ---- 3. join semantics -------------------------------------------------------------------


def test_label_before_prediction_joins() -> None:
    h, f = Harness(0, BINARY), Feed()
    h.process(f.events("label", [label("a", T0 + 5)]))
    assert h.counters.get("early_labels") == 1 and b"l:a" in h.store
    h.process(f.events("prediction", [pred("a", T0 + 1)]))
    assert h.counters.get("joins") == 1
    assert [o["prediction_id"] for o in h.outcomes] == ["a"]
    assert b"l:a" not in h.store and b"p:a" not in h.store
    h.close_idle()
    m = merge_all(h.partials, BINARY)[("m", "v1", "", T0)]["metrics"]
    assert m["labeled_count"] == 1 and m["prediction_count"] == 1 and m["accuracy"] == 1.0


def test_label_before_prediction_in_one_batch() -> None:
    h, f = Harness(0, BINARY), Feed()
    h.process(f.events("label", [label("a", T0 + 5)]) + f.events("prediction", [pred("a", T0 + 1)]))
    assert h.counters.get("joins") == 1 and not [k for k in h.store if k[:2] in (b"p:", b"l:")]


def test_waiting_records_written_by_the_previous_version_still_join() -> None:
    """Records of the previous format (the id inside the value) left in a changelog by an
    older worker are read after an upgrade: the label joins its prediction, and an early
    label joins the prediction that follows it."""
    h, f = Harness(0, BINARY), Feed()
    expires = T0 + 7 * 86400
    h.store[b"p:old"] = orjson.dumps(
        [0, 900, expires, "old", "m", "v1", T0 + 1, "binary", 1, 0.9, None, None, 12.0, {"country": "FR"}]
    )
    h.store[b"l:early"] = orjson.dumps([0, 901, T0 + 3600, "early", "m", T0 + 2, 0, None, None])
    h.proc = recover(0, BINARY, h.store)
    assert h.proc.pending_count == 1 and len(h.proc.expiry) == 2
    h.process(f.events("label", [label("old", T0 + 5)]) + f.events("prediction", [pred("early", T0 + 3)]))
    assert h.counters.get("joins") == 2 and not [k for k in h.store if k[:2] in (b"p:", b"l:")]
    got = {o["prediction_id"]: (o["y_true"], o["y_pred"], o["score"], o["segments"]) for o in h.outcomes}
    assert got == {"old": ("1", "1", 0.9, {"country": "FR"}), "early": ("0", "1", 0.8, {"country": "DE"})}


def test_duplicate_prediction_counted_not_double_counted() -> None:
    h, f = Harness(0, BINARY), Feed()
    h.process(f.events("prediction", [pred("a", T0 + 1), pred("b", T0 + 2)]))
    h.process(f.events("prediction", [pred("a", T0 + 1)], envelope=False))  # a retry while pending
    h.process(f.events("label", [label("a", T0 + 3, label=0)]))
    h.process(f.events("prediction", [pred("a", T0 + 1)], envelope=False))  # a retry after the join
    assert h.counters["duplicate_predictions"] == 2
    assert h.counters["joins"] == 1 and len(h.outcomes) == 1
    h.close_idle()
    win = merge_all(h.partials, BINARY)[("m", "v1", "", T0)]
    m = win["metrics"]
    assert m["prediction_count"] == 2 and m["labeled_count"] == 1 and m["label_coverage"] == 0.5
    assert m["duplicate_predictions"] == 1  # the one the window saw (the other was already joined)
    assert m["accuracy"] == 0.0 and m["fp"] == 1.0


def test_second_label_is_duplicate() -> None:
    h, f = Harness(0, BINARY), Feed()
    h.process(f.events("prediction", [pred("a", T0 + 1)]))
    h.process(f.events("label", [label("a", T0 + 2)]))
    h.process(f.events("label", [label("a", T0 + 3, label=0)]))
    # Second label for an early label not yet joined is a duplicate as well.
    h.process(f.events("label", [label("z", T0 + 3)]) + f.events("label", [label("z", T0 + 4)]))
    assert h.counters["duplicate_labels"] == 2
    assert (
        h.counters["joins"] == 1 and len(h.outcomes) == 1 and h.outcomes[0]["prediction_id"] == "a"
    )


def test_orphan_label_expires_after_early_label_wait() -> None:
    models = ModelsConfig(models={"m": ModelConfig(task="binary", early_label_wait_s=100.0)})
    h, f = Harness(0, models), Feed()
    h.process(f.events("label", [label("ghost", T0 + 10)]))
    assert b"l:ghost" in h.store
    h.process(f.events("prediction", [pred("x", T0 + 109)]))  # watermark T0 + 109 < T0 + 110
    assert "orphan_labels" not in h.counters and b"l:ghost" in h.store
    h.process(f.events("prediction", [pred("y", T0 + 110)]))
    assert h.counters["orphan_labels"] == 1 and b"l:ghost" not in h.store
    # The prediction arriving after the label expired waits for a new label.
    h.process(f.events("prediction", [pred("ghost", T0 + 111)]))
    assert h.counters.get("joins", 0) == 0 and b"p:ghost" in h.store


def test_unlabeled_prediction_expires_after_label_horizon() -> None:
    models = ModelsConfig(models={"m": ModelConfig(task="binary", label_horizon_s=120.0)})
    h, f = Harness(0, models), Feed()
    h.process(f.events("prediction", [pred("a", T0 + 1)]))
    h.process(f.events("prediction", [pred("b", T0 + 120)]))  # event-time watermark T0 + 120 < 121
    assert "unlabeled_expired" not in h.counters and b"p:a" in h.store
    h.process(f.events("prediction", [pred("c", T0 + 121)]))
    assert h.counters["unlabeled_expired"] == 1 and b"p:a" not in h.store
    assert h.proc.pending_count == 2
    # A label after expiry is an early label now (it may never join).
    h.process(f.events("label", [label("a", T0 + 200)]))
    assert h.counters.get("joins", 0) == 0 and h.counters["early_labels"] == 1
    h.close_idle()
    wins = merge_all(h.partials, models)
    assert wins[("m", "v1", "", T0)]["metrics"]["unlabeled_expired"] == 1
    assert wins[("m", "v1", "", T0)]["metrics"]["prediction_count"] == 1


def test_bad_input_goes_to_dlq_with_reason() -> None:
    models = ModelsConfig(
        models={"m": ModelConfig(task="binary"), "r": ModelConfig(task="regression")},
        allow_unlisted_models=False,
    )
    h, f = Harness(0, models), Feed()
    h.process(
        f.events("prediction", [pred("r1", T0 + 1, "r", value=3.0), pred("a", T0 + 1)])
        + [f.msg("prediction", b"{not json")]
        + f.events("prediction", [pred("u1", T0 + 1, "unlisted")])  # unknown_model
        # task_mismatch
        + f.events("prediction", [pred("t1", T0 + 1, "m", scores={"x": 0.4, "y": 0.6})])
        + [
            f.msg(
                "prediction",
                encode_envelope(
                    [pred("g1", T0 + 2), {"prediction_id": "bad"}, pred("g2", T0 + 3), 42]
                ),
            )
        ]
    )
    h.process(
        f.events("label", [label("r1", T0 + 5, "r", label=1)])  # class label for a regressor
        + f.events("label", [label("a", T0 + 5, "m", value=1.0)])  # value for a classifier
    )
    reasons = sorted(d["reason"] for d in h.dlq)
    assert reasons == sorted(
        [
            "malformed_json",
            "unknown_model",
            "task_mismatch",
            "missing_field",
            "not_an_object",
            "label_kind_mismatch",
            "label_kind_mismatch",
        ]
    )
    for d in h.dlq:
        assert d["topic"] in ("predictions", "labels") and d["partition"] == 0
    # The good events of the mixed envelope were processed.
    assert {b"p:g1", b"p:g2", b"p:a", b"p:r1"} <= set(h.store)
    assert h.counters["dlq_label_kind_mismatch"] == 2
    # The mismatched labels did not consume the waiting predictions.
    h.process(
        f.events("label", [label("r1", T0 + 6, "r", value=2.5), label("a", T0 + 6, "m", label=1)])
    )
    assert h.counters["joins"] == 2


def test_task_learned_from_first_prediction_when_unconfigured() -> None:
    h, f = Harness(0, ModelsConfig()), Feed()
    h.process(f.events("prediction", [pred("a", T0 + 1, "free")]))
    h.process(f.events("prediction", [pred("b", T0 + 1, "free", value=2.0)]))
    assert [d["reason"] for d in h.dlq] == ["task_mismatch"]


def test_poison_event_does_not_stop_partition() -> None:
    h, f = Harness(0, BINARY), Feed()
    h.process(f.events("prediction", [pred("a", T0 + 1)]))
    h.store[b"p:b"] = b"[0,2]"  # a corrupt waiting record (of this partition)
    h.process(f.events("label", [label("b", T0 + 2), label("a", T0 + 2)]))
    assert [d["reason"] for d in h.dlq] == ["processing_error"]
    assert h.counters["joins"] == 1


# ---- 4. replay and crash recovery --------------------------------------------------------

REPLAY_MODELS = ModelsConfig(
    models={
        "m": ModelConfig(
            task="binary", segment_keys=("country",), label_horizon_s=90.0, early_label_wait_s=60.0
        )
    }
)


def _replay_input(n: int = 240, seed: int = 5) -> list[list[Message]]:
    """Batches of one partition: predictions over 4 windows, labels (some early, some late)."""
    rng = np.random.default_rng(seed)
    f = Feed()
    preds = [
        pred(
            f"p{i}", T0 + i, "m", label=int(rng.random() < 0.5), score=round(float(rng.random()), 3)
        )
        for i in range(n)
    ]
    labs = [
        label(f"p{i}", T0 + i + float(rng.exponential(20)), label=int(rng.random() < 0.5))
        for i in range(n)
        if rng.random() < 0.9
    ]
    # Arrival order by time; a few labels are moved ahead of their prediction (early labels).
    items = [(e["timestamp"], 0, "prediction", e) for e in preds] + [
        (e["timestamp"], 1, "label", e) for e in labs
    ]
    items.sort(key=lambda t: (t[0], t[1]))
    for k in range(0, len(items) - 3, 37):
        if items[k + 2][2] == "label":
            items[k], items[k + 2] = items[k + 2], items[k]
    batches: list[list[Message]] = []
    for lo in range(0, len(items), 25):
        chunk = items[lo : lo + 25]
        msgs: list[Message] = []
        i = 0
        while i < len(chunk):  # consecutive events of one kind: envelope or single events
            j = i
            while j < len(chunk) and chunk[j][2] == chunk[i][2] and j - i < 4:
                j += 1
            msgs += f.events(
                chunk[i][2], [c[3] for c in chunk[i:j]], envelope=(lo // 25 + i) % 2 == 0
            )
            i = j
        batches.append(msgs)
    return batches


def _run(
    batches: list[list[Message]], restart_after: int | None = None
) -> tuple[Harness, dict[Any, Any]]:
    """Run the batches; ``restart_after=b``: restart cleanly after batch b and re-feed it."""
    h = Harness(0, REPLAY_MODELS, allowed_lateness=10.0)
    b = 0
    while b < len(batches):
        h.process(batches[b])
        if restart_after == b:
            restart_after = None
            h.restart()
            before = len(h.outcomes)
            res = h.process(batches[b])
            assert res.counters == {"replayed_skipped": len(batches[b])}
            assert len(h.outcomes) == before and not res.dlq
        b += 1
    h.close_idle()
    return h, merge_all(h.partials, REPLAY_MODELS)


@pytest.fixture(scope="module")
def replay_batches() -> list[list[Message]]:
    return _replay_input()


@pytest.fixture(scope="module")
def uninterrupted(replay_batches: list[list[Message]]) -> tuple[Harness, dict[Any, Any]]:
    return _run(replay_batches)


def test_replay_input_exercises_every_path(uninterrupted: tuple[Harness, dict[Any, Any]]) -> None:
    h, wins = uninterrupted
    for name in ("early_labels", "joins", "unlabeled_expired", "windows_closed"):
        assert h.counters.get(name, 0) > 0, name
    assert any(p["type"] == "late" for p in h.partials)
    assert len(wins) == 8  # 4 windows x (whole model, country=DE)
    total = sum(w["metrics"]["labeled_count"] for k, w in wins.items() if k[2] == "")
    assert total == h.counters["joins"] == len(h.outcomes)


@pytest.mark.parametrize("after", [0, 3, 6, 9])
def test_restart_after_persisted_batch_skips_replay(
    replay_batches: list[list[Message]], uninterrupted: tuple[Harness, dict[Any, Any]], after: int
) -> None:
    h, wins = _run(replay_batches, restart_after=after)
    assert h.counters["replayed_skipped"] == len(replay_batches[after])
    assert wins == uninterrupted[1]
    assert [o["prediction_id"] for o in h.outcomes] == [
        o["prediction_id"] for o in uninterrupted[0].outcomes
    ]


def test_crash_with_every_prefix_of_writes(
    replay_batches: list[list[Message]], uninterrupted: tuple[Harness, dict[Any, Any]]
) -> None:
    """Batch b leaves only a prefix of its writes (sets, partition record, deletes); the
    restarted processor re-reads batch b: the merged windows equal the uninterrupted run's."""
    expected_wins = uninterrupted[1]
    want = {o["prediction_id"] for o in uninterrupted[0].outcomes}
    tried = 0
    ref = Harness(0, REPLAY_MODELS, allowed_lateness=10.0)
    done = 0
    for b in (3, 8):
        for batch in replay_batches[done:b]:
            ref.process(batch)
        done = b
        base_store, base = dict(ref.store), (list(ref.partials), list(ref.outcomes))
        res = _restarted(ref, base_store).proc.process(replay_batches[b])
        writes = write_sequence(ref.proc, res)
        assert res.sets and res.deletes and res.outcomes
        lost = {o["prediction_id"] for o in res.outcomes}
        for length in range(len(writes) + 1):
            store = dict(base_store)
            apply_writes(store, writes[:length])
            h = _restarted(ref, store)
            h.partials, h.outcomes = list(base[0]), list(base[1])
            for batch in replay_batches[b:]:
                h.process(batch)
            h.close_idle()
            assert merge_all(h.partials, REPLAY_MODELS) == expected_wins, (b, length)
            # The worker delivers a batch's outcomes before its first table write
            # (``commit.apply_join_batches``), so every prefix has them: at-least-once, never lost.
            got = {o["prediction_id"] for o in h.outcomes} | lost
            assert got == want, (b, length)
            tried += 1
    assert tried > 10


def _restarted(ref: Harness, store: dict[bytes, bytes]) -> Harness:
    h = Harness(0, REPLAY_MODELS, allowed_lateness=10.0)
    h.store = store
    h.restart()
    return h


# ---- 5. detectors ------------------------------------------------------------------------


def _error_stream(
    seed: int, p_before: float, p_after: float, n: int = 10_000, at: int = 5_000
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = np.where(np.arange(n) < at, p_before, p_after)
    return (rng.random(n) < p).astype(int)


def _river_positions(errors: np.ndarray) -> dict[tuple[str, str], list[int]]:
    from river.drift import ADWIN
    from river.drift.binary import DDM, EDDM

    dets: dict[str, Any] = {
        "adwin": ADWIN(**DEFAULT_BANK_CONFIG["adwin"]),
        "ddm": DDM(**DEFAULT_BANK_CONFIG["ddm"]),
        "eddm": EDDM(**DEFAULT_BANK_CONFIG["eddm"]),
    }
    out: dict[tuple[str, str], list[int]] = {}
    for name, det in dets.items():
        in_warning = False
        for i, x in enumerate(errors.tolist()):
            det.update(x)
            if det.drift_detected:
                out.setdefault((name, "drift"), []).append(i)
                in_warning = False
            elif hasattr(det, "warning_detected"):
                if det.warning_detected and not in_warning:
                    out.setdefault((name, "warning"), []).append(i)
                in_warning = bool(det.warning_detected)
    return out


def _processor_alarms(errors: np.ndarray, batch: int = 700) -> tuple[Harness, list[dict[str, Any]]]:
    """Predictions all say 0; the label is the error bit; labels arrive in stream order."""
    models = ModelsConfig(models={"m": ModelConfig(task="binary")})
    h, f = Harness(0, models), Feed()
    n = len(errors)
    for lo in range(0, n, batch):
        idx = range(lo, min(lo + batch, n))
        preds = [pred(f"e{i}", T0 + i * 0.05, label=0, score=0.2) for i in idx]
        labs = [label(f"e{i}", T0 + i * 0.05 + 1.0, label=int(errors[i])) for i in idx]
        half = len(labs) // 2
        h.process(
            f.events("prediction", preds)
            + f.events("label", labs[:half])
            + f.events("label", labs[half:], envelope=False)
        )
    assert h.counters["joins"] == n
    h.close_idle()  # the last allowed_lateness of outcomes reach the detectors when idle
    return h, [p for p in h.partials if p["type"] == "alarm"]


@pytest.fixture(scope="module")
def drift_run() -> tuple[np.ndarray, Harness, list[dict[str, Any]]]:
    errors = _error_stream(11, 0.1, 0.3)
    return (errors, *_processor_alarms(errors))


def test_detector_positions_equal_river(
    drift_run: tuple[np.ndarray, Harness, list[dict[str, Any]]],
) -> None:
    errors, h, alarms = drift_run
    got: dict[tuple[str, str], list[int]] = {}
    for a in alarms:
        ev = a["drift_event"]
        got.setdefault((ev["detector"], ev["kind"]), []).append(ev["position"])
    expected = _river_positions(errors)
    assert got == expected
    assert expected[("adwin", "drift")] and any(
        5000 <= p < 6500 for p in expected[("adwin", "drift")]
    )
    # The alarm's event carries the detector params and the outcome it fired on.
    adwin_up = [
        a
        for a in alarms
        if a["drift_event"]["detector"] == "adwin" and a["drift_event"]["direction"] == "up"
    ]
    assert adwin_up and adwin_up[0]["severity"] == "critical"
    ev = adwin_up[0]["drift_event"]
    pos = ev["position"]
    assert ev["detected_at"] == pytest.approx(T0 + pos * 0.05 + 1.0)
    assert ev["window_start"] == (T0 + pos * 0.05) // 60 * 60
    assert h.counters["detector_adwin_drift"] == len(expected[("adwin", "drift")])


def test_detector_state_survives_restart(
    drift_run: tuple[np.ndarray, Harness, list[dict[str, Any]]],
) -> None:
    errors, _, alarms = drift_run
    models = ModelsConfig(models={"m": ModelConfig(task="binary")})
    h, f = Harness(0, models), Feed()
    for lo in range(0, len(errors), 2500):  # other batch boundaries, a restart after each
        idx = range(lo, lo + 2500)
        h.process(
            f.events("prediction", [pred(f"e{i}", T0 + i * 0.05, label=0, score=0.2) for i in idx])
            + f.events(
                "label", [label(f"e{i}", T0 + i * 0.05 + 1.0, label=int(errors[i])) for i in idx]
            )
        )
        h.restart()
    h.close_idle()
    # A restart re-sends the last partition record's outbox; the merge stage drops it by pid.
    unique = {a["pid"]: a for a in h.partials if a["type"] == "alarm"}
    assert len(unique) < len([a for a in h.partials if a["type"] == "alarm"])
    got = [(a["drift_event"]["event_id"], a["severity"]) for a in unique.values()]
    assert got == [(a["drift_event"]["event_id"], a["severity"]) for a in alarms]


def test_restart_refuses_old_pickle_detector_state_without_unpickling() -> None:
    """A partition record from before state format 2 holds base64(pickle) detector banks: the
    restart raises DetectorStateError (the worker exits with EX_CONFIG) and runs nothing."""
    import base64
    import pickle

    from driftline.detectors import DetectorStateError

    errors = _error_stream(5, 0.1, 0.1, n=400)
    models = ModelsConfig(models={"m": ModelConfig(task="binary")})
    h, f = Harness(0, models), Feed()
    h.process(f.events("prediction", [pred(f"e{i}", T0 + i * 0.05, label=0, score=0.2) for i in range(400)])
              + f.events("label", [label(f"e{i}", T0 + i * 0.05 + 1.0, label=int(errors[i])) for i in range(400)]))
    h.close_idle()
    record = orjson.loads(h.store[h.proc.state_key()])
    bank = record["banks"]["m\x1fv1"]
    assert bank["format"] == 2 and bank["n"] == 400
    h.restart()  # format 2 restores
    payload = pickle.dumps(_Unpickled())
    record["banks"]["m\x1fv1"] = {"config": bank["config"], "n": 400, "in_warning": bank["in_warning"],
                                  "detectors": base64.b64encode(payload).decode("ascii")}
    h.store[h.proc.state_key()] = orjson.dumps(record)
    with pytest.raises(DetectorStateError, match="old pickle format"):
        h.restart()
    assert _UNPICKLED == []
    pickle.loads(payload)  # the payload is live: loading it the old way would have run it
    assert _UNPICKLED == ["ran"]


_UNPICKLED: list[str] = []


def _mark_unpickled() -> None:
    _UNPICKLED.append("ran")


class _Unpickled:
    def __reduce__(self) -> tuple[Any, ...]:
        return (_mark_unpickled, ())


def test_stable_stream_raises_no_critical_alarm() -> None:
    errors = _error_stream(3, 0.1, 0.1)
    _, alarms = _processor_alarms(errors)
    assert [a for a in alarms if a["severity"] == "critical"] == []


def test_regression_model_runs_adwin_only_and_tolerates_no_detector() -> None:
    models = ModelsConfig(
        models={
            "r": ModelConfig(task="regression"),
            "q": ModelConfig(task="regression", detectors={"ddm": {}}),
        }
    )
    h, f = Harness(0, models), Feed()
    h.process(
        f.events("prediction", [pred("a", T0, "r", value=1.0), pred("b", T0, "q", value=1.0)])
    )
    h.process(
        f.events("label", [label("a", T0 + 1, "r", value=2.0), label("b", T0 + 1, "q", value=2.0)])
    )
    assert h.counters["joins"] == 2
    h.close_idle()
    assert list(h.proc.banks[("r", "v1")].detectors) == ["adwin"]
    assert ("q", "v1") not in h.proc.banks
