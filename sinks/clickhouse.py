"""ClickHouse sink: Driftline's output topics into the tables of ``sinks/sql``.

One message kind per topic (metrics, alerts, drift_events, outcomes, comparisons); the table is chosen from the
topic's name (its last ``.``-separated part, e.g. ``driftline.metrics`` -> ``metrics``), or from
``topic_tables`` when given.

Idempotence, in two layers:

1. Every insert covers one (topic, partition) offset range and carries
   ``insert_deduplication_token = "topic:partition:first-last"``; the tables set
   ``non_replicated_deduplication_window``, so ClickHouse ignores an identical repeat (a retry
   of the same batch). Verified with chdb 4.4 (ClickHouse 26.9).
2. Every row stores its ``_topic, _partition, _offset``; :meth:`ClickHouseSink.resume_offsets`
   reads ``max(_offset) + 1`` back and ``write`` skips messages below it, so a replay with
   different batch boundaries (after a crash before the Kafka commit) adds nothing either.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
import zlib
from collections.abc import Callable
from typing import Any, BinaryIO

import orjson

from driftline.schemas.codec import split_by_size
from driftline.sinks.base import Sink, SinkBackpressureError, SinkBatch, SinkItem
from driftline.sinks.migrations import migrate, validate_database, validate_retention_days

log = logging.getLogger(__name__)

TABLES = ("metrics", "alerts", "drift_events", "outcomes", "comparisons")

COLUMNS: dict[str, tuple[str, ...]] = {
    "metrics": (
        "model_id", "model_version", "segment", "task", "window_start", "window_end", "metric",
        "value", "count", "labeled_count", "revision", "final", "emitted_at",
    ),
    "alerts": (
        "alert_id", "incident_id", "status", "severity", "kind", "rule", "model_id",
        "model_version", "segment", "metric", "value", "threshold", "window_start", "window_end",
        "detected_at", "emitted_at", "message", "evidence", "feature",
    ),
    "drift_events": (
        "event_id", "model_id", "model_version", "partition", "detector", "kind", "direction",
        "position", "params", "estimate_before", "estimate_after", "window_start", "window_end",
        "detected_at", "emitted_at",
    ),
    "outcomes": (
        "prediction_id", "model_id", "model_version", "segments", "task", "y_pred", "y_true",
        "score", "value_pred", "value_true", "latency_ms", "prediction_ts", "label_ts",
        "label_delay_s", "correct", "abs_error", "items_shown", "clicked_shown", "converted_shown",
        "relevant_count", "first_relevant_rank",
    ),
    "comparisons": (
        "model_id", "champion_version", "challenger_version", "mode", "window_start", "window_end",
        "metric", "champion", "challenger", "difference", "ci_low", "ci_high", "z", "p_value",
        "n_champion", "n_challenger", "alpha", "verdict", "revision", "emitted_at",
    ),
}  # fmt: skip
SOURCE_COLUMNS = ("_topic", "_partition", "_offset")


def _ms(t: Any) -> int:
    """Epoch seconds (float) -> DateTime64(3) ticks; clickhouse-connect writes ints as raw ticks."""
    return 0 if t is None else round(float(t) * 1000.0)


def _ms_or_none(t: Any) -> int | None:
    return None if t is None else round(float(t) * 1000.0)


def _f(x: Any) -> float | None:
    return None if x is None else float(x)


def _s(x: Any) -> str | None:
    return None if x is None else str(x)


def _json(x: Any) -> str:
    return orjson.dumps(x if x is not None else {}).decode()


def _metrics_rows(m: dict[str, Any]) -> list[tuple[Any, ...]]:
    counts = m.get("counts") or {}
    labeled = int(m.get("labeled_count") or 0)
    common = (
        m["model_id"],
        str(m.get("model_version", "")),
        m.get("segment") or "",
        m.get("task") or "",
    )
    ws, we, em = _ms(m["window_start"]), _ms(m["window_end"]), _ms(m.get("emitted_at"))
    rev, final = int(m.get("revision") or 0), bool(m.get("final"))
    rows = []
    for name, value in (m.get("metrics") or {}).items():
        if value is None or not math.isfinite(value):
            continue  # undefined metric (e.g. recall with no positives): absent, not 0
        n = counts.get(name, labeled)
        rows.append((*common, ws, we, name, float(value), int(n), labeled, rev, final, em))
    return rows


def _alert_rows(a: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(
        a["alert_id"], a.get("incident_id") or "", a["status"], a.get("severity") or "",
        a.get("kind") or "", a.get("rule") or "", a["model_id"], str(a.get("model_version") or ""),
        a.get("segment") or "", a.get("metric") or "", _f(a.get("value")), _f(a.get("threshold")),
        _ms(a.get("window_start")), _ms(a.get("window_end")), _ms(a.get("detected_at")),
        _ms(a.get("emitted_at")), a.get("message") or "", _json(a.get("evidence")), a.get("feature") or "",
    )]  # fmt: skip


def _drift_rows(d: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(
        d["event_id"], d["model_id"], str(d.get("model_version") or ""), int(d.get("partition") or 0),
        d["detector"], d["kind"], d.get("direction"), int(d.get("position") or 0),
        _json(d.get("params")), _f(d.get("estimate_before")), _f(d.get("estimate_after")),
        _ms(d.get("window_start")), _ms(d.get("window_end")), _ms(d.get("detected_at")),
        _ms(d.get("emitted_at")),
    )]  # fmt: skip


def _num(x: Any) -> float | int | None:
    """Pass JSON numbers through (the Float64 writer takes ints); reject anything else."""
    if x is None or x.__class__ is float or x.__class__ is int:
        return x  # type: ignore[no-any-return]
    return float(x)


def _outcome_rows(o: dict[str, Any]) -> list[tuple[Any, ...]]:
    # hot path (one call per outcome): few function calls, values passed through when typed right
    segs = o.get("segments") or {}
    for k, v in segs.items():
        if k.__class__ is not str or v.__class__ is not str:
            segs = {str(k): str(v) for k, v in segs.items()}
            break
    y_pred, y_true, label_ts = o.get("y_pred"), o.get("y_true"), o.get("label_ts")
    correct = o.get("correct")
    pid, model = o["prediction_id"], o["model_id"]
    if pid is None or model is None:
        raise TypeError("prediction_id and model_id must not be null")
    return [(
        pid if pid.__class__ is str else str(pid), model if model.__class__ is str else str(model),
        str(o.get("model_version") or ""), segs,
        o.get("task") or "",
        y_pred if y_pred is None or y_pred.__class__ is str else str(y_pred),
        y_true if y_true is None or y_true.__class__ is str else str(y_true),
        _num(o.get("score")), _num(o.get("value_pred")), _num(o.get("value_true")),
        _num(o.get("latency_ms")), round(o["prediction_ts"] * 1000.0),
        None if label_ts is None else round(label_ts * 1000.0),
        _num(o.get("label_delay_s")), None if correct is None else bool(correct),
        _num(o.get("abs_error")), o.get("items_shown"), o.get("clicked_shown"),
        o.get("converted_shown"), o.get("relevant_count"), o.get("first_relevant_rank"),
    )]  # fmt: skip


def _comparison_rows(m: dict[str, Any]) -> list[tuple[Any, ...]]:
    """One row per compared metric of a comparisons message (docs/wire-contract.md, "Comparison")."""
    common = (m["model_id"], str(m["champion_version"]), str(m["challenger_version"]), m.get("mode") or "",
              _ms(m["window_start"]), _ms(m["window_end"]))  # fmt: skip
    rev, em = int(m.get("revision") or 0), _ms(m.get("emitted_at"))
    return [(
        *common, c["metric"], float(c["champion"]), float(c["challenger"]), float(c["difference"]),
        float(c["ci_low"]), float(c["ci_high"]), _f(c.get("z")), float(c["p_value"]), int(c["n_champion"]),
        int(c["n_challenger"]), float(c["alpha"]), c["verdict"], rev, em,
    ) for c in m.get("comparisons") or []]  # fmt: skip


ROW_BUILDERS: dict[str, Callable[[dict[str, Any]], list[tuple[Any, ...]]]] = {
    "metrics": _metrics_rows,
    "alerts": _alert_rows,
    "drift_events": _drift_rows,
    "outcomes": _outcome_rows,
    "comparisons": _comparison_rows,
}


# The outcome envelope as ClickHouse parses it on the raw path (``ClickHouseSink._insert_raw_outcomes``):
# one JSONEachRow line per envelope, {"_topic", "_partition", "_offset", "events": [outcome...]}.
_RAW_EVENT_TYPES = (
    ("prediction_id", "Nullable(String)"), ("model_id", "Nullable(String)"), ("model_version", "Nullable(String)"),
    ("segments", "Map(String, String)"), ("task", "Nullable(String)"), ("y_pred", "Nullable(String)"),
    ("y_true", "Nullable(String)"), ("score", "Nullable(Float64)"), ("value_pred", "Nullable(Float64)"),
    ("value_true", "Nullable(Float64)"), ("latency_ms", "Nullable(Float64)"), ("prediction_ts", "Nullable(Float64)"),
    ("label_ts", "Nullable(Float64)"), ("label_delay_s", "Nullable(Float64)"), ("correct", "Nullable(Bool)"),
    ("abs_error", "Nullable(Float64)"), ("items_shown", "Nullable(UInt16)"), ("clicked_shown", "Nullable(UInt16)"),
    ("converted_shown", "Nullable(UInt16)"), ("relevant_count", "Nullable(UInt16)"),
    ("first_relevant_rank", "Nullable(UInt16)"),
)  # fmt: skip
_RAW_SCHEMA = "_topic String, _partition UInt16, _offset UInt64, events Array(Tuple({}))".format(
    ", ".join(f"{name} {typ}" for name, typ in _RAW_EVENT_TYPES)
)
# An event's fields by position: ClickHouse 26.9 plans ``tupleElement(e, i)`` in a quarter of
# the time of ``e.name`` (measured in chdb: 5 ms against 17 ms for the 21 fields), and planning,
# not rows, was most of a small insert's cost.
_E = {name: f"tupleElement(e, {i})" for i, (name, _) in enumerate(_RAW_EVENT_TYPES, 1)}
# The SELECT list restates ``_outcome_rows``: the same defaults, the same rounding (banker's, as
# Python's ``round``), and an error for what ``_outcome_rows`` would reject (the batch then takes
# that path, which counts the offender as invalid).
_RAW_SELECT: dict[str, str] = {
    "prediction_id": f"if({_E['prediction_id']} IS NULL OR {_E['model_id']} IS NULL OR {_E['prediction_ts']} IS NULL, "
                     "toString(throwIf(1, 'outcome without prediction_id, model_id or prediction_ts')), "
                     f"assumeNotNull({_E['prediction_id']}))",
    "model_id": f"assumeNotNull({_E['model_id']})",
    "model_version": f"ifNull({_E['model_version']}, '')",
    "task": f"ifNull({_E['task']}, '')",
    "prediction_ts": f"fromUnixTimestamp64Milli(toInt64(round(assumeNotNull({_E['prediction_ts']}) * 1000)))",
    "label_ts": f"if({_E['label_ts']} IS NULL, NULL, "
                f"fromUnixTimestamp64Milli(toInt64(round(assumeNotNull({_E['label_ts']}) * 1000))))",
}  # fmt: skip
RAW_CHUNK_BYTES = 64 << 20  # one insert (one block, one part) per this much envelope JSON
_ONE_BLOCK = {  # the whole chunk in one block: a row that fails to parse leaves nothing written
    "max_insert_block_size": 1 << 40, "min_insert_block_size_rows": 1 << 40,
    "min_insert_block_size_bytes": 1 << 60,
}  # fmt: skip


# ClickHouse collapses equal sorting keys inside each inserted block of a ReplacingMergeTree by
# default (``optimize_on_insert``): half of an outcome insert's time (measured in chdb: 170k ->
# 373k rows/s without it). Repeated outcomes are rare and ``FINAL`` collapses them anyway,
# inside a part as across parts, which is how ``outcomes`` is read when counts must be exact.
_OUTCOMES_INSERT = {"optimize_on_insert": 0}
# ClickHouse parses a file in parallel only from 10 MiB chunks up, and the sink runner flushes
# every 8 MiB: 1 MiB chunks let both cores parse (measured in chdb: 200k -> 225k rows/s).
_RAW_PARSE = {"min_chunk_bytes_for_parallel_parsing": 1 << 20}


def raw_outcomes_sql(database: str) -> str:
    """The INSERT ... SELECT that loads a file of outcome envelopes (see ``_RAW_SCHEMA``).

    Constant text but for the (validated) database name: the file's path and its schema are
    bound parameters (``path``, ``schema``), and the rows are in the file, never in the SQL.
    The constant settings ride in the statement's SETTINGS clause (ClickHouse pushes it down to
    the INSERT): chdb's client applies per-call settings with a SET before and after the query
    each, ~1 ms apiece, so only the per-insert deduplication token goes that way.
    """
    select = ", ".join(_RAW_SELECT.get(c, _E[c]) for c in COLUMNS["outcomes"])
    names = ", ".join(COLUMNS["outcomes"] + SOURCE_COLUMNS)
    settings = ", ".join(f"{k} = {v:d}" for k, v in {**_ONE_BLOCK, **_OUTCOMES_INSERT, **_RAW_PARSE}.items())
    return (f"INSERT INTO {validate_database(database)}.outcomes ({names}) "
            f"SELECT {select}, _topic, _partition, _offset FROM (SELECT _topic, _partition, _offset, "
            "arrayJoin(events) AS e FROM file({path:String}, 'JSONEachRow', {schema:String})) "
            f"SETTINGS {settings}")


def _write_envelopes(f: BinaryIO, head: bytes, items: list[Any]) -> int:
    """Write one partition's outcome messages as lines of ``_RAW_SCHEMA``; return the outcomes."""
    rows = 0
    for it in items:
        raw = it.value.strip()
        if raw[:1] != b"{" or raw[-1:] != b"}":
            raise ValueError(f"not a JSON object at offset {it.offset}")
        # Written in pieces: an envelope is ~300 kB, and joining the line first copied it twice.
        f.write(head + str(it.offset).encode())
        if raw.startswith(b'{"events":'):  # an envelope, as the join stage writes it
            f.write(b",")
            f.write(memoryview(raw)[1:])
            f.write(b"\n")
        else:  # one outcome (anything else fails in ClickHouse: the column path decides)
            f.write(b',"events":[')
            f.write(raw)
            f.write(b"]}\n")
        # chdb reports no written rows for INSERT ... SELECT through clickhouse-connect:
        # count the outcome objects by their key (JSON escapes a quote inside a string)
        rows += raw.count(b'"prediction_id":')
    return rows


def sampled(prediction_id: str, rate: float) -> bool:
    """Return whether an outcome is kept at sample ``rate`` (deterministic in ``prediction_id``).

    Keeps ``crc32(utf8(prediction_id)) < rate * 2**32``, the same test as ClickHouse's
    ``crc32(prediction_id)``, so replays (and analysts) select exactly the same rows.
    """
    if rate >= 1.0:
        return True
    return zlib.crc32(prediction_id.encode()) < rate * 4294967296.0


class ClickHouseSink(Sink):
    """Write Driftline's output messages into ClickHouse (embedded chdb or a server).

    Parameters
    ----------
    dsn : str
        ``chdb:///path`` (embedded; one process per path) or ``http://host:8123``.
    database : str
        Database name (a plain identifier).
    retention_days : int
        TTL of every table, in days of event time, 1..36500.
    outcome_sample_rate : float
        Fraction of outcomes stored, in ``(0, 1]``; chosen by ``crc32(prediction_id)``.
    client_settings : dict, optional
        Extra keyword arguments for ``clickhouse_connect.get_client`` (e.g. username/password read
        from the environment by the caller, never from the command line).
    topic_tables : dict, optional
        ``{topic: table}`` overriding the name-based routing.
    max_retries : int
        Insert attempts after the first one before :class:`SinkBackpressureError`.
    backoff_s : float
        First retry delay; doubles per retry, capped at ``max_backoff_s``.

    Guarantees
    ----------
    * Each message's rows go into one insert; an insert is atomic (one ClickHouse block).
    * At-least-once input gives each row once, by the two layers in the module docstring, as long
      as one sink process owns a given (topic, partition) at a time.
    * ``write`` never drops a batch silently: malformed messages are counted in
      ``stats()["invalid"]`` and logged; insert errors are retried, then raised as
      :class:`SinkBackpressureError` (nothing of the failing (topic, partition) was written;
      earlier ones were and will be skipped on the retry).
    """

    def __init__(
        self,
        dsn: str,
        *,
        database: str = "driftline",
        retention_days: int = 90,
        outcome_sample_rate: float = 1.0,
        client_settings: dict[str, Any] | None = None,
        topic_tables: dict[str, str] | None = None,
        max_retries: int = 5,
        backoff_s: float = 0.05,
        max_backoff_s: float = 2.0,
        client: Any = None,
    ) -> None:
        super().__init__()
        if not isinstance(dsn, str) or not dsn:
            raise ValueError("dsn: expected 'chdb:///path' or 'http://host:8123'")
        self.dsn = dsn
        self.database = validate_database(database)
        self.retention_days = validate_retention_days(retention_days)
        if not 0.0 < float(outcome_sample_rate) <= 1.0:
            raise ValueError(f"outcome_sample_rate: {outcome_sample_rate} not in (0, 1]")
        self.outcome_sample_rate = float(outcome_sample_rate)
        self.client_settings = dict(client_settings or {})
        for t in (topic_tables or {}).values():
            if t not in TABLES:
                raise ValueError(f"topic_tables: unknown table {t!r} (known: {TABLES})")
        self.topic_tables = dict(topic_tables or {})
        # Outcome envelopes go to an embedded store undecoded, parsed by ClickHouse itself
        # (``_insert_raw_outcomes``): it reads a file, so only a chdb store in this process can.
        # Sampling needs a per-row decision in Python: it keeps the column path.
        self.raw_outcomes = dsn.startswith("chdb:") and self.outcome_sample_rate >= 1.0
        if max_retries < 0:
            raise ValueError("max_retries: must be >= 0")
        self.max_retries, self.backoff_s, self.max_backoff_s = max_retries, backoff_s, max_backoff_s
        self.client: Any = client  # injectable (tests wrap the real client with faults)
        self._contexts: dict[str, Any] = {}
        self._next_offset: dict[tuple[str, int], int] = {}
        self._stats: dict[str, Any] = {
            "rows_written": dict.fromkeys(TABLES, 0),
            "inserts": 0, "retries": 0, "failures": 0, "invalid": 0, "skipped_replayed": 0,
            "sampled_out": 0, "unrouted": 0, "raw_fallbacks": 0, "undecodable": 0, "last_error": None,
        }  # fmt: skip

    # ---- lifecycle -----------------------------------------------------------------------

    def setup(self) -> None:
        """Open the client, apply pending migrations, load the resume offsets."""
        if self.client is None:
            import clickhouse_connect

            self.client = clickhouse_connect.get_client(dsn=self.dsn, **self.client_settings)
        migrate(self.client, database=self.database, retention_days=self.retention_days)
        self.reset_offsets()

    def close(self) -> None:
        """Close the client (a chdb path can only be reopened elsewhere once closed)."""
        if self.client is not None:
            self.client.close()
            self.client = None
        self._contexts.clear()

    def stats(self) -> dict[str, Any]:
        """Counters since construction (copies)."""
        with self._lock:
            out = dict(self._stats)
            out["rows_written"] = dict(self._stats["rows_written"])
            return out

    # ---- offsets -------------------------------------------------------------------------

    def resume_offsets(self) -> dict[tuple[str, int], int]:
        """Return ``{(topic, partition): max(_offset) + 1}`` over all tables.

        This is what ClickHouse has applied; a consumer that seeks there reads nothing twice.
        Scans the three source columns of every table (small, well compressed columns).
        """
        out: dict[tuple[str, int], int] = {}
        for table in TABLES:
            rows = self.client.query(
                f"SELECT _topic, _partition, max(_offset) FROM {self.database}.{table} "
                "GROUP BY _topic, _partition"
            ).result_rows
            for topic, partition, off in rows:
                key = (str(topic), int(partition))
                out[key] = max(out.get(key, 0), int(off) + 1)
        return out

    def reset_offsets(self, offsets: dict[tuple[str, int], int] | None = None) -> None:
        """Reload (or set) the per-partition offsets below which ``write`` skips messages.

        Call after a rebalance: another process may have written partitions meanwhile.
        """
        with self._lock:
            self._next_offset = dict(self.resume_offsets() if offsets is None else offsets)

    def forget_partitions(self, tps: list[tuple[str, int]]) -> None:
        """Drop the skip offsets of partitions this process no longer owns."""
        with self._lock:
            for tp in tps:
                self._next_offset.pop(tp, None)

    # ---- writing -------------------------------------------------------------------------

    def table_for(self, topic: str) -> str | None:
        """Return the table a topic's messages go to, or None when unknown."""
        if topic in self.topic_tables:
            return self.topic_tables[topic]
        last = topic.rsplit(".", 1)[-1]
        for table in sorted(TABLES, key=len, reverse=True):
            if last == table or last.endswith("_" + table) or last.endswith("-" + table):
                return table
        return None

    def wants_raw(self, topic: str) -> bool:
        """Outcome envelopes stay bytes when ``raw_outcomes`` (the sink runner skips decoding)."""
        return self.raw_outcomes and self.table_for(topic) == "outcomes"

    def write(self, batch: SinkBatch) -> None:
        """Insert a batch: one insert per (topic, partition), oldest partition first; raw
        outcome envelopes of every partition together, in inserts of up to ``RAW_CHUNK_BYTES``.

        Raises
        ------
        SinkBackpressureError
            An insert still failed after ``max_retries`` retries.
        """
        raw: list[Any] = []  # outcome envelopes of every partition, inserted together
        for (topic, partition), items in batch.items.items():
            table = self.table_for(topic)
            if table is None:
                self._stats["unrouted"] += len(items)
                log.error("no table for topic %r: %d messages not written", topic, len(items))
                continue
            start = self._next_offset.get((topic, partition), 0)
            fresh = [it for it in items if it.offset >= start]
            self._stats["skipped_replayed"] += len(items) - len(fresh)
            if not fresh:
                continue
            if table == "outcomes" and self.raw_outcomes and all(it.value.__class__ is bytes for it in fresh):
                raw += fresh
                continue
            columns = self._columns(table, topic, partition, fresh)
            token = f"{topic}:{partition}:{fresh[0].offset}-{fresh[-1].offset}"
            if columns[0]:
                self._insert_with_retry(table, columns, token)
                self._stats["rows_written"][table] += len(columns[0])
            self._next_offset[(topic, partition)] = fresh[-1].offset + 1
        # One insert for all partitions: each insert costs ClickHouse a part and a commit, and
        # eight small ones per batch took as long as the rows themselves.
        for chunk in split_by_size(raw, RAW_CHUNK_BYTES, lambda it: len(it.value)) if raw else []:
            self._write_raw_outcomes(chunk)

    def _write_raw_outcomes(self, items: list[Any]) -> None:
        """Insert outcome envelopes (of any partitions) as ClickHouse parses them; on any
        error, the column path.

        The column path repeats the insert, as one insert, with the same deduplication token:
        the raw insert is one block, so a failed one wrote nothing, and a lost reply to one that
        did write makes ClickHouse drop the repeat.
        """
        groups: dict[tuple[str, int], list[Any]] = {}
        for it in items:
            groups.setdefault((it.topic, it.partition), []).append(it)
        token = ",".join(f"{t}:{p}:{g[0].offset}-{g[-1].offset}" for (t, p), g in groups.items())
        fd, path = tempfile.mkstemp(prefix="driftline-outcomes-", suffix=".jsonl")
        try:
            rows = 0
            with os.fdopen(fd, "wb") as f:
                for (topic, partition), group in groups.items():
                    head = b'{"_topic":' + orjson.dumps(topic) + b',"_partition":' + str(partition).encode() + b',"_offset":'
                    rows += _write_envelopes(f, head, group)
            self.client.command(raw_outcomes_sql(self.database), parameters={"path": path, "schema": _RAW_SCHEMA},
                                settings={"insert_deduplication_token": token})
            self._stats["inserts"] += 1
            self._stats["rows_written"]["outcomes"] += rows
        except Exception as exc:
            log.warning("raw outcome insert %s failed (%s): taking the column path", token, str(exc)[:300])
            self._stats["raw_fallbacks"] += 1
            columns: list[list[Any]] = []
            for (topic, partition), group in groups.items():
                decoded = [it for it in (self._decoded(it) for it in group) if it is not None]
                part = self._columns("outcomes", topic, partition, decoded)
                columns = [a + b for a, b in zip(columns, part, strict=True)] if columns else part
            if columns and columns[0]:
                self._insert_with_retry("outcomes", columns, token)
                self._stats["rows_written"]["outcomes"] += len(columns[0])
        finally:
            os.unlink(path)
        for key, group in groups.items():
            self._next_offset[key] = group[-1].offset + 1

    def _decoded(self, it: Any) -> Any:
        """``it`` with a decoded value, or None (counted ``undecodable``) when it is no JSON object."""
        if it.value.__class__ is not bytes:
            return it
        try:
            value = orjson.loads(it.value)
            if isinstance(value, dict):
                return SinkItem(it.topic, it.partition, it.offset, value)
        except orjson.JSONDecodeError:
            pass
        self._stats["undecodable"] += 1
        log.error("undecodable message at %s[%d]@%d", it.topic, it.partition, it.offset)
        return None

    def _columns(self, table: str, topic: str, partition: int, items: list[Any]) -> list[list[Any]]:
        build = ROW_BUILDERS[table]
        rate = self.outcome_sample_rate if table == "outcomes" else 1.0
        rows: list[tuple[Any, ...]] = []
        offsets: list[int] = []
        items = [d for d in (self._decoded(it) for it in items) if d is not None]
        for it in items:
            # The join stage sends a batch's outcomes as one envelope {"events": [...]}.
            vals = it.value.get("events") if table == "outcomes" else None
            for v in vals if isinstance(vals, list) else (it.value,):
                try:
                    if rate < 1.0 and not sampled(str(v["prediction_id"]), rate):
                        self._stats["sampled_out"] += 1
                        continue
                    new = build(v)
                except (KeyError, TypeError, ValueError, AttributeError) as exc:
                    # our own topics: a malformed message is a bug upstream; keep going, loudly
                    self._stats["invalid"] += 1
                    log.error(
                        "invalid %s message at %s[%d]@%d: %r", table, topic, partition, it.offset, exc
                    )
                    continue
                rows.extend(new)
                offsets.extend([it.offset] * len(new))
        n = len(COLUMNS[table])
        cols: list[list[Any]] = (
            [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(n)]
        )
        cols.append([topic] * len(offsets))
        cols.append([partition] * len(offsets))
        cols.append(offsets)
        return cols

    def _insert_with_retry(self, table: str, columns: list[list[Any]], token: str) -> None:
        delay = self.backoff_s
        for attempt in range(self.max_retries + 1):
            try:
                self._insert(table, columns, token)
                return
            except Exception as exc:  # any client/transport error: retry, then backpressure
                self._stats["last_error"] = f"{type(exc).__name__}: {exc}"[:500]
                self._contexts.pop(table, None)  # a broken context must not be reused
                if attempt == self.max_retries:
                    self._stats["failures"] += 1
                    raise SinkBackpressureError(delay, self._stats["last_error"]) from exc
                self._stats["retries"] += 1
                log.warning("insert into %s failed (attempt %d): %s", table, attempt + 1, exc)
                time.sleep(delay)
                delay = min(delay * 2.0, self.max_backoff_s)

    def _insert(self, table: str, columns: list[list[Any]], token: str) -> None:
        names = COLUMNS[table] + SOURCE_COLUMNS
        ctx = self._contexts.get(table)
        if ctx is None:
            # reuse the insert context: it saves a DESCRIBE round trip per insert
            ctx = self.client.create_insert_context(
                table=f"{self.database}.{table}", column_names=list(names), column_oriented=True
            )
            self._contexts[table] = ctx
        ctx.settings = {"insert_deduplication_token": token, **(_OUTCOMES_INSERT if table == "outcomes" else {})}
        ctx.data = columns
        try:
            self.client.insert(context=ctx)
        finally:
            ctx.data = None
        self._stats["inserts"] += 1
