"""The fraud commands users type: `ecosystem-assets serve` (the service from its console script) and
`ecosystem-assets replay` against it, as separate processes on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from ecosystem_assets_tests.fraud.helpers import serve_process

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_serve_and_replay_from_the_console_scripts(registry: str, tmp_path: Path):
    env = {"MLFLOW_TRACKING_URI": registry, "FRAUD_DB_URL": f"sqlite:///{tmp_path / 'service.db'}", "FRAUD_DRIFT_FROM": "2026-09-01"}
    with serve_process(env, tmp_path / "home", ready="/healthz") as (url, server, log):
        assert requests.get(f"{url}/healthz", timeout=5).json() == {"status": "ok", "model_version": "1"}
        replay_env = {k: v for k, v in os.environ.items() if not k.startswith(("ECOSYSTEM_", "FRAUD_", "MLFLOW_TRACKING"))}
        replay_env.update(ECOSYSTEM_HOME=str(tmp_path / "home"), **env)

        started = time.monotonic()
        replay = subprocess.run(
            [
                str(BIN / "ecosystem-assets"),
                "replay",
                "--service",
                url,
                "--first",
                "2026-09-10",
                "--days",
                "2",
                "--history-days",
                "3",
                "--no-dagster",
                "--day-seconds",
                "4",
            ],
            cwd=REPO,
            env=replay_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert replay.returncode == 0, replay.stderr[-3000:]
        assert time.monotonic() - started >= 8  # two simulated days of at least 4 s each
        lines = [line.strip() for line in replay.stdout.splitlines() if line.strip().startswith("2026-09-1")]
        assert [line.split(":")[0] for line in lines] == ["2026-09-10", "2026-09-11"], replay.stdout
        sent = sum(int(line.split(": ")[1].split(" transactions")[0]) for line in lines)
        assert all("model version(s) 1" in line for line in lines)

        monitoring = requests.get(
            f"{url}/monitoring", params={"window_hours": 24 * 3, "end": "2026-09-12T00:00:00+00:00"}, timeout=10
        ).json()
        assert monitoring["predictions"] == monitoring["labelled"] == sent > 1_000  # every label came back
        assert monitoring["model_version"] == "1" and monitoring["precision"] is not None
        metrics = requests.get(f"{url}/metrics", timeout=10).text
        assert f'fraud_requests_total{{endpoint="/predict",status="200"}} {float(sent)}' in metrics
    # serve_process stopped it with SIGINT: uvicorn's graceful shutdown
    assert server.returncode == 0, log.read_text()[-3000:]
    assert "Application shutdown complete" in log.read_text()
    # The champion it loaded is logged once; thousands of requests are not (no access log by default).
    assert log.read_text().count("serving fraud-detector version 1 (was none)") == 1
    assert "POST /predict" not in log.read_text()
