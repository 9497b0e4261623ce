"""MLflow Model Registry helpers shared by the scenarios: register a version, read and move ``champion``."""

from __future__ import annotations

import re
from typing import Any

CHAMPION = "champion"
# Model-version tag marking a version that was made champion (its value: when, UTC ISO-8601). The
# alias only says where it points now; this says which versions it ever pointed at, so a replica
# with nothing to serve can fall back to an earlier champion (serving/champion.py).
PROMOTED_AT = "promoted_at"
# What MLflow answers when the model or its alias does not exist (the SQL store says
# INVALID_PARAMETER_VALUE for a missing alias, RESOURCE_DOES_NOT_EXIST for a missing model).
_NO_SUCH_ALIAS = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


class RegistryUnavailable(RuntimeError):
    """The registry could not be asked (down, unreachable, refusing): not the same as "no champion"."""


def without_credentials(text: str) -> str:
    """``scheme://user:password@host`` → ``scheme://***@host``: error texts name URLs."""
    return re.sub(r"(\w+://)[^/@\s]+@", r"\1***@", text)


def get_champion(client: Any, name: str, alias: str = CHAMPION) -> Any | None:
    """The version ``alias`` points at; None when the model or the alias does not exist. Any other
    failure (a registry outage) raises `RegistryUnavailable`, never reads as "no champion"."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in _NO_SUCH_ALIAS:
            return None
        message = exc.message
    except Exception as exc:  # noqa: BLE001 — drivers and HTTP clients raise their own errors
        message = f"{type(exc).__name__}: {exc}"
    registry = without_credentials(str(getattr(client, "_registry_uri", None) or "the MLflow registry"))
    raise RegistryUnavailable(f"{registry} could not be asked for {name}@{alias}: {without_credentials(message)[:500]}") from None


def register_version(client: Any, name: str, model_uri: str, run_id: str, tags: dict[str, str], description: str) -> Any:
    """Register ``model_uri`` under ``name`` (created on first use); an already registered source is reused."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description=description)
    except MlflowException as exc:
        # Two runs registering their first version at once both find no model; one creates it.
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
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
