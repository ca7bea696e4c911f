"""The pipeline's own health: Prometheus metrics and structured (JSON) logs."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


class PipelineMetrics:
    """Prometheus metrics of one worker process (its own registry: tests run several)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.events_in = Counter("driftline_messages_in_total", "Kafka messages consumed", ["topic"], registry=r)
        self.events = Counter("driftline_pipeline_events_total", "Pipeline counters by name (joins, duplicates, ...)", ["name"], registry=r)
        self.dlq = Counter("driftline_dlq_total", "Events sent to the dead-letter topic", ["reason"], registry=r)
        self.alerts = Counter("driftline_alerts_total", "Alert transitions emitted", ["status", "severity", "kind"], registry=r)
        self.windows_emitted = Counter("driftline_windows_emitted_total", "Window metric messages emitted", registry=r)
        self.pending = Gauge("driftline_pending_predictions", "Predictions waiting for a label", ["partition"], registry=r)
        self.open_windows = Gauge("driftline_open_windows", "Open window partials", ["partition"], registry=r)
        self.lag = Gauge("driftline_consumer_lag", "High watermark minus read offset", ["topic", "partition"], registry=r)
        self.sink_rows = Gauge("driftline_sink_rows_written", "Rows written to ClickHouse", ["table"], registry=r)
        self.sink_buffered = Gauge("driftline_sink_buffered_rows", "Rows buffered in the ClickHouse sink", registry=r)
        self.sink_backpressure = Gauge("driftline_sink_backpressured", "1 while the sink pauses consumption", registry=r)
        self.sink_failures = Gauge("driftline_sink_failures", "ClickHouse write failures (retried)", registry=r)
        self.started = time.time()
        self.counters: dict[str, int] = {}

    def count(self, counters: dict[str, int]) -> None:
        for name, n in counters.items():
            self.counters[name] = self.counters.get(name, 0) + n
            if name.startswith("dlq_"):
                self.dlq.labels(reason=name[4:]).inc(n)
            else:
                self.events.labels(name=name).inc(n)

    def sink_stats(self, st: dict[str, Any]) -> None:
        """The ClickHouse sink's own figures, as gauges."""
        for table, n in st.get("rows_written", {}).items():
            self.sink_rows.labels(table=table).set(n)
        self.sink_buffered.set(st.get("buffered_rows", 0))
        self.sink_backpressure.set(1 if st.get("backpressured") else 0)
        self.sink_failures.set(st.get("failures", 0))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class AlertDeliveryCollector:
    """Alert delivery counters, read from ``AlertDeliveryRunner.stats`` at each scrape.

    The runner lives in its own threads and keeps its own counts; reading them when Prometheus
    asks keeps the metrics exact without the runner knowing about this registry.
    """

    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        st = self.stats()
        deliveries = CounterMetricFamily(
            "driftline_alert_deliveries", "Alert deliveries by target and outcome (delivered; retried: a failed "
            "attempt that is retried; dropped: given up; skipped: a re-post round left out while the queue was full)",
            labels=["target", "outcome"])
        queued = GaugeMetricFamily("driftline_alert_delivery_queued", "Deliveries waiting per target",
                                   labels=["target"])
        for target, t in sorted(st["targets"].items()):
            for outcome in ("delivered", "retried", "dropped", "skipped"):
                deliveries.add_metric([target, outcome], t.get(outcome, 0))
            queued.add_metric([target], t.get("queued", 0))
        yield deliveries
        yield queued
        yield GaugeMetricFamily("driftline_alert_delivery_up", "1 while the alert delivery consumer runs (0: it "
                                "stopped on an error, see the log)", value=1 if st["running"] else 0)
        yield GaugeMetricFamily("driftline_alert_delivery_partitions", "Alerts-topic partitions this worker delivers",
                                value=st["assigned"])
        yield GaugeMetricFamily("driftline_alert_delivery_firing", "Firing alerts of those partitions (re-posted)",
                                value=st["firing"])
        yield CounterMetricFamily("driftline_alert_delivery_duplicates", "Transitions seen twice on the topic, "
                                  "delivered once", value=st["duplicates"])


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and ``extra`` fields."""

    _skip = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in self._skip:
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure_logging(level: str = "info", json_logs: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_logs else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "faust", "mode", "kafka"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
