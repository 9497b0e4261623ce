"""Shared fixtures: real local servers on loopback and a throwaway Dagster instance."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

# Telemetry off everywhere before anything is imported.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

# Under pytest-xdist the workers share the cores: each worker's OpenMP/BLAS pools (scikit-learn,
# numpy, torch) get its share, inherited by the processes it starts. More threads than cores make
# OpenMP barriers spin (a gradient-boosting fit took minutes instead of seconds).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))


@pytest.fixture
def ecosystem_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Embedded defaults under tmp_path, with every project variable cleared first."""
    from ecosystem_assets.settings import Settings

    for field in Settings.model_fields.values():  # each field names its variable
        assert isinstance(field.validation_alias, str)
        monkeypatch.delenv(field.validation_alias, raising=False)
    env = {"ECOSYSTEM_HOME": str(tmp_path / "home")}
    monkeypatch.setenv("ECOSYSTEM_HOME", env["ECOSYSTEM_HOME"])
    return env


@pytest.fixture
def dagster_instance(tmp_path: Path):
    import dagster as dg

    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster"), overrides={"telemetry": {"enabled": False}}) as instance:
        yield instance


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on loopback; AWS_* variables point boto3 at it for the whole session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
    )
    try:
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A fresh, empty bucket on the moto server; returns its name."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A real Postgres server for the session (see servers/postgres.py); its admin URL."""
    import tempfile

    from ecosystem_assets_tests.servers.postgres import postgres_server

    # Not under pytest's basetemp: a second pytest session started meanwhile prunes old basetemps,
    # which would delete a running server's data directory.
    with tempfile.TemporaryDirectory(prefix="ecosystem-pg-") as root, postgres_server(Path(root) / "pgdata") as url:
        yield url


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """A real Redis server for the session (see servers/redis.py); its URL with the password."""
    import tempfile

    from ecosystem_assets_tests.servers.redis import redis_server

    with tempfile.TemporaryDirectory(prefix="ecosystem-redis-") as root, redis_server(Path(root)) as url:
        yield url


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    """The session's Redis server, emptied for this test; its URL."""
    import redis

    with redis.Redis.from_url(redis_server_url) as client:
        client.flushdb()
    return redis_server_url


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty database on the session's Postgres server; its URL."""
    from ecosystem_assets_tests.servers.postgres import fresh_database

    with fresh_database(postgres_server_url) as url:
        yield url


@pytest.fixture
def mlflow_ui(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Starts a real `mlflow server` (servers/mlflow.py) over a test's own store when called:
    ``mlflow_ui(backend_store_uri, artifact_root, **options)`` → its base URL, the value for
    MLFLOW_UI_URL. Called after the store exists or before, as the test needs; stopped at teardown."""
    from ecosystem_assets_tests.servers.mlflow import mlflow_server

    with ExitStack() as stack:

        def start(backend_store_uri: str, artifact_root: str, **options) -> str:
            workdir = tmp_path / f"mlflow-server-{uuid.uuid4().hex[:8]}"
            return stack.enter_context(mlflow_server(backend_store_uri, artifact_root, workdir, **options))

        yield start
