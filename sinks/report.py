"""The ``driftline report`` page: query rows in, one self-contained HTML string out (pure).

Nothing here touches ClickHouse: ``streams/report_cmd.py`` runs the queries and passes their rows
(lists of dicts, the shape of ``driftline query --format json``) to :func:`render_report`.
The page has inline CSS and inline SVG only (see :mod:`driftline.sinks.svg`) and a Content-Security-Policy
that forbids every network fetch, so it reads the same offline, attached to a ticket or mailed.

Row shapes (keys; times are epoch seconds):

- ``metrics``: model_id, model_version, task, metric, t (window start), value, count (events
  behind the value; optional, 1 when absent) — whole-model windows; besides :data:`REPORT_METRICS`,
  the beyond-accuracy ones when a model has them (``feature_psi.<f>``, ``prediction_psi``,
  ``feature_missing_rate.<f>``, ``estimated_<m>``) and the per-class ones of multiclass models
  (:data:`CLASS_PREFIXES`)
- ``alerts``: model_id, model_version, segment, status, severity, kind, rule, metric, message, t
  (and ``feature`` for data-drift incidents)
- ``drift_events``: model_id, model_version, detector, kind, direction, partition, t
- ``histograms``: model_id, model_version, column, split_at, split_reason, edges (list),
  before (list of counts), after (list of counts)
- ``fairness``: model_id, model_version, metric (``fairness.*``), t, value — whole-model windows
- ``comparisons``: model_id, champion_version, challenger_version, mode, metric, t, champion,
  challenger, difference, ci_low, ci_high, p_value, n_champion, n_challenger, verdict
"""

from __future__ import annotations

import time
from collections import defaultdict
from html import escape
from typing import Any

from driftline.detectors.metrics import CALIBRATION_BINS, split_class_metric
from driftline.schemas.messages import parse_segment_string
from driftline.sinks.svg import (
    Marker,
    Series,
    fmt_num,
    fmt_time,
    svg_histogram,
    svg_line_chart,
    svg_reliability,
)

Row = dict[str, Any]
QUALITY_METRICS = {
    "binary": ("accuracy", "f1", "roc_auc"),
    "multiclass": ("accuracy", "f1_macro"),
    "regression": ("mae", "rmse"),
    "ranking": ("ndcg_at_k", "map_at_k", "mrr"),
}
LATENCY_METRICS = ("latency_p50", "latency_p95", "latency_p99")
OTHER_METRICS = ("prediction_count", "label_coverage")
#: the extra chart of a ranking model (over every list with feedback, not only the judged ones)
RANKING_ENGAGEMENT = ("ctr", "conversion_rate", "hit_rate_at_k", "catalog_coverage")
#: calibration of binary models: ECE per window and the reliability points of each score bin
CALIBRATION_METRICS = ("ece", *(f"calibration.{b}.{k}" for b in range(CALIBRATION_BINS)
                                for k in ("expected", "observed")))  # fmt: skip
#: serving outcome (inference events with a ``status``)
SERVING_METRICS = ("error_rate",)
#: every metric the report reads by name (the SQL filters on this list)
REPORT_METRICS = tuple(sorted({m for ms in QUALITY_METRICS.values() for m in ms}
                              | set(LATENCY_METRICS) | set(OTHER_METRICS) | set(RANKING_ENGAGEMENT)
                              | set(CALIBRATION_METRICS) | set(SERVING_METRICS)))  # fmt: skip
#: per-class metric families of multiclass models, ``<family>.<class>`` (the SQL reads them by prefix)
CLASS_PREFIXES = ("precision.", "recall.", "f1.", "support.", "confusion.")
#: classes drawn in the per-class F1 chart, and rows of the per-class and confusion tables
TOP_CLASS_LINES, TOP_CLASS_ROWS, TOP_CONFUSION = 6, 25, 10
MAX_TABLE_ROWS = 500
#: features drawn in the data drift and data quality charts: the ones that moved most
TOP_FEATURES = 5
#: CBPE estimates drawn beside the realised metric of the same name
CBPE_METRICS = ("accuracy", "f1", "roc_auc")
#: DLE estimates of a regressor's loss, drawn beside the realised ones
DLE_METRICS = ("mae", "rmse")

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#111827;margin:0;background:#f3f4f6}
main{max-width:1380px;margin:0 auto;padding:20px 24px 48px}
h1{font-size:24px;margin:4px 0 2px}h2{font-size:19px;margin:0 0 4px}
h3{font-size:14px;margin:14px 0 6px;color:#374151;text-transform:uppercase;letter-spacing:.04em}
.sub{color:#6b7280;font-size:13px;margin-bottom:14px}
.card{background:#fff;border:1px solid #e5e7eb;border-radius:10px;padding:16px 18px;margin:14px 0}
.kpis{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0 4px}
.kpi{background:#f9fafb;border:1px solid #e5e7eb;border-radius:8px;padding:8px 14px;min-width:120px}
.kpi b{display:block;font-size:20px}.kpi span{font-size:12px;color:#6b7280}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(620px,1fr));gap:10px 18px}
svg.chart{width:100%;height:auto;max-width:680px;display:block}
figure{margin:0}figcaption{font-size:13px;font-weight:600;color:#374151;margin:6px 0 2px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e5e7eb;vertical-align:top}
th{background:#f9fafb;color:#374151;position:sticky;top:0}
.pill{display:inline-block;border-radius:9px;padding:1px 8px;font-size:12px;font-weight:600}
.firing{background:#fee2e2;color:#991b1b}.resolved{background:#dcfce7;color:#166534}
.critical{background:#fde68a;color:#78350f}.warning{background:#e0e7ff;color:#3730a3}
.note{font-size:12px;color:#6b7280}td.num{text-align:right;font-variant-numeric:tabular-nums}
"""
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _key(r: Row) -> tuple[str, str]:
    return str(r["model_id"]), str(r.get("model_version") or "")


def _markers(alerts: list[Row], drifts: list[Row]) -> list[Marker]:
    out = []
    for d in drifts:
        kind = "drift" if d.get("kind") == "drift" else "warning"
        direction = f" ({d['direction']})" if d.get("direction") else ""
        out.append(Marker(float(d["t"]), kind, f"{d.get('detector', '').upper()} {d.get('kind')}"
                          f"{direction} at {fmt_time(float(d['t']))}"))  # fmt: skip
    for a in alerts:
        status = "firing" if a.get("status") == "firing" else "resolved"
        out.append(Marker(float(a["t"]), status, f"{status} {a.get('severity')} {a.get('rule')}: "
                          f"{a.get('message')} ({fmt_time(float(a['t']))})"))  # fmt: skip
    return out


def _series(by_metric: dict[str, list[tuple[float, float]]], names: tuple[str, ...],
            colors: tuple[str, ...] = ()) -> list[Series]:  # fmt: skip
    return [Series(n, by_metric.get(n, []), colors[i] if i < len(colors) else "")
            for i, n in enumerate(names)]  # fmt: skip


def model_section(model: str, version: str, task: str, metrics: list[Row], alerts: list[Row],
                  drifts: list[Row], hist: Row | None, t_range: tuple[float, float]) -> str:  # fmt: skip
    """One model version: quality, volume, latency, label coverage, score distribution."""
    by_metric: dict[str, list[tuple[float, float]]] = defaultdict(list)
    # Count-weighted sums over the windows shown: (sum of value * count, sum of count).
    pooled: dict[str, tuple[float, float]] = {}
    for r in metrics:
        name, value = str(r["metric"]), float(r["value"])
        by_metric[name].append((float(r["t"]), value))
        n = float(r.get("count") or 1)
        sv, sn = pooled.get(name, (0.0, 0.0))
        pooled[name] = (sv + value * n, sn + n)
    marks = _markers(alerts, drifts)
    name = f"{model} {version}".strip()
    quality = QUALITY_METRICS.get(task, ("accuracy",))
    bounded = task != "regression"
    charts = [
        (
            "Quality",
            svg_line_chart(
                _series(by_metric, quality),
                title=f"{name}: quality",
                y_label="error" if not bounded else "score",
                t_range=t_range,
                markers=marks,
                y_min=None if not bounded else _floor(by_metric, quality),
                y_max=None if not bounded else 1.0,
            ),
        ),
        (
            "Prediction count per window",
            svg_line_chart(
                _series(by_metric, ("prediction_count",), ("#4b5563",)),
                title=f"{name}: predictions",
                y_label="predictions",
                t_range=t_range,
                markers=marks,
                y_min=0.0,
            ),
        ),
        (
            "Latency percentiles",
            svg_line_chart(
                _series(by_metric, LATENCY_METRICS, ("#93c5fd", "#2563eb", "#1e3a8a")),
                title=f"{name}: latency",
                y_label="latency (ms)",
                t_range=t_range,
                markers=marks,
                y_min=0.0,
            ),
        ),
        (
            "Label coverage",
            svg_line_chart(
                _series(by_metric, ("label_coverage",), ("#0891b2",)),
                title=f"{name}: label coverage",
                y_label="labeled share",
                t_range=t_range,
                markers=marks,
                y_min=0.0,
                y_max=1.0,
            ),
        ),
    ]
    if task == "ranking":
        charts.insert(1, ("Engagement and coverage", svg_line_chart(
            _series(by_metric, RANKING_ENGAGEMENT, ("#059669", "#d97706", "#7c3aed", "#6b7280")),
            title=f"{name}: engagement and coverage", y_label="share", t_range=t_range, markers=marks,
            y_min=0.0, y_max=1.0)))  # fmt: skip
    if "error_rate" in by_metric:
        charts.insert(2, ("Serving errors: share of predictions with status error", svg_line_chart(
            _series(by_metric, ("error_rate",), ("#dc2626",)), title=f"{name}: serving errors",
            y_label="error share", t_range=t_range, markers=marks, y_min=0.0)))  # fmt: skip
    charts += _calibration_charts(name, by_metric, pooled, t_range, marks)
    charts += _class_charts(name, by_metric, pooled, t_range, marks)
    charts += _beyond_accuracy_charts(name, by_metric, t_range, marks)
    charts.append(_hist_chart(name, task, hist))
    figs = "".join(
        f"<figure><figcaption>{escape(c)}</figcaption>{svg}</figure>" for c, svg in charts
    )
    n_pred = sum(v for _, v in by_metric.get("prediction_count", []))
    firing = len(_incidents(alerts))
    n_drift = sum(1 for d in drifts if d.get("kind") == "drift")
    return (f'<section class="card model" id="{escape(_anchor(model, version))}">'
            f"<h2>{escape(model)} <span class=\"note\">version</span> {escape(version or '(none)')}</h2>"
            f'<div class="sub">task {escape(task or "?")} &middot; {int(n_pred):,} predictions &middot; '
            f"{firing} alerts fired &middot; {n_drift} drift events</div>"
            f'<div class="grid">{figs}</div></section>')  # fmt: skip


def _incidents(alerts: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """Incidents that fired, by id: each one's last firing alert (an escalation to critical is
    a second firing alert of the same incident, counted once)."""
    return {a.get("incident_id") or id(a): a for a in alerts if a.get("status") == "firing"}


def _top(by_metric: dict[str, list[tuple[float, float]]], prefix: str) -> tuple[str, ...]:
    """The :data:`TOP_FEATURES` metrics named ``<prefix><feature>`` with the largest maximum."""
    names = [n for n in by_metric if n.startswith(prefix)]
    names.sort(key=lambda n: (-max(v for _, v in by_metric[n]), n))
    return tuple(names[:TOP_FEATURES])


def _beyond_accuracy_charts(name: str, by_metric: dict[str, list[tuple[float, float]]],
                            t_range: tuple[float, float], marks: list[Marker]) -> list[tuple[str, str]]:  # fmt: skip
    """Data drift (PSI), data quality (missing rates), CBPE and DLE charts, each only when the model
    has those metrics (docs/beyond-accuracy.md, docs/beyond-accuracy-estimation.md)."""
    charts = []
    # the judged statistic over its limit (1 = the limit), else PSI (windows written before scores)
    stat, label, y = (("drift_score", "drift score", "judged statistic / its limit (1 = drift)")
                      if any(n.startswith("feature_drift_score.") for n in by_metric)
                      else ("psi", "PSI", "PSI (0.1 warning, 0.25 drift)"))
    top = _top(by_metric, f"feature_{stat}.") + ((f"prediction_{stat}",) if f"prediction_{stat}" in by_metric else ())
    if top:  # the model output is "prediction", as in the alerts
        charts.append((f"Data drift: {label} against the reference (features that moved most)", svg_line_chart(
            [Series(n.removeprefix(f"feature_{stat}.").replace(f"prediction_{stat}", "prediction"), by_metric[n])
             for n in top], title=f"{name}: {label} per feature", y_label=y, t_range=t_range,
            markers=marks, y_min=0.0)))  # fmt: skip
    mv = "multivariate_reconstruction_error"
    if mv in by_metric:
        charts.append(("Multivariate drift: PCA reconstruction error and its reference limits", svg_line_chart(
            [Series(n.removeprefix(f"{mv}_") if n != mv else "error", by_metric[n])
             for n in (mv, f"{mv}_upper", f"{mv}_lower") if n in by_metric],
            title=f"{name}: PCA reconstruction error", y_label="mean error (standardised)", t_range=t_range,
            markers=marks, y_min=0.0)))  # fmt: skip
    missing = _top(by_metric, "feature_missing_rate.")
    if missing:
        charts.append(("Data quality: missing rate (features with the highest)", svg_line_chart(
            [Series(n.removeprefix("feature_missing_rate."), by_metric[n]) for n in missing],
            title=f"{name}: missing rate per feature", y_label="missing share", t_range=t_range,
            markers=marks, y_min=0.0, y_max=1.0)))  # fmt: skip
    cbpe = [m for m in CBPE_METRICS if f"estimated_{m}" in by_metric]
    if cbpe:
        series = [s for m in cbpe for s in (Series(f"estimated_{m}", by_metric[f"estimated_{m}"]),
                                            Series(m, by_metric.get(m, [])))]  # fmt: skip
        charts.append(("Performance estimated before labels (CBPE) and realised", svg_line_chart(
            series, title=f"{name}: estimated vs realised", y_label="score", t_range=t_range, markers=marks,
            y_min=0.0, y_max=1.0)))  # fmt: skip
    dle = [m for m in DLE_METRICS if f"estimated_{m}" in by_metric]
    if dle:
        series = [s for m in dle for s in (Series(f"estimated_{m}", by_metric[f"estimated_{m}"]),
                                           Series(m, by_metric.get(m, [])))]  # fmt: skip
        charts.append(("Loss estimated before labels (DLE) and realised", svg_line_chart(
            series, title=f"{name}: estimated vs realised loss", y_label="error", t_range=t_range,
            markers=marks, y_min=0.0)))  # fmt: skip
    return charts


def _calibration_charts(name: str, by_metric: dict[str, list[tuple[float, float]]],
                        pooled: dict[str, tuple[float, float]], t_range: tuple[float, float],
                        marks: list[Marker]) -> list[tuple[str, str]]:  # fmt: skip
    """ECE per window, and the reliability diagram of the windows shown (each bin's points
    pooled over the windows, weighted by the events in the bin), for binary models with scores."""
    charts = []
    if "ece" in by_metric:
        charts.append(("Calibration error (ECE, 10 bins) per window", svg_line_chart(
            _series(by_metric, ("ece",), ("#db2777",)), title=f"{name}: ECE", y_label="ECE",
            t_range=t_range, markers=marks, y_min=0.0)))  # fmt: skip
    bins = []
    for b in range(CALIBRATION_BINS):
        exp, obs = pooled.get(f"calibration.{b}.expected"), pooled.get(f"calibration.{b}.observed")
        if exp and obs and exp[1] > 0:
            bins.append((b / CALIBRATION_BINS, exp[0] / exp[1], obs[0] / obs[1], int(exp[1])))
    if bins:
        n = sum(b[3] for b in bins)
        ece = sum(nb / n * abs(o - e) for _, e, o, nb in bins)
        charts.append((f"Reliability diagram over the windows shown (ECE of the pooled bins {ece:.3f})",
                       svg_reliability(bins, title=f"{name}: reliability")))  # fmt: skip
    return charts


def _class_charts(name: str, by_metric: dict[str, list[tuple[float, float]]],
                  pooled: dict[str, tuple[float, float]], t_range: tuple[float, float],
                  marks: list[Marker]) -> list[tuple[str, str]]:  # fmt: skip
    """Per-class metrics of a multiclass model: F1 per window of the most supported classes,
    precision / recall / F1 / support over the windows shown (pooled exactly: precision and recall
    weighted by their denominators, F1 from the two), and the summed confusion matrix."""
    support: dict[str, float] = defaultdict(float)
    cells: dict[tuple[str, str], float] = defaultdict(float)
    f1_names: dict[str, str] = {}
    for metric, points in by_metric.items():
        if not metric.startswith(CLASS_PREFIXES):
            continue
        family, classes = split_class_metric(metric)
        if family == "support" and len(classes) == 1:
            support[classes[0]] += sum(v for _, v in points)
        elif family == "confusion" and len(classes) == 2:
            cells[(classes[0], classes[1])] += sum(v for _, v in points)
        elif family == "f1" and len(classes) == 1:
            f1_names[classes[0]] = metric
    if not support:
        return []
    order = sorted(support, key=lambda c: (-support[c], c))
    lines = [Series(c, by_metric[f1_names[c]]) for c in order[:TOP_CLASS_LINES] if c in f1_names]
    chart = svg_line_chart(lines, title=f"{name}: F1 per class", y_label="F1", t_range=t_range, markers=marks,
                           y_min=0.0, y_max=1.0)  # fmt: skip
    names = {c: metric.removeprefix("f1.") for c, metric in f1_names.items()}
    rows = []
    for c in order[:TOP_CLASS_ROWS]:
        enc = names.get(c)
        p = pooled.get(f"precision.{enc}") if enc else None
        r = pooled.get(f"recall.{enc}") if enc else None
        pv = p[0] / p[1] if p and p[1] else 0.0
        rv = r[0] / r[1] if r and r[1] else 0.0
        f1 = 2 * pv * rv / (pv + rv) if pv + rv else 0.0
        rows.append(f'<tr class="class"><td>{escape(c)}</td><td class="num">{pv:.3f}</td><td class="num">{rv:.3f}</td>'
                    f'<td class="num">{f1:.3f}</td><td class="num">{int(support[c]):,}</td></tr>')  # fmt: skip
    more = (f'<p class="note">{len(order) - TOP_CLASS_ROWS} less supported classes not shown.</p>'
            if len(order) > TOP_CLASS_ROWS else "")  # fmt: skip
    table = ('<table class="per-class"><thead><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th>'
             f"<th>support</th></tr></thead><tbody>{''.join(rows)}</tbody></table>{more}")  # fmt: skip
    out = [("F1 per class (most supported); per class over the windows shown", chart + table)]
    if cells:
        top = order[:TOP_CONFUSION]
        head = "".join(f"<th>{escape(c)}</th>" for c in top)
        body = []
        for t in top:
            row_total = sum(cells.get((t, p), 0.0) for p in top) or 1.0
            tds = "".join(
                f'<td class="num" style="background:rgba(37,99,235,{0.6 * cells.get((t, p), 0.0) / row_total:.2f})">'
                f"{int(cells.get((t, p), 0.0)):,}</td>"
                for p in top
            )
            body.append(f'<tr class="confusion"><th>{escape(t)}</th>{tds}</tr>')
        note = (f'<p class="note">the {TOP_CONFUSION} most supported of {len(order)} classes</p>'
                if len(order) > TOP_CONFUSION else "")  # fmt: skip
        out.append(("Confusion matrix over the windows shown (rows: true class, columns: predicted)",
                    f'<table class="confusion"><thead><tr><th>true &darr; predicted &rarr;</th>{head}</tr></thead>'
                    f"<tbody>{''.join(body)}</tbody></table>{note}"))  # fmt: skip
    return out


def _floor(by_metric: dict[str, list[tuple[float, float]]], names: tuple[str, ...]) -> float:
    vals = [v for n in names for _, v in by_metric.get(n, [])]
    lo = min(vals) if vals else 0.0
    return 0.0 if lo < 0.5 else 0.5  # keep the 0.5..1 band readable, never hide a collapse


def _hist_chart(name: str, task: str, hist: Row | None) -> tuple[str, str]:
    """``(caption, svg)`` of the before/after distribution."""
    if not hist:
        return "Score distribution", svg_histogram(
            [], [], [], title=f"{name}: score distribution", x_label="score"
        )
    col = str(hist.get("column") or "score")
    split = float(hist["split_at"])
    why = ("first critical concept-drift alert" if hist.get("split_reason") == "alert"
           else "midpoint, no critical concept-drift alert")  # fmt: skip
    label = {"score": "P(positive)" if task == "binary" else "top score",
             "value_pred": "predicted value"}.get(col, col)  # fmt: skip
    stamp = fmt_time(split, "%m-%d %H:%M")
    svg = svg_histogram(
        list(hist["edges"]),
        list(hist["before"]),
        list(hist["after"]),
        title=f"{name}: {label} before/after {stamp} ({why})",
        x_label=label,
        labels=(f"before {stamp}", f"after {stamp}"),
    )
    return f"{label.capitalize()} distribution, split at {stamp} UTC ({why})", svg


def _anchor(model: str, version: str) -> str:
    return "m-" + "".join(c if c.isalnum() else "-" for c in f"{model}-{version}")


def alerts_table(alerts: list[Row]) -> str:
    """Every alert state change, newest first (at most :data:`MAX_TABLE_ROWS`)."""
    if not alerts:
        return '<p class="note">No alerts in this range.</p>'
    rows = sorted(alerts, key=lambda a: -float(a["t"]))
    body = []
    for a in rows[:MAX_TABLE_ROWS]:
        status, sev = str(a.get("status", "")), str(a.get("severity", ""))
        seg = f" [{a['segment']}]" if a.get("segment") else ""
        feat = f" ({a['feature']})" if a.get("feature") else ""  # data drift: one incident per feature
        body.append(
            f"<tr><td>{escape(fmt_time(float(a['t'])))}</td>"
            f'<td><span class="pill {escape(status)}">{escape(status)}</span></td>'
            f'<td><span class="pill {escape(sev)}">{escape(sev)}</span></td>'
            f"<td>{escape(str(a.get('model_id')))} {escape(str(a.get('model_version') or ''))}"
            f"{escape(seg)}</td><td>{escape(str(a.get('rule', '')) + feat)}</td>"
            f"<td>{escape(str(a.get('message', '')))}</td></tr>"
        )
    more = (f'<p class="note">{len(rows) - MAX_TABLE_ROWS} older rows not shown.</p>'
            if len(rows) > MAX_TABLE_ROWS else "")  # fmt: skip
    return ('<table class="alerts"><thead><tr><th>detected_at</th><th>status</th><th>severity</th>'
            "<th>model</th><th>rule</th><th>message</th></tr></thead><tbody>"
            + "".join(body) + "</tbody></table>" + more)  # fmt: skip


def _split_fairness(metric: str) -> tuple[str, str, str] | None:
    """``fairness.<key>.<disparity>`` -> (key, "", disparity); ``fairness.<key>=<group>.<rate>``
    -> (key, group, rate); None for anything else."""
    body, _, name = metric.removeprefix("fairness.").rpartition(".")
    if not body or not metric.startswith("fairness."):
        return None
    if "=" in body:
        ((key, group),) = parse_segment_string(body).items()
        return key, group, name
    return body, "", name


def fairness_section(rows: list[Row], t_range: tuple[float, float]) -> str:
    """Per model version and protected key: disparities over time, and each group's rates in
    the newest window."""
    if not rows:
        return ""
    series: dict[tuple[str, str, str], dict[str, list[tuple[float, float]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    groups: dict[tuple[str, str, str], dict[float, dict[str, dict[str, float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(dict))
    )
    for r in rows:
        parts = _split_fairness(str(r["metric"]))
        if parts is None:
            continue
        key, group, name = parts
        k = (str(r["model_id"]), str(r.get("model_version") or ""), key)
        if group:
            groups[k][float(r["t"])][group][name] = float(r["value"])
        else:
            series[k][name].append((float(r["t"]), float(r["value"])))
    out = []
    for k in sorted(set(series) | set(groups)):
        model, version, key = k
        diffs = tuple(sorted(n for n in series[k] if n.endswith("_difference")))
        chart = svg_line_chart(
            _series(series[k], diffs),
            title=f"{model} {version}: fairness across {key}",
            y_label="difference",
            t_range=t_range,
            y_min=0.0,
            y_max=1.0,
        )
        table = ""
        if groups[k]:
            t_last = max(groups[k])
            body = "".join(
                f'<tr class="group"><td>{escape(g)}</td>'
                + "".join(
                    f'<td class="num">{fmt_num(rates[n]) if n in rates else ""}</td>'
                    for n in ("positive_rate", "tpr", "fpr", "precision")
                )
                + "</tr>"
                for g, rates in sorted(groups[k][t_last].items())
            )
            table = (
                f'<p class="note">groups in the window of {escape(fmt_time(t_last))}</p>'
                "<table><thead><tr><th>group</th><th>positive rate</th><th>TPR</th><th>FPR</th>"
                f"<th>precision</th></tr></thead><tbody>{body}</tbody></table>"
            )
        out.append(
            f"<figure><figcaption>{escape(model)} {escape(version)}: {escape(key)}</figcaption>"
            f"{chart}{table}</figure>"
        )
    return f'<section class="card fairness"><h2>Fairness</h2><div class="grid">{"".join(out)}</div></section>'


def comparisons_section(rows: list[Row], t_range: tuple[float, float]) -> str:
    """Per model and challenger: challenger - champion per metric over time, and the newest
    windows' verdicts with their intervals."""
    if not rows:
        return ""
    by: dict[tuple[str, str, str], list[Row]] = defaultdict(list)
    for r in rows:
        by[(str(r["model_id"]), str(r["champion_version"]), str(r["challenger_version"]))].append(r)
    pill = {"worse": "firing", "better": "resolved"}
    out = []
    for (model, champ, chal), rs in sorted(by.items()):
        diff: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for r in rs:
            diff[str(r["metric"])].append((float(r["t"]), float(r["difference"])))
        chart = svg_line_chart(
            _series(diff, tuple(sorted(diff))),
            title=f"{model}: {chal} minus {champ}",
            y_label="challenger - champion",
            t_range=t_range,
        )
        newest = sorted(rs, key=lambda r: (-float(r["t"]), str(r["metric"])))[:30]
        body = "".join(
            f'<tr class="cmp"><td>{escape(fmt_time(float(r["t"])))}</td><td>{escape(str(r["metric"]))}</td>'
            f'<td class="num">{fmt_num(float(r["champion"]))}</td><td class="num">{fmt_num(float(r["challenger"]))}</td>'
            f'<td class="num">{float(r["difference"]):+.3f} [{float(r["ci_low"]):+.3f}, {float(r["ci_high"]):+.3f}]</td>'
            f'<td class="num">{float(r["p_value"]):.3g}</td>'
            f'<td class="num">{int(r["n_champion"]):,} / {int(r["n_challenger"]):,}</td>'
            f'<td><span class="pill {pill.get(str(r["verdict"]), "")}">{escape(str(r["verdict"]))}</span></td></tr>'
            for r in newest
        )
        out.append(
            f"<figure><figcaption>{escape(model)}: challenger {escape(chal)} vs champion {escape(champ)}"
            f"</figcaption>{chart}<table><thead><tr><th>window</th><th>metric</th><th>champion</th>"
            "<th>challenger</th><th>difference [CI]</th><th>p</th><th>n</th><th>verdict</th></tr></thead>"
            f"<tbody>{body}</tbody></table></figure>"
        )
    return (
        f'<section class="card comparisons"><h2>Champion / challenger</h2><div class="grid">{"".join(out)}'
        "</div></section>"
    )


def _kpi(value: str, label: str) -> str:
    return f'<div class="kpi"><b>{escape(value)}</b><span>{escape(label)}</span></div>'


def render_report(*, metrics: list[Row], alerts: list[Row], drift_events: list[Row],
                  histograms: list[Row], since: float | None = None, until: float | None = None,
                  model: str | None = None, generated_at: float | None = None,
                  source: str = "", fairness: list[Row] | None = None,
                  comparisons: list[Row] | None = None) -> str:  # fmt: skip
    """The whole page. ``since``/``until`` are the requested bounds (None: open)."""
    generated_at = time.time() if generated_at is None else generated_at
    times = [float(r["t"]) for rows in (metrics, alerts, drift_events) for r in rows]
    t0 = since if since is not None else (min(times) if times else generated_at - 86400)
    t1 = until if until is not None else (max(times) if times else generated_at)
    if times and until is None:
        t1 = max(t1, max(float(r["t"]) for r in metrics) + 60 if metrics else t1)
    groups: dict[tuple[str, str], dict[str, list[Row]]] = defaultdict(lambda: defaultdict(list))
    for kind, rows in (("metrics", metrics), ("alerts", alerts), ("drift", drift_events)):
        for r in rows:
            groups[_key(r)][kind].append(r)
    hists = {_key(h): h for h in histograms}
    for k in hists:
        groups[k]  # noqa: B018 - a model with outcomes only still gets a section
    sections, toc = [], []
    for m, v in sorted(groups):
        g = groups[(m, v)]
        task = next((str(r["task"]) for r in g["metrics"] if r.get("task")), "")
        task = task or str(hists.get((m, v), {}).get("task") or "")
        sections.append(model_section(m, v, task, g["metrics"], g["alerts"], g["drift"],
                                      hists.get((m, v)), (t0, t1)))  # fmt: skip
        toc.append(f'<a href="#{escape(_anchor(m, v))}">{escape(m)} {escape(v)}</a>')
    fired = _incidents(alerts)
    windows = len({(r["model_id"], r["model_version"], r["t"]) for r in metrics})
    n_pred = sum(float(r["value"]) for r in metrics if r["metric"] == "prediction_count")
    kpis = "".join([
        _kpi(str(len({m for m, _ in groups})), "models"),
        _kpi(str(len(groups)), "model versions"),
        _kpi(f"{windows:,}", "windows"),
        _kpi(fmt_num(n_pred), "predictions"),
        _kpi(str(len(fired)), "alerts fired"),
        _kpi(str(sum(1 for a in fired.values() if a.get("severity") == "critical")), "critical"),
        _kpi(str(sum(1 for a in alerts if a.get("status") == "resolved")), "resolved"),
        _kpi(str(sum(1 for d in drift_events if d.get("kind") == "drift")), "drift events"),
    ])  # fmt: skip
    scope = f"model {escape(model)}" if model else "all models"
    rng = f"{fmt_time(t0)} &ndash; {fmt_time(t1)}"
    req = ("requested " + (fmt_time(since) if since is not None else "start of data") + " to "
           + (fmt_time(until) if until is not None else "now"))  # fmt: skip
    nav = " &middot; ".join(toc) or "no data in this range"
    body = (
        "".join(sections)
        or '<section class="card"><p>No metrics, alerts or drift events in this range.</p></section>'
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>Driftline report: {scope}</title><style>{CSS}</style></head><body><main>"
        f'<header class="card summary"><h1>Driftline report</h1>'
        f'<div class="sub">{scope} &middot; {rng} ({escape(req)}) &middot; generated '
        f"{escape(fmt_time(generated_at))}{' &middot; ' + escape(source) if source else ''}</div>"
        f'<div class="kpis">{kpis}</div><div class="note">Models: {nav}</div>'
        '<div class="note">Markers on every time axis: orange diamonds are detector drift events '
        "(amber: warnings), red triangles alerts firing, green dots alerts resolved; hover for details.</div>"
        f"</header>{body}"
        f"{fairness_section(list(fairness or []), (t0, t1))}"
        f"{comparisons_section(list(comparisons or []), (t0, t1))}"
        f'<section class="card"><h2>Alerts</h2>{alerts_table(alerts)}</section>'
        "</main></body></html>"
    )
