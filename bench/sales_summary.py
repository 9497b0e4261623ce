"""The project's sales summary on 10 million order lines, against a plain DuckDB SQL query over
the same Parquet file, measured in the same run; the two results are checked equal to the cent.

Goal: ratio project/baseline ≤ 1.5. Usage: python bench/sales_summary.py [--rows N] [--repeat K]
The Parquet file is generated once into bench/.data/ (deterministic).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

DATA = Path(__file__).resolve().parent / ".data"


def make_orders(path: Path, rows: int) -> None:
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ecosystem_assets.sales.demo_feed import PRODUCT_WEIGHTS, PRODUCTS, REGION_WEIGHTS, REGIONS

    rng = np.random.default_rng(20261126)
    names, prices = np.array(list(PRODUCTS)), np.array(list(PRODUCTS.values()))
    product = rng.choice(len(names), size=rows, p=PRODUCT_WEIGHTS)
    table = pa.table(
        {
            "order_id": pa.array(np.char.add("O", np.arange(rows).astype(str))),
            "ordered_at": pa.array(pd.date_range("2026-11-26", periods=rows, freq="8ms", tz="UTC")),
            "region": pa.array(np.array(REGIONS)[rng.choice(len(REGIONS), size=rows, p=REGION_WEIGHTS)]),
            "product": pa.array(names[product]),
            "quantity": pa.array(rng.integers(1, 6, rows)),
            "unit_price": pa.array(np.round(prices[product] * rng.choice([1.0, 0.9, 0.85], rows), 2)),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


BASELINE_SQL = """
SELECT region, product, count(*) AS orders, sum(quantity) AS units,
       sum(quantity * CAST(unit_price AS DECIMAL(18, 2))) AS revenue
FROM read_parquet(?) GROUP BY region, product ORDER BY revenue DESC, region, product
"""


def project(path: Path) -> list[tuple]:
    from ecosystem_assets.sales import report

    table = report.summary_table(report.summarize_parquet(str(path)))
    return [(r.region, r.product, int(r.orders), int(r.units), Decimal(r.revenue)) for r in table.itertuples()]


def baseline(path: Path) -> list[tuple]:
    import duckdb

    with duckdb.connect() as con:
        rows = con.execute(BASELINE_SQL, [str(path)]).fetchall()
    return [(r, p, int(o), int(u), Decimal(rev).quantize(Decimal("0.01"))) for r, p, o, u, rev in rows]


def timed(fn: Callable[[Path], list[tuple]], path: Path, repeat: int) -> tuple[float, list[tuple]]:
    times: list[float] = []
    result: list[tuple] = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn(path)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    path = DATA / f"orders-{args.rows}.parquet"
    if not path.exists():
        print(f"generating {args.rows:,} order lines → {path}")
        make_orders(path, args.rows)
    project(path), baseline(path)  # warm-up: imports and the OS file cache
    b_time, b_rows = timed(baseline, path, args.repeat)
    p_time, p_rows = timed(project, path, args.repeat)
    assert p_rows == b_rows, "project and baseline disagree"
    total = sum(r[4] for r in p_rows)
    print(f"{args.rows:,} order lines → {len(p_rows)} summary rows, revenue {total} (equal in both)")
    print(f"DuckDB SQL over Parquet (baseline)  median {b_time:.3f} s")
    print(f"project summary (CSV table)         median {p_time:.3f} s")
    print(f"ratio project/baseline: {p_time / b_time:.2f} (goal ≤ 1.5)")


if __name__ == "__main__":
    main()
