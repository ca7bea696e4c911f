"""Baseline (b): the join + metrics written the way a first faust version would be.

One faust agent over the single-event predictions and labels topics; per event:
orjson decode, then a table write per prediction (``pending[pid] = ...``), a lookup and
delete per label, and the per-model metric counters updated in a table per event. faust's
default ``kafka://`` transport and ``broker_session_timeout=6`` (docs/architecture.md).

Configured by environment (set by ``bench``): NAIVE_BOOTSTRAP, NAIVE_PREDICTIONS,
NAIVE_LABELS, NAIVE_APP_ID, NAIVE_PORT, NAIVE_DATADIR, NAIVE_PARTITIONS.
Counters at ``GET /health``: {"counters": {"messages_prediction", "messages_label", "joins"}}.
Run with the main venv: ``python bench/naive_faust.py``.
"""

from __future__ import annotations

import os

import faust
import orjson

env = os.environ
app = faust.App(
    env.get("NAIVE_APP_ID", "naive-faust"),
    broker=f"kafka://{env.get('NAIVE_BOOTSTRAP', '127.0.0.1:9092')}",
    store="memory://",
    datadir=env.get("NAIVE_DATADIR", "/tmp/naive-faust"),
    topic_partitions=int(env.get("NAIVE_PARTITIONS", "8")),
    broker_session_timeout=6.0,
    broker_heartbeat_interval=1.0,
    broker_commit_interval=1.0,  # as the Driftline worker
    consumer_auto_offset_reset="earliest",
    web_enabled=True,
    web_port=int(env.get("NAIVE_PORT", "6099")),
    web_bind="127.0.0.1",
    web_host="127.0.0.1",
    logging_config=None,
    key_serializer="raw",
    value_serializer="json",
)
PRED_TOPIC = env.get("NAIVE_PREDICTIONS", "driftline.predictions")
LABEL_TOPIC = env.get("NAIVE_LABELS", "driftline.labels")
inputs = app.topic(PRED_TOPIC, LABEL_TOPIC, key_type=bytes, value_type=bytes, value_serializer="raw",
                   key_serializer="raw")
pending = app.Table("pending", default=None)
early = app.Table("early", default=None)
model_metrics = app.Table("model_metrics", default=None)
counts = {"messages_prediction": 0, "messages_label": 0, "joins": 0}


def _update_metrics(pred: dict, label: dict) -> None:
    model = pred["model_id"].encode()
    m = model_metrics[model] or {"n": 0, "correct": 0, "abs_error": 0.0, "latency_ms": 0.0}
    m["n"] += 1
    p = pred.get("prediction") or {}
    if "value" in p and "value" in label:
        m["abs_error"] += abs(float(p["value"]) - float(label["value"]))
    elif str(p.get("label")) == str(label.get("label")):
        m["correct"] += 1
    m["latency_ms"] += float(pred.get("latency_ms") or 0.0)
    model_metrics[model] = m  # one table write (one changelog message) per event


@app.agent(inputs)
async def join(stream):  # type: ignore[no-untyped-def]
    async for event in stream.events():
        value = orjson.loads(event.value)
        pid = value["prediction_id"].encode()
        if event.message.topic == PRED_TOPIC:
            counts["messages_prediction"] += 1
            lab = early.get(pid)
            if lab is not None:
                del early[pid]
                counts["joins"] += 1
                _update_metrics(value, lab)
            else:
                pending[pid] = value
        else:
            counts["messages_label"] += 1
            pred = pending.get(pid)
            if pred is not None:
                del pending[pid]
                counts["joins"] += 1
                _update_metrics(pred, value)
            else:
                early[pid] = value


@app.page("/health")
async def health(web, request):  # type: ignore[no-untyped-def]
    return web.json({"counters": counts, "rebalancing": bool(app.rebalancing)})


if __name__ == "__main__":
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False, override_logging=False)
    worker.execute_from_commandline()
