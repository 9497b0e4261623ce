"""Earlier days' totals for the email's comparisons and chart. Plain Python, no Dagster, no pandas.

The history is what Dagster recorded: the metadata of the latest ``sales_summary_csv``
materialization of each earlier partition (the asset reads them from the instance and hands the
plain values here). Money stays in integer cents: materializations record ``revenue_cents``; older
ones recorded only ``revenue`` as decimal text (``"114385.44"``), which is read exactly too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

CHART_DAYS = 14  # the chart's days, the report's day included


def cents_to_text(cents: int) -> str:
    """``123456`` → ``"1234.56"`` (the CSV's and the metadata's plain decimal text)."""
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(int(cents)), 100)
    return f"{sign}{whole}.{frac:02d}"


@dataclass(frozen=True)
class DayTotals:
    orders: int
    units: int
    revenue_cents: int

    @property
    def revenue(self) -> str:
        return cents_to_text(self.revenue_cents)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _cents(metadata: Mapping[str, Any]) -> int | None:
    cents = _count(metadata.get("revenue_cents"))
    if cents is not None:
        return cents
    revenue = metadata.get("revenue")  # older materializations: decimal text
    if isinstance(revenue, bool) or not isinstance(revenue, (str, int, float)):
        return None
    try:
        # A float goes through its shortest repr ("114385.44"), not its binary value.
        exact = Decimal(revenue if isinstance(revenue, str) else repr(revenue)) * 100
    except InvalidOperation:
        return None
    return int(exact.to_integral_value()) if exact.is_finite() else None


def totals_from_metadata(metadata: Mapping[str, Any]) -> DayTotals | None:
    """A summary materialization's totals (plain metadata values), or None when it does not record them."""
    orders, units, cents = _count(metadata.get("orders")), _count(metadata.get("units")), _cents(metadata)
    if orders is None or units is None or cents is None:
        return None
    return DayTotals(orders, units, cents)


def earlier_days(day: date, days: int = CHART_DAYS) -> list[date]:
    """The days before ``day`` the email looks at: the chart's (``days`` - 1 of them, oldest first); they
    include the previous day and the same weekday a week earlier."""
    return [day - timedelta(days=n) for n in range(days - 1, 0, -1)]


@dataclass(frozen=True)
class Change:
    metric: str  # orders, units, revenue
    current: int
    previous: int

    @property
    def delta(self) -> int:
        return self.current - self.previous

    @property
    def percent(self) -> float | None:
        """The change in percent of the earlier value; None when that was 0."""
        return self.delta * 100 / self.previous if self.previous else None


@dataclass(frozen=True)
class Comparison:
    label: str  # "previous day", "same weekday a week earlier"
    day: date
    totals: DayTotals | None  # None: no report for that day

    def changes(self, current: DayTotals) -> list[Change]:
        if self.totals is None:
            return []
        return [
            Change("orders", current.orders, self.totals.orders),
            Change("units", current.units, self.totals.units),
            Change("revenue", current.revenue_cents, self.totals.revenue_cents),
        ]


def comparisons(day: date, history: Mapping[date, DayTotals]) -> list[Comparison]:
    """Against the previous day and the same weekday a week earlier."""
    return [
        Comparison(label, other, history.get(other))
        for label, other in (("previous day", day - timedelta(days=1)), ("same weekday a week earlier", day - timedelta(days=7)))
    ]


def revenue_series(
    day: date, current: DayTotals, history: Mapping[date, DayTotals], days: int = CHART_DAYS
) -> list[tuple[date, int | None]]:
    """Revenue in cents of the chart's days, oldest first, ending with ``day``; None where no report exists."""
    series: list[tuple[date, int | None]] = [(d, t.revenue_cents if (t := history.get(d)) else None) for d in earlier_days(day, days)]
    return [*series, (day, current.revenue_cents)]
