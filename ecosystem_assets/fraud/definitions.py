"""Everything scenario 3 (fraud) contributes to the code location; resources come from resources/wiring.py."""

from datetime import timedelta

import dagster as dg

from ecosystem_assets.fraud.assets import (
    fraud_features,
    fraud_model,
    fraud_monitoring_metrics,
    fraud_prediction_log,
    fraud_transactions_asset,
)
from ecosystem_assets.fraud.sensors import build_retrain_sensor
from ecosystem_assets.freshness import checks_with_sensor
from ecosystem_assets.run_tags import FRAUD_RETRAIN
from ecosystem_assets.settings import Settings

RETRAIN_JOB = "fraud_retrain_job"
MONITORING_JOB = "fraud_monitoring_job"
FRESHNESS_SENSOR = "fraud_monitoring_freshness_sensor"
MONITORING_MAX_AGE = timedelta(hours=2)  # the monitoring runs hourly (FRAUD_MONITORING_CRON): one missed run is tolerated


def build_monitoring_freshness() -> tuple[list[dg.AssetChecksDefinition], dg.SensorDefinition]:
    """Dagster's last-update freshness check on fraud_monitoring_metrics: warns when it was not
    materialized in the last two hours (the hourly monitoring stopped: schedule off, daemon down, runs
    failing), so nobody watches the live model. WARN: a person looks, nothing is blocked. The sensor
    evaluates it every five minutes."""
    return checks_with_sensor(
        lambda: dg.build_last_update_freshness_checks(
            assets=[fraud_monitoring_metrics], lower_bound_delta=MONITORING_MAX_AGE, severity=dg.AssetCheckSeverity.WARN
        ),
        FRESHNESS_SENSOR,
    )


def fraud_definitions(settings: Settings) -> dg.Definitions:
    """The fraud assets, jobs, schedule and sensor; only the partitions' start and the sensor's cooldown come from settings."""
    partitions = dg.DailyPartitionsDefinition(start_date=settings.fraud_start_date, timezone="UTC")
    assets: list[dg.AssetsDefinition | dg.SourceAsset] = [
        fraud_transactions_asset(partitions),
        fraud_features,
        fraud_model,
        fraud_prediction_log,
        fraud_monitoring_metrics,
    ]
    retrain = dg.define_asset_job(
        RETRAIN_JOB,
        selection=dg.AssetSelection.assets("fraud_features", "fraud_model"),
        description="Rebuild the training table and retrain; promotes only a better model.",
        tags=FRAUD_RETRAIN,
    )
    # The monitoring run observes the prediction log first: each evaluation sits next to what the log held.
    monitoring = dg.define_asset_job(
        MONITORING_JOB,
        selection=dg.AssetSelection.assets("fraud_prediction_log", "fraud_monitoring_metrics"),
        description="Live precision/recall and feature drift of the serving model.",
    )
    schedule = dg.ScheduleDefinition(
        name="fraud_monitoring_schedule",
        job=monitoring,
        cron_schedule=settings.fraud_monitoring_cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Checks the live fraud model (precision, drift).",
    )
    freshness_checks, freshness_sensor = build_monitoring_freshness()
    return dg.Definitions(
        assets=assets,
        asset_checks=freshness_checks,
        jobs=[retrain, monitoring],
        schedules=[schedule],
        sensors=[build_retrain_sensor(retrain, settings.fraud_retrain_cooldown_hours), freshness_sensor],
    )
