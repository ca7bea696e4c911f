"""Alert delivery end to end: the embedded broker, a real Alertmanager (Debian's
``prometheus-alertmanager``), a real worker, and an HTTP receiver standing in for both
Alertmanager's webhook receiver and Driftline's plain webhook. No mocks of Kafka or Alertmanager.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from alert_receiver import Receiver, am_config, am_notified
from confluent_kafka import Producer
from worker_harness import Worker, free_port

from driftline.schemas.messages import make_alert
from driftline.sinks.alert_runner import AlertDeliveryRunner
from driftline.sinks.alertmanager import AlertmanagerTarget
from driftline.sinks.webhook import WebhookTarget
from driftline.streams.alertmanager_local import LocalAlertmanager, alertmanager_binary
from driftline.streams.sdk import DriftlineProducer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(alertmanager_binary() is None, reason="apt-get install prometheus-alertmanager"),
]

SECRET = "wh-s3cret-sentinel"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def alertmanager(receiver: Receiver, tmp_path: Path) -> Iterator[LocalAlertmanager]:
    am = LocalAlertmanager(am_config(receiver.base + "/am"), workdir=str(tmp_path / "am")).start()
    yield am
    am.stop()


def _verify(post: Any) -> dict[str, Any]:
    """Check the webhook signature with hmac/hashlib alone; return the decoded alert."""
    ts = post.headers["X-Driftline-Timestamp"]
    mac = hmac.new(SECRET.encode(), ts.encode() + b"." + post.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(post.headers["X-Driftline-Signature"], "sha256=" + mac)
    assert abs(int(ts) - time.time()) < 120
    alert = dict(orjson.loads(post.body))
    assert post.headers["X-Driftline-Alert-Id"] == alert["alert_id"]
    return alert


def _transition(status: str, rule: str, t: float) -> bytes:
    return orjson.dumps(make_alert(
        status=status, severity="critical", kind="threshold", rule=rule, model_id="m", model_version="v1",  # type: ignore[arg-type]
        segment="", metric="accuracy", value=0.5, threshold=0.8, window_start=t - 10, window_end=t,
        detected_at=t if status == "firing" else t + 20, incident_start=t, message=f"{rule} {status}",
        evidence={"n": 1}, emitted_at=t))


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    p = Producer({"bootstrap.servers": bootstrap})
    for v in values:
        p.produce(topic, key=b"m", value=v)
    assert p.flush(10) == 0


def _runner(bootstrap: str, topic: str, am: LocalAlertmanager, receiver: Receiver, group: str) -> AlertDeliveryRunner:
    return AlertDeliveryRunner(
        bootstrap, topic, alertmanagers=[AlertmanagerTarget(am.url, lease=40)],
        webhook=WebhookTarget(receiver.base + "/hook", secret=SECRET), group_id=group,
        repost_seconds=10, backoff_start=0.2).start()


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_runner_delivers_each_transition_once_across_a_restart(bootstrap: str, topics: dict[str, str],
                                                               alertmanager: LocalAlertmanager,
                                                               receiver: Receiver) -> None:
    topic, group = topics["alerts"], f"{topics['alerts']}-delivery"
    now = time.time() - 60
    fire_a, fire_b = _transition("firing", "a_min", now), _transition("firing", "b_min", now)
    runner = _runner(bootstrap, topic, alertmanager, receiver, group)
    try:
        _wait(lambda: runner.stats()["assigned"] == 4, 20, "assignment")
        _produce(bootstrap, topic, [fire_a, fire_b])
        receiver.wait("/hook", lambda ps: len(ps) == 2, 20, "two firing webhooks")
        active = _wait(lambda: len(alertmanager.alerts()) == 2 and alertmanager.alerts(), 10, "two active alerts")
        ends_before = {a["labels"]["rule"]: a["endsAt"] for a in active}
    finally:
        runner.stop()

    # While no runner runs: A resolves, and both firings land on the topic a second time (the
    # pipeline is at least once): neither is delivered again, and A must stay resolved.
    _produce(bootstrap, topic, [_transition("resolved", "a_min", now), fire_b, fire_a])
    time.sleep(1.0)  # Alertmanager's clock must move for endsAt to differ
    runner = _runner(bootstrap, topic, alertmanager, receiver, group)
    try:
        hooks = receiver.wait("/hook", lambda ps: len(ps) >= 3, 20, "the resolve")
        time.sleep(1.5)  # anything repeated would arrive meanwhile
        hooks = receiver.at("/hook")
        alerts = [_verify(p) for p in hooks]
        assert [(a["rule"], a["status"]) for a in alerts] == [("a_min", "firing"), ("b_min", "firing"),
                                                              ("a_min", "resolved")]
        assert hooks[0].body == fire_a  # the message exactly as on the topic
        assert runner.stats()["duplicates"] == 2 and runner.stats()["firing"] == 1
        # B is still firing: the new owner re-posted it after rebuilding (a fresh lease) ...
        active = _wait(lambda: [a for a in alertmanager.alerts() if a["endsAt"] != ends_before["b_min"]],
                       10, "B re-posted")
        assert [a["labels"]["rule"] for a in active] == ["b_min"]
        # ... and Alertmanager notified each change once: A and B firing, then A resolved
        notes = receiver.wait("/am", lambda ps: len(am_notified(ps)) >= 3, 20, "notifications")
        time.sleep(1.5)
        seen = Counter((a["labels"]["rule"], a["status"]) for a in am_notified(receiver.at("/am")))
        assert seen == {("a_min", "firing"): 1, ("b_min", "firing"): 1, ("a_min", "resolved"): 1}, notes
    finally:
        runner.stop()


def test_an_escalation_ends_the_warning_alert_and_starts_the_critical_one(
        bootstrap: str, topics: dict[str, str], alertmanager: LocalAlertmanager, receiver: Receiver) -> None:
    """Severity is a label: the escalated incident is another Alertmanager alert, which a route on
    ``severity="critical"`` notifies; the warning one ends then, and the resolve ends the critical one."""
    topic = topics["alerts"]
    t = time.time() - 60

    def transition(status: str, severity: str, at: float, escalation: bool = False) -> bytes:
        return orjson.dumps(make_alert(
            status=status, severity=severity, kind="concept_drift", rule="adwin", model_id="m",  # type: ignore[arg-type]
            model_version="v1", segment="", metric="error_rate", value=0.3, threshold=None, window_start=t - 10,
            window_end=t, detected_at=at, incident_start=t, message=f"{severity} {status}", evidence={},
            emitted_at=at, escalation=escalation))

    runner = _runner(bootstrap, topic, alertmanager, receiver, f"{topic}-delivery")
    try:
        _wait(lambda: runner.stats()["assigned"] == 4, 20, "assignment")
        _produce(bootstrap, topic, [transition("firing", "warning", t)])
        _wait(lambda: alertmanager.alerts(), 10, "the warning alert")
        _produce(bootstrap, topic, [transition("firing", "critical", t + 20, escalation=True)])
        hooks = receiver.wait("/hook", lambda ps: len(ps) == 2, 20, "two webhooks")
        assert [(a["status"], a["severity"]) for a in map(_verify, hooks)] == [("firing", "warning"),
                                                                              ("firing", "critical")]
        active = _wait(lambda: [a for a in alertmanager.alerts() if a["labels"]["severity"] == "critical"]
                       and alertmanager.alerts(), 10, "the critical alert")
        assert [a["labels"]["severity"] for a in active] == ["critical"]  # the warning one ended
        receiver.wait("/am", lambda ps: len(am_notified(ps)) >= 3, 20, "three notifications")
        _produce(bootstrap, topic, [transition("resolved", "critical", t + 40)])
        receiver.wait("/am", lambda ps: len(am_notified(ps)) >= 4, 20, "the resolve")
        time.sleep(1.5)  # anything repeated would arrive meanwhile
        seen = Counter((a["labels"]["severity"], a["status"]) for a in am_notified(receiver.at("/am")))
        assert seen == {("warning", "firing"): 1, ("critical", "firing"): 1, ("warning", "resolved"): 1,
                        ("critical", "resolved"): 1}
        assert alertmanager.alerts() == [] and runner.stats()["firing"] == 0
    finally:
        runner.stop()


MODELS = """\
allow_unlisted_models: true
defaults:
  label_horizon_s: 3600
  early_label_wait_s: 3600
  volume_drop: null
  cooldown_s: 1
models:
  m:
    task: binary
    detectors: {}
    thresholds:
      - {metric: accuracy, min: 0.8, min_count: 20}
"""


def _window(sdk: DriftlineProducer, start: float, correct: bool, tag: str) -> None:
    """40 labelled predictions in the 10 s window from ``start``, all right or all wrong."""
    for i in range(40):
        pid = f"{tag}-{i}"
        sdk.log_prediction(pid, "m", {"label": 1, "score": 0.9}, model_version="v1", timestamp=start + i * 0.2)
        sdk.log_label(pid, 1 if correct else 0, timestamp=start + i * 0.2 + 0.1)
    sdk.flush()


def _metrics(worker: Worker) -> dict[str, float]:
    with urllib.request.urlopen(worker.url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("driftline_alert_"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _delivered(worker: Worker, target: str, outcome: str) -> float:
    key = f'driftline_alert_deliveries_total{{outcome="{outcome}",target="{target}"}}'
    return _metrics(worker).get(key, 0.0)


def _worker(bootstrap: str, prefix: str, tmp: Path, env: dict[str, str]) -> Worker:
    (tmp / "models.yaml").write_text(MODELS)
    w = Worker(bootstrap, prefix, tmp, config=str(tmp / "models.yaml"), sink=False, extra_env=env)
    w.start()
    w.wait_for(lambda: _metrics(w).get("driftline_alert_delivery_partitions") == 4, 30, "delivery assigned")
    return w


def test_worker_alerts_reach_alertmanager_and_the_webhook_once(bootstrap: str, topic_prefix: str, tmp_path: Path,
                                                               alertmanager: LocalAlertmanager,
                                                               receiver: Receiver) -> None:
    env = {"DRIFTLINE_ALERTMANAGER_URL": alertmanager.url, "DRIFTLINE_ALERT_WEBHOOK_URL": receiver.base + "/hook",
           "DRIFTLINE_ALERT_WEBHOOK_SECRET": SECRET, "DRIFTLINE_ALERT_REPOST_SECONDS": "10"}
    worker = _worker(bootstrap, topic_prefix, tmp_path, env)
    t0 = float(int(time.time() - 900) // 10 * 10)  # event time in the past: windows close on idleness
    try:
        with DriftlineProducer(bootstrap, topic_prefix=topic_prefix) as sdk:
            _window(sdk, t0, True, "a")
            _window(sdk, t0 + 10, False, "b")
        hooks = receiver.wait("/hook", lambda ps: any(_verify(p)["status"] == "firing" for p in ps), 60, "firing")
        firing = next(a for a in map(_verify, hooks) if a["status"] == "firing")
        assert (firing["rule"], firing["model_id"], firing["window_start"]) == ("accuracy_min", "m", t0 + 10)
        note = am_notified(receiver.wait("/am", lambda ps: bool(ps), 20, "Alertmanager's notification"))[0]
        assert note["status"] == "firing"
        assert note["labels"] == {"alertname": "driftline_threshold", "kind": "threshold", "rule": "accuracy_min",
                                  "severity": "critical", "model_id": "m", "model_version": "v1",
                                  "metric": "accuracy"}
        assert note["annotations"]["summary"] == firing["message"]
        assert orjson.loads(note["annotations"]["evidence"]) == firing["evidence"]
        assert note["startsAt"].startswith(time.strftime("%Y-%m-%dT%H:%M", time.gmtime(firing["detected_at"])))

        # A restart: nothing delivered again, and the firing alert stays active in Alertmanager.
        worker.stop()
        worker.start()
        worker.wait_for(lambda: _metrics(worker).get("driftline_alert_delivery_firing") == 1, 30, "rebuilt")
        time.sleep(2.0)
        assert len(receiver.at("/hook")) == 1 and len(am_notified(receiver.at("/am"))) == 1
        assert [a["status"]["state"] for a in alertmanager.alerts()] == ["active"]

        with DriftlineProducer(bootstrap, topic_prefix=topic_prefix) as sdk:
            _window(sdk, t0 + 20, True, "c")
        hooks = receiver.wait("/hook", lambda ps: len(ps) >= 2, 60, "the resolve")
        resolved = _verify(hooks[1])
        assert resolved["status"] == "resolved" and resolved["incident_id"] == firing["incident_id"]
        notes = am_notified(receiver.wait("/am", lambda ps: len(am_notified(ps)) >= 2, 20, "resolved note"))
        assert notes[1]["status"] == "resolved" and notes[1]["labels"] == note["labels"]
        assert notes[1]["endsAt"] >= note["startsAt"] and alertmanager.alerts() == []
        time.sleep(1.5)
        assert len(receiver.at("/hook")) == 2 and len(am_notified(receiver.at("/am"))) == 2
    finally:
        worker.stop()


def test_delivery_rides_out_targets_that_are_down(bootstrap: str, topic_prefix: str, tmp_path: Path,
                                                   receiver: Receiver) -> None:
    am_port = free_port()  # nothing listens there yet
    receiver.fail["/hook/T0KEN-path"] = 3
    env = {"DRIFTLINE_ALERTMANAGER_URL": f"http://ops:am-pw-sentinel@127.0.0.1:{am_port}",
           "DRIFTLINE_ALERT_WEBHOOK_URL": receiver.base + "/hook/T0KEN-path",
           "DRIFTLINE_ALERT_WEBHOOK_SECRET": SECRET, "DRIFTLINE_ALERT_REPOST_SECONDS": "2"}
    worker = _worker(bootstrap, topic_prefix, tmp_path, env)
    am_target, hook_target = f"alertmanager@127.0.0.1:{am_port}", f"webhook@{receiver.base[7:]}"
    t0 = float(int(time.time() - 900) // 10 * 10)
    am = LocalAlertmanager(am_config(receiver.base + "/am"), workdir=str(tmp_path / "am"), port=am_port)
    try:
        with DriftlineProducer(bootstrap, topic_prefix=topic_prefix) as sdk:
            _window(sdk, t0, True, "a")
            _window(sdk, t0 + 10, False, "b")
        receiver.wait("/hook/T0KEN-path", lambda ps: len(ps) == 1, 60, "the webhook after its failures")
        assert _delivered(worker, hook_target, "retried") == 3
        worker.wait_for(lambda: _delivered(worker, am_target, "retried") >= 2, 30, "Alertmanager retries")
        am.start()  # Alertmanager comes up: the retried post (or the next re-post) gets through
        _wait(lambda: am.alerts(), 30, "the alert in Alertmanager")
        worker.wait_for(lambda: _delivered(worker, am_target, "delivered") >= 1, 10, "counted as delivered")
        assert _metrics(worker)["driftline_alert_delivery_up"] == 1
        assert _delivered(worker, hook_target, "delivered") == 1 and _delivered(worker, hook_target, "dropped") == 0
        log = worker.log()
        assert "alert delivery to" in log  # the failures were logged ...
        for secret in (SECRET, "am-pw-sentinel", "T0KEN"):
            assert secret not in log  # ... without the secret, the URL's password or its path
    finally:
        worker.stop()
        am.stop()


def test_two_runners_share_the_partitions_and_one_takes_over(bootstrap: str, topics: dict[str, str],
                                                             alertmanager: LocalAlertmanager,
                                                             receiver: Receiver) -> None:
    topic, group = topics["alerts"], f"{topics['alerts']}-shared"
    now = time.time() - 60

    def transitions(status: str) -> list[bytes]:  # eight models: keys spread over the 4 partitions
        return [orjson.dumps(make_alert(
            status=status, severity="warning", kind="volume", rule="volume_drop", model_id=f"m{i}",  # type: ignore[arg-type]
            model_version="v1", segment="", metric="prediction_count", value=1.0, threshold=10.0,
            window_start=now - 10, window_end=now, detected_at=now + (0 if status == "firing" else 5),
            incident_start=now, message=f"m{i} {status}", emitted_at=now)) for i in range(8)]

    def produce(values: list[bytes]) -> None:
        p = Producer({"bootstrap.servers": bootstrap})
        for v in values:
            p.produce(topic, key=orjson.loads(v)["model_id"].encode(), value=v)
        assert p.flush(10) == 0

    r1 = _runner(bootstrap, topic, alertmanager, receiver, group)
    r2 = _runner(bootstrap, topic, alertmanager, receiver, group)
    try:
        _wait(lambda: r1.stats()["assigned"] + r2.stats()["assigned"] == 4 and r1.stats()["assigned"] > 0
              and r2.stats()["assigned"] > 0, 30, "the partitions shared")
        produce(transitions("firing"))
        receiver.wait("/hook", lambda ps: len(ps) >= 8, 20, "eight firing")
        _wait(lambda: len(alertmanager.alerts()) == 8, 10, "eight active")
        r2.stop()  # r1 takes over r2's partitions, rebuilding them from the topic
        _wait(lambda: r1.stats()["assigned"] == 4 and r1.stats()["rebuilding"] == 0, 30, "the take-over")
        assert r1.stats()["firing"] == 8
        produce(transitions("resolved"))
        receiver.wait("/hook", lambda ps: len(ps) >= 16, 20, "eight resolved")
        time.sleep(1.5)
        ids = [_verify(p)["alert_id"] for p in receiver.at("/hook")]
        assert len(ids) == 16 and len(set(ids)) == 16  # each transition once, across both runners
        _wait(lambda: alertmanager.alerts() == [], 10, "all resolved in Alertmanager")
    finally:
        r1.stop()
        r2.stop()
