"""``driftline report``: gather the rows for the HTML report and write it.

Data access is one callable, ``fetch(sql) -> list[dict]``: through a running worker's read-only
``/query`` endpoint when the store is an embedded chdb path (only one process may open it), or a
read-only client of its own otherwise (see :func:`make_fetch`). Every SQL statement of the
report lives in :data:`SQL`; values are inlined as validated literals (:func:`_lit`, floats).
Rendering is :func:`driftline.sinks.report.render_report` (pure).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from driftline.sinks.report import CLASS_PREFIXES, REPORT_METRICS, render_report

Fetch = Callable[[str], list[dict[str, Any]]]
BINARY_BINS, VALUE_BINS = 20, 30

SQL = {
    "metrics": """
SELECT model_id, model_version, task, metric,
       toUnixTimestamp64Milli(window_start) / 1000 AS t, value, count
FROM driftline.metrics_latest
WHERE segment = '' AND (metric IN ({metrics}) OR metric IN ('prediction_psi', 'prediction_drift_score')
       OR startsWith(metric, 'estimated_') OR startsWith(metric, 'multivariate_reconstruction_error')
       OR startsWith(metric, 'feature_psi.') OR startsWith(metric, 'feature_drift_score.')
       OR startsWith(metric, 'feature_missing_rate.')
       OR (task = 'multiclass' AND ({class_prefixes}))) {where}
ORDER BY model_id, model_version, metric, t""",
    "alerts": """
SELECT model_id, model_version, segment, status, severity, kind, rule, metric, feature, message, incident_id,
       toUnixTimestamp64Milli(detected_at) / 1000 AS t
FROM driftline.alerts
WHERE 1 {where}
ORDER BY detected_at, alert_id
LIMIT 5000""",
    "drift_events": """
SELECT model_id, model_version, detector, kind, direction, partition,
       toUnixTimestamp64Milli(detected_at) / 1000 AS t
FROM driftline.drift_events
WHERE 1 {where}
ORDER BY detected_at, event_id
LIMIT 5000""",
    "first_drift_alert": """
SELECT model_id, model_version, toUnixTimestamp64Milli(min(detected_at)) / 1000 AS t
FROM driftline.alerts
WHERE status = 'firing' AND severity = 'critical' AND kind = 'concept_drift' {where}
GROUP BY model_id, model_version
ORDER BY model_id, model_version""",
    "outcome_ranges": """
SELECT model_id, model_version, any(task) AS task, count() AS n,
       countIf(score IS NOT NULL) AS n_score, countIf(value_pred IS NOT NULL) AS n_value,
       toUnixTimestamp64Milli(min(prediction_ts)) / 1000 AS t_min,
       toUnixTimestamp64Milli(max(prediction_ts)) / 1000 AS t_max,
       ifNotFinite(quantile(0.005)(value_pred), 0) AS v_lo,
       ifNotFinite(quantile(0.995)(value_pred), 0) AS v_hi
FROM driftline.outcomes FINAL
WHERE 1 {where}
GROUP BY model_id, model_version
ORDER BY model_id, model_version""",
    "fairness": """
SELECT model_id, model_version, metric, toUnixTimestamp64Milli(window_start) / 1000 AS t, value
FROM driftline.metrics_latest
WHERE segment = '' AND startsWith(metric, 'fairness.') {where}
ORDER BY model_id, model_version, metric, t
LIMIT 100000""",
    "comparisons": """
SELECT model_id, champion_version, challenger_version, mode, metric,
       toUnixTimestamp64Milli(window_start) / 1000 AS t, champion, challenger, difference,
       ci_low, ci_high, p_value, n_champion, n_challenger, verdict
FROM driftline.comparisons FINAL
WHERE 1 {where}
ORDER BY model_id, challenger_version, metric, t
LIMIT 20000""",
    "histogram": """
SELECT if(prediction_ts < fromUnixTimestamp64Milli(toInt64({split_ms}), 'UTC'), 'before', 'after') AS side,
       toInt32(least(greatest(floor(({col} - {lo}) / {width}), 0), {last})) AS bin,
       count() AS n
FROM driftline.outcomes FINAL
WHERE model_version = {version} AND {col} IS NOT NULL {where}
GROUP BY side, bin""",
}
_TIME_COLUMN = {"metrics": "window_start", "alerts": "detected_at", "drift_events": "detected_at",
                "first_drift_alert": "detected_at", "outcome_ranges": "prediction_ts",
                "histogram": "prediction_ts", "fairness": "window_start",
                "comparisons": "window_start"}  # fmt: skip


def _lit(s: str) -> str:
    """A ClickHouse string literal."""
    return "'" + str(s).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _num(x: float) -> str:
    if not math.isfinite(float(x)):
        raise ValueError(f"not a finite number: {x!r}")
    return repr(float(x))


def _where(query: str, model: str | None, since: float | None, until: float | None) -> str:
    col = _TIME_COLUMN[query]
    parts = []
    if model is not None:
        parts.append(f"model_id = {_lit(model)}")
    if since is not None:
        parts.append(f"{col} >= fromUnixTimestamp64Milli(toInt64({round(since * 1000)}), 'UTC')")
    if until is not None:
        parts.append(f"{col} < fromUnixTimestamp64Milli(toInt64({round(until * 1000)}), 'UTC')")
    return "".join(f" AND {p}" for p in parts)


def sql_for(query: str, *, model: str | None = None, since: float | None = None,
            until: float | None = None, **values: str) -> str:  # fmt: skip
    """The statement ``query`` of :data:`SQL` with its filters and literals filled in."""
    extra = {"metrics": ", ".join(_lit(m) for m in REPORT_METRICS),
             "class_prefixes": " OR ".join(f"startsWith(metric, {_lit(p)})" for p in CLASS_PREFIXES),
             } if query == "metrics" else {}  # fmt: skip
    return SQL[query].format(where=_where(query, model, since, until), **extra, **values).strip()


def parse_time(text: str | None) -> float | None:
    """``--since``/``--until``: epoch seconds or ISO 8601 (``2026-11-23``, ``...T17:00:00Z``);
    a time without an offset is UTC."""
    if text is None or not str(text).strip():
        return None
    s = str(text).strip()
    try:
        return float(s)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 time or epoch seconds: {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _histogram(fetch: Fetch, r: dict[str, Any], split: float | None, since: float | None,
               until: float | None) -> dict[str, Any] | None:  # fmt: skip
    task = str(r.get("task") or "")
    if task == "regression" or (int(r["n_score"]) == 0 and int(r["n_value"]) > 0):
        col, lo, hi, nbins = "value_pred", float(r["v_lo"]), float(r["v_hi"]), VALUE_BINS
    elif int(r["n_score"]) > 0:
        col, lo, hi, nbins = "score", 0.0, 1.0, BINARY_BINS
    else:
        return None
    if hi <= lo:
        hi = lo + 1.0
    reason = "alert" if split is not None else "midpoint"
    if split is None:
        split = (float(r["t_min"]) + float(r["t_max"])) / 2
    width = (hi - lo) / nbins
    rows = fetch(sql_for("histogram", model=str(r["model_id"]), since=since, until=until,
                         split_ms=str(round(split * 1000)), col=col, lo=_num(lo), width=_num(width),
                         last=str(nbins - 1), version=_lit(r["model_version"])))  # fmt: skip
    before, after = [0] * nbins, [0] * nbins
    for h in rows:
        (before if h["side"] == "before" else after)[int(h["bin"])] += int(h["n"])
    return {"model_id": r["model_id"], "model_version": r["model_version"], "task": task,
            "column": col, "split_at": split, "split_reason": reason,
            "edges": [lo + i * width for i in range(nbins + 1)], "before": before, "after": after}  # fmt: skip


def gather(fetch: Fetch, *, model: str | None = None, since: float | None = None,
           until: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Run the report's queries; returns the keyword arguments of ``render_report``."""
    f: dict[str, Any] = {"model": model, "since": since, "until": until}
    splits = {(r["model_id"], r["model_version"]): float(r["t"])
              for r in fetch(sql_for("first_drift_alert", **f))}  # fmt: skip
    histograms = []
    for r in fetch(sql_for("outcome_ranges", **f)):
        h = _histogram(fetch, r, splits.get((r["model_id"], r["model_version"])), since, until)
        if h is not None:
            histograms.append(h)
    return {
        "metrics": fetch(sql_for("metrics", **f)),
        "alerts": fetch(sql_for("alerts", **f)),
        "drift_events": fetch(sql_for("drift_events", **f)),
        "histograms": histograms,
        "fairness": fetch(sql_for("fairness", **f)),
        "comparisons": fetch(sql_for("comparisons", **f)),
        "since": since,
        "until": until,
        "model": model,
    }


def direct_fetch(client: Any) -> Fetch:
    """``fetch`` on a clickhouse-connect client (from ``driftline.sinks.query.open_query_client``)."""
    from driftline.sinks.query import check_read_only, execute_read_only

    def fetch(sql: str) -> list[dict[str, Any]]:
        cols, rows = execute_read_only(client, check_read_only(sql))
        return [dict(zip(cols, r, strict=True)) for r in rows]

    return fetch


def worker_fetch(url: str, timeout: float = 60.0) -> Fetch:
    """``fetch`` through a worker's ``POST /query`` (JSON rows); raises ConnectionError if none."""
    from driftline.streams.queryclient import _via_worker

    def fetch(sql: str) -> list[dict[str, Any]]:
        text = _via_worker(url, sql, "json", timeout)
        if text is None:
            raise ConnectionError(f"no worker answers at {url}")
        rows = orjson.loads(text)
        return list(rows)

    return fetch


def make_fetch(dsn: str, worker_url: str | None = None, *, timeout: float = 60.0,
               client_settings: dict[str, Any] | None = None) -> tuple[Fetch, Callable[[], None], str]:  # fmt: skip
    """``(fetch, close, source)``: the worker for a chdb DSN when one answers, else a client."""
    if dsn.startswith("chdb:") and worker_url:
        via = worker_fetch(worker_url, timeout)
        try:
            via("SELECT 1 AS ok")
            return via, lambda: None, f"via worker {worker_url}"
        except ConnectionError:
            pass
    from driftline.sinks.query import open_query_client

    client = open_query_client(dsn, **(client_settings or {}))
    return direct_fetch(client), client.close, "direct read-only client"


def write_report(fetch: Fetch, out: str | Path, *, model: str | None = None,
                 since: float | None = None, until: float | None = None, source: str = "") -> Path:  # fmt: skip
    """Gather, render and write the page; returns its path."""
    html = render_report(**gather(fetch, model=model, since=since, until=until), source=source)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path


def run_report(*, out: str, dsn: str, model: str | None = None, since: str | None = None,
               until: str | None = None, worker_url: str | None = None,
               client_settings: dict[str, Any] | None = None) -> int:  # fmt: skip
    """The ``driftline report`` command; returns the exit code (2: bad arguments)."""
    import sys

    try:
        t0, t1 = parse_time(since), parse_time(until)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if t0 is not None and t1 is not None and t1 <= t0:
        print("error: --until must be after --since", file=sys.stderr)
        return 2
    fetch, close, source = make_fetch(dsn, worker_url, client_settings=client_settings)
    try:
        path = write_report(fetch, out, model=model, since=t0, until=t1, source=source)
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        close()
    print(f"report written to {path} ({path.stat().st_size:,} bytes, {source})")
    return 0
