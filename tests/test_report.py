"""``driftline report``: synthetic data through the real sink into chdb, the HTML page, and the page
as headless Chromium renders it."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from fixtures.query_server import QueryServer
from fixtures.synthetic import synthetic_messages

from driftline.sinks.clickhouse import ClickHouseSink
from driftline.sinks.query import open_query_client
from driftline.sinks.report import render_report
from driftline.sinks.svg import nice_ticks, time_ticks
from driftline.streams.report_cmd import (
    direct_fetch,
    gather,
    make_fetch,
    parse_time,
    run_report,
    write_report,
)

HOURS = 48
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "report-screenshot.png"


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(int(q * len(xs)), len(xs) - 1)]


def enrich(msgs: dict[str, list[dict[str, Any]]], hours: int) -> None:
    """Add what the merge agent also emits and the synthetic story leaves out: label-free metrics
    (prediction_count, latency percentiles, label_coverage), roc_auc/rmse, and the critical
    concept-drift alert that fraud v1's ADWIN drift raises."""
    rng = random.Random(3)
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = defaultdict(list)
    for o in msgs["outcomes"]:
        groups[(o["model_id"], o["model_version"], o["prediction_ts"] // 3600 * 3600)].append(o)
    last = max(ws for *_, ws in groups)
    for m in msgs["metrics"]:
        if m["segment"] or m["revision"] != 1 or not {"accuracy", "mae"} & set(m["metrics"]):
            continue  # only the quality messages (not the expiry counts, data checks or CBPE)
        outs = groups[(m["model_id"], m["model_version"], m["window_start"])]
        lat = [o["latency_ms"] for o in outs]
        hours_ago = (last - m["window_start"]) / 3600
        extra = {"prediction_count": float(len(outs)), "latency_p50": _pct(lat, 0.5),
                 "latency_p95": _pct(lat, 0.95), "latency_p99": _pct(lat, 0.99),
                 "label_coverage": min(1.0, 0.93 + rng.uniform(-0.03, 0.03)
                                       - (0.25 * (3 - hours_ago) if hours_ago < 3 else 0.0))}  # fmt: skip
        if m["task"] == "binary":
            extra["roc_auc"] = min(0.99, m["metrics"]["accuracy"] + rng.uniform(0.02, 0.05))
        else:
            extra["rmse"] = m["metrics"]["mae"] * rng.uniform(1.2, 1.3)
        m["metrics"].update(extra)
    d = next(e for e in msgs["drift_events"] if e["kind"] == "drift")
    msgs["alerts"].append({"alert_id": "a-4", "incident_id": "inc-3", "status": "firing",
        "severity": "critical", "kind": "concept_drift", "rule": "adwin", "model_id": "fraud",
        "model_version": "v1", "segment": "", "metric": "error_rate", "value": None,
        "threshold": None, "window_start": d["window_start"], "window_end": d["window_end"],
        "detected_at": d["detected_at"] + 1, "emitted_at": d["detected_at"] + 2,
        "message": "ADWIN detected concept drift on fraud v1", "evidence": {"event_id": d["event_id"]}})  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    dsn = f"chdb://{tmp_path_factory.mktemp('report').resolve()}/ch"
    msgs = synthetic_messages(time.time(), hours=HOURS, per_hour=30)
    enrich(msgs, HOURS)
    sink = ClickHouseSink(dsn)
    sink.setup()
    for kind, values in msgs.items():
        for off, v in enumerate(values):
            sink.add(f"driftline.{kind}", off % 4, off, v)
    sink.flush()
    assert sink.stats()["invalid"] == 0
    client = open_query_client(dsn)
    yield dsn, client, msgs
    client.close()
    sink.close()


@pytest.fixture(scope="module")
def report(store, tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, client, _ = store
    out = tmp_path_factory.mktemp("html") / "report.html"
    return write_report(direct_fetch(client), out, source="test")


def test_report_has_every_section(report: Path, store) -> None:
    html = report.read_text(encoding="utf-8")
    _, _, msgs = store
    assert html.startswith("<!DOCTYPE html>")
    for model, version in (("fraud", "v1"), ("fraud", "v2"), ("churn", "v1"), ("price", "v1")):
        assert f'id="m-{model}-{version}"' in html
        for chart in ("quality", "predictions", "latency", "label coverage"):
            assert f'aria-label="{model} {version}: {chart}"' in html
    assert html.count('<section class="card model"') == 4
    # + the champion/challenger chart of fraud v2 vs v1, + churn's data drift, quality and CBPE
    assert html.count("<svg") == 4 * 5 + 1 + 3
    for chart in ("PSI per feature", "missing rate per feature", "estimated vs realised"):
        assert html.count(f'aria-label="churn v1: {chart}"') == 1
    psi = html.split('aria-label="churn v1: PSI per feature"')[1].split("</svg>")[0]
    assert "tenure_months" in psi and "plan" in psi and "prediction" in psi and "prediction_psi" not in psi
    cbpe = html.split('aria-label="churn v1: estimated vs realised"')[1].split("</svg>")[0]
    assert "estimated_accuracy" in cbpe and "estimated_f1" in cbpe
    assert "<h2>Champion / challenger</h2>" in html and 'aria-label="fraud: v2 minus v1"' in html
    assert html.count('<tr class="cmp">') == 30  # the newest windows' verdicts
    assert "<h2>Fairness</h2>" not in html  # the synthetic story has no fairness metrics
    assert html.count('class="series"') >= 4 * 5  # quality (2-3), count, latency (3), coverage
    assert "no prediction_count data" not in html and "no latency" not in html
    # markers on the time axis: fraud v1 has the drift event, the warning and three alert rows
    for kind in ("drift", "warning", "firing", "resolved"):
        assert f"marker-{kind}" in html
    # score distributions: fraud v1 split at the critical concept-drift alert, others at the midpoint
    assert html.count('class="bar-before"') > 10 and html.count('class="bar-after"') > 10
    assert "before/after" in html and "(first critical concept-drift alert)" in html
    assert "midpoint, no critical concept-drift alert" in html
    assert "predicted value" in html  # price is a regression: value_pred
    # alerts table and summary
    rows = re.findall(r"<tr><td>", html)
    assert len(rows) == len(msgs["alerts"])
    for text in ("accuracy 0.61 &lt; 0.8 for fraud v1 country=fr", "ADWIN detected concept drift"):
        assert text in html
    assert "<b>4</b><span>model versions</span>" in html and "<b>3</b><span>models</span>" in html
    fired = sum(a["status"] == "firing" for a in msgs["alerts"])
    assert f"<b>{fired}</b><span>alerts fired</span>" in html
    assert "feature_drift (tenure_months)" in html  # data drift: one incident per feature


def test_report_is_self_contained(report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    refs = re.findall(r"""(?:src|href|xlink:href)\s*=\s*["']?([^"'\s>]*)""", html, re.I)
    assert all(r.startswith("#") for r in refs), refs
    assert not re.search(r"url\(|@import|<script|<link|<img|<iframe", html, re.I)
    stripped = html.replace('http-equiv="Content-Security-Policy"', "")
    assert "http" not in stripped and "//" not in re.sub(r"<[^>]*>", "", stripped)
    assert "default-src 'none'" in html  # the CSP forbids any fetch even if data smuggled a URL


def test_worker_and_direct_fetch_agree(store) -> None:
    dsn, client, _ = store
    with QueryServer(client) as server:
        fetch, close, source = make_fetch(dsn, server.url)
        assert source.startswith("via worker")
        via_worker = gather(fetch, model="fraud")
        close()
    direct = gather(direct_fetch(client), model="fraud")
    assert via_worker == direct
    assert {r["model_id"] for r in direct["metrics"]} == {"fraud"}
    h = next(h for h in direct["histograms"] if h["model_version"] == "v1")
    assert h["split_reason"] == "alert" and h["column"] == "score"
    assert sum(h["before"]) > sum(h["after"]) > 0


def test_no_worker_falls_back_to_a_client(store) -> None:
    dsn, _, _ = store
    fetch, close, source = make_fetch(dsn, "http://127.0.0.1:9")  # nothing listens on port 9
    try:
        assert source == "direct read-only client"
        assert fetch("SELECT 1 AS x") == [{"x": 1}]
    finally:
        close()


def test_run_report_filters_model_and_time(store, tmp_path: Path, capsys) -> None:
    dsn, client, _ = store
    with QueryServer(client) as server:
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 12 * 3600))
        out = tmp_path / "sub" / "price.html"
        assert run_report(out=str(out), dsn=dsn, model="price", since=since,
                          worker_url=server.url) == 0  # fmt: skip
    html = out.read_text(encoding="utf-8")
    assert "report written to" in capsys.readouterr().out
    assert 'id="m-price-v1"' in html and 'id="m-fraud-v1"' not in html
    assert html.count("<svg") == 5
    assert run_report(out=str(out), dsn=dsn, since="yesterday") == 2
    assert run_report(out=str(out), dsn=dsn, since="2000", until="1999") == 2


def test_parse_time_and_ticks() -> None:
    assert parse_time("1700000000") == 1700000000.0
    assert parse_time("2023-11-14T22:13:20Z") == 1700000000.0
    assert parse_time("2023-11-14T23:13:20+01:00") == 1700000000.0
    assert parse_time("2023-11-14") == parse_time("2023-11-14T00:00:00Z")
    assert parse_time(None) is None
    assert nice_ticks(0.61, 0.97) == [0.6, 0.7, 0.8, 0.9, 1.0]
    ticks, fmt = time_ticks(0, 48 * 3600)
    assert fmt == "%m-%d %H:%M" and all(t % 3600 == 0 for t in ticks) and len(ticks) <= 8


def test_empty_store_renders_a_page() -> None:
    html = render_report(metrics=[], alerts=[], drift_events=[], histograms=[])
    assert "No metrics, alerts or drift events" in html and "No alerts in this range" in html


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]  # fmt: skip


def test_chromium_renders_the_report(report: Path, tmp_path: Path) -> None:
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium not installed (Debian: apt-get install -y chromium)")
    url = report.resolve().as_uri()
    common = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120, check=True).stdout  # fmt: skip
    assert dom.count("<svg") == 24  # 4 model versions x 5 charts + fraud v2 vs v1 + churn data/CBPE
    assert dom.count('<path class="series"') >= 20 and "marker-drift" in dom
    assert dom.count('<rect class="bar-before"') > 10
    assert "Driftline report" in dom and '<table class="alerts">' in dom
    shot = tmp_path / "shot.png"
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1400,2400", url],
                   capture_output=True, timeout=120, check=True)  # fmt: skip
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000  # charts, not a blank page
    if os.environ.get("DRIFTLINE_UPDATE_SCREENSHOT"):  # refresh the picture in docs/operations.md
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)


def test_cbpe_chart_draws_the_estimated_roc_auc_beside_the_realised() -> None:
    rows = [{"model_id": "churn", "model_version": "v1", "task": "binary", "metric": m, "t": 1.8e9 + 60 * i,
             "value": v} for i in range(3)
            for m, v in (("roc_auc", 0.8), ("estimated_roc_auc", 0.79), ("accuracy", 0.7), ("estimated_accuracy", 0.71))]
    html = render_report(metrics=rows, alerts=[], drift_events=[], histograms=[])
    cbpe = html.split('aria-label="churn v1: estimated vs realised"')[1].split("</svg>")[0]
    assert "estimated_roc_auc" in cbpe and "estimated_accuracy" in cbpe and "estimated_f1" not in cbpe


def test_dle_chart_draws_the_estimated_loss_beside_the_realised() -> None:
    rows = [{"model_id": "eta", "model_version": "v7", "task": "regression", "metric": m, "t": 1.8e9 + 60 * i,
             "value": v} for i in range(3)
            for m, v in (("mae", 2.5), ("estimated_mae", 2.6), ("rmse", 3.5), ("estimated_rmse", 3.4))]
    html = render_report(metrics=rows, alerts=[], drift_events=[], histograms=[])
    dle = html.split('aria-label="eta v7: estimated vs realised loss"')[1].split("</svg>")[0]
    assert "estimated_mae" in dle and "estimated_rmse" in dle and "Loss estimated before labels" in html


def test_drift_score_and_multivariate_charts_and_per_feature_alerts() -> None:
    metrics = [("feature_drift_score.amount", 1.6), ("feature_psi.amount", 0.3), ("prediction_drift_score", 0.4),
               ("multivariate_reconstruction_error", 0.9), ("multivariate_reconstruction_error_upper", 0.3),
               ("multivariate_reconstruction_error_lower", 0.2)]
    rows = [{"model_id": "fraud", "model_version": "v1", "task": "binary", "metric": m, "t": 1.8e9 + 60 * i,
             "value": v} for i in range(3) for m, v in metrics]
    alert = {"model_id": "fraud", "model_version": "v1", "segment": "", "status": "firing", "severity": "critical",
             "kind": "data_drift", "rule": "feature_drift", "metric": "feature_js.amount", "feature": "amount",
             "message": "data drift on fraud v1: feature amount", "t": 1.8e9 + 60}
    html = render_report(metrics=rows, alerts=[alert], drift_events=[], histograms=[])
    score = html.split('aria-label="fraud v1: drift score per feature"')[1].split("</svg>")[0]
    assert "amount" in score and "prediction" in score and "prediction_drift_score" not in score
    assert 'aria-label="fraud v1: PSI per feature"' not in html  # the judged score replaces it
    mv = html.split('aria-label="fraud v1: PCA reconstruction error"')[1].split("</svg>")[0]
    assert "error" in mv and "upper" in mv and "lower" in mv
    assert "feature_drift (amount)" in html
