"""A built-in, deterministic sales feed so the report runs with no API and no network.

Same date → same orders, byte for byte. Hundreds to a few thousand orders a day across five
regions and eight products, busier at weekends and in December, spread over the local day with a
lunchtime and an evening peak. A few days have no orders (holidays and deterministic "outages").
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

REGIONS = ("North", "South", "East", "West", "Central")
REGION_WEIGHTS = (0.24, 0.18, 0.22, 0.26, 0.10)
PRODUCTS = {  # product → list price
    "Espresso Machine": 249.00,
    "Grinder": 89.50,
    "Milk Frother": 34.99,
    "Coffee Beans 1kg": 18.75,
    "Descaler": 7.49,
    "Travel Mug": 14.90,
    "Pour-Over Kit": 42.00,
    "Kettle": 59.95,
}
PRODUCT_WEIGHTS = (0.04, 0.07, 0.10, 0.34, 0.12, 0.15, 0.06, 0.12)
WEEKDAY_FACTOR = (0.80, 0.85, 0.90, 0.95, 1.10, 1.45, 1.30)  # Monday … Sunday
CLOSED_DAYS = {(12, 25), (1, 1)}


def _seed(day: date) -> int:
    return int.from_bytes(hashlib.sha256(f"demo-sales:{day.isoformat()}".encode()).digest()[:8], "big")


def expected_order_count(day: date) -> int:
    """The day's order count (0 on closed days and about one day in fifty)."""
    if (day.month, day.day) in CLOSED_DAYS or _seed(day) % 50 == 0:
        return 0
    season = 1.0 + 0.35 * np.exp(-(((day.timetuple().tm_yday - 345) / 20.0) ** 2))
    rng = np.random.default_rng(_seed(day))
    return int(rng.poisson(900 * WEEKDAY_FACTOR[day.weekday()] * season))


def orders_for_day(day: date, timezone: str = "UTC") -> list[dict]:
    """The day's orders in the sales API's JSON shape, ``ordered_at`` with the local UTC offset."""
    count = expected_order_count(day)
    if count == 0:
        return []
    rng = np.random.default_rng(_seed(day) + 1)
    zone = ZoneInfo(timezone)
    midnight = datetime(day.year, day.month, day.day, tzinfo=zone)
    # Seconds into the local day: a mixture with peaks at 12:30 and 19:30, clipped to the day.
    peak = rng.choice([45_000, 70_200, 50_000], size=count, p=[0.35, 0.4, 0.25])
    spread = np.where(peak == 50_000, 14_000, 4_500)
    seconds = np.clip(rng.normal(peak, spread), 0, 86_399).astype(int)
    seconds.sort()
    regions = rng.choice(len(REGIONS), size=count, p=REGION_WEIGHTS)
    products = rng.choice(len(PRODUCTS), size=count, p=PRODUCT_WEIGHTS)
    quantities = np.minimum(rng.geometric(0.55, size=count), 12)
    discounts = rng.choice([1.0, 0.9, 0.85], size=count, p=[0.8, 0.15, 0.05])
    names = list(PRODUCTS)
    orders = []
    for i in range(count):
        product = names[products[i]]
        # Wall-clock arithmetic in the zone, so the offset is right on daylight-saving days.
        local = (midnight.replace(tzinfo=None) + timedelta(seconds=int(seconds[i]))).replace(tzinfo=zone)
        orders.append(
            {
                "order_id": f"D{day:%Y%m%d}-{i + 1:05d}",
                "ordered_at": local.isoformat(timespec="seconds"),
                "region": REGIONS[regions[i]],
                "product": product,
                "quantity": int(quantities[i]),
                "unit_price": round(PRODUCTS[product] * float(discounts[i]), 2),
            }
        )
    return orders
