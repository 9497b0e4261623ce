"""What someone who can write to the MLflow registry can register, through MLflow's own API."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

MODEL_NAME = "fraud-detector"


class RunsCommand:
    """Pickles to a call of os.system: unpickling it creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def _experiment(tracking_uri: str, artifacts: Path) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name("attacker")
    return found.experiment_id if found else client.create_experiment("attacker", artifact_location=str(artifacts))


def register_sklearn(
    tracking_uri: str, artifacts: Path, obj: Any, serialization_format: str, trusted: list[str] | None = None, threshold: str = "0.5"
) -> str:
    """Log ``obj`` with mlflow.sklearn in ``serialization_format`` and register it; the version."""
    import mlflow
    import mlflow.sklearn

    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(experiment_id=_experiment(tracking_uri, artifacts)):
        # pip_requirements given: MLflow would otherwise load the model in a subprocess to infer them.
        logged = mlflow.sklearn.log_model(
            obj, name="model", serialization_format=serialization_format, skops_trusted_types=trusted, pip_requirements=["scikit-learn"]
        )
    return str(mlflow.register_model(logged.model_uri, MODEL_NAME, tags={"threshold": threshold}).version)


def register_files(tracking_uri: str, artifacts: Path, files: dict[str, bytes], threshold: str = "0.5") -> str:
    """Register a model directory written by hand (any MLmodel, any bytes); the version."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    folder = artifacts / "handmade"
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    with mlflow.start_run(experiment_id=_experiment(tracking_uri, artifacts)) as run:
        mlflow.log_artifacts(str(folder), "model")
    return str(mlflow.register_model(f"runs:/{run.info.run_id}/model", MODEL_NAME, tags={"threshold": threshold}).version)


def skops_mlmodel() -> bytes:
    """An MLmodel file claiming an sklearn model stored as skops."""
    return (
        b"flavors:\n  sklearn:\n    pickled_model: model.skops\n    serialization_format: skops\n"
        b"    sklearn_version: 1.9.1\n    skops_trusted_types: []\n"
    )
