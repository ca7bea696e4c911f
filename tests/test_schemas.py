"""Wire contract: validation rules, codecs, output builders, JSON Schema agreement."""

from __future__ import annotations

import json
import re
from pathlib import Path

import orjson
import pytest

from driftline import schemas
from driftline.schemas import (
    Label,
    Prediction,
    Rejection,
    decode_message,
    encode_envelope,
    encode_event,
    make_alert,
    make_dead_letter,
    make_drift_event,
    make_metrics,
    make_outcome,
    parse_segment_string,
    segment_string,
    validate_label,
    validate_prediction,
)

NOW = 2_000_000_000.0
ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIR = ROOT / "schemas"
BASE = {
    "prediction_id": "p1",
    "model_id": "m",
    "timestamp": 1_795_453_200.0,
    "prediction": {"label": 1, "score": 0.8},
}


def pred(**kw: object) -> Prediction | Rejection:
    return validate_prediction({**BASE, **kw}, now=NOW)


def rej(res: object) -> tuple[str, str]:
    assert isinstance(res, Rejection), res
    return res.code, res.field


# -- inference events ---------------------------------------------------------------------


def test_binary_normalised() -> None:
    p = pred(prediction={"label": "1", "score": 1}, features={"a": 1, "b": "x", "c": None})
    assert isinstance(p, Prediction)
    assert (p.task, p.label, p.score, p.model_version) == ("binary", 1, 1.0, "")
    assert p.features == {"a": 1, "b": "x", "c": None}
    assert p.segments == {} and p.latency_ms is None


@pytest.mark.parametrize(
    ("prediction", "task", "label"),
    [
        ({"score": 0.5}, "binary", 1),
        ({"score": 0.49}, "binary", 0),
        ({"label": True}, "binary", 1),
        ({"label": "0"}, "binary", 0),
        ({"label": "cat"}, "multiclass", "cat"),
        ({"label": 7}, "multiclass", "7"),
        ({"scores": {"a": 0.2, "b": 0.8}}, "multiclass", "b"),
        ({"label": "a", "scores": {"a": 0.2, "b": 0.8}}, "multiclass", "a"),
        ({"value": -3}, "regression", None),
    ],
)
def test_task_inference(prediction: dict, task: str, label: object) -> None:
    p = pred(prediction=prediction)
    assert isinstance(p, Prediction)
    assert (p.task, p.label) == (task, label)


def test_rfc3339_timestamps() -> None:
    for ts, want in [
        ("2026-11-23T17:00:00Z", 1795453200.0),
        ("2026-11-23T17:00:00.123+01:00", 1795449600.123),
        ("2026-11-23t17:00:00z", 1795453200.0),
        (1795453200, 1795453200.0),
    ]:
        p = pred(timestamp=ts)
        assert isinstance(p, Prediction) and p.timestamp == pytest.approx(want)


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"prediction_id": None}, ("missing_field", "prediction_id")),
        ({"prediction_id": ""}, ("out_of_range", "prediction_id")),
        ({"prediction_id": "x" * 257}, ("too_long", "prediction_id")),
        ({"model_id": 5}, ("wrong_type", "model_id")),
        ({"model_version": 2}, ("wrong_type", "model_version")),
        ({"timestamp": True}, ("wrong_type", "timestamp")),
        ({"timestamp": float("nan")}, ("not_finite", "timestamp")),
        ({"timestamp": 10**400}, ("out_of_range", "timestamp")),
        ({"timestamp": 946684799}, ("bad_timestamp", "timestamp")),
        ({"timestamp": NOW + 86401}, ("bad_timestamp", "timestamp")),
        ({"timestamp": "2026-11-23T17:00:00"}, ("bad_timestamp", "timestamp")),
        ({"timestamp": "2026-02-30T17:00:00Z"}, ("bad_timestamp", "timestamp")),
        ({"prediction": None}, ("missing_field", "prediction")),
        ({"prediction": [1]}, ("wrong_type", "prediction")),
        ({"prediction": {}}, ("missing_field", "prediction.label")),
        ({"prediction": {"score": True}}, ("wrong_type", "prediction.score")),
        ({"prediction": {"score": 1.5}}, ("out_of_range", "prediction.score")),
        ({"prediction": {"score": "0.5"}}, ("wrong_type", "prediction.score")),
        ({"prediction": {"score": float("inf")}}, ("not_finite", "prediction.score")),
        ({"prediction": {"label": "cat", "score": 0.3}}, ("out_of_range", "prediction.label")),
        ({"prediction": {"label": 1.0}}, ("wrong_type", "prediction.label")),
        ({"prediction": {"label": 2**70}}, ("out_of_range", "prediction.label")),
        ({"prediction": {"scores": {}}}, ("out_of_range", "prediction.scores")),
        ({"prediction": {"scores": {"a": 1.2}}}, ("out_of_range", "prediction.scores.a")),
        ({"prediction": {"scores": {"a": [1]}}}, ("too_deep", "prediction.scores.a")),
        ({"prediction": {"scores": {1: 0.5}}}, ("wrong_type", "prediction.scores")),
        ({"prediction": {"value": float("nan")}}, ("not_finite", "prediction.value")),
        ({"features": [1]}, ("wrong_type", "features")),
        ({"features": {"age": float("nan")}}, ("not_finite", "features.age")),
        ({"features": {"age": {"x": 1}}}, ("too_deep", "features.age")),
        ({"features": {"s": "x" * 1025}}, ("too_long", "features.s")),
        ({"features": {1: 2}}, ("wrong_type", "features")),
        ({"features": {"": 2}}, ("out_of_range", "features")),
        ({"features": {"big": 10**400}}, ("out_of_range", "features.big")),
        ({"features": {f"f{i}": i for i in range(1001)}}, ("too_many_features", "features")),
        ({"latency_ms": -1}, ("out_of_range", "latency_ms")),
        ({"latency_ms": False}, ("wrong_type", "latency_ms")),
        ({"segments": {"k": 1}}, ("wrong_type", "segments.k")),
        ({"segments": {f"k{i}": "v" for i in range(33)}}, ("too_long", "segments")),
        ({"status": "failed"}, ("out_of_range", "status")),
        ({"status": "OK"}, ("out_of_range", "status")),
        ({"status": True}, ("wrong_type", "status")),
        ({"status": 500}, ("wrong_type", "status")),
        ({"error_code": 500}, ("wrong_type", "error_code")),
        ({"error_code": ""}, ("out_of_range", "error_code")),
        ({"error_code": "E" * 65}, ("too_long", "error_code")),
        ({"status": "ok", "error_code": "TIMEOUT"}, ("conflicting_fields", "error_code")),
    ],
)
def test_prediction_rejections(kw: dict, expected: tuple[str, str]) -> None:
    assert rej(pred(**kw)) == expected


def test_serving_status_and_error_code() -> None:
    """Optional; an error_code alone means status "error"; both survive to_wire and back."""
    assert (pred().status, pred().error_code) == (None, None)  # type: ignore[union-attr]
    for kw, want in (({"status": "ok"}, ("ok", None)), ({"status": "error"}, ("error", None)),
                     ({"status": "error", "error_code": "UPSTREAM_TIMEOUT"}, ("error", "UPSTREAM_TIMEOUT")),
                     ({"error_code": "OOM"}, ("error", "OOM")), ({"status": None, "error_code": None}, (None, None)),
                     ({"error_code": "E" * 64}, ("error", "E" * 64))):  # fmt: skip
        p = pred(**kw)
        assert isinstance(p, Prediction) and (p.status, p.error_code) == want, kw
        assert validate_prediction(orjson.loads(encode_event(p)), now=NOW) == p
        assert schema_ok("inference_event", {**BASE, **kw}) and schema_ok("inference_event", p.to_wire())
    assert "status" not in pred().to_wire()  # type: ignore[union-attr]
    np = pytest.importorskip("numpy")
    for sub in (np.str_("error"), type("S", (str,), {})("ok")):  # normalised to plain str
        assert type(pred(status=sub).status) is str  # type: ignore[union-attr]


def test_not_an_object_and_hostile_objects() -> None:
    assert rej(validate_prediction([1, 2])) == ("not_an_object", "")

    class Evil(dict):
        def get(self, *a: object) -> object:
            raise RuntimeError("boom")

    assert rej(validate_prediction(Evil())) == ("wrong_type", "")
    assert rej(validate_label(Evil())) == ("wrong_type", "")


def test_numpy_scalars_normalised() -> None:
    np = pytest.importorskip("numpy")
    p = pred(
        prediction={"score": np.float32(0.25)},
        features={"a": np.int64(3), "b": np.float64(1.5), "c": np.bool_(True)},
        latency_ms=np.float64(2.0),
    )
    assert isinstance(p, Prediction)
    assert type(p.score) is float and p.label == 0
    assert p.features == {"a": 3, "b": 1.5, "c": True}
    assert [type(v) for v in p.features.values()] == [int, float, bool]
    orjson.dumps(p.to_wire())  # serialisable after normalisation


def test_caller_dict_not_mutated() -> None:
    np = pytest.importorskip("numpy")
    feats = {"a": np.int64(3)}
    pred(features=feats)
    assert type(feats["a"]) is np.int64


# -- label events -------------------------------------------------------------------------


def test_labels() -> None:
    ok = validate_label({"prediction_id": "p", "timestamp": 1.8e9, "label": False}, now=NOW)
    assert ok == Label("p", None, 1.8e9, 0, None)
    v = validate_label(
        {"prediction_id": "p", "model_id": "m", "timestamp": 1.8e9, "value": 2}, now=NOW
    )
    assert v == Label("p", "m", 1.8e9, None, 2.0)
    base = {"prediction_id": "p", "timestamp": 1.8e9}
    assert rej(validate_label(base, now=NOW)) == ("missing_field", "label")
    both = {**base, "label": 1, "value": 1.0}
    assert rej(validate_label(both, now=NOW)) == ("conflicting_fields", "value")
    assert rej(validate_label({**base, "label": [1]}, now=NOW)) == ("wrong_type", "label")
    assert rej(validate_label({**base, "value": True}, now=NOW)) == ("wrong_type", "value")
    assert rej(validate_label({**base, "model_id": ""}, now=NOW)) == ("out_of_range", "model_id")


def test_binary_label_helper() -> None:
    assert [schemas.binary_label(v) for v in (0, 1, True, "1", "0", 2, "yes", None, 1.0)] == [
        0, 1, 1, 1, 0, None, None, None, None,
    ]  # fmt: skip


# -- decode_message -----------------------------------------------------------------------


def test_decode_envelope_partial_rejection() -> None:
    good = {**BASE}
    msg = encode_envelope(
        [good, {**BASE, "prediction": {"score": 2}}, 5, {"prediction_id": "q", "label": 1}]
    )
    events, bad = decode_message(msg, "prediction", now=NOW)
    assert [e.prediction_id for e in events] == ["p1"]
    assert [(r.code, r.field) for r, _ in bad] == [
        ("out_of_range", "prediction.score"),
        ("not_an_object", "events[2]"),
        ("mixed_kinds", "prediction"),
    ]
    assert bad[0][1] == {**BASE, "prediction": {"score": 2}}


def test_decode_single_event_and_label_stream() -> None:
    events, bad = decode_message(encode_event(BASE), "prediction", now=NOW)
    assert len(events) == 1 and not bad
    events, bad = decode_message(encode_event(BASE), "label", now=NOW)
    assert not events and rej(bad[0][0]) == ("mixed_kinds", "prediction")


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (None, "empty"),
        (b"", "empty"),
        (b"{", "malformed_json"),
        (b'{"x": NaN}', "malformed_json"),
        (b"1e400", "malformed_json"),
        (b'"\xff"', "not_utf8"),
        (b"[1]", "not_an_object"),
        (b"[" * 2000, "too_deep"),
        (b'{"events": 3}', "bad_envelope"),
        (b'{"events": [' + b"{}," * 10_000 + b"{}]}", "bad_envelope"),
        (b" " * 1_048_577, "oversize_message"),
        (12, "wrong_type"),
    ],
)
def test_decode_bad_messages(value: object, code: str) -> None:
    events, bad = decode_message(value, "prediction", now=NOW)  # type: ignore[arg-type]
    assert events == [] and len(bad) == 1
    assert bad[0][0].code == code and bad[0][0].field in ("", "events")
    raw = bad[0][1]
    if isinstance(value, bytes):
        assert raw == value[:1024]


def test_decode_accepts_str_bytearray_memoryview() -> None:
    b = encode_event(BASE)
    for v in (b.decode(), bytearray(b), memoryview(b)):
        assert len(decode_message(v, "prediction", now=NOW)[0]) == 1  # type: ignore[arg-type]


def test_decode_bad_kind_raises() -> None:
    with pytest.raises(ValueError):
        decode_message(b"{}", "other")  # type: ignore[arg-type]


def test_encode_prediction_objects() -> None:
    p = pred()
    assert orjson.loads(encode_envelope([p])) == {"events": [p.to_wire()]}  # type: ignore[union-attr]
    assert decode_message(encode_event(p), "prediction", now=NOW)[0] == [p]  # type: ignore[arg-type]


# -- output messages ----------------------------------------------------------------------


def test_alert_ids() -> None:
    kw = dict(
        severity="warning", kind="concept_drift", rule="adwin", model_id="m", model_version="v",
        segment="", metric="error_rate", value=0.3, threshold=None, window_start=1.0,
        window_end=2.0, detected_at=2.0, incident_start=2.0, message="drift", emitted_at=3.0,
    )  # fmt: skip
    fire = make_alert(status="firing", **kw)  # type: ignore[arg-type]
    res = make_alert(status="resolved", **{**kw, "detected_at": 9.0})  # type: ignore[arg-type]
    assert fire["incident_id"] == res["incident_id"]
    assert fire["alert_id"] != res["alert_id"]
    assert fire == make_alert(status="firing", **kw)  # type: ignore[arg-type]
    assert tuple(fire) == schemas.ALERT_FIELDS


def test_segment_string_roundtrip() -> None:
    segs = {"country": "DE", "odd": "a=b,c%d"}
    s = segment_string(segs, ["odd", "country"])
    assert s.startswith("country=DE,odd=")
    assert parse_segment_string(s) == segs


def test_dead_letter_truncation() -> None:
    d = make_dead_letter(Rejection("oversize_message", "", "big"), b"x" * 70_000, topic="t",
                         partition=1, offset=2, received_at=1.0)  # fmt: skip
    assert d["raw_truncated"] and len(d["raw"]) == 65_536
    d = make_dead_letter(Rejection("wrong_type", "x", "y"), {"a": float("nan")}, topic="t",
                         partition=1, offset=2)  # fmt: skip
    assert d["raw"] == '{"a":null}' and not d["raw_truncated"]
    d = make_dead_letter(Rejection("wrong_type", "x", "y"), {1: object()}, topic="t",
                         partition=1, offset=2)  # fmt: skip
    assert d["raw"].startswith("{1: <object")


# -- JSON Schema agreement ----------------------------------------------------------------

jsonschema = pytest.importorskip("jsonschema")
referencing = pytest.importorskip("referencing")

SCHEMA_NAMES = [
    "inference_event", "label_event", "envelope", "alert", "metrics", "drift_event", "outcome", "dlq",
    "comparison",
]  # fmt: skip


def _validator(name: str) -> object:
    from referencing.jsonschema import DRAFT202012

    docs = {n: json.loads((SCHEMA_DIR / f"{n}.schema.json").read_text()) for n in SCHEMA_NAMES}
    registry = referencing.Registry().with_resources(
        (d["$id"], DRAFT202012.create_resource(d)) for d in docs.values()
    )
    cls = jsonschema.Draft202012Validator
    cls.check_schema(docs[name])
    return cls(docs[name], registry=registry)


def schema_ok(name: str, obj: object) -> bool:
    return bool(_validator(name).is_valid(obj))  # type: ignore[attr-defined]


def doc_examples() -> list[tuple[str, object]]:
    text = (ROOT / "docs" / "wire-contract.md").read_text()
    found = re.findall(r"<!-- example: (\w+) -->\s*```json\n(.*?)```", text, re.S)
    return [(name, json.loads(body)) for name, body in found]


def test_doc_has_examples_for_every_schema() -> None:
    assert {n for n, _ in doc_examples()} == set(SCHEMA_NAMES)


@pytest.mark.parametrize(("name", "example"), doc_examples())
def test_doc_examples_valid(name: str, example: dict) -> None:
    assert schema_ok(name, example)
    if name in ("inference_event", "label_event", "envelope"):
        kind = "label" if name == "label_event" else "prediction"
        events, bad = decode_message(orjson.dumps(example), kind, now=NOW)  # type: ignore[arg-type]
        assert events and not bad
        for e in events:
            assert schema_ok(f"{kind if kind == 'label' else 'inference'}_event", e.to_wire())
    if name == "dlq":
        assert tuple(example) == schemas.DLQ_FIELDS


def test_builders_validate_against_schemas() -> None:
    p = pred(prediction={"value": 3.0})
    lab = validate_label({"prediction_id": "p1", "timestamp": 1.8e9, "value": 5.0}, now=NOW)
    assert isinstance(p, Prediction) and isinstance(lab, Label)
    out = make_outcome(p, lab)
    assert out["abs_error"] == 2.0 and schema_ok("outcome", out)
    assert schema_ok("metrics", make_metrics(
        model_id="m", model_version="", segment="", window_start=0.0, window_end=60.0,
        task="binary", metrics={"accuracy": 1.0}, counts={"accuracy": 3}))  # fmt: skip
    assert schema_ok("drift_event", make_drift_event(
        model_id="m", model_version="", partition=0, detector="ddm", kind="warning",
        direction=None, position=10, window_start=0.0, window_end=1.0, detected_at=1.0))  # fmt: skip
    dl = make_dead_letter(Rejection("not_utf8", "", "x"), b"\xff", topic="t", partition=0, offset=0)
    assert schema_ok("dlq", dl)


@pytest.mark.parametrize(
    "bad",
    [
        {**BASE, "prediction": {"score": True}},
        {**BASE, "timestamp": 946684799},
        {**BASE, "features": {"a": [1]}},
        {**BASE, "prediction_id": ""},
        {**BASE, "prediction": {}},
        {**BASE, "status": "failed"},
        {**BASE, "status": "ok", "error_code": "E1"},
        {**BASE, "error_code": ""},
        {**BASE, "error_code": "E" * 65},
    ],
)
def test_schema_rejects_what_validator_rejects(bad: dict) -> None:
    assert isinstance(validate_prediction(bad, now=NOW), Rejection)
    assert not schema_ok("inference_event", bad)
