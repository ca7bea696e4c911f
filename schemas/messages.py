"""Outbound wire contract: alerts, metrics windows, drift events, outcomes, dead letters.

Each message is a plain dict (typed below) built by a ``make_*`` function so that
field names live in one place. Timestamps are float epoch seconds. Ids are SHA-1
hex digests of orjson-encoded field lists: stable across restarts and replays, and
unambiguous whatever characters the fields contain (unlike ``"|".join``).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Literal, NotRequired, TypedDict
from urllib.parse import quote, unquote

import orjson

from driftline.schemas.records import (
    DLQ_FIELDS,
    MAX_DLQ_RAW_BYTES,
    OUTCOME_FIELDS,
    DeadLetter,
    Outcome,
    make_dead_letter,
    make_outcome,
)

__all__ = [
    "ALERT_FIELDS",
    "DLQ_FIELDS",
    "DRIFT_EVENT_FIELDS",
    "MAX_DLQ_RAW_BYTES",
    "METRICS_FIELDS",
    "OUTCOME_FIELDS",
    "Alert",
    "DeadLetter",
    "DriftEvent",
    "MetricsWindow",
    "Outcome",
    "alert_id",
    "drift_event_id",
    "incident_id",
    "make_alert",
    "make_comparison",
    "make_dead_letter",
    "make_drift_event",
    "make_metrics",
    "make_outcome",
    "parse_segment_string",
    "segment_string",
]


class Alert(TypedDict):
    """Alerts topic value (key = model_id). One message per transition (firing, resolved).

    Data-drift alerts also carry ``feature`` (``NotRequired``: other kinds leave it out).
    """

    alert_id: str
    incident_id: str
    status: Literal["firing", "resolved"]
    severity: Literal["warning", "critical"]
    kind: str  # concept_drift, threshold, data_drift, data_quality, latency, volume, label_coverage, availability, ...
    rule: str  # adwin, ddm, eddm, accuracy_min, ...
    model_id: str
    model_version: str
    segment: str
    metric: str
    value: float | None
    threshold: float | None
    window_start: float
    window_end: float
    detected_at: float
    emitted_at: float
    message: str
    evidence: dict[str, Any]
    feature: NotRequired[str]


class MetricsWindow(TypedDict):
    """Metrics topic value (key = model_id): one window's metrics, re-emitted as labels arrive."""

    model_id: str
    model_version: str
    segment: str
    window_start: float
    window_end: float
    revision: int
    final: bool
    labeled_count: int
    emitted_at: float
    task: str
    metrics: dict[str, float]
    counts: dict[str, int]


class DriftEvent(TypedDict):
    """drift_events topic value: one detector alarm."""

    event_id: str
    model_id: str
    model_version: str
    partition: int
    detector: str
    kind: Literal["drift", "warning"]
    direction: Literal["up", "down"] | None
    position: int
    params: dict[str, Any]
    estimate_before: float | None
    estimate_after: float | None
    window_start: float
    window_end: float
    detected_at: float
    emitted_at: float


# every alert's keys; data-drift alerts add ``feature`` (``NotRequired``, which string annotations
# hide from ``__required_keys__``)
ALERT_OPTIONAL_FIELDS = ("feature",)
ALERT_FIELDS = tuple(k for k in Alert.__annotations__ if k not in ALERT_OPTIONAL_FIELDS)
METRICS_FIELDS = tuple(MetricsWindow.__annotations__)
DRIFT_EVENT_FIELDS = tuple(DriftEvent.__annotations__)


def _digest(parts: list[Any]) -> str:
    return hashlib.sha1(orjson.dumps(parts)).hexdigest()


def incident_id(
    model_id: str, model_version: str, segment: str, rule: str, metric: str, incident_start: float
) -> str:
    """Id shared by the firing and resolved alerts of one incident.

    Examples
    --------
    >>> len(incident_id("churn", "v1", "", "accuracy_min", "accuracy", 1.8e9))
    40
    """
    return _digest(["incident", model_id, model_version, segment, rule, metric, incident_start])


def alert_id(
    model_id: str,
    model_version: str,
    segment: str,
    rule: str,
    metric: str,
    incident_start: float,
    status: str,
) -> str:
    """Id of one alert transition: the same on replay, so consumers can deduplicate.

    Examples
    --------
    >>> a = alert_id("churn", "v1", "", "adwin", "error_rate", 1.8e9, "firing")
    >>> a == alert_id("churn", "v1", "", "adwin", "error_rate", 1.8e9, "firing")
    True
    >>> a == alert_id("churn", "v1", "", "adwin", "error_rate", 1.8e9, "resolved")
    False
    """
    return _digest(
        ["alert", model_id, model_version, segment, rule, metric, incident_start, status]
    )


def drift_event_id(
    model_id: str, model_version: str, partition: int, detector: str, kind: str, position: int
) -> str:
    """Id of one detector alarm (stable across replays of the same stream).

    Examples
    --------
    >>> drift_event_id("churn", "v1", 0, "adwin", "drift", 118) == drift_event_id(
    ...     "churn", "v1", 0, "adwin", "drift", 118)
    True
    """
    return _digest(["drift", model_id, model_version, partition, detector, kind, position])


def _seg_escape(s: str) -> str:
    # Percent-encode only the separators (and '%' itself) so common values stay readable.
    if "%" in s or "," in s or "=" in s:
        return quote(s, safe="")
    return s


def segment_string(segments: dict[str, str], keys: list[str]) -> str:
    """Canonical segment name: ``"k=v,k2=v2"`` over ``keys`` sorted; ``""`` for no keys.

    A key missing from ``segments`` appears with an empty value, so that segmentations
    by different key sets never produce the same string. Values containing ``,``, ``=``
    or ``%`` are percent-encoded (see :func:`parse_segment_string`).

    Examples
    --------
    >>> segment_string({"device": "ios", "country": "DE", "plan": "x"}, ["device", "country"])
    'country=DE,device=ios'
    >>> segment_string({"country": "DE"}, []), segment_string({}, ["country"])
    ('', 'country=')
    """
    return ",".join(f"{_seg_escape(k)}={_seg_escape(segments.get(k, ''))}" for k in sorted(keys))


def parse_segment_string(segment: str) -> dict[str, str]:
    """Inverse of :func:`segment_string`.

    Examples
    --------
    >>> parse_segment_string(segment_string({"a": "x,y", "b": ""}, ["a", "b"]))
    {'a': 'x,y', 'b': ''}
    """
    if not segment:
        return {}
    out: dict[str, str] = {}
    for part in segment.split(","):
        k, _, v = part.partition("=")
        out[unquote(k)] = unquote(v)
    return out


def make_alert(
    *,
    status: Literal["firing", "resolved"],
    severity: Literal["warning", "critical"],
    kind: str,
    rule: str,
    model_id: str,
    model_version: str,
    segment: str,
    metric: str,
    value: float | None,
    threshold: float | None,
    window_start: float,
    window_end: float,
    detected_at: float,
    incident_start: float,
    message: str,
    evidence: dict[str, Any] | None = None,
    emitted_at: float | None = None,
    feature: str = "",
    escalation: bool = False,
) -> Alert:
    """Build an alert; ``incident_start`` is the detected_at of the incident's firing alert.

    ``feature``: the feature a data-drift alert is about (``"prediction"`` for the model
    output); the key is present only when set. ``escalation``: a second firing alert of an open
    incident, whose severity rose to critical; it has an ``alert_id`` of its own (a transition
    of its own for consumers that deduplicate by id), and the incident's id.

    Examples
    --------
    >>> a = make_alert(status="firing", severity="critical", kind="threshold",
    ...     rule="accuracy_min", model_id="churn", model_version="v1", segment="",
    ...     metric="accuracy", value=0.71, threshold=0.8, window_start=1.8e9,
    ...     window_end=1.8e9 + 300, detected_at=1.8e9 + 300, incident_start=1.8e9 + 300,
    ...     message="accuracy 0.71 < 0.8", emitted_at=1.8e9 + 301)
    >>> a["incident_id"] == incident_id("churn", "v1", "", "accuracy_min", "accuracy", 1.8e9 + 300)
    True
    """
    alert: Alert = {
        "alert_id": alert_id(
            model_id, model_version, segment, rule, metric, incident_start,
            "escalated" if escalation else status,
        ),
        "incident_id": incident_id(model_id, model_version, segment, rule, metric, incident_start),
        "status": status,
        "severity": severity,
        "kind": kind,
        "rule": rule,
        "model_id": model_id,
        "model_version": model_version,
        "segment": segment,
        "metric": metric,
        "value": value,
        "threshold": threshold,
        "window_start": window_start,
        "window_end": window_end,
        "detected_at": detected_at,
        "emitted_at": time.time() if emitted_at is None else emitted_at,
        "message": message,
        "evidence": {} if evidence is None else evidence,
    }
    if feature:
        alert["feature"] = feature
    return alert


def make_metrics(
    *,
    model_id: str,
    model_version: str,
    segment: str,
    window_start: float,
    window_end: float,
    task: str,
    metrics: dict[str, float],
    counts: dict[str, int],
    revision: int = 0,
    final: bool = False,
    labeled_count: int = 0,
    emitted_at: float | None = None,
) -> MetricsWindow:
    """Build a metrics-window message (``revision``: the merge stage's count of partials merged
    minus one, so it grows with each re-emission and equal revisions carry equal content).

    Examples
    --------
    >>> m = make_metrics(model_id="churn", model_version="v1", segment="", window_start=1.8e9,
    ...     window_end=1.8e9 + 60, task="binary", metrics={"accuracy": 0.9},
    ...     counts={"accuracy": 120}, labeled_count=120, emitted_at=1.8e9 + 61)
    >>> m["revision"], m["final"]
    (0, False)
    """
    return {
        "model_id": model_id,
        "model_version": model_version,
        "segment": segment,
        "window_start": window_start,
        "window_end": window_end,
        "revision": revision,
        "final": final,
        "labeled_count": labeled_count,
        "emitted_at": time.time() if emitted_at is None else emitted_at,
        "task": task,
        "metrics": metrics,
        "counts": counts,
    }


def make_comparison(
    *,
    model_id: str,
    champion_version: str,
    challenger_version: str,
    window_start: float,
    window_end: float,
    mode: str,
    comparisons: list[dict[str, Any]],
    revision: int = 0,
    emitted_at: float | None = None,
) -> dict[str, Any]:
    """Build a comparisons-topic message: one challenger against the champion in one window.

    ``comparisons``: one dict per metric (``metric, champion, challenger, difference, ci_low,
    ci_high, z, p_value, n_champion, n_challenger, alpha, verdict``; ``z`` is None when the
    difference is exact). ``revision`` = champion window revision + challenger window revision,
    so it grows whenever either window is re-emitted.

    >>> m = make_comparison(model_id="fraud", champion_version="v1", challenger_version="v2",
    ...     window_start=1.8e9, window_end=1.8e9 + 60, mode="ab", comparisons=[], emitted_at=1.8e9 + 61)
    >>> m["challenger_version"], m["revision"]
    ('v2', 0)
    """
    return {
        "model_id": model_id,
        "champion_version": champion_version,
        "challenger_version": challenger_version,
        "window_start": window_start,
        "window_end": window_end,
        "mode": mode,
        "revision": revision,
        "emitted_at": time.time() if emitted_at is None else emitted_at,
        "comparisons": comparisons,
    }


def make_drift_event(
    *,
    model_id: str,
    model_version: str,
    partition: int,
    detector: str,
    kind: Literal["drift", "warning"],
    direction: Literal["up", "down"] | None,
    position: int,
    window_start: float,
    window_end: float,
    detected_at: float,
    params: dict[str, Any] | None = None,
    estimate_before: float | None = None,
    estimate_after: float | None = None,
    emitted_at: float | None = None,
) -> DriftEvent:
    """Build a drift event; ``event_id`` is :func:`drift_event_id` of its identity fields.

    Examples
    --------
    >>> e = make_drift_event(model_id="churn", model_version="v1", partition=3, detector="adwin",
    ...     kind="drift", direction="up", position=5118, window_start=1.8e9,
    ...     window_end=1.8e9 + 60, detected_at=1.8e9 + 42, emitted_at=1.8e9 + 43)
    >>> e["event_id"] == drift_event_id("churn", "v1", 3, "adwin", "drift", 5118)
    True
    """
    return {
        "event_id": drift_event_id(model_id, model_version, partition, detector, kind, position),
        "model_id": model_id,
        "model_version": model_version,
        "partition": partition,
        "detector": detector,
        "kind": kind,
        "direction": direction,
        "position": position,
        "params": {} if params is None else params,
        "estimate_before": estimate_before,
        "estimate_after": estimate_after,
        "window_start": window_start,
        "window_end": window_end,
        "detected_at": detected_at,
        "emitted_at": time.time() if emitted_at is None else emitted_at,
    }
