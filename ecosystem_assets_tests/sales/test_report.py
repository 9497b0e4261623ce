"""The summary's numbers, order and format, against an independent Decimal computation."""

from __future__ import annotations

import pandas as pd

from ecosystem_assets.sales import report
from ecosystem_assets.sales.orders import orders_frame
from ecosystem_assets_tests.sales.orders_data import expected_rows, make_orders


def csv_rows(data: bytes) -> list[list[str]]:
    return [line.split(",") for line in data.decode().splitlines()]


def test_summary_matches_decimal_arithmetic_and_adds_up_exactly():
    orders = make_orders("2026-11-26", 997)
    cents = report.summarize_cents(orders_frame(orders))
    data = report.summary_csv_bytes(report.summary_table(cents))
    rows = csv_rows(data)
    assert rows[0] == ["region", "product", "orders", "units", "revenue"]
    assert rows[1:] == expected_rows(orders)
    total = sum(round(o["quantity"] * o["unit_price"] * 100) for o in orders)
    assert report.day_totals(cents).revenue_cents == total
    assert report.cents_from_summary_csv(data)["revenue_cents"].sum() == total


def test_float_prices_do_not_drift():
    # 0.1 + 0.2 style prices summed a million times in floats would drift; cents do not.
    orders = [
        {"order_id": str(i), "ordered_at": "2026-11-26T10:00:00+00:00", "region": "R", "product": "P", "quantity": 3, "unit_price": 0.1}
        for i in range(100_000)
    ]
    table = report.summary_table(report.summarize_cents(orders_frame(orders)))
    assert table.to_dict("records") == [{"region": "R", "product": "P", "orders": 100_000, "units": 300_000, "revenue": "30000.00"}]


def test_ties_sort_by_region_then_product():
    base = {"ordered_at": "2026-11-26T10:00:00+00:00", "quantity": 1, "unit_price": 5.0}
    orders = [dict(base, order_id=str(i), region=r, product=p) for i, (r, p) in enumerate([("B", "y"), ("A", "z"), ("A", "x"), ("B", "x")])]
    orders.append(dict(base, order_id="big", region="C", product="q", unit_price=9.0))
    table = report.summary_table(report.summarize_cents(orders_frame(orders)))
    assert list(zip(table["region"], table["product"])) == [("C", "q"), ("A", "x"), ("A", "z"), ("B", "x"), ("B", "y")]


def test_empty_day_gives_header_only_csv_and_no_orders_body():
    cents = report.summarize_cents(orders_frame([]))
    assert report.summary_csv_bytes(report.summary_table(cents)) == b"region,product,orders,units,revenue\n"
    assert "No orders" in report.email_body("2026-12-25", cents)


def test_email_body_lists_totals_and_top_five_products():
    orders = make_orders("2026-11-26", 400)
    cents = report.summarize_cents(orders_frame(orders))
    body = report.email_body("2026-11-26", cents)
    by_product = pd.DataFrame(orders).assign(rev=lambda d: d.quantity * d.unit_price).groupby("product").rev.sum()
    top = by_product.sort_values(ascending=False).index[:5]
    lines = [line for line in body.splitlines() if line.strip()[:2] in {f"{i}." for i in range(1, 6)}]
    assert [line.split(". ", 1)[1].split(":")[0] for line in lines] == list(top)
    assert f"Orders:  {len(orders):,}" in body
    assert f"Revenue: {report.day_totals(cents).revenue}" in body
