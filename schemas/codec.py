"""Kafka message codecs: envelopes and single events in, JSON bytes out.

Decoding never raises on input: a bad message, or a bad event inside an envelope,
comes back as a ``(Rejection, raw)`` pair for the dead-letter topic.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

import orjson

from driftline.schemas._fields import Rejection
from driftline.schemas.events import Label, Prediction, _label, _prediction

__all__ = [
    "MAX_EVENTS",
    "MAX_MESSAGE_BYTES",
    "MAX_RAW_BYTES",
    "decode_clean_event",
    "decode_message",
    "encode_envelope",
    "encode_event",
    "split_by_size",
]

#: Most events one envelope may carry; a longer envelope is rejected whole (``bad_envelope``).
MAX_EVENTS = 10_000
#: Default ``max_bytes`` of :func:`decode_message` (Kafka's default ``message.max.bytes`` is ~1 MB).
MAX_MESSAGE_BYTES = 1_048_576
#: How much of a bad message travels beside its rejection.
MAX_RAW_BYTES = 1_024

T = TypeVar("T")


def split_by_size(items: Sequence[T], limit: int, size: Callable[[T], int]) -> list[list[T]]:
    """Consecutive runs of ``items`` whose sizes add up to at most ``limit`` (one item at least).

    >>> split_by_size([b"abc", b"de", b"fghij", b"k"], 5, len)
    [[b'abc', b'de'], [b'fghij'], [b'k']]
    >>> split_by_size([], 5, len)
    [[]]
    """
    runs: list[list[T]] = [[]]
    total = 0
    for it in items:
        n = size(it)
        if runs[-1] and total + n > limit:
            runs.append([])
            total = 0
        runs[-1].append(it)
        total += n
    return runs


def _raw_prefix(value: object) -> object:
    """The first MAX_RAW_BYTES of a bad message (the object itself when not text)."""
    try:
        if isinstance(value, str):
            return value[:MAX_RAW_BYTES].encode("utf-8", "replace")[:MAX_RAW_BYTES]
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(memoryview(value).cast("B")[:MAX_RAW_BYTES])
    except Exception:  # an exotic buffer: keep the object rather than fail
        pass
    return value


def decode_message(
    value: bytes | None,
    kind: Literal["prediction", "label"],
    *,
    max_bytes: int = MAX_MESSAGE_BYTES,
    now: float | None = None,
) -> tuple[list[Prediction | Label], list[tuple[Rejection, object]]]:
    """Decode one Kafka message value (an envelope or a single event); never raises on input.

    Parameters
    ----------
    value : bytes or None
        The message value (``bytes``, ``bytearray``, ``memoryview`` or ``str``; ``None`` is
        a tombstone and is rejected).
    kind : {"prediction", "label"}
        Which event kind the topic carries. Any other value raises ``ValueError``
        (a programming error, not bad input).
    max_bytes : int
        Larger messages are rejected unparsed (``oversize_message``).
    now : float, optional
        Wall-clock epoch seconds for the future-timestamp check (default ``time.time()``).

    Returns
    -------
    events : list of Prediction or Label
        The valid events, in message order.
    rejections : list of (Rejection, raw)
        ``raw`` is the offending event object, or the first 1,024 bytes of the message
        when the message itself is bad (then ``events`` is empty).

    Examples
    --------
    >>> msg = encode_envelope([
    ...     {"prediction_id": "a", "timestamp": 1.8e9, "label": 1},
    ...     {"prediction_id": "b", "timestamp": 1.8e9, "label": 1, "value": 2.0}])
    >>> events, rejected = decode_message(msg, "label", now=1.8e9)
    >>> [e.prediction_id for e in events], [(r.code, r.field) for r, raw in rejected]
    (['a'], [('conflicting_fields', 'value')])
    >>> decode_message(b"{not json", "prediction")[1][0][0].code
    'malformed_json'
    >>> decode_message(b"", "label")[1][0][0].code, decode_message(None, "label")[1][0][0].code
    ('empty', 'empty')
    """
    if kind == "prediction":
        validate: Any = _prediction
    elif kind == "label":
        validate = _label
    else:
        raise ValueError(f"kind must be 'prediction' or 'label', not {kind!r}")
    try:
        return _decode(value, kind, validate, max_bytes, time.time() if now is None else now)
    except Exception as exc:  # safety net: never let one message stop a partition
        return [], [
            (Rejection("malformed_json", "", f"undecodable: {exc!r:.200}"), _raw_prefix(value))
        ]


_VALUE_TYPES = (bytes, bytearray, memoryview, str)


def decode_clean_event(value: object, kind: str, max_bytes: int, now: float) -> Prediction | Label | None:
    """The event of a single-event message that decodes and validates cleanly, else None.

    The single-event path's per-message cost (one call instead of three, no lists per message);
    on None, :func:`decode_message` gives the same message's full answer, rejections included.

    >>> decode_clean_event(b'{"prediction_id": "a", "timestamp": 1.8e9, "label": 1}', "label", 1000, 1.8e9)
    Label(prediction_id='a', model_id=None, timestamp=1800000000.0, label=1, value=None, feedback=None)
    >>> decode_clean_event(b'{"events": []}', "label", 1000, 1.8e9) is None
    True
    """
    if type(value) is not bytes or not 0 < len(value) <= max_bytes:
        return None
    try:
        doc = orjson.loads(value)
        if type(doc) is not dict or "events" in doc:
            return None
        if kind == "prediction":
            res: Any = _prediction(doc, now) if "prediction" in doc else None
        else:
            res = None if "prediction" in doc else _label(doc, now)
    except Exception:  # malformed or hostile: decode_message names the reason
        return None
    return None if type(res) is Rejection else res


def _decode(
    value: object, kind: str, validate: Any, max_bytes: int, now: float
) -> tuple[list[Any], list[tuple[Rejection, object]]]:
    if type(value) is not bytes:  # what consumers hand over; the rest is checked here
        if value is None:
            return [], [(Rejection("empty", "", "null message value (tombstone)"), None)]
        if not isinstance(value, _VALUE_TYPES):
            r = Rejection("wrong_type", "", f"message value must be bytes, got {type(value).__name__}")
            return [], [(r, value)]
    size = memoryview(value).nbytes if isinstance(value, memoryview) else len(value)
    if size == 0:
        return [], [(Rejection("empty", "", "empty message value"), b"")]
    if size > max_bytes:
        r = Rejection("oversize_message", "", f"{size} bytes > limit {max_bytes}")
        return [], [(r, _raw_prefix(value))]
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        msg = str(exc)
        if "UTF-8" in msg:
            code = "not_utf8"
        # orjson 3.9.15-3.11 say "recursion depth exceeded", 3.13 "depth limit exceeded".
        elif "depth limit" in msg or "recursion depth" in msg:
            code = "too_deep"
        else:
            code = "malformed_json"
        return [], [(Rejection(code, "", msg[:200]), _raw_prefix(value))]
    if type(doc) is not dict:
        r = Rejection("not_an_object", "", f"expected a JSON object, got {type(doc).__name__}")
        return [], [(r, _raw_prefix(value))]
    if "events" not in doc:
        items: list[Any] = [doc]
        envelope = False
    else:
        items = doc["events"]
        envelope = True
        if type(items) is not list:
            r = Rejection("bad_envelope", "events", "events must be an array")
            return [], [(r, _raw_prefix(value))]
        if len(items) > MAX_EVENTS:
            r = Rejection("bad_envelope", "events", f"{len(items)} events > limit {MAX_EVENTS}")
            return [], [(r, _raw_prefix(value))]
    out: list[Any] = []
    bad: list[tuple[Rejection, object]] = []
    is_pred = kind == "prediction"
    for i, ev in enumerate(items):
        if type(ev) is not dict:
            where = f"events[{i}]" if envelope else ""
            bad.append((Rejection("not_an_object", where, "an event must be an object"), ev))
            continue
        # An event of the other kind on this topic is a routing error, worth its own code.
        if is_pred:
            if "prediction" not in ev and ("label" in ev or "value" in ev or "feedback" in ev):
                bad.append(
                    (
                        Rejection(
                            "mixed_kinds", "prediction", "a label event on a prediction stream"
                        ),
                        ev,
                    )
                )
                continue
        elif "prediction" in ev:
            bad.append(
                (Rejection("mixed_kinds", "prediction", "an inference event on a label stream"), ev)
            )
            continue
        res = validate(ev, now)
        if type(res) is Rejection:
            bad.append((res, ev))
        else:
            out.append(res)
    return out, bad


def _default(o: object) -> Any:
    if isinstance(o, Prediction | Label):
        return o.to_wire()
    raise TypeError(f"Type is not JSON serializable: {type(o).__name__}")


def encode_event(event: dict[str, Any] | Prediction | Label) -> bytes:
    """Serialise one event (a contract dict, a :class:`Prediction` or a :class:`Label`).

    Raises ``TypeError`` (``orjson.JSONEncodeError``) for values JSON cannot carry
    (NaN is written as ``null``, as orjson does; validate first).

    Examples
    --------
    >>> encode_event({"prediction_id": "p1", "timestamp": 1.8e9, "label": 1})
    b'{"prediction_id":"p1","timestamp":1800000000.0,"label":1}'
    """
    return orjson.dumps(event, default=_default)


def encode_envelope(events: list[Any]) -> bytes:
    """Serialise events of one kind as an envelope ``{"events": [...]}``.

    Raises ``TypeError`` like :func:`encode_event`; does not check the 10,000-event limit.

    Examples
    --------
    >>> encode_envelope([{"prediction_id": "p1", "timestamp": 1.8e9, "value": 2.5}])
    b'{"events":[{"prediction_id":"p1","timestamp":1800000000.0,"value":2.5}]}'
    """
    return orjson.dumps({"events": events}, default=_default)
