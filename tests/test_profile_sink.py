"""Reference profiles in ClickHouse (sinks/profiles.py, migration 007) against a real chdb."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import clickhouse_connect
import numpy as np
import pytest

from driftline.detectors.profile import Profile
from driftline.sinks.clickhouse import ClickHouseSink
from driftline.sinks.profiles import QUANTILES, insert_rows, profile_rows, sync_profiles
from driftline.streams.baseline_cmd import ReferenceBuilder, create_baseline, save_profile

PREDICTION = "prediction"  # the model output's row, as users see it (profiles store "__prediction__")
N = 1000


def known_rows() -> list[dict[str, Any]]:
    """1,000 rows: ``amount`` (numeric, every 10th missing, every 50th a string), ``plan``
    (categorical), a score in [0, 1] and a binary label."""
    rng = np.random.default_rng(11)
    amounts = rng.lognormal(3.0, 1.0, N)
    plans = rng.choice(["basic", "pro", "team"], N, p=[0.6, 0.3, 0.1])
    scores = rng.uniform(0, 1, N)
    rows = []
    for i in range(N):
        amount: Any = None if i % 10 == 0 else ("n/a" if i % 50 == 1 else float(amounts[i]))
        rows.append({"amount": amount, "plan": str(plans[i]), "prediction": float(scores[i]),
                     "label": int(scores[i] > 0.4)})  # fmt: skip
    return rows


def reference() -> Profile:
    p = Profile.from_records(known_rows(), model_id="fraud", bins=4)
    p.version, p.created_at, p.source = 2, 1_700_000_000.5, "train.csv"
    return p


@pytest.fixture
def store(tmp_path: Path) -> Any:
    sink = ClickHouseSink(f"chdb://{tmp_path.resolve()}/ch")
    sink.setup()  # migrations, 007 included
    yield sink.client
    sink.close()


def read(
    client: Any, where: str = "1", params: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    res = client.query(
        f"SELECT * FROM driftline.reference_profiles FINAL WHERE {where} ORDER BY model_id, version, feature",
        parameters=params or {},
    )
    return [dict(zip(res.column_names, r, strict=True)) for r in res.result_rows]


def test_rows_equal_a_direct_computation(store: Any) -> None:
    rows = known_rows()
    insert_rows(store, profile_rows(reference().to_state()))
    got = {r["feature"]: r for r in read(store)}
    assert sorted(got) == sorted(["amount", "plan", PREDICTION])

    amount = got["amount"]
    values = [r["amount"] for r in rows]
    nums = np.array([v for v in values if isinstance(v, float)])
    missing, mismatch = sum(v is None for v in values), sum(isinstance(v, str) for v in values)
    assert (amount["kind"], amount["n"], amount["present"]) == ("numeric", N, nums.size)
    assert (amount["missing"], amount["type_mismatch"]) == (missing, mismatch) == (100, 20)
    assert amount["missing_rate"] == pytest.approx(0.1) and amount["type_mismatch_rate"] == 0.02
    edges = np.quantile(nums, np.linspace(0, 1, 5))
    assert amount["bin_edges"] == pytest.approx(edges.tolist())
    inner, _ = np.histogram(nums, bins=edges)  # [e0, e1), ..., [e3, e4]: as the profile bins
    assert amount["bin_counts"] == [0, *inner.tolist(), 0]  # no value outside the reference's range
    labels = amount["bin_labels"]
    assert len(labels) == len(amount["bin_counts"]) and labels[0].startswith("< ")
    assert (amount["min"], amount["max"]) == (nums.min(), nums.max())
    for col, q in QUANTILES.items():  # the sketch's 1% relative accuracy, at its rank convention
        exact = np.sort(nums)[int(np.floor(q * (nums.size - 1)))]
        assert amount[col] == pytest.approx(exact, rel=0.011), col
    assert amount["categories"] == [] and amount["category_counts"] == []

    plan = got["plan"]
    counts = Counter(r["plan"] for r in rows)
    assert (
        plan["kind"] == "categorical"
        and dict(zip(plan["categories"], plan["category_counts"], strict=True)) == counts
    )
    assert (plan["missing"], plan["missing_rate"], plan["min"], plan["p50"]) == (0, 0.0, None, None)
    assert plan["bin_edges"] == [] and plan["bin_counts"] == []

    pred = got[PREDICTION]
    scores = np.array([r["prediction"] for r in rows])
    assert pred["kind"] == "numeric" and pred["present"] == N and pred["max"] == scores.max()
    acc = np.mean((scores >= 0.5) == (scores > 0.4))  # the reference metrics of labelled data
    assert pred["reference_metrics"]["accuracy"] == pytest.approx(acc)
    assert {r["source"] for r in got.values()} == {"train.csv"}
    assert {(r["version"], r["n_events"]) for r in got.values()} == {(2, N)}
    assert amount["created_at"].timestamp() == 1_700_000_000.5


def test_sync_is_idempotent_and_skips_unreadable_files(store: Any, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    root = tmp_path / "profiles"
    assert sync_profiles(store, root) == []  # no folder yet: nothing to do
    src = tmp_path / "ref.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in known_rows()), encoding="utf-8")
    create_baseline("fraud", src, root)
    create_baseline("fraud", src, root)
    rb = ReferenceBuilder(hours=1.0)
    w = Profile("churn", infer=True)
    w.update_many([{"tenure": float(i % 40), "plan": "pro"} for i in range(300)], [0.2] * 300)
    assert rb.add(0.0, 3600.0, w)
    save_profile(rb.reference, root)
    (root / "churn" / "profile-v2.json").touch()  # claimed, not yet written (save_profile's window)
    (root / "broken").mkdir()
    (root / "broken" / "profile-v1.json").write_text("{")  # malformed

    with caplog.at_level(logging.WARNING, logger="driftline.sinks.profiles"):
        assert sync_profiles(store, root) == [("churn", 1), ("fraud", 1), ("fraud", 2)]
    assert "broken/profile-v1.json not synced" in caplog.text and "churn" not in caplog.text
    assert sync_profiles(store, root) == []  # idempotent: nothing new
    sources = store.query(
        "SELECT model_id, version, any(source), count() FROM driftline.reference_profiles FINAL "
        "GROUP BY model_id, version ORDER BY model_id, version"
    ).result_rows
    assert sources == [
        ("churn", 1, "first_hours", 3),
        ("fraud", 1, "ref.jsonl", 3),
        ("fraud", 2, "ref.jsonl", 3),
    ]

    # a repeated insert (crash between insert and the next check) collapses under FINAL
    insert_rows(
        store,
        profile_rows(
            Profile.from_state(
                json.loads((root / "fraud" / "profile-v1.json").read_text())
            ).to_state()
        ),
    )
    assert (
        store.query("SELECT count() FROM driftline.reference_profiles FINAL").result_rows[0][0] == 9
    )
    store.command("OPTIMIZE TABLE driftline.reference_profiles FINAL")
    dups = store.query(
        "SELECT model_id, version, feature FROM driftline.reference_profiles "
        "GROUP BY model_id, version, feature HAVING count() > 1"
    ).result_rows
    assert dups == []

    # the claimed file is written: the next sync picks it up
    p2 = Profile.from_state(rb.reference.to_state())
    p2.version = 2
    (root / "churn" / "profile-v2.json").write_text(json.dumps(p2.to_state()))
    assert sync_profiles(store, root) == [("churn", 2)]


@pytest.mark.integration
def test_worker_sink_syncs_profiles_at_start_and_while_running(
    bootstrap: str, topic_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from driftline.streams import worker
    from driftline.streams.settings import Settings

    data_dir = tmp_path / "data"
    # made by `baseline create` before the worker ran
    save_profile(reference(), data_dir / "profiles")
    monkeypatch.setattr(worker, "PROFILE_SYNC_SECONDS", 0.2)
    settings = Settings.from_env({}, bootstrap=bootstrap, topic_prefix=topic_prefix, data_dir=str(data_dir),
                                 clickhouse=f"chdb://{tmp_path.resolve()}/ch", app_id=f"a{time.time_ns()}")  # fmt: skip
    runner, query = worker.build_sink(settings)
    sql = "SELECT version, count() FROM driftline.reference_profiles FINAL GROUP BY version ORDER BY version"
    try:
        deadline = time.monotonic() + 30
        while query(sql, "csv").splitlines()[1:] != ["1,3"]:
            assert time.monotonic() < deadline, (
                "the profile saved before start never reached ClickHouse"
            )
            time.sleep(0.1)
        # e.g. a first-hours reference, while running
        save_profile(reference(), data_dir / "profiles")
        while query(sql, "csv").splitlines()[1:] != ["1,3", "2,3"]:
            assert time.monotonic() < deadline, (
                "the profile saved while running never reached ClickHouse"
            )
            time.sleep(0.1)
        assert runner.stats()["job_failures"] == 0
    finally:
        runner.stop()
    c = clickhouse_connect.get_client(dsn=settings.clickhouse)  # the store is free again
    try:
        assert c.query("SELECT count() FROM driftline.reference_profiles").result_rows[0][0] == 6
    finally:
        c.close()
