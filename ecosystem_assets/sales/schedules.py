"""The 09:00 report job and schedule.

Built from the partitioned job (not a bare cron `ScheduleDefinition`), so each 09:00 tick in the
report's time zone requests the previous day's partition, also across daylight-saving changes.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

DAILY_JOB = "daily_sales_report_job"


def build_sales_schedule(partitions: dg.TimeWindowPartitionsDefinition) -> tuple[Any, Any]:
    """The asset job for one day's report and its 09:00 schedule (the job is unresolved until Definitions binds it)."""
    job = dg.define_asset_job(
        DAILY_JOB,
        selection=dg.AssetSelection.assets("raw_sales", "sales_summary_csv", "sales_report_email"),
        partitions_def=partitions,
        description="Fetch, gate, summarise and email one day's sales.",
    )
    schedule = dg.build_schedule_from_partitioned_job(
        job,
        name="daily_sales_report_schedule",
        hour_of_day=9,
        minute_of_hour=0,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Every day at 09:00 in REPORT_TIMEZONE: the previous day's report.",
    )
    return job, schedule
