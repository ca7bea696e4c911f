"""Which drift statistic and limit judge a window best: detection on injected shifts against
false alarms on clean windows, per feature shape and window size (``python -m bench.drift_limits``).

Each case draws a 20,000-row reference of one feature, builds its profile with
``Profile.from_records(chunk_size=window)`` (chunk limits as ``driftline baseline create``
stores them), then judges ``--windows`` clean windows drawn from the same distribution (false
alarms) and as many shifted ones (detections) with the four combinations of statistic (PSI,
Jensen-Shannon distance) and limits (the fixed cuts, PSI 0.25 / JS 0.1, or the reference's mean
+ 3 sigma). A verdict is ``severity == "drift"``. With ``--chunk N`` the reference chunks have N
rows whatever the window size, so the limits are scaled to each window
(``ReferenceLimits.scale``). Seeded: the same run gives the same table.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np

from driftline.detectors.datadrift import DriftConfig, compare_profiles
from driftline.detectors.profile import Profile

Draw = Callable[[np.random.Generator, int], list[Any]]

CATS5 = np.array(["a", "b", "c", "d", "e"])
P5 = np.array([0.4, 0.25, 0.15, 0.12, 0.08])
CATS30 = np.array([f"c{i}" for i in range(30)])
P30 = (1 / np.arange(1, 31)) / np.sum(1 / np.arange(1, 31))


def _moved(p: np.ndarray, share: float) -> np.ndarray:
    """Move ``share`` of the probability mass from the top category to the others, evenly."""
    q = p.copy()
    q[0] -= share
    q[1:] += share / (q.size - 1)
    return q


# feature -> (clean draw, {shift name: shifted draw})
CASES: dict[str, tuple[Draw, dict[str, Draw]]] = {
    "normal": (lambda g, n: g.normal(0, 1, n).tolist(), {
        "mean +0.2 sd": lambda g, n: g.normal(0.2, 1, n).tolist(),
        "mean +0.5 sd": lambda g, n: g.normal(0.5, 1, n).tolist(),
        "sd x1.3": lambda g, n: g.normal(0, 1.3, n).tolist()}),
    "lognormal": (lambda g, n: g.lognormal(3, 1, n).tolist(), {
        "x1.2": lambda g, n: (1.2 * g.lognormal(3, 1, n)).tolist(),
        "x1.5": lambda g, n: (1.5 * g.lognormal(3, 1, n)).tolist()}),
    "poisson(3)": (lambda g, n: g.poisson(3, n).astype(float).tolist(), {
        "rate 3.3": lambda g, n: g.poisson(3.3, n).astype(float).tolist(),
        "rate 3.75": lambda g, n: g.poisson(3.75, n).astype(float).tolist()}),
    "cat5": (lambda g, n: g.choice(CATS5, n, p=P5).tolist(), {
        "top -0.05": lambda g, n: g.choice(CATS5, n, p=_moved(P5, 0.05)).tolist(),
        "top -0.10": lambda g, n: g.choice(CATS5, n, p=_moved(P5, 0.10)).tolist()}),
    "cat30 zipf": (lambda g, n: g.choice(CATS30, n, p=P30).tolist(), {
        "top -0.05": lambda g, n: g.choice(CATS30, n, p=_moved(P30, 0.05)).tolist(),
        "top -0.10": lambda g, n: g.choice(CATS30, n, p=_moved(P30, 0.10)).tolist()}),
}
MODES = [("psi", "fixed"), ("js", "fixed"), ("psi", "reference"), ("js", "reference")]


def _rate(ref: Profile, draw: Draw, g: np.random.Generator, n: int, windows: int) -> dict[tuple[str, str], float]:
    hits = dict.fromkeys(MODES, 0)
    configs = {m: DriftConfig.from_dict({"statistic": m[0], "limits": m[1]}) for m in MODES}
    for _ in range(windows):
        win = Profile.new_window_like(ref)
        win.update_many([{"x": v} for v in draw(g, n)])
        for m, cfg in configs.items():
            hits[m] += compare_profiles(ref, win, cfg)[0].severity == "drift"
    return {m: h / windows for m, h in hits.items()}


def run(window_sizes: list[int], windows: int, seed: int, chunk: int | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for size in window_sizes:
        for feat, (clean, shifts) in CASES.items():
            g = np.random.default_rng([seed, size, len(feat)])
            ref = Profile.from_records([{"x": v} for v in clean(g, 20_000)], chunk_size=chunk or size)
            rows.append({"window": size, "feature": feat, "case": "clean", **_rate(ref, clean, g, size, windows)})
            for name, draw in shifts.items():
                rows.append({"window": size, "feature": feat, "case": name, **_rate(ref, draw, g, size, windows)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--windows", type=int, default=200)
    ap.add_argument("--sizes", default="200,1000,5000")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--chunk", type=int, default=None,
                    help="reference chunk size (default: each window size; else limits scaled to the window)")
    a = ap.parse_args()
    rows = run([int(s) for s in a.sizes.split(",")], a.windows, a.seed, a.chunk)
    head = " | ".join(f"{s} {lim}" for s, lim in MODES)
    print(f"| window | feature | case | {head} |")
    print("| --- | --- | --- |" + " --- |" * len(MODES))
    for r in rows:
        print(f"| {r['window']} | {r['feature']} | {r['case']} | " + " | ".join(f"{r[m]:.0%}" for m in MODES) + " |")


if __name__ == "__main__":
    main()
