"""Mergeable data profiles of a model's inputs and outputs: the reference and each window.

A ``FeatureProfile`` summarises one feature. A *numeric* feature keeps a fixed-bin
histogram whose edges are quantiles of the reference sample (``bins`` equal-mass bins
between the reference min and max, plus an underflow and an overflow bin), the count,
min/max and a ``QuantileSketch`` for the Kolmogorov-Smirnov statistic. A *categorical*
feature (strings, booleans as ``"true"``/``"false"``) keeps category counts capped at
``max_categories``; later categories go to ``"__other__"``.

Every profile counts ``missing`` values (key absent, ``None``, NaN or +-inf) and
``mismatch`` values (a string or bool in a numeric feature; a float, list or dict in a
categorical one), so ``count + missing + mismatch`` is the number of events seen.

``Profile`` is the set of feature profiles of one model plus the prediction distribution
(``"__prediction__"``: the score, the regression value or the predicted label) and, for
a labelled reference, its metrics and, for a binary classifier, the ``ScoreCalibrator`` that
CBPE reads its scores through (``driftline.detectors.calibration``), for a regressor the loss
model that estimates its MAE and RMSE before labels (``driftline.detectors.dle``; both format 2,
absent from format 1 profiles, which still load). ``Profile.new_window_like(reference)`` gives an empty
profile with the reference's bins and categories, so that window and reference compare
bin to bin. A profile may also be *unbinned* (numeric ``edges`` is ``None``: sketch only),
which is what a reference built from the first hours of production accumulates before
``freeze_bins()`` derives edges from the sketches (``streams/baseline_cmd.py``).
"""

from __future__ import annotations

import csv
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .calibration import ScoreCalibrator, fit_calibrator
from .feature_profile import OTHER, FeatureProfile, infer_kind, is_number, sketch_buckets
from .metrics import BinaryAccumulator, MulticlassAccumulator, RegressionAccumulator
from .multivariate import PCAModel, ReconstructionSums
from .thresholds import ReferenceLimits

if TYPE_CHECKING:  # dle reads profiles: imported where used, not at module level
    from .dle import LossModel

__all__ = ["FeatureProfile", "Profile", "infer_kind", "load_records", "sketch_buckets", "PREDICTION", "OTHER",
           "LEGACY_PREDICTION"]

# 2: references carry a binary classifier's score calibrator or a regressor's loss model
# 3: references carry drift limits from their chunks and a PCA of the numeric features;
#    windows carry reconstruction-error sums (older ones load without)
PROFILE_FORMAT = 3
# The prediction profile's internal name (loss-model terms use it too); users see it as
# ``"prediction"`` (``driftline.detectors.datadrift.PREDICTION_NAME``).
PREDICTION = "__prediction__"
LEGACY_PREDICTION = PREDICTION


def _split_row(
    row: dict[str, Any], prediction_column: str, label_column: str
) -> tuple[dict[str, Any], Any, Any]:
    """(features, prediction, label) of a flat row or of an inference-event-shaped row."""
    feats = row.get("features")
    if isinstance(feats, dict):
        pred = row.get("prediction")
        if isinstance(pred, dict):
            pred = next(
                (pred[k] for k in ("score", "value", "label") if pred.get(k) is not None), None
            )
        label = row.get(label_column)
        return feats, pred, label.get("label") if isinstance(label, dict) else label
    feats = {k: v for k, v in row.items() if k not in (prediction_column, label_column)}
    return feats, row.get(prediction_column), row.get(label_column)


def _labelled(preds: list[Any], labels: list[Any]) -> tuple[tuple[Any, ...], tuple[Any, ...]] | None:
    """(predictions, labels) of the rows that have both, or None."""
    pairs = [(p, y) for p, y in zip(preds, labels, strict=True) if p is not None and y is not None]
    if not pairs:
        return None
    p, y = zip(*pairs, strict=True)
    return p, y


def _binary_scores(p: Sequence[Any], y: Sequence[Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """(scores, 0/1 labels) when the pairs are a binary classifier's (scores in [0, 1]), else None."""
    if not (all(is_number(v) for v in p) and all(is_number(v) or isinstance(v, bool) for v in y)):
        return None
    s, t = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if set(np.unique(t)) <= {0.0, 1.0} and s.min() >= 0.0 and s.max() <= 1.0:
        return s, t.astype(int)
    return None


def _reference_metrics(p: Sequence[Any], y: Sequence[Any]) -> dict[str, float]:
    binary = _binary_scores(p, y)
    if binary is not None:
        s, t = binary
        b = BinaryAccumulator()
        b.update_many(t, (s >= 0.5).astype(int), s)
        return b.metrics()
    if all(is_number(v) for v in p) and all(is_number(v) or isinstance(v, bool) for v in y):
        r = RegressionAccumulator()
        r.update_many(np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64))
        return r.metrics()
    m = MulticlassAccumulator()
    m.update_many([str(v) for v in y], [str(v) for v in p])
    return m.metrics()


def _fit_loss_model(profile: Profile, split: list[tuple[dict[str, Any], Any, Any]]) -> LossModel | None:
    """A regressor's loss model, fitted on the rows with a numeric prediction and label."""
    from .dle import LossModel

    rows = [(f, pr, y) for f, pr, y in split if is_number(pr) and is_number(y)]
    return LossModel.fit(profile, [f for f, _, _ in rows], [float(pr) for _, pr, _ in rows],
                         [float(y) for _, _, y in rows])


class Profile:
    """Feature profiles, prediction profile and reference metrics of one model.

    Attributes ``model_id``, ``version`` (the baseline version, 0 until saved),
    ``created_at`` (epoch seconds), ``source`` (what the reference was built from: the input
    file's name, ``"first_hours"``, or ``""`` when unknown), ``n_events``, ``features`` (name -> ``FeatureProfile``),
    ``prediction`` (``FeatureProfile`` named ``"__prediction__"`` or ``None``), ``metrics``
    (reference metrics, labelled data only), ``calibrator`` (a binary classifier's score
    calibrator, labelled data only, else ``None``), ``loss_model`` (a regressor's
    ``LossModel``, labelled data only, else ``None``) and ``unknown_features`` (name -> events that
    carried a feature this profile does not know, at most 100 names: schema drift).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(3)
    >>> rows = [{"amount": float(a), "country": c, "prediction": float(s), "label": int(s > 0.5)}
    ...         for a, c, s in zip(rng.lognormal(3, 1, 500), rng.choice(["DE", "FR"], 500),
    ...                            rng.uniform(0, 1, 500))]
    >>> ref = Profile.from_records(rows, model_id="fraud")
    >>> sorted(ref.features), ref.features["amount"].kind, ref.metrics["accuracy"]
    (['amount', 'country'], 'numeric', 1.0)
    >>> win = Profile.new_window_like(ref)
    >>> win.update_many([{"amount": 12.0, "country": "DE", "new": 1}, {"country": 7}], [0.2, 0.9])
    >>> win.n_events, win.features["amount"].missing, win.unknown_features, win.prediction.count
    (2, 1, {'new': 1}, 2)
    >>> Profile.from_state(win.to_state()) == win
    True
    """

    MAX_UNKNOWN = 100

    def __init__(
        self,
        model_id: str = "",
        features: dict[str, FeatureProfile] | None = None,
        prediction: FeatureProfile | None = None,
        *,
        infer: bool = False,
    ) -> None:
        self.model_id = model_id
        self.version = 0
        self.created_at = time.time()
        self.source = ""
        self.features: dict[str, FeatureProfile] = dict(features or {})
        self.prediction = prediction
        self.metrics: dict[str, float] = {}
        self.calibrator: ScoreCalibrator | None = None
        self.loss_model: LossModel | None = None
        # references from ``baseline create``: chunk limits and the PCA of the numeric features
        self.limits: ReferenceLimits | None = None
        self.pca: PCAModel | None = None
        # windows of a reference with a PCA: their reconstruction errors (``pca`` is the
        # reference's, attached at run time and never part of a window's state)
        self.reconstruction: ReconstructionSums | None = None
        self.n_events = 0
        self.unknown_features: dict[str, int] = {}
        # Unbinned warm-up profiles add the features they meet (kind inferred per batch).
        self.infer = infer

    @classmethod
    def from_records(
        cls,
        rows: Sequence[dict[str, Any]],
        feature_names: Sequence[str] | None = None,
        *,
        model_id: str = "",
        bins: int = 10,
        max_categories: int = 50,
        prediction_column: str = "prediction",
        label_column: str = "label",
        calibrate: bool = True,
        chunk_size: int | None = None,
        pca_variance: float = 0.65,
    ) -> Profile:
        """Reference profile of rows (flat dicts, or inference events with ``features``).

        ``chunk_size``: also fit the PCA of the numeric features (components explaining
        ``pca_variance``) and derive drift limits from contiguous chunks of that many rows
        (``driftline.detectors.thresholds``; none with fewer than 3 chunks).

        Labelled rows give the reference metrics; for a binary classifier (0/1 labels, scores
        in [0, 1]) and ``calibrate``, also the score calibrator (``fit_calibrator``: isotonic
        when the scores are miscalibrated, else the identity); for a regressor (numbers) and
        ``calibrate``, the loss model of its errors (``LossModel.fit``).
        """
        split = [_split_row(r, prediction_column, label_column) for r in rows]
        feats = [f for f, _, _ in split]
        if feature_names is None:
            feature_names = list(dict.fromkeys(k for f in feats for k in f))
        p = cls(model_id)
        for name in feature_names:
            p.features[name] = FeatureProfile.from_values(
                name, [f.get(name) for f in feats], bins=bins, max_categories=max_categories
            )
        preds = [pr for _, pr, _ in split]
        if any(v is not None for v in preds):
            p.prediction = FeatureProfile.from_values(
                PREDICTION, preds, bins=bins, max_categories=max_categories
            )
            labelled = _labelled(preds, [y for _, _, y in split])
            if labelled is not None:
                p.metrics = _reference_metrics(*labelled)
                binary = _binary_scores(*labelled) if calibrate else None
                if binary is not None:
                    p.calibrator = fit_calibrator(*binary)
                elif calibrate and "mae" in p.metrics:  # a regressor: fit its loss model
                    p.loss_model = _fit_loss_model(p, split)
        p.n_events = len(rows)
        if chunk_size is not None:
            p.fit_limits(feats, preds if p.prediction is not None else None, chunk_size, pca_variance)
        return p

    def fit_limits(self, features: Sequence[dict[str, Any]], predictions: Sequence[Any] | None,
                   chunk_size: int, pca_variance: float = 0.65) -> None:
        """Fit the PCA of the numeric features and the chunk limits on this profile's own rows."""
        from .thresholds import reference_limits

        numeric = [n for n, fp in self.features.items() if fp.kind == "numeric"]
        self.pca = PCAModel.fit(features, numeric, pca_variance)
        self.limits = reference_limits(self, features, predictions, chunk_size, self.pca)

    @classmethod
    def new_window_like(cls, reference: Profile) -> Profile:
        """Empty profile with the reference's features, bins and categories."""
        p = cls(
            reference.model_id,
            {k: f.empty_like() for k, f in reference.features.items()},
            None if reference.prediction is None else reference.prediction.empty_like(),
        )
        p.version = reference.version
        if reference.pca is not None:
            p.pca = reference.pca
            p.reconstruction = ReconstructionSums()
        return p

    def attach_pca(self, reference: Profile) -> None:
        """Give a restored window the reference's PCA (a window's state keeps only its sums)."""
        if self.pca is None and reference.pca is not None and self.version == reference.version and not self.infer:
            self.pca = reference.pca
            if self.reconstruction is None:
                self.reconstruction = ReconstructionSums()

    def update_many(
        self,
        features: Sequence[dict[str, Any] | None],
        predictions: Sequence[Any] | np.ndarray | None = None,
    ) -> None:
        """Add a batch of events: one feature dict (or ``None``) per event, optional predictions."""
        rows = [f or {} for f in features]
        self.n_events += len(rows)
        if self.infer:
            for name in dict.fromkeys(k for r in rows for k in r if k not in self.features):
                col = [r.get(name) for r in rows]
                if any(v is not None for v in col):
                    self.features[name] = FeatureProfile(name, infer_kind(col))
                    self.features[name].missing = self.n_events - len(rows)
        for name, fp in self.features.items():
            fp.update([r.get(name) for r in rows])
        known = self.features
        unknown = self.unknown_features
        for r in rows:
            if len(r) > len(known) or not known.keys() >= r.keys():
                for k in r.keys() - known.keys():
                    if k in unknown or len(unknown) < self.MAX_UNKNOWN:
                        unknown[k] = unknown.get(k, 0) + 1
        if predictions is not None:
            self.update_predictions(predictions)
        if self.pca is not None and self.reconstruction is not None:
            self.reconstruction.add_residuals(self.pca.residuals(rows))

    def update_predictions(self, values: Sequence[Any] | np.ndarray) -> None:
        """Add predictions (scores, regression values or labels) to ``"__prediction__"``."""
        vals = values.tolist() if isinstance(values, np.ndarray) else list(values)
        if self.prediction is None:
            if not self.infer:
                return
            self.prediction = FeatureProfile(PREDICTION, infer_kind(vals))
        self.prediction.update(vals)

    def freeze_bins(self, bins: int = 10) -> None:
        """Bin every unbinned numeric profile from its sketch and stop adding features."""
        for fp in [*self.features.values(), *([self.prediction] if self.prediction else [])]:
            fp.freeze_bins(bins)
        self.infer = False
        self.unknown_features = {
            k: v for k, v in self.unknown_features.items() if k not in self.features
        }

    def merge(self, other: Profile) -> None:
        """Add ``other`` into this profile (in place); features only one side has are kept."""
        for name, fp in other.features.items():
            if name in self.features:
                self.features[name].merge(fp)
            else:
                new = fp.empty_like(window=False)
                new.missing = self.n_events
                new.merge(fp)
                self.features[name] = new
        for name in self.features.keys() - other.features.keys():
            self.features[name].missing += other.n_events
        if other.prediction is not None:
            if self.prediction is None:
                self.prediction = other.prediction.empty_like(window=False)
            self.prediction.merge(other.prediction)
        for k, v in other.unknown_features.items():
            if k in self.unknown_features or len(self.unknown_features) < self.MAX_UNKNOWN:
                self.unknown_features[k] = self.unknown_features.get(k, 0) + v
        if other.reconstruction is not None:
            if self.reconstruction is None:
                self.reconstruction = ReconstructionSums()
            self.reconstruction.merge(other.reconstruction)
        self.n_events += other.n_events

    def to_state(self) -> dict[str, Any]:
        """JSON-safe state."""
        return {
            "format": PROFILE_FORMAT,
            "model_id": self.model_id,
            "version": self.version,
            "created_at": self.created_at,
            "source": self.source,
            "n_events": self.n_events,
            "infer": self.infer,
            "features": [f.to_state() for f in self.features.values()],
            "prediction": None if self.prediction is None else self.prediction.to_state(),
            "metrics": dict(self.metrics),
            "unknown_features": dict(self.unknown_features),
            # only references have one: window states (written every batch) stay as they were
            **({} if self.calibrator is None else {"calibrator": self.calibrator.to_state()}),
            **({} if self.loss_model is None else {"loss_model": self.loss_model.to_state()}),
            **({} if self.limits is None else {"limits": self.limits.to_state()}),
            **({} if self.pca is None or self.reconstruction is not None else {"pca": self.pca.to_state()}),
            **({} if self.reconstruction is None else {"recon": self.reconstruction.to_state()}),
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> Profile:
        if d.get("format", PROFILE_FORMAT) > PROFILE_FORMAT:
            raise ValueError(
                f"profile format {d['format']} is newer than this Driftline ({PROFILE_FORMAT})"
            )
        feats = [FeatureProfile.from_state(f) for f in d["features"]]
        pred = None if d["prediction"] is None else FeatureProfile.from_state(d["prediction"])
        p = cls(d["model_id"], {f.name: f for f in feats}, pred, infer=bool(d.get("infer", False)))
        p.version, p.created_at, p.n_events = (
            int(d["version"]),
            float(d["created_at"]),
            int(d["n_events"]),
        )
        # an optional key: profiles saved before sources were recorded read as unknown ("")
        p.source = str(d.get("source", ""))
        p.metrics = {k: float(v) for k, v in d["metrics"].items()}
        p.unknown_features = {k: int(v) for k, v in d["unknown_features"].items()}
        # absent from format 1 profiles and from window profiles: CBPE reads the scores as they are
        if d.get("calibrator") is not None:
            p.calibrator = ScoreCalibrator.from_state(d["calibrator"])
        if d.get("loss_model") is not None:
            from .dle import LossModel

            p.loss_model = LossModel.from_state(d["loss_model"])
        # absent before format 3: fixed drift cuts, no multivariate signal
        if d.get("limits") is not None:
            p.limits = ReferenceLimits.from_state(d["limits"])
        if d.get("pca") is not None:
            p.pca = PCAModel.from_state(d["pca"])
        if d.get("recon") is not None:
            p.reconstruction = ReconstructionSums.from_state(d["recon"])
        return p

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Profile) and self.to_state() == other.to_state()

    def __repr__(self) -> str:
        return f"Profile({self.model_id!r}, v{self.version}, features={len(self.features)}, n_events={self.n_events})"


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|nan|NaN|inf|Infinity)")


def _parse_cell(s: str) -> Any:
    if s == "":
        return None
    if _NUMBER.fullmatch(s):
        return int(s) if s.lstrip("+-").isdigit() else float(s)
    return s


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``.csv`` (numbers parsed, empty cell = missing), ``.jsonl``/``.ndjson``,
    ``.json`` (a list of objects) or ``.parquet`` file (needs ``pip install pyarrow``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            return [{k: _parse_cell(v) for k, v in row.items()} for row in csv.DictReader(f)]
    if suffix in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    if suffix == ".json":
        rows = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(rows, list):
            raise ValueError(f"{path}: expected a JSON list of objects")
        return rows
    if suffix in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow") from e
        return list(pq.read_table(path).to_pylist())
    raise ValueError(
        f"{path}: unsupported file type {suffix!r} (use .csv, .jsonl, .json or .parquet)"
    )
