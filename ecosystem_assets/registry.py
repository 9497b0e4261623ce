"""MLflow Model Registry helpers shared by the scenarios: register a version, read and move ``champion``."""

from __future__ import annotations

from typing import Any

CHAMPION = "champion"


def get_champion(client: Any, name: str) -> Any | None:
    """The version the ``champion`` alias points at, or None (no model, or no alias yet)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def register_version(client: Any, name: str, model_uri: str, run_id: str, tags: dict[str, str], description: str) -> Any:
    """Register ``model_uri`` under ``name`` (created on first use); an already registered source is reused."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=description)
    for existing in client.search_model_versions(f"name='{name}'"):
        if existing.source == model_uri:
            return existing
    mlflow.set_tracking_uri(client.tracking_uri)
    version = mlflow.register_model(model_uri, name, tags=tags)
    if version.run_id != run_id:  # MLflow 3 links the run through the logged model; say so if it did not
        client.set_model_version_tag(name, version.version, "training_run_id", run_id)
    return version


def set_champion(client: Any, name: str, version: str) -> None:
    client.set_registered_model_alias(name, CHAMPION, str(version))
