"""Shared test helpers for the fraud scenario: a small population, a trained champion, a live service."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

from ecosystem_assets.fraud.features import HISTORY_DAYS
from ecosystem_assets.resources.fraud import TransactionSource

SMALL = {"n_customers": 300, "n_terminals": 600}
DRIFT = date(2026, 9, 1)  # the skimming rings start here in the loop tests
FAILING_DAY = DRIFT + timedelta(days=16)  # the closed-loop tests' day: the rings have made the old model's precision collapse


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


@contextmanager
def serve_process(env: dict[str, str], home: Path, ready: str = "/readyz") -> Iterator[tuple[str, subprocess.Popen, Path]]:
    """`ecosystem-assets serve` from its console script on a free loopback port, with ``env`` over
    this environment's (without its ECOSYSTEM_/FRAUD_/MLFLOW_TRACKING variables), until ``ready``
    answers 200; yields (url, process, log file). Stopped with SIGINT (uvicorn's graceful shutdown)
    unless the test ended it."""
    import requests

    from ecosystem_assets_tests.servers.ports import free_port
    from ecosystem_assets_tests.waiting import wait_until

    full = {k: v for k, v in os.environ.items() if not k.startswith(("ECOSYSTEM_", "FRAUD_", "MLFLOW_TRACKING"))}
    full.update({"ECOSYSTEM_HOME": str(home), **env})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    home.mkdir(parents=True, exist_ok=True)
    log = home / "serve.log"  # a file, not a pipe: an unread pipe fills with access logs and stalls the server
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "ecosystem-assets"), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=Path(__file__).resolve().parents[2],
            env=full,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def status() -> int:
            assert process.poll() is None, log.read_text()[-3000:]  # died: fail now, with its log
            return requests.get(f"{url}{ready}", timeout=5).status_code

        wait_until(status, 120, f"{url}{ready} answers 200", every=0.3, done=lambda code: code == 200)
        yield url, process, log
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def first_champion(defs, instance):
    """The closed-loop tests' start, on ``instance``: the transaction days from 51 days before the
    drift to the day after FAILING_DAY (one backfill run), then the retrain job on the days before
    the drift (v1, the first champion). Returns the retrain's result."""
    import dagster as dg

    from ecosystem_assets.fraud.definitions import RETRAIN_JOB

    backfill = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        asset_selection=[dg.AssetKey("fraud_transactions")],
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": str(DRIFT - timedelta(days=51)),
            "dagster/asset_partition_range_end": str(FAILING_DAY + timedelta(days=1)),
        },
    )
    assert backfill.success
    return defs.resolve_job_def(RETRAIN_JOB).execute_in_process(
        instance=instance, run_config={"ops": {"fraud_features": {"config": {"end_date": str(DRIFT - timedelta(days=1))}}}}
    )
