"""The models file (``driftline.streams.models``): YAML and TOML parsing, defaults, error paths."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import driftline.streams.models as models_mod
from driftline.detectors.policy import DEFAULT_BANK_CONFIG
from driftline.streams.models import (
    ConfigError,
    ModelConfig,
    ModelsConfig,
    RelativeDropRule,
    ThresholdRule,
    load_models_config,
    parse_models_config,
)

YAML_FILE = """
allow_unlisted_models: true
defaults:
  label_horizon_s: 86400
  cooldown_s: 120
models:
  fraud:
    task: binary
    positive_class: 1
    segment_keys: [country, channel]
    thresholds:
      - {metric: accuracy, min: 0.85, min_count: 200}
      - {metric: log_loss, max: 0.6, severity: warning}
    relative_drops:
      - {metric: recall, drop: 0.10}
    latency_p99_slo_ms: 250
    label_coverage_min: 0.5
    detectors: {adwin: {delta: 0.002}, ddm: {}, eddm: {alpha: 0.8, beta: 0.75}}
  eta:
    task: regression
    label_horizon_s: 3600
"""

TOML_FILE = """
allow_unlisted_models = true

[defaults]
label_horizon_s = 86400
cooldown_s = 120

[models.fraud]
task = "binary"
positive_class = "1"
segment_keys = ["country", "channel"]
latency_p99_slo_ms = 250
label_coverage_min = 0.5
thresholds = [
  { metric = "accuracy", min = 0.85, min_count = 200 },
  { metric = "log_loss", max = 0.6, severity = "warning" },
]
relative_drops = [{ metric = "recall", drop = 0.10 }]

[models.fraud.detectors]
adwin = { delta = 0.002 }
ddm = {}
eddm = { alpha = 0.8, beta = 0.75 }

[models.eta]
task = "regression"
label_horizon_s = 3600
"""


def _check_example(cfg: ModelsConfig) -> None:
    fraud = cfg.for_model("fraud")
    assert fraud is not None
    assert fraud.task == "binary" and fraud.positive_class == "1"
    assert fraud.segment_keys == ("country", "channel")
    assert fraud.thresholds == (
        ThresholdRule("accuracy", min=0.85, min_count=200),
        ThresholdRule("log_loss", max=0.6, severity="warning"),
    )
    assert fraud.relative_drops == (RelativeDropRule("recall", drop=0.10),)
    assert fraud.latency_p99_slo_ms == 250 and fraud.label_coverage_min == 0.5
    assert dict(fraud.detectors) == {
        "adwin": {"delta": 0.002},
        "ddm": {},
        "eddm": {"alpha": 0.8, "beta": 0.75},
    }
    # Defaults apply to listed models (unless overridden) and to unlisted ones.
    assert fraud.label_horizon_s == 86400 and fraud.cooldown_s == 120
    eta = cfg.for_model("eta")
    assert (
        eta is not None
        and eta.task == "regression"
        and eta.label_horizon_s == 3600
        and eta.cooldown_s == 120
    )
    other = cfg.for_model("unlisted")
    assert other is cfg.defaults and other.task is None and other.label_horizon_s == 86400
    assert dict(other.detectors) == DEFAULT_BANK_CONFIG


@pytest.mark.parametrize(
    "suffix,text", [(".yaml", YAML_FILE), (".yml", YAML_FILE), (".toml", TOML_FILE)]
)
def test_load_yaml_and_toml(tmp_path: Path, suffix: str, text: str) -> None:
    path = tmp_path / f"models{suffix}"
    path.write_text(text)
    _check_example(load_models_config(path))
    _check_example(load_models_config(str(path)))


def test_docstring_example_is_valid() -> None:
    doc = models_mod.__doc__ or ""
    example = doc.split("Example (YAML)::", 1)[1]
    cfg = parse_models_config(yaml.safe_load(example))
    assert cfg.for_model("fraud").task == "binary"  # type: ignore[union-attr]


def test_empty_path_and_empty_file_give_defaults(tmp_path: Path) -> None:
    assert load_models_config(None) == ModelsConfig() == load_models_config("")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    cfg = load_models_config(empty)
    assert cfg.models == {} and cfg.allow_unlisted_models and cfg.for_model("x") == ModelConfig()


def test_unlisted_models_refused() -> None:
    cfg = parse_models_config({"allow_unlisted_models": False, "models": {"a": {"task": "binary"}}})
    assert cfg.for_model("a") is not None and cfg.for_model("b") is None


BAD: list[tuple[Any, str]] = [
    ([1, 2], "top level: expected a mapping"),
    ({"model": {}}, "unknown top-level keys: model"),
    ({"allow_unlisted_models": "yes"}, "allow_unlisted_models: expected true or false"),
    ({"models": [1]}, "models: expected a mapping"),
    ({"models": {"m": [1]}}, "models.m: expected a mapping"),
    ({"defaults": 3}, "defaults: expected a mapping"),
    ({"models": {"m": {"tsk": "binary"}}}, "models.m.tsk: unknown setting"),
    (
        {"models": {"m": {"task": "clustering"}}},
        "models.m.task: expected one of binary, multiclass, regression, ranking",
    ),
    (
        {"models": {"m": {"task": "ranking", "ranking_k": 0}}},
        "models.m.ranking_k: expected an integer >= 1",
    ),
    ({"models": {"m": {"ranking_k": 2.5}}}, "models.m.ranking_k: expected an integer"),
    ({"models": {"m": {"catalog_size": 0}}}, "models.m.catalog_size: expected an integer >= 1"),
    ({"models": {"m": {"label_horizon_s": "7d"}}}, "models.m.label_horizon_s: expected a number"),
    ({"models": {"m": {"cooldown_s": True}}}, "models.m.cooldown_s: expected a number"),
    (
        {"models": {"m": {"early_label_wait_s": 0}}},
        "models.m.early_label_wait_s: expected a positive number",
    ),
    (
        {"models": {"m": {"drift_resolve_s": -5}}},
        "models.m.drift_resolve_s: expected a positive number",
    ),
    (
        {"models": {"m": {"corroboration_window": -1}}},
        "models.m.corroboration_window: expected a number >= 0",
    ),
    ({"models": {"m": {"ddm_warmup": -1}}}, "models.m.ddm_warmup: expected a number >= 0"),
    (
        {"models": {"m": {"latency_p99_slo_ms": "fast"}}},
        "models.m.latency_p99_slo_ms: expected a number",
    ),
    (
        {"models": {"m": {"segment_keys": "country"}}},
        "models.m.segment_keys: expected a list of strings",
    ),
    (
        {"models": {"m": {"segment_keys": ["a", 1]}}},
        "models.m.segment_keys: expected a list of strings",
    ),
    ({"models": {"m": {"detectors": ["adwin"]}}}, "models.m.detectors: expected a mapping"),
    ({"models": {"m": {"detectors": {"adwin": 1}}}}, "models.m.detectors: expected a mapping"),
    ({"models": {"m": {"detectors": {"kswin": {}}}}}, "models.m.detectors.kswin: unknown detector"),
    (
        {"models": {"m": {"detectors": {"adwin": {"delta": "x"}}}}},
        "models.m.detectors.adwin: invalid parameters",
    ),
    (
        {"models": {"m": {"detectors": {"ddm": {"bogus": 1}}}}},
        "models.m.detectors.ddm: invalid parameters",
    ),
    (
        {"models": {"m": {"thresholds": {"metric": "accuracy"}}}},
        "models.m.thresholds: expected a list",
    ),
    (
        {"models": {"m": {"thresholds": [{"min": 0.5}]}}},
        "models.m.thresholds[0]: expected a mapping with 'metric'",
    ),
    (
        {"models": {"m": {"thresholds": ["accuracy"]}}},
        "models.m.thresholds[0]: expected a mapping with 'metric'",
    ),
    (
        {"models": {"m": {"thresholds": [{"metric": "accuracy"}]}}},
        "models.m.thresholds[0]: set min or max",
    ),
    (
        {
            "models": {
                "m": {"thresholds": [{"metric": "a", "min": 1}, {"metric": "b", "min": "high"}]}
            }
        },
        "models.m.thresholds[1].min: expected a number",
    ),
    (
        {"models": {"m": {"thresholds": [{"metric": "a", "min": 1, "severity": "page"}]}}},
        "models.m.thresholds[0].severity: expected warning or critical",
    ),
    (
        {"models": {"m": {"thresholds": [{"metric": "a", "min": 1, "limit": 2}]}}},
        "models.m.thresholds[0].limit: unknown setting",
    ),
    (
        {"models": {"m": {"thresholds": [{"metric": 5, "min": 1}]}}},
        "models.m.thresholds[0].metric: expected a metric name",
    ),
    (
        {"models": {"m": {"relative_drops": [{"metric": "recall", "drop": "10%"}]}}},
        "models.m.relative_drops[0].drop: expected a number",
    ),
    (
        {"models": {"m": {"relative_drops": [{"metric": "recall", "baseline_windows": False}]}}},
        "models.m.relative_drops[0].baseline_windows: expected a number",
    ),
    (
        {"defaults": {"label_horizon_s": "long"}, "models": {"m": {}}},
        "defaults.label_horizon_s: expected a number",
    ),
    ({"defaults": {"task": "clustering"}}, "defaults.task: expected one of"),
]


@pytest.mark.parametrize("raw,message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_invalid_settings_name_their_path(raw: Any, message: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        parse_models_config(raw)


def test_file_errors_name_the_file_and_the_setting(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=re.escape(f"{missing}: models file not found")):
        load_models_config(missing)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("models: [unclosed\n")
    with pytest.raises(ConfigError, match=re.escape(f"{bad_yaml}: cannot parse")):
        load_models_config(bad_yaml)
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[models\n")
    with pytest.raises(ConfigError, match=re.escape(f"{bad_toml}: cannot parse")):
        load_models_config(bad_toml)
    bad_setting = tmp_path / "m.toml"
    bad_setting.write_text(
        '[models.fraud]\ntask = "binary"\n[[models.fraud.thresholds]]\nmetric = "accuracy"\nmin = "x"\n'
    )
    with pytest.raises(
        ConfigError,
        match=re.escape(f"{bad_setting}: models.fraud.thresholds[0].min: expected a number"),
    ):
        load_models_config(bad_setting)
    bad_yaml_setting = tmp_path / "m.yml"
    bad_yaml_setting.write_text("models:\n  fraud:\n    segment_keys: country\n")
    with pytest.raises(
        ConfigError,
        match=re.escape(f"{bad_yaml_setting}: models.fraud.segment_keys: expected a list"),
    ):
        load_models_config(bad_yaml_setting)


def test_documented_examples_and_deploy_file_are_valid() -> None:
    root = Path(__file__).resolve().parents[1]
    doc = (root / "docs" / "configuration.md").read_text()
    block = doc.split("```yaml\nallow_unlisted_models", 1)[1].split("```", 1)[0]
    cfg = parse_models_config(yaml.safe_load("allow_unlisted_models" + block))
    fraud = cfg.for_model("fraud")
    assert fraud is not None and fraud.segment_keys == ("country", "channel", "country,channel")
    # the minimal models file of README.md
    readme = (root / "README.md").read_text()
    section = readme.split("## A minimal models file", 1)[1]
    minimal = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    fraud = parse_models_config(yaml.safe_load(minimal)).for_model("fraud")
    assert fraud is not None and fraud.task == "binary" and fraud.thresholds
    assert load_models_config(root / "deploy" / "models.yaml").models
