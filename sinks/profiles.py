"""Reference profiles into ClickHouse (``driftline.reference_profiles``, migrations 007 and 008).

Profiles are saved as JSON files by ``driftline baseline create`` and by the worker (first-hours
references), under ``<root>/<model_id>/profile-v<N>.json`` (``streams/baseline_cmd.py``; the
pattern is repeated here because sinks may not import streams). Only one process may open a chdb
path, so whoever writes profiles never touches ClickHouse: the process that owns the store (the
worker's sink) copies new versions in with :func:`sync_profiles`, at start and periodically.

Guarantees
----------
* A version is copied in one insert (one block, no partition key: atomic), so it is either
  entirely in the table or not at all.
* Idempotent: versions already in the table are not read again, and a repeated insert (a crash
  between insert and the next check) writes identical rows that ReplacingMergeTree collapses.
* An empty file (a version claimed but not yet renamed into place, or left so by a crash of
  ``save_profile``) is skipped quietly; a malformed one with a warning. Both are tried again at
  the next sync; neither stops the others.
"""

from __future__ import annotations

import logging
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from driftline.detectors.datadrift import PREDICTION_NAME
from driftline.detectors.profile import FeatureProfile, Profile
from driftline.sinks.migrations import validate_database

log = logging.getLogger(__name__)

TABLE = "reference_profiles"
COLUMNS = (
    "model_id", "version", "feature", "kind", "n", "present", "missing", "missing_rate",
    "type_mismatch", "type_mismatch_rate", "min", "max", "p01", "p05", "p25", "p50", "p75", "p95",
    "p99", "bin_edges", "bin_counts", "bin_labels", "categories", "category_counts", "created_at",
    "source", "n_events", "reference_metrics", "drift_limits", "multivariate",
)  # fmt: skip
QUANTILES = {
    "p01": 0.01,
    "p05": 0.05,
    "p25": 0.25,
    "p50": 0.5,
    "p75": 0.75,
    "p95": 0.95,
    "p99": 0.99,
}
_VERSION_FILE = re.compile(r"profile-v(\d+)\.json")


def _rate(k: int, n: int) -> float:
    return k / n if n else 0.0


def _feature_row(fp: FeatureProfile) -> tuple[Any, ...]:
    """The per-feature columns (``kind`` through ``category_counts``) of one feature profile."""
    numeric = fp.kind == "numeric"
    present = numeric and fp.count > 0
    lo, hi = (fp.min, fp.max) if present else (None, None)
    # sketch estimates are within 1% of a true value; clamped so that p01 >= min and p99 <= max
    qs = [
        min(max(fp.sketch.quantile(q), fp.min), fp.max) if present else None
        for q in QUANTILES.values()
    ]
    edges = fp.edges if numeric else None  # None too for an unbinned (still warming up) profile
    return (
        fp.kind, fp.n, fp.count, fp.missing, _rate(fp.missing, fp.n), fp.mismatch,
        _rate(fp.mismatch, fp.n), lo, hi, *qs,
        [] if edges is None else edges.tolist(),
        [] if edges is None else fp.hist.tolist(),
        [] if edges is None else fp.bin_labels(),
        [] if numeric else list(fp.counts),
        [] if numeric else list(fp.counts.values()),
    )  # fmt: skip


def profile_rows(state: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Rows of ``reference_profiles`` (in :data:`COLUMNS` order) for a ``Profile.to_state()``.

    One row per feature, then one for the prediction (feature ``"prediction"``) when the
    profile has one; each row carries its chunk limits (``drift_limits``) and every row the
    multivariate signal's (``multivariate``). Raises ``KeyError``/``ValueError``/``TypeError`` on a malformed state.

    Examples
    --------
    >>> p = Profile.from_records([{"x": 1.0, "c": "a"}, {"x": None, "c": "b"}], model_id="m", bins=1)
    >>> p.version = 3
    >>> [(r[0], r[1], r[2], r[3], r[4], r[7]) for r in profile_rows(p.to_state())]
    [('m', 3, 'x', 'numeric', 2, 0.5), ('m', 3, 'c', 'categorical', 2, 0.0)]
    """
    p = Profile.from_state(state)
    created = datetime.fromtimestamp(p.created_at, tz=UTC)
    metrics = {k: v for k, v in p.metrics.items() if not math.isnan(v)}
    head = (p.model_id, p.version)
    tail = (created, p.source, p.n_events, metrics)
    mv = _multivariate(p)
    rows = [(*head, fp.name, *_feature_row(fp), *tail, _limits(p, fp.name, "feature"), mv)
            for fp in p.features.values()]
    if p.prediction is not None:
        rows.append((*head, PREDICTION_NAME, *_feature_row(p.prediction), *tail, _limits(p, "", "prediction"), mv))
    return rows


def _limits(p: Profile, name: str, role: str) -> dict[str, float]:
    """``{"<statistic>_mean": ..., "<statistic>_std": ...}`` of the reference chunks, finite ones only."""
    lim = p.limits
    per = {} if lim is None else (lim.prediction if role == "prediction" else lim.features.get(name, {}))
    out = {f"{s}_{k}": v for s, c in per.items() for k, v in (("mean", c.mean), ("std", c.std))}
    return {k: float(v) for k, v in out.items() if math.isfinite(v)}


def _multivariate(p: Profile) -> dict[str, float]:
    if p.pca is None:
        return {}
    out = {"components": float(p.pca.n_components), "explained_variance": float(sum(p.pca.explained))}
    mv = None if p.limits is None else p.limits.multivariate
    if p.limits is not None and mv is not None and math.isfinite(mv.std):
        out |= {"reconstruction_error_mean": mv.mean, "reconstruction_error_std": mv.std,
                "chunk_size": float(p.limits.chunk_size)}
    return out


def profile_files(root: str | Path) -> list[tuple[str, int, Path]]:
    """``(model_id, version, path)`` of every ``<root>/<model_id>/profile-v<N>.json``, sorted."""
    base = Path(root)
    if not base.is_dir():
        return []
    found = [
        (d.name, int(m.group(1)), f)
        for d in base.iterdir()
        if d.is_dir()
        for f in d.iterdir()
        if (m := _VERSION_FILE.fullmatch(f.name))
    ]
    return sorted(found)


def synced_versions(client: Any, database: str = "driftline") -> set[tuple[str, int]]:
    """``(model_id, version)`` pairs already in ``reference_profiles``."""
    database = validate_database(database)
    rows = client.query(f"SELECT DISTINCT model_id, version FROM {database}.{TABLE}").result_rows
    return {(str(m), int(v)) for m, v in rows}


def insert_rows(client: Any, rows: list[tuple[Any, ...]], database: str = "driftline") -> None:
    """Insert one profile version's rows (from :func:`profile_rows`) in a single insert."""
    if rows:
        table = f"{validate_database(database)}.{TABLE}"
        client.insert(table, data=rows, column_names=list(COLUMNS))


def sync_profiles(
    client: Any, root: str | Path, database: str = "driftline"
) -> list[tuple[str, int]]:
    """Copy the profile versions under ``root`` that ``reference_profiles`` lacks.

    Returns the ``(model_id, version)`` pairs inserted by this call. Insert errors propagate
    (the caller retries later; nothing half-written stays behind).
    """
    files = profile_files(root)
    if not files:
        return []
    have = synced_versions(client, database)
    done: list[tuple[str, int]] = []
    for model_id, version, path in files:
        if (model_id, version) in have:
            continue
        try:
            raw = path.read_bytes()
            if not raw:  # claimed, not written yet: no warning every sync for a crash leftover
                log.debug("reference profile %s is empty (being written?)", path)
                continue
            state = orjson.loads(raw)
            if (state.get("model_id"), state.get("version")) != (model_id, version):
                raise ValueError(f"holds {state.get('model_id')!r} v{state.get('version')}")
            rows = profile_rows(state)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("reference profile %s not synced (retried later): %s", path, exc)
            continue
        insert_rows(client, rows, database)
        done.append((model_id, version))
        log.info("reference profile synced to ClickHouse",
                 extra={"model_id": model_id, "version": version, "features": len(rows)})  # fmt: skip
    return done


def sync_states(client: Any, states: list[dict[str, Any]], database: str = "driftline") -> list[tuple[str, int]]:
    """Copy the profile versions in ``states`` (``Profile.to_state()`` dicts, e.g. read from the
    baselines topic) that ``reference_profiles`` lacks; returns the pairs inserted."""
    if not states:
        return []
    have = synced_versions(client, database)
    done: list[tuple[str, int]] = []
    for state in states:
        pair = (str(state.get("model_id")), int(state.get("version") or 0))
        if pair in have or not pair[1]:
            continue
        insert_rows(client, profile_rows(state), database)
        done.append(pair)
        log.info("reference profile synced to ClickHouse from the baselines topic",
                 extra={"model_id": pair[0], "version": pair[1]})
    return done
