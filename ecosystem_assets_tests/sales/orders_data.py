"""Order records for tests, and an independent (Decimal) computation of the expected summary."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any


def make_orders(day: str, count: int, offset: str = "+00:00") -> list[dict[str, Any]]:
    regions, products = ["North", "South", "East"], [("Widget", 19.99), ("Gadget", 5.05), ("Gizmo", 120.10), ("Doohickey", 0.33)]
    orders = []
    for i in range(count):
        product, price = products[(i * 7) % len(products)]
        orders.append(
            {
                "order_id": f"O-{day}-{i:05d}",
                "ordered_at": f"{day}T{(i // 60) % 24:02d}:{i % 60:02d}:00{offset}",
                "region": regions[(i * 3) % len(regions)],
                "product": product,
                "quantity": 1 + i % 4,
                "unit_price": price,
            }
        )
    return orders


def expected_rows(orders: list[dict[str, Any]]) -> list[list[str]]:
    """CSV rows computed with Decimal, independently of the project's DuckDB path."""
    groups: dict[tuple[str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0), Decimal(0)])
    for o in orders:
        g = groups[(o["region"], o["product"])]
        g[0] += 1
        g[1] += o["quantity"]
        g[2] += o["quantity"] * Decimal(str(o["unit_price"]))
    rows = sorted(groups.items(), key=lambda kv: (-kv[1][2], kv[0][0], kv[0][1]))
    return [[r, p, str(int(n)), str(int(u)), f"{rev:.2f}"] for (r, p), (n, u, rev) in rows]
