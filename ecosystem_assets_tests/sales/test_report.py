"""The summary's numbers, order and format, against an independent Decimal computation.

The orders go through the production path: typed by `orders_frame`, written with `storage.write_parquet`
(as raw_sales does) and summarised from that file by `report.summarize_parquet`.
"""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from ecosystem_assets.sales import report
from ecosystem_assets.sales.email_report import build_report_email, money
from ecosystem_assets.sales.orders import orders_frame
from ecosystem_assets.storage import LocalStore, write_parquet
from ecosystem_assets_tests.sales.orders_data import expected_rows, make_orders


@pytest.fixture
def summarize(tmp_path):
    """Order records → the summary in cents, through a Parquet file as in production."""
    store = LocalStore(tmp_path)

    def run(orders: list[dict]) -> pd.DataFrame:
        write_parquet(store, "orders.parquet", orders_frame(orders))
        return report.summarize_parquet(str(store.path("orders.parquet")))

    return run


def csv_rows(data: bytes) -> list[list[str]]:
    return [line.split(",") for line in data.decode().splitlines()]


def test_summary_matches_decimal_arithmetic_and_adds_up_exactly(summarize):
    orders = make_orders("2026-11-26", 997)
    cents = summarize(orders)
    data = report.summary_csv_bytes(report.summary_table(cents))
    rows = csv_rows(data)
    assert rows[0] == ["region", "product", "orders", "units", "revenue"]
    assert rows[1:] == expected_rows(orders)
    total = sum(round(o["quantity"] * o["unit_price"] * 100) for o in orders)
    assert report.day_totals(cents).revenue_cents == total
    assert report.cents_from_summary_csv(data)["revenue_cents"].sum() == total


def test_float_prices_do_not_drift(summarize):
    # 0.1 + 0.2 style prices summed a million times in floats would drift; cents do not.
    orders = [
        {"order_id": str(i), "ordered_at": "2026-11-26T10:00:00+00:00", "region": "R", "product": "P", "quantity": 3, "unit_price": 0.1}
        for i in range(100_000)
    ]
    table = report.summary_table(summarize(orders))
    assert table.to_dict("records") == [{"region": "R", "product": "P", "orders": 100_000, "units": 300_000, "revenue": "30000.00"}]


def test_ties_sort_by_region_then_product(summarize):
    base = {"ordered_at": "2026-11-26T10:00:00+00:00", "quantity": 1, "unit_price": 5.0}
    orders = [dict(base, order_id=str(i), region=r, product=p) for i, (r, p) in enumerate([("B", "y"), ("A", "z"), ("A", "x"), ("B", "x")])]
    orders.append(dict(base, order_id="big", region="C", product="q", unit_price=9.0))
    table = report.summary_table(summarize(orders))
    assert list(zip(table["region"], table["product"], strict=True)) == [("C", "q"), ("A", "x"), ("A", "z"), ("B", "x"), ("B", "y")]


def test_empty_day_gives_header_only_csv_and_no_orders_body(summarize):
    cents = summarize([])
    assert report.summary_csv_bytes(report.summary_table(cents)) == b"region,product,orders,units,revenue\n"
    email = build_report_email(date(2026, 12, 25), cents, {}, "USD", "sales-summary-2026-12-25.csv")
    assert "No orders" in email.text and "No orders" in email.html and email.images == ()


def test_email_body_lists_totals_and_top_five_products(summarize):
    orders = make_orders("2026-11-26", 400)
    cents = summarize(orders)
    body = build_report_email(date(2026, 11, 26), cents, {}, "USD", "sales-summary-2026-11-26.csv").text
    by_product = pd.DataFrame(orders).assign(rev=lambda d: d.quantity * d.unit_price).groupby("product").rev.sum()
    top = by_product.sort_values(ascending=False).index[:5]
    lines = [line for line in body.splitlines() if line.strip()[:2] in {f"{i}." for i in range(1, 6)}]
    assert [line.split(". ", 1)[1].split(":")[0] for line in lines] == list(top)
    assert f"Orders:  {len(orders):,}" in body
    assert f"Revenue: {money(report.day_totals(cents).revenue_cents, 'USD')}" in body
