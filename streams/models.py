"""The models file (``DRIFTLINE_CONFIG``): per-model task, thresholds, SLOs, detectors.

YAML (``.yaml``/``.yml``) or TOML (``.toml``). A ``defaults`` section applies to every
model, listed or not; ``models.<model_id>`` overrides it. Invalid files fail at start with
the path of the bad setting (``models.fraud.thresholds[0].min: expected a number``).

Example (YAML)::

    allow_unlisted_models: true
    defaults:
      label_horizon_s: 604800
    models:
      fraud:
        task: binary
        positive_class: "1"
        segment_keys: [country, channel]
        thresholds:
          - {metric: accuracy, min: 0.85, min_count: 200}
        relative_drops:
          - {metric: recall, drop: 0.10}
        latency_p99_slo_ms: 250
        label_coverage_min: 0.5
        detectors: {adwin: {delta: 0.002}, ddm: {}, eddm: {alpha: 0.8, beta: 0.75}}
      home-feed:
        task: ranking          # ranked lists + click/conversion feedback; no drift detector
        ranking_k: 10          # K of the @K metrics (default 10)
        catalog_size: 500      # gives catalog_coverage (default: not computed)
        thresholds:
          - {metric: ndcg_at_k, min: 0.3}
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driftline.detectors.policy import DEFAULT_BANK_CONFIG

TASKS = ("binary", "multiclass", "regression", "ranking")


class ConfigError(ValueError):
    """The models file is invalid; the message names the setting."""


@dataclass(frozen=True)
class ThresholdRule:
    """Fire when ``metric`` leaves [min, max] in a window with >= ``min_count`` events behind it."""

    metric: str
    min: float | None = None
    max: float | None = None
    min_count: int = 200
    severity: str = "critical"


@dataclass(frozen=True)
class RelativeDropRule:
    """Fire when ``metric`` falls by ``drop`` (relative) below the mean of the last windows."""

    metric: str
    drop: float = 0.10
    baseline_windows: int = 10
    min_count: int = 200
    severity: str = "warning"


FAIRNESS_DEFAULT_THRESHOLDS: Mapping[str, float] = {"demographic_parity_difference": 0.1,
                                                   "equalized_odds_difference": 0.1}
COMPARISON_DEFAULT_METRICS = {"binary": ("accuracy", "precision", "recall"), "multiclass": ("accuracy",),
                              "regression": ("mae",)}
# What ``driftline.detectors.comparison`` can compare: rates of classifiers, MAE of regressors.
COMPARABLE_METRICS = ("accuracy", "precision", "recall", "positive_rate", "mae")


@dataclass(frozen=True)
class FairnessConfig:
    """Group fairness of a binary model across the values of protected segment keys.

    ``protected``: keys of the events' ``segments`` whose values are the groups;
    ``thresholds``: disparity -> limit (a ``*_difference`` fires above it, a ``*_ratio``
    below it; ``driftline.detectors.fairness.DISPARITY_METRICS`` names them); a disparity is judged
    only when every group has ``min_group_events`` events in its denominators.
    """

    protected: tuple[str, ...]
    # At 300 events per group the standard error of a difference of two rates is at most
    # 0.041 (p = 0.5), so the default 0.1 thresholds sit ~2.5 standard errors out.
    min_group_events: int = 300
    thresholds: Mapping[str, float] = field(default_factory=lambda: dict(FAIRNESS_DEFAULT_THRESHOLDS))
    severity: str = "warning"

    def rules(self) -> list[Any]:
        """``driftline.detectors.fairness.FairnessRule`` of each threshold."""
        from driftline.detectors.fairness import FairnessRule

        return [FairnessRule(m, float(t), self.min_group_events) for m, t in self.thresholds.items()]


@dataclass(frozen=True)
class ChampionConfig:
    """Versions of one model running side by side: ``version`` is the champion.

    Challengers are ``challengers`` when listed, else every other version seen. ``mode``
    (``ab``: traffic split; ``shadow``: every version scores the same requests) is recorded
    with each comparison. A challenger alert wants the verdict ``worse`` on
    ``consecutive_windows`` judged windows in a row (one test per window and metric: see
    docs/beyond-accuracy.md, "Champion / challenger").
    """

    version: str
    challengers: tuple[str, ...] = ()
    mode: str = "ab"
    metrics: tuple[str, ...] = ()  # () = the task's defaults (COMPARISON_DEFAULT_METRICS)
    alpha: float = 0.05
    min_n: int = 100
    consecutive_windows: int = 2
    severity: str = "critical"

    def metrics_for(self, task: str) -> tuple[str, ...]:
        return self.metrics or COMPARISON_DEFAULT_METRICS.get(task, ())

    def is_challenger(self, version: str) -> bool:
        return version != self.version and (not self.challengers or version in self.challengers)


@dataclass(frozen=True)
class ModelConfig:
    """Settings of one model; every field has a default so unlisted models work."""

    task: str | None = None
    positive_class: str = "1"
    segment_keys: tuple[str, ...] = ()
    label_horizon_s: float = 7 * 86400.0
    early_label_wait_s: float = 3600.0
    detectors: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: dict(DEFAULT_BANK_CONFIG))
    corroboration_window: int = 1000
    ddm_warmup: int = 1000
    detector_warning_alerts: bool = False
    thresholds: tuple[ThresholdRule, ...] = ()
    relative_drops: tuple[RelativeDropRule, ...] = ()
    latency_p99_slo_ms: float | None = None
    volume_drop: float | None = 0.5
    volume_spike: float | None = 3.0
    volume_baseline_windows: int = 10
    volume_min_count: int = 100
    label_coverage_min: float | None = None
    coverage_after_s: float = 600.0
    cooldown_s: float = 300.0
    # A model (and version) that had traffic and then sent nothing for this long (processing
    # time, judged only while every partition is caught up) raises availability/silence.
    silence_after_s: float | None = 300.0
    drift_resolve_s: float = 600.0
    # Beyond accuracy (off unless set): data drift and quality against a reference profile
    # (``<DRIFTLINE_DATA_DIR>/profiles/<model>/latest.json``), CBPE for binary models.
    data_drift: Mapping[str, Any] | bool | None = None
    data_quality: Mapping[str, Any] | None = None
    cbpe: bool = False
    # Ranking models (task ``ranking``): cut-off K of the @K metrics and of coverage, and the
    # number of recommendable items (gives ``catalog_coverage``; unknown = not computed).
    ranking_k: int = 10
    catalog_size: int | None = None
    fairness: FairnessConfig | None = None  # binary models only
    champion: ChampionConfig | None = None

    def drift_config(self) -> Any:
        """``driftline.detectors.datadrift.DriftConfig`` of ``data_drift`` (``baseline`` removed)."""
        from driftline.detectors.datadrift import DriftConfig

        raw = self.data_drift if isinstance(self.data_drift, Mapping) else {}
        return DriftConfig.from_dict({k: v for k, v in raw.items() if k not in ("baseline", "hours")})

    def quality_thresholds(self) -> Any:
        """``driftline.detectors.quality.QualityThresholds`` of ``data_quality``."""
        from driftline.detectors.quality import QualityThresholds

        raw: dict[str, Any] = {k: tuple(v) if isinstance(v, list | tuple) else v for k, v in (self.data_quality or {}).items()}
        return QualityThresholds(**raw)

    def baseline(self) -> str | None:
        """Which reference profile ``data_drift`` asks for: ``"latest"``, ``"v<N>"``,
        ``"first_hours"`` (built from the first ``hours`` of production), or None (off)."""
        if self.data_drift is False:
            return None
        if isinstance(self.data_drift, Mapping):
            b = self.data_drift.get("baseline", "latest")
            return "latest" if b in (None, "latest", True) else (f"v{b}" if isinstance(b, int) else str(b))
        return "latest"

    def first_hours(self) -> float | None:
        """Hours of production that make the reference (``baseline: first_hours``), else None."""
        if self.baseline() != "first_hours" or not isinstance(self.data_drift, Mapping):
            return None
        return float(self.data_drift.get("hours", 24))

    def __post_init__(self) -> None:
        if self.task is not None and self.task not in TASKS:
            raise ConfigError(f"task: expected one of {', '.join(TASKS)}, got {self.task!r}")
        for name in ("label_horizon_s", "early_label_wait_s", "cooldown_s", "drift_resolve_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: expected a positive number, got {getattr(self, name)!r}")
        if self.silence_after_s is not None and self.silence_after_s <= 0:
            raise ConfigError(f"silence_after_s: expected a positive number or null, got {self.silence_after_s!r}")
        for name in ("corroboration_window", "ddm_warmup"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: expected a number >= 0, got {getattr(self, name)!r}")
        if self.ranking_k < 1:
            raise ConfigError(f"ranking_k: expected an integer >= 1, got {self.ranking_k!r}")
        if self.catalog_size is not None and self.catalog_size < 1:
            raise ConfigError(f"catalog_size: expected an integer >= 1, got {self.catalog_size!r}")
        for det in self.detectors:
            if det not in ("adwin", "ddm", "eddm"):
                raise ConfigError(f"detectors.{det}: unknown detector (adwin, ddm, eddm)")


@dataclass(frozen=True)
class ModelsConfig:
    """All models: ``for_model(model_id)`` returns the listed config or the defaults."""

    models: Mapping[str, ModelConfig] = field(default_factory=dict)
    defaults: ModelConfig = field(default_factory=ModelConfig)
    allow_unlisted_models: bool = True

    def for_model(self, model_id: str) -> ModelConfig | None:
        """The model's config, or ``None`` when unlisted models are refused."""
        cfg = self.models.get(model_id)
        if cfg is not None:
            return cfg
        return self.defaults if self.allow_unlisted_models else None


def load_models_config(path: str | Path | None) -> ModelsConfig:
    """Read and validate a models file; an empty path gives the defaults."""
    if not path:
        return ModelsConfig()
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: models file not found")
    text = p.read_text()
    try:
        if p.suffix == ".toml":
            raw = tomllib.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text) or {}
    except Exception as exc:  # parser errors differ by format; report them uniformly
        raise ConfigError(f"{p}: cannot parse: {exc}") from None
    try:
        return parse_models_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def parse_models_config(raw: Any) -> ModelsConfig:
    """Validate a parsed models file.

    >>> cfg = parse_models_config({"models": {"m": {"task": "binary", "thresholds": [{"metric": "accuracy", "min": 0.9}]}}})
    >>> cfg.for_model("m").thresholds[0].min, cfg.for_model("other").task
    (0.9, None)
    >>> parse_models_config({"models": {"m": {"task": "ranking", "catalog_size": 500}}}).for_model("m").ranking_k
    10
    >>> parse_models_config({"models": {"m": {"task": "clustering"}}})
    Traceback (most recent call last):
    ...
    driftline.streams.models.ConfigError: models.m.task: expected one of binary, multiclass, regression, ranking, got 'clustering'
    """
    if not isinstance(raw, Mapping):
        raise ConfigError("top level: expected a mapping")
    unknown = set(raw) - {"models", "defaults", "allow_unlisted_models"}
    if unknown:
        raise ConfigError(f"unknown top-level keys: {', '.join(sorted(unknown))}")
    defaults_raw = raw.get("defaults") or {}
    defaults = _model_config(defaults_raw, "defaults", {})
    models_raw = raw.get("models") or {}
    if not isinstance(models_raw, Mapping):
        raise ConfigError("models: expected a mapping of model_id -> settings")
    models = {str(mid): _model_config(m or {}, f"models.{mid}", defaults_raw) for mid, m in models_raw.items()}
    allow = raw.get("allow_unlisted_models", True)
    if not isinstance(allow, bool):
        raise ConfigError("allow_unlisted_models: expected true or false")
    return ModelsConfig(models=models, defaults=defaults, allow_unlisted_models=allow)


_NUMBER_FIELDS = {
    f.name
    for f in dataclasses.fields(ModelConfig)
    if f.type in ("float", "float | None", "int", "int | None")
}
# Counts: a float such as 10.5 would silently truncate.
_INT_FIELDS = {"ranking_k", "catalog_size"}


def _model_config(raw: Any, where: str, defaults: Mapping[str, Any]) -> ModelConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping")
    merged = {**defaults, **raw}
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    for key in merged:
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown setting")
    kwargs: dict[str, Any] = {}
    for key, value in merged.items():
        path = f"{where}.{key}"
        if key in _NUMBER_FIELDS and value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        if key in _INT_FIELDS and value is not None and not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        if key == "segment_keys":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{path}: expected a list of strings")
            value = tuple(value)
        elif key == "positive_class":
            value = str(value)
        elif key == "detectors":
            if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
                raise ConfigError(f"{path}: expected a mapping detector -> parameters")
            value = {str(k): dict(v) for k, v in value.items()}
        elif key == "thresholds":
            value = tuple(_rule(ThresholdRule, r, f"{path}[{i}]") for i, r in enumerate(_as_list(value, path)))
        elif key == "relative_drops":
            value = tuple(_rule(RelativeDropRule, r, f"{path}[{i}]") for i, r in enumerate(_as_list(value, path)))
        elif key == "cbpe":
            if not isinstance(value, bool):
                raise ConfigError(f"{path}: expected true or false")
        elif key == "data_drift":
            value = _data_drift(value, path)
        elif key == "data_quality":
            value = _data_quality(value, path)
        elif key == "fairness":
            value = _fairness(value, path)
        elif key == "champion":
            value = _champion(value, path)
        kwargs[key] = value
    try:
        cfg = ModelConfig(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}.{exc}") from None
    if cfg.fairness is not None and cfg.task not in (None, "binary"):
        raise ConfigError(f"{where}.fairness: only for binary models (task is {cfg.task})")
    if cfg.champion is not None and cfg.task is not None:
        rates = cfg.task in ("binary", "multiclass")
        allowed = ("accuracy",) if cfg.task == "multiclass" else COMPARABLE_METRICS[:4] if rates else ("mae",)
        bad = [m for m in cfg.champion.metrics if m not in allowed]
        if bad:
            raise ConfigError(f"{where}.champion.metrics: {bad[0]!r} cannot be compared for a {cfg.task} model")
    if "detectors" in kwargs:
        # Bad parameters would otherwise fail in the worker, on the first joined outcome.
        from driftline.detectors.drift import make_detector

        for det, params in cfg.detectors.items():
            try:
                make_detector(det, dict(params))
            except Exception as exc:
                raise ConfigError(f"{where}.detectors.{det}: invalid parameters: {exc}") from None
    return cfg


def _data_drift(value: Any, path: str) -> Mapping[str, Any] | bool | None:
    """``data_drift``: true/false, or a mapping with ``baseline`` (``latest`` or a version
    number) and ``driftline.detectors.datadrift.DriftConfig`` keys (``statistic``, ``limits``,
    ``sigmas``, ``psi_warning``, ``psi_drift``, ``js_warning``, ``js_drift``, ``min_samples``,
    ``epsilon``, ``top_bins``, ``features: {name: {...}}``)."""
    if value is None or isinstance(value, bool):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: expected true, false or a mapping")
    value = {str(k): v for k, v in value.items()}
    b = value.get("baseline", "latest")
    if not (b in ("latest", "first_hours") or (isinstance(b, int) and not isinstance(b, bool) and b >= 1)):
        raise ConfigError(f"{path}.baseline: expected 'latest', 'first_hours' or a version number >= 1, got {b!r}")
    if "hours" in value:
        h = value["hours"]
        if b != "first_hours":
            raise ConfigError(f"{path}.hours: only with baseline: first_hours")
        if isinstance(h, bool) or not isinstance(h, int | float) or h <= 0:
            raise ConfigError(f"{path}.hours: expected a positive number, got {h!r}")
    from driftline.detectors.datadrift import DriftConfig

    try:
        DriftConfig.from_dict({k: v for k, v in value.items() if k not in ("baseline", "hours")})
    except (TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{path}: invalid settings: {exc}") from None
    return value


def _data_quality(value: Any, path: str) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: expected a mapping of check -> [warning, critical]")
    value = {str(k): v for k, v in value.items()}
    try:
        ModelConfig(data_quality=value).quality_thresholds()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: invalid settings: {exc}") from None
    return value


def _fairness(value: Any, path: str) -> FairnessConfig | None:
    """``fairness: {protected: [keys], min_group_events: N, thresholds: {disparity: limit}, severity}``."""
    if value is None:
        return None
    from driftline.detectors.fairness import DISPARITY_METRICS

    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: expected a mapping with 'protected'")
    unknown = set(value) - {"protected", "min_group_events", "thresholds", "severity"}
    if unknown:
        raise ConfigError(f"{path}.{sorted(unknown)[0]}: unknown setting")
    protected = value.get("protected")
    if not isinstance(protected, list) or not protected or not all(isinstance(k, str) and k for k in protected):
        raise ConfigError(f"{path}.protected: expected a non-empty list of segment keys")
    n = value.get("min_group_events", 300)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"{path}.min_group_events: expected an integer >= 1, got {n!r}")
    thresholds = value.get("thresholds", dict(FAIRNESS_DEFAULT_THRESHOLDS))
    if not isinstance(thresholds, Mapping) or not thresholds:
        raise ConfigError(f"{path}.thresholds: expected a mapping disparity -> limit")
    for m, t in thresholds.items():
        if m not in DISPARITY_METRICS:
            raise ConfigError(f"{path}.thresholds.{m}: unknown disparity ({', '.join(sorted(DISPARITY_METRICS))})")
        if isinstance(t, bool) or not isinstance(t, int | float):
            raise ConfigError(f"{path}.thresholds.{m}: expected a number, got {t!r}")
    severity = value.get("severity", "warning")
    if severity not in ("warning", "critical"):
        raise ConfigError(f"{path}.severity: expected warning or critical")
    return FairnessConfig(tuple(protected), n, {str(m): float(t) for m, t in thresholds.items()}, severity)


def _champion(value: Any, path: str) -> ChampionConfig | None:
    """``champion: v1`` or ``champion: {version, challengers, mode, metrics, alpha, min_n,
    consecutive_windows, severity}``."""
    if value is None:
        return None
    if isinstance(value, str | int) and not isinstance(value, bool):
        value = {"version": str(value)}
    if not isinstance(value, Mapping) or "version" not in value:
        raise ConfigError(f"{path}: expected a version, or a mapping with 'version'")
    names = {f.name for f in dataclasses.fields(ChampionConfig)}
    unknown = set(value) - names
    if unknown:
        raise ConfigError(f"{path}.{sorted(unknown)[0]}: unknown setting")
    kw: dict[str, Any] = {"version": str(value["version"])}
    for key in ("challengers", "metrics"):
        if key in value:
            v = value[key]
            if not isinstance(v, list) or not all(isinstance(x, str | int) and not isinstance(x, bool) for x in v):
                raise ConfigError(f"{path}.{key}: expected a list")
            kw[key] = tuple(str(x) for x in v)
    for m in kw.get("metrics", ()):
        if m not in COMPARABLE_METRICS:
            raise ConfigError(f"{path}.metrics: unknown metric {m!r} ({', '.join(COMPARABLE_METRICS)})")
    if value.get("mode", "ab") not in ("ab", "shadow"):
        raise ConfigError(f"{path}.mode: expected ab or shadow")
    kw["mode"] = value.get("mode", "ab")
    alpha = value.get("alpha", 0.05)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise ConfigError(f"{path}.alpha: expected a number in (0, 1), got {alpha!r}")
    kw["alpha"] = float(alpha)
    for key, low in (("min_n", 2), ("consecutive_windows", 1)):
        v = value.get(key, {"min_n": 100, "consecutive_windows": 2}[key])
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ConfigError(f"{path}.{key}: expected an integer >= {low}, got {v!r}")
        kw[key] = v
    if value.get("severity", "critical") not in ("warning", "critical"):
        raise ConfigError(f"{path}.severity: expected warning or critical")
    kw["severity"] = value.get("severity", "critical")
    return ChampionConfig(**kw)


def _as_list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(f"{path}: expected a list")
    return value


def _rule(cls: type[Any], raw: Any, path: str) -> Any:
    if not isinstance(raw, Mapping) or "metric" not in raw:
        raise ConfigError(f"{path}: expected a mapping with 'metric'")
    if not isinstance(raw["metric"], str) or not raw["metric"]:
        raise ConfigError(f"{path}.metric: expected a metric name, got {raw['metric']!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in raw.items():
        if key not in names:
            raise ConfigError(f"{path}.{key}: unknown setting")
        if key not in ("metric", "severity") and value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ConfigError(f"{path}.{key}: expected a number, got {value!r}")
    if raw.get("severity", "critical") not in ("warning", "critical"):
        raise ConfigError(f"{path}.severity: expected warning or critical")
    if cls is ThresholdRule and raw.get("min") is None and raw.get("max") is None:
        raise ConfigError(f"{path}: set min or max")
    return cls(**raw)
