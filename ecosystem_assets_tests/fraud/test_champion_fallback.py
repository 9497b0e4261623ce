"""What the service does when the `champion` alias points at a version it cannot serve:

- a replica that starts then (a restart, a scale-up) serves the newest earlier champion that
  loads, says so, and moves on once the alias points at a loadable version;
- a version whose files cannot be fetched is a refusal of that version (not a registry outage),
  named without its storage location, and retried with a back-off;
- a version's files are listed before anything is downloaded: only the two the loader reads are
  fetched, and only when their listed sizes are within the limit.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import requests

from ecosystem_assets_tests.fraud.attacker import RunsCommand, register_files, register_sklearn, skops_mlmodel
from ecosystem_assets_tests.fraud.test_model_safety import _hgb
from ecosystem_assets_tests.fraud.test_service import TX, predict
from ecosystem_assets_tests.waiting import wait_until

MODEL = "fraud-detector"


def _files_of(registry: str, version: str) -> Path:
    """Where a version's files are stored (a local folder in these registries)."""
    from mlflow import MlflowClient

    return Path(MlflowClient(registry, registry_uri=registry).get_model_version_download_uri(MODEL, version))


def _mark_promoted(registry: str, version: str) -> None:
    """What training writes when it makes ``version`` champion (the alias itself moves on)."""
    from mlflow import MlflowClient

    from ecosystem_assets.registry import PROMOTED_AT

    MlflowClient(registry).set_model_version_tag(MODEL, version, PROMOTED_AT, "2026-11-01T00:00:00+00:00")


def _alias(registry: str, version: str) -> None:
    from mlflow import MlflowClient

    MlflowClient(registry).set_registered_model_alias(MODEL, "champion", version)


def test_training_marks_the_version_it_promotes(registry):
    from mlflow import MlflowClient

    from ecosystem_assets.registry import PROMOTED_AT

    tags = MlflowClient(registry).get_model_version(MODEL, "1").tags
    assert tags["promotion"] == "no champion yet" and tags[PROMOTED_AT].endswith("+00:00")


def test_a_replica_started_while_the_champion_is_refused_serves_the_newest_earlier_champion(registry, tmp_path, caplog):
    from ecosystem_assets.serving.app import create_app
    from ecosystem_assets.serving.champion import ChampionWatcher
    from ecosystem_assets_tests.servers.uvicorn_thread import UvicornThread

    caplog.set_level(logging.INFO, logger="ecosystem_assets.serving.champion")
    marker = tmp_path / "pwned"
    # v2: once champion, no longer loads; v3: loads but was never promoted; v4: a pickle, the alias.
    broken = register_files(registry, tmp_path / "a2", {"MLmodel": skops_mlmodel(), "model.skops": os.urandom(4096)})
    _mark_promoted(registry, broken)
    from ecosystem_assets.fraud.model_store import TRUSTED_TYPES

    unpromoted = register_sklearn(registry, tmp_path / "a3", _hgb(), "skops", trusted=TRUSTED_TYPES)
    poisoned = register_sklearn(registry, tmp_path / "a4", RunsCommand(marker), "cloudpickle")
    assert (broken, unpromoted, poisoned) == ("2", "3", "4")
    _alias(registry, poisoned)

    # Bounded: allowed one try, the watcher tries v2 only, and then says why nothing serves.
    one_try = ChampionWatcher(registry, fallback_versions=1)
    assert one_try.refresh() is False and one_try.current is None
    assert "version 2: is not a readable skops file" in one_try.why_no_model()
    assert one_try.why_no_model().startswith("no model to serve: fraud-detector@champion is version 4, refused (stored as 'cloudpickle'")
    assert one_try.health()["status"] == "no champion model" and "version 2" in one_try.health()["no_fallback"]

    app = create_app(f"sqlite:///{tmp_path / 'service.db'}", registry, poll_s=0.2)
    with UvicornThread(app) as service:  # a fresh replica: no model of its own to keep
        watcher = app.state.watcher
        health = requests.get(f"{service.url}/healthz", timeout=10)
        assert health.status_code == 200, health.text
        assert health.json()["model_version"] == "1" and health.json()["refused"]["version"] == "4"
        assert "cloudpickle" in health.json()["refused"]["reason"]
        assert watcher.fallback is True and watcher.health()["fallback"] is True
        assert requests.get(f"{service.url}/readyz", timeout=30).status_code == 200
        answer = predict(service.url)
        assert answer.status_code == 200 and answer.json()["model_version"] == "1"
        assert not marker.exists()
        for _ in range(3):  # the alias stays put: nothing is searched or logged again
            assert watcher.refresh() is False
        lines = [r.getMessage() for r in caplog.records if "as a fallback" in r.getMessage()]
        assert len(lines) == 1 and lines[0].startswith(
            "serving fraud-detector version 1 as a fallback: fraud-detector@champion is version 4"
        )

        # The alias moves to a version that loads: it serves, no longer a fallback.
        _alias(registry, unpromoted)
        health = wait_until(
            lambda: requests.get(f"{service.url}/healthz", timeout=10).json(),
            60,
            "the replica serves the alias's new version",
            done=lambda h: h["model_version"] == "3",
        )
        assert "refused" not in health and watcher.fallback is False and "fallback" not in watcher.health()

        # A running replica keeps what it serves when the alias moves to a refused version.
        _alias(registry, poisoned)
        health = wait_until(
            lambda: requests.get(f"{service.url}/healthz", timeout=10).json(), 60, "the refusal is reported", done=lambda h: "refused" in h
        )
        assert health["model_version"] == "3" and watcher.fallback is False
        assert predict(service.url, {**TX, "transaction_id": "t-after"}).json()["model_version"] == "3"
    assert not marker.exists()


def test_a_version_whose_files_are_missing_is_refused_without_its_location_and_retried_later(fraud_service, registry, tmp_path):
    from mlflow import MlflowClient

    from ecosystem_assets.serving.champion import ChampionWatcher

    gone = tmp_path / "moved-away" / "model"
    version = str(MlflowClient(registry).create_model_version(MODEL, source=str(gone), tags={"threshold": "0.5"}).version)
    _alias(registry, version)

    # The running service: a refusal of that version, not a registry outage; nothing names the location.
    url = fraud_service.url
    health = wait_until(
        lambda: requests.get(f"{url}/healthz", timeout=10).json(), 30, "/healthz reports the refusal", done=lambda h: "refused" in h
    )
    assert health["model_version"] == "1" and health["refused"]["version"] == version
    assert "no MLmodel file where its files should be" in health["refused"]["reason"]
    assert "registry_unavailable" not in health
    assert str(tmp_path) not in json.dumps(health) and "moved-away" not in json.dumps(health)
    assert f'fraud_model_refused{{version="{version}"}} 1.0' in requests.get(f"{url}/metrics", timeout=10).text
    assert predict(url).json()["model_version"] == "1"

    # A new replica falls back to v1 meanwhile; the refusal is kept, with a back-off.
    patient, eager = ChampionWatcher(registry, retry_s=3600), ChampionWatcher(registry, retry_s=0.2)
    for watcher in (patient, eager):
        assert watcher.refresh() is True and watcher.current.version == "1" and watcher.fallback
        assert watcher.refused.transient and watcher.refused.attempts == 1
    wait_until(lambda: eager.refresh() or eager.refused.attempts, 30, "a due retry is made", done=lambda n: n >= 2)
    assert eager.health()["refused"]["retry_in_s"] <= 0.4  # 0.2 s, then 0.4 s: doubling

    # The files appear (say, the storage is back): not fetched again before the back-off is over…
    shutil.copytree(_files_of(registry, "1"), gone)
    for _ in range(3):
        assert patient.refresh() is False
    assert patient.current.version == "1" and patient.refused.attempts == 1
    # …and served once it is.
    wait_until(lambda: eager.refresh() or eager.current.version, 30, "the retried version serves", done=lambda v: v == version)
    assert eager.refused is None and eager.fallback is False


def test_a_version_files_are_listed_and_sized_before_anything_is_downloaded(registry, tmp_path):
    """The loader runs in a process that may write files of at most 64 MiB (as a pod's small
    scratch volume): an extra 300 MB file beside a valid model is never fetched, and a 300 MB
    model.skops (or a 2 MiB MLmodel) is refused by its listed size, not downloaded."""
    valid = _files_of(registry, "1")
    model_files = {name: (valid / name).read_bytes() for name in ("MLmodel", "model.skops")}
    padded = register_files(registry, tmp_path / "a2", {**model_files, "padding.bin": b""})
    huge = register_files(registry, tmp_path / "a3", {"MLmodel": skops_mlmodel(), "model.skops": b""})
    wordy = register_files(registry, tmp_path / "a4", {"MLmodel": skops_mlmodel(), "model.skops": b""})
    # Sparse files: what an uploader can store, without this test writing 300 MB.
    os.truncate(_files_of(registry, padded) / "padding.bin", 300 << 20)
    os.truncate(_files_of(registry, huge) / "model.skops", 300 << 20)
    os.truncate(_files_of(registry, wordy) / "MLmodel", 2 << 20)

    code = (
        "import json, resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 20, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
        "from ecosystem_assets.fraud.model_store import ModelRefused, load_fraud_estimator\n"
        "out = {}\n"
        "for v in sys.argv[2:]:\n"
        "    try:\n"
        "        out[v] = type(load_fraud_estimator(sys.argv[1], v)).__name__\n"
        "    except ModelRefused as exc:\n"
        "        out[v] = 'refused: ' + exc.reason\n"
        "    except Exception as exc:\n"
        "        out[v] = f'error: {type(exc).__name__}: {exc}'\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, registry, padded, huge, wordy], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome[padded] == "HistGradientBoostingClassifier", outcome
    assert outcome[huge].startswith("refused: is too large (model.skops is listed at 314,572,800 bytes"), outcome
    assert outcome[huge].endswith("nothing was downloaded"), outcome
    assert outcome[wordy].startswith("refused: is too large (MLmodel is listed at 2,097,152 bytes; the limit is 1,048,576)"), outcome
