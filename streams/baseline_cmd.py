"""Reference profiles on disk (``driftline baseline create``) and from the first hours of traffic.

Layout under ``out_dir`` (the worker's ``<DRIFTLINE_DATA_DIR>/profiles`` by default)::

    <out_dir>/<model_id>/profile-v1.json    # Profile.to_state(), version 1
    <out_dir>/<model_id>/profile-v2.json
    <out_dir>/<model_id>/latest.json        # {"model_id", "version", "file", "created_at"}

Guarantees: a version file is claimed with an exclusive create, so two concurrent
``create_baseline`` calls get different versions; files are written to a temporary name
and renamed, so a crash never leaves a half-written ``profile-v<N>.json`` or
``latest.json``; an existing version is never overwritten. ``latest.json`` is updated last:
after a crash between the two renames the new version exists but is not yet current.

Nothing here opens ClickHouse: an embedded chdb store belongs to one process, the running
worker, whose sink copies every new version into ``driftline.reference_profiles`` at start and
every 30 s (``sinks/profiles.py``). Each version records its ``source``: the input file's name
(``create_baseline``) or ``"first_hours"`` (``ReferenceBuilder``).

A labelled reference of a binary classifier also gets its score calibrator (isotonic when the
held-out check finds the scores miscalibrated, else the identity: ``driftline.detectors.calibration``),
which the worker's CBPE reads every window's scores through; that of a regressor gets the loss
model that estimates its MAE and RMSE before labels (``driftline.detectors.dle``). A
first-hours reference has no labels, hence neither.

``ReferenceBuilder`` is the pure alternative when no training sample is at hand: the
worker feeds it the merged profile of each closed window (``Profile(infer=True)``,
unbinned) and, once ``hours`` of event time are covered, it freezes the bins and the
worker saves the result with ``save_profile`` and compares later windows against it.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from driftline.detectors.profile import Profile, load_records

__all__ = ["ReferenceBuilder", "create_baseline", "default_chunk_size", "estimation_note", "limits_note", "load_latest",
           "load_references", "save_profile"]

_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,255}")
_VERSION_FILE = re.compile(r"profile-v(\d+)\.json")


def _model_dir(model_id: str, out_dir: str | Path) -> Path:
    if not _MODEL_ID.fullmatch(model_id) or ".." in model_id:
        raise ValueError(
            f"model_id {model_id!r} is not usable as a folder name ([A-Za-z0-9._-], no '..')"
        )
    return Path(out_dir) / model_id


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_profile(profile: Profile, out_dir: str | Path, min_version: int = 1) -> Path:
    """Write ``profile`` as the next version of its model (at least ``min_version``: versions
    published from elsewhere come first) and point ``latest.json`` at it."""
    d = _model_dir(profile.model_id, out_dir)
    d.mkdir(parents=True, exist_ok=True)
    versions = [int(m.group(1)) for p in d.iterdir() if (m := _VERSION_FILE.fullmatch(p.name))]
    n = max(max(versions, default=0) + 1, min_version)
    while True:  # claim the version number; a concurrent writer makes us take the next one
        path = d / f"profile-v{n}.json"
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            break
        except FileExistsError:
            n += 1
    profile.version = n
    _write_atomic(path, profile.to_state())
    latest = {
        "model_id": profile.model_id,
        "version": n,
        "file": path.name,
        "created_at": profile.created_at,
    }
    _write_atomic(d / "latest.json", latest)
    return path


def create_baseline(
    model_id: str,
    path: str | Path,
    out_dir: str | Path,
    *,
    feature_names: list[str] | None = None,
    bins: int = 10,
    max_categories: int = 50,
    prediction_column: str = "prediction",
    label_column: str = "label",
    min_version: int = 1,
    chunk_size: int | None = None,
) -> Path:
    """Profile the records of ``path`` (CSV, JSONL, JSON, Parquet) and save a new version.

    Returns the path of ``profile-v<N>.json``. Rows are flat (feature columns plus optional
    ``prediction`` and ``label`` columns) or inference events (``features``, ``prediction``).
    With labels, a binary classifier's profile carries its score calibrator and a regressor's
    its loss model (module docstring). ``chunk_size`` (default ``default_chunk_size``) sets the
    reference chunks the drift limits and the PCA's limits come from
    (``driftline.detectors.thresholds``).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (tmp / "ref.csv").write_text("amount,country,prediction\\n12.5,DE,0.1\\n80,FR,0.7\\n")
    >>> create_baseline("fraud", tmp / "ref.csv", tmp / "profiles").name
    'profile-v1.json'
    >>> create_baseline("fraud", tmp / "ref.csv", tmp / "profiles").name
    'profile-v2.json'
    >>> p = load_latest("fraud", tmp / "profiles")
    >>> p.version, sorted(p.features), p.n_events
    (2, ['amount', 'country'], 2)
    """
    rows = load_records(path)
    if not rows:
        raise ValueError(f"{path}: no records")
    profile = Profile.from_records(
        rows,
        feature_names,
        model_id=model_id,
        bins=bins,
        max_categories=max_categories,
        prediction_column=prediction_column,
        label_column=label_column,
        chunk_size=chunk_size or default_chunk_size(len(rows)),
    )
    # the name only: the folder it came from means nothing on the machines that read the table
    profile.source = Path(path).name
    return save_profile(profile, out_dir, min_version)


def default_chunk_size(rows: int) -> int:
    """Reference rows / 20, at least 100 (``min_samples``): 20 chunks give the standard
    deviation some footing, and a chunk under 100 rows is noise the window-size scaling cannot
    carry to real windows. A reference under 1,000 rows thus gets no chunk limits.

    >>> default_chunk_size(50_000), default_chunk_size(1_500)
    (2500, 100)
    """
    return max(100, rows // 20)


def limits_note(profile: Profile) -> str:
    """One line on the drift limits and the PCA, for ``driftline baseline create``."""
    lim, pca = profile.limits, profile.pca
    pca_txt = ("no PCA (fewer than two numeric features)" if pca is None else
               f"PCA of {len(pca.features)} numeric features: {pca.n_components} components, "
               f"{sum(pca.explained):.0%} of the variance")
    if lim is None:
        return f"no drift limits from the reference (fewer than 10 chunks: fixed PSI cuts apply); {pca_txt}"
    return f"drift limits from {lim.chunks} reference chunks of {lim.chunk_size} rows; {pca_txt}"


def load_latest(model_id: str, out_dir: str | Path) -> Profile:
    """The profile ``latest.json`` points to; ``FileNotFoundError`` names the missing file."""
    d = _model_dir(model_id, out_dir)
    latest = d / "latest.json"
    if not latest.exists():
        raise FileNotFoundError(f"no baseline for model {model_id!r}: {latest} does not exist")
    meta = json.loads(latest.read_text(encoding="utf-8"))
    return Profile.from_state(json.loads((d / meta["file"]).read_text(encoding="utf-8")))


def load_version(model_id: str, out_dir: str | Path, version: int) -> Profile:
    """Version ``version`` of a model's profile (``profile-v<N>.json``)."""
    path = _model_dir(model_id, out_dir) / f"profile-v{int(version)}.json"
    if not path.exists():
        raise FileNotFoundError(f"no baseline v{version} for model {model_id!r}: {path} does not exist")
    return Profile.from_state(json.loads(path.read_text(encoding="utf-8")))


def estimation_note(profile: Profile) -> str:
    """One line on what the profile gives performance estimation, for ``driftline baseline create``.

    >>> estimation_note(Profile())
    'no score calibrator or loss model (labels needed: a binary classifier or a regressor)'
    """
    if profile.loss_model is not None:
        return f"loss model of the errors fitted on {profile.loss_model.n} labelled rows (estimated_mae, estimated_rmse)"
    cal = profile.calibrator
    if cal is None:
        return "no score calibrator or loss model (labels needed: a binary classifier or a regressor)"
    if cal.ece_raw is None or cal.ece_calibrated is None:
        return "scores used as they are (one class, or classes separated)"
    verdict = "calibrated by isotonic regression" if not cal.is_identity else "scores used as they are"
    return f"{verdict} (held-out ECE {cal.ece_raw:.4f} raw, {cal.ece_calibrated:.4f} calibrated)"


def _wants_reference(cfg: Any) -> bool:
    """Data drift compares with the reference; CBPE reads its score calibrator."""
    return cfg.data_drift is not False or bool(cfg.cbpe)


def load_references(out_dir: str | Path, models: Any) -> dict[str, Profile]:
    """The reference profile of every model whose config asks for data drift or CBPE.

    ``models`` is a ``driftline.streams.models.ModelsConfig``. Listed models with ``data_drift``
    or ``cbpe`` set, and (when the defaults set either) every model folder under ``out_dir``, get
    the profile their ``baseline`` names (``latest`` or a version number; ``latest`` for a model
    with CBPE and no data drift). A model without a baseline on disk is skipped: it runs without
    data drift, and CBPE reads its scores as calibrated. Returns model_id -> profile.
    """
    root = Path(out_dir)
    candidates = [m for m, cfg in models.models.items() if _wants_reference(cfg)]
    if _wants_reference(models.defaults) and root.is_dir():
        candidates += [d.name for d in sorted(root.iterdir()) if d.is_dir() and d.name not in models.models]
    refs: dict[str, Profile] = {}
    for model_id in dict.fromkeys(candidates):
        cfg = models.for_model(model_id)
        which = None if cfg is None else cfg.baseline() or ("latest" if cfg.cbpe else None)
        if which is None:
            continue
        try:
            # ``first_hours``: the reference the worker saved once the span was covered, if any.
            refs[model_id] = (load_latest(model_id, root) if which in ("latest", "first_hours")
                              else load_version(model_id, root, int(which.lstrip("v"))))
        except (FileNotFoundError, ValueError):
            continue
    return refs


class ReferenceBuilder:
    """Accumulates window profiles until ``hours`` of event time are covered, then freezes.

    Parameters
    ----------
    hours
        Event-time span of the reference, from the start of the first window added to the
        end of the last.
    bins
        Quantile bins of numeric features, computed from the merged sketches at freeze.
    grace
        Seconds past the span that must be seen (a later window's partial) before the
        reference freezes. The merge stage uses one window: partitions close a window at
        slightly different times, so the span's last windows wait for the others.

    Notes
    -----
    Feed it the merged (all partitions) profile of each closed window, in any order;
    windows are built with ``Profile(model_id, infer=True)`` because no bins exist yet.
    ``add`` returns ``True`` once, when the reference freezes; later windows are ignored
    (``add`` returns ``False``). ``to_state``/``from_state`` let the worker keep the builder
    in a table across restarts. Windows that arrive after the freeze (late revisions) are
    not added: the reference is a fixed snapshot.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(2)
    >>> rb = ReferenceBuilder(hours=1.0)
    >>> for start in range(0, 3600, 600):
    ...     w = Profile("fraud", infer=True)
    ...     w.update_many([{"x": float(v)} for v in rng.normal(size=200)], rng.uniform(size=200))
    ...     frozen = rb.add(float(start), start + 600.0, w)
    >>> frozen, rb.frozen, rb.reference.n_events, int(rb.reference.features["x"].hist.sum())
    (True, True, 1200, 1200)
    """

    def __init__(self, hours: float, bins: int = 10, grace: float = 0.0) -> None:
        if hours <= 0:
            raise ValueError(f"hours must be > 0, got {hours!r}")
        self.hours = float(hours)
        self.bins = int(bins)
        self.grace = float(grace)
        self.first_start: float | None = None
        self.last_end: float | None = None
        self.frozen = False
        self._profile: Profile | None = None
        self._sources: set[str] = set()  # ids of the partials added (until the freeze)

    def add(
        self,
        window_start: float,
        window_end: float,
        profile: Profile,
        *,
        freeze: bool = True,
        source_id: str | None = None,
    ) -> bool:
        """Merge one window's profile; ``True`` when this window completed the reference.

        A window starting past the span only counts as time seen (for ``grace``). With
        ``freeze=False`` the caller freezes later with ``freeze_if_covered`` (the merge
        stage does so once per batch of partials, so one partition's window past the span
        does not shut out the other partitions' partials of the same batch). A ``source_id``
        seen before is not added again: after a crash the merge stage may replay a partial
        its builder had already recorded.
        """
        if self.frozen or (source_id is not None and source_id in self._sources):
            return False
        if source_id is not None:
            self._sources.add(source_id)
        if self.first_start is None or window_start < self.first_start + self.hours * 3600.0:
            if self._profile is None:
                self._profile = Profile(profile.model_id, infer=True)
                self._profile.created_at = time.time()
            self._profile.merge(profile)
            self.first_start = (
                window_start if self.first_start is None else min(self.first_start, window_start)
            )
        self.last_end = window_end if self.last_end is None else max(self.last_end, window_end)
        return self.freeze_if_covered() if freeze else False

    def freeze_if_covered(self) -> bool:
        """Freeze once ``hours`` (+ ``grace``) of event time are covered; ``True`` when it froze."""
        if self.frozen or self._profile is None or self.first_start is None or self.last_end is None:
            return False
        if self.last_end - self.first_start >= self.hours * 3600.0 + self.grace:
            self._profile.freeze_bins(self.bins)
            # set at the freeze, so builders restored from older state get it too
            self._profile.source = "first_hours"
            self.frozen = True
            self._sources.clear()
            return True
        return False

    @property
    def reference(self) -> Profile:
        """The frozen reference; ``RuntimeError`` before the freeze."""
        if not self.frozen or self._profile is None:
            raise RuntimeError(
                f"reference not ready: {self.covered_hours():.2f} of {self.hours} hours covered"
            )
        return self._profile

    def covered_hours(self) -> float:
        if self.first_start is None or self.last_end is None:
            return 0.0
        return (self.last_end - self.first_start) / 3600.0

    def to_state(self) -> dict[str, Any]:
        return {
            "hours": self.hours,
            "bins": self.bins,
            "grace": self.grace,
            "first_start": self.first_start,
            "last_end": self.last_end,
            "frozen": self.frozen,
            "profile": None if self._profile is None else self._profile.to_state(),
            "sources": sorted(self._sources),
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> ReferenceBuilder:
        rb = cls(float(d["hours"]), int(d["bins"]), float(d.get("grace", 0.0)))
        rb.first_start, rb.last_end, rb.frozen = d["first_start"], d["last_end"], bool(d["frozen"])
        rb._profile = None if d["profile"] is None else Profile.from_state(d["profile"])
        rb._sources = set(d.get("sources", ()))
        return rb
