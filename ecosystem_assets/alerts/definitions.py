"""What alerting contributes to the code location: its two sensors (the mailer is `alert_mailer` in resources/wiring.py)."""

from __future__ import annotations

import dagster as dg

from ecosystem_assets.alerts.sensors import alert_sensors
from ecosystem_assets.settings import Settings


def alerts_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(sensors=alert_sensors(settings.dagster_ui_url, settings.alert_not_judged_after_hours))
