"""The provisioned Grafana dashboard: its shape, and every SQL in it run against real data.

Every SQL string of ``deploy/grafana/dashboards/driftline.json`` (panel targets, annotation
queries, template-variable queries) is expanded the way the ClickHouse data source plugin
(grafana-clickhouse-datasource, ``pkg/macros/macros.go``) and Grafana's template service do, then
run read-only against a chdb store filled through the real sink with ``tests/fixtures/synthetic.py``
messages, the same way ``tests/test_queries.py`` does.
"""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.synthetic import synthetic_messages

from driftline.sinks.clickhouse import ClickHouseSink
from driftline.sinks.query import execute_read_only, open_query_client

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "driftline.json"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
DS_TYPE = "grafana-clickhouse-datasource"
INTERVAL_S = 60  # the $__interval the macros are expanded with

#: panels that must return rows for model ``fraud`` (champion v1 + challenger v2, an incident)
FRAUD_HAS_ROWS = {
    "Classification quality by version",
    "Prediction volume",
    "Serving latency p50 / p95 / p99",
    "Label coverage",
    "Label delay p50 / p95",
    "Unlabeled share",
    "Drift events timeline",
    "Drift events",
    "Alerts",
    "Incidents",
    "Worst segments (accuracy / recall) in the range",
    "Champion vs challenger (same windows)",
    "Champion vs challenger accuracy per window",
    "annotation: Drift events",
    "annotation: Firing alerts",
    "variable: model",
    "variable: version",
}
#: panels that must return rows for the regression model ``price``
PRICE_HAS_ROWS = {"Regression error (mae) by version", "Prediction volume", "Label coverage"}
# Beyond-accuracy panels: data only for the models that enable a feature (the synthetic story:
# churn's reference comparisons and CBPE, fraud's challenger; no fairness or ranking rows).
BEYOND = {
    "Data drift: PSI per feature": "churn",
    "Data quality: missing rate per feature": "churn",
    "Estimated (CBPE) vs realised quality": "churn",
    "Challenger verdicts (comparisons table)": "fraud",
    "Fairness disparities": None,
    "Ranking quality (NDCG@K, MAP@K, MRR, CTR)": None,
}


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for p in dash["panels"]:
        yield p
        yield from p.get("panels", [])


def dashboard_sql(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """``[(name, sql)]`` for every panel target, annotation query and query variable."""
    out: list[tuple[str, str]] = []
    for p in panels(dash):
        for t in p.get("targets", []):
            out.append((p["title"], t["rawSql"]))
    for a in dash["annotations"]["list"]:
        if a.get("builtIn"):
            continue
        out.append((f"annotation: {a['name']}", a["target"]["rawSql"]))
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]
            out.append((f"variable: {v['name']}", q["rawSql"] if isinstance(q, dict) else q))
    return out


def _macro_args(sql: str, name: str) -> Iterator[tuple[int, int, str]]:
    """``(start, end, argument)`` of each ``$__name(arg)`` (balanced parentheses)."""
    for m in re.finditer(re.escape(f"$__{name}("), sql):
        depth, i = 1, m.end()
        while depth:
            if i >= len(sql):
                raise AssertionError(f"unbalanced $__{name}( in {sql!r}")
            depth += {"(": 1, ")": -1}.get(sql[i], 0)
            i += 1
        yield m.start(), i, sql[m.end() : i - 1].strip()


def _replace_macro(sql: str, name: str, render: Any) -> str:
    for start, end, arg in reversed(list(_macro_args(sql, name))):
        sql = sql[:start] + render(arg) + sql[end:]
    return sql


def expand(sql: str, frm: int, to: int, model: str, versions: list[str]) -> str:
    """Expand macros as the ClickHouse plugin does and template variables as Grafana does."""
    sql = _replace_macro(
        sql, "timeFilter", lambda c: f"{c} >= toDateTime({frm}) AND {c} <= toDateTime({to})"
    )
    sql = _replace_macro(
        sql,
        "timeInterval",
        lambda c: f"toStartOfInterval(toDateTime({c}), INTERVAL {INTERVAL_S} second)",
    )
    sql = sql.replace("$__fromTime", f"toDateTime({frm})").replace("$__toTime", f"toDateTime({to})")
    quoted = ",".join("'" + v.replace("'", "\\'") + "'" for v in versions)
    for var in ("${version:singlequote}", "${version}", "$version"):
        sql = sql.replace(var, quoted)
    for var in ("${model}", "$model"):
        sql = sql.replace(var, model)
    assert "$" not in sql, f"unexpanded macro or variable left in: {sql}"
    return sql


def augment(msgs: dict[str, list[dict[str, Any]]]) -> None:
    """Add the operational metrics a real window carries (streams/windows.py) and the synthetic
    story leaves out: prediction_count, label_coverage, latency and label-delay quantiles.

    They are computed from the synthetic outcomes of the same model, version, segment and window
    and folded into the final revision's message, as the window processor emits them.
    """
    groups: dict[tuple[str, str, str, float], list[dict[str, Any]]] = defaultdict(list)
    for o in msgs["outcomes"]:
        ws = float(int(o["prediction_ts"]) // 3600 * 3600)
        seg = f"country={o['segments']['country']}"
        groups[(o["model_id"], o["model_version"], seg, ws)].append(o)
        groups[(o["model_id"], o["model_version"], "", ws)].append(o)
    unlabeled = {
        (m["model_id"], m["model_version"], m["segment"], m["window_start"]): int(
            m["metrics"]["unlabeled_expired"]
        )
        for m in msgs["metrics"]
        if "unlabeled_expired" in m["metrics"]
    }

    def q(xs: list[float], p: float) -> float:
        xs = sorted(xs)
        return xs[min(int(p * len(xs)), len(xs) - 1)]

    for m in msgs["metrics"]:
        if not m["final"] or "unlabeled_expired" in m["metrics"]:
            continue
        key = (m["model_id"], m["model_version"], m["segment"], m["window_start"])
        outs = groups.get(key)
        if not outs:
            continue
        labeled = len(outs)
        n = labeled + unlabeled.get(key, 0)
        lat = [o["latency_ms"] for o in outs]
        delay = [o["label_delay_s"] for o in outs]
        extra = {
            "prediction_count": n,
            "throughput": n / 3600.0,
            "labeled_count": labeled,
            "label_coverage": labeled / n,
            "latency_p50": q(lat, 0.5),
            "latency_p95": q(lat, 0.95),
            "latency_p99": q(lat, 0.99),
            "label_delay_p50": q(delay, 0.5),
            "label_delay_p95": q(delay, 0.95),
        }
        m["metrics"] = {**m["metrics"], **extra}
        counts = {"prediction_count": n, "throughput": n, "label_coverage": n}
        counts.update({k: labeled for k in extra if k.startswith(("latency", "label_delay"))})
        m["counts"] = {**m["counts"], **counts}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, float]]:
    """A query client on a chdb store filled through the sink, and the data's end time."""
    dsn = f"chdb://{tmp_path_factory.mktemp('grafana').resolve()}/ch"
    sink = ClickHouseSink(dsn)
    client = None
    try:
        sink.setup()
        end = time.time()
        msgs = synthetic_messages(end)
        augment(msgs)
        for kind, values in msgs.items():
            for off, v in enumerate(values):
                sink.add(f"driftline.{kind}", off % 4, off, v)
        sink.flush()
        client = open_query_client(dsn)
        yield client, end
    finally:
        if client is not None:
            client.close()
        sink.close()


def run_all(
    client: Any, frm: int, to: int, model: str, versions: list[str]
) -> dict[str, list[tuple[Any, ...]]]:
    """Run every dashboard query; ``{name: rows}``; fails listing every query that errored."""
    results: dict[str, list[tuple[Any, ...]]] = {}
    errors = []
    for name, sql in dashboard_sql(load_dashboard()):
        try:
            _, rows = execute_read_only(client, expand(sql, frm, to, model, versions))
        except Exception as exc:  # a ClickHouse error: report them all at once
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        results[name] = rows
    assert not errors, "\n".join(errors)
    return results


def variable_values(client: Any, frm: int, to: int) -> dict[str, list[str]]:
    """``{model: [versions]}`` as the two template variables would offer them."""
    dash = load_dashboard()
    var = {v["name"]: v["query"]["rawSql"] for v in dash["templating"]["list"]}
    _, rows = execute_read_only(client, expand(var["model"], frm, to, "-", []))
    models = [r[0] for r in rows]
    out = {}
    for model in models:
        _, rows = execute_read_only(client, expand(var["version"], frm, to, model, []))
        out[model] = [r[0] for r in rows]
    return out


# ------------------------------------------------------------------------------- structure


def test_dashboard_model_is_grafana_11_shaped() -> None:
    dash = load_dashboard()
    assert dash["uid"] and dash["title"]
    assert 36 <= dash["schemaVersion"] <= 41
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels(dash):
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]), p["title"]
        if p["type"] == "row":
            continue
        assert p["type"] in {"timeseries", "table", "stat", "barchart", "bargauge"}, p["type"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["editorType"] == "sql" and t["rawSql"].strip(), p["title"]
            # the plugin's format enum: 0 = time series, 1 = table
            want = (0, "timeseries") if p["type"] == "timeseries" else (1, "table")
            assert (t["format"], t["queryType"]) == want, p["title"]
            if p["type"] == "timeseries":
                # a long frame (time, series label, value) needs rows sorted by time
                assert re.search(r"ORDER BY time\b", t["rawSql"]), p["title"]


def test_views_of_the_report_are_all_there() -> None:
    dash = load_dashboard()
    titles = {p["title"] for p in panels(dash)}
    assert (FRAUD_HAS_ROWS - {n for n in FRAUD_HAS_ROWS if ":" in n}).issubset(titles)
    assert PRICE_HAS_ROWS.issubset(titles)
    sql = "\n".join(s for _, s in dashboard_sql(dash))
    for needle in ("driftline.metrics_latest", "driftline.drift_events", "driftline.alerts",
                   "driftline.predictions_unlabeled", "'roc_auc'", "'mae'", "latency_p99",
                   "label_delay_p95", "label_coverage", "prediction_count", "segment = ''"):  # fmt: skip
        assert needle in sql, needle
    names = {a["name"] for a in dash["annotations"]["list"]}
    assert {"Drift events", "Firing alerts"} <= names


def test_template_variables() -> None:
    dash = load_dashboard()
    var = {v["name"]: v for v in dash["templating"]["list"]}
    model, version = var["model"], var["version"]
    assert model["type"] == version["type"] == "query"
    assert re.fullmatch(
        r"SELECT DISTINCT model_id FROM driftline\.metrics( ORDER BY model_id)?",
        model["query"]["rawSql"],
    )
    assert not model["multi"]
    assert version["multi"] and version["includeAll"]
    assert "${model}" in version["query"]["rawSql"]
    for v in (model, version):
        assert v["datasource"]["uid"] == "driftline-clickhouse"
        assert v["query"]["editorType"] == "sql"
    # every panel and annotation is filtered on the selected model and versions
    for name, sql in dashboard_sql(dash):
        if name.startswith("variable:"):
            continue
        assert "'${model}'" in sql, name
        assert "${version:singlequote}" in sql, name


def test_dashboard_uses_the_provisioned_datasource() -> None:
    ds = yaml.safe_load((PROVISIONING / "datasources" / "clickhouse.yml").read_text())
    [source] = ds["datasources"]
    uid, kind = source["uid"], source["type"]
    assert (uid, kind) == ("driftline-clickhouse", DS_TYPE)
    dash = load_dashboard()
    refs = []
    for p in panels(dash):
        if p["type"] != "row":
            refs.append(p["datasource"])
            refs.extend(t["datasource"] for t in p["targets"])
    for a in dash["annotations"]["list"]:
        if not a.get("builtIn"):
            refs.extend([a["datasource"], a["target"]["datasource"]])
    refs.extend(v["datasource"] for v in dash["templating"]["list"] if v["type"] == "query")
    assert refs and all(r == {"type": kind, "uid": uid} for r in refs), refs
    # the file provider reads the folder docker-compose mounts this file into
    prov = yaml.safe_load((PROVISIONING / "dashboards" / "driftline.yml").read_text())
    path = prov["providers"][0]["options"]["path"]
    compose = (ROOT / "docker-compose.yml").read_text()
    assert f"./deploy/grafana/dashboards:{path}" in compose


# ------------------------------------------------------------------------------- execution


def test_macro_expansion_matches_the_plugin() -> None:
    sql = (
        "SELECT $__timeInterval(t) AS time FROM x WHERE $__timeFilter(toDate(t)) AND a = '${model}'"
    )
    assert expand(sql, 10, 20, "m", ["v1", "v2"]) == (
        "SELECT toStartOfInterval(toDateTime(t), INTERVAL 60 second) AS time FROM x "
        "WHERE toDate(t) >= toDateTime(10) AND toDate(t) <= toDateTime(20) AND a = 'm'"
    )
    assert expand("b IN (${version:singlequote}) AND c > $__fromTime", 1, 2, "m", ["v1", "v2"]) == (
        "b IN ('v1','v2') AND c > toDateTime(1)"
    )


def test_every_query_runs_and_returns_rows(store: tuple[Any, float]) -> None:
    client, end = store
    frm, to = int(end) - 3 * 86400, int(end) + 3600
    offered = variable_values(client, frm, to)
    assert offered == {"churn": ["v1"], "fraud": ["v1", "v2"], "price": ["v1"]}
    by_model = {m: run_all(client, frm, to, m, vs) for m, vs in offered.items()}
    names = set(by_model["fraud"])
    assert FRAUD_HAS_ROWS.issubset(names) and PRICE_HAS_ROWS.issubset(names)
    empty = sorted(n for n in FRAUD_HAS_ROWS if not by_model["fraud"][n])
    empty += sorted(f"price: {n}" for n in PRICE_HAS_ROWS if not by_model["price"][n])
    assert not empty, f"queries without rows on synthetic data: {empty}"
    # most panels have data for every model (drift, alerts and challengers are fraud's story)
    for model in ("churn", "price"):
        common = {n: r for n, r in by_model[model].items() if n not in BEYOND}
        with_rows = sum(bool(r) for r in common.values())
        assert with_rows >= len(common) // 2, (model, common.keys())
    # beyond-accuracy panels have rows exactly for the model whose story has that feature
    assert set(BEYOND) <= names
    for name, owner in BEYOND.items():
        assert {m for m in by_model if by_model[m][name]} == ({owner} if owner else set()), name


def test_single_version_and_empty_range(store: tuple[Any, float]) -> None:
    client, end = store
    # one version selected: no challenger pair, the rest still has rows
    res = run_all(client, int(end) - 3 * 86400, int(end) + 3600, "fraud", ["v2"])
    assert res["Champion vs challenger (same windows)"] == []
    assert res["Classification quality by version"] and res["Prediction volume"]
    assert res["Drift events"] == []  # the drift story is on v1
    # a range before any data: every time-filtered query is empty, and none fails
    old = int(end) - 400 * 86400
    res = run_all(client, old, old + 86400, "fraud", ["v1", "v2"])
    leaked = [n for n, rows in res.items() if rows and not n.startswith("variable:")]
    # open incidents show whatever the range ("or still firing"): inc-2 never resolves
    assert leaked == ["Incidents"], leaked


def test_findings_match_the_synthetic_story(store: tuple[Any, float]) -> None:
    client, end = store
    res = run_all(client, int(end) - 3 * 86400, int(end) + 3600, "fraud", ["v1", "v2"])
    worst = res["Worst segments (accuracy / recall) in the range"]
    assert worst[0][:2] == ("v1", "country=fr")  # the degraded segment comes first
    pairs = {(r[0], r[1], r[2]) for r in res["Champion vs challenger (same windows)"]}
    assert {("v1", "v2", "accuracy"), ("v1", "v2", "latency_p99")} <= pairs
    drift = res["annotation: Drift events"]
    assert [r[2].split(",")[:2] for r in drift] == [["drift", "adwin"], ["drift", "ddm"]]
    alerts = res["annotation: Firing alerts"]
    assert len(alerts) == 2 and all(r[2].startswith("alert,") for r in alerts)
    statuses = sorted(r[1] for r in res["Alerts"])
    assert statuses == ["firing", "firing", "resolved"]
    share = [r[2] for r in res["Unlabeled share"]]
    assert share and all(0 <= s < 0.5 for s in share)
    coverage = [r[2] for r in res["Label coverage"]]
    assert coverage and all(0.5 < c <= 1 for c in coverage)
