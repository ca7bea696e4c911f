"""The reference profiles a worker compares windows with (data drift, quality, CBPE).

Loaded at start from ``<data_dir>/profiles`` (``driftline baseline create`` writes there), built
by the merge stage from a model's first hours of traffic when its models-file entry says so,
and picked up every few seconds when another worker (or a restart) saved one. Every processor
and merger of the worker shares the same mapping: installing a profile reaches all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from driftline.detectors.profile import Profile
from driftline.streams.models import ModelsConfig

log = logging.getLogger("driftline.references")

#: How often profiles saved by others are looked for.
REFRESH_SECONDS = 5.0


class References:
    """model_id -> reference profile, and where it goes when it changes."""

    def __init__(self, models: ModelsConfig, data_dir: str, profiles: dict[str, Profile] | None = None) -> None:
        self.models = models
        self.root = Path(data_dir) / "profiles"
        self.profiles = profiles if profiles is not None else self._load()
        self._next_check = 0.0
        self._targets: list[Callable[[Profile], None]] = []

    def on_install(self, target: Callable[[Profile], None]) -> None:
        """Call ``target(profile)`` for every profile installed from now on."""
        self._targets.append(target)

    def install(self, ref: Profile) -> None:
        self.profiles[ref.model_id] = ref
        for target in self._targets:
            target(ref)

    def save(self, ref: Profile) -> None:
        """Save a frozen first-hours reference where ``baseline create`` saves profiles; use it."""
        from driftline.streams.baseline_cmd import save_profile

        try:
            path = save_profile(ref, self.root)
        except OSError:
            log.exception("cannot save the first-hours reference (kept in memory)", extra={"model_id": ref.model_id})
        else:
            log.info("reference profile built from the first hours",
                     extra={"model_id": ref.model_id, "version": ref.version, "file": str(path),
                            "events": ref.n_events})
        self.install(ref)

    def refresh(self, now: float) -> None:
        """Pick up first-hours references saved by another worker (or before a restart)."""
        if now < self._next_check:
            return
        self._next_check = now + REFRESH_SECONDS
        from driftline.streams.baseline_cmd import load_latest

        for model in self._first_hours_models():
            if model in self.profiles:
                continue
            try:
                self.install(load_latest(model, self.root))
            except (FileNotFoundError, ValueError):
                continue

    def _first_hours_models(self) -> Iterable[str]:
        return [m for m, cfg in self.models.models.items() if cfg.first_hours() is not None]

    def _load(self) -> dict[str, Profile]:
        from driftline.streams.baseline_cmd import load_references

        wanted = [m for m, cfg in self.models.models.items() if cfg.data_drift]
        cbpe = self.models.defaults.cbpe or any(cfg.cbpe for cfg in self.models.models.values())
        if not wanted and not self.models.defaults.data_drift and not cbpe:  # CBPE reads the calibrator
            return {}
        refs = load_references(self.root, self.models)
        for m in wanted:
            if m in refs:
                continue
            if self.models.models[m].first_hours() is not None:
                log.info("no reference profile yet: building it from the first hours of traffic",
                         extra={"model_id": m, "hours": self.models.models[m].first_hours(), "dir": str(self.root / m)})
            else:
                log.warning("no reference profile: data drift off for this model",
                            extra={"model_id": m, "dir": str(self.root / m)})
        for m, ref in refs.items():
            log.info("reference profile loaded", extra={"model_id": m, "version": ref.version,
                                                        "features": len(ref.features), "events": ref.n_events})
        return refs
