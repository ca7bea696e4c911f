"""ClickHouseSink into embedded chdb: round trips, idempotent replays, retries, migrations,
read-only queries and the query server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import orjson
import pytest
from fixtures.query_server import QueryServer
from fixtures.synthetic import synthetic_messages

from driftline.sinks.base import SinkBackpressureError
from driftline.sinks.clickhouse import ClickHouseSink, sampled
from driftline.sinks.migrations import (
    available_migrations,
    current_version,
    latest_version,
    migrate,
)
from driftline.sinks.query import (
    QueryRefused,
    check_read_only,
    execute_read_only,
    open_query_client,
    query_via_server,
    run_query,
)

NOW = time.time()
MSGS = synthetic_messages(NOW, hours=26, per_hour=5)


def dsn_for(tmp_path: Path) -> str:
    # chdb: one engine path per process, so every test closes its clients before the next opens
    return f"chdb://{tmp_path.resolve()}/ch"


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[ClickHouseSink]:
    s = ClickHouseSink(dsn_for(tmp_path), backoff_s=0.001)
    s.setup()
    yield s
    s.close()


def count(s: ClickHouseSink, table: str) -> int:
    return int(s.client.query(f"SELECT count() FROM driftline.{table}").result_rows[0][0])


def feed(
    s: ClickHouseSink, kind: str, values: list[dict[str, Any]], first: int = 0, partition: int = 0
) -> None:
    for i, v in enumerate(values):
        s.add(f"driftline.{kind}", partition, first + i, v)


def test_round_trip_every_kind(sink: ClickHouseSink) -> None:
    for kind, values in MSGS.items():
        feed(sink, kind, values)
    sink.flush()
    n_metric_rows = sum(
        len([v for v in m["metrics"].values() if v is not None]) for m in MSGS["metrics"]
    )
    assert count(sink, "metrics") == n_metric_rows
    assert count(sink, "outcomes") == len(MSGS["outcomes"])
    assert count(sink, "alerts") == len(MSGS["alerts"])
    assert count(sink, "drift_events") == len(MSGS["drift_events"])
    assert sink.stats()["rows_written"]["outcomes"] == len(MSGS["outcomes"])
    assert sink.stats()["invalid"] == 0

    o = MSGS["outcomes"][0]
    row = sink.client.query(
        "SELECT prediction_id, segments, y_pred, correct, toUnixTimestamp64Milli(prediction_ts), "
        "_topic, _partition, _offset FROM driftline.outcomes WHERE _offset = 0"
    ).result_rows[0]
    assert row[:4] == (o["prediction_id"], o["segments"], o["y_pred"], o["correct"])
    assert row[4] == round(o["prediction_ts"] * 1000)
    assert row[5:] == ("driftline.outcomes", 0, 0)
    ev = sink.client.query(
        "SELECT evidence, value FROM driftline.alerts WHERE alert_id = 'a-3'"
    ).result_rows[0]
    assert json.loads(ev[0]) == {"event_id": "d-1"} and ev[1] is None
    d = sink.client.query(
        "SELECT direction, params FROM driftline.drift_events ORDER BY detected_at"
    ).result_rows
    assert d == [("up", '{"delta":0.002}'), (None, "{}")]
    # metrics_latest keeps one row per window/metric: the final revision
    latest = sink.client.query(
        "SELECT count(), min(revision), countIf(final) FROM driftline.metrics_latest WHERE metric = 'accuracy'"
    ).result_rows[0]
    assert latest[0] == latest[2] and latest[1] == 1
    unl = sink.client.query("SELECT sum(count) FROM driftline.predictions_unlabeled").result_rows[
        0
    ][0]
    assert unl == sum(
        m["metrics"]["unlabeled_expired"]
        for m in MSGS["metrics"]
        if "unlabeled_expired" in m["metrics"]
    )


def test_incidents_view_names_the_feature_and_reads_resolved_on_a_tie(sink: ClickHouseSink) -> None:
    """A backlog's merge step can emit an incident's firing and its resolve with one emitted_at."""
    a = next(m for m in MSGS["alerts"] if m["alert_id"] == "a-1")
    t = a["emitted_at"]
    firing = {**a, "alert_id": "f-1", "incident_id": "inc-f", "kind": "data_drift", "rule": "feature_drift",
              "metric": "feature_js.country", "feature": "country", "segment": ""}
    resolved = {**firing, "alert_id": "f-2", "status": "resolved", "detected_at": t + 60}
    feed(sink, "alerts", [firing, resolved, {**firing, "alert_id": "g-1", "incident_id": "inc-g"}])
    sink.flush()
    for f in (firing, resolved):
        assert f["emitted_at"] == t
    rows = sink.client.query("SELECT incident_id, feature, status, firing_updates FROM driftline.incidents "
                             "WHERE incident_id IN ('inc-f', 'inc-g') ORDER BY incident_id").result_rows
    assert rows == [("inc-f", "country", "resolved", 1), ("inc-g", "country", "firing", 1)]


def test_replay_same_batch_is_deduplicated_by_token(sink: ClickHouseSink) -> None:
    feed(sink, "outcomes", MSGS["outcomes"][:100])
    sink.flush()
    # forget the resume offsets: only ClickHouse's insert_deduplication_token can stop the repeat
    sink.reset_offsets({})
    feed(sink, "outcomes", MSGS["outcomes"][:100])
    sink.flush()
    assert count(sink, "outcomes") == 100
    assert sink.stats()["skipped_replayed"] == 0  # so it was the token, not the skip


def test_replay_with_other_boundaries_is_skipped_by_resume_offsets(tmp_path: Path) -> None:
    s = ClickHouseSink(dsn_for(tmp_path))
    s.setup()
    feed(s, "outcomes", MSGS["outcomes"][:100])
    feed(s, "outcomes", MSGS["outcomes"][:30], partition=1)
    s.flush()
    s.close()
    # a restarted sink learns what ClickHouse already has
    s = ClickHouseSink(dsn_for(tmp_path))
    s.setup()
    try:
        assert s.resume_offsets() == {("driftline.outcomes", 0): 100, ("driftline.outcomes", 1): 30}
        feed(s, "outcomes", MSGS["outcomes"][50:150], first=50)  # overlaps 50..99
        s.flush()
        assert count(s, "outcomes") == 180
        assert s.stats()["skipped_replayed"] == 50
        assert (
            s.client.query(
                "SELECT uniqExact(_partition, _offset) FROM driftline.outcomes"
            ).result_rows[0][0]
            == 180
        )
    finally:
        s.close()


class FlakyClient:
    """The real client, except that the next ``fail`` inserts raise."""

    def __init__(self, real: Any, fail: int) -> None:
        self.real, self.fail, self.calls = real, fail, 0

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.fail > 0:
            self.fail -= 1
            raise ConnectionError("injected: server went away")
        return self.real.insert(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_retries_then_each_row_once(tmp_path: Path) -> None:
    real = clickhouse_connect.get_client(dsn=dsn_for(tmp_path))
    flaky = FlakyClient(real, fail=0)
    s = ClickHouseSink(dsn_for(tmp_path), client=flaky, max_retries=3, backoff_s=0.001)
    try:
        s.setup()
        flaky.fail = 2  # fewer failures than retries: write succeeds inside flush
        feed(s, "outcomes", MSGS["outcomes"][:200])
        s.flush()
        assert s.stats()["retries"] == 2 and count(s, "outcomes") == 200

        flaky.fail = 10  # more than the bound: backpressure, nothing acknowledged
        feed(s, "outcomes", MSGS["outcomes"][200:300], first=200)
        with pytest.raises(SinkBackpressureError) as err:
            s.flush()
        assert err.value.retry_after > 0 and "injected" in str(err.value)
        assert s.buffered == 0  # flush cleared the buffer in its finally
        assert s.stats()["failures"] == 1 and count(s, "outcomes") == 200
        # the caller re-adds the batch (the runner keeps it): it goes in once
        flaky.fail = 1
        feed(s, "outcomes", MSGS["outcomes"][150:300], first=150)
        s.flush()
        assert count(s, "outcomes") == 300
        assert (
            real.query("SELECT uniqExact(_offset) FROM driftline.outcomes").result_rows[0][0] == 300
        )
        assert s.stats()["last_error"].startswith("ConnectionError")
    finally:
        s.close()


def test_invalid_messages_are_counted_not_fatal(sink: ClickHouseSink) -> None:
    feed(sink, "outcomes", [{"model_id": "m"}, MSGS["outcomes"][0]])
    feed(sink, "unknown_topic", [{"x": 1}])
    sink.flush()
    st = sink.stats()
    assert (st["invalid"], st["unrouted"], count(sink, "outcomes")) == (1, 1, 1)


def envelopes(outcomes: list[dict[str, Any]], size: int) -> list[bytes]:
    return [orjson.dumps({"events": outcomes[i : i + size]}) for i in range(0, len(outcomes), size)]


def test_raw_outcome_envelopes_store_the_same_rows_as_the_column_path(sink: ClickHouseSink) -> None:
    """The raw path (ClickHouse parses the envelopes) against the column path (Python builds
    the rows, ``_outcome_rows``) on the same outcomes: every column of every row equal."""
    outs = list(MSGS["outcomes"])
    # the shapes the join stage can send: ranking counts, regression values, a missing label,
    # non-string classes and segment values, integers where floats are usual
    outs[0] = {**outs[0], "items_shown": 10, "clicked_shown": 2, "converted_shown": 1, "relevant_count": 3,
               "first_relevant_rank": 2, "task": "ranking", "y_pred": None, "y_true": None, "correct": None}
    outs[1] = {**outs[1], "y_pred": 3, "y_true": 4, "score": 1, "latency_ms": 7, "label_ts": None,
               "label_delay_s": None, "segments": {"tier": "gold", "region": "eu"}}
    outs[2] = {**outs[2], "task": "regression", "value_pred": 1.25, "value_true": 2, "abs_error": 0.75,
               "y_pred": None, "y_true": None, "correct": None, "model_version": None, "prediction_ts": float(int(NOW)) + 0.0125}
    assert sink.wants_raw("driftline.outcomes") and not sink.wants_raw("driftline.metrics")
    for i, env in enumerate(envelopes(outs, 7)):
        sink.add("raw.outcomes", 0, i, env)
    for i, env in enumerate(envelopes(outs, 7)):
        sink.add("col.outcomes", 0, i, orjson.loads(env))
    sink.flush()
    st = sink.stats()
    assert (st["invalid"], st["raw_fallbacks"], st["rows_written"]["outcomes"]) == (0, 0, 2 * len(outs))

    def rows(topic: str) -> list[tuple[Any, ...]]:
        return sink.client.query(
            "SELECT * EXCEPT (_topic, ingested_at) FROM driftline.outcomes WHERE _topic = {t:String} "
            "ORDER BY prediction_id", parameters={"t": topic}).result_rows

    raw, col = rows("raw.outcomes"), rows("col.outcomes")
    assert len(raw) == len(outs) and raw == col


def test_raw_outcomes_with_a_bad_event_take_the_column_path(sink: ClickHouseSink) -> None:
    good = MSGS["outcomes"][:20]
    bad = [{**good[0], "prediction_id": None}, {**good[1], "score": "high"}]
    sink.add("driftline.outcomes", 0, 0, envelopes(good[:10], 10)[0])
    sink.add("driftline.outcomes", 0, 1, orjson.dumps({"events": [bad[0], *good[10:15], bad[1]]}))
    sink.add("driftline.outcomes", 0, 2, b"{not json")
    sink.add("driftline.outcomes", 0, 3, envelopes(good[15:], 10)[0])
    sink.flush()
    st = sink.stats()
    assert (st["raw_fallbacks"], st["invalid"], st["undecodable"]) == (1, 2, 1)
    assert count(sink, "outcomes") == st["rows_written"]["outcomes"] == len(good)
    sink.add("driftline.outcomes", 0, 4, envelopes(MSGS["outcomes"][20:23], 10)[0])  # the raw path goes on,
    sink.add("driftline.outcomes", 0, 5, orjson.dumps(MSGS["outcomes"][23]))  # also for single outcomes
    sink.add("driftline.outcomes", 0, 6, b'{"events": []}')
    sink.flush()
    st = sink.stats()
    assert st["raw_fallbacks"] == 1 and count(sink, "outcomes") == st["rows_written"]["outcomes"] == 24


def test_raw_outcome_inserts_take_the_statements_settings(sink: ClickHouseSink) -> None:
    """The raw insert's settings ride in its SETTINGS clause, not in the client's per-call
    settings: an outcome repeated inside one insert stays twice in the part (``optimize_on_insert
    = 0``, ClickHouse's default would collapse it), and the deduplication token, still a client
    setting, makes a repeat of the batch write nothing."""
    sink.client.command("SYSTEM STOP MERGES driftline.outcomes")
    twice = [MSGS["outcomes"][0], MSGS["outcomes"][0], *MSGS["outcomes"][1:5]]
    sink.add("driftline.outcomes", 0, 0, orjson.dumps({"events": twice}))
    sink.flush()
    sink.reset_offsets({})
    sink.add("driftline.outcomes", 0, 0, orjson.dumps({"events": twice}))
    sink.flush()
    st = sink.stats()
    assert (st["inserts"], st["raw_fallbacks"]) == (2, 0)
    assert count(sink, "outcomes") == 6  # both copies, once: the second insert was deduplicated
    assert sink.client.command("SELECT count() FROM driftline.outcomes FINAL") == 5


def test_raw_outcomes_of_several_partitions_go_in_one_insert_and_each_once(sink: ClickHouseSink) -> None:
    """Envelopes of three partitions: one insert; a bad event in one partition sends the whole
    insert down the column path, which writes every partition's good rows once; a replay of
    the batch writes nothing; each partition resumes after its own last offset."""
    outs = MSGS["outcomes"][:60]
    for part in range(3):
        for i, env in enumerate(envelopes(outs[part * 20 : part * 20 + 20], 10)):
            sink.add("driftline.outcomes", part, 100 * part + i, env)
    sink.flush()
    st = sink.stats()
    assert (st["inserts"], st["raw_fallbacks"], st["rows_written"]["outcomes"]) == (1, 0, 60)
    assert count(sink, "outcomes") == 60
    more = MSGS["outcomes"][60:80]
    sink.add("driftline.outcomes", 0, 2, envelopes(more[:10], 10)[0])
    sink.add("driftline.outcomes", 1, 102, orjson.dumps({"events": [{**more[10], "score": "high"}, *more[11:20]]}))
    sink.flush()
    st = sink.stats()
    assert (st["raw_fallbacks"], st["invalid"]) == (1, 1)
    assert count(sink, "outcomes") == st["rows_written"]["outcomes"] == 79
    for part, off in [(0, 0), (0, 2), (1, 102), (2, 200)]:  # the same messages again: skipped
        sink.add("driftline.outcomes", part, off, envelopes(outs[:10], 10)[0])
    sink.flush()
    assert count(sink, "outcomes") == 79 and sink.stats()["skipped_replayed"] == 4
    assert sink.resume_offsets() == {("driftline.outcomes", 0): 3, ("driftline.outcomes", 1): 103,
                                     ("driftline.outcomes", 2): 202}


def test_outcome_sampling_is_deterministic(tmp_path: Path) -> None:
    s = ClickHouseSink(dsn_for(tmp_path), outcome_sample_rate=0.25)
    s.setup()
    try:
        feed(s, "outcomes", MSGS["outcomes"])
        s.flush()
        kept = {
            r[0] for r in s.client.query("SELECT prediction_id FROM driftline.outcomes").result_rows
        }
        expect = {o["prediction_id"] for o in MSGS["outcomes"] if sampled(o["prediction_id"], 0.25)}
        assert kept == expect and 0.15 < len(kept) / len(MSGS["outcomes"]) < 0.35
        # the same test in SQL, for analysts
        ids = [o["prediction_id"] for o in MSGS["outcomes"][:200]]
        sql_kept = s.client.query(
            "SELECT arrayFilter(x -> crc32(x) < 0.25 * 4294967296, {ids:Array(String)})",
            parameters={"ids": ids},
        ).result_rows[0][0]
        assert set(sql_kept) == {i for i in ids if sampled(i, 0.25)}
    finally:
        s.close()


def test_constructor_validates() -> None:
    for kwargs in ({"retention_days": 0}, {"retention_days": "9; DROP"}, {"database": "x; DROP"},
                   {"outcome_sample_rate": 0.0}, {"outcome_sample_rate": 1.5}):  # fmt: skip
        with pytest.raises(ValueError):
            ClickHouseSink("chdb:///nowhere", **kwargs)


def test_migrations_from_version_1_to_latest(tmp_path: Path) -> None:
    assert [m.version for m in available_migrations()] == list(range(1, latest_version() + 1))
    assert latest_version() >= 2
    c = clickhouse_connect.get_client(dsn=dsn_for(tmp_path))
    try:
        assert migrate(c, retention_days=7, target=1) == [1]
        assert current_version(c) == 1
        assert not c.query("EXISTS TABLE driftline.incidents").result_rows[0][0]
        assert (
            "toIntervalDay(7)" in c.query("SHOW CREATE TABLE driftline.metrics").result_rows[0][0]
        )
        c.close()
        s = ClickHouseSink(dsn_for(tmp_path))  # setup() migrates what it finds
        s.setup()
        c = s.client
        assert current_version(c) == latest_version()
        assert c.query("EXISTS TABLE driftline.incidents").result_rows[0][0]
        assert "idx_incident" in c.query("SHOW CREATE TABLE driftline.alerts").result_rows[0][0]
        assert "feature" in [r[0] for r in c.query("DESCRIBE TABLE driftline.incidents").result_rows]
        assert migrate(c) == []  # idempotent
        assert [
            r[0]
            for r in c.query(
                "SELECT version FROM driftline.schema_version ORDER BY version"
            ).result_rows
        ] == list(range(1, latest_version() + 1))
    finally:
        c.close()


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO driftline.alerts (alert_id) VALUES ('x')",
        "DROP TABLE driftline.alerts",
        "CREATE TABLE t (a UInt8) ENGINE = Memory",
        "ALTER TABLE driftline.alerts DELETE WHERE 1",
        "SELECT 1; DROP TABLE driftline.alerts",
        "SELECT 1;DROP TABLE driftline.alerts;",
        "/* SELECT */ DROP TABLE driftline.alerts",
        "-- SELECT\nTRUNCATE TABLE driftline.alerts",
        "SELECT * FROM driftline.alerts INTO OUTFILE '/tmp/x'",
        "SET readonly = 0",
        "OPTIMIZE TABLE driftline.alerts",
        "",
    ],
)
def test_read_only_refusal(sql: str) -> None:
    with pytest.raises(QueryRefused):
        check_read_only(sql)


def test_read_only_accepts() -> None:
    for sql in ("SELECT ';' AS semicolon;", "with x as (select 1) select * from x", "SHOW TABLES FROM driftline",
                "DESCRIBE TABLE driftline.metrics", "EXPLAIN SELECT 1", "(SELECT 1) UNION ALL (SELECT 2)"):  # fmt: skip
        check_read_only(sql)


def test_readonly_setting_enforced_without_the_parser(sink: ClickHouseSink) -> None:
    feed(sink, "alerts", MSGS["alerts"])
    sink.flush()
    q = open_query_client(sink.dsn)
    try:
        for sql in ("INSERT INTO driftline.alerts (alert_id) VALUES ('x')", "DROP TABLE driftline.alerts",
                    "ALTER TABLE driftline.alerts DELETE WHERE 1", "CREATE TABLE driftline.t (a UInt8) ENGINE = Memory",
                    "SELECT * FROM file('/etc/hostname', 'LineAsString')"):  # table functions too  # fmt: skip
            with pytest.raises(Exception, match="(?i)readonly"):
                execute_read_only(q, sql)  # bypasses check_read_only on purpose
        assert count(sink, "alerts") == len(MSGS["alerts"])
        # the sink's own client was not affected
        feed(sink, "alerts", MSGS["alerts"][:1], first=100)
        sink.flush()
        assert count(sink, "alerts") == len(MSGS["alerts"]) + 1
    finally:
        q.close()


def test_run_query_formats(sink: ClickHouseSink) -> None:
    feed(sink, "alerts", MSGS["alerts"])
    sink.flush()
    q = open_query_client(sink.dsn)
    try:
        sql = "SELECT rule, count() AS n, max(value) AS v FROM driftline.alerts GROUP BY rule ORDER BY rule"
        table = run_query(q, sql, "table").splitlines()
        rules = len({a["rule"] for a in MSGS["alerts"]})
        assert table[0].split() == ["rule", "n", "v"] and table[-1] == f"({rules} rows)"
        assert len({len(line) for line in table[2:4]}) == 1  # aligned columns
        assert run_query(q, sql, "csv").splitlines()[1] == "accuracy_below,2,0.85"
        assert json.loads(run_query(q, sql, "json"))[1] == {
            "rule": "drift_adwin",
            "n": 1,
            "v": None,
        }
        with pytest.raises(QueryRefused, match="read-only"):
            run_query(q, "DELETE FROM driftline.alerts WHERE 1", "table")
    finally:
        q.close()


def test_query_server_round_trip(sink: ClickHouseSink) -> None:
    feed(sink, "drift_events", MSGS["drift_events"])
    sink.flush()
    q = open_query_client(sink.dsn)
    try:
        with QueryServer(q) as server:
            out = query_via_server(
                server.url, "SELECT detector FROM driftline.drift_events ORDER BY detector", "csv"
            )
            assert out.splitlines() == ["detector", "adwin", "ddm"]
            with pytest.raises(QueryRefused, match="read-only"):
                query_via_server(server.url, "DROP TABLE driftline.drift_events")
            with pytest.raises(RuntimeError, match="UNKNOWN_TABLE|does not exist"):
                query_via_server(server.url, "SELECT * FROM driftline.nope")
        assert count(sink, "drift_events") == 2
    finally:
        q.close()
