"""Per-event output records: joined outcomes and dead letters (re-exported by ``driftline.schemas.messages``)."""

from __future__ import annotations

import time
from typing import Any, TypedDict

import orjson

from driftline.schemas.events import Label, Prediction, binary_label

__all__ = [
    "DLQ_FIELDS",
    "MAX_DLQ_RAW_BYTES",
    "OUTCOME_FIELDS",
    "DeadLetter",
    "Outcome",
    "make_dead_letter",
    "make_outcome",
]

#: The dead-letter ``raw`` field carries at most this many bytes of the original message.
MAX_DLQ_RAW_BYTES = 65_536


class Outcome(TypedDict):
    """outcomes topic value: one prediction joined with its label."""

    prediction_id: str
    model_id: str
    model_version: str
    segments: dict[str, str]
    task: str
    y_pred: str | None
    y_true: str | None
    score: float | None
    value_pred: float | None
    value_true: float | None
    latency_ms: float | None
    prediction_ts: float
    label_ts: float
    label_delay_s: float
    correct: bool | None
    abs_error: float | None
    # Ranking only (None otherwise); independent of K, so any K can be queried later.
    items_shown: int | None  # distinct ids in the list
    clicked_shown: int | None  # of those, clicked
    converted_shown: int | None  # of those, converted
    relevant_count: (
        int | None
    )  # relevant ids (``relevant``, else clicked | converted), shown or not
    first_relevant_rank: (
        int | None
    )  # rank (1-based) of the first relevant id in the list; None without one


class DeadLetter(TypedDict):
    """dlq topic value (key = the original message key)."""

    reason: str
    field: str
    detail: str
    topic: str
    partition: int
    offset: int
    received_at: float
    raw: str
    raw_truncated: bool


OUTCOME_FIELDS = tuple(Outcome.__annotations__)
DLQ_FIELDS = tuple(DeadLetter.__annotations__)


def make_outcome(pred: Prediction, label: Label) -> Outcome:
    """Join a prediction with its label.

    Classes are compared as strings; for a binary prediction the label is first mapped
    with :func:`~driftline.schemas.binary_label` (``True``/``"1"`` -> ``"1"``). A label of the
    wrong kind (a class for a regression, a value for a classifier) gives
    ``correct``/``abs_error`` = None.

    Examples
    --------
    >>> from driftline.schemas import validate_label, validate_prediction
    >>> p = validate_prediction({"prediction_id": "p1", "model_id": "m", "timestamp": 1.8e9,
    ...     "prediction": {"score": 0.9}}, now=1.8e9)
    >>> o = make_outcome(p, validate_label({"prediction_id": "p1", "timestamp": 1.8e9 + 30,
    ...     "label": True}, now=1.8e9))
    >>> o["y_pred"], o["y_true"], o["correct"], o["label_delay_s"]
    ('1', '1', True, 30.0)
    """
    # One unpacking each instead of a NamedTuple attribute lookup per field, and a copy of a
    # template dict with the fields set instead of a 21-key literal (0.3 vs 0.7 µs): this runs
    # once per joined label, on the join stage's hot path.
    (prediction_id, model_id, model_version, prediction_ts, task, pred_label, score, _scores, value_pred,
     _features, latency_ms, segments, items, _item_scores, _status, _error_code) = pred
    _, _, label_ts, true_label, value_true, feedback = label
    o = _EMPTY_OUTCOME.copy()
    o["prediction_id"] = prediction_id
    o["model_id"] = model_id
    o["model_version"] = model_version
    o["segments"] = segments
    o["task"] = task
    o["score"] = score
    o["value_pred"] = value_pred
    o["value_true"] = value_true
    o["latency_ms"] = latency_ms
    o["prediction_ts"] = prediction_ts
    o["label_ts"] = label_ts
    o["label_delay_s"] = label_ts - prediction_ts
    if task == "regression":
        if value_pred is not None and value_true is not None:
            o["abs_error"] = abs(value_pred - value_true)
    elif task == "ranking":  # a ranking outcome carries the list counts instead
        (o["items_shown"], o["clicked_shown"], o["converted_shown"], o["relevant_count"],
         o["first_relevant_rank"]) = _ranking_counts(items, feedback)
    else:
        y_pred = o["y_pred"] = str(pred_label)
        if true_label is not None:
            if task == "binary":
                b = binary_label(true_label)
                y_true = str(true_label) if b is None else str(b)
            else:
                y_true = str(true_label)
            o["y_true"] = y_true
            o["correct"] = y_pred == y_true
    return o


_EMPTY_OUTCOME: Outcome = dict.fromkeys(OUTCOME_FIELDS)  # type: ignore[assignment]


def _ranking_counts(
    items: list[str] | None, feedback: dict[str, list[str]] | None
) -> tuple[int | None, ...]:
    """(items_shown, clicked_shown, converted_shown, relevant_count, first_relevant_rank).

    Repeated ids count once, at their first rank (as ``driftline.detectors.ranking`` counts them).

    >>> _ranking_counts(["a", "b", "a", "c"], {"clicked": ["c", "z"], "converted": []})
    (3, 1, 0, 2, 3)
    """
    if items is None or feedback is None:
        return (None,) * 5
    ranked = list(dict.fromkeys(items))
    clicked, converted = set(feedback["clicked"]), set(feedback["converted"])
    relevant = set(feedback["relevant"]) if "relevant" in feedback else clicked | converted
    first = next((i for i, x in enumerate(ranked, 1) if x in relevant), None)
    return (len(ranked), sum(x in clicked for x in ranked), sum(x in converted for x in ranked),
            len(relevant), first)  # fmt: skip


def make_dead_letter(
    rejection: Any,
    raw: object,
    *,
    topic: str,
    partition: int,
    offset: int,
    received_at: float | None = None,
) -> DeadLetter:
    """Build a dead-letter record from a :class:`~driftline.schemas.Rejection` and the raw input.

    ``raw`` may be bytes (decoded as UTF-8 with replacement) or an event object
    (serialised as JSON, else ``repr``); it is cut to 64 KiB (``raw_truncated``).

    Examples
    --------
    >>> from driftline.schemas import Rejection
    >>> d = make_dead_letter(Rejection("malformed_json", "", "bad"), b"\\xff{x", topic="t",
    ...     partition=0, offset=7, received_at=1.8e9)
    >>> d["raw"], d["raw_truncated"]
    ('\\ufffd{x', False)
    """
    if isinstance(raw, bytes | bytearray | memoryview):
        data = bytes(raw)
    elif isinstance(raw, str):
        data = raw.encode("utf-8", "replace")
    else:
        try:
            data = orjson.dumps(raw)
        except Exception:  # not JSON-serialisable (e.g. a Python caller's object)
            data = repr(raw).encode("utf-8", "replace")
    truncated = len(data) > MAX_DLQ_RAW_BYTES
    code, field, detail = rejection
    return {
        "reason": code,
        "field": field,
        "detail": detail,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "received_at": time.time() if received_at is None else received_at,
        "raw": data[:MAX_DLQ_RAW_BYTES].decode("utf-8", "replace"),
        "raw_truncated": truncated,
    }
