"""The service's prediction log is an observable asset upstream of fraud_monitoring_metrics: the
graph shows where live metrics come from, and each monitoring run observes what the log holds."""

from __future__ import annotations

import dagster as dg

from ecosystem_assets.fraud.definitions import MONITORING_JOB
from ecosystem_assets.project import build_definitions
from ecosystem_assets.serving.store import FEATURE_COLUMNS, PredictionStore
from ecosystem_assets.settings import Settings

LOG = dg.AssetKey("fraud_prediction_log")


def row(i: int, created_at: float) -> dict:
    return {
        "prediction_id": f"{i:032x}",
        "transaction_id": f"tx-{i}",
        "customer_id": "C1",
        "terminal_id": "T1",
        "amount": 12.5,
        "tx_time": 1_790_000_000.0 + i,
        "tx_offset_min": 0,
        **{c: 0.0 for c in FEATURE_COLUMNS},
        "fraud_probability": 0.1,
        "is_fraud": False,
        "model_version": "1",
        "created_at": created_at,
    }


def observations(instance: dg.DagsterInstance) -> list:
    return [r.event_log_entry for r in instance.fetch_observations(LOG, limit=10).records]


def test_the_log_is_observed_upstream_of_the_monitoring(ecosystem_env, dagster_instance, tmp_path, monkeypatch):
    db_url = f"sqlite:///{tmp_path / 'service.db'}"
    monkeypatch.setenv("FRAUD_DB_URL", db_url)
    defs = build_definitions(Settings.from_env())
    graph = defs.resolve_asset_graph()
    assert LOG in graph.get(dg.AssetKey("fraud_monitoring_metrics")).parent_keys
    node = graph.get(LOG)
    assert node.is_observable and not node.is_materializable and node.group_name == "fraud"
    assert "predictions" in defs.resolve_assets_def(LOG).descriptions_by_key[LOG]

    store = PredictionStore(db_url)
    store.write_batch([row(i, 1_800_000_000.0 + i) for i in range(3)], [(f"{0:032x}", True), (f"{2:032x}", False)])
    job = defs.resolve_job_def(MONITORING_JOB)
    assert job.execute_in_process(instance=dagster_instance).success
    [first] = observations(dagster_instance)
    seen = {k: v.value for k, v in first.asset_observation.metadata.items()}
    assert (seen["rows"], seen["labelled"]) == (3, 2)
    assert seen["newest_prediction_at"] == "2027-01-15T08:00:02+00:00"  # created_at of the newest row
    version = first.asset_observation.tags["dagster/data_version"]
    assert version.startswith("3-2-2027-01-15T08:00:02+00:00")

    # A label arrives: the next observation records a new data version; nothing changed: the same one.
    store.write_batch([], [(f"{1:032x}", True)])
    assert job.execute_in_process(instance=dagster_instance).success
    assert job.execute_in_process(instance=dagster_instance).success
    latest, again, _ = observations(dagster_instance)
    tags = [e.asset_observation.tags["dagster/data_version"] for e in (latest, again)]
    assert tags[0] == tags[1] != version and latest.asset_observation.metadata["labelled"].value == 3
