"""Detector state as data: river's own bytes and river run directly are the references.

- ADWIN's fields decoded from river's bincode bytes encode back to the very same bytes, on
  many streams (binary, regression-style floats, non-finite values, empty, right after a drift).
- A detector restored from JSON state, at any point of a stream, alarms exactly where the same
  river detector fed the whole stream directly does.
- Old pickle state is refused without being unpickled; malformed state raises
  DetectorStateError (never a Rust panic); a river whose private layout differs is refused.
"""

from __future__ import annotations

import base64
import importlib.metadata
import json
import pickle
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river.drift import ADWIN
from river.drift.binary import DDM, EDDM

import driftline.detectors.drift as drift_module
from driftline.detectors import DetectorBank, DetectorStateError
from driftline.detectors.riverstate import (
    RIVER_PIN,
    adwin_decode,
    adwin_encode,
    check_river_layout,
    detector_from_state,
    detector_to_state,
)

CLASSES = {"adwin": ADWIN, "ddm": DDM, "eddm": EDDM}


def _json(x: Any) -> Any:
    """Through strict JSON (no NaN/Infinity tokens), as a changelog record would be."""
    return json.loads(json.dumps(x, allow_nan=False))


def _streams() -> list[tuple[str, dict[str, Any], list[float]]]:
    rng = np.random.default_rng(2024)
    out: list[tuple[str, dict[str, Any], list[float]]] = []
    for seed in range(6):
        r = np.random.default_rng(seed)
        p0 = r.uniform(0.02, 0.3)
        p1 = p0 + r.choice([-1, 1]) * 0.2 if p0 > 0.2 else p0 + 0.2
        n = int(r.integers(2000, 6000))
        binary = (r.random(n) < np.where(np.arange(n) < n // 2, p0, p1)).astype(float)
        out.append((f"binary{seed}", {}, binary.tolist()))
        reg = np.abs(np.concatenate([r.normal(0, 1, n // 2), r.normal(r.uniform(1.5, 3), r.uniform(0.5, 3), n - n // 2)]))
        out.append((f"regression{seed}", {"delta": float(r.choice([0.002, 0.01, 0.1]))}, reg.tolist()))
    params = {"delta": 0.05, "clock": 1, "max_buckets": 2, "min_window_length": 3, "grace_period": 4}
    out.append(("small-buckets", params, (rng.random(3000) * np.repeat([1.0, 5.0, 0.5], 1000)).tolist()))
    out.append(("huge-and-tiny", {"clock": 7}, (rng.standard_normal(3000) * np.repeat([1e-9, 1e9], 1500)).tolist()))
    out.append(("non-finite", {}, [0.0, 1.0, float("inf"), 0.5] * 100 + [float("nan")] + [1.0] * 200))
    return out


STREAMS = _streams()


@pytest.mark.parametrize("name,params,stream", STREAMS, ids=[s[0] for s in STREAMS])
def test_adwin_bytes_round_trip_through_named_fields(name: str, params: dict[str, Any], stream: list[float]) -> None:
    det = ADWIN(**params)
    checked = drifts = 0
    raw = det._helper.__getstate__()
    assert adwin_encode(*_json(adwin_decode(raw))) == raw  # empty
    for i, x in enumerate(stream):
        det.update(x)
        if det.drift_detected or i % 97 == 0:
            raw = det._helper.__getstate__()
            p, w = adwin_decode(raw)
            back = adwin_encode(*_json([p, w]))
            if name == "non-finite" and any(v != v for v in (det.total, det.variance)):
                # NaN payload bits are not kept (the sign of river's NaN is not data); the value is.
                assert adwin_decode(back) == (p, w)
            else:
                assert back == raw, (name, i)
            assert (w["width"], w["n_detections"]) == (det.width, det.n_detections)
            checked += 1
            drifts += det.drift_detected
    assert checked > 4
    if not name.startswith("non-finite"):
        assert drifts, "every stream here has a change ADWIN finds: the right-after-a-drift case is covered"


@settings(max_examples=150, deadline=None)
@given(
    # Finite sums: the NaN that an overflow makes has sign bits that are not kept (see above).
    values=st.lists(st.floats(-1e100, 1e100), max_size=400),
    clock=st.integers(1, 40), max_buckets=st.integers(1, 7), min_window_length=st.integers(1, 12),
    grace_period=st.integers(0, 30), delta=st.floats(1e-6, 0.5),
)
def test_adwin_bytes_round_trip_property(values: list[float], clock: int, max_buckets: int,
                                         min_window_length: int, grace_period: int, delta: float) -> None:
    det = ADWIN(delta=delta, clock=clock, max_buckets=max_buckets, min_window_length=min_window_length,
                grace_period=grace_period)
    for i, x in enumerate(values):
        det.update(x)
        if i % 50 == 0 or det.drift_detected or i == len(values) - 1:
            raw = det._helper.__getstate__()
            assert adwin_encode(*_json(adwin_decode(raw))) == raw


def _direct(det: Any, stream: list[float]) -> list[tuple[int, str]]:
    out = []
    for i, x in enumerate(stream):
        det.update(x)
        if det.drift_detected:
            out.append((i, "drift"))
        elif getattr(det, "warning_detected", False):
            out.append((i, "warning"))
    return out


def _restored_every(kind: str, params: dict[str, Any], stream: list[float], splits: set[int]) -> list[tuple[int, str]]:
    det, out = CLASSES[kind](**params), []
    for i, x in enumerate(stream):
        if i in splits:
            det = detector_from_state(kind, _json(detector_to_state(kind, det)), CLASSES[kind])
        det.update(x)
        if det.drift_detected:
            out.append((i, "drift"))
        elif getattr(det, "warning_detected", False):
            out.append((i, "warning"))
    return out


@pytest.mark.parametrize("kind,params,seed", [
    ("adwin", {}, 0), ("adwin", {"delta": 0.01, "clock": 5}, 1), ("ddm", {}, 2), ("ddm", {"warm_start": 100}, 3),
    ("eddm", {}, 4), ("eddm", {"alpha": 0.8, "beta": 0.75}, 5),
])
def test_restored_detector_alarms_like_river_direct(kind: str, params: dict[str, Any], seed: int) -> None:
    """Restores right after every alarm (the detector resets on its next update), and at random
    points; the updates and flags at every index equal river's, fed without interruption."""
    rng = np.random.default_rng(seed)
    stream = (rng.random(8000) < np.repeat([0.1, 0.35, 0.05, 0.3], 2000)).astype(float).tolist()
    expected = _direct(CLASSES[kind](**params), stream)
    assert any(k == "drift" for _, k in expected)
    splits = {i + 1 for i, _ in expected} | set(rng.integers(0, 8000, 40).tolist()) | {0}
    assert _restored_every(kind, params, stream, splits) == expected


def test_regression_adwin_restored_alarms_like_river_direct() -> None:
    rng = np.random.default_rng(9)
    stream = np.abs(np.concatenate([rng.normal(0, 1, 4000), rng.normal(1.0, 2.0, 4000)])).tolist()
    stream[1234] = float("inf")  # a non-finite error must not break the state
    expected = _direct(ADWIN(delta=0.01), stream)
    assert _restored_every("adwin", {"delta": 0.01}, stream, set(range(0, 8000, 333)) | {1235}) == expected


def test_fresh_state_is_strict_json_and_keeps_river_types() -> None:
    for kind, cls in CLASSES.items():
        det = detector_from_state(kind, _json(detector_to_state(kind, cls())), cls)
        fresh = cls()
        assert {k: type(v) for k, v in vars(det).items() if k != "_helper"} == {
            k: type(v) for k, v in vars(fresh).items() if k != "_helper"}, kind
    assert detector_to_state("ddm", DDM())["ps_min"] == "inf"  # river starts it at float("inf")
    assert detector_to_state("eddm", EDDM())["p2s_prime_max"] == -1  # and this at the int -1


def test_bank_state_records_format_and_river_version_and_restores() -> None:
    rng = np.random.default_rng(1)
    stream = (rng.random(6000) < np.repeat([0.1, 0.3], 3000)).astype(float)
    cfg = {"adwin": {}, "ddm": {}, "eddm": {"alpha": 0.8, "beta": 0.75}}
    ref, bank = DetectorBank(cfg), DetectorBank(cfg)
    expected = ref.update_many(stream)
    got = bank.update_many(stream[:3100])
    state = _json(bank.to_state())
    assert state["format"] == 2 and state["river"] == importlib.metadata.version("river")
    assert set(state["detectors"]["adwin"]["window"]) >= {"total", "variance", "width", "tick", "buckets"}
    bank = DetectorBank.from_state(state)
    assert _json(bank.to_state()) == state  # a restored bank writes what it read
    got += bank.update_many(stream[3100:])
    assert got == expected and bank.n == 6000


def test_to_state_is_cached_until_values_are_fed() -> None:
    bank = DetectorBank({"adwin": {}, "ddm": {}})
    bank.update_many([0.0, 1.0] * 50)
    first = bank.to_state()
    assert bank.to_state() is first
    bank.update_many([])
    assert bank.to_state() is first
    bank.update_many([1.0] * 10)
    second = bank.to_state()
    assert second is not first and second["n"] == 110
    fresh = DetectorBank.from_state(_json(second))
    assert fresh.detectors["adwin"].width == bank.detectors["adwin"].width == 110  # type: ignore[attr-defined]


# ---- refused state ----------------------------------------------------------------------------
RAN: list[str] = []


def _record(what: str) -> None:
    RAN.append(what)


class _Payload:
    def __reduce__(self) -> tuple[Any, ...]:
        return (_record, ("unpickled",))


def test_old_pickle_state_is_refused_without_unpickling() -> None:
    blob = pickle.dumps({"adwin": _Payload()})
    pickle.loads(blob)
    assert RAN == ["unpickled"]  # the payload is live: unpickling it would run code
    RAN.clear()
    old = {"config": {"adwin": {}}, "n": 5, "in_warning": {"adwin": False},
           "detectors": base64.b64encode(blob).decode("ascii")}
    with pytest.raises(DetectorStateError, match="old pickle format.*DRIFTLINE_APP_ID"):
        DetectorBank.from_state(old)
    assert RAN == []


@pytest.mark.parametrize("fmt", [1, 3, "2", None])
def test_unknown_format_is_refused(fmt: Any) -> None:
    state = _json(DetectorBank({"ddm": {}}).to_state())
    state["format"] = fmt
    with pytest.raises(DetectorStateError, match="unsupported"):
        DetectorBank.from_state(state)


def _adwin_state() -> dict[str, Any]:
    bank = DetectorBank({"adwin": {}})
    bank.update_many(np.random.default_rng(0).random(2000).tolist())
    return _json(bank.to_state())


@pytest.mark.parametrize("damage", [
    lambda s: s["detectors"]["adwin"]["window"].update(width=1999.0),
    lambda s: s["detectors"]["adwin"]["window"]["buckets"][0]["totals"].append(0.5),
    lambda s: s["detectors"]["adwin"]["window"]["buckets"][-1].update(totals=[], variances=[]),
    lambda s: s["detectors"]["adwin"]["window"].update(buckets=[]),
    lambda s: s["detectors"]["adwin"]["window"].update(total="__import__('os')"),
    lambda s: s["detectors"]["adwin"]["window"].update(tick=2**40),
    lambda s: s["detectors"]["adwin"]["params"].update(max_buckets=-1),
    lambda s: s["detectors"]["adwin"]["params"].update(extra=1),
    lambda s: s["detectors"].update(ddm=s["detectors"]["adwin"]),
    lambda s: s["detectors"]["adwin"].pop("drift_detected"),
    lambda s: s.update(n="12"),
])
def test_malformed_state_raises_state_error(damage: Any) -> None:
    state = _adwin_state()
    DetectorBank.from_state(state)  # intact, it loads
    damage(state)
    with pytest.raises(DetectorStateError):
        DetectorBank.from_state(state)


def test_malformed_ddm_eddm_state_raises_state_error() -> None:
    s = _json(DetectorBank({"ddm": {}, "eddm": {}}).to_state())
    s["detectors"]["ddm"]["p"] = {"n": 1.0}
    with pytest.raises(DetectorStateError, match="ddm p"):
        DetectorBank.from_state(s)
    s = _json(DetectorBank({"ddm": {}, "eddm": {}}).to_state())
    s["detectors"]["eddm"]["n"] = 1.5
    with pytest.raises(DetectorStateError, match="eddm n"):
        DetectorBank.from_state(s)


# ---- when river's internals change --------------------------------------------------------------
class _GrownDDM(DDM):
    """As if a river release added a field to DDM's state."""

    def _reset(self) -> None:
        super()._reset()
        self._n_seen = 0


class _LongerHelper:
    """As if a river release appended a field to AdaptiveWindowing's bytes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getstate__(self) -> bytes:
        return self.inner.__getstate__() + b"\x00" * 8

    def __setstate__(self, raw: bytes) -> None:
        self.inner.__setstate__(raw[:-8])

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _ChangedADWIN(ADWIN):
    def _reset(self) -> None:
        super()._reset()
        self._helper = _LongerHelper(self._helper)


def test_installed_river_layout_is_the_known_one() -> None:
    check_river_layout(CLASSES)  # raises otherwise


def test_pyproject_pins_the_river_releases_this_layout_is_known_for() -> None:
    import pathlib
    import tomllib

    from packaging.specifiers import SpecifierSet

    root = pathlib.Path(__file__).resolve().parents[1]
    worker = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]["worker"]
    assert f"river{RIVER_PIN}" in worker
    assert importlib.metadata.version("river") in SpecifierSet(RIVER_PIN)


@pytest.mark.parametrize("classes,what", [
    ({**CLASSES, "ddm": _GrownDDM}, "_n_seen"),
    ({**CLASSES, "adwin": _ChangedADWIN}, "8 bytes left over"),
])
def test_changed_river_layout_is_refused_with_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, classes: dict[str, type], what: str
) -> None:
    state = _json(DetectorBank({"adwin": {}, "ddm": {}}).to_state())
    with pytest.raises(DetectorStateError, match=what) as err:
        check_river_layout(classes)
    msg = str(err.value)
    assert f"river {importlib.metadata.version('river')}" in msg and f"river{RIVER_PIN}" in msg
    monkeypatch.setattr(drift_module, "river_detector_classes", lambda: classes)
    with pytest.raises(DetectorStateError, match=what):
        DetectorBank.from_state(state)
    with pytest.raises(DetectorStateError, match=what):
        DetectorBank({"ddm": {}}).to_state()


def test_worker_exits_with_ex_config_on_detector_state_error() -> None:
    """The worker must not restart-loop on state it can never read: exit 78 with the reason."""
    from worker_harness import run_halted_step

    run = run_halted_step("from driftline.detectors import DetectorBank",
                          "DetectorBank.from_state({'config': {'ddm': {}}, 'n': 1, 'in_warning': {}, 'detectors': 'gASV'})")
    assert run.returncode == 78, run.stderr
    assert "refusing the recovered detector state" in run.stderr and "DRIFTLINE_APP_ID" in run.stderr


def test_adwin_decode_refuses_bytes_of_another_layout() -> None:
    det = ADWIN()
    for x in np.random.default_rng(4).random(500).tolist():
        det.update(x)
    raw = det._helper.__getstate__()
    for bad in (b"", raw[:10], raw[:-1], raw + b"\x00", raw[:12] + (2**40).to_bytes(8, "little") + raw[20:]):
        with pytest.raises(DetectorStateError, match="layout"):
            adwin_decode(bad)
