"""NannyML's side of the peer comparison (``bench/peer_compare.py``): runs in NannyML's own venv.

Not imported by Driftline (it needs pandas and nannyml): ``bench/peer_compare.py`` runs it as a
subprocess with ``bench/.venv-nannyml/bin/python``. Two commands:

- ``export-car-loan DIR``: write NannyML's bundled synthetic car-loan dataset (published with the
  package, offline) as ``DIR/reference.csv`` and ``DIR/analysis.csv`` (analysis targets joined in)
  plus ``DIR/spec.json``;
- ``run DIR``: read ``DIR/spec.json`` and the two CSV files, fit on the reference, and print one
  JSON object: per analysis chunk the univariate Jensen-Shannon value, upper threshold and alert
  of each feature (and of the score), the data-reconstruction error with its limits and alert, and
  CBPE's estimated and realised metrics. Every calculator uses its default thresholds.

spec.json: ``{"numeric": [...], "categorical": [...], "score": col, "y_pred": col, "y_true": col,
"chunk_size": n}``.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import nannyml as nml  # type: ignore[import-not-found]
import pandas as pd  # type: ignore[import-untyped]

METRICS = ["roc_auc", "accuracy", "precision", "recall", "f1"]


def _f(v: Any) -> Any:
    if isinstance(v, bool):
        return v
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _analysis(df: pd.DataFrame) -> pd.DataFrame:
    """The analysis rows of a result frame, with flat ``a|b`` column names."""
    df = df.copy()
    # the univariate frame repeats "chunk" (chunk|chunk|period): keep the first of each run
    df.columns = ["|".join(dict.fromkeys(str(c) for c in col if c != "")) for col in df.columns]
    return df[df["chunk|period"] == "analysis"].reset_index(drop=True)


def export_car_loan(out: Path) -> None:
    ref, ana, tgt = nml.load_synthetic_car_loan_dataset()
    ana = ana.merge(tgt, on="id")
    out.mkdir(parents=True, exist_ok=True)
    cols = ["car_value", "salary_range", "debt_to_income_ratio", "loan_length", "repaid_loan_on_prev_car",
            "size_of_downpayment", "driver_tenure", "y_pred_proba", "y_pred", "repaid"]
    ref[cols].to_csv(out / "reference.csv", index=False)
    ana[cols].to_csv(out / "analysis.csv", index=False)
    spec = {"numeric": ["car_value", "debt_to_income_ratio", "loan_length", "driver_tenure"],
            "categorical": ["salary_range", "repaid_loan_on_prev_car", "size_of_downpayment"],
            "score": "y_pred_proba", "y_pred": "y_pred", "y_true": "repaid", "chunk_size": 5000}
    (out / "spec.json").write_text(json.dumps(spec, indent=1))


def run(d: Path) -> dict[str, Any]:
    spec = json.loads((d / "spec.json").read_text())
    cat = spec["categorical"]
    dtypes = {c: str for c in cat}
    ref = pd.read_csv(d / "reference.csv", dtype=dtypes)
    ana = pd.read_csv(d / "analysis.csv", dtype=dtypes)
    num, score, n = spec["numeric"], spec["score"], int(spec["chunk_size"])
    columns = [*num, *cat, score]

    uni = nml.UnivariateDriftCalculator(column_names=columns, treat_as_categorical=cat,
                                        treat_as_numerical=[*num, score],
                                        continuous_methods=["jensen_shannon"],
                                        categorical_methods=["jensen_shannon"], chunk_size=n)
    uni.fit(ref)
    u = _analysis(uni.calculate(ana).to_df())

    drc = nml.DataReconstructionDriftCalculator(column_names=num, chunk_size=n)
    drc.fit(ref)
    m = _analysis(drc.calculate(ana).to_df())

    cbpe = nml.CBPE(y_pred_proba=score, y_pred=spec["y_pred"], y_true=spec["y_true"],
                    problem_type="classification_binary", metrics=METRICS, chunk_size=n)
    cbpe.fit(ref)
    e = _analysis(cbpe.estimate(ana).to_df())

    chunks: list[dict[str, Any]] = []
    for i in range(len(u)):
        feats = {}
        for c in columns:
            name = "prediction" if c == score else c
            feats[name] = {k: _f(u.at[i, f"{c}|jensen_shannon|{k}"]) for k in ("value", "upper_threshold", "alert")}
        chunks.append({
            "chunk": i, "start": int(u.at[i, "chunk|start_index"]), "end": int(u.at[i, "chunk|end_index"]) + 1,
            "univariate": feats,
            "multivariate": {k: _f(m.at[i, f"reconstruction_error|{k}"])
                             for k in ("value", "upper_threshold", "lower_threshold", "alert")},
            "cbpe": {mt: {"estimated": _f(e.at[i, f"{mt}|value"]), "realised": _f(e.at[i, f"{mt}|realized"]),
                          "alert": _f(e.at[i, f"{mt}|alert"])} for mt in METRICS},
        })
    return {"nannyml": nml.__version__, "chunk_size": n, "chunks": chunks}


def main() -> None:
    warnings.filterwarnings("ignore")
    cmd, d = sys.argv[1], Path(sys.argv[2])
    if cmd == "export-car-loan":
        export_car_loan(d)
    elif cmd == "run":
        json.dump(run(d), sys.stdout)
    else:
        raise SystemExit(f"unknown command {cmd!r}")


if __name__ == "__main__":
    main()
