"""What the fraud assets are checked against (plain functions; the assets yield the results)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

FEATURES_CHECK = "features_quality_gate"
PRECISION_CHECK = "live_precision_above_threshold"
DRIFT_CHECK = "feature_drift"
PROMOTION_CHECK = "fraud_model_promotion"
FRAUD_RATE_BAND = (0.001, 0.30)  # outside this the simulator or the labels are broken, not the world
# Check-evaluation metadata the retrain sensor reads: whether anything was judged, and the window's end.
JUDGED = "judged"
WINDOW_END = "window_end"


def feature_expectations(features: list[str]) -> list[Any]:
    import great_expectations as gx

    e = gx.expectations
    columns = ["transaction_id", "customer_id", "terminal_id", "timestamp", "is_fraud", *features]
    expectations: list[Any] = [e.ExpectTableColumnsToMatchSet(column_set=columns, exact_match=False)]
    expectations += [e.ExpectColumnValuesToNotBeNull(column=c) for c in columns]
    expectations += [
        e.ExpectColumnValuesToBeBetween(column="amount", min_value=0),
        e.ExpectColumnValuesToBeInSet(column="is_fraud", value_set=[0, 1]),
        e.ExpectColumnMeanToBeBetween(column="is_fraud", min_value=FRAUD_RATE_BAND[0], max_value=FRAUD_RATE_BAND[1]),
        e.ExpectColumnValuesToBeUnique(column="transaction_id"),
    ]
    return expectations


@dataclass(frozen=True)
class Verdict:
    """A monitoring check's outcome. Not judged (too little evidence) is neither a pass nor a
    failure: the check shows a warning, and the retrain sensor ignores it."""

    judged: bool
    passed: bool
    reason: str

    @classmethod
    def not_judged(cls, why: str) -> Verdict:
        return cls(False, False, f"not judged: {why}")


def precision_verdict(summary: dict[str, Any], threshold: float, min_labelled: int) -> Verdict:
    """Fail when enough labelled predictions of the serving model show precision below ``threshold``."""
    labelled, precision = summary["labelled"], summary["precision"]
    version = summary.get("model_version")
    if version is None:
        return Verdict.not_judged("no serving model")
    if labelled < min_labelled:
        return Verdict.not_judged(f"only {labelled} labelled predictions of v{version} in the window (< {min_labelled})")
    if precision is None:
        return Verdict.not_judged(f"v{version} flagged none of its {labelled} labelled predictions; precision undefined")
    if precision < threshold:
        return Verdict(True, False, f"live precision {precision:.3f} of v{version} is below {threshold:.2f} ({labelled} labelled)")
    return Verdict(True, True, f"live precision {precision:.3f} of v{version} ≥ {threshold:.2f} ({labelled} labelled)")


def day_ranges(days: list[date]) -> str:
    """``2026-09-01..2026-09-03, 2026-09-07``: the given days as runs of consecutive days."""
    runs: list[list[date]] = []
    for day in sorted(days):
        if runs and day - runs[-1][-1] == timedelta(days=1):
            runs[-1].append(day)
        else:
            runs.append([day])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}..{r[-1]}" for r in runs)
