"""Where ``driftline query`` sends its SQL.

An embedded chdb path can be open in one process only: while a worker owns it, queries
go to the worker's read-only ``/query`` endpoint; otherwise (or for a server DSN) the
CLI opens a read-only client itself.
"""

from __future__ import annotations

from typing import Any

import orjson

DEFAULT_WORKER_URL = "http://127.0.0.1:6066"


def query(sql: str, fmt: str, *, dsn: str, worker_url: str | None = None, timeout: float = 60.0,
          client_settings: dict[str, Any] | None = None) -> str:
    from driftline.sinks.query import QueryRefused, check_read_only, open_query_client, run_query

    check_read_only(sql)  # refuse early, with the same message wherever it would run
    if dsn.startswith("chdb:"):
        text = _via_worker(worker_url or DEFAULT_WORKER_URL, sql, fmt, timeout)
        if text is not None:
            return text
    client = open_query_client(dsn, **(client_settings or {}))
    try:
        return str(run_query(client, sql, fmt))
    except QueryRefused:
        raise
    finally:
        client.close()


def _via_worker(url: str, sql: str, fmt: str, timeout: float) -> str | None:
    """The worker's answer, or None when no worker listens there."""
    from urllib import request
    from urllib.error import HTTPError, URLError

    req = request.Request(url.rstrip("/") + "/query", data=orjson.dumps({"sql": sql, "format": fmt}),
                          headers={"Content-Type": "application/json"}, method="POST")
    try:
        with request.urlopen(req, timeout=timeout) as resp:
            return str(resp.read().decode())
    except HTTPError as exc:
        body = exc.read().decode(errors="replace")
        try:
            message = orjson.loads(body).get("error", body)
        except orjson.JSONDecodeError:
            message = body
        from driftline.sinks.query import QueryRefused

        if "read-only" in message or "refused" in message.lower():
            raise QueryRefused(message) from None
        raise RuntimeError(message) from None
    except (URLError, ConnectionError, TimeoutError):
        return None
