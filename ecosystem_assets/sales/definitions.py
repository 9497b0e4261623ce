"""Everything scenario 1 contributes to the code location."""

from __future__ import annotations

import dagster as dg

from ecosystem_assets.sales.assets import sales_assets
from ecosystem_assets.sales.schedules import build_sales_schedule
from ecosystem_assets.settings import Settings


def sales_definitions(settings: Settings) -> dg.Definitions:
    partitions = dg.DailyPartitionsDefinition(start_date=settings.sales_start_date, timezone=settings.report_timezone)
    job, schedule = build_sales_schedule(partitions)
    return dg.Definitions(assets=sales_assets(partitions), jobs=[job], schedules=[schedule])
