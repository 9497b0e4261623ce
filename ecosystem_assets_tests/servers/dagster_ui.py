"""`make dev`'s Dagster UI for the tests: `dg dev -w workspace.yaml` (webserver, daemon, code
server) on a free loopback port over a given ECOSYSTEM_HOME, ready once the `ecosystem_assets`
code location has loaded; stopped with its process group."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ecosystem_assets_tests.servers.ports import free_port
from ecosystem_assets_tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOCATION = "ecosystem_assets"
_LOCATIONS = '{"query": "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"}'


def location_status(url: str) -> dict[str, str]:
    """Each code location's load status, as the UI's own GraphQL endpoint reports it."""
    request = urllib.request.Request(f"{url}/graphql", data=_LOCATIONS.encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        entries = json.load(response)["data"]["workspaceOrError"]["locationEntries"]
    return {entry["name"]: entry["loadStatus"] for entry in entries}


@contextmanager
def dagster_ui(home: Path, env: dict[str, str] | None = None, timeout_s: float = 240) -> Iterator[str]:
    """Yields the UI's URL. ``home`` is the ECOSYSTEM_HOME (DAGSTER_HOME is its dagster/ folder, as
    in the Makefile); the log goes to ``home/dagster-dev.log``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    full_env = {
        **os.environ,
        "ECOSYSTEM_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "VIRTUAL_ENV": str(BIN.parent),
        "DO_NOT_TRACK": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        **(env or {}),
    }
    log = (home / "dagster-dev.log").open("wb")
    argv = [str(BIN / "dg"), "dev", "-w", "workspace.yaml", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(argv, cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:

        def loaded() -> bool:
            assert process.poll() is None, f"dg dev exited: {(home / 'dagster-dev.log').read_text()[-3000:]}"
            status = location_status(url).get(LOCATION)
            assert status != "ERROR", f"code location failed to load: {(home / 'dagster-dev.log').read_text()[-3000:]}"
            return status == "LOADED"

        wait_until(loaded, timeout_s, f"dg dev at {url} loads code location {LOCATION}", every=0.5)
        yield url
    finally:
        # dg dev runs the webserver, daemon and code server as children: stop the whole group.
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        except ProcessLookupError:
            pass
        log.close()
