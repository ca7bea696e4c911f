"""Fleet simulator: three models serving traffic, delayed labels, injected drift.

The generator part (``FleetSimulator``, ``generate``) is pure and deterministic for a seed
(and a fixed ``start_ts``); ``run_simulation`` is the I/O edge that sends through the SDK.

Ground truth: every prediction comes from a fixed "model" function of the features; the
true label comes from a "world" function. Before ``drift_at`` the world agrees with the
model up to label noise (fraud: ~10% errors); after it, the world's relationship changes
(fraud moves to small amounts: "card testing"), so fraud's error rate rises to ~35%.

A ranking model (``ranking_model()``, not in the default fleet) recommends 12 items per
request from its user group's part of a 500-item catalogue; users click rank r with a
probability that falls with r and sometimes click an item outside the list. Its concept
drift is a stale ranker: after ``drift_at`` the top 3 ranks are rarely relevant (users click
deeper): NDCG@10 falls from about 0.62 to 0.35, MRR from 0.57 to 0.21, CTR from 0.79 to 0.54.
"""

from __future__ import annotations

import heapq
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

__all__ = [
    "ModelSpec",
    "default_models",
    "ranking_model",
    "FleetSimulator",
    "generate",
    "run_simulation",
]

Event = dict[str, Any]
# A model's generator: (rng, timestamps, concept_drifted, covariate_drifted, version index)
#   -> (prediction output dicts, features, segments, truth dicts)
ModelFn = Callable[
    [np.random.Generator, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    tuple[list[Event], list[Event], list[dict[str, str]], list[Event]],
]

_MCATS = np.array(["grocery", "fashion", "electronics", "travel", "gaming"])
_COUNTRIES = np.array(["US", "DE", "GB", "FR", "BR", "IN"])
_CHANNELS = np.array(["web", "app", "pos"])
_INTENTS = ["billing", "technical", "account", "cancel"]
_CITIES = np.array(["berlin", "paris", "london", "madrid"])
_SURFACES = np.array(["home", "search"])
#: Ranking simulator: catalogue = groups x items per group; items shown per request.
RANK_GROUPS, RANK_GROUP_ITEMS, RANK_LIST = 10, 50, 12
#: P(click) by rank (1..12) before the drift, and after it (the top 3 ranks go stale).
_CLICK_P = 0.30 * 0.8 ** np.arange(RANK_LIST)
_CLICK_P_DRIFTED = np.where(np.arange(RANK_LIST) < 3, 0.02, _CLICK_P)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


def _fraud(rng, ts, drifted, cov, ver):  # type: ignore[no-untyped-def]
    n = len(ts)
    # Covariate drift: bigger baskets and more traffic from new markets.
    amount = rng.lognormal(np.where(cov, 4.3, 3.5), 1.0)
    mcat = _MCATS[rng.choice(5, n, p=[0.35, 0.2, 0.2, 0.1, 0.15])]
    country = _COUNTRIES[
        np.where(
            cov,
            rng.choice(6, n, p=[0.15, 0.1, 0.1, 0.05, 0.3, 0.3]),
            rng.choice(6, n, p=[0.4, 0.2, 0.15, 0.1, 0.1, 0.05]),
        )
    ]
    hour = rng.integers(0, 24, n)
    new_dev = rng.random(n) < 0.12
    channel = _CHANNELS[rng.choice(3, n, p=[0.45, 0.4, 0.15])]
    risky = np.isin(mcat, ["electronics", "gaming"])
    la = np.log(amount) - 3.5
    base = 1.6 * new_dev + 1.0 * risky + 0.6 * (hour < 6) - 1.3
    # v2 (the challenger) weighs the amount a little differently; both see the same world.
    risk = base + np.where(ver == 1, 0.8, 0.9) * la + rng.normal(0, 0.3, n)
    score = _sigmoid(risk)
    y_pred = (score >= 0.5).astype(int)
    noise = rng.random(n) < np.where(ver == 1, 0.08, 0.10)
    # After the drift, fraud concentrates on small amounts: the amount effect flips sign.
    world_after = ((base + 0.2 - 0.5 * la) > 0).astype(int)
    y_true = np.where(drifted, world_after, y_pred) ^ noise
    preds = [
        {"label": p, "score": s}
        for p, s in zip(y_pred.tolist(), np.round(score, 4).tolist(), strict=True)
    ]
    feats = [
        {"amount": a, "merchant_category": m, "country": c, "hour": h, "is_new_device": d}
        for a, m, c, h, d in zip(
            np.round(amount, 2).tolist(),
            mcat.tolist(),
            country.tolist(),
            hour.tolist(),
            new_dev.tolist(),
            strict=True,
        )
    ]
    segs = [
        {"country": c, "channel": ch}
        for c, ch in zip(country.tolist(), channel.tolist(), strict=True)
    ]
    truth = [{"label": y} for y in y_true.tolist()]
    return preds, feats, segs, truth


def _intent(rng, ts, drifted, cov, ver):  # type: ignore[no-untyped-def]
    n = len(ts)
    msg_len = np.rint(rng.lognormal(np.where(cov, 4.5, 4.0), 0.6)).astype(int)
    channel = _CHANNELS[:2][rng.choice(2, n, p=[0.6, 0.4])]
    sentiment = rng.normal(0, 1, n)
    has_order = rng.random(n) < 0.5
    logits = rng.normal(0, 1.2, (n, 4)) + np.array([0.3, 0.2, 0.0, -0.4])
    logits[:, 3] -= sentiment  # unhappy customers cancel
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pred = probs.argmax(axis=1)
    wrong = rng.random(n) < np.where(drifted, 0.4, 0.15)  # drifts only if concept_drift
    true = np.where(wrong, rng.integers(0, 4, n), pred)
    preds = [
        {"label": _INTENTS[p], "scores": dict(zip(_INTENTS, row, strict=True))}
        for p, row in zip(pred.tolist(), np.round(probs, 4).tolist(), strict=True)
    ]
    feats = [
        {"msg_length": m, "channel": c, "sentiment": s, "has_order": o}
        for m, c, s, o in zip(
            msg_len.tolist(),
            channel.tolist(),
            np.round(sentiment, 3).tolist(),
            has_order.tolist(),
            strict=True,
        )
    ]
    segs = [{"channel": c} for c in channel.tolist()]
    truth = [{"label": _INTENTS[t]} for t in true.tolist()]
    return preds, feats, segs, truth


def _eta(rng, ts, drifted, cov, ver):  # type: ignore[no-untyped-def]
    n = len(ts)
    distance = rng.gamma(2.0, np.where(cov, 4.5, 3.0))
    traffic = rng.beta(2, 5, n)
    city = _CITIES[rng.integers(0, 4, n)]
    pred = 4.0 + 2.2 * distance * (1 + traffic) * np.where(ver == 1, 1.02, 1.0)
    true = (
        (4.0 + 2.2 * distance * (1 + traffic))
        * rng.lognormal(0, 0.15, n)
        * np.where(drifted, 1.3, 1.0)
    )
    preds = [{"value": p} for p in np.round(pred, 2).tolist()]
    feats = [
        {"distance_km": d, "traffic": t, "city": c}
        for d, t, c in zip(
            np.round(distance, 2).tolist(),
            np.round(traffic, 3).tolist(),
            city.tolist(),
            strict=True,
        )
    ]
    segs = [{"city": c} for c in city.tolist()]
    truth = [{"value": t} for t in np.round(true, 2).tolist()]
    return preds, feats, segs, truth


def _feed(rng, ts, drifted, cov, ver):  # type: ignore[no-untyped-def]
    n = len(ts)
    group = rng.integers(0, RANK_GROUPS, n)
    # Each request shows RANK_LIST distinct items of its group's slice of the catalogue.
    picks = np.argsort(rng.random((n, RANK_GROUP_ITEMS)), axis=1)[:, :RANK_LIST]
    items = group[:, None] * RANK_GROUP_ITEMS + picks
    scores = np.sort(rng.random((n, RANK_LIST)), axis=1)[:, ::-1]
    clicked = rng.random((n, RANK_LIST)) < np.where(drifted[:, None], _CLICK_P_DRIFTED, _CLICK_P)
    converted = clicked & (rng.random((n, RANK_LIST)) < 0.25)
    # Some users find an item the list did not show (counts for recall, not for CTR).
    outside = rng.random(n) < 0.1
    other = ((group + 1) % RANK_GROUPS) * RANK_GROUP_ITEMS + rng.integers(0, RANK_GROUP_ITEMS, n)
    surface = _SURFACES[rng.choice(2, n, p=[0.7, 0.3])]
    history = rng.poisson(np.where(cov, 12.0, 6.0))
    preds, truth = [], []
    for i in range(n):
        ids = [f"sku-{x}" for x in items[i].tolist()]
        preds.append({"items": ids, "scores": np.round(scores[i], 4).tolist()})
        clk = [ids[j] for j in np.flatnonzero(clicked[i]).tolist()]
        if outside[i]:
            clk.append(f"sku-{int(other[i])}")
        truth.append({"feedback": {"clicked": clk, "converted": [ids[j] for j in np.flatnonzero(converted[i]).tolist()]}})
    feats = [{"history_len": h, "user_group": f"g{g}"} for h, g in zip(history.tolist(), group.tolist(), strict=True)]
    segs = [{"surface": x} for x in surface.tolist()]
    return preds, feats, segs, truth


@dataclass(frozen=True)
class ModelSpec:
    """One simulated model: id, task, traffic share, versions and its generator."""

    model_id: str
    task: str
    share: float
    versions: tuple[tuple[str, float], ...]
    fn: ModelFn = field(repr=False)
    concept_drift: bool = False


def default_models() -> list[ModelSpec]:
    """``fraud`` (binary, drifts), ``intent`` (4-class), ``eta`` (regression).

    Examples
    --------
    >>> [(m.model_id, m.task, m.versions[0]) for m in default_models()]
    [('fraud', 'binary', ('v1', 0.9)), ('intent', 'multiclass', ('2024-06', 1.0)), ('eta', 'regression', ('v7', 0.8))]
    """
    return [
        ModelSpec("fraud", "binary", 0.5, (("v1", 0.9), ("v2", 0.1)), _fraud, concept_drift=True),
        ModelSpec("intent", "multiclass", 0.3, (("2024-06", 1.0),), _intent),
        ModelSpec("eta", "regression", 0.2, (("v7", 0.8), ("v8", 0.2)), _eta),
    ]


def ranking_model(model_id: str = "home-feed", concept_drift: bool = True, share: float = 0.2) -> ModelSpec:
    """A recommender (task ``ranking``, catalogue of 500 items) whose top ranks go stale at ``drift_at``.

    Examples
    --------
    >>> spec = ranking_model()
    >>> preds, labels = generate(200, seed=1, models=[spec])
    >>> len(preds[0]["prediction"]["items"]), sorted(labels[0]["feedback"])
    (12, ['clicked', 'converted'])
    """
    return ModelSpec(model_id, "ranking", share, (("v3", 1.0),), _feed, concept_drift=concept_drift)


class FleetSimulator:
    """Deterministic stream of predictions and (delayed) labels.

    Parameters
    ----------
    seed : int
    rate : float
        Predictions per second of simulated time.
    duration : float
        Seconds of simulated time; ``int(rate * duration)`` predictions.
    drift_at : float or None
        Seconds after start when the concept drift (models with ``concept_drift``) begins.
    models : list of ModelSpec
    start_ts : float or None
        Epoch seconds of the first event (default: now).
    covariate_drift_at : float or None
        Seconds after start when feature distributions shift (all models).
    label_delay : float
        Mean label delay in seconds (exponential).
    missing_label_rate : float
        Share of predictions never labelled.
    latency_ms : float
        Median serving latency; lognormal with 1% spikes x10.
    missing_burst : float
        Data-quality injection: share of events from ``data_issues_at`` on (for
        ``missing_burst_s`` seconds, or to the end) whose first feature is absent
        (fraud: ``amount``, intent: ``msg_length``, eta: ``distance_km``). Default 0: off.
    missing_burst_s : float or None
        Length of the missing-values burst; None = until the end.
    new_category : float
        Share of events from ``data_issues_at`` on whose first string feature takes a
        category never seen before (``"new-" + feature``: fraud's ``merchant_category``).
    data_issues_at : float or None
        Seconds after start when the injections begin; default ``covariate_drift_at``.
        Injections draw from their own random stream: the rest of the traffic is the same
        as without them.
    group_degradation : float
        Fairness injection (binary models): from ``data_issues_at`` on (from the start when
        unset), the true label of this share of the events of ``degraded_group`` disagrees
        with the model's decision: quality drops for that group only. Default 0: off.
    degraded_group : str
        ``key=value`` of the events' segments that degrade (default ``channel=app``).
    worse_challenger : float
        Champion/challenger injection (binary models with two or more versions): the last
        version (fraud: ``v2``, 10% of fraud's traffic, side by side with ``v1``) has this
        share of its decisions flipped (label and score), from ``data_issues_at`` on (from the
        start when unset). Default 0: off.

    Examples
    --------
    >>> sim = FleetSimulator(seed=1, rate=100, duration=1, drift_at=None, start_ts=1.7e9)
    >>> kinds = [k for k, _ in sim.events()]
    >>> kinds.count("prediction"), 85 <= kinds.count("label") <= 100
    (100, True)
    """

    chunk = 4096

    def __init__(
        self,
        seed: int,
        rate: float,
        duration: float,
        drift_at: float | None,
        models: list[ModelSpec] | None = None,
        *,
        start_ts: float | None = None,
        covariate_drift_at: float | None = None,
        label_delay: float = 5.0,
        missing_label_rate: float = 0.05,
        latency_ms: float = 20.0,
        missing_burst: float = 0.0,
        missing_burst_s: float | None = None,
        new_category: float = 0.0,
        data_issues_at: float | None = None,
        group_degradation: float = 0.0,
        degraded_group: str = "channel=app",
        worse_challenger: float = 0.0,
    ) -> None:
        if rate <= 0 or duration <= 0:
            raise ValueError("rate and duration must be > 0")
        if not (0.0 <= group_degradation <= 1.0 and 0.0 <= worse_challenger <= 1.0):
            raise ValueError("group_degradation and worse_challenger are shares in [0, 1]")
        if "=" not in degraded_group:
            raise ValueError(f"degraded_group: expected key=value, got {degraded_group!r}")
        if not (0.0 <= missing_burst <= 1.0 and 0.0 <= new_category <= 1.0):
            raise ValueError("missing_burst and new_category are shares in [0, 1]")
        self.seed = seed
        self.rate = rate
        self.duration = duration
        self.drift_at = drift_at
        self.models = models if models is not None else default_models()
        self.start_ts = time.time() if start_ts is None else start_ts
        self.covariate_drift_at = covariate_drift_at
        self.label_delay = label_delay
        self.missing_label_rate = missing_label_rate
        self.latency_ms = latency_ms
        self.n_predictions = int(rate * duration)
        self.missing_burst = missing_burst
        self.missing_burst_s = missing_burst_s
        self.new_category = new_category
        self.data_issues_at = covariate_drift_at if data_issues_at is None else data_issues_at
        self.group_degradation = group_degradation
        self.degraded_group = degraded_group
        self.worse_challenger = worse_challenger

    def _inject(self, rng: np.random.Generator, rel: np.ndarray, feats: list[Event]) -> None:
        """Missing values and new categories (in place), from ``data_issues_at`` on."""
        if self.data_issues_at is None or not (self.missing_burst or self.new_category) or not feats:
            return
        u_missing, u_new = rng.random(len(feats)), rng.random(len(feats))
        start = self.data_issues_at
        end = float("inf") if self.missing_burst_s is None else start + self.missing_burst_s
        first = next(iter(feats[0]), None)
        cat = next((k for k, v in feats[0].items() if isinstance(v, str)), None)
        for j, f in enumerate(feats):
            t = rel[j]
            if t < start:
                continue
            if first is not None and t < end and u_missing[j] < self.missing_burst:
                f.pop(first, None)
            if cat is not None and u_new[j] < self.new_category:
                f[cat] = f"new-{cat}"

    def _degrade(self, rng: np.random.Generator, rel: np.ndarray, ver: np.ndarray, n_versions: int,
                 preds: list[Event], segs: list[dict[str, str]], truth: list[Event]) -> None:
        """Group degradation and worse challenger of a binary model (in place)."""
        if not (self.group_degradation or self.worse_challenger) or not preds:
            return
        start = self.data_issues_at or 0.0
        key, _, value = self.degraded_group.partition("=")
        u_group, u_chal = rng.random(len(preds)), rng.random(len(preds))
        for j, p in enumerate(preds):
            if rel[j] < start:
                continue
            if u_group[j] < self.group_degradation and segs[j].get(key) == value:
                truth[j]["label"] = 1 - p["label"]  # the world disagrees with the decision
            if n_versions > 1 and ver[j] == n_versions - 1 and u_chal[j] < self.worse_challenger:
                p["label"] = 1 - p["label"]
                p["score"] = round(1.0 - p["score"], 4)

    def _chunks(self) -> Iterator[list[tuple[float, Event, Event | None]]]:
        rng = np.random.default_rng(self.seed)
        issues_rng = np.random.default_rng([self.seed, 1])
        quality_rng = np.random.default_rng([self.seed, 2])
        shares = np.array([m.share for m in self.models], dtype=float)
        shares /= shares.sum()
        inf = float("inf")
        for lo in range(0, self.n_predictions, self.chunk):
            i = np.arange(lo, min(lo + self.chunk, self.n_predictions))
            n = len(i)
            rel = i / self.rate
            ts = self.start_ts + rel
            which = rng.choice(len(self.models), n, p=shares)
            drifted = rel >= (inf if self.drift_at is None else self.drift_at)
            cov = rel >= (inf if self.covariate_drift_at is None else self.covariate_drift_at)
            lat = rng.lognormal(np.log(self.latency_ms), 0.4, n) * np.where(
                rng.random(n) < 0.01, 10, 1
            )
            lat_l = np.round(lat, 2).tolist()
            arrival = (ts + rng.exponential(self.label_delay, n)).tolist()
            labelled = (rng.random(n) >= self.missing_label_rate).tolist()
            ts_l = ts.tolist()
            hexes = rng.bytes(16 * n).hex()
            rows: list[Any] = [None] * n
            for mi, spec in enumerate(self.models):
                idx = np.flatnonzero(which == mi)
                if not len(idx):
                    continue
                vshares = np.array([s for _, s in spec.versions], dtype=float)
                ver = rng.choice(len(vshares), len(idx), p=vshares / vshares.sum())
                preds, feats, segs, truth = spec.fn(
                    rng, ts[idx], drifted[idx] & spec.concept_drift, cov[idx], ver
                )
                self._inject(issues_rng, rel[idx], feats)
                if spec.task == "binary":
                    self._degrade(quality_rng, rel[idx], ver, len(spec.versions), preds, segs, truth)
                names = [v for v, _ in spec.versions]
                for j, (k, vi) in enumerate(zip(idx.tolist(), ver.tolist(), strict=True)):
                    o = 32 * k
                    # UUID-shaped ids (36 chars), like a serving fleet's request ids.
                    pid = f"{hexes[o : o + 8]}-{hexes[o + 8 : o + 12]}-{hexes[o + 12 : o + 16]}-{hexes[o + 16 : o + 20]}-{hexes[o + 20 : o + 32]}"
                    t = ts_l[k]
                    pe: Event = {
                        "prediction_id": pid,
                        "model_id": spec.model_id,
                        "model_version": names[vi],
                        "timestamp": t,
                        "prediction": preds[j],
                        "features": feats[j],
                        "latency_ms": lat_l[k],
                        "segments": segs[j],
                    }
                    le: Event | None = None
                    if labelled[k]:
                        le = {
                            "prediction_id": pid,
                            "model_id": spec.model_id,
                            "timestamp": arrival[k],
                            **truth[j],
                        }
                    rows[k] = (t, pe, le)
            yield rows

    def events(self) -> Iterator[tuple[str, Event]]:
        """``("prediction" | "label", event)`` in arrival order; pending labels come last."""
        heap: list[tuple[float, int, Event]] = []
        seq = 0
        for rows in self._chunks():
            for t, pe, le in rows:
                while heap and heap[0][0] <= t:
                    yield "label", heapq.heappop(heap)[2]
                yield "prediction", pe
                if le is not None:
                    heapq.heappush(heap, (le["timestamp"], seq, le))
                    seq += 1
        while heap:
            yield "label", heapq.heappop(heap)[2]


def generate(
    n_predictions: int,
    seed: int = 0,
    *,
    rate: float = 10_000.0,
    start_ts: float = 1.7e9,
    **kwargs: Any,
) -> tuple[list[Event], list[Event]]:
    """Bulk generation for benchmarks: ``(predictions, labels)``, labels in arrival order.

    ``kwargs`` go to :class:`FleetSimulator` (``drift_at``, ``label_delay``...).

    Examples
    --------
    >>> preds, labels = generate(1000, seed=3)
    >>> len(preds), 900 <= len(labels) <= 990
    (1000, True)
    """
    kwargs.setdefault("drift_at", None)
    sim = FleetSimulator(seed, rate, n_predictions / rate, start_ts=start_ts, **kwargs)
    preds: list[Event] = []
    labels: list[Event] = []
    for rows in sim._chunks():
        for _, pe, le in rows:
            preds.append(pe)
            if le is not None:
                labels.append(le)
    labels.sort(key=lambda e: e["timestamp"])
    return preds, labels


def run_simulation(
    bootstrap: str,
    prefix: str,
    rate: float,
    duration: float,
    seed: int = 0,
    drift_at: float | None = None,
    realtime: bool = True,
    progress: bool = True,
    *,
    label_delay: float = 5.0,
    covariate_drift_at: float | None = None,
    client_config: dict[str, Any] | None = None,
    out: TextIO | None = None,
    start_ts: float | None = None,
    missing_burst: float = 0.0,
    missing_burst_s: float | None = None,
    new_category: float = 0.0,
    data_issues_at: float | None = None,
    models: list[ModelSpec] | None = None,
    group_degradation: float = 0.0,
    degraded_group: str = "channel=app",
    worse_challenger: float = 0.0,
) -> dict[str, Any]:
    """Send a simulated fleet's traffic through :class:`DriftlineProducer`; return stats.

    In real time, events are paced by their timestamps (starting now); labels still
    pending when ``duration`` ends are sent at once. Progress is one updating stderr line.
    ``models`` defaults to :func:`default_models` (add :func:`ranking_model` for a recommender).
    """
    from driftline.streams.sdk import DriftlineProducer

    out = out if out is not None else sys.stderr
    sim = FleetSimulator(
        seed,
        rate,
        duration,
        drift_at,
        models,
        label_delay=label_delay,
        covariate_drift_at=covariate_drift_at,
        start_ts=start_ts,
        missing_burst=missing_burst,
        missing_burst_s=missing_burst_s,
        new_category=new_category,
        data_issues_at=data_issues_at,
        group_degradation=group_degradation,
        degraded_group=degraded_group,
        worse_challenger=worse_challenger,
    )
    counts = {"prediction": 0, "label": 0}
    dropped = 0
    t0 = time.monotonic()
    next_report = t0
    with DriftlineProducer(bootstrap, topic_prefix=prefix, client_config=client_config) as producer:
        for kind, ev in sim.events():
            if realtime:
                ahead = (ev["timestamp"] - sim.start_ts) - (time.monotonic() - t0)
                # Sleep in >= 2 ms steps: per-event sleeps cost more than they pace.
                if ahead > 0.002 and ev["timestamp"] - sim.start_ts <= duration:
                    time.sleep(ahead)
            if producer.log_event(kind, ev):
                counts[kind] += 1
            else:
                dropped += 1
            if progress and time.monotonic() >= next_report:
                next_report = time.monotonic() + 0.5
                _progress(out, time.monotonic() - t0, counts, dropped)
        left = producer.flush(30)
        stats = producer.stats()
    elapsed = time.monotonic() - t0
    if progress:
        _progress(out, elapsed, counts, dropped)
        out.write("\n")
        out.flush()
    return {
        "predictions": counts["prediction"],
        "labels": counts["label"],
        "dropped": dropped,
        "undelivered": left,
        "elapsed_s": round(elapsed, 3),
        "start_ts": sim.start_ts,
        "producer": stats,
    }


def _progress(out: TextIO, elapsed: float, counts: dict[str, int], dropped: int) -> None:
    sent = counts["prediction"]
    rate = sent / elapsed if elapsed > 0 else 0.0
    line = (
        f"\r[simulate] {elapsed:6.1f}s  predictions {sent:,}  ({rate:,.0f}/s)  "
        f"labels {counts['label']:,}  dropped {dropped:,}"
    )
    out.write(line)
    out.flush()
