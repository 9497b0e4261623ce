"""The 09:00 schedule asks for the previous day, in the report's zone, across DST changes."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from ecosystem_assets_tests.sales.pipeline import definitions

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def schedule(ecosystem_env, monkeypatch):
    monkeypatch.setenv("REPORT_TIMEZONE", "Europe/Berlin")
    return definitions().resolve_schedule_def("daily_sales_report_schedule")


@pytest.mark.parametrize(
    ("tick", "partition"),
    [
        ("2026-03-28", "2026-03-27"),  # CET, the day before spring forward
        ("2026-03-29", "2026-03-28"),  # the 23-hour day
        ("2026-03-30", "2026-03-29"),  # CEST, reporting the 23-hour day
        ("2026-10-25", "2026-10-24"),  # the 25-hour day
        ("2026-10-26", "2026-10-25"),  # CET again, reporting the 25-hour day
    ],
)
def test_tick_at_nine_berlin_requests_previous_day(schedule, dagster_instance, tick, partition):
    when = datetime.fromisoformat(tick).replace(hour=9, tzinfo=BERLIN)
    context = dg.build_schedule_context(instance=dagster_instance, scheduled_execution_time=when)
    [request] = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == partition
    assert request.job_name == "daily_sales_report_job"


def test_cron_runs_at_nine_in_the_report_zone(schedule):
    # Dagster evaluates the cron in execution_timezone, so 09:00 stays 09:00 local across DST.
    assert schedule.cron_schedule == "0 9 * * *" and schedule.execution_timezone == "Europe/Berlin"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_schedule_targets_the_whole_report(schedule):
    job = definitions().resolve_job_def("daily_sales_report_job")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} >= {"raw_sales", "sales_summary_csv", "sales_report_email"}
