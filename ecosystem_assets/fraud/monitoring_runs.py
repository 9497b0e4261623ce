"""The monitoring's MLflow runs: one per monitoring run that produced an Evidently drift report, in
experiment ``fraud-monitoring``, holding the report (so the MLflow UI shows it, and its server hands
it to a browser) with the window's figures. Plain Python over an `MlflowClient`; no Dagster.

What it costs: a run (a few rows in the tracking database) and the report (~4 MB in the artifact
store) each time monitoring judges drift — at `make dev`'s 5-minute schedule up to 288 a day while
traffic flows, nothing while it does not (drift is judged only on enough live rows). MLflow deletes
nothing by itself, so `prune_runs` applies the stored reports' retention (`retention.py`) to these
runs: the newest ``keep_runs`` are kept, older ones for ``keep_days``, then their artifacts are
deleted and the run with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

EXPERIMENT = "fraud-monitoring"
REPORT_KEY_TAG = "report_key"  # the report's key in the project's storage
PRUNE_AT_MOST = 1_000  # runs deleted per call: one monitoring run drains any backlog in bounded time
_SEARCH_PAGE = 50_000  # MLflow's largest search page


def log_report(
    client: Any, run_id: str, html: str, artifact_file: str, report_key: str, params: Mapping[str, str], metrics: Mapping[str, float]
) -> None:
    """Into run ``run_id``: the report as ``artifact_file``, the figures beside it (the client's API:
    no global active run or experiment involved)."""
    from mlflow.entities import Metric, Param, RunTag

    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(name, float(value), now_ms, 0) for name, value in metrics.items()],
        params=[Param(name, value) for name, value in params.items()],
        tags=[RunTag(REPORT_KEY_TAG, report_key)],
    )
    client.log_text(run_id, html, artifact_file)


def prune_runs(client: Any, experiment_id: str, keep_runs: int, keep_days: float, now: datetime | None = None) -> list[str]:
    """Delete the runs of ``experiment_id`` past retention (all but the newest ``keep_runs`` by start
    time, started more than ``keep_days`` ago), artifacts first; returns their ids."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    cutoff_ms = int(((now or datetime.now(UTC)) - timedelta(days=keep_days)).timestamp() * 1000)
    old = client.search_runs([experiment_id], filter_string=f"attributes.start_time < {cutoff_ms}", max_results=PRUNE_AT_MOST)
    if not old:
        return []
    newest = _newest_runs(client, experiment_id, keep_runs)
    gone = [run for run in old if run.info.run_id not in newest]
    for run in gone:
        # A deleted run keeps its artifacts until `mlflow gc`: the report goes first, explicitly.
        get_artifact_repository(run.info.artifact_uri, tracking_uri=client.tracking_uri).delete_artifacts()
        client.delete_run(run.info.run_id)
    return [run.info.run_id for run in gone]


def _newest_runs(client: Any, experiment_id: str, count: int) -> set[str]:
    ids: set[str] = set()
    token = None
    while len(ids) < count:
        page = client.search_runs(
            [experiment_id], order_by=["attributes.start_time DESC"], max_results=min(count - len(ids), _SEARCH_PAGE), page_token=token
        )
        ids.update(run.info.run_id for run in page)
        token = page.token
        if not token:
            break
    return ids
