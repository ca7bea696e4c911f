"""What one batch adds to its windows, kept per window and applied with one numpy call each.

A sketch or histogram update costs ~30 µs whatever its size, so per-event updates would cost
more than the rest of the event: the join stage buffers each window's latencies, scores,
outcomes, features, CBPE inputs and fairness groups during a batch and ``flush`` applies them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from driftline.detectors.cbpe import CBPEAccumulator
from driftline.detectors.fairness import GroupRates
from driftline.detectors.profile import Profile
from driftline.schemas.events import Prediction
from driftline.streams.windows import WindowPartial


class WindowBuffers:
    """Per-window buffers of one batch (``flush`` applies and empties them)."""

    def __init__(self) -> None:
        self.predictions: dict[WindowPartial, tuple[list[float], list[float]]] = {}
        self.outcomes: dict[WindowPartial, tuple[list[Any], list[Any], list[float], list[float]]] = {}
        self.features: dict[WindowPartial, tuple[list[dict[str, Any]], list[Any]]] = {}
        self.cbpe: dict[WindowPartial, tuple[list[float], list[int]]] = {}
        self.groups: dict[WindowPartial, tuple[tuple[str, ...], list[dict[str, str]], list[int], list[int]]] = {}

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def add_prediction(self, w: WindowPartial, latency: float, score: float) -> None:
        buf = self.predictions.get(w)
        if buf is None:
            buf = self.predictions[w] = ([], [])
        buf[0].append(latency)
        buf[1].append(score)

    def add_outcome(self, w: WindowPartial, y_true: Any, y_pred: Any, score: float, delay: float) -> None:
        buf = self.outcomes.get(w)
        if buf is None:
            buf = self.outcomes[w] = ([], [], [], [])
        buf[0].append(y_true)
        buf[1].append(y_pred)
        buf[2].append(score)
        buf[3].append(delay)

    def add_features(self, w: WindowPartial, ref: Profile | None, p: Prediction) -> None:
        """The event's features and prediction for the window profile.

        ``ref`` None: the model's reference is still being built from its first hours, so the
        window profile is unbinned (sketches and categories, merged into the reference)."""
        if w.profile is None:
            w.profile = Profile(p.model_id, infer=True) if ref is None else Profile.new_window_like(ref)
        elif ref is not None and w.profile.pca is None and ref.pca is not None:
            w.profile.attach_pca(ref)  # a window restored from state keeps its sums, not the PCA
        buf = self.features.get(w)
        if buf is None:
            buf = self.features[w] = ([], [])
        buf[0].append(p.features)
        # As ``Profile.from_records`` reads an inference event: score, else value, else label.
        buf[1].append(p.score if p.score is not None else p.value if p.value is not None else p.label)

    def add_cbpe(self, w: WindowPartial, p: Prediction) -> None:
        """The score and predicted label for the window's CBPE estimate."""
        if w.cbpe is None:
            w.cbpe = CBPEAccumulator()
        buf = self.cbpe.get(w)
        if buf is None:
            buf = self.cbpe[w] = ([], [])
        buf[0].append(np.nan if p.score is None else p.score)
        buf[1].append(int(p.label) if p.label in (0, 1) else 0)  # type: ignore[arg-type]

    def add_group(self, w: WindowPartial, protected: tuple[str, ...], segments: dict[str, str],
                  y_true: int, y_pred: int) -> None:
        buf = self.groups.get(w)
        if buf is None:
            buf = self.groups[w] = (protected, [], [], [])
        buf[1].append(segments)
        buf[2].append(y_true)
        buf[3].append(y_pred)

    def flush(self) -> None:
        """Apply every buffer to its window, then empty them."""
        for w, (lat, sc) in self.predictions.items():
            w.add_predictions(np.asarray(lat, dtype=float), np.asarray(sc, dtype=float))
        for w, (yt, yp, sc, delay) in self.outcomes.items():
            d = np.asarray(delay, dtype=float)
            if w.task == "ranking":
                w.add_ranking(yp, yt, d)
            elif w.task == "multiclass":
                w.add_outcomes(yt, yp, None, d)
            elif w.task == "binary":
                w.add_outcomes(np.asarray(yt, dtype=np.int64), np.asarray(yp, dtype=np.int64),
                               np.asarray(sc, dtype=float), d)
            else:
                w.add_outcomes(np.asarray(yt, dtype=float), np.asarray(yp, dtype=float), None, d)
        for w, (feats, preds) in self.features.items():
            if w.profile is not None:
                w.profile.update_many(feats, preds)
        for w, (scores, labels) in self.cbpe.items():
            if w.cbpe is not None:
                w.cbpe.update_many(np.asarray(scores, dtype=float), np.asarray(labels, dtype=np.int64))
        for w, (keys, segs, yt_g, yp_g) in self.groups.items():
            if w.fairness is None:
                w.fairness = {}
            for k in keys:
                rates = w.fairness.get(k)
                if rates is None:
                    rates = w.fairness[k] = GroupRates()
                rates.update_many([s.get(k) for s in segs], yt_g, yp_g)
        self.reset()
