"""Everything scenario 3 (fraud) contributes to the code location; resources come from resources/wiring.py."""

import dagster as dg

from ecosystem_assets.fraud.assets import (
    fraud_features,
    fraud_model,
    fraud_monitoring_metrics,
    fraud_prediction_log,
    fraud_transactions_asset,
)
from ecosystem_assets.fraud.sensors import build_retrain_sensor
from ecosystem_assets.run_tags import FRAUD_RETRAIN
from ecosystem_assets.settings import Settings

RETRAIN_JOB = "fraud_retrain_job"
MONITORING_JOB = "fraud_monitoring_job"


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
    return dg.Definitions(
        assets=assets,
        jobs=[retrain, monitoring],
        schedules=[schedule],
        sensors=[build_retrain_sensor(retrain, settings.fraud_retrain_cooldown_hours)],
    )
