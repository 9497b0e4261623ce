"""What the fraud assets are checked against (plain functions; the assets yield the results)."""

from __future__ import annotations

from typing import Any

FEATURES_CHECK = "features_quality_gate"
PRECISION_CHECK = "live_precision_above_threshold"
DRIFT_CHECK = "feature_drift"
FRAUD_RATE_BAND = (0.001, 0.30)  # outside this the simulator or the labels are broken, not the world


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


def precision_verdict(summary: dict[str, Any], threshold: float, min_labelled: int) -> tuple[bool, str]:
    """Pass unless enough labelled predictions of the serving model show precision below ``threshold``.

    Too few labels is not evidence of anything: it passes (and says so) rather than triggering a retrain.
    """
    labelled, precision = summary["labelled"], summary["precision"]
    version = summary.get("model_version")
    if labelled < min_labelled:
        return True, f"only {labelled} labelled predictions of v{version} in the window (< {min_labelled}); not judged"
    if precision is None:
        return True, f"v{version} flagged none of its {labelled} labelled predictions; precision undefined"
    if precision < threshold:
        return False, f"live precision {precision:.3f} of v{version} is below {threshold:.2f} ({labelled} labelled)"
    return True, f"live precision {precision:.3f} of v{version} ≥ {threshold:.2f} ({labelled} labelled)"
