"""The worker's web views: ``/health``, ``/metrics`` (Prometheus) and ``/query`` (read-only SQL)."""

from __future__ import annotations

import asyncio
from typing import Any

import faust


def add_views(app: faust.App, owner: Any) -> None:
    """Register the views on ``app``; ``owner`` (the DriftlineApp) answers them."""

    class Health(faust.web.View):
        async def get(self, request: Any) -> Any:
            return self.json(owner.health())

    class Metrics(faust.web.View):
        async def get(self, request: Any) -> Any:
            return self.bytes(owner.metrics.exposition(), content_type="text/plain; version=0.0.4")

    class Query(faust.web.View):
        async def post(self, request: Any) -> Any:
            if owner.query is None:
                return self.json({"error": "this worker owns no ClickHouse store"}, status=404)
            try:
                body = await request.json()
                sql, fmt = str(body.get("sql", "")), str(body.get("format", "table"))
            except Exception:
                return self.json({"error": 'expected JSON {"sql": ..., "format": ...}'}, status=400)
            loop = asyncio.get_running_loop()
            try:
                text = await loop.run_in_executor(None, owner.query, sql, fmt)
            except Exception as exc:  # refusals and SQL errors go back to the caller
                return self.json({"error": str(exc)}, status=400)
            return self.text(text)

    app.page("/health")(Health)
    app.page("/metrics")(Metrics)
    app.page("/query")(Query)
