"""Registering in MLflow from several runs at once (two retrains, two trainings) on one registry."""

from __future__ import annotations

import threading

from mlflow import MlflowClient

from ecosystem_assets.registry import register_version


def test_concurrent_first_registrations_all_get_their_own_version(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri, uri)
    experiment = client.create_experiment("concurrent", artifact_location=(tmp_path / "artifacts").as_uri())
    runs = [client.create_run(experiment).info.run_id for _ in range(4)]
    start = threading.Barrier(len(runs), timeout=60)
    versions: dict[str, str] = {}
    errors: dict[str, BaseException] = {}

    def register(run_id: str) -> None:
        try:
            start.wait()
            version = register_version(client, "m", (tmp_path / run_id).as_uri(), run_id, {"k": run_id}, "the model")
            versions[run_id] = str(version.version)
        except BaseException as exc:  # noqa: BLE001 — reported below
            errors[run_id] = exc

    threads = [threading.Thread(target=register, args=(run_id,)) for run_id in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert sorted(versions.values(), key=int) == ["1", "2", "3", "4"]
    assert client.get_registered_model("m").description == "the model"
