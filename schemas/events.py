"""Inbound wire contract: inference and label events, their validation and codecs.

Validation runs once per event on the hot path, so the checks are written as
exact-type tests (``type(v) is float``) with a slow path only for unusual inputs
(numpy scalars, subclasses); see ``docs/wire-contract.md`` for the contract.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from driftline.schemas._fields import (
    MAX_FUTURE_S,
    MAX_ID_LEN,
    MIN_TIMESTAMP,
    Rejection,
    as_float,
    bad_id,
    check_features,
    check_feedback,
    check_item_scores,
    check_items,
    check_scores,
    check_segments,
    check_status,
    class_label,
    parse_timestamp,
)

__all__ = [
    "Label",
    "Prediction",
    "Rejection",
    "binary_label",
    "validate_label",
    "validate_prediction",
]


_BINARY_STR = {"0": 0, "1": 1}
_INF = float("inf")
_new = tuple.__new__


class Prediction(NamedTuple):
    """A validated inference event (normalised; see :func:`validate_prediction`)."""

    prediction_id: str
    model_id: str
    model_version: str
    timestamp: float
    task: str
    label: str | int | None
    score: float | None
    scores: dict[str, float] | None
    value: float | None
    features: dict[str, Any]
    latency_ms: float | None
    segments: dict[str, str]
    # Ranking (task ``ranking``): recommended item ids in rank order, and the model's scores.
    items: list[str] | None = None
    item_scores: list[float] | None = None
    # Serving outcome: ``"ok"``, ``"error"`` or None (not reported), and the error's short code.
    status: str | None = None
    error_code: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """Return the contract dict, which :func:`validate_prediction` maps back to ``self``.

        Examples
        --------
        >>> p = validate_prediction({"prediction_id": "p1", "model_id": "m", "timestamp": 1.8e9,
        ...                          "prediction": {"score": 0.9}}, now=1.8e9)
        >>> p.to_wire()["prediction"]
        {'label': 1, 'score': 0.9}
        """
        if self.task == "regression":
            pred: dict[str, Any] = {"value": self.value}
        elif self.task == "ranking":
            pred = {"items": self.items}
            if self.item_scores is not None:
                pred["scores"] = self.item_scores
        else:
            pred = {"label": self.label}
            if self.scores is not None:
                pred["scores"] = self.scores
            elif self.score is not None:
                pred["score"] = self.score
        out: dict[str, Any] = {
            "prediction_id": self.prediction_id,
            "model_id": self.model_id,
            "model_version": self.model_version,
            "timestamp": self.timestamp,
            "prediction": pred,
        }
        if self.features:
            out["features"] = self.features
        if self.latency_ms is not None:
            out["latency_ms"] = self.latency_ms
        if self.segments:
            out["segments"] = self.segments
        if self.status is not None:
            out["status"] = self.status
        if self.error_code is not None:
            out["error_code"] = self.error_code
        return out


class Label(NamedTuple):
    """A validated label (ground truth) event (see :func:`validate_label`)."""

    prediction_id: str
    model_id: str | None
    timestamp: float
    label: str | int | None
    value: float | None
    # Ranking feedback: ``clicked``, ``converted`` and optionally ``relevant`` item ids.
    feedback: dict[str, list[str]] | None = None

    def to_wire(self) -> dict[str, Any]:
        """Return the contract dict, which :func:`validate_label` maps back to ``self``.

        Examples
        --------
        >>> validate_label({"prediction_id": "p1", "timestamp": 1.8e9, "label": True},
        ...                now=1.8e9).to_wire()
        {'prediction_id': 'p1', 'timestamp': 1800000000.0, 'label': 1}
        """
        out: dict[str, Any] = {"prediction_id": self.prediction_id}
        if self.model_id is not None:
            out["model_id"] = self.model_id
        out["timestamp"] = self.timestamp
        if self.feedback is not None:
            out["feedback"] = self.feedback
        elif self.value is not None:
            out["value"] = self.value
        else:
            out["label"] = self.label
        return out


def binary_label(v: object) -> int | None:
    """Map a binary class given as ``0``/``1``/``True``/``False``/``"0"``/``"1"`` to 0 or 1.

    The join uses this to compare a label event with a binary prediction; anything
    else (including multiclass names) gives ``None``.

    Examples
    --------
    >>> binary_label("1"), binary_label(False), binary_label(2), binary_label("cat")
    (1, 0, None, None)
    """
    t = type(v)
    if t is int or t is bool:
        return int(v) if v in (0, 1) else None  # type: ignore[call-overload]
    if t is str:
        return _BINARY_STR.get(v)  # type: ignore[call-overload]
    return None


def validate_prediction(obj: object, *, now: float | None = None) -> Prediction | Rejection:
    """Validate and normalise one inference event; never raises.

    Parameters
    ----------
    obj : object
        The decoded event (normally a dict from ``orjson.loads``); anything is accepted.
    now : float, optional
        Wall-clock epoch seconds for the future-timestamp check (default ``time.time()``).

    Returns
    -------
    Prediction or Rejection
        The normalised event, or the first problem found (reason code, field, detail).

    Examples
    --------
    >>> ev = {"prediction_id": "p1", "model_id": "churn", "timestamp": "2026-11-23T17:00:00Z",
    ...       "prediction": {"label": "1", "score": 0.8}, "features": {"age": 41}}
    >>> p = validate_prediction(ev, now=1.8e9)
    >>> p.task, p.label, p.score, p.timestamp
    ('binary', 1, 0.8, 1795453200.0)
    >>> validate_prediction({**ev, "prediction": {"score": True}}, now=1.8e9)
    Rejection(code='wrong_type', field='prediction.score', detail='expected a number, got bool')
    """
    try:
        return _prediction(obj, time.time() if now is None else now)
    except Exception as exc:  # safety net for hostile objects (custom __eq__, __len__, ...)
        return Rejection("wrong_type", "", f"cannot validate {type(obj).__name__}: {exc!r:.200}")


def _prediction(o: object, now: float) -> Prediction | Rejection:
    if type(o) is not dict and not isinstance(o, dict):
        return Rejection("not_an_object", "", f"expected a JSON object, got {type(o).__name__}")
    pid = o.get("prediction_id")
    if type(pid) is not str or not 0 < len(pid) <= MAX_ID_LEN:
        return bad_id(pid, "prediction_id")
    mid = o.get("model_id")
    if type(mid) is not str or not 0 < len(mid) <= MAX_ID_LEN:
        return bad_id(mid, "model_id")
    ver = o.get("model_version")
    if ver is None:
        ver = ""
    elif type(ver) is not str or len(ver) > MAX_ID_LEN:
        return bad_id(ver, "model_version", optional=True)
    ts = o.get("timestamp")
    # Fast path: a float epoch in range; everything else (ints, strings, errors) is parsed.
    if type(ts) is not float or not MIN_TIMESTAMP <= ts <= now + MAX_FUTURE_S:
        ts = parse_timestamp(ts, now)
        if type(ts) is not float:
            return ts  # type: ignore[return-value]

    p = o.get("prediction")
    if type(p) is not dict:
        if p is None:
            return Rejection("missing_field", "prediction", "prediction is required")
        if not isinstance(p, dict):
            return Rejection(
                "wrong_type", "prediction", f"expected an object, got {type(p).__name__}"
            )
    label: str | int | None = None
    score: float | None = None
    scores: dict[str, float] | None = None
    value: float | None = None
    items: list[str] | None = None
    item_scores: list[float] | None = None
    raw_value = p.get("value")
    raw_scores = p.get("scores")
    raw_label = p.get("label")
    raw_items = p.get("items")
    if raw_items is not None:
        task = "ranking"
        for other in ("label", "score", "value"):
            if p.get(other) is not None:
                return Rejection(
                    "conflicting_fields",
                    f"prediction.{other}",
                    "a ranking prediction carries items (and scores) only",
                )
        its = check_items(raw_items, "prediction.items")
        if type(its) is Rejection:
            return its
        items = its  # type: ignore[assignment]
        if raw_scores is not None:
            isc = check_item_scores(raw_scores, len(items))  # type: ignore[arg-type]
            if type(isc) is Rejection:
                return isc
            item_scores = isc  # type: ignore[assignment]
            score = item_scores[0]  # type: ignore[index]  # the top item's score feeds the score summary
    elif raw_value is not None:
        task = "regression"
        v = as_float(raw_value, "prediction.value")
        if type(v) is not float:
            return v  # type: ignore[return-value]
        value = v
    elif raw_scores is not None:
        task = "multiclass"
        sc = check_scores(raw_scores)
        if type(sc) is not dict:
            return sc  # type: ignore[return-value]
        scores = sc
        if raw_label is None:
            label = max(scores, key=scores.__getitem__)
        else:
            lab = class_label(raw_label, "prediction.label")
            if type(lab) is Rejection:
                return lab
            label = str(lab)
    else:
        raw_score = p.get("score")
        bin_lab = (
            raw_label
            if (type(raw_label) is int and (raw_label == 0 or raw_label == 1))
            else binary_label(raw_label)
        )
        if raw_score is not None or bin_lab is not None:
            task = "binary"
            if raw_score is not None:
                if type(raw_score) is float and 0.0 <= raw_score <= 1.0:
                    score = raw_score
                else:
                    s = as_float(raw_score, "prediction.score")
                    if type(s) is not float:
                        return s  # type: ignore[return-value]
                    if not 0.0 <= s <= 1.0:
                        return Rejection("out_of_range", "prediction.score", f"{s!r} not in [0, 1]")
                    score = s
            if raw_label is None:
                label = 1 if score >= 0.5 else 0  # type: ignore[operator]
            elif bin_lab is None:
                return Rejection(
                    "out_of_range",
                    "prediction.label",
                    "a binary label is 0, 1, true, false, '0' or '1'",
                )
            else:
                label = bin_lab
        elif raw_label is None:
            return Rejection(
                "missing_field",
                "prediction.label",
                "prediction needs label, score, scores or value",
            )
        else:
            task = "multiclass"
            lab = class_label(raw_label, "prediction.label")
            if type(lab) is Rejection:
                return lab
            label = str(lab)

    feats = o.get("features")
    if feats is None:
        feats = {}
    else:
        feats = check_features(feats)
        if type(feats) is Rejection:
            return feats
    lat = o.get("latency_ms")
    if lat is not None and (type(lat) is not float or not 0.0 <= lat < _INF):
        lat = as_float(lat, "latency_ms")
        if type(lat) is not float:
            return lat  # type: ignore[return-value]
        if lat < 0.0:
            return Rejection("out_of_range", "latency_ms", f"{lat!r} is negative")
    segs = o.get("segments")
    if segs is None:
        segs = {}
    else:
        segs = check_segments(segs)
        if type(segs) is Rejection:
            return segs
    status = o.get("status")
    code = o.get("error_code")
    # Fast path: no status, or exactly "ok"/"error" without a code; else check and normalise.
    if code is not None or (status is not None and (type(status) is not str or (status != "ok" and status != "error"))):
        served = check_status(status, code)
        if type(served) is Rejection:
            return served
        status, code = served  # type: ignore[misc]  # a 2-tuple here: type() narrowing is lost on NamedTuples
    # tuple.__new__ skips the generated Python-level __new__ (measurably faster per event).
    return _new(
        Prediction,
        (
            pid,
            mid,
            ver,
            ts,
            task,
            label,
            score,
            scores,
            value,
            feats,
            lat,
            segs,
            items,
            item_scores,
            status,
            code,
        ),
    )


def validate_label(obj: object, *, now: float | None = None) -> Label | Rejection:
    """Validate and normalise one label event; never raises.

    Exactly one of ``label`` (classification: int, str or bool; bool becomes 0/1),
    ``value`` (regression: a finite number) or ``feedback`` (ranking: ``clicked``,
    ``converted`` and optional ``relevant`` lists of item ids) must be present.

    Parameters
    ----------
    obj : object
        The decoded event; anything is accepted.
    now : float, optional
        Wall-clock epoch seconds for the future-timestamp check (default ``time.time()``).

    Returns
    -------
    Label or Rejection

    Examples
    --------
    >>> validate_label({"prediction_id": "p1", "timestamp": 1.8e9, "value": 3}, now=1.8e9)
    Label(prediction_id='p1', model_id=None, timestamp=1800000000.0, label=None, value=3.0, feedback=None)
    >>> validate_label({"prediction_id": "r1", "timestamp": 1.8e9, "feedback": {"clicked": ["a"]}},
    ...                now=1.8e9).feedback
    {'clicked': ['a'], 'converted': []}
    >>> validate_label({"prediction_id": "p1", "timestamp": 1.8e9}, now=1.8e9).code
    'missing_field'
    """
    try:
        return _label(obj, time.time() if now is None else now)
    except Exception as exc:  # safety net for hostile objects
        return Rejection("wrong_type", "", f"cannot validate {type(obj).__name__}: {exc!r:.200}")


def _label(o: object, now: float) -> Label | Rejection:
    if not isinstance(o, dict):
        return Rejection("not_an_object", "", f"expected a JSON object, got {type(o).__name__}")
    pid = o.get("prediction_id")
    if type(pid) is not str or not 0 < len(pid) <= MAX_ID_LEN:
        return bad_id(pid, "prediction_id")
    mid = o.get("model_id")
    if mid is not None and (type(mid) is not str or not 0 < len(mid) <= MAX_ID_LEN):
        return bad_id(mid, "model_id")
    ts = o.get("timestamp")
    if type(ts) is not float or not MIN_TIMESTAMP <= ts <= now + MAX_FUTURE_S:
        ts = parse_timestamp(ts, now)
        if type(ts) is not float:
            return ts  # type: ignore[return-value]
    raw_label = o.get("label")
    raw_value = o.get("value")
    raw_feedback = o.get("feedback")
    if raw_feedback is not None:
        if raw_label is not None or raw_value is not None:
            return Rejection(
                "conflicting_fields", "feedback", "give one of label, value or feedback"
            )
        fb = check_feedback(raw_feedback)
        if type(fb) is Rejection:
            return fb
        return _new(Label, (pid, mid, ts, None, None, fb))  # type: ignore[no-any-return]
    if raw_label is not None:
        if raw_value is not None:
            return Rejection("conflicting_fields", "value", "give either label or value, not both")
        lab = class_label(raw_label, "label")
        if type(lab) is Rejection:
            return lab
        return _new(Label, (pid, mid, ts, lab, None, None))  # type: ignore[no-any-return]
    if raw_value is None:
        return Rejection("missing_field", "label", "a label event needs label, value or feedback")
    v = as_float(raw_value, "value")
    if type(v) is not float:
        return v  # type: ignore[return-value]
    return _new(Label, (pid, mid, ts, None, v, None))  # type: ignore[no-any-return]
