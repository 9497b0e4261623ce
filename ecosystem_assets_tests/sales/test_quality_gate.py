"""The orders gate: each rule catches what it should, names it and shows the offending rows."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from ecosystem_assets.sales.checks import validate_orders
from ecosystem_assets.sales.orders import drop_identical_duplicates, orders_frame
from ecosystem_assets_tests.sales.orders_data import make_orders

BERLIN = ZoneInfo("Europe/Berlin")
START, END = datetime(2026, 11, 26, tzinfo=BERLIN), datetime(2026, 11, 27, tzinfo=BERLIN)


def gate(records):
    frame, _ = drop_identical_duplicates(orders_frame(records))
    return validate_orders(frame, START, END)


def test_clean_day_passes():
    report = gate(make_orders("2026-11-26", 50, offset="+01:00"))
    assert report.success, report.summary()
    assert report.rows == 50 and report.evaluated >= 20


def _break(field, value):
    def mutate(orders):
        orders[7][field] = value

    return mutate


def _drop(field):
    def mutate(orders):
        del orders[7][field]

    return mutate


def _conflicting_duplicate(orders):
    orders[8]["order_id"] = orders[7]["order_id"]


def _missing_column(orders):
    for o in orders:
        o.pop("unit_price")


@pytest.mark.parametrize(
    ("mutate", "expectation", "column"),
    [
        (_break("quantity", 0), "expect_column_values_to_be_between", "quantity"),
        (_break("quantity", 2.5), "expect_column_values_to_be_in_type_list", "quantity"),
        (_break("quantity", "3"), "expect_column_values_to_not_be_null", "quantity"),
        (_break("unit_price", -1.0), "expect_column_values_to_be_between", "unit_price"),
        (_break("ordered_at", "2026-11-27T00:00:00+01:00"), "expect_column_values_to_be_between", "ordered_at"),
        (_break("ordered_at", "2026-11-25T23:59:59+01:00"), "expect_column_values_to_be_between", "ordered_at"),
        (_break("ordered_at", "2026-11-26T10:00:00"), "expect_column_values_to_not_be_null", "ordered_at"),
        (_break("ordered_at", "yesterday"), "expect_column_values_to_not_be_null", "ordered_at"),
        (_break("region", "  "), "expect_column_values_to_match_regex", "region"),
        (_break("product", ""), "expect_column_values_to_match_regex", "product"),
        (_break("region", None), "expect_column_values_to_not_be_null", "region"),
        (_drop("order_id"), "expect_column_values_to_not_be_null", "order_id"),
        (_conflicting_duplicate, "expect_column_values_to_be_unique", "order_id"),
        (_missing_column, "expect_column_to_exist", "unit_price"),
    ],
)
def test_each_rule_fails_and_names_the_rows(mutate, expectation, column):
    orders = make_orders("2026-11-26", 30, offset="+01:00")
    mutate(orders)
    report = gate(orders)
    assert not report.success
    failed = {(f.expectation, f.column) for f in report.failures}
    assert (expectation, column) in failed, report.summary()
    if expectation != "expect_column_to_exist":
        assert 7 in report.offending.index  # the broken row is shown
    meta = report.metadata()
    assert expectation in meta["failed_expectations"].value
    assert column in report.summary()


def test_identical_duplicates_are_dropped_and_counted():
    orders = make_orders("2026-11-26", 20, offset="+01:00")
    frame, dropped = drop_identical_duplicates(orders_frame(orders + orders[5:9]))
    assert dropped == 4 and len(frame) == 20
    assert validate_orders(frame, START, END).success


def test_day_bounds_follow_the_report_time_zone():
    # 23:30 UTC on the 25th is 00:30 on the 26th in Berlin: inside the day.
    orders = make_orders("2026-11-26", 5, offset="+01:00")
    orders[0]["ordered_at"] = "2026-11-25T23:30:00+00:00"
    assert gate(orders).success
    orders[0]["ordered_at"] = "2026-11-26T23:30:00+00:00"  # 00:30 on the 27th in Berlin
    assert not gate(orders).success
