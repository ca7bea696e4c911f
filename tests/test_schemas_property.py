"""Property tests: the decoders never raise, and what passes round-trips and matches the schemas."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftline.schemas import (
    REASON_CODES,
    Label,
    Prediction,
    Rejection,
    decode_message,
    encode_envelope,
    encode_event,
    validate_label,
    validate_prediction,
)
from driftline.schemas.codec import MAX_MESSAGE_BYTES, decode_clean_event

NOW = 2_000_000_000.0
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Anything a Python caller might pass: odd scalars, huge ints, non-str keys, nesting.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=10),
    st.sampled_from(["2026-11-23T17:00:00Z", "0", "1", "", "2026-13-01T00:00:00Z"]),
)
keys = st.one_of(
    st.sampled_from(
        [
            "prediction_id",
            "model_id",
            "model_version",
            "timestamp",
            "prediction",
            "features",
            "latency_ms",
            "segments",
            "label",
            "score",
            "scores",
            "value",
            "events",
            "items",
            "feedback",
            "clicked",
        ]
    ),  # fmt: skip
    st.text(max_size=5),
    st.integers(),
    st.none(),
    st.tuples(st.integers()),
)
anything = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner),
        st.dictionaries(keys, inner, max_size=6),
    ),
    max_leaves=30,
)


def deep(n: int) -> Any:
    obj: Any = {"prediction": 1}
    for _ in range(n):
        obj = {"prediction": obj, "features": [1]}
    return obj


def assert_result(res: object, cls: type) -> None:
    assert isinstance(res, cls | Rejection)
    if isinstance(res, Rejection):
        assert res.code and isinstance(res.field, str) and isinstance(res.detail, str)


@SETTINGS
@given(anything)
def test_validators_never_raise_on_objects(obj: Any) -> None:
    assert_result(validate_prediction(obj, now=NOW), Prediction)
    assert_result(validate_label(obj, now=NOW), Label)
    if isinstance(obj, dict):
        # Merge into a valid skeleton so the checks get past the first field.
        base = {
            "prediction_id": "p",
            "model_id": "m",
            "timestamp": 1.8e9,
            "prediction": {"score": 0.5},
        }
        for k, v in obj.items():
            for target in (base, base["prediction"]):
                trial = dict(base)
                if target is base:
                    trial[k] = v
                else:
                    trial["prediction"] = {**base["prediction"], k: v}  # type: ignore[dict-item]
                assert_result(validate_prediction(trial, now=NOW), Prediction)
                assert_result(validate_label(trial, now=NOW), Label)


@SETTINGS
@given(st.binary(max_size=300))
def test_decode_never_raises_on_bytes(data: bytes) -> None:
    for kind in ("prediction", "label"):
        events, bad = decode_message(data, kind, now=NOW)  # type: ignore[arg-type]
        assert len(events) + len(bad) >= 1 or data.strip().startswith(b"{")
        for r, _raw in bad:
            assert isinstance(r, Rejection)


json_like = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10)
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(keys.filter(lambda k: isinstance(k, str)), inner, max_size=6),
    ),  # type: ignore[arg-type]
    max_leaves=30,
)


@SETTINGS
@given(json_like)
def test_decode_never_raises_on_json(doc: Any) -> None:
    try:
        data = orjson.dumps(doc)
    except TypeError:  # ints beyond 64 bits: feed Python's JSON text instead
        data = json.dumps(doc).encode()
    for value in (data, {"events": [doc, doc]}):
        if not isinstance(value, bytes):
            try:
                value = orjson.dumps(value)
            except TypeError:
                continue
        for kind in ("prediction", "label"):
            events, bad = decode_message(value, kind, now=NOW)  # type: ignore[arg-type]
            assert all(isinstance(r, Rejection) for r, _ in bad)


def test_decode_deep_nesting_and_huge_numbers() -> None:
    for value in (
        orjson.dumps(deep(100)),
        json.dumps(deep(600)).encode(),
        b"[" * 100_000,
        b'{"prediction_id": "p", "timestamp": ' + b"9" * 400 + b"}",
        b'{"events": [' + b"1," * 5000 + b"1]}",
    ):
        for kind in ("prediction", "label"):
            events, bad = decode_message(value, kind, now=NOW)  # type: ignore[arg-type]
            assert not events and bad
    assert isinstance(validate_prediction(deep(5000), now=NOW), Rejection)


ids = st.text(min_size=1, max_size=20)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
prob = st.floats(min_value=0.0, max_value=1.0)
feature_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), finite, st.text(max_size=30)
)
predictions = st.one_of(
    st.fixed_dictionaries({"score": prob}),
    st.fixed_dictionaries(
        {"label": st.sampled_from([0, 1, True, False, "0", "1"])}, optional={"score": prob}
    ),
    st.fixed_dictionaries(
        {"scores": st.dictionaries(ids, prob, min_size=1, max_size=5)},
        optional={"label": st.one_of(ids, st.integers(0, 50))},
    ),
    st.fixed_dictionaries({"label": ids.filter(lambda s: s not in ("0", "1"))}),
    st.fixed_dictionaries({"value": finite}),
    # ranking: a list of ids, optionally with non-increasing scores of the same length
    st.lists(ids, min_size=1, max_size=12).flatmap(
        lambda items: st.one_of(
            st.just({"items": items}),
            st.lists(finite, min_size=len(items), max_size=len(items)).map(
                lambda sc: {"items": items, "scores": sorted(sc, reverse=True)}
            ),
        )
    ),
)
item_lists = st.lists(ids, max_size=6)
feedbacks = st.fixed_dictionaries({}, optional={"clicked": item_lists, "converted": item_lists,
                                                "relevant": item_lists})  # fmt: skip
timestamps = st.one_of(
    st.floats(min_value=946_684_800.0, max_value=NOW),
    st.integers(946_684_800, int(NOW)),
    st.datetimes(
        min_value=__import__("datetime").datetime(2000, 1, 2),
        max_value=__import__("datetime").datetime(2030, 1, 1),
    ).map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
)
inference_events = st.fixed_dictionaries(
    {"prediction_id": ids, "model_id": ids, "timestamp": timestamps, "prediction": predictions},
    optional={
        "model_version": st.text(max_size=10),
        "features": st.dictionaries(ids, feature_values, max_size=8),
        "latency_ms": st.floats(min_value=0.0, max_value=1e6),
        "segments": st.dictionaries(ids, st.text(max_size=10), max_size=4),
        # "ok" with an error_code is a contradiction (tested in test_schemas.py)
        "status": st.sampled_from(["error", None]),
        "error_code": st.one_of(st.none(), st.text(min_size=1, max_size=64)),
    },
)
label_events = st.fixed_dictionaries(
    {"prediction_id": ids, "timestamp": timestamps},
    optional={"model_id": ids},
).flatmap(
    lambda d: st.one_of(
        st.builds(lambda v: {**d, "label": v}, st.one_of(st.booleans(), st.integers(-5, 5), ids)),
        st.builds(lambda v: {**d, "value": v}, finite),
        st.builds(lambda v: {**d, "feedback": v}, feedbacks),
    )
)


def _schema_validator(name: str) -> Any:
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - jsonschema is a dev extra
        return None
    path = Path(__file__).resolve().parents[1] / "schemas" / f"{name}.schema.json"
    return jsonschema.Draft202012Validator(json.loads(path.read_text()))


INFERENCE_SCHEMA = _schema_validator("inference_event")
LABEL_SCHEMA = _schema_validator("label_event")


@SETTINGS
@given(inference_events)
def test_valid_predictions_roundtrip(ev: dict) -> None:
    p = validate_prediction(ev, now=NOW)
    assert isinstance(p, Prediction), p
    wire = p.to_wire()
    again = validate_prediction(orjson.loads(encode_event(wire)), now=NOW)
    assert again == p
    events, bad = decode_message(encode_envelope([ev, p]), "prediction", now=NOW)
    assert events == [p, p] and not bad
    if INFERENCE_SCHEMA is not None:
        assert INFERENCE_SCHEMA.is_valid(ev)
        assert INFERENCE_SCHEMA.is_valid(wire)
    assert math.isfinite(p.timestamp)


@SETTINGS
@given(label_events)
def test_valid_labels_roundtrip(ev: dict) -> None:
    lab = validate_label(ev, now=NOW)
    assert isinstance(lab, Label), lab
    assert validate_label(orjson.loads(encode_event(lab)), now=NOW) == lab
    if LABEL_SCHEMA is not None:
        assert LABEL_SCHEMA.is_valid(ev)
        assert LABEL_SCHEMA.is_valid(lab.to_wire())


@SETTINGS
@given(inference_events, st.sampled_from(["prediction_id", "model_id", "timestamp", "prediction"]))
def test_missing_required_field_rejected(ev: dict, field: str) -> None:
    ev = {k: v for k, v in ev.items() if k != field}
    res = validate_prediction(ev, now=NOW)
    assert isinstance(res, Rejection) and res.field == field and res.code == "missing_field"


DOCUMENTED = set(REASON_CODES)


@SETTINGS
@given(anything, anything)
def test_ranking_shapes_only_ever_give_documented_rejections(items: Any, other: Any) -> None:
    """Any value in the ranking fields: a Prediction/Label or a documented reason code."""
    base = {"prediction_id": "p", "model_id": "m", "timestamp": 1.8e9}
    trials = [
        {**base, "prediction": {"items": items}},
        {**base, "prediction": {"items": ["a", "b"], "scores": items}},
        {**base, "prediction": {"items": items, "scores": other}},
        {**base, "prediction": {"items": ["a"], "label": other}},
    ]
    for ev in trials:
        res = validate_prediction(ev, now=NOW)
        assert_result(res, Prediction)
        if isinstance(res, Rejection):
            assert res.code in DOCUMENTED, res
        else:
            assert res.task == "ranking" and all(type(x) is str for x in res.items or ())
            assert validate_prediction(orjson.loads(encode_event(res)), now=NOW) == res
    for fb in (items, {"clicked": items, "converted": other}, {"relevant": items}):
        res = validate_label({**base, "feedback": fb}, now=NOW)
        assert_result(res, Label)
        if isinstance(res, Rejection):
            assert res.code in DOCUMENTED, res
        else:
            assert res.feedback is not None and set(res.feedback) >= {"clicked", "converted"}
            assert validate_label(orjson.loads(encode_event(res)), now=NOW) == res


def _same_as_decode_message(value: bytes) -> None:
    """``decode_clean_event`` (the join stage's single-event fast path) answers only for a
    message ``decode_message`` takes whole, and with the very event it gives."""
    for kind in ("prediction", "label"):
        fast = decode_clean_event(value, kind, MAX_MESSAGE_BYTES, NOW)
        events, bad = decode_message(value, kind, now=NOW)  # type: ignore[arg-type]
        if fast is None:
            assert bad or len(events) != 1 or b'"events"' in value, (value, events)
        else:
            assert (events, bad) == ([fast], []), (value, fast, events, bad)


# Events on the wrong topic, and envelopes: the cases the fast path must leave to decode_message.
crossed = st.one_of(
    label_events.map(lambda d: {**d, "prediction": {"score": 0.5}}),
    inference_events.map(lambda d: {k: v for k, v in d.items() if k != "prediction"} | {"label": 1}),
    st.lists(st.one_of(inference_events, label_events), max_size=2).map(lambda evs: {"events": evs}),
    st.one_of(inference_events, label_events).map(lambda d: {**d, "events": []}),
)


@SETTINGS
@given(st.one_of(inference_events, label_events, crossed, json_like))
def test_single_event_fast_path_equals_decode_message(doc: Any) -> None:
    try:
        value = orjson.dumps(doc)
    except TypeError:
        value = json.dumps(doc).encode()
    _same_as_decode_message(value)


@SETTINGS
@given(st.binary(max_size=300))
def test_single_event_fast_path_equals_decode_message_on_bytes(data: bytes) -> None:
    _same_as_decode_message(data)
