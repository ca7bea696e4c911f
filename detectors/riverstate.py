"""river's ADWIN, DDM and EDDM state as plain data: no pickle, nothing executed on restore.

A detector's state is a JSON-safe dict of its parameters and fields, named as in river.
Restoring builds the detector from its class (chosen from a fixed table, never from a name
in the data) and assigns the fields; the result gives later detections identical to the
detector that was saved (``tests/test_detectors.py``, ``tests/test_riverstate.py``).

What is stored (river 0.26.1)
-----------------------------
- DDM: ``params`` (warm_start, warning_threshold, drift_threshold), the two flags, the error
  rate ``p`` (river ``stats.Mean``: ``n``, ``mean``), ``p_min``, ``s_min``, ``ps_min``.
- EDDM: ``params`` (warm_start, alpha, beta), the two flags, ``error_distances`` (river
  ``stats.Var``: ``ddof``, ``n``, ``mean``, ``m2`` = its ``_S``), ``n``, ``last_error``,
  ``n_errors``, ``p2s_prime_max``.
- ADWIN: ``params`` (delta, clock, max_buckets, min_window_length, grace_period), the drift
  flag and ``window``, the fields of river's Rust ``AdaptiveWindowing`` (``rust_src/adwin.rs``):
  ``total``, ``variance``, ``width``, ``total_width``, ``n_buckets``, ``max_n_buckets``,
  ``tick``, ``n_detections`` and ``buckets``, where ``buckets[i]`` lists the ``totals`` and
  ``variances`` of the summaries of 2**i values each, oldest first (a higher ``i`` holds older
  values; the unused, zeroed slots river allocates are not stored). river exposes that struct
  only as bincode bytes (``__getstate__`` / ``__setstate__``, a data decoder): this module reads
  those bytes into the fields and writes them back, byte for byte (:func:`adwin_decode`,
  :func:`adwin_encode`).

Floats are kept exactly (JSON's shortest round-trip repr); the non-finite ones JSON lacks
(DDM's initial ``ps_min`` is infinite; a NaN error reaches ADWIN's totals) are the strings
"inf", "-inf", "nan" (a NaN's sign and payload bits are not kept; no arithmetic sees them).

When river's internals change
-----------------------------
The fields above are river's private attributes and the byte layout of a Rust struct; any
river release may change them. Before a ``DetectorBank`` writes or restores state it checks,
once per process, that the installed river has the layout this module knows
(:func:`check_river_layout`):
DDM, EDDM and their ``Mean``/``Var`` have exactly the attributes listed above, and an ADWIN
fed a fixed stream (with a drift) encodes to the very bytes :func:`adwin_encode` makes from the
decoded fields, and continues identically after a restore. If not, it raises
:class:`DetectorStateError` naming the installed river version: install the river that
``pyproject.toml`` pins (:data:`RIVER_PIN`) or update this module, and test it. Each state
records the river version that wrote it (for diagnosis); the layout check, not the version
string, decides whether it can be restored.
"""

from __future__ import annotations

import functools
import math
import struct
from typing import Any

__all__ = [
    "RIVER_PIN",
    "DetectorStateError",
    "adwin_decode",
    "adwin_encode",
    "check_river_layout",
    "detector_from_state",
    "detector_to_state",
    "river_version",
]


#: The river releases whose private layout this module knows (pyproject.toml's pin, checked by a test).
RIVER_PIN = ">=0.26.1,<0.27"


class DetectorStateError(ValueError):
    """Detector state this Driftline cannot write or restore; the message says how to recover."""


RESET_HINT = (
    "To recover, start from empty state: give the worker a new DRIFTLINE_APP_ID (a new consumer "
    "group and new changelog topics; it reads its input topics from the earliest retained "
    "offset), or stop the workers and delete this app id's changelog topics."
)

PARAMS: dict[str, tuple[str, ...]] = {
    "adwin": ("delta", "clock", "max_buckets", "min_window_length", "grace_period"),
    "ddm": ("warm_start", "warning_threshold", "drift_threshold"),
    "eddm": ("warm_start", "alpha", "beta"),
}

# The attributes river 0.26 gives each object: the layout check compares them with a fresh one's.
_ATTRS = {
    "adwin": {"_drift_detected", "_helper", *PARAMS["adwin"]},
    "ddm": {"_drift_detected", "_warning_detected", "_p", "_p_min", "_s_min", "_ps_min", *PARAMS["ddm"]},
    "eddm": {"_drift_detected", "_warning_detected", "_error_distances", "_n", "_last_error",
             "_n_errors", "_p2s_prime_max", *PARAMS["eddm"]},
    "Mean": {"n", "_mean"},
    "Var": {"ddof", "mean", "_S"},
}


@functools.cache
def river_version() -> str:
    import river

    return str(river.__version__)


# ---- plain values ---------------------------------------------------------------------------
_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def _jf(x: float) -> float | str:
    """A float as JSON can hold it: itself, or "inf" / "-inf" / "nan"."""
    if math.isfinite(x):
        return x
    return "nan" if x != x else ("inf" if x > 0 else "-inf")


def _jopt(x: float | None) -> float | str | None:
    return None if x is None else _jf(x)


def _jfs(xs: list[float]) -> list[Any]:
    # A finite sum means every term is finite (inf and nan propagate): one C loop on the usual path.
    return xs if math.isfinite(sum(xs)) else [_jf(x) for x in xs]


def _float(v: Any, what: str) -> float:
    if type(v) is float:
        return v
    if type(v) is int:
        return float(v)
    if type(v) is str and v in _NONFINITE:
        return _NONFINITE[v]
    raise DetectorStateError(f"detector state: {what} must be a number, got {v!r}")


def _int(v: Any, what: str) -> int:
    if type(v) is int:
        return v
    raise DetectorStateError(f"detector state: {what} must be an integer, got {v!r}")


def _number(v: Any, what: str) -> int | float:
    """An int stays an int (EDDM's initial ``p2s_prime_max`` is the int -1), a float a float."""
    return v if type(v) is int else _float(v, what)


def _bool(v: Any, what: str) -> bool:
    if type(v) is bool:
        return v
    raise DetectorStateError(f"detector state: {what} must be true or false, got {v!r}")


def _opt_float(v: Any, what: str) -> float | None:
    return None if v is None else _float(v, what)


def _fields(d: Any, keys: tuple[str, ...] | set[str], what: str) -> dict[str, Any]:
    if not isinstance(d, dict) or set(d) != set(keys):
        got = sorted(d) if isinstance(d, dict) else type(d).__name__
        raise DetectorStateError(f"detector state: {what} must have the fields {sorted(keys)}, got {got}")
    return d


# ---- ADWIN: river's Rust AdaptiveWindowing as bincode (1.x defaults: little-endian, fixed-width
# integers, usize as u64, a Vec as its u64 length then its items) ----------------------------------
# struct AdaptiveWindowing { delta f64, clock i32, max_buckets usize, min_window_length f64,
#   grace_period f64, total f64, variance f64, width f64, total_width f64, n_buckets i32,
#   max_n_buckets i32, tick i32, n_detections i32, bucket_list Vec<Bucket> }
_HEAD = struct.Struct("<diQddddddiiiiQ")  # ... and len(bucket_list)
# struct Bucket { max_size usize, current_idx usize, totals Vec<f64>, variances Vec<f64> }
_BUCKET = struct.Struct("<QQQ")  # max_size, current_idx, len(totals)
_U64 = struct.Struct("<Q")
# The Python class wraps it: struct RsAdaptiveWindowing { inner, delta f64, clock i32,
#   max_buckets usize, min_window_length i32, grace_period i32 }
_TAIL = struct.Struct("<diQii")
_WINDOW_SCALARS = ("total", "variance", "width", "total_width")
_WINDOW_COUNTERS = ("n_buckets", "max_n_buckets", "tick", "n_detections")
_WINDOW_KEYS = (*_WINDOW_SCALARS, *_WINDOW_COUNTERS, "buckets")


@functools.cache
def _bucket_struct(cap: int) -> struct.Struct:
    """One serialised ``Bucket`` whose vectors hold ``cap`` (max_buckets + 1) slots."""
    return struct.Struct(f"<QQQ{cap}dQ{cap}d")


def _layout_error(detail: str) -> DetectorStateError:
    return DetectorStateError(
        f"river {river_version()} keeps detector state in a layout this Driftline does not know "
        f"(it knows river 0.26's): {detail}. Install the river version pyproject.toml pins "
        f"(river{RIVER_PIN}), or update driftline.detectors.riverstate for this river. {RESET_HINT}"
    )


def adwin_decode(raw: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(params, window)`` from the bytes of ``ADWIN()._helper.__getstate__()``.

    Raises :class:`DetectorStateError` when the bytes do not have the known layout, or hold
    something :func:`adwin_encode` would not write back identically.

    >>> from river.drift import ADWIN
    >>> det = ADWIN(clock=1)
    >>> for x in [0.0, 1.0, 1.0]:
    ...     det.update(x)
    >>> params, window = adwin_decode(det._helper.__getstate__())
    >>> params
    {'delta': 0.002, 'clock': 1, 'max_buckets': 5, 'min_window_length': 5, 'grace_period': 10}
    >>> window["total"], window["width"], window["tick"], window["buckets"]
    (2.0, 3.0, 3, [{'totals': [0.0, 1.0, 1.0], 'variances': [0.0, 0.0, 0.0]}])
    >>> adwin_encode(params, window) == det._helper.__getstate__()
    True
    """
    try:
        (delta, clock, max_buckets, mwl, grace, total, variance, width, total_width,
         n_buckets, max_n_buckets, tick, n_detections, n_lists) = _HEAD.unpack_from(raw, 0)
        off = _HEAD.size
        cap = max_buckets + 1
        if (16 * cap + 32) * n_lists > len(raw):
            raise _layout_error(f"{n_lists} buckets of {cap} slots cannot fit in {len(raw)} bytes")
        one = _bucket_struct(cap)
        end = off + n_lists * one.size
        buckets = []
        for i, b in enumerate(one.iter_unpack(raw[off:end])):
            # max_size, current_idx, len(totals), *totals, len(variances), *variances
            k = b[1]
            if b[0] != max_buckets or b[2] != cap or b[3 + cap] != cap or k > max_buckets:
                raise _layout_error(f"bucket {i} holds max_size={b[0]}, current_idx={k}, {b[2]} totals "
                                    f"and {b[3 + cap]} variances with max_buckets={max_buckets}")
            if any(b[3 + k : 3 + cap]) or any(b[4 + cap + k :]):
                raise _layout_error(f"bucket {i} has non-zero values past its {k} summaries")
            buckets.append({"totals": _jfs(list(b[3 : 3 + k])), "variances": _jfs(list(b[4 + cap : 4 + cap + k]))})
        off = end
        t_delta, t_clock, t_max_buckets, t_mwl, t_grace = _TAIL.unpack_from(raw, off)
        off += _TAIL.size
    except struct.error as exc:
        raise _layout_error(f"{len(raw)} bytes do not parse ({exc})") from None
    if off != len(raw):
        raise _layout_error(f"{len(raw) - off} bytes left over")
    if (t_delta, t_clock, t_max_buckets, float(t_mwl), float(t_grace)) != (delta, clock, max_buckets, mwl, grace):
        raise _layout_error("the wrapper's parameters differ from the window's")
    params = {"delta": delta, "clock": clock, "max_buckets": max_buckets,
              "min_window_length": t_mwl, "grace_period": t_grace}
    window = {"total": _jf(total), "variance": _jf(variance), "width": _jf(width),
              "total_width": _jf(total_width), "n_buckets": n_buckets, "max_n_buckets": max_n_buckets,
              "tick": tick, "n_detections": n_detections, "buckets": buckets}
    return params, window


def _adwin_params(d: Any) -> dict[str, Any]:
    p = _fields(d, PARAMS["adwin"], "adwin params")
    return {"delta": _float(p["delta"], "adwin delta"), "clock": _int(p["clock"], "adwin clock"),
            "max_buckets": _int(p["max_buckets"], "adwin max_buckets"),
            "min_window_length": _int(p["min_window_length"], "adwin min_window_length"),
            "grace_period": _int(p["grace_period"], "adwin grace_period")}


def adwin_encode(params: dict[str, Any], window: dict[str, Any]) -> bytes:
    """The bincode bytes river's ``AdaptiveWindowing.__setstate__`` reads, from decoded fields.

    The window is checked for the invariants river keeps (so a restored window cannot make
    river's Rust code index out of bounds): ``width`` values in all, every bucket within
    ``max_buckets`` summaries and the oldest one not empty. (``n_buckets`` is not a count of
    summaries: river adds one per merge and never subtracts the two merged.)
    """
    p = _adwin_params(params)
    w = _fields(window, _WINDOW_KEYS, "adwin window")
    max_buckets = p["max_buckets"]
    if max_buckets < 1:
        raise DetectorStateError(f"detector state: adwin max_buckets must be >= 1, got {max_buckets}")
    cap = max_buckets + 1
    scalars = [_float(w[k], f"adwin {k}") for k in _WINDOW_SCALARS]
    counters = [_int(w[k], f"adwin {k}") for k in _WINDOW_COUNTERS]
    buckets = w["buckets"]
    if not isinstance(buckets, list) or not 1 <= len(buckets) <= 63:  # river shifts a u64 by the index
        raise DetectorStateError("detector state: adwin buckets must be a list of 1 to 63 buckets")
    vec = struct.Struct(f"<{cap}d")
    body = []
    values = 0
    for i, b in enumerate(buckets):
        b = _fields(b, ("totals", "variances"), f"adwin bucket {i}")
        totals, variances = b["totals"], b["variances"]
        if not isinstance(totals, list) or not isinstance(variances, list) or len(totals) != len(variances):
            raise DetectorStateError(f"detector state: adwin bucket {i} needs two lists of one length")
        k = len(totals)
        if k > max_buckets or (k == 0 and i == len(buckets) - 1 and i > 0):
            raise DetectorStateError(f"detector state: adwin bucket {i} holds {k} summaries")
        pad = [0.0] * (cap - k)
        body.append(_BUCKET.pack(max_buckets, k, cap))
        body.append(vec.pack(*[_float(x, "adwin total") for x in totals], *pad))
        body.append(_U64.pack(cap))
        body.append(vec.pack(*[_float(x, "adwin variance") for x in variances], *pad))
        values += k << i
    if scalars[2] != values:
        raise DetectorStateError(
            f"detector state: adwin window says width={scalars[2]}, but its buckets hold {values} values")
    try:
        head = _HEAD.pack(p["delta"], p["clock"], max_buckets, float(p["min_window_length"]),
                          float(p["grace_period"]), *scalars, *counters, len(buckets))
        tail = _TAIL.pack(p["delta"], p["clock"], max_buckets, p["min_window_length"], p["grace_period"])
    except struct.error as exc:
        raise DetectorStateError(f"detector state: adwin value out of range ({exc})") from None
    return b"".join([head, *body, tail])


# ---- one detector -----------------------------------------------------------------------------
def detector_to_state(name: str, det: Any) -> dict[str, Any]:
    """JSON-safe state of river's detector ``name`` ("adwin", "ddm", "eddm")."""
    params = {k: getattr(det, k) for k in PARAMS[name]}
    if name == "adwin":
        helper_params, window = adwin_decode(det._helper.__getstate__())
        if helper_params != params:  # would restore a window under other settings than it ran with
            raise _layout_error(f"the window's parameters {helper_params} are not ADWIN's {params}")
        return {"params": params, "drift_detected": det._drift_detected, "window": window}
    if name == "ddm":
        p = det._p
        return {"params": params, "drift_detected": det._drift_detected,
                "warning_detected": det._warning_detected, "p": {"n": _jf(p.n), "mean": _jf(p._mean)},
                "p_min": _jopt(det._p_min), "s_min": _jopt(det._s_min), "ps_min": _jf(det._ps_min)}
    if name == "eddm":
        v = det._error_distances
        return {"params": params, "drift_detected": det._drift_detected,
                "warning_detected": det._warning_detected,
                "error_distances": {"ddof": v.ddof, "n": _jf(v.mean.n), "mean": _jf(v.mean._mean),
                                    "m2": _jf(v._S)},
                "n": det._n, "last_error": det._last_error, "n_errors": det._n_errors,
                "p2s_prime_max": _jf(det._p2s_prime_max)}
    raise DetectorStateError(f"detector state: unknown detector {name!r}")


_STATE_KEYS = {
    "adwin": ("params", "drift_detected", "window"),
    "ddm": ("params", "drift_detected", "warning_detected", "p", "p_min", "s_min", "ps_min"),
    "eddm": ("params", "drift_detected", "warning_detected", "error_distances", "n", "last_error",
             "n_errors", "p2s_prime_max"),
}


def detector_from_state(name: str, d: Any, cls: type) -> Any:
    """Build river's detector ``name`` of class ``cls`` from :func:`detector_to_state` output."""
    if name not in _STATE_KEYS:
        raise DetectorStateError(f"detector state: unknown detector {name!r}")
    d = _fields(d, _STATE_KEYS[name], f"{name} state")
    if name == "adwin":
        params = _adwin_params(d["params"])
        raw = adwin_encode(params, d["window"])
        det = cls(**params)
        det._helper.__setstate__(raw)
        det._drift_detected = _bool(d["drift_detected"], "adwin drift_detected")
        return det
    p = _fields(d["params"], PARAMS[name], f"{name} params")
    if name == "ddm":
        det = cls(**{k: _number(p[k], f"ddm {k}") for k in PARAMS["ddm"]})
        mean = _fields(d["p"], ("n", "mean"), "ddm p")
        det._p.n = _float(mean["n"], "ddm p.n")
        det._p._mean = _float(mean["mean"], "ddm p.mean")
        det._p_min = _opt_float(d["p_min"], "ddm p_min")
        det._s_min = _opt_float(d["s_min"], "ddm s_min")
        det._ps_min = _float(d["ps_min"], "ddm ps_min")
    else:
        det = cls(**{k: _number(p[k], f"eddm {k}") for k in PARAMS["eddm"]})
        var = _fields(d["error_distances"], ("ddof", "n", "mean", "m2"), "eddm error_distances")
        dist = det._error_distances
        dist.ddof = _int(var["ddof"], "eddm error_distances.ddof")
        dist.mean.n = _float(var["n"], "eddm error_distances.n")
        dist.mean._mean = _float(var["mean"], "eddm error_distances.mean")
        dist._S = _float(var["m2"], "eddm error_distances.m2")
        det._n = _int(d["n"], "eddm n")
        det._last_error = _int(d["last_error"], "eddm last_error")
        det._n_errors = _int(d["n_errors"], "eddm n_errors")
        det._p2s_prime_max = _number(d["p2s_prime_max"], "eddm p2s_prime_max")
    det._drift_detected = _bool(d["drift_detected"], f"{name} drift_detected")
    det._warning_detected = _bool(d["warning_detected"], f"{name} warning_detected")
    return det


# ---- the layout check -----------------------------------------------------------------------
def check_river_layout(classes: dict[str, type]) -> None:
    """Raise :class:`DetectorStateError` unless the installed river keeps the state this module knows.

    ``classes`` maps "adwin", "ddm", "eddm" to river's classes. Cached per process after it passes.
    """
    if not _layout_known(tuple(sorted(classes.items()))):
        raise _layout_error(_layout_problem(classes) or "unknown")


@functools.cache
def _layout_known(items: tuple[tuple[str, type], ...]) -> bool:
    return _layout_problem(dict(items)) is None


def _layout_problem(classes: dict[str, type]) -> str | None:
    """What in the installed river differs from the layout this module knows; None if nothing."""
    from river import stats

    fresh = {name: cls() for name, cls in classes.items()}
    for name, det in fresh.items():
        if set(vars(det)) != _ATTRS[name]:
            return f"{type(det).__name__} has the attributes {sorted(vars(det))}, expected {sorted(_ATTRS[name])}"
    stat_objs: list[tuple[str, Any, type, str]] = []
    if "ddm" in fresh:
        stat_objs.append(("DDM._p", fresh["ddm"]._p, stats.Mean, "Mean"))
    if "eddm" in fresh:
        dist = fresh["eddm"]._error_distances
        stat_objs += [("EDDM._error_distances", dist, stats.Var, "Var"), ("Var.mean", dist.mean, stats.Mean, "Mean")]
    for where, obj, cls, key in stat_objs:
        if type(obj) is not cls or set(vars(obj)) != _ATTRS[key]:
            return f"{where} is a {type(obj).__name__} with the attributes {sorted(vars(obj))}"
    if "adwin" in classes:
        return _adwin_probe(classes["adwin"])
    return None


def _adwin_probe(cls: type) -> str | None:
    """Feed an ADWIN a fixed stream with two changes; restore a second one from the fields decoded
    between them: the bytes must round-trip exactly and both must find the second change alike."""
    params = {"delta": 0.05, "clock": 3, "max_buckets": 3, "min_window_length": 4, "grace_period": 7}
    stream = ([0.25 * (i % 3) for i in range(200)] + [2.0 + 0.5 * (i % 5) for i in range(250)]
              + [0.5 * (i % 4) for i in range(300)])
    a = cls(**params)
    for x in stream[:400]:
        a.update(x)
    raw = a._helper.__getstate__()
    try:
        got_params, window = adwin_decode(raw)
        b = cls(**params)
        b._helper.__setstate__(adwin_encode(got_params, window))
    except DetectorStateError as exc:
        return str(exc)
    h = a._helper
    if got_params != params:
        return f"decoded parameters {got_params}, expected {params}"
    if (window["width"], window["total"], window["variance"], window["n_detections"]) != (
            h.get_width(), h.get_total(), h.get_variance(), h.get_n_detections()):
        return "decoded width/total/variance/n_detections differ from the window's getters"
    if len(window["buckets"]) < 3 or window["tick"] != 400 - 207:  # ADWIN starts afresh after a drift
        return f"the probe stream left {len(window['buckets'])} buckets and tick {window['tick']}"
    if b._helper.__getstate__() != raw:
        return "the bytes encoded from the decoded fields differ from river's"
    drifts_a, drifts_b = [], []
    for i, x in enumerate(stream[400:], start=400):
        a.update(x)
        b.update(x)
        if a.drift_detected:
            drifts_a.append(i)
        if b.drift_detected:
            drifts_b.append(i)
    if drifts_a != drifts_b or not drifts_a:
        return f"after the second change a restored window detected at {drifts_b}, the original at {drifts_a}"
    return None
