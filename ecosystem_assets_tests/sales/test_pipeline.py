"""The whole daily report through Dagster: live API → gate → CSV → email, on a real instance."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from ecosystem_assets.resources.sales_api import SalesApiResource
from ecosystem_assets_tests.sales.orders_data import expected_rows, make_orders
from ecosystem_assets_tests.sales.pipeline import (
    attachment,
    definitions,
    failure_message,
    local_file,
    materialization,
    materialized,
    outbox,
    parse_eml,
    plain_body,
    run_assets,
    run_daily,
    storage_key,
)
from ecosystem_assets_tests.servers.sales_api import Fault

DAY = "2026-11-26"


@pytest.fixture
def live_api(sales_api, ecosystem_env, monkeypatch):
    """The report wired to the fake API (Berlin time, overlapping pages)."""
    sales_api.overlap = 3
    sales_api.orders[DAY] = make_orders(DAY, 321, offset="+01:00")
    monkeypatch.setenv("SALES_API_URL", sales_api.url)
    monkeypatch.setenv("REPORT_TIMEZONE", "Europe/Berlin")
    monkeypatch.setenv("REPORT_RECIPIENTS", "ana@example.com, bo@example.com")
    return sales_api


def test_report_end_to_end_on_local_storage(live_api, ecosystem_env, dagster_instance):
    result = run_daily(definitions(), dagster_instance, DAY)
    assert result.success, failure_message(result)
    raw = materialization(result, "raw_sales")
    assert raw["orders"] == 321 and raw["pages"] == 4 and raw["duplicates_dropped"] == 9

    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["orders_pass_quality_gate"].passed and checks["summary_matches_raw_orders"].passed

    # Files at run-scoped keys, recorded in the materializations; each reader names what it read.
    assert storage_key(result, "raw_sales") == f"sales/raw/{result.run_id}/{DAY}.parquet"
    assert storage_key(result, "sales_summary_csv") == f"sales/summary/{result.run_id}/{DAY}.csv"
    assert materialization(result, "sales_summary_csv")["input/raw_sales"][0]["run_id"] == result.run_id
    assert materialization(result, "sales_report_email")["input/sales_summary_csv"][0]["storage_key"] == storage_key(
        result, "sales_summary_csv"
    )
    csv_bytes = local_file(ecosystem_env, storage_key(result, "sales_summary_csv")).read_bytes()
    assert [line.split(",") for line in csv_bytes.decode().splitlines()[1:]] == expected_rows(live_api.orders[DAY])
    summary = materialization(result, "sales_summary_csv")
    assert summary["orders"] == 321 and summary["rows"] == len(expected_rows(live_api.orders[DAY]))
    # Dagster's standard metadata: row count and column schema of what was written, a table preview.
    import pandas as pd

    raw_frame = pd.read_parquet(local_file(ecosystem_env, storage_key(result, "raw_sales")))
    assert raw["dagster/row_count"] == len(raw_frame) == 321
    assert [c.name for c in raw["dagster/column_schema"].columns] == list(raw_frame.columns)
    assert len(raw["preview"].records) == 10
    assert summary["dagster/row_count"] == summary["rows"]
    assert [c.name for c in summary["dagster/column_schema"].columns] == ["region", "product", "orders", "units", "revenue"]
    assert 0 < len(summary["preview"].records) <= 20 and isinstance(summary["revenue"], float)

    [eml] = outbox(ecosystem_env)
    message = parse_eml(eml)
    assert message["Subject"] == f"Sales summary for {DAY}"
    assert message["To"] == "ana@example.com, bo@example.com"  # an RFC 5322 address list
    assert message["Message-ID"] == materialization(result, "sales_report_email")["message_id"]
    assert attachment(message) == (f"sales-summary-{DAY}.csv", csv_bytes)
    assert "Orders:  321" in plain_body(message)


def test_report_on_s3_storage(live_api, ecosystem_env, dagster_instance, s3_bucket, monkeypatch):
    monkeypatch.setenv("ECOSYSTEM_STORAGE_URL", f"s3://{s3_bucket}/reports")
    result = run_daily(definitions(), dagster_instance, DAY)
    assert result.success, failure_message(result)
    s3 = boto3.client("s3")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"])
    summary = f"reports/sales/summary/{result.run_id}/{DAY}.csv"
    record = f"reports/sales/sent/{DAY}.json"  # the day's sent-record, created with a conditional PUT
    assert keys == [f"reports/sales/raw/{result.run_id}/{DAY}.parquet", record, summary]
    sent = json.loads(s3.get_object(Bucket=s3_bucket, Key=record)["Body"].read())
    assert (sent["status"], sent["run_id"]) == ("sent", result.run_id)
    assert sent["message_id"] == materialization(result, "sales_report_email")["message_id"]
    csv_bytes = s3.get_object(Bucket=s3_bucket, Key=summary)["Body"].read()
    assert [line.split(",") for line in csv_bytes.decode().splitlines()[1:]] == expected_rows(live_api.orders[DAY])
    assert materialization(result, "sales_summary_csv")["path"] == f"s3://{s3_bucket}/{summary}"
    [eml] = outbox(ecosystem_env)
    assert attachment(parse_eml(eml))[1] == csv_bytes


def test_bad_rows_never_reach_the_csv_or_the_email(live_api, ecosystem_env, dagster_instance):
    live_api.orders[DAY][42]["quantity"] = 0
    live_api.orders[DAY][43]["order_id"] = live_api.orders[DAY][44]["order_id"]
    result = run_daily(definitions(), dagster_instance, DAY)
    assert not result.success
    [check] = result.get_asset_check_evaluations()
    assert not check.passed and check.blocking
    failed = check.metadata["failed_expectations"].value
    assert "expect_column_values_to_be_between on 'quantity': 1 rows" in failed
    assert "expect_column_values_to_be_unique on 'order_id': 2 rows" in failed
    assert live_api.orders[DAY][42]["order_id"] in check.metadata["offending_rows"].value
    assert materialized(result) == set()  # raw_sales is published only after the gate passes
    assert check.metadata["quarantine_key"].value == f"sales/quarantine/{DAY}/{result.run_id}.parquet"
    storage = Path(ecosystem_env["ECOSYSTEM_HOME"]) / "storage" / "sales"
    assert not (storage / "summary").exists()
    assert outbox(ecosystem_env) == []

    # Materializing the summary on its own does not bypass the gate either: nothing was published to read.
    alone = run_assets(definitions(), dagster_instance, DAY, "sales_summary_csv")
    assert not alone.success
    assert "raw_sales has no materialization for 2026-11-26: materialize raw_sales for 2026-11-26 first" in failure_message(alone)
    assert not (storage / "summary").exists()


def test_empty_day_sends_header_only_csv(sales_api, live_api, ecosystem_env, dagster_instance):
    live_api.orders[DAY] = []
    result = run_daily(definitions(), dagster_instance, DAY)
    assert result.success, failure_message(result)
    [eml] = outbox(ecosystem_env)
    message = parse_eml(eml)
    assert attachment(message)[1] == b"region,product,orders,units,revenue\n"
    assert "No orders were recorded on 2026-11-26" in plain_body(message)


def test_api_401_fails_the_run_with_status_url_and_page(live_api, ecosystem_env, dagster_instance, monkeypatch):
    live_api.token = "expected-token"
    monkeypatch.setenv("SALES_API_TOKEN", "wrong-token-value-31337")
    result = run_daily(definitions(), dagster_instance, DAY)
    assert not result.success
    message = failure_message(result)
    assert "HTTP 401" in message and "page 1" in message and f"{live_api.url}/orders?date={DAY}&page=1" in message
    assert "wrong-token-value-31337" not in message
    assert materialized(result) == set()


def test_a_trickling_api_fails_the_run_at_the_deadline(live_api, ecosystem_env, dagster_instance):
    """A server sending one byte every 0.25 s: each attempt is cut at the 1.5 s deadline, then the run fails."""
    live_api.faults.extend([Fault(trickle_s=0.25)] * 2)
    resource = SalesApiResource(base_url=live_api.url, timezone="Europe/Berlin", deadline_s=1.5, max_retries=1, backoff_s=0.01)
    result = run_daily(definitions(sales_api=resource), dagster_instance, DAY)
    assert not result.success and materialized(result) == set()
    message = failure_message(result)
    assert "after 2 attempts in " in message and f"{live_api.url}/orders?date={DAY}&page=1 (page 1)" in message
    assert "last error deadline of 1.5s exceeded after 1." in message
