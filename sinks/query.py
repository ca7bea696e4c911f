"""Read-only SQL over the Driftline tables: a checker, a formatter and a tiny HTTP server.

Two independent locks on writes:

1. :func:`check_read_only` accepts only a single ``SELECT``/``WITH``/``SHOW``/``DESCRIBE``/
   ``DESC``/``EXPLAIN``/``EXISTS`` statement and raises :class:`QueryRefused` otherwise.
2. Execution passes the ClickHouse setting ``readonly=1`` with the query, so the server refuses
   writes even if (1) were bypassed.

chdb caveat (clickhouse-connect 1.12, chdb 4.4): per-call settings ride as a ``SETTINGS`` clause
for SELECT-like queries, but for statements it classifies as inserts or commands the backend runs
``SET readonly=1`` on the client's session and then cannot restore it (a read-only session may
not change settings): that client stays read-only for good. Hence: give the query path its own
client (:func:`open_query_client`, itself created read-only), never the sink's.
"""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from urllib import request as urlrequest
from urllib.error import HTTPError

FORMATS = ("table", "csv", "json")
ALLOWED_FIRST_WORDS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS")
MAX_SQL_CHARS = 100_000

# strings, quoted identifiers and comments, removed before looking at keywords and ';'
_STRIP_RE = re.compile(
    r"'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.)*\"|`(?:[^`\\]|\\.)*`|--[^\n]*|#[^\n]*|/\*.*?\*/",
    re.DOTALL,
)
# ClickHouse has SELECT ... INTO OUTFILE (writes a file on the server's host)
_FORBIDDEN_RE = re.compile(r"\bINTO\s+OUTFILE\b", re.IGNORECASE)


class QueryRefused(ValueError):
    """The statement is not a single read-only query."""


def check_read_only(sql: str) -> str:
    """Return ``sql`` without a trailing ``;`` if it is one read-only statement.

    Raises
    ------
    QueryRefused
        For anything else, with a message that says what is allowed.
    """
    if not isinstance(sql, str) or not sql.strip():
        raise QueryRefused(
            "empty query: send one SELECT, WITH, SHOW, DESCRIBE or EXPLAIN statement"
        )
    if len(sql) > MAX_SQL_CHARS:
        raise QueryRefused(f"query longer than {MAX_SQL_CHARS} characters")
    bare = _STRIP_RE.sub(" ", sql).strip()
    body = bare.rstrip().rstrip(";").strip()
    if ";" in body:
        raise QueryRefused("only one statement per query (found ';' between statements)")
    m = re.match(r"\(*\s*([A-Za-z]+)", body)
    first = m.group(1).upper() if m else ""
    if first not in ALLOWED_FIRST_WORDS:
        raise QueryRefused(
            f"read-only: {first or 'this statement'} is not allowed; "
            f"use one of {', '.join(ALLOWED_FIRST_WORDS)}"
        )
    if _FORBIDDEN_RE.search(body):
        raise QueryRefused("read-only: INTO OUTFILE is not allowed")
    # drop the trailing ';' from the original text (the driver appends SETTINGS/FORMAT clauses)
    return re.sub(r"[;\s]+$", "", sql)


def open_query_client(dsn: str, **kwargs: Any) -> Any:
    """Open a client for queries only: its whole session is ``readonly=1``.

    On chdb this is a second handle on the engine the process already has open (same path).
    """
    import clickhouse_connect

    settings = dict(kwargs.pop("settings", None) or {})
    settings["readonly"] = 1
    return clickhouse_connect.get_client(dsn=dsn, settings=settings, **kwargs)


def execute_read_only(client: Any, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run ``sql`` with ``readonly=1`` and return ``(column_names, rows)``; no statement check."""
    result = client.query(sql, settings={"readonly": 1})
    return list(result.column_names), [tuple(r) for r in result.result_rows]


def _cell(v: Any) -> Any:
    """Make a value JSON/CSV friendly."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (datetime, date)):
        return v.isoformat()
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, dict):
        return {str(k): _cell(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_cell(x) for x in v]
    return str(v)


def _text(v: Any) -> str:
    v = _cell(v)
    if v is None:
        return "NULL"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def format_result(columns: list[str], rows: list[tuple[Any, ...]], fmt: str) -> str:
    """Render rows as an aligned text table, CSV (with header) or a JSON array of objects."""
    if fmt == "json":
        return json.dumps(
            [dict(zip(columns, map(_cell, r), strict=True)) for r in rows], ensure_ascii=False
        )
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow(["" if c is None else _text(c) for c in r])
        return buf.getvalue()
    if fmt != "table":
        raise ValueError(f"fmt: {fmt!r} not in {FORMATS}")
    cells = [[_text(c) for c in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [bool(rows) and all(isinstance(r[i], (int, float)) or r[i] is None for r in rows)
               for i in range(len(columns))]  # fmt: skip

    def line(vals: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if n else v.ljust(w) for v, w, n in zip(vals, widths, numeric, strict=True)
        ).rstrip()

    out = [line(list(columns)), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in cells)
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out) + "\n"


def run_query(client: Any, sql: str, fmt: str = "table") -> str:
    """Run one read-only statement and return it formatted.

    Parameters
    ----------
    client : clickhouse_connect Client
        Preferably from :func:`open_query_client` (see the module docstring for why).
    sql : str
        One SELECT/WITH/SHOW/DESCRIBE/EXPLAIN/EXISTS statement.
    fmt : {"table", "csv", "json"}
        Output format.

    Raises
    ------
    QueryRefused
        The statement is not read-only (nothing was sent to ClickHouse).
    ValueError
        Unknown ``fmt``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt: {fmt!r} not in {FORMATS}")
    columns, rows = execute_read_only(client, check_read_only(sql))
    return format_result(columns, rows, fmt)


def query_via_server(url: str, sql: str, fmt: str = "table", timeout: float = 60.0) -> str:
    """POST a query to a query endpoint (the worker's ``/query``) and return the formatted text.

    Raises
    ------
    QueryRefused
        The server refused the statement (HTTP 403).
    RuntimeError
        Any other error reply, with the server's message.
    """
    body = json.dumps({"sql": sql, "format": fmt}).encode()
    req = urlrequest.Request(
        url.rstrip("/") + "/query", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urlrequest.urlopen(req, timeout=timeout) as resp:
            return str(resp.read().decode())
    except HTTPError as exc:
        msg = exc.read().decode(errors="replace").strip()
        if exc.code == 403:
            raise QueryRefused(msg) from None
        raise RuntimeError(f"query server error {exc.code}: {msg}") from None
