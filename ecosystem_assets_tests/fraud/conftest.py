"""Fixtures for the fraud scenario: a trained champion in a throwaway MLflow registry, the live
service under uvicorn on loopback."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from ecosystem_assets_tests.fraud.helpers import DRIFT, train_champion
from ecosystem_assets_tests.servers.uvicorn_thread import UvicornThread


@pytest.fixture(scope="session")
def trained_registry(tmp_path_factory) -> Path:
    """A registry holding one champion trained on the 14 days before the drift (built once)."""
    root = tmp_path_factory.mktemp("registry")
    train_champion(f"sqlite:///{root / 'mlflow.db'}", root / "artifacts", DRIFT - timedelta(days=1))
    return root


@pytest.fixture
def registry(trained_registry: Path, tmp_path: Path) -> str:
    """A private copy of the trained registry (tests may move the alias); returns its tracking URI."""
    root = tmp_path / "registry"
    shutil.copytree(trained_registry, root)
    # Artifact paths inside the database are absolute: keep the originals where they are.
    return f"sqlite:///{root / 'mlflow.db'}"


class Service:
    def __init__(self, app, server: UvicornThread):
        self.app, self.server, self.url = app, server, server.url

    @property
    def store(self):
        return self.app.state.store


@pytest.fixture
def fraud_service(request, registry: str, tmp_path: Path) -> Iterator[Service]:
    """The service on SQLite; parametrize indirectly with "writer-thread" for the path a networked
    database takes (batches written in a thread, not on the event loop), with "postgres" for a
    real Postgres server (writer thread, as in production), or with "redis" for the feature state
    in a real Redis server (SQLite log)."""
    from ecosystem_assets.serving.app import create_app

    mode = getattr(request, "param", "inline")
    if mode == "postgres":
        db_url = request.getfixturevalue("postgres_url")
    else:
        db_url = f"sqlite:///{tmp_path / 'service.db'}"
    feature_store_url = request.getfixturevalue("redis_url") if mode == "redis" else None
    app = create_app(
        db_url, registry, poll_s=0.2, write_inline=mode in ("inline", "redis"), metrics_refresh_s=0.5, feature_store_url=feature_store_url
    )
    with UvicornThread(app) as server:
        yield Service(app, server)
