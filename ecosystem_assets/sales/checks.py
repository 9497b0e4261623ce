"""The orders quality gate: what a day's orders must satisfy before anything is published."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from ecosystem_assets.quality import QualityReport, validate_frame
from ecosystem_assets.sales.orders import ORDER_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

# ordered_at has no entry: GE cannot name a tz-aware dtype, and ingestion already turns anything
# that is not ISO-8601 with an offset into null, which the not-null expectation then reports.
COLUMN_TYPES = {
    "order_id": ["StringDtype"],
    "region": ["StringDtype"],
    "product": ["StringDtype"],
    "quantity": ["int64", "Int64"],
    "unit_price": ["float64", "int64"],
}


def orders_expectations(columns: list[str], day_start: datetime, day_end: datetime) -> list[Any]:
    """Expectations for one day's orders; ``day_start``/``day_end`` are tz-aware (end exclusive)."""
    import great_expectations as gx

    e = gx.expectations
    expectations: list[Any] = [e.ExpectColumnToExist(column=c) for c in ORDER_COLUMNS]
    present = [c for c in ORDER_COLUMNS if c in columns]  # a missing column is reported once, above
    for column in present:
        if column in COLUMN_TYPES:
            expectations.append(e.ExpectColumnValuesToBeInTypeList(column=column, type_list=COLUMN_TYPES[column]))
        expectations.append(e.ExpectColumnValuesToNotBeNull(column=column))
    rules: dict[str, list[Any]] = {
        "order_id": [e.ExpectColumnValuesToBeUnique(column="order_id")],
        "quantity": [e.ExpectColumnValuesToBeBetween(column="quantity", min_value=1)],
        "unit_price": [e.ExpectColumnValuesToBeBetween(column="unit_price", min_value=0)],
        # Datetimes, not strings: GE's `between` with string bounds fails on datetime columns.
        "ordered_at": [e.ExpectColumnValuesToBeBetween(column="ordered_at", min_value=day_start, max_value=day_end, strict_max=True)],
        "region": [e.ExpectColumnValuesToMatchRegex(column="region", regex=r"\S")],
        "product": [e.ExpectColumnValuesToMatchRegex(column="product", regex=r"\S")],
    }
    for column in present:
        expectations.extend(rules[column])
    return expectations


def validate_orders(orders: pd.DataFrame, day_start: datetime, day_end: datetime) -> QualityReport:
    """Run the gate. Non-integer quantities fail the type expectation; list those rows too."""
    report = validate_frame(orders, "raw_sales_orders", orders_expectations(list(orders.columns), day_start, day_end))
    if "quantity" in orders and orders["quantity"].dtype.kind == "f":
        fractional = orders.index[(orders["quantity"] % 1 != 0).fillna(False)][:5]
        if len(fractional):
            report.offending = orders.loc[sorted(set(report.offending.index) | set(fractional))]
    return report
