"""Reason codes of the dead-letter topic: every code a worker may write, with its meaning.

One list for the validators (``driftline.schemas``), the worker (``driftline.streams``) and the
docs; ``tests/test_reasons.py`` checks that every code the product writes is listed here.

>>> "empty" in REASON_CODES and REASON_CODES["empty"].startswith("an empty")
True
"""

from __future__ import annotations

#: Code -> what it means, in the order of the docs' table.
REASON_CODES: dict[str, str] = {
    "empty": "an empty or null message value on the predictions or labels topic",
    "malformed_json": "the value is not valid JSON",
    "not_utf8": "the value is not UTF-8",
    "not_an_object": "the value (or an envelope item) is not a JSON object",
    "missing_field": "a required field is absent",
    "wrong_type": "a field has the wrong JSON type",
    "out_of_range": "a number or string is outside its allowed range",
    "not_finite": "a number is NaN or infinite",
    "too_long": "a string or list is longer than its limit",
    "oversize_message": "the Kafka message is larger than the limit",
    "too_deep": "nesting is deeper than the limit",
    "too_many_features": "more features (or segments) than the limit",
    "bad_timestamp": "the timestamp is before 2000 or too far in the future",
    "bad_envelope": "an envelope's fields are wrong",
    "mixed_kinds": "an envelope holds both predictions and labels",
    "conflicting_fields": "fields that exclude each other are both set",
    "length_mismatch": "parallel lists have different lengths",
    "too_late": "a prediction for a window more than the model's label horizon behind its event time",
    "unknown_model": "the model is not in the models file and unlisted models are refused",
    "task_mismatch": "the event's task differs from the model's",
    "label_kind_mismatch": "the label's kind (class, value, feedback) does not fit the model's task",
    "processing_error": "an unexpected error while processing the event (a bug: please report it)",
}
