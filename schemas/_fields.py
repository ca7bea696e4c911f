"""Field checks shared by the event validators (internal; import from ``schemas``).

Every check returns the normalised value or a :class:`Rejection`; none raises on
ordinary bad input. Fast paths test exact types; subclasses and numpy scalars
take a slower path that still normalises them to plain Python values, so that
what passes validation can always be serialised by orjson.
"""

from __future__ import annotations

import numbers
import re
from datetime import datetime
from typing import Any, NamedTuple

#: Longest id, model version, feature name, segment name/value or class name (characters).
MAX_ID_LEN = 256
#: Most features per event.
MAX_FEATURES = 1_000
#: Longest string feature value (characters).
MAX_FEATURE_STR = 1_024
#: Most segment entries per event.
MAX_SEGMENTS = 32
#: Most classes in a multiclass ``scores`` object.
MAX_CLASSES = 1_000
#: Longest serving ``error_code`` (characters).
MAX_ERROR_CODE_LEN = 64
#: The values of an inference event's serving ``status``.
STATUSES = ("ok", "error")
#: Earliest accepted timestamp: 2000-01-01T00:00:00Z.
MIN_TIMESTAMP = 946_684_800.0
#: How far in the future (seconds after ``now``) a timestamp may be.
MAX_FUTURE_S = 86_400.0
#: Deepest nesting a valid message has (envelope > events > event > prediction > scores);
#: deeper values only ever appear where a scalar is expected and are rejected there.
MAX_DEPTH = 8
# orjson keeps integers in [-2**63, 2**64) as int and fails to serialise anything wider.
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1

_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})\Z", re.ASCII
)


class Rejection(NamedTuple):
    """Why an event or message was refused.

    Attributes
    ----------
    code : str
        Reason code (snake_case), e.g. ``missing_field``; see ``docs/wire-contract.md``, "Reason codes".
    field : str
        Dotted path of the offending field inside the event (``prediction.score``,
        ``features.age``), ``events[3]`` for an envelope entry, ``""`` for the whole message.
    detail : str
        Human-readable sentence.

    Examples
    --------
    >>> Rejection("missing_field", "prediction_id", "prediction_id is required").code
    'missing_field'
    """

    code: str
    field: str
    detail: str


def _tname(v: object) -> str:
    return "null" if v is None else type(v).__name__


def bad_id(v: object, field: str, optional: bool = False) -> Rejection:
    """Explain why ``v`` is not a valid id string (slow path only)."""
    if v is None:
        return Rejection("missing_field", field, f"{field} is required")
    if type(v) is not str:
        return Rejection("wrong_type", field, f"expected a string, got {_tname(v)}")
    if len(v) > MAX_ID_LEN:
        return Rejection("too_long", field, f"{len(v)} characters > limit {MAX_ID_LEN}")
    return Rejection("out_of_range", field, "must not be empty")


def _slow_float(v: object, field: str) -> float | Rejection:
    if v is None:
        return Rejection("missing_field", field, f"{field} is required")
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return Rejection("wrong_type", field, f"expected a number, got {_tname(v)}")
    try:
        x = float(v)
    except OverflowError:
        return Rejection("out_of_range", field, "number beyond the float range")
    except Exception as exc:  # a numbers.Real whose __float__ fails
        return Rejection("wrong_type", field, f"not convertible to float: {exc!r:.100}")
    if x - x != 0.0:
        return Rejection("not_finite", field, f"{x!r} is not finite")
    return x


def as_float(v: object, field: str) -> float | Rejection:
    """Return ``v`` as a finite float, or a Rejection (bools are not numbers)."""
    t = type(v)
    if t is float:
        if v - v == 0.0:  # type: ignore[operator]  # false for NaN and +-inf
            return v  # type: ignore[return-value]
    elif t is int and _INT_MIN <= v <= _INT_MAX:  # type: ignore[operator]
        return float(v)  # type: ignore[arg-type]
    return _slow_float(v, field)


def parse_timestamp(v: object, now: float, field: str = "timestamp") -> float | Rejection:
    """Epoch seconds (int/float) or an RFC 3339 string with offset -> epoch seconds."""
    if type(v) is str:
        if _RFC3339.match(v) is None:  # type: ignore[arg-type]
            return Rejection("bad_timestamp", field, f"not RFC 3339 with offset: {v[:64]!r}")  # type: ignore[index]
        try:
            x = datetime.fromisoformat(v.upper().replace(" ", "T")).timestamp()  # type: ignore[attr-defined]
        except ValueError as exc:
            return Rejection("bad_timestamp", field, f"invalid date or time: {exc}")
    else:
        r = as_float(v, field)
        if type(r) is not float:
            return r
        x = r
    if MIN_TIMESTAMP <= x <= now + MAX_FUTURE_S:
        return x
    return Rejection(
        "bad_timestamp", field, f"{x!r} outside [2000-01-01, now + 1 day] (epoch seconds)"
    )


def class_label(v: object, field: str) -> str | int | Rejection:
    """A class label: str (<= 256 chars) or int (64-bit); bools become 0/1."""
    t = type(v)
    if t is str:
        if len(v) <= MAX_ID_LEN:  # type: ignore[arg-type]
            return v  # type: ignore[return-value]
        return Rejection("too_long", field, f"{len(v)} characters > limit {MAX_ID_LEN}")  # type: ignore[arg-type]
    if t is bool:
        return int(v)  # type: ignore[call-overload]
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        i = int(v)
        if _INT_MIN <= i <= _INT_MAX:
            return i
        return Rejection("out_of_range", field, "integer label wider than 64 bits")
    if isinstance(v, str):  # str subclass: normalise to plain str
        return class_label(str(v), field)
    if v is None:
        return Rejection("missing_field", field, f"{field} is required")
    return Rejection("wrong_type", field, f"expected a string or integer, got {_tname(v)}")


def _key_error(k: object, where: str) -> Rejection:
    if type(k) is not str:
        return Rejection("wrong_type", where, f"names must be strings, got {_tname(k)}")
    if len(k) > MAX_ID_LEN:
        return Rejection(
            "too_long", f"{where}.{k[:64]}", f"name has {len(k)} characters > {MAX_ID_LEN}"
        )
    return Rejection("out_of_range", where, "names must not be empty")


def _slow_feature(v: object, field: str) -> Any:
    """Normalise an unusual feature value (subclass, numpy scalar) or reject it."""
    if isinstance(v, bool):
        return bool(v)
    if isinstance(v, str):
        v = str(v)
        if len(v) > MAX_FEATURE_STR:
            return Rejection("too_long", field, f"{len(v)} characters > limit {MAX_FEATURE_STR}")
        return v
    if isinstance(v, numbers.Integral):
        i = int(v)
        return i if _INT_MIN <= i <= _INT_MAX else _slow_float(i, field)
    if isinstance(v, numbers.Real):
        return _slow_float(v, field)
    if isinstance(v, dict | list | tuple | set):
        return Rejection("too_deep", field, "feature values must be scalars, not containers")
    t = type(v)
    if t.__module__ == "numpy" and t.__name__ in ("bool", "bool_"):  # not a numbers.Number
        return bool(v)  # type: ignore[arg-type]
    return Rejection("wrong_type", field, f"expected number, string, bool or null, got {_tname(v)}")


def check_status(status: object, code: object) -> tuple[str | None, str | None] | Rejection:
    """The serving outcome of an inference event: ``status`` (``"ok"``/``"error"``, optional)
    and ``error_code`` (1..64 characters, optional). An ``error_code`` without a status means
    ``"error"``; with ``"ok"`` it is a contradiction.

    >>> check_status(None, "TIMEOUT"), check_status("ok", None)
    (('error', 'TIMEOUT'), ('ok', None))
    >>> check_status("failed", None).code, check_status("ok", "E1").code
    ('out_of_range', 'conflicting_fields')
    """
    if status is not None and status not in STATUSES:
        if not isinstance(status, str):
            return Rejection("wrong_type", "status", f'expected "ok" or "error", got {_tname(status)}')
        return Rejection("out_of_range", "status", f'{status[:64]!r} is not "ok" or "error"')
    if code is None:
        return (None if status is None else str(status)), None
    if not isinstance(code, str):
        return Rejection("wrong_type", "error_code", f"expected a string, got {_tname(code)}")
    if not code:
        return Rejection("out_of_range", "error_code", "must not be empty")
    if len(code) > MAX_ERROR_CODE_LEN:
        return Rejection("too_long", "error_code", f"{len(code)} characters > limit {MAX_ERROR_CODE_LEN}")
    if status == "ok":
        return Rejection("conflicting_fields", "error_code", 'an error_code goes with status "error", not "ok"')
    return "error", str(code)


def check_features(feats: object) -> dict[str, Any] | Rejection:
    """Check a ``features`` object; returns it unchanged when it is already clean."""
    if type(feats) is not dict:
        if not isinstance(feats, dict):
            return Rejection("wrong_type", "features", f"expected an object, got {_tname(feats)}")
        feats = dict(feats)
    if len(feats) > MAX_FEATURES:  # type: ignore[arg-type]
        return Rejection(
            "too_many_features", "features", f"{len(feats)} features > limit {MAX_FEATURES}"
        )  # type: ignore[arg-type]
    copy: dict[str, Any] | None = None
    for k, v in feats.items():  # type: ignore[attr-defined]
        if type(k) is not str or not 0 < len(k) <= MAX_ID_LEN:
            return _key_error(k, "features")
        t = type(v)
        if t is float:
            if v - v == 0.0:
                continue
            return Rejection("not_finite", f"features.{k}", f"{v!r} is not finite")
        if t is str:
            if len(v) <= MAX_FEATURE_STR:
                continue
            return Rejection(
                "too_long", f"features.{k}", f"{len(v)} characters > limit {MAX_FEATURE_STR}"
            )
        if (t is int and _INT_MIN <= v <= _INT_MAX) or t is bool or v is None:
            continue
        x = _slow_feature(v, f"features.{k}")
        if type(x) is Rejection:
            return x
        if copy is None:  # copy only on the rare path, never mutate the caller's dict
            copy = dict(feats)  # type: ignore[call-overload]
        copy[k] = x
    return feats if copy is None else copy  # type: ignore[return-value]


def check_segments(segs: object) -> dict[str, str] | Rejection:
    """Check a ``segments`` object: <= 32 string -> string entries of <= 256 chars."""
    if not isinstance(segs, dict):
        return Rejection("wrong_type", "segments", f"expected an object, got {_tname(segs)}")
    if len(segs) > MAX_SEGMENTS:
        return Rejection("too_long", "segments", f"{len(segs)} entries > limit {MAX_SEGMENTS}")
    for k, v in segs.items():
        if type(k) is not str or not 0 < len(k) <= MAX_ID_LEN:
            return _key_error(k, "segments")
        if type(v) is not str:
            if isinstance(v, dict | list):
                return Rejection("too_deep", f"segments.{k}", "segment values must be strings")
            return Rejection("wrong_type", f"segments.{k}", f"expected a string, got {_tname(v)}")
        if len(v) > MAX_ID_LEN:
            return Rejection(
                "too_long", f"segments.{k}", f"{len(v)} characters > limit {MAX_ID_LEN}"
            )
    return segs if type(segs) is dict else dict(segs)


def check_scores(sc: object) -> dict[str, float] | Rejection:
    """Check multiclass ``scores``: class name -> probability in [0, 1]; returns a new dict."""
    if not isinstance(sc, dict):
        return Rejection("wrong_type", "prediction.scores", f"expected an object, got {_tname(sc)}")
    if len(sc) > MAX_CLASSES:
        return Rejection(
            "too_long", "prediction.scores", f"{len(sc)} classes > limit {MAX_CLASSES}"
        )
    if not sc:
        return Rejection("out_of_range", "prediction.scores", "scores must not be empty")
    out: dict[str, float] = {}
    for k, v in sc.items():
        if type(k) is not str or not 0 < len(k) <= MAX_ID_LEN:
            return _key_error(k, "prediction.scores")
        if type(v) is float and 0.0 <= v <= 1.0:  # the common case: no field name built
            out[k] = v
            continue
        field = f"prediction.scores.{k}"
        if isinstance(v, dict | list):
            return Rejection("too_deep", field, "scores must be numbers")
        x = as_float(v, field)
        if type(x) is not float:
            return x  # type: ignore[return-value]
        if not 0.0 <= x <= 1.0:
            return Rejection("out_of_range", field, f"{x!r} not in [0, 1]")
        out[k] = x
    return out


#: Most item ids in a ranked list (``prediction.items``) or a feedback list.
MAX_ITEMS = 1_000
#: The lists a ``feedback`` object may carry; ``relevant`` is optional (absent = clicked | converted).
FEEDBACK_LISTS = ("clicked", "converted", "relevant")


def check_items(v: object, field: str, *, allow_empty: bool = False) -> list[str] | Rejection:
    """A list of item ids: <= 1,000 strings of 1..256 characters (rank order is kept)."""
    if type(v) is not list:
        if not isinstance(v, list | tuple):
            return Rejection("wrong_type", field, f"expected an array of item ids, got {_tname(v)}")
        v = list(v)
    if len(v) > MAX_ITEMS:  # type: ignore[arg-type]
        return Rejection("too_long", field, f"{len(v)} items > limit {MAX_ITEMS}")  # type: ignore[arg-type]
    if not v and not allow_empty:
        return Rejection("out_of_range", field, "a ranked list must not be empty")
    copy: list[str] | None = None
    for i, x in enumerate(v):  # type: ignore[arg-type]
        if type(x) is str and 0 < len(x) <= MAX_ID_LEN:
            continue
        if isinstance(x, str) and 0 < len(x) <= MAX_ID_LEN:  # str subclass: normalise
            if copy is None:
                copy = list(v)  # type: ignore[call-overload]
            copy[i] = str(x)
            continue
        where = f"{field}[{i}]"
        if isinstance(x, dict | list | tuple):
            return Rejection("too_deep", where, "item ids must be strings")
        return bad_id(x, where)
    return v if copy is None else copy  # type: ignore[return-value]


def check_item_scores(v: object, n_items: int) -> list[float] | Rejection:
    """Ranking ``prediction.scores``: one finite number per item, non-increasing (rank order)."""
    field = "prediction.scores"
    if not isinstance(v, list | tuple):
        return Rejection("wrong_type", field, f"expected an array of numbers, got {_tname(v)}")
    if len(v) != n_items:
        return Rejection("length_mismatch", field, f"{len(v)} scores for {n_items} items")
    out: list[float] = []
    for i, x in enumerate(v):
        if isinstance(x, dict | list | tuple):
            return Rejection("too_deep", f"{field}[{i}]", "scores must be numbers")
        f = as_float(x, f"{field}[{i}]")
        if type(f) is not float:
            return f  # type: ignore[return-value]
        if out and f > out[-1]:
            return Rejection(
                "out_of_range", f"{field}[{i}]", "scores must be non-increasing (rank order)"
            )
        out.append(f)
    return out


def check_feedback(v: object) -> dict[str, list[str]] | Rejection:
    """A ``feedback`` object: ``clicked``, ``converted`` (default ``[]``) and optional ``relevant``."""
    if not isinstance(v, dict):
        return Rejection("wrong_type", "feedback", f"expected an object, got {_tname(v)}")
    out: dict[str, list[str]] = {}
    for name in FEEDBACK_LISTS:
        raw = v.get(name)
        if raw is None:
            if name != "relevant":
                out[name] = []
            continue
        items = check_items(raw, f"feedback.{name}", allow_empty=True)
        if type(items) is Rejection:
            return items
        out[name] = items  # type: ignore[assignment]
    return out
