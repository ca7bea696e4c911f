"""Ranking models in the running pipeline: join -> window partials -> merge -> metrics and alerts.

Pure level: partition processors and the merge stage (``test_beyond_worker.run_pipeline``) on
the simulator's recommender (``driftline.streams.simulate.ranking_model``). The window metrics must equal
a direct per-list computation (``test_ranking._direct``) and sklearn's ``ndcg_score`` on the
same lists; the degraded recommender must raise the configured ranking alerts after its drift
and the clean one none. One integration test runs the same through a real worker and chdb.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import ndcg_score
from test_beyond_worker import run_pipeline
from test_partition import T0, Feed, Harness, label, pred
from test_ranking import _direct

from driftline.schemas import validate_label, validate_prediction
from driftline.schemas.records import make_outcome
from driftline.streams.models import ModelsConfig, parse_models_config
from driftline.streams.simulate import RANK_GROUP_ITEMS, RANK_GROUPS, generate, ranking_model
from driftline.streams.windows import window_start

K = 10
CATALOG = RANK_GROUPS * RANK_GROUP_ITEMS
MODELS_YAML = f"""\
models:
  home-feed: &rank
    task: ranking
    ranking_k: {K}
    catalog_size: {CATALOG}
    segment_keys: [surface]
    thresholds:
      - {{metric: ndcg_at_k, min: 0.5, min_count: 100}}
    relative_drops:
      - {{metric: mrr, drop: 0.25, baseline_windows: 3, min_count: 100}}
  search: *rank
"""
FLEET = [
    ranking_model("home-feed", concept_drift=True, share=0.5),
    ranking_model("search", concept_drift=False, share=0.5),
]
RANKING_METRICS = (
    "ctr",
    "item_ctr",
    "conversion_rate",
    "precision_at_k",
    "recall_at_k",
    "map_at_k",
    "ndcg_at_k",
    "mrr",
    "hit_rate_at_k",
    "distinct_items",
    "catalog_coverage",
)


def direct_windows(
    preds: list[dict[str, Any]],
    labels: list[dict[str, Any]],
    window: float,
) -> dict[tuple[str, float], dict[str, float]]:
    """(model, window start) -> the metrics computed list by list over the joined lists."""
    fb = {lab["prediction_id"]: lab["feedback"] for lab in labels}
    lists: dict[tuple[str, float], list[tuple[list[str], set[str], set[str]]]] = defaultdict(list)
    for p in preds:
        f = fb.get(p["prediction_id"])
        if f is not None:
            key = (p["model_id"], window_start(p["timestamp"], window))
            lists[key].append((p["prediction"]["items"], set(f["clicked"]), set(f["converted"])))
    out = {}
    for key, data in lists.items():
        m = _direct(data, K)
        m["catalog_coverage"] = m["distinct_items"] / CATALOG
        m["lists"] = len(data)
        m["sklearn_ndcg"] = _sklearn_ndcg([d for d in data if d[1] | d[2]])
        out[key] = m
    return out


def _sklearn_ndcg(judged: list[tuple[list[str], set[str], set[str]]]) -> float:
    """sklearn's ndcg_score@K over the catalogue: ranked items score by rank, the rest below."""
    y_true = np.zeros((len(judged), CATALOG))
    y_score = np.full((len(judged), CATALOG), -1.0)
    for r, (ranked, clk, cnv) in enumerate(judged):
        for pos, x in enumerate(ranked):
            y_score[r, int(x[4:])] = len(ranked) - pos
        for x in clk | cnv:
            y_true[r, int(x[4:])] = 1.0
    return float(ndcg_score(y_true, y_score, k=K))


def ranking_alerts(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [a for a in alerts if a["metric"] in RANKING_METRICS]


@pytest.fixture(scope="module")
def drifted_run() -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]], float]:
    rate, duration, drift_at = 40.0, 600.0, 300.0
    preds, labels = generate(
        int(rate * duration), seed=11, rate=rate, start_ts=T0, models=FLEET, drift_at=drift_at
    )
    models = parse_models_config(__import__("yaml").safe_load(MODELS_YAML))
    out, _ = run_pipeline(preds, labels, models, None)
    return out, preds, labels, T0 + drift_at


def test_window_metrics_equal_the_direct_computation(drifted_run: Any) -> None:
    out, preds, labels, _ = drifted_run
    want = direct_windows(preds, labels, 60.0)
    got = {(m["model_id"], m["window_start"]): m for m in out.metrics if m["segment"] == ""}
    assert set(got) == set(want) and len(got) == 20
    for key, w in want.items():
        m, counts = got[key]["metrics"], got[key]["counts"]
        assert got[key]["task"] == "ranking"
        for name in RANKING_METRICS:
            assert m[name] == pytest.approx(w[name], rel=1e-9, abs=1e-12), (key, name)
        assert m["ndcg_at_k"] == pytest.approx(w["sklearn_ndcg"], rel=1e-9)
        assert counts["ctr"] == w["lists"] == m["labeled_count"]
        assert counts["ndcg_at_k"] == m["judged_lists"] < w["lists"]
        assert (
            m["prediction_count"] >= w["lists"] and "latency_p99" in m
        )  # label-free metrics still there


def test_segments_sum_to_the_whole_model(drifted_run: Any) -> None:
    out, *_ = drifted_run
    by_key: dict[tuple[str, float], dict[str, dict[str, Any]]] = defaultdict(dict)
    for m in out.metrics:
        by_key[(m["model_id"], m["window_start"])][m["segment"]] = m
    for segs in by_key.values():
        assert set(segs) == {"", "surface=home", "surface=search"}
        whole = segs[""]["metrics"]
        parts = [segs[s]["metrics"] for s in ("surface=home", "surface=search")]
        assert whole["judged_lists"] == sum(p["judged_lists"] for p in parts)
        want = sum(p["ndcg_at_k"] * p["judged_lists"] for p in parts) / whole["judged_lists"]
        assert whole["ndcg_at_k"] == pytest.approx(want, rel=1e-9)


def test_degraded_ranker_alerts_after_its_drift_and_the_clean_one_stays_silent(
    drifted_run: Any,
) -> None:
    out, _, _, drift_ts = drifted_run
    alerts = ranking_alerts(out.alerts)
    firing = [a for a in alerts if a["status"] == "firing"]
    assert firing, out.alerts
    assert {a["model_id"] for a in alerts} == {"home-feed"}
    assert {(a["rule"], a["segment"]) for a in firing} >= {("ndcg_at_k_min", ""), ("mrr_drop", "")}
    assert all(a["window_start"] >= drift_ts for a in alerts)
    assert all(a["kind"] == "threshold" for a in alerts)
    # ranking models run no error-stream detector: no concept-drift alert either
    assert not [a for a in out.alerts if a["kind"] == "concept_drift"]


def test_clean_run_raises_nothing() -> None:
    preds, labels = generate(12_000, seed=12, rate=40.0, start_ts=T0, models=FLEET, drift_at=None)
    out, _ = run_pipeline(
        preds, labels, parse_models_config(__import__("yaml").safe_load(MODELS_YAML)), None
    )
    assert out.metrics and not out.alerts, out.alerts


def test_feedback_revisions_and_expiry() -> None:
    """Early feedback joins; a second feedback is a duplicate; a list never judged expires."""
    models = parse_models_config(
        {"models": {"r": {"task": "ranking", "ranking_k": 2, "label_horizon_s": 100}}}
    )
    h, feed = Harness(0, models, window_seconds=60.0, allowed_lateness=5.0), Feed(0)
    h.process(feed.events("label", [label("a", T0 + 2, "r", feedback={"clicked": ["y"]})]))
    h.process(
        feed.events(
            "prediction",
            [
                pred("a", T0 + 1, "r", items=["x", "y", "z"]),
                pred("b", T0 + 1, "r", items=["x"]),
                pred("c", T0 + 3, "r", items=["z", "x"], scores=[2.0, 1.0]),
            ],
        )
    )
    h.process(
        feed.events(
            "label",
            [
                label("c", T0 + 5, "r", feedback={"clicked": [], "converted": []}),
                label("c", T0 + 6, "r", feedback={"clicked": ["z"]}),
            ],
        )
    )
    h.process(feed.events("prediction", [pred("later", T0 + 400, "r", items=["q"])]))
    h.close_idle()
    assert (
        h.counters["joins"] == 2
        and h.counters["duplicate_labels"] == 1
        and h.counters["unlabeled_expired"] >= 1
    )
    assert not h.dlq
    (m,) = [
        v["metrics"] for k, v in _final(h.partials, models).items() if k[3] == T0 and k[2] == ""
    ]
    # a: ranks x, y -> hit at rank 2; c: shown, nothing clicked (not judged)
    assert m["ctr"] == 0.5 and m["judged_lists"] == 1 and m["mrr"] == 0.5
    assert m["ndcg_at_k"] == pytest.approx((1 / np.log2(3)) / 1.0)
    assert m["unlabeled_expired"] == 1 and m["prediction_count"] == 3
    outcome = h.outcomes[0]
    assert (
        outcome["items_shown"],
        outcome["clicked_shown"],
        outcome["relevant_count"],
        outcome["first_relevant_rank"],
    ) == (3, 1, 1, 2)


def _final(partials: list[dict[str, Any]], models: ModelsConfig) -> dict[Any, dict[str, Any]]:
    from test_partition import merge_all

    return merge_all(partials, models, window_seconds=60.0)


def test_outcome_counts_follow_the_accumulator_conventions() -> None:
    p = validate_prediction(
        {
            "prediction_id": "q",
            "model_id": "r",
            "timestamp": 1.8e9,
            "prediction": {"items": ["a", "b", "a", "c"], "scores": [3, 2, 2, 1]},
        },
        now=1.8e9,
    )
    lab = validate_label(
        {
            "prediction_id": "q",
            "timestamp": 1.8e9 + 9,
            "feedback": {"clicked": ["c"], "converted": ["c"], "relevant": ["b", "c", "d"]},
        },
        now=1.8e9,
    )
    o = make_outcome(p, lab)  # type: ignore[arg-type]
    assert (
        o["task"] == "ranking"
        and o["score"] == 3.0
        and o["y_pred"] is None
        and o["correct"] is None
    )
    assert (
        o["items_shown"],
        o["clicked_shown"],
        o["converted_shown"],
        o["relevant_count"],
        o["first_relevant_rank"],
    ) == (3, 1, 1, 3, 2)


# Whole-model series only, and 200 judged lists behind a value: 10 s windows of ~500 lists per
# model keep the clean model's NDCG (~0.62, standard error ~0.025) far from the 0.5 floor even
# in a first revision that lacks late feedback.
WORKER_MODELS = MODELS_YAML.replace("min_count: 100", "min_count: 200").replace(
    "    segment_keys: [surface]\n", ""
)


@pytest.mark.integration
def test_worker_ranking_alert_and_metrics_equal_the_direct_computation(
    bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Real worker + chdb: the degraded ranker alerts after its drift, the clean one never, and
    ``metrics_latest`` holds the direct computation on the simulated lists."""
    from worker_harness import FAST_WINDOWS, Worker

    from driftline.streams.simulate import FleetSimulator, run_simulation

    config = tmp_path / "models.yaml"
    config.write_text(WORKER_MODELS)
    worker = Worker(bootstrap, topic_prefix, tmp_path, config=str(config)).start()
    try:
        window = float(FAST_WINDOWS["DRIFTLINE_WINDOW_SECONDS"])
        start_ts = float(
            int(time.time()) // 10 * 10 - 200
        )  # in the past: windows close by event time
        rate, duration, drift_at, seed = 100.0, 60.0, 30.0, 21
        stats = run_simulation(
            bootstrap,
            topic_prefix,
            rate,
            duration,
            seed=seed,
            drift_at=drift_at,
            realtime=False,
            progress=False,
            start_ts=start_ts,
            models=FLEET,
        )
        assert stats["dropped"] == 0

        def alerts() -> list[dict[str, Any]]:
            return worker.query(
                "SELECT model_id, segment, rule, status, metric, toUnixTimestamp(window_start) AS ws "
                "FROM driftline.alerts"
            )

        worker.wait_for(
            lambda: [a for a in alerts() if a["metric"] == "ndcg_at_k"], 60, "a ranking alert"
        )
        worker.wait_idle(40)
        # Ranking-metric alerts only: label-free rules (volume) judge revision 0, which in this fast
        # replay may lack a lagging partition's partial (a known limitation, not ranking's).
        got_alerts = ranking_alerts(alerts())
        assert {a["model_id"] for a in got_alerts} == {"home-feed"}, [
            a for a in got_alerts if a["model_id"] != "home-feed"
        ]
        assert ("ndcg_at_k_min", "firing") in {
            (a["rule"], a["status"]) for a in got_alerts if a["segment"] == ""
        }
        assert all(float(a["ws"]) >= start_ts + drift_at for a in got_alerts), got_alerts

        sim = FleetSimulator(seed, rate, duration, drift_at, FLEET, start_ts=start_ts)
        preds = [ev for kind, ev in sim.events() if kind == "prediction"]
        labels = [ev for kind, ev in sim.events() if kind == "label"]
        want = direct_windows(preds, labels, window)
        rows = worker.query(
            "SELECT model_id, toUnixTimestamp64Milli(window_start) / 1000 AS ws, metric, value, count "
            "FROM driftline.metrics_latest WHERE segment = '' AND task = 'ranking'"
        )
        got: dict[tuple[str, float], dict[str, float]] = defaultdict(dict)
        for r in rows:
            got[(r["model_id"], float(r["ws"]))][r["metric"]] = float(r["value"])
        assert set(got) == set(want)
        for key, w in want.items():
            for name in RANKING_METRICS:
                assert got[key][name] == pytest.approx(w[name], rel=1e-9, abs=1e-12), (key, name)
        outcomes = worker.query(
            "SELECT count() AS n, sum(items_shown) AS shown, countIf(first_relevant_rank <= 10) AS hits "
            "FROM driftline.outcomes FINAL WHERE task = 'ranking'"
        )
        assert int(outcomes[0]["n"]) == len(labels) and int(outcomes[0]["shown"]) == 12 * len(
            labels
        )
    finally:
        worker.stop()


def test_report_section_of_a_ranking_model() -> None:
    from driftline.sinks.report import model_section

    rows = [
        {"metric": name, "t": T0 + 60 * i, "value": 0.5}
        for i in range(3)
        for name in ("ndcg_at_k", "mrr", "map_at_k", "ctr", "catalog_coverage", "prediction_count")
    ]
    html = model_section("feed", "v4", "ranking", rows, [], [], None, (T0, T0 + 180))
    for chart in ("quality", "engagement and coverage", "predictions", "latency", "label coverage"):
        assert f'aria-label="feed v4: {chart}"' in html
    assert "ndcg_at_k" in html and "catalog_coverage" in html and "task ranking" in html
