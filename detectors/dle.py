"""Direct loss estimation (DLE): a regressor's MAE and RMSE before its labels arrive.

NannyML's DLE fits a model of the loss (``|y - y_hat|`` and ``(y - y_hat)^2``) on the
features and prediction of a labelled reference, then averages its predictions over a chunk.
It assumes no concept drift: the loss given the inputs is the reference's, so a covariate
shift towards inputs where the model errs more raises the estimate.

Our loss model (NannyML uses LightGBM; we keep to numpy and to what a window already holds):
an **additive, piecewise-linear model** fitted by ridge least squares,

    loss(x, y_hat) ~ b + sum_f g_f(x_f) + g_pred(y_hat),

one term per feature of the reference profile plus one for the prediction:

- numeric: linear interpolation between values at the profile's bin edges (the reference
  quantiles, ``bins`` + 1 knots), flat beyond the first and last; a separate value for a
  missing or mistyped value;
- categorical: one value per reference category; one for anything else (new categories,
  ``__other__``, missing).

Why this model: being additive and linear in its parameters, its mean over a window is the
model applied to the window's *distribution* of each input, which the window profile already
holds (``Profile.new_window_like`` of the reference: a quantile sketch per numeric feature,
counts per category). So the worker needs no new per-event state: the merge stage evaluates it
on the merged window profile. Piecewise-linear rather than binned, because a covariate shift
moves values inside a bin (a binned model reads them all at the bin's reference mean), and the
sketches give the window's values to 1%. What it cannot see: interactions between features
(a loss that depends on x1 only where x2 is large is averaged over x2). Two fits share the
design: one on ``|error|`` (``estimated_mae``), one on ``error^2`` (``estimated_rmse`` is the
square root of its mean). ``docs/beyond-accuracy-estimation.md`` gives the measured accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .feature_profile import OTHER, FeatureProfile, is_number, sketch_buckets
from .profile import PREDICTION, Profile

__all__ = ["LossModel"]

RIDGE = 1.0  # in units of events: enough to settle the collinear one-hot terms, far below n


class _Term:
    """One input's columns: knots (numeric) or categories, and the column of the rest."""

    def __init__(self, name: str, kind: str, knots: Sequence[float] | np.ndarray = (),
                 categories: Sequence[str] = ()) -> None:
        self.name = name
        self.kind = kind
        self.knots = np.asarray(knots, dtype=np.float64)
        self.categories = list(categories)
        self._index = {c: i for i, c in enumerate(self.categories)}

    @property
    def width(self) -> int:
        """Columns: knots or categories, then one for missing / other."""
        return (self.knots.size if self.kind == "numeric" else len(self.categories)) + 1

    def encode(self, values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per value: two (column, weight) pairs whose weights sum to 1 (the basis row)."""
        if self.kind == "numeric":
            x = np.array([float(v) if is_number(v) else np.nan for v in values], dtype=np.float64)
            return self._tent(x)
        rest = len(self.categories)
        keys = [_category(v) for v in values]
        col = np.array([rest if k is None else self._index.get(k, rest) for k in keys], dtype=np.int64)
        one = np.ones(col.size)
        return col, one, col, np.zeros(col.size)

    def _tent(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Linear interpolation weights between the two knots around each value (clamped);
        a non-finite value goes whole to the missing column."""
        k = self.knots
        missing = ~np.isfinite(x)
        xc = np.clip(np.where(missing, k[0], x), k[0], k[-1])
        if k.size == 1:
            lo = np.zeros(x.size, dtype=np.int64)
            t = np.zeros(x.size)
        else:
            lo = np.clip(np.searchsorted(k, xc, side="right") - 1, 0, k.size - 2)
            t = (xc - k[lo]) / (k[lo + 1] - k[lo])
        hi = np.minimum(lo + 1, k.size - 1)
        lo = np.where(missing, k.size, lo)
        hi = np.where(missing, k.size, hi)
        return lo, np.where(missing, 1.0, 1.0 - t), hi, np.where(missing, 0.0, t)

    def window_shares(self, fp: FeatureProfile) -> np.ndarray | None:
        """The window's mean basis row, from its profile: sketch bucket centres (numeric) or
        category counts. None when the window never saw the input."""
        n = fp.n
        if n == 0 or fp.kind != self.kind:
            return None
        out = np.zeros(self.width)
        if self.kind == "categorical":
            for c, i in self._index.items():
                out[i] = fp.counts.get(c, 0)
            out[-1] = n - out[:-1].sum()
            return out / n
        if fp.count:
            upper, counts = sketch_buckets(fp.sketch)
            g = fp.sketch._gamma
            # a point inside each bucket, kept within the window's own min and max
            mid = np.where(upper > 0, upper * (1 + 1 / g) / 2, upper * (1 + g) / 2)
            lo, wl, hi, wh = self._tent(np.clip(mid, fp.min, fp.max))
            np.add.at(out, lo, wl * counts)
            np.add.at(out, hi, wh * counts)
        out[-1] += fp.missing + fp.mismatch
        return out / n

    def to_state(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "knots": self.knots.tolist(), "categories": self.categories}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> _Term:
        return cls(d["name"], d["kind"], d["knots"], d["categories"])


def _category(v: Any) -> str | None:
    """A value's category as ``FeatureProfile`` counts it (None: missing or mistyped)."""
    if isinstance(v, str):
        return v
    if isinstance(v, bool | np.bool_):
        return "true" if v else "false"
    if isinstance(v, int | np.integer):
        return str(int(v))
    return None


def _term_of(fp: FeatureProfile) -> _Term | None:
    if fp.kind == "categorical":
        return _Term(fp.name, "categorical", categories=[c for c in fp.counts if c != OTHER])
    if fp.edges is None or fp.edges.size == 0:
        return None  # an unbinned or empty feature: nothing to place knots on
    return _Term(fp.name, "numeric", knots=fp.edges)


class LossModel:
    """Additive piecewise-linear model of a regressor's |error| and error^2 (module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(0, 1, 20_000)
    >>> y_hat = 2 * x
    >>> y = y_hat + rng.normal(0, 0.2 + 0.5 * np.abs(x))      # errors grow with |x|
    >>> rows = [{"x": float(a), "prediction": float(p), "label": float(t)} for a, p, t in zip(x, y_hat, y)]
    >>> ref = Profile.from_records(rows)
    >>> win = Profile.new_window_like(ref)
    >>> x2 = rng.normal(1.0, 1, 5_000)                        # covariate shift
    >>> win.update_many([{"x": float(a)} for a in x2], (2 * x2).tolist())
    >>> est = ref.loss_model.estimate(win)
    >>> y2 = 2 * x2 + rng.normal(0, 0.2 + 0.5 * np.abs(x2))
    >>> round(est["estimated_mae"], 2), round(float(np.abs(y2 - 2 * x2).mean()), 2)
    (0.63, 0.63)
    """

    def __init__(self, terms: list[_Term], w_abs: np.ndarray, w_sq: np.ndarray, n: int = 0) -> None:
        self.terms = terms
        self.w_abs = np.asarray(w_abs, dtype=np.float64)
        self.w_sq = np.asarray(w_sq, dtype=np.float64)
        self.n = int(n)
        width = 1 + sum(t.width for t in terms)
        if self.w_abs.shape != (width,) or self.w_sq.shape != (width,):
            raise ValueError(f"expected {width} weights (intercept + columns)")

    @classmethod
    def fit(
        cls,
        reference: Profile,
        features: Sequence[dict[str, Any]],
        predictions: Sequence[float],
        labels: Sequence[float],
        ridge: float = RIDGE,
    ) -> LossModel | None:
        """Fit on the labelled reference rows (their features, predictions and true values);
        the terms come from ``reference``'s features and prediction. None without rows."""
        y_hat = np.asarray(predictions, dtype=np.float64)
        err = y_hat - np.asarray(labels, dtype=np.float64)
        if err.size == 0 or len(features) != err.size:
            return None
        fps = [*reference.features.values(), *([reference.prediction] if reference.prediction else [])]
        terms = [t for fp in fps if (t := _term_of(fp)) is not None]
        columns = [t.encode([f.get(t.name) for f in features] if t.name != PREDICTION else y_hat.tolist())
                   for t in terms]
        x_tx, x_ty = _normal_equations(terms, columns, np.stack([np.abs(err), err * err], axis=1))
        a = x_tx + ridge * np.eye(x_tx.shape[0])
        a[0, 0] -= ridge  # the intercept is not shrunk
        w = np.linalg.solve(a, x_ty)
        model = cls(terms, w[:, 0], w[:, 1], n=err.size)
        model._fill_unseen(x_tx.diagonal()[1:])
        return model

    def _fill_unseen(self, support: np.ndarray) -> None:
        """Give columns no reference row used the mean of their term's weights over the
        reference (ridge leaves them at 0, which means nothing in particular)."""
        at = 0
        for t in self.terms:
            sl = slice(1 + at, 1 + at + t.width)
            s = support[at : at + t.width]
            for w in (self.w_abs, self.w_sq):
                if s.sum() > 0:
                    w[sl] = np.where(s > 0, w[sl], float(s @ w[sl]) / float(s.sum()))
            at += t.width

    def _shares(self, window: Profile) -> np.ndarray | None:
        parts = [np.ones(1)]
        for t in self.terms:
            fp = window.prediction if t.name == PREDICTION else window.features.get(t.name)
            sh = None if fp is None else t.window_shares(fp)
            if sh is None:
                return None
            parts.append(sh)
        return np.concatenate(parts)

    def estimate(self, window: Profile) -> dict[str, float] | None:
        """``estimated_mae`` and ``estimated_rmse`` of a window profile (the reference's bins);
        None when the window is empty or lacks an input."""
        if window.n_events == 0:
            return None
        s = self._shares(window)
        if s is None:
            return None
        mae = max(float(s @ self.w_abs), 0.0)
        mse = max(float(s @ self.w_sq), 0.0)
        return {"estimated_mae": mae, "estimated_rmse": math.sqrt(mse)}

    def predict(self, features: Sequence[dict[str, Any]], predictions: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """Per-event predicted |error| and error^2 (what ``estimate`` averages)."""
        n = len(features)
        out_abs = np.full(n, self.w_abs[0])
        out_sq = np.full(n, self.w_sq[0])
        at = 1
        for t in self.terms:
            vals = list(predictions) if t.name == PREDICTION else [f.get(t.name) for f in features]
            lo, wl, hi, wh = t.encode(vals)
            for w, out in ((self.w_abs, out_abs), (self.w_sq, out_sq)):
                out += wl * w[at + lo] + wh * w[at + hi]
            at += t.width
        return out_abs, out_sq

    def to_state(self) -> dict[str, Any]:
        return {"terms": [t.to_state() for t in self.terms], "w_abs": self.w_abs.tolist(),
                "w_sq": self.w_sq.tolist(), "n": self.n}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> LossModel:
        return cls([_Term.from_state(t) for t in d["terms"]], d["w_abs"], d["w_sq"], int(d.get("n", 0)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LossModel) and self.to_state() == other.to_state()

    def __repr__(self) -> str:
        return f"LossModel(terms={[t.name for t in self.terms]}, n={self.n})"


Basis = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _normal_equations(terms: list[_Term], columns: Sequence[Basis],
                      targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """X'X and X'Y of the basis rows without building X (n x columns): every row has an
    intercept and two weighted entries per term, so X'X is a sum of weighted bincounts."""
    offsets = np.cumsum([1] + [t.width for t in terms])[:-1]
    width = 1 + sum(t.width for t in terms)
    n = targets.shape[0]
    entries = [(np.zeros(n, dtype=np.int64), np.ones(n))]
    for off, (lo, wl, hi, wh) in zip(offsets, columns, strict=True):
        entries += [(lo + off, wl), (hi + off, wh)]
    x_tx = np.zeros(width * width)
    x_ty = np.zeros((width, targets.shape[1]))
    for ca, wa in entries:
        for j in range(targets.shape[1]):
            x_ty[:, j] += np.bincount(ca, weights=wa * targets[:, j], minlength=width)
        for cb, wb in entries:
            x_tx += np.bincount(ca * width + cb, weights=wa * wb, minlength=width * width)
    return x_tx.reshape(width, width), x_ty
