"""Shared test helpers for the fraud scenario: a small population, a trained champion, a live service."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from ecosystem_assets.fraud.features import HISTORY_DAYS
from ecosystem_assets.resources.fraud import TransactionSource

SMALL = {"n_customers": 300, "n_terminals": 600}
DRIFT = date(2026, 9, 1)  # the skimming rings start here in the loop tests


def logged(store) -> tuple[int, int]:
    """(predictions, labels) in the prediction log, as the fraud_prediction_log observation reads them."""
    summary = store.log_summary()
    return summary.predictions, summary.labelled


def source(drift: bool = False) -> TransactionSource:
    return TransactionSource(**SMALL, drift_from=DRIFT.isoformat() if drift else None)


def frames(first: date, last: date, drift: bool = False):
    import pandas as pd

    return pd.concat(source(drift).days(first, last).values(), ignore_index=True)


def train_champion(tracking_uri: str, artifacts: Path, end: date, drift: bool = False, **params) -> object:
    """Train on the 14 days up to ``end`` and register through the project's own promotion code."""
    import mlflow
    from mlflow import MlflowClient

    from ecosystem_assets.fraud.features import feature_table
    from ecosystem_assets.fraud.training import train_and_promote
    from ecosystem_assets.resources.mlflow import MlflowTracking

    raw = frames(end - timedelta(days=14 + HISTORY_DAYS - 1), end, drift)
    table = feature_table(raw)
    table = table[table["timestamp"] >= str(end - timedelta(days=13))].reset_index(drop=True)
    tracking = MlflowTracking(tracking_uri=tracking_uri, artifact_location=str(artifacts))
    experiment_id = tracking.ensure_experiment("fraud-detector")
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(experiment_id=experiment_id):
        outcome, _ = train_and_promote(
            table,
            mlflow,
            MlflowClient(tracking_uri),
            calibration_days=2,
            holdout_days=2,
            target_precision=0.9,
            seed=0,
            params=params,
            extra_params={},
        )
    return outcome
