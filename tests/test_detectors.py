"""DetectorBank against river's detectors fed directly, one value at a time."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from river.drift import ADWIN
from river.drift.binary import DDM, EDDM

from driftline.detectors import DetectorAlarm, DetectorBank, ErrorStreamDetector, make_detector


def _binary_stream(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.random(5000) < 0.1, rng.random(5000) < 0.3]).astype(float)


def _abs_error_stream(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.abs(np.concatenate([rng.normal(0, 1.0, 5000), rng.normal(0.8, 1.5, 5000)]))


def _direct(detector: ErrorStreamDetector, stream: np.ndarray) -> tuple[list[int], list[int]]:
    """Drift indices and warning-zone entries of a river detector fed directly."""
    drifts, warnings, in_warning = [], [], False
    for i, x in enumerate(stream.tolist()):
        detector.update(x)
        if detector.drift_detected:
            drifts.append(i)
            in_warning = False
        elif hasattr(detector, "warning_detected"):
            if detector.warning_detected and not in_warning:
                warnings.append(i)
            in_warning = detector.warning_detected
    return drifts, warnings


def _feed_random_chunks(bank: DetectorBank, stream: np.ndarray, seed: int) -> list[DetectorAlarm]:
    rng = np.random.default_rng(seed)
    alarms, i = [], 0
    while i < stream.size:
        k = int(rng.integers(1, 700))
        alarms += bank.update_many(stream[i : i + k])
        i += k
    return alarms


def _of(alarms: list[DetectorAlarm], name: str, kind: str) -> list[int]:
    return [a.position for a in alarms if a.detector == name and a.kind == kind]


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_bank_matches_river_direct_binary(seed: int) -> None:
    stream = _binary_stream(seed)
    bank = DetectorBank({"adwin": {}, "ddm": {}, "eddm": {}})
    alarms = _feed_random_chunks(bank, stream, seed)
    assert bank.n == stream.size
    assert [a.position for a in alarms] == sorted(a.position for a in alarms)
    for name, det in (("adwin", ADWIN()), ("ddm", DDM()), ("eddm", EDDM())):
        drifts, warnings = _direct(det, stream)
        assert _of(alarms, name, "drift") == drifts, name
        assert _of(alarms, name, "warning") == warnings, name
    # The real drift at 5,000 is found, upward, by ADWIN.
    up = [a for a in alarms if a.detector == "adwin" and a.direction == "up" and a.position >= 5000]
    assert up and up[0].estimate_after > up[0].estimate_before  # type: ignore[operator]


@pytest.mark.parametrize("seed", [0, 1])
def test_bank_matches_river_direct_regression_adwin(seed: int) -> None:
    stream = _abs_error_stream(seed)
    bank = DetectorBank({"adwin": {"delta": 0.001}})
    alarms = _feed_random_chunks(bank, stream, seed + 100)
    drifts, _ = _direct(ADWIN(delta=0.001), stream)
    assert _of(alarms, "adwin", "drift") == drifts and drifts
    assert any(a.direction == "up" and a.position >= 5000 for a in alarms)


def test_adwin_direction_down_when_error_falls() -> None:
    rng = np.random.default_rng(3)
    stream = np.concatenate([rng.random(3000) < 0.4, rng.random(3000) < 0.05]).astype(float)
    alarms = DetectorBank({"adwin": {}}).update_many(stream)
    after = [a for a in alarms if a.position >= 3000]
    assert after and after[0].direction == "down"


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_constant_stream_raises_nothing(value: float) -> None:
    # EDDM only looks at errors (x == 1): all zeros never touches its statistics, and
    # all ones gives a constant distance of 1 (zero variance), so it never alarms either.
    bank = DetectorBank({"adwin": {}, "ddm": {}, "eddm": {}})
    assert bank.update_many(np.full(20_000, value)) == []


def test_state_round_trip_mid_stream_gives_identical_alarms() -> None:
    stream = _binary_stream(7)
    reference = DetectorBank({"adwin": {}, "ddm": {}, "eddm": {}})
    expected = reference.update_many(stream)
    bank = DetectorBank({"adwin": {}, "ddm": {}, "eddm": {}})
    got = bank.update_many(stream[:4321])
    for _ in range(2):  # a restored bank's state restores too
        bank = DetectorBank.from_state(orjson.loads(orjson.dumps(bank.to_state())))
    got += bank.update_many(stream[4321:])
    assert got == expected
    assert bank.n == stream.size


@pytest.mark.parametrize("seed", [0, 1])
def test_restart_after_every_chunk_equals_river_direct(seed: int) -> None:
    """A worker restart after every batch (state through JSON bytes, as in the changelog):
    the alarms equal river's detectors fed the whole stream directly."""
    stream = _binary_stream(seed)
    cfg = {"adwin": {}, "ddm": {}, "eddm": {}}
    rng = np.random.default_rng(seed + 50)
    bank, alarms, i = DetectorBank(cfg), [], 0
    while i < stream.size:
        k = int(rng.integers(1, 700))
        alarms += bank.update_many(stream[i : i + k])
        bank = DetectorBank.from_state(orjson.loads(orjson.dumps(bank.to_state())))
        i += k
    for name, det in (("adwin", ADWIN()), ("ddm", DDM()), ("eddm", EDDM())):
        drifts, warnings = _direct(det, stream)
        assert _of(alarms, name, "drift") == drifts and drifts, name
        assert _of(alarms, name, "warning") == warnings, name


def test_regression_adwin_restart_equals_river_direct() -> None:
    stream = _abs_error_stream(3)
    bank, alarms = DetectorBank({"adwin": {"delta": 0.001}}), []
    for lo in range(0, stream.size, 613):
        alarms += bank.update_many(stream[lo : lo + 613])
        bank = DetectorBank.from_state(orjson.loads(orjson.dumps(bank.to_state())))
    drifts, _ = _direct(ADWIN(delta=0.001), stream)
    assert _of(alarms, "adwin", "drift") == drifts and drifts


def test_make_detector_defaults_and_overrides() -> None:
    assert isinstance(make_detector("adwin", {}), ADWIN)
    assert make_detector("ddm", {}).drift_threshold == DDM().drift_threshold  # type: ignore[attr-defined]
    eddm = make_detector("eddm", {"alpha": 0.8, "beta": 0.75})
    assert (eddm.alpha, eddm.beta) == (0.8, 0.75)  # type: ignore[attr-defined]
    assert isinstance(eddm, ErrorStreamDetector)
    with pytest.raises(ValueError, match="unknown detector"):
        make_detector("kswin", {})
    with pytest.raises(ValueError):
        DetectorBank({})


def test_accepts_python_sequences() -> None:
    stream = _binary_stream(1)
    a = DetectorBank({"ddm": {}}).update_many(stream.tolist())
    b = DetectorBank({"ddm": {}}).update_many(stream)
    assert a == b and a


def _direct_estimates(stream: np.ndarray) -> list[tuple[int, float, float]]:
    det, out = ADWIN(), []
    for i, x in enumerate(stream.tolist()):
        before = det.estimation
        det.update(x)
        if det.drift_detected:
            out.append((i, before, det.estimation))
    return out


@pytest.mark.parametrize("public_only", [False, True])
def test_adwin_estimates_equal_river_estimation(
    monkeypatch: pytest.MonkeyPatch, public_only: bool
) -> None:
    """The fast path reads ADWIN's window getters; the fallback its public total/width."""
    import driftline.detectors.drift as drift_module

    if public_only:
        monkeypatch.setattr(drift_module, "_window", drift_module._PublicWindow)
    stream = _binary_stream(2)
    alarms = _feed_random_chunks(DetectorBank({"adwin": {}}), stream, 5)
    got = [(a.position, a.estimate_before, a.estimate_after) for a in alarms]
    assert got == _direct_estimates(stream) and got


def test_detectors_load_without_river_drift_init_and_river_still_works_for_others() -> None:
    """A fresh interpreter: building a bank must not import scipy/sklearn/pandas through
    ``river.drift/__init__``, and a later ``from river.drift import KSWIN`` must still work."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from detectors import DetectorBank\n"
        "bank = DetectorBank({'adwin': {}, 'ddm': {}, 'eddm': {}})\n"
        "bank.update_many([0.0, 1.0, 0.0, 1.0])\n"
        "print(sorted(m for m in ('sklearn', 'pandas', 'river.drift.kswin') if m in sys.modules))\n"
        "from river.drift import KSWIN, ADWIN\n"
        "print(KSWIN.__name__, ADWIN is type(bank.detectors['adwin']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["[]", "KSWIN True"]
