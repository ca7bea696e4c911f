"""Pure, state-serialisable metric accumulators, quantile sketches and drift detectors.

No I/O here: every object updates from numpy arrays, merges with its peers, and
round-trips through ``to_state()`` / ``from_state()`` (JSON-safe dicts) and pickle.
"""

from .drift import DETECTORS, DetectorAlarm, DetectorBank, ErrorStreamDetector, make_detector
from .metrics import BinaryAccumulator, MulticlassAccumulator, RegressionAccumulator, ScoreSummary
from .policy import DEFAULT_BANK_CONFIG, AlarmPolicy, PolicyDecision
from .sketch import QuantileSketch

__all__ = [
    "DEFAULT_BANK_CONFIG",
    "DETECTORS",
    "AlarmPolicy",
    "BinaryAccumulator",
    "DetectorAlarm",
    "DetectorBank",
    "ErrorStreamDetector",
    "MulticlassAccumulator",
    "PolicyDecision",
    "QuantileSketch",
    "RegressionAccumulator",
    "ScoreSummary",
    "make_detector",
]
