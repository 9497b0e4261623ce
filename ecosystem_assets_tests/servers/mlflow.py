"""A real MLflow tracking server for the tests: `mlflow server` (this venv's console script) on a free
loopback port, over the backend store and artifact root it is given, as `make mlflow` runs the UI
over the project's store. The links the assets put in their metadata are asked of it: UI routes,
`/get-artifact` and the REST API answer exactly as they would for a person.

Parameters, not fixed paths, so the same server runs over Postgres (``postgresql+psycopg2://…``) and
S3 (``s3://…``, with ``AWS_ENDPOINT_URL`` etc. in ``env``): ``artifact_root`` is the
``--default-artifact-root`` of experiments the server creates (those the project creates name their
own location); ``proxy_artifacts`` makes the server proxy artifact traffic to it instead
(``--artifacts-destination``; new experiments then get ``mlflow-artifacts:/`` roots).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ecosystem_assets_tests.servers.ports import free_port
from ecosystem_assets_tests.waiting import wait_until

READY_TIMEOUT_S = 120  # importing mlflow and creating a fresh database's tables on 2 busy cores


@contextmanager
def mlflow_server(
    backend_store_uri: str,
    artifact_root: str,
    workdir: Path,
    *,
    proxy_artifacts: bool = False,
    env: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """Yields the base URL (http://127.0.0.1:port) of a server answering /health; stopped afterwards."""
    import requests

    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--backend-store-uri", backend_store_uri, "--workers", "1"]  # one worker: the tests ask little, the cores are shared
    if proxy_artifacts:
        argv += ["--serve-artifacts", "--artifacts-destination", artifact_root]
    else:
        argv += ["--no-serve-artifacts", "--default-artifact-root", artifact_root]
    # No job runner: it starts eight more processes (huey consumers for GenAI jobs) that the tests never use.
    full = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
    log_path = workdir / "mlflow-server.log"  # a file, not a pipe: an unread pipe fills and stalls the server
    with log_path.open("wb") as log:
        # Its own session: the server's uvicorn worker goes down with it (the group is signalled).
        process = subprocess.Popen(argv, cwd=workdir, env=full, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:

        def healthy() -> bool:
            assert process.poll() is None, f"mlflow server exited: {log_path.read_text(errors='replace')[-3000:]}"
            return requests.get(f"{url}/health", timeout=5).status_code == 200

        wait_until(healthy, READY_TIMEOUT_S, f"mlflow server {url}/health answers 200", every=0.3)
        yield url
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (it leads it: start_new_session), SIGKILL after 30 s."""
    import signal

    for sig, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:  # the whole group is gone already
            break
        try:
            process.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue


# The UI's routes the links follow, as MLflow 3's frontend declares them (react-router patterns in
# the bundle the server serves): checked against the served bundle, so an MLflow upgrade that moves
# a page fails here rather than leaving dead links in Dagster.
UI_ROUTES = {
    "run": "/experiments/:experimentId/runs/:runUuid",
    "run_tab": "/experiments/:experimentId/runs/:runUuid/*",  # …/artifacts/<path>: the artifact open
    "model_version": "/models/:modelName/versions/:version",
}
_RUN = re.compile(r"^/experiments/(?P<experiment>[^/]+)/runs/(?P<run>[0-9a-f]{32})(?:/artifacts/(?P<path>.+))?$")
_MODEL_VERSION = re.compile(r"^/models/(?P<name>[^/]+)/versions/(?P<version>\d+)$")


def served_ui_routes(base: str) -> set[str]:
    """Which of `UI_ROUTES` the server's UI bundle declares (its index.html names the bundle)."""
    import requests

    index = requests.get(f"{base}/", timeout=30)
    index.raise_for_status()
    bundle = re.search(r'src="(static-files/static/js/main\.[0-9a-f]+\.js)"', index.text)
    assert bundle, f"no main bundle in the UI's index.html: {index.text[:500]}"
    text = requests.get(f"{base}/{bundle.group(1)}", timeout=60).text
    return {name for name, route in UI_ROUTES.items() if f'"{route}"' in text}


def what_a_link_shows(url: str, base: str) -> Any:
    """What the server answers for ``url``, as a browser would get it: for a UI link (``#/…``) the page
    (200), then what the page shows, asked of the same server's REST API (the UI makes these calls): the
    run, the model version, or the artifact's bytes from /get-artifact; for any other link, the
    response itself. Fails naming the link when an answer is not 200. Returns the last response."""
    from urllib.parse import unquote, urlsplit

    import requests

    assert url.startswith(f"{base}/"), f"{url} is not a link to the server {base}"
    page = requests.get(url, timeout=60)  # the fragment stays in the browser: this is the UI's page
    assert page.status_code == 200, f"{url}: {page.status_code} {page.text[:300]}"
    fragment = urlsplit(url).fragment
    if not fragment:
        return page
    assert fragment.startswith("/"), url
    api = f"{base}/ajax-api/2.0/mlflow"
    if run := _RUN.match(fragment):
        answer = requests.get(f"{api}/runs/get", params={"run_id": run["run"]}, timeout=30)
        assert answer.status_code == 200, f"{url}: run {run['run']}: {answer.status_code} {answer.text[:300]}"
        assert answer.json()["run"]["info"]["experiment_id"] == run["experiment"], f"{url}: the run is in another experiment"
        if run["path"]:
            answer = requests.get(f"{base}/get-artifact", params={"path": unquote(run["path"]), "run_uuid": run["run"]}, timeout=60)
            assert answer.status_code == 200, f"{url}: artifact {run['path']}: {answer.status_code} {answer.text[:300]}"
        return answer
    if version := _MODEL_VERSION.match(fragment):
        params = {"name": unquote(version["name"]), "version": version["version"]}
        answer = requests.get(f"{api}/model-versions/get", params=params, timeout=30)
        assert answer.status_code == 200, f"{url}: {answer.status_code} {answer.text[:300]}"
        return answer
    raise AssertionError(f"{url}: not a UI route the project links to ({fragment})")
