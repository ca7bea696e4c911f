"""Driftline against NannyML itself (``bench/peer_compare.py``); skipped unless NannyML's venv
``bench/.venv-nannyml`` exists, so CI does not need NannyML.

The figures are in bench/RESULTS.md; this pins what should not move: CBPE and the PCA
reconstruction error equal NannyML's, categorical JS distances equal NannyML's, and the drift
verdicts agree on at least 90% of the (chunk, feature) pairs, every shifted one included.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import peer_compare

pytestmark = pytest.mark.skipif(not peer_compare.NANNYML_PYTHON.exists(),
                                reason="NannyML's venv bench/.venv-nannyml is absent")


@pytest.mark.parametrize("dataset", ["car_loan", "synthetic"])
def test_agrees_with_nannyml(dataset: str, tmp_path: Path) -> None:
    d = tmp_path / dataset
    if dataset == "car_loan":
        peer_compare.nannyml(peer_compare.NANNYML_PYTHON, "export-car-loan", str(d))
    else:
        peer_compare.generate(d)
    res = peer_compare.compare(dataset, d, peer_compare.NANNYML_PYTHON)
    for row in res["cbpe"]:
        for m in peer_compare.METRICS:
            assert row[m]["driftline"] == pytest.approx(row[m]["nannyml"], abs=1e-3), (row["chunk"], m)
    for q in res["mv"]:
        assert q["driftline"]["value"] == pytest.approx(q["nannyml"]["value"], rel=1e-9)
        assert q["driftline"]["upper_threshold"] == pytest.approx(q["nannyml"]["upper_threshold"], rel=1e-9)
        assert q["driftline"]["alert"] == bool(q["nannyml"]["alert"])
    spec_cats = set(res["features"][-2:]) if dataset == "synthetic" else {
        "salary_range", "repaid_loan_on_prev_car", "size_of_downpayment"}
    for q in res["pairs"]:
        if q["feature"] in spec_cats:
            assert q["driftline_js"] == pytest.approx(q["nannyml_js"], abs=1e-9)
    c = res["univariate"]
    assert (c["both"] + c["neither"]) / sum(c.values()) >= 0.9
    # the chunks with a JS of at least 0.1 (the shifts of the second half) alert in both
    for q in res["pairs"]:
        if q["nannyml_js"] >= 0.1:
            assert q["nannyml_alert"] and q["driftline_alert"], q
