"""A registry that cannot be asked is an outage (`RegistryUnavailable`), not "no champion": the
service keeps serving the champion it has, /healthz says the registry is unavailable, and the
monitoring fails saying so instead of judging "no serving model". A registry that answers but has
no champion alias (or no model) is "no champion"."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient

from ecosystem_assets.registry import RegistryUnavailable
from ecosystem_assets.serving.champion import champion_version
from ecosystem_assets_tests.fraud.test_service import TX, predict
from ecosystem_assets_tests.servers.ports import free_port
from ecosystem_assets_tests.waiting import wait_until


@pytest.fixture
def fail_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow retries a refused connection for minutes by default; one attempt is enough here."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


def test_no_alias_is_no_champion_and_an_unreachable_registry_is_an_error(registry, tmp_path, fail_fast):
    assert str(champion_version(registry).version) == "1"
    MlflowClient(registry).delete_registered_model_alias("fraud-detector", "champion")
    assert champion_version(registry) is None  # the model exists, the alias does not
    assert champion_version(f"sqlite:///{tmp_path / 'empty.db'}") is None  # no model at all

    down = f"http://fraud-service:reader-secret-pw@127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(RegistryUnavailable) as err:
        champion_version(down)
    message = str(err.value)
    assert "127.0.0.1" in message and "fraud-detector@champion" in message
    assert "reader-secret-pw" not in message  # a URL's credentials never reach a message


def test_a_stopped_registry_keeps_the_champion_serving_and_fails_the_monitoring(
    registry, tmp_path, fail_fast, ecosystem_env, dagster_instance, monkeypatch
):
    from ecosystem_assets.fraud.definitions import MONITORING_JOB
    from ecosystem_assets.mlflow_users import wait_until_up
    from ecosystem_assets.project import build_definitions
    from ecosystem_assets.serving.app import create_app
    from ecosystem_assets.settings import Settings
    from ecosystem_assets_tests.servers.uvicorn_thread import UvicornThread

    url = f"http://127.0.0.1:{free_port()}"
    server = _mlflow_server(url, registry, tmp_path)
    try:
        wait_until_up(url, timeout_s=180)
        db_url = f"sqlite:///{tmp_path / 'service.db'}"
        app = create_app(db_url, url, poll_s=0.2)
        with UvicornThread(app) as service:
            assert requests.get(f"{service.url}/healthz", timeout=10).json() == {"status": "ok", "model_version": "1"}
            _stop(server)
            health = wait_until(
                lambda: requests.get(f"{service.url}/healthz", timeout=10),
                60,
                "/healthz reports the registry outage",
                done=lambda r: "registry_unavailable" in r.json(),
            )
            body = health.json()
            assert health.status_code == 200 and body["status"] == "ok" and body["model_version"] == "1"
            assert "RegistryUnavailable" in body["registry_unavailable"]
            assert url not in body["registry_unavailable"]  # the open /healthz names no location (the log does)
            answer = predict(service.url, {**TX, "transaction_id": "during-outage"})
            assert answer.status_code == 200 and answer.json()["model_version"] == "1"

        # The monitoring asks the (stopped) registry which model serves: an error, not "no serving model".
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("FRAUD_DB_URL", db_url)
        result = (
            build_definitions(Settings.from_env())
            .resolve_job_def(MONITORING_JOB)
            .execute_in_process(instance=dagster_instance, raise_on_error=False)
        )
        assert not result.success and not result.get_asset_check_evaluations()
        failure = result.failure_data_for_node("fraud_monitoring_metrics")
        assert failure.user_failure_data.description.startswith("the model registry is unavailable")
    finally:
        _stop(server)


def _mlflow_server(url: str, registry: str, tmp_path: Path) -> subprocess.Popen:
    port = url.rsplit(":", 1)[1]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    with open(tmp_path / "mlflow-server.log", "wb") as log:  # the server keeps its own copy of the descriptor
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host=127.0.0.1",
                f"--port={port}",
                "--workers=1",
                f"--backend-store-uri={registry}",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)  # the server and its workers (its own session)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
