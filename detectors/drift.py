"""Error-stream drift detectors (river's ADWIN, DDM, EDDM) behind one small bank.

A ``DetectorBank`` belongs to one (model, version): it feeds one stream of errors
(0/1 misclassifications, or absolute errors for ADWIN on a regressor) to several
named detectors, in order, one value at a time, exactly as river would be fed
directly, and reports what fired as ``DetectorAlarm`` records.

Facts this relies on (river 0.26.1; ``docs/architecture.md``, "Facts the design relies on"):

- ``update(x)`` returns None; ``drift_detected`` / ``warning_detected`` describe the
  last update only.
- A detector resets itself on the update *after* a drift, so the bank never resets
  one (that would reset twice and shift every later index).
- ADWIN fires when the error falls as well as when it rises; the bank compares
  ``estimation`` just before and just after the detecting update to tell them apart.
- A detector's state is its parameters and fields, as data (``driftline.detectors.riverstate``):
  restoring it runs nothing and gives identical later alarms.

State format
------------
``DetectorBank.to_state()`` is a JSON-safe dict: ``{"format": 2, "river": <the river version
that wrote it>, "config", "n", "in_warning", "detectors": {name: <riverstate's dict>}}``.
Format 1 (Driftline before this one) stored the detectors as base64(pickle); it is refused, not
unpickled, since unpickling runs whatever code the changelog topic holds. State that cannot be
restored raises :class:`DetectorStateError` saying why and how to start afresh (a new
``DRIFTLINE_APP_ID``, or deleting this app id's changelog topics). The check of river's private
layout, and what happens when a river upgrade changes it, is in ``riverstate``'s docstring.

Cost (2-core shared machine, river 0.26.1, best of 5): a bank of ADWIN + DDM + EDDM fed 10,000
errors (ADWIN holding 11 buckets; 1.9 kB of JSON) takes ~22-26 us for ``to_state()`` (the pickle
it replaces took ~24 us), ~55-65 us for ``from_state()``, ~100 us for the whole round trip
through orjson bytes. An unchanged bank's ``to_state()`` comes from a cache (~0.1 us); the first
call in a process also runs the river layout check once (~0.5 ms).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import types
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from .riverstate import (
    RESET_HINT,
    DetectorStateError,
    check_river_layout,
    detector_from_state,
    detector_to_state,
    river_version,
)

__all__ = [
    "DetectorAlarm",
    "DetectorBank",
    "DetectorStateError",
    "ErrorStreamDetector",
    "make_detector",
    "DETECTORS",
    "STATE_FORMAT",
]

DETECTORS = ("adwin", "ddm", "eddm")
STATE_FORMAT = 2  # of DetectorBank.to_state(); 1 was base64(pickle) and is refused


@runtime_checkable
class ErrorStreamDetector(Protocol):
    """What the bank needs from a detector; river's detectors fit unwrapped.

    ``warning_detected`` is optional (ADWIN has none); the bank reads it with ``getattr``.
    """

    def update(self, x: Any) -> Any: ...

    @property
    def drift_detected(self) -> bool: ...


def make_detector(name: str, params: dict[str, Any] | None = None) -> ErrorStreamDetector:
    """Build river's detector ``name`` ("adwin", "ddm", "eddm"); ``params`` override river's defaults.

    Examples
    --------
    >>> make_detector("eddm", {"alpha": 0.8, "beta": 0.75})
    EDDM (
      warm_start=30
      alpha=0.8
      beta=0.75
    )
    """
    try:
        cls = river_detector_classes()[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; expected one of {DETECTORS}") from None
    detector: ErrorStreamDetector = cls(**(params or {}))
    return detector


_RIVER_CLASSES = {
    "adwin": ("river.drift.adwin", "ADWIN"),
    "ddm": ("river.drift.binary.ddm", "DDM"),
    "eddm": ("river.drift.binary.eddm", "EDDM"),
}


@functools.cache
def river_detector_classes() -> dict[str, type]:
    """river's ADWIN, DDM and EDDM classes, imported without running ``river.drift/__init__``.

    That ``__init__`` also imports KSWIN, the datasets and the retraining wrapper, which pull in
    scipy, sklearn and pandas: ~140 MB of RSS in every worker for classes it never uses
    (measured: 180 MB after ``import river.drift``, 40 MB after these three modules).
    """
    _defer_river_drift_init()
    return {name: getattr(importlib.import_module(module), cls) for name, (module, cls) in _RIVER_CLASSES.items()}


def _defer_river_drift_init() -> None:
    """Register ``river.drift`` as a bare package whose ``__init__`` runs on first other use.

    Submodules import through its ``__path__`` alone. Any other name asked of it (``from
    river.drift import KSWIN`` in a caller's code) runs the real ``__init__`` into the same
    module object first, so river behaves as usual for everyone else.
    """
    if "river.drift" in sys.modules:
        return
    import river

    spec = importlib.util.find_spec("river.drift")
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return
    package = types.ModuleType("river.drift")
    package.__spec__ = spec
    package.__file__ = spec.origin
    package.__package__ = "river.drift"
    package.__path__ = list(spec.submodule_search_locations)
    loader = spec.loader

    def run_real_init(name: str) -> object:
        del package.__dict__["__getattr__"]
        loader.exec_module(package)
        try:
            return package.__dict__[name]
        except KeyError:
            raise AttributeError(f"module 'river.drift' has no attribute {name!r}") from None

    package.__dict__["__getattr__"] = run_real_init
    sys.modules["river.drift"] = package
    river.drift = package  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class DetectorAlarm:
    """One alarm raised by a named detector of a bank.

    ``position`` is the 0-based index of the triggering value among every value the
    bank was fed since it was created (state round trips keep counting). ``direction``
    is "up" when the detector's estimate of the error rose, "down" when it fell or stayed, and
    None when the detector has no estimate (DDM, EDDM). ``estimate_before`` /
    ``estimate_after`` are ADWIN's ``estimation`` around the triggering update.
    """

    detector: str
    kind: Literal["drift", "warning"]
    position: int
    direction: Literal["up", "down"] | None = None
    estimate_before: float | None = None
    estimate_after: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _PublicWindow:
    """Fallback when a detector has no river ``_helper``: its public total and width."""

    def __init__(self, det: Any) -> None:
        self.det = det

    def get_total(self) -> float:
        return float(self.det.total)

    def get_width(self) -> float:
        return float(self.det.width)


def _window(det: Any) -> Any:
    helper = getattr(det, "_helper", None)
    if hasattr(helper, "get_total") and hasattr(helper, "get_width"):
        return helper
    return _PublicWindow(det)


class DetectorBank:
    """Several named drift detectors fed by one error stream.

    Parameters
    ----------
    config
        Detector name -> river parameters, e.g. ``{"adwin": {}, "ddm": {}, "eddm": {}}``.
        Names are "adwin", "ddm", "eddm"; ``{}`` keeps river's defaults.

    Notes
    -----
    A "warning" alarm is raised only on the transition into the warning zone (the
    update where ``warning_detected`` turns True), not on every update inside it: a
    warning zone lasts hundreds of updates and would otherwise flood the alert path.
    A drift ends the zone (river clears or resets it), so the next warning is new.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(42)
    >>> errors = np.concatenate([rng.random(2000) < 0.1, rng.random(2000) < 0.4]).astype(float)
    >>> bank = DetectorBank({"adwin": {}, "ddm": {}})
    >>> alarms = bank.update_many(errors[:1000]) + bank.update_many(errors[1000:])
    >>> [(a.detector, a.kind, a.position, a.direction) for a in alarms if a.kind == "drift"]
    [('adwin', 'drift', 2079, 'up'), ('ddm', 'drift', 2293, None)]
    >>> bank.n
    4000
    """

    def __init__(self, config: dict[str, dict[str, Any]]) -> None:
        if not config:
            raise ValueError("config must name at least one detector")
        self.config = {name: dict(params) for name, params in config.items()}
        self.detectors: dict[str, ErrorStreamDetector] = {
            name: make_detector(name, params) for name, params in self.config.items()
        }
        self._in_warning = {name: False for name in self.detectors}
        self.n = 0
        self._state: tuple[int, dict[str, Any]] | None = None  # (n, to_state()) while unchanged

    def update_many(self, errors: Sequence[float] | np.ndarray) -> list[DetectorAlarm]:
        """Feed ``errors`` in order to every detector; return the alarms in stream order."""
        # Plain Python floats: river's per-value arithmetic is faster on them than on numpy scalars.
        values = errors.tolist() if isinstance(errors, np.ndarray) else list(errors)
        alarms: list[tuple[int, int, DetectorAlarm]] = []
        start = self.n
        for order, (name, det) in enumerate(self.detectors.items()):
            if hasattr(det, "estimation"):
                found = self._feed_estimating(name, det, values, start)
            else:
                found = self._feed_flagging(name, det, values, start)
            alarms.extend((a.position, order, a) for a in found)
        self.n = start + len(values)
        alarms.sort(key=lambda t: (t[0], t[1]))
        return [a for _, _, a in alarms]

    @staticmethod
    def _feed_estimating(
        name: str, det: ErrorStreamDetector, values: list[float], start: int
    ) -> list[DetectorAlarm]:
        """ADWIN-like detectors: direction from ``estimation`` around the drift update."""
        out: list[DetectorAlarm] = []
        update = det.update
        window = _window(det)
        get_total, get_width = window.get_total, window.get_width
        renew = False
        for i, x in enumerate(values):
            # estimation = total / width; river's property costs ~0.5 us, the helper's getters less.
            width = get_width()
            before = get_total() / width if width else 0.0
            update(x)
            if renew:
                # The update after a drift replaced the window object (river's _reset).
                window = _window(det)
                get_total, get_width = window.get_total, window.get_width
                renew = False
            if det.drift_detected:
                after = float(det.estimation)  # type: ignore[attr-defined]
                direction: Literal["up", "down"] = "up" if after > before else "down"
                out.append(DetectorAlarm(name, "drift", start + i, direction, float(before), after))
                renew = True
        return out

    def _feed_flagging(
        self, name: str, det: ErrorStreamDetector, values: list[float], start: int
    ) -> list[DetectorAlarm]:
        """DDM/EDDM-like detectors: drift flag, and a warning flag when they have one."""
        out: list[DetectorAlarm] = []
        update = det.update
        has_warning = hasattr(det, "warning_detected")
        in_warning = self._in_warning[name]
        for i, x in enumerate(values):
            update(x)
            if det.drift_detected:
                out.append(DetectorAlarm(name, "drift", start + i))
                # The detector resets on its next update: the warning zone is over.
                in_warning = False
            elif has_warning:
                warning = det.warning_detected  # type: ignore[attr-defined]
                if warning and not in_warning:
                    out.append(DetectorAlarm(name, "warning", start + i))
                in_warning = warning
        self._in_warning[name] = bool(in_warning)
        return out

    def to_state(self) -> dict[str, Any]:
        """JSON-safe state: the detectors' parameters and fields as data, plus the counters.

        The dict is cached until the next ``update_many`` that feeds values (partition records
        are written per batch, for every bank, touched or not): do not modify it.

        >>> bank = DetectorBank({"ddm": {}})
        >>> bank.update_many([0.0, 1.0, 0.0])
        []
        >>> state = bank.to_state()
        >>> state["format"], state["detectors"]["ddm"]["p"], state["detectors"]["ddm"]["ps_min"]
        (2, {'n': 3.0, 'mean': 0.333...}, 'inf')
        >>> DetectorBank.from_state(state).detectors["ddm"]._p.get() == bank.detectors["ddm"]._p.get()
        True
        """
        if self._state is not None and self._state[0] == self.n:
            return self._state[1]
        check_river_layout(river_detector_classes())
        state = {
            "format": STATE_FORMAT,
            "river": river_version(),
            "config": self.config,
            "n": self.n,
            "in_warning": dict(self._in_warning),
            "detectors": {name: detector_to_state(name, det) for name, det in self.detectors.items()},
        }
        self._state = (self.n, state)
        return state

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> DetectorBank:
        """Rebuild a bank; later alarms equal those of the bank that was saved.

        Nothing in ``d`` is executed or imported: detector classes come from a fixed table.
        Raises :class:`DetectorStateError` for the old pickle format, an unknown format, fields
        that do not fit, or an installed river whose private layout this code does not know.
        """
        fmt = d.get("format") if isinstance(d, dict) else None
        if fmt != STATE_FORMAT:
            if fmt is None and isinstance(d, dict) and isinstance(d.get("detectors"), str):
                raise DetectorStateError(
                    "detector bank state is in the old pickle format (Driftline before state format "
                    f"{STATE_FORMAT}): unsupported, and not unpickled, since unpickling runs code taken "
                    f"from the changelog topic. {RESET_HINT}")
            raise DetectorStateError(
                f"detector bank state format {fmt!r} is unsupported (this Driftline reads format "
                f"{STATE_FORMAT}). {RESET_HINT}")
        classes = river_detector_classes()
        check_river_layout(classes)
        try:
            config = {str(k): dict(v) for k, v in d["config"].items()}
            states = d["detectors"]
            if not isinstance(states, dict) or set(states) != set(config) or not set(config) <= set(DETECTORS):
                raise DetectorStateError(
                    f"detector bank state: detectors {sorted(states) if isinstance(states, dict) else states!r} "
                    f"do not match its config {sorted(config)}")
            bank = cls.__new__(cls)
            bank.config = config
            bank.detectors = {name: detector_from_state(name, states[name], classes[name]) for name in config}
            bank._in_warning = {name: bool(d["in_warning"].get(name, False)) for name in config}
            if type(d["n"]) is not int:
                raise DetectorStateError(f"detector bank state: n must be an integer, got {d['n']!r}")
            bank.n = d["n"]
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            if isinstance(exc, DetectorStateError):
                raise
            raise DetectorStateError(f"detector bank state does not fit format {STATE_FORMAT}: {exc!r}") from None
        bank._state = None
        return bank

    def __repr__(self) -> str:
        return f"DetectorBank({list(self.detectors)}, n={self.n})"
