"""Prometheus Alertmanager: Driftline alerts as API v2 alerts, and the HTTP client posting them.

Mapping (one Alertmanager alert per incident):

* labels: ``alertname`` = ``driftline_<kind>``, ``kind``, ``rule``, ``severity``, ``model_id``,
  ``model_version``, ``segment``, ``metric``, ``feature`` (data drift: the drifting feature, or
  ``prediction`` for the model output). Labels are an alert's identity in Alertmanager (equal
  label sets are one alert), so they must name one incident: ``metric`` is there because some
  rules watch several metrics at once (a fairness rule per protected key, a challenger rule per
  compared metric). A label with an empty value is left out (``segment`` of whole-model alerts),
  as Prometheus does: Alertmanager treats empty and absent alike.
* annotations: ``summary`` (the alert's message), ``evidence`` (compact JSON), ``incident_id``,
  ``alert_id`` (of the transition last posted).
* ``startsAt``: when the incident was detected (the firing alert's ``detected_at``).
* ``endsAt``: for a firing alert a lease, ``now + lease`` (Driftline re-posts firing alerts every
  ``alert_repost_seconds`` and uses a lease of four intervals, as Prometheus does with its
  resend delay, so two lost posts never end an alert); Alertmanager's ``resolve_timeout`` does not
  apply because endsAt is always set. For a resolved alert, when it resolved.

Times are event times from the alerts topic clamped to the wall clock: Alertmanager reads an
``endsAt`` in the future as "still firing", so a resolve stamped ahead of this host's clock
(a producer's skewed clock) is posted as ending now.

The resolved post carries the labels of the incident's last firing post, else Alertmanager
would not match it to the alert it ends. An escalation (warning to critical) changes the
``severity`` label, so the runner ends the warning alert as it posts the critical one.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from driftline.sinks.delivery import http_post

#: Labels taken from the alert message, in this order (``alertname`` comes first).
LABEL_FIELDS = ("kind", "rule", "severity", "model_id", "model_version", "segment", "metric", "feature")
#: A firing alert's endsAt is this many re-post intervals ahead (Prometheus: 4 x resend delay).
LEASE_INTERVALS = 4


def rfc3339(ts: float) -> str:
    """Epoch seconds as RFC 3339 UTC with milliseconds.

    >>> rfc3339(1.8e9)
    '2027-01-15T08:00:00.000Z'
    """
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alert_labels(alert: Mapping[str, Any]) -> dict[str, str]:
    """The Alertmanager label set of a Driftline alert message.

    >>> alert_labels({"kind": "threshold", "rule": "accuracy_min", "severity": "critical",
    ...               "model_id": "churn", "model_version": "v1", "segment": "", "metric": "accuracy"})
    {'alertname': 'driftline_threshold', 'kind': 'threshold', 'rule': 'accuracy_min', 'severity': 'critical', 'model_id': 'churn', 'model_version': 'v1', 'metric': 'accuracy'}
    """
    labels = {"alertname": f"driftline_{alert['kind']}"}
    for name in LABEL_FIELDS:
        value = str(alert.get(name) or "")
        if value:
            labels[name] = value
    return labels


def to_alertmanager(firing: Mapping[str, Any], resolved: Mapping[str, Any] | None = None, *,
                    now: float | None = None, lease: float = 240.0) -> dict[str, Any]:
    """One API v2 alert: ``firing`` alone while it fires, with ``resolved`` once it resolved.

    ``firing`` gives the labels and ``startsAt``; the latest transition (``resolved`` if given)
    gives the annotations and, when resolved, ``endsAt``.

    Examples
    --------
    >>> f = {"kind": "threshold", "rule": "accuracy_min", "severity": "critical", "model_id": "m",
    ...      "model_version": "v1", "segment": "", "metric": "accuracy", "message": "accuracy 0.5 < 0.8",
    ...      "evidence": {"value": 0.5}, "detected_at": 1.8e9, "incident_id": "i1", "alert_id": "a1",
    ...      "status": "firing"}
    >>> a = to_alertmanager(f, now=1.8e9 + 10, lease=240)
    >>> a["startsAt"], a["endsAt"], a["annotations"]["evidence"]
    ('2027-01-15T08:00:00.000Z', '2027-01-15T08:04:10.000Z', '{"value":0.5}')
    >>> r = dict(f, status="resolved", alert_id="a2", message="resolved", detected_at=1.8e9 + 60)
    >>> to_alertmanager(f, r, now=1.8e9 + 70)["endsAt"]
    '2027-01-15T08:01:00.000Z'
    """
    now = time.time() if now is None else now
    last = resolved if resolved is not None else firing
    starts = min(float(firing["detected_at"]), now)
    if resolved is not None:
        ends = min(max(float(resolved["detected_at"]), starts), now)
    else:
        ends = now + lease
    return {
        "labels": alert_labels(firing),
        "annotations": {
            "summary": str(last.get("message", "")),
            "evidence": orjson.dumps(last.get("evidence") or {}, option=orjson.OPT_SORT_KEYS).decode(),
            "incident_id": str(firing.get("incident_id", "")),
            "alert_id": str(last.get("alert_id", "")),
        },
        "startsAt": rfc3339(starts),
        "endsAt": rfc3339(ends),
    }


def split_credentials(url: str) -> tuple[str, dict[str, str], str]:
    """``(url without user info, auth headers, name safe to log)`` of an HTTP(S) URL.

    >>> u, h, name = split_credentials("https://ops:s3cret@am.example:9093/am")
    >>> u, name, h["Authorization"].startswith("Basic ")
    ('https://am.example:9093/am', 'am.example:9093', True)
    """
    parts = urllib.parse.urlsplit(url)
    headers: dict[str, str] = {}
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    clean = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    return clean, headers, netloc


class AlertmanagerTarget:
    """Posts lists of API v2 alerts to one Alertmanager (``<base>/api/v2/alerts``).

    Items are sequences of ``(firing, resolved or None)`` alert-message pairs; the payload is
    built at each attempt so a retried firing alert carries a fresh lease.
    """

    def __init__(self, base_url: str, *, timeout: float = 10.0, lease: float = 240.0) -> None:
        clean, self._headers, host = split_credentials(base_url)
        self.url = clean.rstrip("/") + "/api/v2/alerts"
        self.name = f"alertmanager@{host}"
        self.timeout, self.lease = timeout, lease

    def payload(self, item: Sequence[tuple[Mapping[str, Any], Mapping[str, Any] | None]],
                now: float | None = None) -> bytes:
        now = time.time() if now is None else now
        return orjson.dumps([to_alertmanager(f, r, now=now, lease=self.lease) for f, r in item])

    def send(self, item: Sequence[tuple[Mapping[str, Any], Mapping[str, Any] | None]]) -> None:
        http_post(self.url, self.payload(item), self._headers, self.timeout)
