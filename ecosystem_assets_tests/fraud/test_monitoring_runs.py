"""The monitoring's MLflow runs: the Evidently report logged beside the window's figures, and the
stored reports' retention applied to the runs (artifacts deleted first, then the run)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from mlflow import MlflowClient

from ecosystem_assets.fraud.monitoring_runs import EXPERIMENT, REPORT_KEY_TAG, log_report, prune_runs
from ecosystem_assets.resources.mlflow import MlflowTracking

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


def test_reports_are_logged_and_runs_past_retention_are_deleted_with_their_reports(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = MlflowTracking(tracking_uri=uri, artifact_location=str(tmp_path / "artifacts")).ensure_experiment(EXPERIMENT)
    client = MlflowClient(uri)
    runs = {}
    for days in (0, 1, 8, 30):  # started this many days before NOW
        started = NOW - timedelta(days=days)
        run = client.create_run(experiment, start_time=int(started.timestamp() * 1000))
        key = f"fraud/monitoring/drift-v1-{started:%Y%m%dT%H%M%SZ}.html"
        log_report(
            client, run.info.run_id, "<html>report</html>", key.rsplit("/", 1)[1], key, {"model_version": "1"}, {"drift_share": 0.25}
        )
        runs[days] = client.get_run(run.info.run_id)
    logged = runs[0]
    assert logged.data.tags[REPORT_KEY_TAG].startswith("fraud/monitoring/drift-v1-") and logged.data.metrics == {"drift_share": 0.25}
    assert [a.path for a in client.list_artifacts(logged.info.run_id)] == [logged.data.tags[REPORT_KEY_TAG].rsplit("/", 1)[1]]

    # The newest two are kept whatever their age; older ones while younger than 7 days.
    assert prune_runs(client, experiment, keep_runs=2, keep_days=7, now=NOW) == [runs[8].info.run_id, runs[30].info.run_id]
    for days, run in runs.items():
        gone = days in (8, 30)
        assert (client.get_run(run.info.run_id).info.lifecycle_stage == "deleted") is gone, days
        assert os.path.isdir(run.info.artifact_uri) is not gone, days  # the report went with its run
    assert prune_runs(client, experiment, keep_runs=2, keep_days=7, now=NOW) == []
    # With keep_runs 0 only age counts: half a day keeps the one started at NOW.
    assert prune_runs(client, experiment, keep_runs=0, keep_days=0.5, now=NOW) == [runs[1].info.run_id]
