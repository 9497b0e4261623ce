"""Raw data is published only after it passes the gate, and a missing upstream says what to materialize first."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd

from ecosystem_assets_tests.sales.orders_data import make_orders
from ecosystem_assets_tests.sales.pipeline import (
    definitions,
    failure_message,
    local_file,
    materialization,
    materialized,
    run_assets,
    run_daily,
    storage_key,
)

DAY = "2026-11-26"


def latest_run(instance: dg.DagsterInstance, asset: str, day: str) -> str:
    """The run of the materialization every reader of ``asset`` picks for ``day`` (the latest)."""
    records = instance.fetch_materializations(dg.AssetRecordsFilter(dg.AssetKey(asset), asset_partitions=[day]), limit=1).records
    return records[0].run_id


def test_a_bad_refetch_leaves_the_last_good_raw_file_and_csv(sales_api, ecosystem_env, dagster_instance, monkeypatch):
    monkeypatch.setenv("SALES_API_URL", sales_api.url)
    sales_api.orders[DAY] = make_orders(DAY, 321)
    good = run_daily(definitions(), dagster_instance, DAY)
    assert good.success, failure_message(good)
    raw_file, csv_file = (local_file(ecosystem_env, storage_key(good, a)) for a in ("raw_sales", "sales_summary_csv"))
    raw_bytes, csv_bytes = raw_file.read_bytes(), csv_file.read_bytes()

    bad_orders = sales_api.orders[DAY] = make_orders(DAY, 150)
    bad_orders[17]["quantity"] = 0
    bad = run_daily(definitions(), dagster_instance, DAY)
    assert not bad.success
    assert materialized(bad) == set()  # nothing published, so the good run's materializations stay the latest
    assert latest_run(dagster_instance, "raw_sales", DAY) == good.run_id
    assert latest_run(dagster_instance, "sales_summary_csv", DAY) == good.run_id
    assert raw_file.read_bytes() == raw_bytes and csv_file.read_bytes() == csv_bytes
    storage = local_file(ecosystem_env, "sales")
    assert sorted(p.relative_to(storage).as_posix() for p in storage.rglob("*.*")) == sorted(
        [
            f"raw/{good.run_id}/{DAY}.parquet",
            f"summary/{good.run_id}/{DAY}.csv",
            f"sent/{DAY}.json",  # the good run's email
            f"quarantine/{DAY}/{bad.run_id}.parquet",
        ]
    )
    assert f"raw_sales for {DAY} not published" in failure_message(bad)

    # The failed rows stay inspectable: on the check (counts, offending rows, quarantine key) and in the quarantine copy.
    [check] = bad.get_asset_check_evaluations()
    assert not check.passed and check.blocking and check.target_materialization_data is None
    meta = {k: v.value for k, v in check.metadata.items()}
    quarantine = f"sales/quarantine/{DAY}/{bad.run_id}.parquet"
    assert meta["quarantine_key"] == quarantine and meta["orders"] == 150 and meta["expectations_failed"] == 1
    assert "expect_column_values_to_be_between on 'quantity': 1 rows" in meta["failed_expectations"]
    assert bad_orders[17]["order_id"] in meta["offending_rows"]
    kept = pd.read_parquet(local_file(ecosystem_env, quarantine))
    assert len(kept) == 150 and kept.loc[kept["order_id"] == bad_orders[17]["order_id"], "quantity"].tolist() == [0]

    # The summary materialized alone after the failed run republishes the good day.
    alone = run_assets(definitions(), dagster_instance, DAY, "sales_summary_csv")
    assert alone.success, failure_message(alone)
    assert materialization(alone, "sales_summary_csv")["input/raw_sales"][0]["run_id"] == good.run_id
    assert local_file(ecosystem_env, storage_key(alone, "sales_summary_csv")).read_bytes() == csv_bytes


def test_email_of_a_day_without_csv_names_what_to_materialize_first(sales_api, ecosystem_env, dagster_instance, monkeypatch):
    result = run_assets(definitions(), dagster_instance, "2026-11-20", "sales_report_email")
    assert not result.success
    message = failure_message(result)
    assert "sales_summary_csv has no materialization for 2026-11-20: materialize sales_summary_csv for 2026-11-20 first" in message
    assert "StorageError" not in message and "Traceback" not in message
    assert list((Path(ecosystem_env["ECOSYSTEM_HOME"]) / "outbox").glob("*.eml")) == []

    # A CSV recorded but deleted since: the same advice, not a storage stack trace.
    monkeypatch.setenv("SALES_API_URL", sales_api.url)
    sales_api.orders[DAY] = make_orders(DAY, 40)
    full = run_assets(definitions(), dagster_instance, DAY, "raw_sales", "sales_summary_csv")
    assert full.success, failure_message(full)
    local_file(ecosystem_env, storage_key(full, "sales_summary_csv")).unlink()
    gone = run_assets(definitions(), dagster_instance, DAY, "sales_report_email")
    assert not gone.success
    message = failure_message(gone)
    assert f"sales_summary_csv for {DAY} (run {full.run_id})" in message
    assert f"materialize sales_summary_csv for {DAY} again first" in message and "Traceback" not in message
