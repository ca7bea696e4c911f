"""SinkRunner against the embedded Tansu broker and an embedded chdb store."""

from __future__ import annotations

import time
import uuid
from typing import Any

import clickhouse_connect
import orjson
import pytest
from confluent_kafka import Producer
from fixtures.synthetic import synthetic_messages

from driftline.sinks.clickhouse import ClickHouseSink
from driftline.sinks.runner import SinkRunner

pytestmark = pytest.mark.integration

KINDS = ("metrics", "alerts", "drift_events", "outcomes", "comparisons")


def produce(bootstrap: str, topics: dict[str, str], msgs: dict[str, list[dict[str, Any]]]) -> int:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "partitioner": "murmur2_random"})
    n = 0
    for kind in KINDS:
        for v in msgs.get(kind, []):
            p.produce(topics[kind], key=v["model_id"].encode(), value=orjson.dumps(v))
            n += 1
    p.produce(topics["outcomes"], key=b"fraud", value=b"{not json")  # counted, skipped
    assert p.flush(30) == 0
    return n + 1


def wait_for(pred: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def counts(dsn: str) -> dict[str, int]:
    c = clickhouse_connect.get_client(dsn=dsn)
    try:
        return {
            k: int(c.query(f"SELECT count() FROM driftline.{k}").result_rows[0][0]) for k in KINDS
        }
    finally:
        c.close()


def expected_rows(msgs: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    out = {k: len(msgs[k]) for k in KINDS}
    out["metrics"] = sum(
        len([x for x in m["metrics"].values() if x is not None]) for m in msgs["metrics"]
    )
    return out


class FlakyClient:
    def __init__(self, real: Any, fail: int) -> None:
        self.real, self.fail = real, fail

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        if self.fail > 0:
            self.fail -= 1
            raise ConnectionError("injected outage")
        return self.real.insert(*args, **kwargs)

    def command(self, cmd: str, *args: Any, **kwargs: Any) -> Any:  # the raw outcome path inserts here
        if cmd.startswith("INSERT") and self.fail > 0:
            self.fail -= 1
            raise ConnectionError("injected outage")
        return self.real.command(cmd, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_runner_writes_each_row_once_across_restarts(
    bootstrap: str, topics: dict[str, str], tmp_chdb: str
) -> None:
    msgs = synthetic_messages(time.time(), hours=26, per_hour=3)
    produce(bootstrap, topics, msgs)
    want = expected_rows(msgs)
    topic_list = [topics[k] for k in KINDS]
    runner = SinkRunner(bootstrap, topic_list, ClickHouseSink(tmp_chdb), group_id=f"g{uuid.uuid4().hex[:6]}",
                        batch_rows=500, batch_seconds=0.2)  # fmt: skip
    with runner:
        wait_for(
            lambda: runner.stats()["rows_written"] == want and runner.stats()["undecodable"] == 1
        )
        st = runner.stats()
        assert st["batches"] >= 1 and st["failures"] == 0 and not st["backpressured"]
        # the consumer thread's CPU by part (the bench's "sink thread" figures): chdb runs the
        # inserts in this thread, so writing costs more than reading these few hundred rows
        cpu = st["cpu_s"]
        assert set(cpu) == {"read", "write", "jobs"} and cpu["write"] > cpu["read"] > 0.0
    assert counts(tmp_chdb) == want

    # a new group has no committed offsets: resume_offsets (what ClickHouse holds) decides
    runner = SinkRunner(bootstrap, topic_list, ClickHouseSink(tmp_chdb), group_id=f"g{uuid.uuid4().hex[:6]}",
                        batch_seconds=0.2)  # fmt: skip
    with runner:
        wait_for(lambda: runner.stats()["assigned"] == 4 * len(KINDS))
        time.sleep(1.5)
        assert runner.stats()["sink"]["rows_written"] == dict.fromkeys(KINDS, 0)
    assert counts(tmp_chdb) == want


def test_runner_survives_an_outage_with_backpressure(
    bootstrap: str, topics: dict[str, str], tmp_chdb: str
) -> None:
    msgs = synthetic_messages(time.time(), hours=26, per_hour=12)
    msgs = {"metrics": [], "alerts": [], "drift_events": [], "outcomes": msgs["outcomes"]}
    n = len(msgs["outcomes"])
    produce(bootstrap, topics, msgs)
    real = clickhouse_connect.get_client(dsn=tmp_chdb)
    flaky = FlakyClient(real, fail=0)
    sink = ClickHouseSink(tmp_chdb, client=flaky, max_retries=1, backoff_s=0.01)
    runner = SinkRunner(bootstrap, [topics["outcomes"]], sink, group_id=f"g{uuid.uuid4().hex[:6]}", batch_rows=500, max_buffer_rows=1000,
                        batch_seconds=0.2)  # fmt: skip
    sink.setup()  # schema first (setup is idempotent: start() calls it again)
    flaky.fail = 12  # several flushes fail: the runner must hold, pause, retry, then catch up
    with runner:
        wait_for(lambda: runner.stats()["backpressured"], timeout=30)
        assert runner.stats()["last_error"] and "injected" in runner.stats()["last_error"]
        try:
            wait_for(lambda: runner.stats()["rows_written"].get("outcomes") == n
                     and runner.stats()["buffered_rows"] == 0)
        except AssertionError:
            raise AssertionError(str(runner.stats())) from None
        st = runner.stats()
        assert st["pauses"] >= 1 and st["undecodable"] == 1 and st["messages"] == n + 1
        assert st["retries"] >= 1 and not st["backpressured"] and st["buffered_rows"] == 0
    c = clickhouse_connect.get_client(dsn=tmp_chdb)
    try:
        assert c.query(
            "SELECT count(), uniqExact(_partition, _offset) FROM driftline.outcomes"
        ).result_rows[0] == (n, n)
    finally:
        c.close()
