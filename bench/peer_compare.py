"""Driftline side by side with NannyML itself (issue 18): drift verdicts, multivariate drift, CBPE.

``python -m bench.peer_compare`` (needs NannyML in its own venv: ``python3 -m venv
bench/.venv-nannyml && bench/.venv-nannyml/bin/pip install nannyml statsmodels 'pandas<3'``).

Two labelled binary-classifier streams, each a reference and an analysis period of 10 chunks:

- ``car_loan``: NannyML's bundled synthetic car-loan dataset (``nml.load_synthetic_car_loan_dataset``,
  published with the package, written by neither of us): 50,000 reference rows, 50,000 analysis
  rows in chunks of 5,000, 4 numeric and 3 categorical features, covariate shift and a performance
  drop in the second half;
- ``synthetic``: generated here with a fixed seed (``generate``; its design was set before any
  run and is not tuned to either tool): 5 numeric and 2 categorical features, a logistic ground
  truth, a model that knows the true logit up to noise but whose scores are overconfident
  (``sigmoid(1.8 x logit)``), 20,000 reference rows and 10 analysis chunks of 2,000 of which the
  last five have covariate shift (``x1`` narrower and moved, ``c1``'s mix reversed), so that
  performance drops.

NannyML runs in its venv (``bench/peer_nannyml.py``: ``UnivariateDriftCalculator`` with
Jensen-Shannon for both kinds, ``DataReconstructionDriftCalculator`` on the numeric features,
``CBPE``; default thresholds, ``chunk_size`` = the chunk). Driftline runs its library code the way
the worker does: the reference profile from ``create_baseline`` (what ``driftline baseline create
--chunk-size N`` runs), each analysis chunk fed into ``Profile.new_window_like`` and a
``CBPEAccumulator`` as the join stage does, judged by ``compare_profiles`` with the default
``DriftConfig`` (JS against the reference's chunk limits) and ``compare_reconstruction``, CBPE read
through the reference's score calibrator, realised metrics from ``BinaryAccumulator``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from driftline.detectors.cbpe import CBPEAccumulator
from driftline.detectors.datadrift import DriftConfig, compare_profiles
from driftline.detectors.metrics import BinaryAccumulator
from driftline.detectors.multivariate import compare_reconstruction
from driftline.detectors.profile import Profile, load_records
from driftline.streams.baseline_cmd import create_baseline, load_latest

ROOT = Path(__file__).resolve().parent.parent
NANNYML_PYTHON = ROOT / "bench" / ".venv-nannyml" / "bin" / "python"
METRICS = ["roc_auc", "accuracy", "precision", "recall", "f1"]
SEED = 18


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _draw(g: np.random.Generator, n: int, shifted: bool) -> dict[str, np.ndarray]:
    x1 = g.normal(0.4, 0.5, n) if shifted else g.normal(0.0, 1.0, n)
    x2 = 0.5 * x1 + math.sqrt(0.75) * g.normal(0.0, 1.0, n)
    x3 = g.lognormal(0.0, 0.5, n)
    x4 = g.uniform(0.0, 10.0, n)
    x5 = g.poisson(3.0, n).astype(float)
    c1 = g.choice(np.array(["a", "b", "c", "d"]), n, p=[0.1, 0.2, 0.3, 0.4] if shifted else [0.4, 0.3, 0.2, 0.1])
    c2 = np.where(g.random(n) < 0.3, "yes", "no")
    effect = {"a": 0.0, "b": 0.5, "c": -0.5, "d": 1.0}
    logit = (-0.5 + 1.2 * x1 - 0.8 * x2 + 0.6 * np.log(x3) + 0.15 * (x4 - 5.0) - 0.1 * (x5 - 3.0)
             + np.array([effect[c] for c in c1]) + 0.4 * (c2 == "yes"))
    y = (g.random(n) < _sigmoid(logit)).astype(int)
    score = _sigmoid(1.8 * (logit + g.normal(0.0, 0.5, n)))  # knows the logit, overconfident
    return {"x1": x1, "x2": x2, "x3": x3, "x4": x4, "x5": x5, "c1": c1, "c2": c2,
            "score": np.round(score, 6), "y_pred": (score >= 0.5).astype(int), "y": y}


def _write_csv(path: Path, cols: dict[str, np.ndarray]) -> None:
    names = list(cols)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(names)
        for row in zip(*(cols[c].tolist() for c in names), strict=True):
            w.writerow(row)


def generate(out: Path, seed: int = SEED, reference: int = 20_000, chunk: int = 2_000, chunks: int = 10) -> None:
    """The synthetic stream (module docstring) as ``out/{reference,analysis}.csv`` and ``spec.json``."""
    g = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "reference.csv", _draw(g, reference, False))
    parts = [_draw(g, chunk, i >= chunks // 2) for i in range(chunks)]
    _write_csv(out / "analysis.csv", {k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
    spec = {"numeric": ["x1", "x2", "x3", "x4", "x5"], "categorical": ["c1", "c2"], "score": "score",
            "y_pred": "y_pred", "y_true": "y", "chunk_size": chunk}
    (out / "spec.json").write_text(json.dumps(spec, indent=1))


def nannyml(python: Path, *args: str) -> str:
    env = {**os.environ, "NML_DISABLE_USAGE_LOGGING": "1"}
    r = subprocess.run([str(python), str(ROOT / "bench" / "peer_nannyml.py"), *args], env=env,
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"peer_nannyml.py {' '.join(args)} failed:\n{r.stderr[-3000:]}")
    return r.stdout


def driftline(d: Path, bounds: list[tuple[int, int]]) -> dict[str, Any]:
    """Driftline's verdicts and estimates per analysis chunk (module docstring)."""
    spec = json.loads((d / "spec.json").read_text())
    feats = [*spec["numeric"], *spec["categorical"]]
    score, y_pred, y_true = spec["score"], spec["y_pred"], spec["y_true"]
    create_baseline("peer", d / "reference.csv", d / "profiles", feature_names=feats, prediction_column=score,
                    label_column=y_true, chunk_size=int(spec["chunk_size"]))
    ref = load_latest("peer", d / "profiles")
    rows = load_records(d / "analysis.csv")
    cfg = DriftConfig()
    chunks: list[dict[str, Any]] = []
    for i, (a, b) in enumerate(bounds):
        part = rows[a:b]
        # as the join stage feeds a window: the events' features and score (windowbuffers.flush)
        win = Profile.new_window_like(ref)
        win.update_many([{f: r.get(f) for f in feats} for r in part], [r[score] for r in part])
        s = np.array([float(r[score]) for r in part])
        yp = np.array([int(r[y_pred]) for r in part])
        yt = np.array([int(r[y_true]) for r in part])
        est = CBPEAccumulator()
        est.update_many(s, yp)
        e = est.metrics(ref.calibrator)
        real = BinaryAccumulator()
        real.update_many(yt, yp, s)
        rm = real.metrics()
        uni = {r.feature: {"value": r.value, "upper_threshold": r.limit, "alert": r.severity == "drift",
                           "statistic": r.statistic, "limits": r.limits}
               for r in compare_profiles(ref, win, cfg)}
        mv = compare_reconstruction(ref, win, cfg.default.sigmas, cfg.default.min_samples)
        chunks.append({
            "chunk": i, "univariate": uni,
            "multivariate": None if mv is None else {"value": mv["value"], "upper_threshold": mv["limit"],
                                                     "lower_threshold": mv["lower_limit"],
                                                     "alert": mv["severity"] == "drift"},
            "cbpe": {m: {"estimated": e.get(f"estimated_{m}"), "realised": rm.get(m)} for m in METRICS},
        })
    cal = ref.calibrator
    return {"chunks": chunks, "calibrator": None if cal is None else
            {"identity": cal.is_identity, "ece_raw": cal.ece_raw, "ece_calibrated": cal.ece_calibrated},
            "limits": None if ref.limits is None else {"chunks": ref.limits.chunks, "chunk_size": ref.limits.chunk_size}}


def compare(name: str, d: Path, python: Path) -> dict[str, Any]:
    nml = json.loads(nannyml(python, "run", str(d)))
    bounds = [(c["start"], c["end"]) for c in nml["chunks"]]
    dl = driftline(d, bounds)
    spec = json.loads((d / "spec.json").read_text())
    feats = [*spec["numeric"], *spec["categorical"]]
    conf = {"both": 0, "nannyml_only": 0, "driftline_only": 0, "neither": 0}
    pred_conf = dict.fromkeys(conf, 0)
    mv_conf = dict.fromkeys(conf, 0)
    pairs: list[dict[str, Any]] = []

    def cell(n_alert: bool, d_alert: bool) -> str:
        return "both" if n_alert and d_alert else "nannyml_only" if n_alert else "driftline_only" if d_alert else "neither"

    for nc, dc in zip(nml["chunks"], dl["chunks"], strict=True):
        for f in [*feats, "prediction"]:
            nu, du = nc["univariate"][f], dc["univariate"][f]
            k = cell(bool(nu["alert"]), bool(du["alert"]))
            (pred_conf if f == "prediction" else conf)[k] += 1
            pairs.append({"chunk": nc["chunk"], "feature": f, "nannyml_js": nu["value"], "nannyml_limit": nu["upper_threshold"],
                          "nannyml_alert": bool(nu["alert"]), "driftline_js": du["value"], "driftline_limit": du["upper_threshold"],
                          "driftline_alert": bool(du["alert"])})
        if dc["multivariate"] is not None:
            mv_conf[cell(bool(nc["multivariate"]["alert"]), bool(dc["multivariate"]["alert"]))] += 1
    cbpe: list[dict[str, Any]] = []
    for nc, dc in zip(nml["chunks"], dl["chunks"], strict=True):
        row: dict[str, Any] = {"chunk": nc["chunk"]}
        for m in METRICS:
            row[m] = {"realised": dc["cbpe"][m]["realised"], "realised_nannyml": nc["cbpe"][m]["realised"],
                      "nannyml": nc["cbpe"][m]["estimated"], "driftline": dc["cbpe"][m]["estimated"]}
        cbpe.append(row)
    return {"dataset": name, "nannyml_version": nml["nannyml"], "chunk_size": nml["chunk_size"],
            "features": feats, "univariate": conf, "prediction": pred_conf, "multivariate": mv_conf,
            "pairs": pairs, "mv": [{"chunk": nc["chunk"], "nannyml": nc["multivariate"], "driftline": dc["multivariate"]}
                                   for nc, dc in zip(nml["chunks"], dl["chunks"], strict=True)],
            "cbpe": cbpe, "calibrator": dl["calibrator"], "limits": dl["limits"]}


def _err(rows: list[dict[str, Any]], m: str, a: str, b: str) -> tuple[float, float]:
    d = [abs(r[m][a] - r[m][b]) for r in rows if r[m][a] is not None and r[m][b] is not None]
    return (float(np.mean(d)), float(np.max(d))) if d else (math.nan, math.nan)


def report(res: dict[str, Any]) -> str:
    out: list[str] = []
    c = res["univariate"]
    agree = c["both"] + c["neither"]
    total = sum(c.values())
    out.append(f"### {res['dataset']} (NannyML {res['nannyml_version']}, chunks of {res['chunk_size']:,} rows; "
               f"Driftline limits from {res['limits']['chunks'] if res['limits'] else 0} reference chunks; "
               f"calibrator: {'identity' if (res['calibrator'] or {}).get('identity') else 'isotonic'})")
    out.append("")
    out.append(f"Feature drift verdicts over {total} (chunk, feature) pairs: agree on {agree} ({agree / total:.0%}); "
               f"both alert {c['both']}, NannyML only {c['nannyml_only']}, Driftline only {c['driftline_only']}, "
               f"neither {c['neither']}.")
    p, mv = res["prediction"], res["multivariate"]
    out.append(f"Score (prediction) drift per chunk: both {p['both']}, NannyML only {p['nannyml_only']}, "
               f"Driftline only {p['driftline_only']}, neither {p['neither']}. "
               f"Multivariate (PCA reconstruction error) per chunk: both {mv['both']}, NannyML only {mv['nannyml_only']}, "
               f"Driftline only {mv['driftline_only']}, neither {mv['neither']}.")
    out.append("")
    feats = [*res["features"], "prediction"]
    out.append("JS distance per chunk, NannyML / Driftline (`*` = alert; limits in brackets, chunk 0):")
    out.append("")
    out.append("| chunk | " + " | ".join(feats) + " | reconstruction error |")
    out.append("| --- |" + " --- |" * (len(feats) + 1))
    by = {(q["chunk"], q["feature"]): q for q in res["pairs"]}
    mvs = {q["chunk"]: q for q in res["mv"]}

    def fmt(v: float | None, alert: bool) -> str:
        return "-" if v is None else f"{v:.3f}{'*' if alert else ''}"

    for ch in sorted({q["chunk"] for q in res["pairs"]}):
        cells = [f"{fmt(by[ch, f]['nannyml_js'], by[ch, f]['nannyml_alert'])} / "
                 f"{fmt(by[ch, f]['driftline_js'], by[ch, f]['driftline_alert'])}" for f in feats]
        n, d = mvs[ch]["nannyml"], mvs[ch]["driftline"]
        cells.append(f"{fmt(n['value'], bool(n['alert']))} / {fmt(None if d is None else d['value'], bool(d and d['alert']))}")
        out.append(f"| {ch} | " + " | ".join(cells) + " |")
    lim = [f"[{by[0, f]['nannyml_limit']:.3f} / {by[0, f]['driftline_limit']:.3f}]" for f in feats]
    n0, d0 = mvs[0]["nannyml"], mvs[0]["driftline"]
    lim.append(f"[{n0['lower_threshold']:.3f}-{n0['upper_threshold']:.3f} / "
               f"{d0['lower_threshold']:.3f}-{d0['upper_threshold']:.3f}]" if d0 else "-")
    out.append("| limits | " + " | ".join(lim) + " |")
    out.append("")
    out.append("CBPE per chunk: realised / NannyML estimate / Driftline estimate")
    out.append("")
    out.append("| chunk | " + " | ".join(METRICS) + " |")
    out.append("| --- |" + " --- |" * len(METRICS))
    for r in res["cbpe"]:
        out.append(f"| {r['chunk']} | " + " | ".join(
            f"{r[m]['realised']:.4f} / {r[m]['nannyml']:.4f} / {r[m]['driftline']:.4f}" for m in METRICS) + " |")
    out.append("")
    out.append("| metric | mean (max) abs. Driftline - NannyML | Driftline - realised | NannyML - realised |")
    out.append("| --- | --- | --- | --- |")
    for m in METRICS:
        cols = [_err(res["cbpe"], m, "driftline", "nannyml"), _err(res["cbpe"], m, "driftline", "realised"),
                _err(res["cbpe"], m, "nannyml", "realised")]
        out.append(f"| {m} | " + " | ".join(f"{a:.4f} ({b:.4f})" for a, b in cols) + " |")
    rr = max(abs(r[m]["realised"] - r[m]["realised_nannyml"]) for r in res["cbpe"] for m in METRICS
             if r[m]["realised_nannyml"] is not None)
    out.append("")
    out.append(f"Realised metrics, Driftline's BinaryAccumulator vs NannyML's: max abs. difference {rr:.1e}.")
    return "\n".join(out)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nannyml-python", type=Path, default=NANNYML_PYTHON)
    ap.add_argument("--datasets", default="car_loan,synthetic")
    ap.add_argument("--dir", type=Path, default=None, help="keep the data and profiles here (default: a temporary dir)")
    ap.add_argument("--json", type=Path, default=None, help="also write every figure as JSON")
    a = ap.parse_args(argv)
    if not a.nannyml_python.exists():
        sys.exit(f"{a.nannyml_python} not found: python3 -m venv bench/.venv-nannyml && "
                 "bench/.venv-nannyml/bin/pip install nannyml statsmodels 'pandas<3'")
    with tempfile.TemporaryDirectory() as tmp:
        base = a.dir or Path(tmp)
        results = []
        for name in a.datasets.split(","):
            d = base / name
            if name == "car_loan":
                nannyml(a.nannyml_python, "export-car-loan", str(d))
            elif name == "synthetic":
                generate(d)
            else:
                sys.exit(f"unknown dataset {name!r}")
            res = compare(name, d, a.nannyml_python)
            results.append(res)
            print(report(res), end="\n\n", flush=True)
        print(f"Machine: {machine()}")
        if a.json:
            a.json.write_text(json.dumps({"machine": machine(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
