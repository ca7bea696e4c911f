"""Every query in docs/clickhouse.md runs (read-only) against synthetic data written by the sink."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from fixtures.synthetic import synthetic_messages, synthetic_profiles

from driftline.sinks.clickhouse import ClickHouseSink
from driftline.sinks.profiles import insert_rows, profile_rows
from driftline.sinks.query import check_read_only, open_query_client, run_query

DOC = Path(__file__).resolve().parents[1] / "docs" / "clickhouse.md"


def doc_queries() -> list[tuple[str, str]]:
    """Return ``[(question, sql)]`` from the "Questions you can ask" section."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Questions you can ask", 1)[1]
    section = re.split(r"\n## ", section, maxsplit=1)[0]
    return [
        (q.strip(), sql.strip())
        for q, sql in re.findall(r"\n([^\n`][^\n]*)\n```sql\n(.*?)```", section, re.S)
    ]


QUERIES = doc_queries()


def test_doc_has_at_least_ten_questions() -> None:
    assert len(QUERIES) >= 10
    for question, sql in QUERIES:
        assert question.endswith("?"), question
        check_read_only(sql)  # every documented query passes the read-only gate


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory):
    dsn = f"chdb://{tmp_path_factory.mktemp('q').resolve()}/ch"
    sink = ClickHouseSink(dsn)
    sink.setup()
    # The cookbook's day-over-day queries compare calendar days; the synthetic story puts its
    # degradation in the last 24 h before ``now``. Pinned to 23:00 UTC of the day before, so the
    # newest calendar day holds that story whatever the time of day the tests run.
    now = time.time() // 86400 * 86400 - 3600
    msgs = synthetic_messages(now, ranking=True)
    for kind, values in msgs.items():
        for off, v in enumerate(values):
            sink.add(f"driftline.{kind}", off % 4, off, v)
    sink.flush()
    for state in synthetic_profiles(now):  # not a topic: the worker copies them from files
        insert_rows(sink.client, profile_rows(state))
    client = open_query_client(dsn)
    yield client, msgs
    client.close()
    sink.close()


def test_every_query_runs_and_returns_rows(loaded) -> None:
    client, _ = loaded
    empty = []
    for question, sql in QUERIES:
        out = run_query(client, sql, "json")
        if out == "[]":
            empty.append(question)
    assert not empty, f"queries without rows on synthetic data: {empty}"


def test_findings_match_the_synthetic_story(loaded) -> None:
    client, _ = loaded
    recall_q = next(sql for q, sql in QUERIES if "recall dropped" in q)
    worst = run_query(client, recall_q, "csv").splitlines()[1]
    assert worst.startswith("fraud,v1,country=fr,")  # the degraded segment comes first
    worst_acc = next(sql for q, sql in QUERIES if "worst accuracy" in q)
    assert run_query(client, worst_acc, "csv").splitlines()[1].startswith("fraud,v1,country=fr,")
    missing_q = next(sql for q, sql in QUERIES if "reference profile" in q)
    rows = run_query(client, missing_q, "csv").splitlines()
    assert len(rows) == 3  # header, tenure_months, plan
    model, version, feature, ref_version, ref_rate, last_day, worst, increase = rows[1].split(",")
    assert (model, version, feature, ref_version) == ("churn", "v1", "tenure_months", "2")
    assert 0.01 < float(ref_rate) < 0.03 and float(worst) > 0.2 and float(increase) > 0.03
