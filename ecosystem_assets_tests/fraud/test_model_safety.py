"""Whoever can write to the registry cannot run code in the service, nor make it serve a model
that does not score: such a champion is refused and the old one keeps serving."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import requests

from ecosystem_assets_tests.fraud.attacker import RunsCommand, register_files, register_sklearn, skops_mlmodel
from ecosystem_assets_tests.fraud.test_service import TX, predict
from ecosystem_assets_tests.waiting import wait_until

REFUSAL = "refused fraud-detector version"


def refusal_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(REFUSAL)]


def test_poisoned_champion_is_refused_and_the_old_one_keeps_serving(fraud_service, registry, tmp_path, caplog):
    from mlflow import MlflowClient

    caplog.set_level(logging.INFO, logger="ecosystem_assets.serving.champion")
    url, marker = fraud_service.url, tmp_path / "pwned"
    version = register_sklearn(registry, tmp_path / "attacker", RunsCommand(marker), "cloudpickle")
    assert version == "2" and not marker.exists()
    client = MlflowClient(registry)
    client.set_registered_model_alias("fraud-detector", "champion", version)

    health = wait_until(lambda: requests.get(f"{url}/healthz").json(), 30, "/healthz reports the refusal", done=lambda h: "refused" in h)
    assert not marker.exists()
    assert health["status"] == "ok" and health["model_version"] == "1"
    assert health["refused"]["version"] == "2" and "cloudpickle" in health["refused"]["reason"]
    answer = predict(url)
    assert answer.status_code == 200 and answer.json()["model_version"] == "1"
    assert 'fraud_model_refused{version="2"} 1.0' in requests.get(f"{url}/metrics").text
    watcher = fraud_service.app.state.watcher
    for _ in range(3):  # later polls neither retry nor log again while the alias stays put
        assert watcher.refresh() is False
    assert len(refusal_lines(caplog)) == 1 and "still serving version 1" in refusal_lines(caplog)[0]

    # The alias moves back: the refusal is over. Moved to the bad version again: tried and refused again.
    client.set_registered_model_alias("fraud-detector", "champion", "1")
    wait_until(lambda: requests.get(f"{url}/healthz").json(), 30, "/healthz no longer reports a refusal", done=lambda h: "refused" not in h)
    assert "fraud_model_refused{" not in requests.get(f"{url}/metrics").text
    client.set_registered_model_alias("fraud-detector", "champion", version)
    wait_until(lambda: refusal_lines(caplog), 30, "a second refusal is logged", done=lambda lines: len(lines) == 2)
    assert not marker.exists() and predict(url, {**TX, "transaction_id": "t-after"}).json()["model_version"] == "1"
    assert not [r for r in caplog.records if r.getMessage().startswith("serving fraud-detector version 2")]

    # The payload was live: unpickling the stored file runs it (what the service must never do).
    import pickle

    (stored,) = Path(tmp_path / "attacker").rglob("model.pkl")
    pickle.loads(stored.read_bytes())
    assert marker.exists()


def test_no_champion_is_503_and_first_champion_is_logged(fraud_service, registry, caplog):
    from mlflow import MlflowClient

    from ecosystem_assets.serving.champion import ChampionWatcher

    caplog.set_level(logging.INFO, logger="ecosystem_assets.serving.champion")
    client = MlflowClient(registry)
    client.delete_registered_model_alias("fraud-detector", "champion")
    watcher = ChampionWatcher(registry)
    assert watcher.refresh() is False and watcher.current is None
    client.set_registered_model_alias("fraud-detector", "champion", "1")
    assert watcher.refresh() is True and watcher.current.version == "1"
    assert "serving fraud-detector version 1 (was none)" in [r.getMessage() for r in caplog.records]


def _hgb(n_features: int = 13, **changes):
    """A small fitted HistGradientBoostingClassifier; ``changes`` maps a node field to a function
    applied to the first tree's nodes (what an attacker edits in the stored arrays)."""
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, n_features))
    model = HistGradientBoostingClassifier(max_iter=5).fit(X, (X[:, 0] > 0.3).astype(int))
    for field, change in changes.items():
        nodes = model._predictors[0][0].nodes
        nodes[field] = change(nodes[field])
    return model


def _logistic_regression():
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    return LogisticRegression().fit(rng.normal(size=(200, 13)), rng.integers(0, 2, 200))


def _function_transformer():
    from sklearn.preprocessing import FunctionTransformer

    return FunctionTransformer(func=os.system)


def _skops(make, **kwargs):
    from ecosystem_assets.fraud.model_store import TRUSTED_TYPES

    return lambda uri, art, marker: register_sklearn(uri, art, make(), "skops", trusted=TRUSTED_TYPES, **kwargs)


def _zip_bomb() -> bytes:
    """A ~300 KB zip that unpacks to 300 MB of zeros (over model_store.MAX_MODEL_BYTES)."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive, archive.open("schema.json", "w") as entry:
        block = bytes(1 << 20)
        for _ in range(300):
            entry.write(block)
    return buffer.getvalue()


CASES = {
    # A skops file may only hold skops's safe types and ours, whatever its MLmodel file trusts.
    "type outside the list": (
        lambda uri, art, marker: register_sklearn(uri, art, _function_transformer(), "skops", trusted=["posix.system"]),
        "types outside the trusted list: posix.system",
    ),
    "zip bomb": (
        lambda uri, art, marker: register_files(uri, art, {"MLmodel": skops_mlmodel(), "model.skops": _zip_bomb()}),
        "is too large",
    ),
    "garbage bytes": (
        lambda uri, art, marker: register_files(uri, art, {"MLmodel": skops_mlmodel(), "model.skops": os.urandom(4096)}),
        "not a readable skops file",
    ),
    "pickle claiming to be skops": (
        lambda uri, art, marker: register_files(
            uri, art, {"MLmodel": skops_mlmodel(), "model.skops": __import__("cloudpickle").dumps(RunsCommand(marker))}
        ),
        "not a readable skops file",
    ),
    "another estimator": (_skops(_logistic_regression), "is a LogisticRegression, not a HistGradientBoostingClassifier"),
    "trained on 5 features": (_skops(lambda: _hgb(5)), "expects 5 features, not the 13"),
    # sklearn's compiled predict does not bounds-check node indices: refused before it runs.
    "child index out of range": (_skops(lambda: _hgb(left=lambda a: a + 10**6)), "pointing outside the tree"),
    "loops back to the root": (_skops(lambda: _hgb(right=lambda a: a * 0)), "pointing outside the tree"),
    "scores NaN": (_skops(lambda: _hgb(value=lambda a: a * float("nan"))), "not finite"),
    "threshold tag not a number": (_skops(_hgb, threshold="high"), "threshold tag 'high'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_versions_are_refused_by_the_watcher(case, registry, tmp_path):
    from mlflow import MlflowClient

    from ecosystem_assets.serving.champion import ChampionWatcher

    make, words = CASES[case]
    marker = tmp_path / "pwned"
    watcher = ChampionWatcher(registry)
    assert watcher.refresh() is True and watcher.current.version == "1"
    version = make(registry, tmp_path / "attacker", marker)
    MlflowClient(registry).set_registered_model_alias("fraud-detector", "champion", version)
    assert watcher.refresh() is False
    assert watcher.current.version == "1" and watcher.refused.version == version
    assert words in watcher.refused.reason, watcher.refused.reason
    assert not marker.exists()


def test_loader_names_version_and_format(registry, tmp_path):
    from ecosystem_assets.fraud.model_store import ModelRefused, load_fraud_estimator

    version = register_sklearn(registry, tmp_path / "attacker", _hgb(), "pickle")
    with pytest.raises(ModelRefused, match=f"fraud-detector version {version} refused: stored as 'pickle', not skops"):
        load_fraud_estimator(registry, version)
    assert load_fraud_estimator(registry, "1").n_features_in_ == 13  # the trained champion loads


def test_registry_reader_loads_the_champion_but_cannot_move_it(tmp_path, monkeypatch):
    """`mlflow server --app-name basic-auth` on loopback, default_permission NO_PERMISSIONS, users
    made by ecosystem_assets.mlflow_users as the deploy Job does: the writer registers, the
    reader (the service's credentials) loads the champion and cannot register or move the alias."""
    import subprocess
    import sys

    from ecosystem_assets.fraud.model_store import TRUSTED_TYPES, load_fraud_estimator
    from ecosystem_assets.mlflow_users import Server, main, wait_until_up
    from ecosystem_assets_tests.servers.ports import free_port

    ini = tmp_path / "basic_auth.ini"
    ini.write_text(
        f"[mlflow]\ndefault_permission = NO_PERMISSIONS\ndatabase_uri = sqlite:///{tmp_path / 'auth.db'}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-pw-0123456789",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-key",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # as deploy/k8s/mlflow.yaml: no job-runner processes
    }
    with open(tmp_path / "server.log", "wb") as log:  # the server keeps its own copy of the descriptor
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--app-name=basic-auth",
                "--host=127.0.0.1",
                f"--port={port}",
                "--workers=1",
                f"--backend-store-uri=sqlite:///{tmp_path / 'mlflow.db'}",
                "--serve-artifacts",
                f"--artifacts-destination={tmp_path / 'artifacts'}",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
    try:
        wait_until_up(url, timeout_s=120)
        users = {
            "MLFLOW_TRACKING_URI": url,
            "MLFLOW_TRACKING_USERNAME": "admin",
            "MLFLOW_TRACKING_PASSWORD": "admin-pw-0123456789",
            "MLFLOW_WRITER_USERNAME": "dagster",
            "MLFLOW_WRITER_PASSWORD": "writer-pw-0123456789",
            "MLFLOW_READER_USERNAME": "fraud-service",
            "MLFLOW_READER_PASSWORD": "reader-pw-0123456789",
        }
        assert main(users) == 0 and main(users) == 0  # idempotent: the Job runs on every deploy

        import mlflow
        import mlflow.sklearn
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        def as_user(name: str, password: str) -> None:
            monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", name)
            monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)

        as_user("dagster", "writer-pw-0123456789")
        # The process-wide tracking URI goes back when the test ends: the server here stops then.
        monkeypatch.setattr(mlflow.tracking._tracking_service.utils, "_tracking_uri", mlflow.tracking._tracking_service.utils._tracking_uri)
        mlflow.set_tracking_uri(url)
        with mlflow.start_run(experiment_id=MlflowClient(url).get_experiment_by_name("fraud-detector").experiment_id):
            logged = mlflow.sklearn.log_model(
                _hgb(), name="model", serialization_format="skops", skops_trusted_types=TRUSTED_TYPES, pip_requirements=["scikit-learn"]
            )
        version = mlflow.register_model(logged.model_uri, "fraud-detector", tags={"threshold": "0.5"}).version
        MlflowClient(url).set_registered_model_alias("fraud-detector", "champion", version)

        as_user("fraud-service", "reader-pw-0123456789")
        reader = MlflowClient(url)
        assert str(reader.get_model_version_by_alias("fraud-detector", "champion").version) == "1"
        assert load_fraud_estimator(url, "1").n_features_in_ == 13
        for write in (
            lambda: reader.set_registered_model_alias("fraud-detector", "champion", "1"),
            lambda: reader.set_model_version_tag("fraud-detector", "1", "threshold", "0.0"),
            lambda: reader.create_model_version("fraud-detector", logged.model_uri),
        ):
            with pytest.raises(MlflowException, match=r"PERMISSION_DENIED|Permission denied"):
                write()
        with pytest.raises(RuntimeError, match=r"HTTP 401"):
            Server(url, "fraud-service", "wrong").call("GET", "/api/2.0/mlflow/registered-models/get", params={"name": "fraud-detector"})
    finally:
        import signal

        os.killpg(server.pid, signal.SIGTERM)  # the server and its uvicorn workers (its own session)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


def test_the_champion_loads_in_a_process_with_no_mlflow_uri_set(registry, tmp_path):
    """`make serve` sets no MLFLOW_TRACKING_URI: the service's registry comes from its settings
    alone. (MLflow resolves `models:/` URIs against the process-wide registry URI; a loader that
    relied on it found an empty ./mlflow.db and never served.)"""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING") and k != "MLFLOW_REGISTRY_URI"}
    code = (
        "from ecosystem_assets.serving.champion import ChampionWatcher\n"
        f"w = ChampionWatcher({registry!r})\n"
        "assert w.refresh() is True, w.refused\n"
        "print('serving', w.current.version)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("serving 1")
    assert not (tmp_path / "mlflow.db").exists()
