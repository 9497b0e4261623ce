"""Feature drift of live traffic against the training reference, fast enough for millions of rows.

Same tests, thresholds and verdict rule as Evidently's DataDriftPreset (0.7) for a reference of
more than 1,000 rows: a column with at most 5 distinct values → Jensen–Shannon distance of the
value frequencies; any other numerical column → Wasserstein distance normed by the reference's
standard deviation; a column drifts at ≥ 0.1, the dataset when ≥ half of its columns drift.
The Wasserstein distance is computed exactly, from both samples sorted once and their empirical
CDFs compared at every distinct value (what SciPy does, without its per-call overhead), so
verdicts agree with Evidently even for a column scoring next to the threshold. The Evidently
report itself is rendered on a sample, for people to read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

COLUMN_THRESHOLD = 0.1
DRIFT_SHARE = 0.5


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    score: float
    drifted: bool


@dataclass(frozen=True)
class DriftResult:
    columns: list[ColumnDrift]
    reference_rows: int
    current_rows: int

    @property
    def share(self) -> float:
        return sum(c.drifted for c in self.columns) / len(self.columns) if self.columns else 0.0

    @property
    def dataset_drift(self) -> bool:
        return self.share >= DRIFT_SHARE

    def table_markdown(self) -> str:
        lines = ["| feature | test | score | drifted |", "|---|---|---:|---|"]
        lines += [f"| {c.column} | {c.method} | {c.score:.4f} | {'yes' if c.drifted else 'no'} |" for c in self.columns]
        return "\n".join(lines)


def _wasserstein_normed(reference: Any, current: Any) -> float:
    """W1 = ∫ |F_ref(x) − F_cur(x)| dx over the merged support, normed by the reference's std."""
    import numpy as np

    ref, cur = np.sort(reference), np.sort(current)
    support = np.union1d(ref, cur)
    cdf_ref = np.searchsorted(ref, support[:-1], side="right") / len(ref)
    cdf_cur = np.searchsorted(cur, support[:-1], side="right") / len(cur)
    distance = float(np.sum(np.abs(cdf_ref - cdf_cur) * np.diff(support)))
    return distance / max(float(np.std(reference)), 0.001)


def _jensen_shannon(reference: Any, current: Any) -> float:
    import numpy as np
    from scipy.spatial import distance

    keys = np.union1d(np.unique(reference), np.unique(current))
    ref = np.array([(reference == k).mean() for k in keys])
    cur = np.array([(current == k).mean() for k in keys])
    return float(distance.jensenshannon(ref, cur))


def detect_drift(reference: Any, current: Any, columns: list[str]) -> DriftResult:
    """Per-column drift and the dataset verdict; ``reference`` and ``current`` are DataFrames."""
    # Hand-written instead of Evidently's preset for speed: bench/drift.py (≥ 5× faster, same verdicts, 1 M rows).
    import numpy as np

    if len(reference) <= 1000:
        raise ValueError(f"the drift reference has {len(reference)} rows; more than 1,000 are needed for these tests")
    if len(current) == 0:
        raise ValueError("no live rows to compare with the reference")
    results = []
    for column in columns:
        ref = reference[column].to_numpy(dtype=float)
        cur = current[column].to_numpy(dtype=float)
        few_values = (
            len(np.unique(ref)) <= 5 and len(np.unique(cur[:100_000])) <= 5 and len(np.union1d(np.unique(ref), np.unique(cur))) <= 5
        )
        if few_values:
            score, method = _jensen_shannon(ref, cur), "Jensen-Shannon distance"
        else:
            score, method = _wasserstein_normed(ref, cur), "Wasserstein distance (normed)"
        results.append(ColumnDrift(column, method, score, score >= COLUMN_THRESHOLD))
    return DriftResult(results, len(reference), len(current))


def evidently_report_html(reference: Any, current: Any, columns: list[str], max_rows: int = 20_000, seed: int = 0) -> tuple[str, dict]:
    """Evidently's DataDriftPreset as HTML (on at most ``max_rows`` per side) and its summary dict."""
    import os
    import tempfile
    import warnings

    os.environ.setdefault("DO_NOT_TRACK", "1")
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    def sample(frame: Any) -> Any:
        return frame[columns].sample(min(max_rows, len(frame)), random_state=seed) if len(frame) > max_rows else frame[columns]

    definition = DataDefinition(numerical_columns=columns)
    cur = Dataset.from_pandas(sample(current), data_definition=definition)
    ref = Dataset.from_pandas(sample(reference), data_definition=definition)
    with warnings.catch_warnings():  # constant columns make its correlation plots divide by zero
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = Report([DataDriftPreset()]).run(cur, ref)  # Evidently 0.7: current first
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "drift.html")
        snapshot.save_html(path)
        with open(path, encoding="utf-8") as handle:
            html = handle.read()
    return html, snapshot.dict()
