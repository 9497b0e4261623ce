"""The serving model: MLflow's ``models:/fraud-detector@champion``, loaded by a watcher thread and
swapped in when the alias moves, without a restart or a dropped request (each request batch takes
one reference to the current champion and uses it to the end).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from ecosystem_assets.fraud.model import MODEL_NAME

log = logging.getLogger(__name__)
CHAMPION_ALIAS = "champion"


@dataclass(frozen=True)
class Champion:
    version: str
    estimator: Any
    threshold: float
    score: Any  # X (n × features) → P(fraud); see fast_trees


def champion_version(tracking_uri: str) -> Any | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient(tracking_uri=tracking_uri).get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS)
    except MlflowException:
        return None


def load_champion(tracking_uri: str, version: Any) -> Champion:
    import mlflow.sklearn

    mlflow.set_tracking_uri(tracking_uri)  # `models:/` URIs resolve against the global registry URI
    from ecosystem_assets.serving.fast_trees import fast_scorer

    estimator = mlflow.sklearn.load_model(f"models:/{MODEL_NAME}/{version.version}")
    return Champion(str(version.version), estimator, float(version.tags["threshold"]), fast_scorer(estimator))


class ChampionWatcher:
    """Holds the current champion; a daemon thread polls the registry alias every ``poll_s`` seconds."""

    def __init__(self, tracking_uri: str, poll_s: float = 2.0):
        self.tracking_uri = tracking_uri
        self.poll_s = poll_s
        self.current: Champion | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Load the champion if the alias points at another version; True when it changed."""
        version = champion_version(self.tracking_uri)
        if version is None or (self.current and self.current.version == str(version.version)):
            return False
        champion = load_champion(self.tracking_uri, version)
        self.current = champion  # one reference assignment: requests see the old or the new model
        log.info("serving %s version %s (threshold %.4f)", MODEL_NAME, champion.version, champion.threshold)
        return True

    def start(self) -> None:
        try:
            self.refresh()
        except Exception:  # noqa: BLE001 — a registry hiccup at start must not keep the service down
            log.exception("could not load the champion; will retry")
        self._thread = threading.Thread(target=self._loop, name="champion-watcher", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001
                log.exception("champion refresh failed; keeping version %s", self.current and self.current.version)

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
