"""Synthetic Driftline output messages (metrics, alerts, drift events, outcomes) for tests/demos.

The shapes follow the wire contract consumed by :class:`driftline.sinks.clickhouse.ClickHouseSink`. The
story: model ``fraud`` (binary, champion ``v1`` and challenger ``v2`` on the same windows),
``churn`` (binary) and ``price`` (regression), hourly windows over ``hours`` hours ending at
``end``, segments by country; ``fraud v1`` degrades for ``country=fr`` in the last day, which
fires a drift event and an accuracy alert (later resolved). ``comparisons`` holds fraud ``v2``
against champion ``v1`` per hour (accuracy, two-proportion Wald interval at 95%). With
``ranking=True``, a recommender ``feed`` (task ranking, K = 10) joins the story: its NDCG@10 and
MRR fall in the last 12 hours (outcomes carry the per-list counts of migration 006).
``churn`` v1's whole-model windows carry data drift, data quality and CBPE metrics against its
reference profile (:func:`synthetic_profiles`): ``tenure_months`` shifts (PSI ~0.3) in the last 12
hours and the share of events missing it jumps from about 2% to about 25% in the last 6.
"""

from __future__ import annotations

import random
from typing import Any

from driftline.detectors.comparison import compare_proportions
from driftline.detectors.profile import Profile
from driftline.schemas.messages import make_comparison

COUNTRIES = ("de", "fr", "us")
MODELS = (("fraud", "v1", "binary"), ("fraud", "v2", "binary"), ("churn", "v1", "binary"),
          ("price", "v1", "regression"))  # fmt: skip


def _degraded(model: str, version: str, country: str, hour: int, hours: int) -> bool:
    return model == "fraud" and version == "v1" and country == "fr" and hour >= hours - 24


def synthetic_messages(
    end: float, hours: int = 48, per_hour: int = 40, seed: int = 7, ranking: bool = False
) -> dict[str, list[dict[str, Any]]]:
    """Return ``{"metrics": [...], "alerts": [...], "drift_events": [...], "outcomes": [...],
    "comparisons": [...]}``.

    Parameters
    ----------
    end : float
        Epoch seconds of the end of the last window (use ``time.time()`` so TTLs keep the rows).
    hours : int
        Number of hourly windows (>= 25 so that "previous day" questions have two days).
    per_hour : int
        Outcomes per model, version, segment and hour.
    seed : int
        Random seed; the same arguments give the same messages.
    ranking : bool
        Add the ranking model ``feed`` (its own random stream: the other messages are unchanged).
    """
    rng = random.Random(seed)
    start = (int(end) // 3600 - hours) * 3600
    out: dict[str, list[dict[str, Any]]] = {
        "metrics": [],
        "alerts": [],
        "drift_events": [],
        "outcomes": [],
        "comparisons": [],
    }
    pid = 0
    correct: dict[
        tuple[float, str], tuple[int, int]
    ] = {}  # (window, fraud version) -> (correct, n)
    for h in range(hours):
        ws, we = float(start + h * 3600), float(start + (h + 1) * 3600)
        for model, version, task in MODELS:
            labeled_total = 0
            agg: dict[str, list[float]] = {}
            for country in COUNTRIES:
                bad = _degraded(model, version, country, h, hours)
                stats: dict[str, float] = {"tp": 0, "fp": 0, "tn": 0, "fn": 0, "abs": 0.0, "n": 0}
                for _ in range(per_hour):
                    pid += 1
                    ts = ws + rng.random() * 3600
                    delay = rng.expovariate(1 / 600.0)
                    o: dict[str, Any] = {
                        "prediction_id": f"p{pid:08d}", "model_id": model, "model_version": version,
                        "segments": {"country": country}, "task": task,
                        "latency_ms": rng.lognormvariate(2.5, 0.4) * (1.3 if version == "v2" else 1.0),
                        "prediction_ts": ts, "label_ts": ts + delay, "label_delay_s": delay,
                    }  # fmt: skip
                    if task == "binary":
                        y = int(rng.random() < 0.3)
                        p_right = 0.6 if bad else (0.9 if version == "v1" else 0.92)
                        yp = y if rng.random() < p_right else 1 - y
                        score = min(max(rng.gauss(0.75 if yp else 0.25, 0.1), 0.0), 1.0)
                        o.update(y_pred=str(yp), y_true=str(y), score=score, value_pred=None,
                                 value_true=None, correct=yp == y, abs_error=None)  # fmt: skip
                        key = ("t" if yp == y else "f") + ("p" if yp else "n")
                        stats[key] += 1
                        if model == "fraud":
                            ok, seen = correct.get((ws, version), (0, 0))
                            correct[(ws, version)] = (ok + (yp == y), seen + 1)
                    else:
                        vt = rng.uniform(50, 500)
                        vp = vt + rng.gauss(0, 20)
                        o.update(y_pred=None, y_true=None, score=None, value_pred=vp, value_true=vt,
                                 correct=None, abs_error=abs(vp - vt))  # fmt: skip
                        stats["abs"] += abs(vp - vt)
                    stats["n"] += 1
                    out["outcomes"].append(o)
                n = int(stats["n"])
                labeled_total += n
                if task == "binary":
                    tp, fp, tn, fn = stats["tp"], stats["fp"], stats["tn"], stats["fn"]
                    prec = tp / (tp + fp) if tp + fp else None
                    rec = tp / (tp + fn) if tp + fn else None
                    f1 = 2 * prec * rec / (prec + rec) if prec and rec else None
                    metrics = {"accuracy": (tp + tn) / n, "precision": prec, "recall": rec, "f1": f1,
                               "positive_rate": (tp + fp) / n}  # fmt: skip
                    counts: dict[str, int] = {"recall": int(tp + fn), "precision": int(tp + fp)}
                else:
                    metrics = {"mae": stats["abs"] / n}
                    counts = {}
                for k, v in metrics.items():
                    if v is not None:
                        agg.setdefault(k, []).append(v)
                seg = f"country={country}"
                out["metrics"].extend(
                    _window(model, version, seg, task, ws, we, metrics, counts, n, rng)
                )
                out["metrics"].append(_msg(model, version, seg, task, ws, we, 1, True, 0,
                                           {"unlabeled_expired": rng.randint(0, 8)}, {}))  # fmt: skip
            overall = {k: sum(v) / len(v) for k, v in agg.items()}
            out["metrics"].extend(
                _window(model, version, "", task, ws, we, overall, {}, labeled_total, rng)
            )
            out["metrics"].append(_msg(model, version, "", task, ws, we, 1, True, 0,
                                       {"unlabeled_expired": rng.randint(0, 20)}, {}))  # fmt: skip
    _incident(out, start, hours)
    for h in range(hours):
        ws = float(start + h * 3600)
        out["comparisons"].append(_comparison(ws, correct[(ws, "v1")], correct[(ws, "v2")]))
    _data_story(out, start, hours, per_hour, random.Random(seed + 2))
    if ranking:
        _ranking_story(out, start, hours, per_hour, random.Random(seed + 1))
    return out


def _data_story(
    out: dict[str, list[dict[str, Any]]], start: int, hours: int, per_hour: int, rng: random.Random
) -> None:
    """``churn v1`` against its reference: ``tenure_months`` shifts in the last 12 hours and goes
    missing in the last 6, ``plan`` stays put; CBPE estimates follow the realised accuracy.

    A separate message per window with ``labeled_count = 0`` (the worker sends these metrics in
    the window's own message), so the labelled counts of the other questions stay as they were.
    """
    n = per_hour * len(COUNTRIES)
    for h in range(hours):
        ws, we = float(start + h * 3600), float(start + (h + 1) * 3600)
        shifted, broken = h >= hours - 12, h >= hours - 6
        metrics = {"feature_psi.tenure_months": (0.31 if shifted else 0.03) + rng.uniform(0, 0.02),
                   "feature_psi.plan": rng.uniform(0.005, 0.03), "prediction_psi": 0.12 if shifted else 0.02,
                   "feature_missing_rate.tenure_months": (0.25 if broken else 0.02) + rng.uniform(-0.01, 0.01),
                   "feature_missing_rate.plan": rng.uniform(0.0, 0.004),
                   "estimated_accuracy": rng.uniform(0.88, 0.91), "estimated_f1": rng.uniform(0.8, 0.84)}  # fmt: skip
        out["metrics"].append(_msg("churn", "v1", "", "binary", ws, we, 1, True, 0, metrics,
                                   dict.fromkeys(metrics, n)))  # fmt: skip


def synthetic_profiles(end: float, seed: int = 7) -> list[dict[str, Any]]:
    """Two reference profile versions of ``churn`` (``Profile.to_state()``, as saved on disk).

    v1 was built from the first hours of production 40 days before ``end``; v2 from a training
    file 10 days before ``end``. In both, ``tenure_months`` is missing in about 2% of the rows.
    """
    rng = random.Random(seed + 3)
    states = []
    for version, source, age_days in ((1, "first_hours", 40), (2, "churn_train.csv", 10)):
        rows = []
        for _ in range(2000):
            score = rng.random()
            rows.append({"tenure_months": None if rng.random() < 0.02 else round(rng.expovariate(1 / 20), 1),
                         "plan": rng.choices(("basic", "pro", "team"), (6, 3, 1))[0],
                         "prediction": score, "label": int(rng.random() < score)})  # fmt: skip
        p = Profile.from_records(rows, model_id="churn")
        p.version, p.source, p.created_at = version, source, end - age_days * 86400.0
        states.append(p.to_state())
    return states


def _ranking_story(
    out: dict[str, list[dict[str, Any]]], start: int, hours: int, per_hour: int, rng: random.Random
) -> None:
    """Hourly windows and outcomes of ``feed`` v4: the first relevant rank gets worse late on."""
    for h in range(hours):
        ws, we = float(start + h * 3600), float(start + (h + 1) * 3600)
        stale = h >= hours - 12
        judged = hits = 0
        rr = 0.0
        clicked_lists = 0
        for i in range(per_hour):
            ts = ws + rng.random() * 3600
            delay = rng.expovariate(1 / 120.0)
            clicked = rng.randint(0, 3 if not stale else 2)
            first = None if clicked == 0 else rng.randint(1 if not stale else 3, 12)
            clicked_lists += clicked > 0
            if first is not None:
                judged += 1
                hits += first <= 10
                rr += 1 / first if first <= 10 else 0.0
            out["outcomes"].append({
                "prediction_id": f"r{h:03d}{i:05d}", "model_id": "feed", "model_version": "v4",
                "segments": {"surface": "home"}, "task": "ranking", "y_pred": None, "y_true": None,
                "score": rng.random(), "value_pred": None, "value_true": None, "latency_ms": rng.lognormvariate(3, 0.3),
                "prediction_ts": ts, "label_ts": ts + delay, "label_delay_s": delay, "correct": None, "abs_error": None,
                "items_shown": 12, "clicked_shown": clicked, "converted_shown": min(clicked, rng.randint(0, 1)),
                "relevant_count": clicked, "first_relevant_rank": first})  # fmt: skip
        metrics = {"ctr": clicked_lists / per_hour, "ndcg_at_k": (0.35 if stale else 0.6) + rng.uniform(-0.03, 0.03),
                   "mrr": rr / judged if judged else 0.0, "hit_rate_at_k": hits / judged if judged else 0.0,
                   "catalog_coverage": rng.uniform(0.3, 0.4), "judged_lists": float(judged)}  # fmt: skip
        at_k = ("ndcg_at_k", "mrr", "hit_rate_at_k")
        counts = {m: (judged if m in at_k else per_hour) for m in metrics}
        out["metrics"].extend(
            _window("feed", "v4", "", "ranking", ws, we, metrics, counts, per_hour, rng)
        )


def _comparison(
    ws: float, champion: tuple[int, int], challenger: tuple[int, int]
) -> dict[str, Any]:
    """fraud v2 against v1 in one window: accuracy, Wald interval, verdict (as the merge stage)."""
    c = compare_proportions("accuracy", *champion, *challenger, min_n=0)
    assert c is not None  # both arms have events in every synthetic window
    return dict(make_comparison(model_id="fraud", champion_version="v1", challenger_version="v2",
                                window_start=ws, window_end=ws + 3600.0, mode="ab", revision=1,
                                emitted_at=ws + 3605.0, comparisons=[c.to_state()]))  # fmt: skip


def _msg(model: str, version: str, segment: str, task: str, ws: float, we: float, revision: int,
         final: bool, labeled: int, metrics: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:  # fmt: skip
    return {"model_id": model, "model_version": version, "segment": segment, "window_start": ws,
            "window_end": we, "revision": revision, "final": final, "labeled_count": labeled,
            "emitted_at": we + 5.0 * revision, "task": task, "metrics": metrics, "counts": counts}  # fmt: skip


def _window(model: str, version: str, segment: str, task: str, ws: float, we: float,
            metrics: dict[str, Any], counts: dict[str, int], n: int, rng: random.Random) -> list[dict[str, Any]]:  # fmt: skip
    """A provisional revision 0 (fewer labels, noisier) then the final revision 1."""
    early = {k: (None if v is None else v * rng.uniform(0.95, 1.05)) for k, v in metrics.items()}
    return [_msg(model, version, segment, task, ws, we, 0, False, n // 2, early, counts),
            _msg(model, version, segment, task, ws, we, 1, True, n, metrics, counts)]  # fmt: skip


def _incident(out: dict[str, list[dict[str, Any]]], start: int, hours: int) -> None:
    t = float(start + (hours - 24) * 3600 + 1800)
    base = {"model_id": "fraud", "model_version": "v1"}
    out["drift_events"].append({**base, "event_id": "d-1", "partition": 2, "detector": "adwin",
        "kind": "drift", "direction": "up", "position": 1234, "params": {"delta": 0.002},
        "estimate_before": 0.1, "estimate_after": 0.22, "window_start": t - 1800,
        "window_end": t + 1800, "detected_at": t, "emitted_at": t + 1})  # fmt: skip
    out["drift_events"].append({**base, "event_id": "d-2", "partition": 2, "detector": "ddm",
        "kind": "warning", "direction": None, "position": 1300, "params": {},
        "estimate_before": None, "estimate_after": None, "window_start": t - 1800,
        "window_end": t + 1800, "detected_at": t + 60, "emitted_at": t + 61})  # fmt: skip
    common = {**base, "incident_id": "inc-1", "kind": "metric", "rule": "accuracy_below",
              "segment": "country=fr", "metric": "accuracy", "threshold": 0.8,
              "window_start": t - 1800, "window_end": t + 1800}  # fmt: skip
    out["alerts"].append({**common, "alert_id": "a-1", "status": "firing", "severity": "critical",
        "value": 0.61, "detected_at": t + 300, "emitted_at": t + 301,
        "message": "accuracy 0.61 < 0.8 for fraud v1 country=fr", "evidence": {"count": 40}})  # fmt: skip
    out["alerts"].append({**common, "alert_id": "a-2", "status": "resolved", "severity": "critical",
        "value": 0.85, "detected_at": t + 7200, "emitted_at": t + 7201,
        "message": "accuracy back above 0.8", "evidence": {"count": 40}})  # fmt: skip
    out["alerts"].append({**base, "alert_id": "a-3", "incident_id": "inc-2", "status": "firing",
        "severity": "warning", "kind": "drift", "rule": "drift_adwin", "segment": "", "metric": "error_rate",
        "value": None, "threshold": None, "window_start": t - 1800, "window_end": t + 1800,
        "detected_at": t + 2, "emitted_at": t + 3, "message": "ADWIN drift on fraud v1",
        "evidence": {"event_id": "d-1"}})  # fmt: skip
