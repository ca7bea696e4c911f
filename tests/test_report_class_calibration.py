"""ECE, reliability points, per-class metrics and the serving error rate through the real ClickHouse
sink into chdb (one row per metric name: new names need no DDL), read back by ``driftline report``'s
own SQL and rendered: the reliability diagram, the per-class table and the confusion matrix equal
an independent computation over the windows shown."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn import metrics as skm

from driftline.detectors.metrics import class_metric_name
from driftline.schemas import make_metrics
from driftline.sinks.clickhouse import ClickHouseSink
from driftline.sinks.query import open_query_client
from driftline.sinks.report import render_report
from driftline.streams.report_cmd import direct_fetch, gather, write_report
from driftline.streams.windows import WindowPartial

WINDOWS, PER_WINDOW = 6, 400
CLASSES = np.array(["cat", "dog", "bird", "0.5"])


def _data(seed: int = 9) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    n = WINDOWS * PER_WINDOW
    score = rng.beta(1.2, 2.0, n)
    y = (rng.random(n) < np.clip(score * 1.3, 0, 1)).astype(np.int64)  # under-confident model
    err = rng.random(n) < np.repeat([0.01, 0.01, 0.2, 0.01, 0.01, 0.01], PER_WINDOW)
    yt = CLASSES[rng.choice(4, n, p=[0.4, 0.3, 0.2, 0.1])]
    yp = np.where(rng.random(n) < 0.75, yt, CLASSES[rng.choice(4, n)])
    return {"score": score, "y": y, "err": err, "yt": yt, "yp": yp}


def _messages(d: dict[str, Any], t0: float) -> list[dict[str, Any]]:
    out = []
    for k in range(WINDOWS):
        sl = slice(k * PER_WINDOW, (k + 1) * PER_WINDOW)
        ws = t0 + 60.0 * k
        b = WindowPartial("binary")
        b.add_predictions(np.full(PER_WINDOW, 3.0), d["score"][sl])
        for e in d["err"][sl]:
            b.add_status(bool(e))
        b.add_outcomes(d["y"][sl], (d["score"][sl] >= 0.5).astype(np.int64), d["score"][sl], np.ones(PER_WINDOW))
        mc = WindowPartial("multiclass")
        mc.add_predictions(np.full(PER_WINDOW, 3.0), np.full(PER_WINDOW, np.nan))
        mc.add_outcomes(d["yt"][sl].tolist(), d["yp"][sl].tolist(), None, np.ones(PER_WINDOW))
        for model, task, w in (("fraud", "binary", b), ("intent", "multiclass", mc)):
            metrics, counts = w.metrics(60.0)
            out.append(make_metrics(model_id=model, model_version="v1", segment="", window_start=ws,
                                    window_end=ws + 60.0, task=task, metrics=metrics, counts=counts,
                                    revision=1, final=True, labeled_count=w.labeled, emitted_at=ws + 61))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory):
    d = _data()
    t0 = float(int(time.time()) // 60 * 60 - 3600)
    msgs = _messages(d, t0)
    dsn = f"chdb://{tmp_path_factory.mktemp('classcal').resolve()}/ch"
    sink = ClickHouseSink(dsn)
    sink.setup()
    for off, m in enumerate(msgs):
        sink.add("driftline.metrics", off % 2, off, m)
    sink.flush()
    assert sink.stats()["invalid"] == 0
    client = open_query_client(dsn)
    yield d, msgs, client, t0
    client.close()
    sink.close()


def test_new_metric_names_land_one_row_each_in_metrics_latest(stored) -> None:
    _, msgs, client, _ = stored
    rows = client.query("SELECT model_id, toFloat64(window_start) AS ws, metric, value, count "
                        "FROM driftline.metrics_latest").named_results()  # fmt: skip
    got = {(r["model_id"], round(r["ws"], 3), r["metric"]): (r["value"], r["count"]) for r in rows}
    sent = {(m["model_id"], m["window_start"], k): (v, m["counts"][k]) for m in msgs for k, v in m["metrics"].items()}
    assert got.keys() == sent.keys()
    for key, (v, c) in sent.items():
        assert got[key][0] == pytest.approx(v, abs=1e-12) and got[key][1] == c, key
    names = {k for _, _, k in got}
    assert {"ece", "error_rate", "error_count", "calibration.0.expected", "precision.0%2E5",
            class_metric_name("confusion", "cat", "dog")} <= names  # fmt: skip


def test_report_reads_and_pools_them_exactly(stored, tmp_path: Path) -> None:
    d, _, client, _ = stored
    data = gather(direct_fetch(client))
    assert all("count" in r for r in data["metrics"])
    html = write_report(direct_fetch(client), tmp_path / "r.html", source="test").read_text(encoding="utf-8")
    # Reliability diagram: the windows' bins pooled = the bins of every scored event shown.
    s, y = d["score"], d["y"]
    ids = np.minimum((s * 10).astype(int), 9)
    ece = sum((ids == b).sum() / s.size * abs(y[ids == b].mean() - s[ids == b].mean()) for b in range(10))
    assert f"ECE of the pooled bins {ece:.3f})" in html
    assert 'aria-label="fraud v1: reliability"' in html and html.count('<circle class="bin"') == len(set(ids.tolist()))
    for b in set(ids.tolist()):
        exp, obs, n = s[ids == b].mean(), y[ids == b].mean(), int((ids == b).sum())
        assert f"expected {exp:.3f}, observed {obs:.3f}, n={n:,}" in html
    assert 'aria-label="fraud v1: ECE"' in html and 'aria-label="fraud v1: serving errors"' in html
    # Per-class table: pooled precision / recall / F1 over the windows equal sklearn on all of them.
    labels = sorted(CLASSES.tolist())
    p, r, f1, sup = skm.precision_recall_fscore_support(d["yt"], d["yp"], labels=labels, zero_division=0)
    rows = dict(re.findall(r'<tr class="class"><td>([^<]*)</td>((?:<td class="num">[^<]*</td>){4})</tr>', html))
    assert set(rows) == set(labels)
    for i, c in enumerate(labels):
        cells = re.findall(r'<td class="num">([^<]*)</td>', rows[c])
        assert cells == [f"{p[i]:.3f}", f"{r[i]:.3f}", f"{f1[i]:.3f}", f"{sup[i]:,}"], c
    # Confusion matrix: summed over the windows, rows and columns by support.
    cm = skm.confusion_matrix(d["yt"], d["yp"], labels=labels)
    order = sorted(labels, key=lambda c: -sup[labels.index(c)])
    body = re.findall(r'<tr class="confusion"><th>([^<]*)</th>(.*?)</tr>', html)
    assert [t for t, _ in body] == order
    for t, tds in body:
        counts = [int(x.replace(",", "")) for x in re.findall(r">([\d,]+)</td>", tds)]
        assert counts == [cm[labels.index(t), labels.index(pc)] for pc in order]
    assert 'aria-label="intent v1: F1 per class"' in html


def test_a_page_without_the_new_metrics_has_none_of_their_charts() -> None:
    html = render_report(metrics=[{"model_id": "m", "model_version": "", "task": "binary", "metric": "accuracy",
                                   "t": 0.0, "value": 0.9}], alerts=[], drift_events=[], histograms=[])  # fmt: skip
    assert "reliability" not in html and "serving errors" not in html and "per class" not in html
