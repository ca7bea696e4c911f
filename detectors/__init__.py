"""Pure, state-serialisable metric accumulators, quantile sketches and drift detectors.

No I/O here: every object updates from numpy arrays, merges with its peers, and
round-trips through ``to_state()`` / ``from_state()``: JSON-safe dicts of plain data, which
restore without executing anything (river's detectors included: ``riverstate``).
"""

from .cbpe import CBPEAccumulator, estimation_error
from .comparison import (
    Comparison,
    compare_binary,
    compare_means,
    compare_proportions,
    compare_regression,
)
from .datadrift import DriftConfig, DriftResult, DriftThresholds, compare_features, compare_profiles
from .drift import (
    DETECTORS,
    DetectorAlarm,
    DetectorBank,
    DetectorStateError,
    ErrorStreamDetector,
    make_detector,
)
from .fairness import FairnessRule, FairnessViolation, GroupRates
from .metrics import BinaryAccumulator, MulticlassAccumulator, RegressionAccumulator, ScoreSummary
from .policy import DEFAULT_BANK_CONFIG, AlarmPolicy, PolicyDecision
from .profile import FeatureProfile, Profile, load_records
from .quality import QualityResult, QualityThresholds, check_quality
from .ranking import RankingAccumulator
from .sketch import QuantileSketch

__all__ = [
    "DEFAULT_BANK_CONFIG",
    "DETECTORS",
    "AlarmPolicy",
    "BinaryAccumulator",
    "DetectorAlarm",
    "DriftConfig",
    "DriftResult",
    "DriftThresholds",
    "DetectorBank",
    "DetectorStateError",
    "ErrorStreamDetector",
    "FeatureProfile",
    "MulticlassAccumulator",
    "PolicyDecision",
    "Profile",
    "QualityResult",
    "QualityThresholds",
    "QuantileSketch",
    "RegressionAccumulator",
    "ScoreSummary",
    "check_quality",
    "compare_features",
    "compare_profiles",
    "load_records",
    "make_detector",
    "CBPEAccumulator",
    "Comparison",
    "FairnessRule",
    "FairnessViolation",
    "GroupRates",
    "RankingAccumulator",
    "compare_binary",
    "compare_means",
    "compare_proportions",
    "compare_regression",
    "estimation_error",
]
