"""The summary report: pure pandas + DuckDB, no Dagster.

Money is summed in integer cents, so the rows of the CSV add up exactly to the day's total; the
cents are rendered as decimal strings (``1234.50``) only at the very end.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

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


def cents_to_text(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(int(cents)), 100)
    return f"{sign}{whole}.{frac:02d}"


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


@dataclass(frozen=True)
class DayTotals:
    orders: int
    units: int
    revenue_cents: int

    @property
    def revenue(self) -> str:
        return cents_to_text(self.revenue_cents)


def day_totals(cents: pd.DataFrame) -> DayTotals:
    return DayTotals(int(cents["orders"].sum()), int(cents["units"].sum()), int(cents["revenue_cents"].sum()))


def top_products(cents: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    """Products across all regions by revenue (desc, then name), with revenue as decimal text."""
    by_product = (
        cents.groupby("product", as_index=False)[["orders", "units", "revenue_cents"]]
        .sum()
        .sort_values(["revenue_cents", "product"], ascending=[False, True])
        .head(n)
    )
    by_product["revenue"] = [cents_to_text(c) for c in by_product["revenue_cents"]]
    return by_product[["product", "orders", "units", "revenue"]].reset_index(drop=True)


def email_body(day: str, cents: pd.DataFrame) -> str:
    """Plain-text body: the day's totals and top five products, or a plain 'no orders' line."""
    if cents.empty:
        return f"No orders were recorded on {day}. The attached summary is empty (header only).\n"
    totals = day_totals(cents)
    lines = [
        f"Sales summary for {day}",
        "",
        f"Orders:  {totals.orders:,}",
        f"Units:   {totals.units:,}",
        f"Revenue: {totals.revenue}",
        "",
        "Top products by revenue:",
    ]
    for rank, row in enumerate(top_products(cents).itertuples(index=False), start=1):
        lines.append(f"  {rank}. {row.product}: {row.revenue} ({row.units:,} units, {row.orders:,} orders)")
    lines += ["", "The full summary by region and product is attached as CSV."]
    return "\n".join(lines) + "\n"


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
