"""Everything scenario 1 contributes to the code location."""

from __future__ import annotations

import dagster as dg

from ecosystem_assets.freshness import checks_with_sensor
from ecosystem_assets.sales.assets import sales_assets
from ecosystem_assets.sales.schedules import build_sales_schedule
from ecosystem_assets.settings import Settings

REPORT_DEADLINE_CRON = "30 9 * * *"  # yesterday's email is due by 09:30 in REPORT_TIMEZONE
FRESHNESS_SENSOR = "sales_report_freshness_sensor"
AUTOMATION_SENSOR = "sales_automation_sensor"


def build_automation_sensor() -> dg.AutomationConditionSensorDefinition:
    """Evaluates the sales assets' automation conditions (sales_summary_csv follows raw_sales), running by
    default: Dagster's own default automation sensor starts stopped, so the condition would do nothing."""
    return dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR,
        target=dg.AssetSelection.groups("sales"),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=60,
        description="Rebuilds the latest day's sales_summary_csv after raw_sales of that day is materialized again.",
    )


def build_report_freshness(assets: list[dg.AssetsDefinition], timezone: str) -> tuple[list[dg.AssetChecksDefinition], dg.SensorDefinition]:
    """Dagster's time-partition freshness check on sales_report_email: from 09:30 in ``timezone`` on,
    yesterday's partition must be materialized (sent, or recorded as sent by an earlier run), else the
    check warns (WARN: the 09:00 run may still be retrying the SMTP server; a person looks, nothing is
    blocked). Before 09:30 it judges the day before yesterday. The sensor evaluates it when it can
    have become overdue; the daily job evaluates it after each email."""
    [email] = [a for a in assets if dg.AssetKey("sales_report_email") in a.keys]
    return checks_with_sensor(
        lambda: dg.build_time_partition_freshness_checks(
            assets=[email], deadline_cron=REPORT_DEADLINE_CRON, timezone=timezone, severity=dg.AssetCheckSeverity.WARN
        ),
        FRESHNESS_SENSOR,
    )


def sales_definitions(settings: Settings) -> dg.Definitions:
    partitions = dg.DailyPartitionsDefinition(start_date=settings.sales_start_date, timezone=settings.report_timezone)
    assets = sales_assets(partitions)
    checks, sensor = build_report_freshness(assets, settings.report_timezone)
    job, schedule = build_sales_schedule(partitions)
    return dg.Definitions(assets=assets, asset_checks=checks, jobs=[job], schedules=[schedule], sensors=[sensor, build_automation_sensor()])
