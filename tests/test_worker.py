"""The worker end to end on the real embedded stack: Tansu broker, faust agents, chdb sink."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from river.drift import ADWIN
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from worker_harness import Worker, committed_caught_up

from driftline.schemas.partitioning import partition_for
from driftline.streams.sdk import DriftlineProducer
from driftline.streams.simulate import FleetSimulator, run_simulation

pytestmark = pytest.mark.integration

MODELS_YAML = """\
allow_unlisted_models: true
defaults:
  label_horizon_s: 3600
  early_label_wait_s: 3600
models:
  fraud: {task: binary, segment_keys: [country]}
  intent: {task: multiclass}
  eta: {task: regression}
"""


@pytest.fixture
def models_file(tmp_path: Path) -> str:
    p = tmp_path / "models.yaml"
    p.write_text(MODELS_YAML)
    return str(p)


def test_drift_alerts_and_metrics_match_sklearn(bootstrap: str, topic_prefix: str, tmp_path: Path,
                                                models_file: str) -> None:
    worker = Worker(bootstrap, topic_prefix, tmp_path, config=models_file).start()
    try:
        seed, rate, duration, drift_at = 11, 200.0, 120.0, 60.0
        start_ts = float(int(time.time()) - 200)  # in the past: windows close by event time
        stats = run_simulation(bootstrap, topic_prefix, rate, duration, seed=seed, drift_at=drift_at,
                               realtime=False, progress=False, start_ts=start_ts)
        assert stats["dropped"] == 0 and stats["undelivered"] == 0
        worker.wait_for(lambda: worker.health()["counters"].get("joins", 0) >= stats["labels"], 90, "all joins")
        worker.wait_idle()

        alerts = worker.query("SELECT model_id, rule, kind, status, severity FROM driftline.alerts")
        drift = {(a["model_id"], a["rule"]) for a in alerts if a["kind"] == "concept_drift" and a["status"] == "firing"}
        assert ("fraud", "adwin") in drift, alerts
        assert ("fraud", "ddm") in drift or ("fraud", "eddm") in drift, alerts
        assert not {m for m, _ in drift} - {"fraud"}, f"concept-drift alerts on models that did not drift: {drift}"

        _assert_metrics_match_sklearn(worker, seed, rate, duration, drift_at, start_ts)
        _assert_doc_queries_run(worker)
    finally:
        worker.stop()


def _assert_metrics_match_sklearn(worker: Worker, seed: int, rate: float, duration: float, drift_at: float,
                                  start_ts: float) -> None:
    sim = FleetSimulator(seed, rate, duration, drift_at, start_ts=start_ts)
    preds: dict[str, dict] = {}
    labels: dict[str, dict] = {}
    for kind, ev in sim.events():
        (preds if kind == "prediction" else labels)[ev["prediction_id"]] = ev
    by_window: dict[float, list[tuple[int, int, float]]] = defaultdict(list)
    counts: dict[float, int] = defaultdict(int)
    for pid, p in preds.items():
        if p["model_id"] != "fraud" or p["model_version"] != "v1":
            continue
        ws = float(p["timestamp"] // 10 * 10)
        counts[ws] += 1
        if pid in labels:
            by_window[ws].append((int(labels[pid]["label"]), int(p["prediction"]["label"]), p["prediction"]["score"]))
    rows = worker.query(
        "SELECT toFloat64(window_start) AS ws, metric, value, count FROM driftline.metrics_latest "
        "WHERE model_id = 'fraud' AND model_version = 'v1' AND segment = ''")
    got: dict[float, dict[str, float]] = defaultdict(dict)
    for r in rows:
        got[round(r["ws"], 3)][r["metric"]] = r["value"]
    assert set(got) == set(counts), (sorted(got), sorted(counts))
    for ws, outcomes in by_window.items():
        y, yp, sc = (np.array(c) for c in zip(*outcomes, strict=True))
        m = got[ws]
        assert m["prediction_count"] == counts[ws]
        assert m["labeled_count"] == len(y)
        assert m["accuracy"] == pytest.approx(accuracy_score(y, yp), abs=1e-9)
        assert m["f1"] == pytest.approx(f1_score(y, yp, zero_division=0), abs=1e-9)
        if 0 < y.sum() < len(y):
            assert abs(m["roc_auc"] - roc_auc_score(y, sc)) <= 0.005


def _assert_doc_queries_run(worker: Worker) -> None:
    """docs/clickhouse.md's "Questions you can ask", against simulator data that went through the pipeline."""
    from test_queries import doc_queries

    empty = []
    for question, sql in doc_queries():
        if not worker.query(sql):
            empty.append(question)
    # Champion/challenger, drops against the previous day and a few others need more history or
    # versions than a two-minute simulation has; most questions must have answers.
    assert len(empty) <= len(doc_queries()) // 3, empty


def test_restart_recovers_pending_predictions_and_detector_state(bootstrap: str, topic_prefix: str,
                                                                 tmp_path: Path) -> None:
    """kill -9 mid-stream: pending predictions and detector state come back from the changelog."""
    worker = Worker(bootstrap, topic_prefix, tmp_path).start()
    rng = np.random.default_rng(5)
    now = time.time() - 3600
    n_before, n_after = 4000, 1500
    errors = np.concatenate([rng.random(n_before) < 0.1, rng.random(n_after) < 0.5])
    ids = [f"r-{i}" for i in range(n_before + n_after)]
    try:
        with DriftlineProducer(bootstrap, topic_prefix=topic_prefix) as sdk:
            for i, pid in enumerate(ids):
                sdk.log_prediction(pid, "m", {"label": 1, "score": 0.8}, model_version="v", timestamp=now + i * 0.01)
            sdk.flush()
            for i in range(n_before):
                sdk.log_label(ids[i], 0 if errors[i] else 1, timestamp=now + i * 0.01 + 1)
        worker.wait_for(lambda: worker.health()["counters"].get("joins", 0) == n_before, 60, "first joins")
        worker.wait_for(lambda: worker.health()["pending_predictions"] == n_after, 30, "pending")
        time.sleep(2.0)  # let a commit happen; recovery must not depend on it either way
        worker.kill(signal.SIGKILL)

        worker.start()
        worker.wait_for(lambda: worker.health()["pending_predictions"] == n_after, 30, "pending recovered")
        with DriftlineProducer(bootstrap, topic_prefix=topic_prefix) as sdk:
            for i in range(n_before, n_before + n_after):
                sdk.log_label(ids[i], 0 if errors[i] else 1, timestamp=now + i * 0.01 + 1)
        worker.wait_for(lambda: worker.health()["counters"].get("joins", 0) >= n_after, 60, "joins after restart")
        worker.wait_idle()
        assert worker.health()["pending_predictions"] == 0

        labelled = worker.query("SELECT sum(value) AS n FROM driftline.metrics_latest "
                                "WHERE model_id = 'm' AND metric = 'labeled_count' AND segment = ''")
        assert labelled[0]["n"] == n_before + n_after  # nothing lost, nothing counted twice

        # Each partition's ADWIN saw its own outcomes in log order, across the restart.
        expected = set()
        per_partition: dict[int, list[float]] = defaultdict(list)
        for i, pid in enumerate(ids):
            per_partition[partition_for(pid, 4)].append(float(errors[i]))
        for p, stream in per_partition.items():
            det = ADWIN()
            for j, e in enumerate(stream):
                det.update(e)
                if det.drift_detected:
                    expected.add((p, j))
        events = worker.query("SELECT partition, position FROM driftline.drift_events "
                              "WHERE model_id = 'm' AND detector = 'adwin' AND kind = 'drift'")
        assert {(e["partition"], e["position"]) for e in events} == expected
        assert any(j >= n_before / 4 for _, j in expected), "the drift after the restart was detected"
    finally:
        worker.stop()


def test_label_from_independent_java_partitioned_client_joins(bootstrap: str, topic_prefix: str,
                                                              tmp_path: Path) -> None:
    from kafka import KafkaProducer  # kafka-python: Java-compatible default partitioner

    worker = Worker(bootstrap, topic_prefix, tmp_path, sink=False).start()
    try:
        n = 300
        now = time.time() - 600
        with DriftlineProducer(bootstrap, topic_prefix=topic_prefix) as sdk:
            for i in range(n):
                sdk.log_prediction(f"j-{i}", "m", {"label": 1, "score": 0.9}, timestamp=now + i)
        kp = KafkaProducer(bootstrap_servers=bootstrap)
        for i in range(n):
            kp.send(f"{topic_prefix}labels", key=f"j-{i}".encode(),
                    value=orjson.dumps({"prediction_id": f"j-{i}", "timestamp": now + i + 5, "label": 1}))
        kp.flush()
        kp.close()
        h = worker.wait_for(lambda: (h := worker.health())["counters"].get("joins", 0) == n and h, 60, "joins")
        assert h["counters"].get("early_labels", 0) == 0
        assert h["pending_predictions"] == 0
    finally:
        worker.stop()


def test_a_partition_batch_larger_than_one_step_joins_across_its_steps(bootstrap: str, topic_prefix: str,
                                                                       tmp_path: Path) -> None:
    """A batch is processed in steps of ``STEP_LABEL_BYTES`` of labels per partition (one label
    message per step here): labels in a later step join predictions of an earlier one, and
    predictions in a later step join early labels of an earlier one, each exactly once."""
    n = 3000
    now = time.time() - 3600
    with DriftlineProducer(bootstrap, topic_prefix=topic_prefix, max_events_per_envelope=50) as sdk:
        for i in range(n):
            sdk.log_prediction(f"s-{i}", "m", {"label": 1, "score": 0.8}, timestamp=now + i * 0.01)
        sdk.flush()
        for i in range(n):
            sdk.log_label(f"s-{i}", i % 2, timestamp=now + i * 0.01 + 1)
    # Everything is in the topics before the worker starts: its first batches are large.
    worker = Worker(bootstrap, topic_prefix, tmp_path, prelude="import driftline.streams.app as A\nA.STEP_LABEL_BYTES = 1")
    try:
        worker.start()
        h = worker.wait_for(lambda: (h := worker.health())["counters"].get("joins", 0) >= n and h, 60, "the joins")
        worker.wait_idle()
        h = worker.health()
        assert h["counters"]["joins"] == n and h["pending_predictions"] == 0
        labelled = worker.query("SELECT sum(value) AS n FROM driftline.metrics_latest "
                                "WHERE model_id = 'm' AND metric = 'labeled_count' AND segment = ''")
        assert labelled[0]["n"] == n
    finally:
        worker.stop()


def test_bad_input_goes_to_dlq_with_reason(bootstrap: str, topic_prefix: str, tmp_path: Path, consume) -> None:
    from confluent_kafka import Producer

    cfg = tmp_path / "models.yaml"
    cfg.write_text("allow_unlisted_models: false\nmodels:\n  m: {task: binary}\n  r: {task: regression}\n")
    worker = Worker(bootstrap, topic_prefix, tmp_path, config=str(cfg), sink=False).start()
    try:
        now = time.time()
        good = {"prediction_id": "ok-1", "model_id": "m", "timestamp": now, "prediction": {"label": 1, "score": 0.7}}
        reg = {"prediction_id": "reg-1", "model_id": "r", "timestamp": now, "prediction": {"value": 3.0}}
        p = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 4_000_000})
        pred, lab = f"{topic_prefix}predictions", f"{topic_prefix}labels"
        sends = [
            (pred, b"{not json"),
            (pred, b"\xff\xfe\x00"),
            (pred, orjson.dumps({**good, "prediction_id": None})),
            (pred, orjson.dumps({**good, "prediction": {"score": 1.5}})),
            (pred, orjson.dumps({**good, "model_id": "nobody"})),
            (pred, orjson.dumps({"events": [good, {**good, "prediction_id": "x" * 10_000}, reg]})),
            (pred, b'{"events": [' + b'"pad",' * 300_000 + b"1]}"),
            (lab, orjson.dumps({"prediction_id": "reg-1", "timestamp": now + 1, "label": 1})),
            (lab, orjson.dumps({"prediction_id": "ok-1", "timestamp": now + 1, "label": 1})),
        ]
        for topic, value in sends:
            p.produce(topic, value=value, partition=0)
        p.flush()
        dlq = consume(f"{topic_prefix}dlq", 8, timeout=60)
        reasons = sorted(orjson.loads(m.value())["reason"] for m in dlq)
        assert reasons == sorted(["malformed_json", "not_utf8", "missing_field", "out_of_range", "unknown_model",
                                  "too_long", "oversize_message", "label_kind_mismatch"]), reasons
        h = worker.wait_for(lambda: (h := worker.health())["counters"].get("joins") == 1 and h, 30, "the good join")
        assert h["status"] == "ok"
        assert h["counters"]["dlq_unknown_model"] == 1
    finally:
        worker.stop()


def test_query_cli_reads_through_the_worker_and_refuses_writes(bootstrap: str, topic_prefix: str,
                                                               tmp_path: Path) -> None:
    worker = Worker(bootstrap, topic_prefix, tmp_path).start()
    try:
        env = {**worker.env, "DRIFTLINE_WORKER_URL": worker.url}
        ok = subprocess.run([sys.executable, "-m", "driftline.streams.cli", "query", "SELECT count() AS n FROM driftline.metrics",
                             "--format", "csv"], env=env, capture_output=True, text=True, timeout=60)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.splitlines()[0] == "n"
        bad = subprocess.run([sys.executable, "-m", "driftline.streams.cli", "query", "DROP TABLE driftline.metrics"],
                             env=env, capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and "read-only" in bad.stderr
        assert worker.query("SELECT count() AS n FROM system.tables WHERE database = 'driftline' AND name = 'metrics'")[0]["n"] == 1
    finally:
        worker.stop()


def test_rocksdb_store_recovers_pending_after_kill(bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    """The RocksDB store (large pending sets): local tables are rebuilt from the changelog."""
    worker = Worker(bootstrap, topic_prefix, tmp_path, sink=False, extra_env={"DRIFTLINE_STORE": "rocksdb://"}).start()
    try:
        now = time.time() - 100
        n = 2000
        with DriftlineProducer(bootstrap, topic_prefix=topic_prefix) as sdk:
            for i in range(n):
                sdk.log_prediction(f"k{i}", "m", {"label": 1, "score": 0.9}, timestamp=now + i * 0.01)
        worker.wait_for(lambda: worker.health()["pending_predictions"] == n, 60, "pending")
        assert any((tmp_path / "state").rglob("*.db")), "tables are on disk"
        worker.kill(signal.SIGKILL)
        worker.start()
        worker.wait_for(lambda: worker.health()["pending_predictions"] == n, 30, "pending recovered")
        with DriftlineProducer(bootstrap, topic_prefix=topic_prefix) as sdk:
            for i in range(n):
                sdk.log_label(f"k{i}", 1, timestamp=now + i * 0.01 + 1)
        worker.wait_for(lambda: worker.health()["counters"].get("joins", 0) == n, 60, "joins")
        assert worker.health()["pending_predictions"] == 0
    finally:
        worker.stop()



# Run in the worker before the CLI: from the first "boom" outcome on, the join stage applies
# nothing more, and the merge stage never applies anything, while faust goes on acking and
# committing the batches (what happens when an agent is cancelled or crashes mid-batch).
STUCK_APPLY = """
import driftline.streams.app as A
_join, _dead = A.DriftlineApp._apply_joins, []
async def _apply_joins(self, steps):
    if _dead or any(o["prediction_id"].startswith("boom") for _, r in steps for o in r.outcomes):
        _dead.append(1)
        for proc, _ in steps:  # offsets committed all the same (an operator's reset, an old worker)
            self.join_input.applied(proc.partition, proc.applied)
        return
    await _join(self, steps)
async def _apply_merge(self, *args, **kwargs):
    return
A.DriftlineApp._apply_joins = _apply_joins
A.DriftlineApp._apply_merge = _apply_merge
"""


def labeled_total(consume: Any, topic_prefix: str) -> int:
    """Labels in the newest revision of every whole-model window on the metrics topic."""
    latest: dict[tuple[str, float], tuple[int, int]] = {}
    for m in consume(f"{topic_prefix}metrics", 10**9, timeout=3):
        v = orjson.loads(m.value())
        key = (v["segment"], v["window_start"])
        if v["segment"] == "" and v["revision"] >= latest.get(key, (-1, 0))[0]:
            latest[key] = (v["revision"], v["labeled_count"])
    return sum(n for _, n in latest.values())


def test_committed_offsets_past_the_state_are_read_again(bootstrap: str, topic_prefix: str, tmp_path: Path,
                                                          consume: Any) -> None:
    """The worker resumes each input partition where its state says, not where the group committed.

    First life: the join stage applies the "a" pairs, then nothing from the first "boom" outcome
    on, but commits the offsets it read (as an operator's offset reset would); the merge stage
    applies nothing and faust commits its offsets all the same. SIGKILL, restart
    without the fault: the "boom" pairs are read again and joined once, the "a" partials are read
    again and merged, and no applied input is read twice."""
    worker = Worker(bootstrap, topic_prefix, tmp_path, sink=False, prelude=STUCK_APPLY).start()
    group, now = worker.env["DRIFTLINE_APP_ID"], time.time() - 600
    inputs = [f"{topic_prefix}{t}" for t in ("predictions", "labels", "partials")]
    try:
        with DriftlineProducer(bootstrap, topic_prefix=topic_prefix) as sdk:
            for i in range(20):
                sdk.log_prediction(f"a{i}", "m", {"label": 1, "score": 0.9}, timestamp=now + i)
                sdk.log_label(f"a{i}", 1, timestamp=now + i + 1)
        worker.wait_for(lambda: worker.health()["counters"].get("joins", 0) == 20, 60, "the first joins")
        with DriftlineProducer(bootstrap, topic_prefix=topic_prefix) as sdk:
            for i in range(30):
                sdk.log_prediction(f"boom{i}", "m", {"label": 0, "score": 0.2}, timestamp=now + 100 + i)
                sdk.log_label(f"boom{i}", 1, timestamp=now + 101 + i)
        worker.wait_for(lambda: all(committed_caught_up(bootstrap, group, t) for t in inputs), 60,
                        "every offset committed")
        assert worker.health()["counters"]["joins"] == 20
        worker.kill(signal.SIGKILL)
        worker.prelude = ""
        worker.start()
        h = worker.wait_for(lambda: (h := worker.health())["counters"].get("joins", 0) == 30 and h, 60,
                            "the input committed past the state, joined")
        assert h["counters"].get("offset_rewinds", 0) >= 2  # join input and partials
        assert h["counters"].get("replayed_skipped", 0) == 0  # rewound to the state, not before it

        worker.wait_for(lambda: labeled_total(consume, topic_prefix) == 50, 60, "windows holding all 50 labels")
        time.sleep(2.0)
        assert worker.health()["counters"]["joins"] == 30
    finally:
        worker.stop()


# Run in the worker before the CLI: the agents never see the first prediction with "skipme" in
# it, nor the fifth partials record: what faust's consumer does when it drops fetched records
# (flow stopped, partition paused) and counts their offsets as acked.
SKIPPED_RECORDS = """
import driftline.streams.app as A
_join, _merge, _seen = A.DriftlineApp._join_batch, A.DriftlineApp._merge_batch, []
def _keep(m, what):
    if what not in _seen and (m.topic.endswith("predictions") and b"skipme" in m.value if what == "p" else m.offset == 4):
        _seen.append(what)
        return False
    return True
async def _join_batch(self, records):
    await _join(self, {tp: [r for r in recs if _keep(r, "p")] for tp, recs in records.items()})
async def _merge_batch(self, events):
    await _merge(self, [e for e in events if _keep(e.message, "m")])
A.DriftlineApp._join_batch = _join_batch
A.DriftlineApp._merge_batch = _merge_batch
"""


def test_records_the_consumer_skipped_are_read_again(bootstrap: str, topic_prefix: str, tmp_path: Path,
                                                     consume: Any) -> None:
    """A record faust never hands to an agent is noticed at the next offset of its partition
    and read again with a separate consumer: the prediction still joins, the partial is merged."""
    worker = Worker(bootstrap, topic_prefix, tmp_path, sink=False, prelude=SKIPPED_RECORDS).start()
    now = time.time() - 600
    try:
        ids = [f"skipme{i}" if i == 10 else f"s{i}" for i in range(80)]
        with DriftlineProducer(bootstrap, topic_prefix=topic_prefix) as sdk:
            for part in (ids[:40], ids[40:]):  # the second flush: later records in every partition
                for i, pid in enumerate(part):
                    sdk.log_prediction(pid, "m", {"label": 1, "score": 0.9}, timestamp=now + i)
                sdk.flush()
            for i, pid in enumerate(ids):
                sdk.log_label(pid, 1, timestamp=now + i % 40 + 1)
        h = worker.wait_for(lambda: (h := worker.health())["counters"].get("joins", 0) == 80 and h, 60, "80 joins")
        assert h["pending_predictions"] == 0
        # the prediction and the partial (noticed when a later partial of its partition arrives)
        worker.wait_for(lambda: worker.health()["counters"].get("skipped_records_reread") == 2, 60, "both read again")
        worker.wait_for(lambda: worker.health()["open_windows"] == 0, 60, "windows closed")

        worker.wait_for(lambda: labeled_total(consume, topic_prefix) == 80, 60, "windows holding all 80 labels")
    finally:
        worker.stop()
