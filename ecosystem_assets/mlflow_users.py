"""The MLflow server's users (basic-auth app): ``python -m ecosystem_assets.mlflow_users``.

Run by the `mlflow-users` Job (deploy/k8s/mlflow.yaml) after each deploy, against a server whose
`default_permission` is NO_PERMISSIONS, so a user can do only what is granted here:

- the **writer** (Dagster's runs) creates the `fraud-detector` experiment and registered model
  if they are missing, as itself, so MLflow makes it their owner (MANAGE); it creates any other
  experiment or model it needs the same way at run time;
- the **reader** (the fraud service) gets READ on the `fraud-detector` registered model and on
  its experiment (a version's files are downloaded through the artifact proxy, which checks the
  experiment): it can find and download the champion, and cannot register, tag or move aliases.

Idempotent: existing users get the password from the Secret again; existing grants are replaced.
Environment: MLFLOW_TRACKING_URI, the admin in MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD,
and MLFLOW_WRITER_USERNAME / _PASSWORD, MLFLOW_READER_USERNAME / _PASSWORD. Passwords are never
printed.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from typing import Any

MODEL_NAME = "fraud-detector"
EXPERIMENT_NAME = "fraud-detector"  # the experiment training logs to (fraud/assets.py)


class Server:
    """MLflow's REST API as one user (HTTP basic auth)."""

    def __init__(self, url: str, username: str, password: str, timeout: float = 30.0):
        import requests

        self.url, self.timeout = url.rstrip("/"), timeout
        self.session = requests.Session()
        self.session.auth = (username, password)

    def call(self, method: str, path: str, ok_errors: tuple[str, ...] = (), **kwargs: Any) -> dict[str, Any] | None:
        """JSON of the answer; None when it failed with one of ``ok_errors`` (MLflow error codes)."""
        response = self.session.request(method, f"{self.url}{path}", timeout=self.timeout, **kwargs)
        if response.ok:
            return response.json() if response.content else {}
        try:
            code = response.json().get("error_code")
        except ValueError:
            code = None
        if code in ok_errors:
            return None
        raise RuntimeError(f"{method} {path}: HTTP {response.status_code} {code or response.text[:200]}")

    def require(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """JSON of the answer; every MLflow error raises."""
        answer = self.call(method, path, **kwargs)
        if answer is None:  # only an ok_error answers None, and there are none here
            raise RuntimeError(f"{method} {path}: no answer")
        return answer


def wait_until_up(url: str, timeout_s: float = 300.0) -> None:
    import requests

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if requests.get(f"{url.rstrip('/')}/health", timeout=5).ok:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"MLflow at {url} did not answer /health within {timeout_s:.0f} s")
        time.sleep(2)


def ensure_user(admin: Server, username: str, password: str) -> None:
    if admin.call("GET", "/api/2.0/mlflow/users/get", ("RESOURCE_DOES_NOT_EXIST",), params={"username": username}):
        admin.call("PATCH", "/api/2.0/mlflow/users/update-password", json={"username": username, "password": password})
    else:
        admin.call("POST", "/api/2.0/mlflow/users/create", json={"username": username, "password": password})


def grant(admin: Server, username: str, resource_type: str, resource_id: str, permission: str) -> None:
    body = {"username": username, "resource_type": resource_type, "resource_id": resource_id}
    if (
        admin.call("POST", "/api/3.0/mlflow/users/permissions/grant", ("RESOURCE_ALREADY_EXISTS",), json={**body, "permission": permission})
        is None
    ):
        admin.call("POST", "/api/3.0/mlflow/users/permissions/revoke", json=body)
        admin.call("POST", "/api/3.0/mlflow/users/permissions/grant", json={**body, "permission": permission})


def ensure_fraud_resources(writer: Server) -> str:
    """The experiment's id; the experiment and the registered model exist, owned by the writer
    when it created them."""
    found = writer.call(
        "GET", "/api/2.0/mlflow/experiments/get-by-name", ("RESOURCE_DOES_NOT_EXIST",), params={"experiment_name": EXPERIMENT_NAME}
    )
    if found:
        experiment_id = found["experiment"]["experiment_id"]
    else:
        experiment_id = writer.require("POST", "/api/2.0/mlflow/experiments/create", json={"name": EXPERIMENT_NAME})["experiment_id"]
    writer.call(
        "POST",
        "/api/2.0/mlflow/registered-models/create",
        ("RESOURCE_ALREADY_EXISTS",),
        json={"name": MODEL_NAME, "description": "Card fraud classifier trained by the fraud_model asset."},
    )
    return experiment_id


def main(environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    url = env["MLFLOW_TRACKING_URI"]
    wait_until_up(url)
    admin = Server(url, env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    writer_name, reader_name = env["MLFLOW_WRITER_USERNAME"], env["MLFLOW_READER_USERNAME"]
    ensure_user(admin, writer_name, env["MLFLOW_WRITER_PASSWORD"])
    ensure_user(admin, reader_name, env["MLFLOW_READER_PASSWORD"])
    experiment_id = ensure_fraud_resources(Server(url, writer_name, env["MLFLOW_WRITER_PASSWORD"]))
    grant(admin, reader_name, "registered_model", MODEL_NAME, "READ")
    grant(admin, reader_name, "experiment", experiment_id, "READ")
    print(f"MLflow users ready: {writer_name} (writer), {reader_name} (READ on {MODEL_NAME}, experiment {experiment_id})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
