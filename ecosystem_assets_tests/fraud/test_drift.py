"""The fast drift computation gives Evidently's numbers and verdicts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial import distance

from ecosystem_assets.fraud.drift import detect_drift, evidently_report_html

COLUMNS = ["amount", "count", "flag"]


def frame(rng, n, shift=0.0, flag_rate=0.2):
    return pd.DataFrame(
        {
            "amount": rng.gamma(2.0, 30.0 + shift, n).round(2),
            "count": rng.poisson(3 + shift / 10, n).astype(float),  # integers: ties everywhere
            "flag": (rng.random(n) < flag_rate).astype(float),
        }
    )


@pytest.mark.parametrize("shift", [0.0, 8.0])
def test_scores_equal_scipy_and_verdicts_equal_evidently(shift):
    rng = np.random.default_rng(1)
    reference, current = frame(rng, 5_000), frame(rng, 8_000, shift=shift, flag_rate=0.2 + shift / 40)
    result = detect_drift(reference, current, COLUMNS)
    scores = {c.column: c for c in result.columns}
    for column in ("amount", "count"):
        expected = stats.wasserstein_distance(reference[column], current[column]) / np.std(reference[column])
        assert scores[column].score == pytest.approx(expected, rel=1e-9)
        assert scores[column].method == "Wasserstein distance (normed)"
    ref_p = reference["flag"].value_counts(normalize=True).sort_index().to_numpy()
    cur_p = current["flag"].value_counts(normalize=True).sort_index().to_numpy()
    assert scores["flag"].score == pytest.approx(distance.jensenshannon(ref_p, cur_p), rel=1e-9)

    html, summary = evidently_report_html(reference, current, COLUMNS)
    assert "<html" in html.lower()
    values = {m["config"].get("column"): m["value"] for m in summary["metrics"] if "column" in m["config"]}
    drifted = next(m["value"] for m in summary["metrics"] if m["metric_name"].startswith("DriftedColumnsCount"))
    for column in COLUMNS:
        assert scores[column].score == pytest.approx(values[column], rel=1e-6), (column, json.dumps(values))
    assert result.share == pytest.approx(drifted["share"])
    assert result.dataset_drift is (shift > 0)


def test_needs_a_real_reference():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="more than 1,000"):
        detect_drift(frame(rng, 500), frame(rng, 500), COLUMNS)
