"""Alerting policy: which detector alarms page someone, and how loudly (pure logic).

Rules (each alarm of a ``DetectorBank`` becomes one ``PolicyDecision``):

============================  =====================================================
alarm                         decision
============================  =====================================================
ADWIN drift, direction "up"   critical ``concept_drift`` alert
ADWIN drift, direction "down" recorded only: the error fell, nothing to fix
DDM drift                     critical; recorded only before position ``ddm_warmup``
DDM warning                   recorded only; warning when ``warning_alerts``
EDDM drift                    critical when corroborated (below); else as DDM warning
EDDM warning                  recorded only
============================  =====================================================

An EDDM drift is *corroborated* when an ADWIN-up drift, or a DDM drift past its
warm-up, of the same (model, version) came at most ``corroboration_window`` updates
before it (at the same position or earlier, in the same batch or an earlier one), or
within ``corroboration_seconds`` of event time when that is set and the caller passes
``now``. A DDM drift within its warm-up corroborates nothing.

Corroboration is causal on purpose: only alarms at or before the EDDM drift count, so a
decision depends on the stream up to that event and never on where a batch ends. A
worker that crashes and replays its input in different batches decides the same.

Why EDDM alone never pages (river 0.26.1, ``docs/architecture.md`` and ``tests/test_detectors_policy.py``
measurements): on a stationary 0/1 error stream with p = 0.3, river's EDDM defaults
(alpha 0.95, beta 0.9) raise ~17-29 drifts per 10k events; its own docstring settings
(alpha 0.8, beta 0.75) still ~0.9 per 10k at p = 0.3 and ~2.5 per 10k at p = 0.1, while
ADWIN raised none and DDM 0.23. On the p 0.1 -> 0.3 drift, ADWIN (delay ~118) and DDM
(~361) detect it anyway, so EDDM adds an early hint, not the evidence for a page.
``DEFAULT_BANK_CONFIG`` therefore uses the docstring settings for EDDM, and its warning
zone (entered ~1.4 times per 10k events at p = 0.3, ~3 at p = 0.1, even then) is recorded, not alerted.

Measured with ``DEFAULT_BANK_CONFIG`` and the default ``AlarmPolicy`` (river 0.26.1,
numpy seeds 0-29, 10k events per run, ``tests/test_detectors_policy.py``): on stationary
0/1 error streams, 0.27 critical decisions per 10k events at p = 0.1 (5 DDM drifts past
warm-up and 3 EDDM drifts they corroborated, in 4 of 30 runs) and 0.1 at p = 0.3 (3 DDM
drifts, 2 runs); ADWIN raised none. Without the DDM warm-up (``ddm_warmup=0``) that is
2.0 and 0.6: DDM drifts 1.0 and 0.37 times per 10k events, mostly within its first 1,000
updates. ``warning_alerts=True`` would add ~23 and ~25 warning alerts per 10k events (DDM
enters its warning zone ~21 and ~25 times), which is why it is off. On the p 0.1 -> 0.3
drift at 5,000 of 10,000, a critical decision follows the change in 30 of 30 runs, median
delay 119 updates (ADWIN first in 29 runs), with 0.23 critical false alarms per run before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .drift import DetectorAlarm

__all__ = ["AlarmPolicy", "PolicyDecision", "DEFAULT_BANK_CONFIG"]

Severity = Literal["critical", "warning"]

# The bank the policy was tuned for: river defaults, except EDDM (see the module docstring).
DEFAULT_BANK_CONFIG: dict[str, dict[str, Any]] = {
    "adwin": {},
    "ddm": {},
    "eddm": {"alpha": 0.8, "beta": 0.75},
}


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """What to do with one alarm: ``severity`` None means record it, raise no alert."""

    alarm: DetectorAlarm
    severity: Severity | None
    reason: str
    alert_type: str = "concept_drift"
    corroborated_by: DetectorAlarm | None = None

    @property
    def alert(self) -> bool:
        return self.severity is not None


class AlarmPolicy:
    """Maps detector alarms to alert severities, per (model, version).

    Parameters
    ----------
    corroboration_window
        Updates (bank positions) within which an ADWIN-up or DDM drift makes an
        EDDM drift critical.
    corroboration_seconds
        Optional event-time window with the same effect (needs ``now`` in ``decide``).
    ddm_warmup
        DDM drifts before this many updates are recorded only: DDM's statistics are
        cumulative and its false alarms come early (median first false alarm at
        update 76 with p 0.1, ``docs/architecture.md``). Measured on stationary streams, this
        removes most critical DDM false alarms (``tests/test_detectors_policy.py``).
    warning_alerts
        Whether DDM warning-zone entries and uncorroborated EDDM drifts raise
        ``warning`` alerts. Off by default: DDM enters its warning zone ~20-25 times
        per 10k events on a stationary stream; every alarm is still recorded.

    Examples
    --------
    >>> from driftline.detectors.drift import DetectorAlarm
    >>> policy = AlarmPolicy(corroboration_window=500)
    >>> key = ("churn", "v3")
    >>> [d.severity for d in policy.decide(key, [DetectorAlarm("eddm", "drift", 120)])]
    [None]
    >>> up = DetectorAlarm("adwin", "drift", 400, "up", 0.1, 0.3)
    >>> [d.severity for d in policy.decide(key, [up, DetectorAlarm("eddm", "drift", 610)])]
    ['critical', 'critical']
    >>> later = DetectorAlarm("adwin", "drift", 2500, "up", 0.1, 0.3)
    >>> [d.severity for d in policy.decide(key, [DetectorAlarm("eddm", "drift", 2400), later])]
    [None, 'critical']
    >>> down = DetectorAlarm("adwin", "drift", 900, "down", 0.3, 0.1)
    >>> [d.alert for d in policy.decide(key, [down])]
    [False]
    """

    def __init__(
        self,
        corroboration_window: int = 1000,
        corroboration_seconds: float | None = None,
        ddm_warmup: int = 1000,
        warning_alerts: bool = False,
    ) -> None:
        if corroboration_window < 0:
            raise ValueError(f"corroboration_window must be >= 0, got {corroboration_window!r}")
        if ddm_warmup < 0:
            raise ValueError(f"ddm_warmup must be >= 0, got {ddm_warmup!r}")
        self.corroboration_window = int(corroboration_window)
        self.corroboration_seconds = corroboration_seconds
        self.ddm_warmup = int(ddm_warmup)
        self.warning_alerts = bool(warning_alerts)
        # (model, version) -> last strong alarm and its event time.
        self._last_strong: dict[tuple[str, str], tuple[DetectorAlarm, float | None]] = {}

    def decide(
        self,
        key: tuple[str, str],
        alarms: Sequence[DetectorAlarm],
        now: float | None = None,
    ) -> list[PolicyDecision]:
        """Decide every alarm of one bank update (in stream order) for ``key``."""
        strong_in_batch = sorted((a for a in alarms if self._is_strong(a)), key=lambda a: a.position)
        decisions = [self._decide_one(key, a, strong_in_batch, now) for a in alarms]
        if strong_in_batch:
            self._last_strong[key] = (strong_in_batch[-1], now)  # the latest position
        return decisions

    def _is_strong(self, a: DetectorAlarm) -> bool:
        """Alarms trusted enough to page alone, and to corroborate EDDM."""
        if a.kind != "drift":
            return False
        if a.detector == "adwin":
            return a.direction == "up"
        return a.detector == "ddm" and a.position >= self.ddm_warmup

    def _corroboration(
        self,
        key: tuple[str, str],
        alarm: DetectorAlarm,
        strong_in_batch: Sequence[DetectorAlarm],
        now: float | None,
    ) -> DetectorAlarm | None:
        # The latest strong alarm at or before this one wins, from this batch first.
        for s in reversed(strong_in_batch):
            if 0 <= alarm.position - s.position <= self.corroboration_window:
                return s
        prev = self._last_strong.get(key)
        if prev is None:
            return None
        s, t = prev
        if 0 <= alarm.position - s.position <= self.corroboration_window:
            return s
        if (
            self.corroboration_seconds is not None
            and now is not None
            and t is not None
            and abs(now - t) <= self.corroboration_seconds
        ):
            return s
        return None

    def _decide_one(
        self,
        key: tuple[str, str],
        a: DetectorAlarm,
        strong_in_batch: Sequence[DetectorAlarm],
        now: float | None,
    ) -> PolicyDecision:
        if a.detector == "adwin":
            if a.direction == "up":
                return PolicyDecision(a, "critical", "ADWIN: error rate rose")
            return PolicyDecision(a, None, "ADWIN: error rate fell (recorded only)")
        warning: Severity | None = "warning" if self.warning_alerts else None
        if a.detector == "ddm":
            if a.kind == "drift":
                if a.position < self.ddm_warmup:
                    return PolicyDecision(
                        a,
                        None,
                        f"DDM drift within its first {self.ddm_warmup} updates (recorded only)",
                    )
                return PolicyDecision(a, "critical", "DDM: drift level reached")
            return PolicyDecision(a, warning, "DDM: warning level reached")
        if a.detector == "eddm":
            if a.kind == "warning":
                return PolicyDecision(a, None, "EDDM warning zone (recorded only: too frequent)")
            s = self._corroboration(key, a, strong_in_batch, now)
            if s is not None:
                return PolicyDecision(
                    a, "critical", f"EDDM drift corroborated by {s.detector}", corroborated_by=s
                )
            return PolicyDecision(
                a, warning, "EDDM drift, uncorroborated (recorded; alerts only if warning_alerts)"
            )
        # Unknown detectors: keep the evidence, page nobody.
        return PolicyDecision(a, None, f"{a.detector}: no policy rule (recorded only)")

    def to_state(self) -> dict[str, Any]:
        return {
            "corroboration_window": self.corroboration_window,
            "corroboration_seconds": self.corroboration_seconds,
            "ddm_warmup": self.ddm_warmup,
            "warning_alerts": self.warning_alerts,
            "last_strong": [
                [model, version, a.to_dict(), t]
                for (model, version), (a, t) in self._last_strong.items()
            ],
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> AlarmPolicy:
        p = cls(
            int(d["corroboration_window"]),
            d["corroboration_seconds"],
            int(d.get("ddm_warmup", 0)),
            bool(d.get("warning_alerts", True)),
        )
        for model, version, a, t in d["last_strong"]:
            p._last_strong[(model, version)] = (DetectorAlarm(**a), t)
        return p
