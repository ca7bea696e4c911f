"""``driftline demo``: the whole pipeline on one laptop, with drift injected.

Starts the embedded Tansu broker, creates the topics, starts a worker (with the
ClickHouse sink on an embedded chdb store) as a subprocess, runs the fleet simulator
with concept drift on ``fraud`` at ``drift_at``, prints alerts as they fire, and ends
with a summary read from ClickHouse through the worker's read-only query endpoint, and
where the alerts went. When an Alertmanager binary is installed (Debian's
``prometheus-alertmanager``) and ``DRIFTLINE_ALERTMANAGER_URL`` is not set, the demo runs a local
Alertmanager too, has the worker post to it, and shows what it holds at the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from driftline.streams.settings import DEFAULT_DATA_DIR

DEMO_MODELS = """\
# Written by `driftline demo`: short horizons so a two-minute run shows everything.
allow_unlisted_models: true
defaults:
  label_horizon_s: 60
  early_label_wait_s: 30
  drift_resolve_s: 60
  cooldown_s: 60
  volume_drop: null      # the demo's last window is partial by construction: no volume-drop alert
models:
  fraud:
    task: binary
    segment_keys: [country, channel]
    thresholds:
      - {metric: accuracy, min: 0.8, min_count: 200}
    latency_p99_slo_ms: 400
  intent:
    task: multiclass
    thresholds:
      - {metric: accuracy, min: 0.7, min_count: 200}
  eta:
    task: regression
"""

DEMO_ENV = {
    "DRIFTLINE_WINDOW_SECONDS": "10",
    "DRIFTLINE_ALLOWED_LATENESS": "5",
    "DRIFTLINE_IDLE_CLOSE_SECONDS": "3",
    "DRIFTLINE_FLUSH_INTERVAL": "2",
    "DRIFTLINE_PARTITIONS": "4",
}

RED, YELLOW, GREEN, DIM, RESET = "\033[31m", "\033[33m", "\033[32m", "\033[2m", "\033[0m"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return orjson.loads(r.read())


def query(worker_url: str, sql: str, fmt: str = "json") -> Any:
    req = urllib.request.Request(worker_url + "/query", data=orjson.dumps({"sql": sql, "format": fmt}),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        body = r.read()
    return orjson.loads(body) if fmt == "json" else body.decode()


class AlertPrinter(threading.Thread):
    """Prints alerts from the alerts topic as they arrive (partitions assigned directly)."""

    def __init__(self, bootstrap: str, topic: str, color: bool) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.color = bootstrap, topic, color
        self.stop_event = threading.Event()
        self.alerts: list[dict[str, Any]] = []

    def run(self) -> None:
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "driftline-demo-printer",
                      "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        meta = c.list_topics(self.topic, timeout=10)
        c.assign([TopicPartition(self.topic, p, 0) for p in meta.topics[self.topic].partitions])
        while not self.stop_event.is_set():
            m = c.poll(0.2)
            if m is None or m.error():
                continue
            a = orjson.loads(m.value() or b"{}")
            if not a:
                continue
            self.alerts.append(a)
            self._print(a)
        c.close()

    def _print(self, a: dict[str, Any]) -> None:
        color = (RED if a["severity"] == "critical" else YELLOW) if a["status"] == "firing" else GREEN
        if not self.color:
            color = ""
        reset = RESET if self.color else ""
        seg = f" [{a['segment']}]" if a["segment"] else ""
        line = (f"ALERT {a['status'].upper():8s} {a['severity']:8s} {a['model_id']} {a['model_version']}{seg} "
                f"{a['kind']}/{a['rule']}: {a['message']}")
        sys.stdout.write(f"\r\033[K{color}{line}{reset}\n")
        sys.stdout.flush()


def run_demo(*, duration: float = 120.0, rate: float = 300.0, drift_at: float | None = None, seed: int = 7,
             data_dir: str | None = None) -> int:
    from driftline.streams.broker import EmbeddedBroker
    from driftline.streams.simulate import run_simulation
    from driftline.streams.topics import create_topics, topic_names

    drift_at = duration / 2 if drift_at is None else drift_at
    root = Path(data_dir) if data_dir else DEFAULT_DATA_DIR / "demo"
    if root.exists():
        shutil.rmtree(root)  # a demo starts clean: the broker is in-memory anyway
    root.mkdir(parents=True)
    (root / "models.yaml").write_text(DEMO_MODELS)
    color = sys.stdout.isatty()
    print(f"driftline demo: {duration:.0f} s of traffic at {rate:.0f} predictions/s, concept drift on 'fraud' "
          f"at {drift_at:.0f} s. State and logs in {root}")
    broker = EmbeddedBroker(log_path=str(root / "broker.log")).start()
    worker: subprocess.Popen[bytes] | None = None
    printer: AlertPrinter | None = None
    am = _start_alertmanager(root)
    try:
        prefix = "driftline."
        create_topics(broker.bootstrap, prefix, int(DEMO_ENV["DRIFTLINE_PARTITIONS"]))
        web_port = free_port()
        env = {**os.environ, **DEMO_ENV, "DRIFTLINE_BOOTSTRAP": broker.bootstrap,
               "DRIFTLINE_CLICKHOUSE": f"chdb://{root / 'clickhouse'}", "DRIFTLINE_DATA_DIR": str(root / "state"),
               "DRIFTLINE_CONFIG": str(root / "models.yaml"), "DRIFTLINE_WEB_PORT": str(web_port),
               "DRIFTLINE_TOPIC_PREFIX": prefix, "DRIFTLINE_ALERT_REPOST_SECONDS": "15"}
        if am is not None:
            env["DRIFTLINE_ALERTMANAGER_URL"] = am.url
        worker_url = f"http://127.0.0.1:{web_port}"
        log = open(root / "worker.log", "wb")  # noqa: SIM115 - lives as long as the worker
        worker = subprocess.Popen([sys.executable, "-m", "driftline.streams.cli", "worker"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        print(f"broker {broker.bootstrap}  worker pid {worker.pid}  health {worker_url}/health  "
              f"metrics {worker_url}/metrics")
        _wait_ready(worker, worker_url)
        printer = AlertPrinter(broker.bootstrap, topic_names(prefix)["alerts"], color)
        printer.start()
        stats = run_simulation(broker.bootstrap, prefix, rate, duration, seed=seed, drift_at=drift_at,
                               realtime=True, progress=True)
        print(f"\nsimulator done: {stats['predictions']} predictions, {stats['labels']} labels; "
              "waiting for the last windows to close...")
        _wait_drained(worker_url, timeout=45.0)
        _summary(worker_url, float(stats["start_ts"]), drift_at, printer.alerts)
        _delivery_summary(worker_url, printer.alerts, am)
        from driftline.streams.report_cmd import run_report

        report = root / "report.html"
        run_report(out=str(report), dsn=env["DRIFTLINE_CLICKHOUSE"], worker_url=worker_url)
        print(f"\nHTML report: {report}")
        print(f"Query the store later: DRIFTLINE_CLICKHOUSE={env['DRIFTLINE_CLICKHOUSE']} driftline query \"SELECT ...\"")
        return 0
    finally:
        if printer is not None:
            printer.stop_event.set()
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        if am is not None:
            am.stop()
        broker.stop()


def _wait_ready(worker: subprocess.Popen[bytes], url: str, timeout: float = 90.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited with {worker.returncode}; see its log")
        try:
            h = _get_json(url + "/health")
            if h["partitions"] and not h["rebalancing"] and h.get("sink", {}).get("assigned"):
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("worker not ready in time; see its log")


def _wait_drained(url: str, timeout: float) -> None:
    """Wait until windows closed, partials merged and the sink has written everything."""
    deadline = time.time() + timeout
    last = None
    stable = 0
    while time.time() < deadline:
        h = _get_json(url + "/health")
        sink = h.get("sink") or {}
        state = (h["open_windows"], sink.get("messages"), sink.get("buffered_rows"))
        stable = stable + 1 if state == last and h["open_windows"] == 0 and not sink.get("buffered_rows") else 0
        if stable >= 4:
            return
        last = state
        time.sleep(1.0)


SUMMARY_SQL = """
SELECT model_id,
       sumIf(value, metric = 'prediction_count') AS predictions,
       sumIf(value, metric = 'labeled_count') AS labelled,
       sumIf(value * count, metric = {m:String} AND window_start < toDateTime64({drift:Float64}, 3, 'UTC'))
         / nullIf(sumIf(count, metric = {m:String} AND window_start < toDateTime64({drift:Float64}, 3, 'UTC')), 0) AS before,
       sumIf(value * count, metric = {m:String} AND window_start >= toDateTime64({drift:Float64}, 3, 'UTC'))
         / nullIf(sumIf(count, metric = {m:String} AND window_start >= toDateTime64({drift:Float64}, 3, 'UTC')), 0) AS after
FROM driftline.metrics_latest
WHERE segment = '' AND model_id = {model:String}
GROUP BY model_id
"""


def _summary(url: str, start_ts: float, drift_at: float, alerts: list[dict[str, Any]]) -> None:
    drift_ts = start_ts + drift_at
    print("\nSummary (from ClickHouse)")
    print(f"{'model':8s} {'predictions':>11s} {'labelled':>9s} {'metric':>9s} {'before drift':>13s} {'after drift':>12s}  alerts (firing)")
    for model, metric in (("fraud", "accuracy"), ("intent", "accuracy"), ("eta", "mae")):
        sql = (SUMMARY_SQL.replace("{m:String}", f"'{metric}'").replace("{drift:Float64}", repr(drift_ts))
               .replace("{model:String}", f"'{model}'"))
        rows = query(url, sql)
        if not rows:
            print(f"{model:8s} (no data)")
            continue
        r = rows[0]
        fired = [a for a in alerts if a["model_id"] == model and a["status"] == "firing"]
        rules = ", ".join(sorted({f"{a['rule']}({a['severity']})" for a in fired})) or "none"
        share = r["labelled"] / r["predictions"] if r["predictions"] else 0.0
        print(f"{model:8s} {r['predictions']:11.0f} {share:9.1%} {metric:>9s} {_num(r['before']):>13s} "
              f"{_num(r['after']):>12s}  {rules}")
    print("Tables: driftline.metrics (metrics_latest), alerts, drift_events, outcomes; questions to ask them: docs/clickhouse.md")


def _num(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}"


def _start_alertmanager(root: Path) -> Any:
    """A local Alertmanager when the binary exists and no Alertmanager URL is configured."""
    from driftline.streams.alertmanager_local import LocalAlertmanager, alertmanager_binary

    if os.environ.get("DRIFTLINE_ALERTMANAGER_URL") or alertmanager_binary() is None:
        return None
    try:
        am = LocalAlertmanager(workdir=str(root / "alertmanager")).start()
    except RuntimeError as exc:  # the demo goes on without it
        print(f"(local Alertmanager not started: {exc})")
        return None
    print(f"Alertmanager {am.url} (UI and API while the demo runs)")
    return am


def delivery_counts(metrics_text: str) -> dict[str, dict[str, int]]:
    """``{target: {outcome: n}}`` from a worker's ``/metrics`` text.

    >>> delivery_counts('driftline_alert_deliveries_total{outcome="delivered",target="webhook@h:1"} 3.0')
    {'webhook@h:1': {'delivered': 3}}
    """
    import re

    out: dict[str, dict[str, int]] = {}
    pattern = r'^driftline_alert_deliveries_total\{outcome="([^"]+)",target="([^"]+)"\} ([0-9.e+]+)$'
    for outcome, target, value in re.findall(pattern, metrics_text, re.M):
        out.setdefault(target, {})[outcome] = int(float(value))
    return out


def _delivery_summary(url: str, alerts: list[dict[str, Any]], am: Any) -> None:
    """Where the alerts went: the topic, ClickHouse, and each delivery target."""
    firing = sum(a["status"] == "firing" for a in alerts)
    print("\nWhere the alerts went")
    print(f"  {'topic driftline.alerts':30s} {len(alerts)} transitions ({firing} firing, {len(alerts) - firing} resolved)")
    try:
        rows = query(url, "SELECT count() AS n FROM driftline.alerts")
        print(f"  {'ClickHouse driftline.alerts':30s} {rows[0]['n']} rows")
    except OSError:
        pass
    counts: dict[str, dict[str, int]] = {}
    deadline = time.time() + 15
    while time.time() < deadline:  # until every queued delivery is finished
        with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
            text = r.read().decode()
        counts = delivery_counts(text)
        if "driftline_alert_delivery_queued{" not in text or all(
                line.endswith(" 0.0") for line in text.splitlines() if line.startswith("driftline_alert_delivery_queued{")):
            break
        time.sleep(0.5)
    for target, c in sorted(counts.items()):
        print(f"  {target:30s} {c.get('delivered', 0)} posts delivered, {c.get('retried', 0)} retried, "
              f"{c.get('dropped', 0)} dropped")
    if not counts:
        print("  (no delivery target: set DRIFTLINE_ALERTMANAGER_URL or DRIFTLINE_ALERT_WEBHOOK_URL; docs/alerting.md)")
    if am is not None:
        active = am.alerts()
        print(f"  Alertmanager now holds {len(active)} active alerts:")
        for a in sorted(active, key=lambda a: a["startsAt"])[:8]:
            lab = a["labels"]
            seg = f" [{lab['segment']}]" if lab.get("segment") else ""
            print(f"    {lab['alertname']:24s} {lab['severity']:8s} {lab['model_id']} {lab.get('model_version', '')}{seg} "
                  f"{lab['rule']}  since {a['startsAt'][11:19]}")
