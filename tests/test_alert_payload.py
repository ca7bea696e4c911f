"""Alert delivery without a broker: the Alertmanager mapping, webhook signing, retries, settings.

The mapping is also posted to a real Alertmanager (Debian's ``prometheus-alertmanager``) to show
it accepts it; the HTTP targets in the retry tests are small local servers.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from driftline.schemas.messages import make_alert
from driftline.sinks.alertmanager import AlertmanagerTarget, alert_labels, rfc3339, to_alertmanager
from driftline.sinks.delivery import Job, Sender
from driftline.sinks.webhook import WebhookTarget
from driftline.streams.alertmanager_local import LocalAlertmanager, alertmanager_binary
from driftline.streams.settings import Settings

T0 = 1.8e9


def _alert(status: str = "firing", severity: str = "critical", detected_at: float = T0, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(
        status=status, severity=severity, kind="threshold", rule="accuracy_min", model_id="churn",
        model_version="v3", segment="country=DE", metric="accuracy", value=0.61, threshold=0.8,
        window_start=T0 - 60, window_end=T0, detected_at=detected_at, incident_start=T0,
        message="accuracy 0.61 below 0.8 (500 events)", evidence={"events": 500, "value": 0.61},
        emitted_at=detected_at + 1)
    args.update(kw)
    return dict(make_alert(**args))


def test_labels_name_the_incident() -> None:
    assert alert_labels(_alert()) == {
        "alertname": "driftline_threshold", "kind": "threshold", "rule": "accuracy_min", "severity": "critical",
        "model_id": "churn", "model_version": "v3", "segment": "country=DE", "metric": "accuracy"}
    # whole-model alerts have no segment label (empty and absent are the same to Alertmanager)
    assert "segment" not in alert_labels(_alert(segment=""))


def test_firing_alert_has_start_lease_and_annotations() -> None:
    a = _alert()
    out = to_alertmanager(a, now=T0 + 30, lease=240)
    assert out["startsAt"] == rfc3339(T0)
    assert out["endsAt"] == rfc3339(T0 + 30 + 240)  # a lease from the post, not from the event
    assert out["annotations"]["summary"] == a["message"]
    assert orjson.loads(out["annotations"]["evidence"]) == a["evidence"]
    assert out["annotations"]["incident_id"] == a["incident_id"]
    assert out["annotations"]["alert_id"] == a["alert_id"]
    assert set(out) == {"labels", "annotations", "startsAt", "endsAt"}


def test_resolved_alert_ends_and_keeps_the_firing_labels() -> None:
    firing = _alert(severity="warning")
    # the incident escalated meanwhile: the resolve message says critical
    resolved = _alert("resolved", severity="critical", detected_at=T0 + 120, message="resolved: accuracy back")
    out = to_alertmanager(firing, resolved, now=T0 + 130)
    assert out["labels"] == alert_labels(firing)  # else Alertmanager would not end the alert it has
    assert out["endsAt"] == rfc3339(T0 + 120)
    assert out["annotations"]["summary"] == "resolved: accuracy back"
    assert out["annotations"]["alert_id"] == resolved["alert_id"] != firing["alert_id"]
    assert out["annotations"]["incident_id"] == firing["incident_id"] == resolved["incident_id"]


def test_times_ahead_of_the_clock_are_clamped() -> None:
    firing, resolved = _alert(detected_at=T0 + 50), _alert("resolved", detected_at=T0 + 90)
    out = to_alertmanager(firing, resolved, now=T0)  # a producer's clock ran ahead
    assert out["startsAt"] == out["endsAt"] == rfc3339(T0)  # ended now, not in the future


@pytest.mark.skipif(alertmanager_binary() is None, reason="apt-get install prometheus-alertmanager")
def test_a_real_alertmanager_accepts_fires_and_ends_the_mapping(tmp_path: Any) -> None:
    with LocalAlertmanager(workdir=str(tmp_path / "am")) as am:
        target = AlertmanagerTarget(am.url, lease=120)
        now = time.time()
        firing = _alert(detected_at=now - 30)
        target.send([(firing, None)])
        got = am.alerts()
        assert len(got) == 1 and got[0]["status"]["state"] == "active"
        assert got[0]["labels"] == alert_labels(firing)
        assert got[0]["annotations"]["summary"] == firing["message"]
        target.send([(firing, _alert("resolved", detected_at=now - 1))])
        assert am.alerts() == []  # resolved: no longer listed as active


def test_webhook_signature_verifies_independently() -> None:
    body = orjson.dumps(_alert())
    hook = WebhookTarget("https://hooks.example/x", secret="k3y")
    h = hook.headers(body, "id-1", now=T0)
    assert h["X-Driftline-Timestamp"] == str(int(T0)) and h["X-Driftline-Alert-Id"] == "id-1"
    expected = hmac.new(b"k3y", f"{int(T0)}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(h["X-Driftline-Signature"], f"sha256={expected}")
    assert "X-Driftline-Signature" not in WebhookTarget("https://hooks.example/x").headers(body, "id-1")


class _Server:
    """A local HTTP endpoint answering ``codes`` in turn (then 200), recording bodies."""

    def __init__(self, codes: list[int]) -> None:
        self.codes, self.bodies = list(codes), []  # type: list[int], list[bytes]
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                code = owner.codes.pop(0) if owner.codes else 200
                if code == 200:
                    owner.bodies.append(body)
                self.send_response(code)
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook/secret-path"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server_factory() -> Iterator[Any]:
    made: list[_Server] = []

    def make(codes: list[int]) -> _Server:
        made.append(_Server(codes))
        return made[-1]

    yield make
    for s in made:
        s.close()


def _send(target: Any, items: list[Any], **kw: Any) -> tuple[Sender, list[Job]]:
    done: list[Job] = []
    sender = Sender(target, done.append, backoff_start=0.01, **kw).start()
    for i, item in enumerate(items):
        sender.put(Job(item, ("t", 0), i))
    assert sender.wait_idle(10)
    sender.stop()
    return sender, done


def test_failures_are_retried_in_order_and_counted(server_factory: Any) -> None:
    srv = server_factory([503, 500, 429])
    sender, done = _send(WebhookTarget(srv.url), [(b'{"n":1}', "a"), (b'{"n":2}', "b")], max_attempts=5)
    assert srv.bodies == [b'{"n":1}', b'{"n":2}']  # the first waited out its failures, in order
    st = sender.stats()
    assert (st["delivered"], st["retried"], st["dropped"]) == (2, 3, 0)
    assert [j.offset for j in done] == [0, 1]


def test_a_delivery_is_dropped_after_its_attempts_and_the_next_goes_on(server_factory: Any) -> None:
    srv = server_factory([503, 503, 503])
    sender, done = _send(WebhookTarget(srv.url), [(b"1", "a"), (b"2", "b")], max_attempts=3)
    st = sender.stats()
    assert (st["delivered"], st["retried"], st["dropped"]) == (1, 2, 1)
    assert srv.bodies == [b"2"] and len(done) == 2  # a dropped job is finished too: its offset moves on
    assert "HTTP 503" in st["last_error"] and "secret-path" not in st["last_error"]


def test_a_client_error_is_not_retried(server_factory: Any) -> None:
    srv = server_factory([400])
    sender, _ = _send(WebhookTarget(srv.url), [(b"1", "a")], max_attempts=5)
    assert (sender.stats()["dropped"], sender.stats()["retried"]) == (1, 0)


def test_an_unreachable_target_is_retried_then_dropped() -> None:
    target = AlertmanagerTarget("http://127.0.0.1:9", timeout=0.5)  # discard port: refused
    sender, done = _send(target, [[(_alert(), None)]], max_attempts=3)
    assert (sender.stats()["retried"], sender.stats()["dropped"]) == (2, 1) and len(done) == 1


def test_stop_abandons_a_job_without_finishing_it() -> None:
    done: list[Job] = []
    sender = Sender(AlertmanagerTarget("http://127.0.0.1:9", timeout=0.2), done.append,
                    backoff_start=30.0, backoff_max=30.0).start()
    sender.put(Job([(_alert(), None)], ("t", 0), 7))
    deadline = time.monotonic() + 5
    while sender.stats()["retried"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    sender.stop(timeout=2)
    assert done == []  # not delivered: its offset must not be committed


def test_settings_validate_and_redact_delivery_urls() -> None:
    s = Settings.from_env({"DRIFTLINE_ALERTMANAGER_URL": "http://am1:9093, https://ops:pw@am2:9093",
                           "DRIFTLINE_ALERT_WEBHOOK_URL": "https://hooks.example/T0/tok3n",
                           "DRIFTLINE_ALERT_WEBHOOK_SECRET": "s3cret"})
    assert s.alertmanager_urls() == ["http://am1:9093", "https://ops:pw@am2:9093"]
    text = repr(s) + str(s.redacted())
    assert ":pw@" not in text
    assert "ops:***@am2:9093" in text and "tok3n" not in text and "s3cret" not in text
    with pytest.raises(ValueError, match="http"):
        Settings(alertmanager_url="am1:9093")
    with pytest.raises(ValueError, match="alert_repost_seconds"):
        Settings(alert_repost_seconds=0)


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("amtool") is None, reason="amtool comes with prometheus-alertmanager")
def test_the_compose_alertmanager_config_is_valid_and_wired() -> None:
    config = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
    check = subprocess.run(["amtool", "check-config", str(config)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    am = compose["services"]["alertmanager"]
    assert am["image"].startswith("prom/alertmanager")
    assert f"./deploy/alertmanager/alertmanager.yml:{_flag(am['command'], '--config.file')}:ro" in am["volumes"]
    worker = compose["services"]["worker"]
    assert worker["environment"]["DRIFTLINE_ALERTMANAGER_URL"] == "http://alertmanager:9093"
    assert "alertmanager" in worker["depends_on"]


def _flag(argv: list[str], name: str) -> str:
    return next(a.split("=", 1)[1] for a in argv if a.startswith(name + "="))
