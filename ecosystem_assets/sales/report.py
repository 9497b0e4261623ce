"""The summary report: pure pandas + DuckDB, no Dagster.

Money is summed in integer cents, so the rows of the CSV add up exactly to the day's total; the
cents are rendered as decimal strings (``1234.50``) only at the very end.
"""

from __future__ import annotations

import pandas as pd

from ecosystem_assets.sales.history import DayTotals, cents_to_text

__all__ = ["DayTotals", "cents_to_text"]  # re-exported: the totals type and the CSV's decimal text

SUMMARY_COLUMNS = ["region", "product", "orders", "units", "revenue"]

_SUMMARY_SQL = """
SELECT region, product,
       count(*)::BIGINT AS orders,
       sum(quantity)::BIGINT AS units,
       sum(quantity::BIGINT * round(unit_price * 100)::BIGINT)::BIGINT AS revenue_cents
FROM read_parquet(?)
GROUP BY region, product
ORDER BY revenue_cents DESC, region, product
"""
_EMPTY = {"region": "string", "product": "string", "orders": "int64", "units": "int64", "revenue_cents": "int64"}


def summarize_parquet(path: str) -> pd.DataFrame:
    """One row per (region, product) of the orders in the Parquet file at ``path``: orders, units,
    revenue_cents; by revenue desc, region, product. DuckDB scans only the four columns it needs."""
    import duckdb

    with duckdb.connect() as con:
        cents = con.execute(_SUMMARY_SQL, [str(path)]).df()
    return cents if len(cents) else pd.DataFrame({c: pd.Series(dtype=t) for c, t in _EMPTY.items()})


def summary_table(cents: pd.DataFrame) -> pd.DataFrame:
    """The CSV's table: exact columns ``region,product,orders,units,revenue`` with revenue as decimal text."""
    table = cents[["region", "product", "orders", "units"]].copy()
    table["revenue"] = [cents_to_text(c) for c in cents["revenue_cents"]]
    return table[SUMMARY_COLUMNS].reset_index(drop=True)


def summary_csv_bytes(table: pd.DataFrame) -> bytes:
    return table.to_csv(index=False, lineterminator="\n").encode("utf-8")


def day_totals(cents: pd.DataFrame) -> DayTotals:
    return DayTotals(int(cents["orders"].sum()), int(cents["units"].sum()), int(cents["revenue_cents"].sum()))


def top_products(cents: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    """Orders, units and revenue_cents of the ``n`` products with the most revenue across all regions
    (desc, then name)."""
    by_product = cents.groupby("product", as_index=False)[["orders", "units", "revenue_cents"]].sum()
    return by_product.sort_values(["revenue_cents", "product"], ascending=[False, True]).head(n).reset_index(drop=True)


def region_totals(cents: pd.DataFrame) -> pd.DataFrame:
    """Orders, units and revenue_cents per region, by revenue desc, then region."""
    by_region = cents.groupby("region", as_index=False)[["orders", "units", "revenue_cents"]].sum()
    return by_region.sort_values(["revenue_cents", "region"], ascending=[False, True]).reset_index(drop=True)


def raw_totals(orders: pd.DataFrame) -> DayTotals:
    """The day's totals straight from the raw orders, with pandas (the reconciliation's independent side):
    each line's revenue is quantity × the unit price in cents, rounded half away from zero as DuckDB's
    ``round`` does (pandas' own ``round`` rounds half to even)."""
    import numpy as np

    if orders.empty:
        return DayTotals(0, 0, 0)
    quantity = orders["quantity"].astype("int64")
    price = orders["unit_price"].astype("float64").to_numpy() * 100
    line_cents = pd.Series(np.sign(price) * np.floor(np.abs(price) + 0.5), index=orders.index).astype("int64") * quantity
    return DayTotals(len(orders), int(quantity.sum()), int(line_cents.sum()))


def cents_from_summary_csv(data: bytes) -> pd.DataFrame:
    """Read a summary CSV back into integer cents (exactly; no float round trip)."""
    import io
    from decimal import Decimal

    table = pd.read_csv(io.BytesIO(data), dtype={"region": "string", "product": "string", "revenue": "string"})
    if list(table.columns) != SUMMARY_COLUMNS:
        raise ValueError(f"summary CSV has columns {list(table.columns)}, expected {SUMMARY_COLUMNS}")
    cents = table[["region", "product", "orders", "units"]].copy()
    cents["revenue_cents"] = [int(Decimal(v) * 100) for v in table["revenue"]]
    return cents.astype({"orders": "int64", "units": "int64", "revenue_cents": "int64"})


def totals_of_summary_csv(data: bytes) -> DayTotals:
    """The totals of a published summary CSV, read back exactly (the reconciliation's other side)."""
    return day_totals(cents_from_summary_csv(data))
