"""The serving model: MLflow's ``models:/fraud-detector@champion``, loaded by a watcher thread and
swapped in when the alias moves, without a restart or a dropped request (each request batch takes
one reference to the current champion and uses it to the end).

A new champion is loaded only through `load_fraud_estimator` (skops with our trusted-type list,
never a pickle) and must score the fixed probe rows before it serves. One that fails is refused:
the old model keeps serving, the refusal is kept (`ChampionWatcher.refused`, shown on /healthz
and /metrics) and logged once, and that version is tried again only after the alias has moved
elsewhere and back.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Any

from ecosystem_assets.fraud.model import MODEL_NAME
from ecosystem_assets.fraud.model_store import ModelRefused, check_on_probe, load_fraud_estimator
from ecosystem_assets.registry import CHAMPION, get_champion, without_credentials

log = logging.getLogger(__name__)
CHAMPION_ALIAS = CHAMPION


@dataclass(frozen=True)
class Champion:
    version: str
    estimator: Any
    threshold: float
    score: Any  # X (n × features) → P(fraud); see fast_trees


@dataclass(frozen=True)
class Refusal:
    version: str
    reason: str


def champion_version(tracking_uri: str) -> Any | None:
    """The version ``fraud-detector@champion`` points at; None when there is none. A registry that
    cannot be asked raises `RegistryUnavailable` (registry.get_champion, the one lookup)."""
    from mlflow import MlflowClient

    # The registry is named explicitly: a process-wide MLflow registry URI must never redirect the service.
    return get_champion(MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri), MODEL_NAME)


def _threshold(version: Any) -> float:
    """The decision threshold from the version's tags (written by whoever registered it)."""
    text = (version.tags or {}).get("threshold")
    try:
        value = float(str(text)) if text is not None else math.nan
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ModelRefused(str(version.version), f"threshold tag {str(text)[:40]!r} is not a number in [0, 1]")
    return value


def load_champion(tracking_uri: str, version: Any) -> Champion:
    """Load and check ``version``; `ModelRefused` when it must not serve."""
    from ecosystem_assets.serving.fast_trees import fast_scorer

    number = str(version.version)
    threshold = _threshold(version)
    estimator = load_fraud_estimator(tracking_uri, number)
    try:
        score = fast_scorer(estimator)
    except Exception as exc:  # noqa: BLE001 — compiling probes predict_proba on the model's own splits
        raise ModelRefused(number, f"fails to score: {type(exc).__name__}: {exc}") from None
    check_on_probe(number, score)  # the function that will actually serve
    return Champion(number, estimator, threshold, score)


class ChampionWatcher:
    """Holds the current champion; a daemon thread polls the registry alias every ``poll_s`` seconds."""

    def __init__(self, tracking_uri: str, poll_s: float = 2.0):
        self.tracking_uri = tracking_uri
        self.poll_s = poll_s
        self.current: Champion | None = None
        self.refused: Refusal | None = None  # the version the alias points at, when it was refused
        self.registry_error: str | None = None  # the last refresh's failure (a registry outage), None once one succeeds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Load the champion if the alias points at another version; True when it changed."""
        version = champion_version(self.tracking_uri)
        if version is None:
            return False
        number = str(version.version)
        if self.current and self.current.version == number:
            self.refused = None  # the alias is back on the serving version
            return False
        if self.refused and self.refused.version == number:
            return False  # refused already: retried only once the alias has moved away and back
        try:
            champion = load_champion(self.tracking_uri, version)
        except ModelRefused as exc:
            self.refused = Refusal(exc.version, exc.reason)
            log.warning(
                "refused %s version %s: %s; still serving version %s",
                MODEL_NAME,
                exc.version,
                exc.reason,
                self.current.version if self.current else "none",
            )
            return False
        before = self.current
        self.current = champion  # one reference assignment: requests see the old or the new model
        self.refused = None
        log.info("serving %s version %s (was %s)", MODEL_NAME, champion.version, before.version if before else "none")
        return True

    def _refresh_logged(self) -> None:
        try:
            self.refresh()
            self.registry_error = None
        except Exception as exc:  # noqa: BLE001 — a registry outage (RegistryUnavailable) must not stop the watcher
            # One line per distinct failure, not one per poll while the registry is down.
            message = without_credentials(f"{type(exc).__name__}: {exc}")[:500]
            if message != self.registry_error:
                log.warning(
                    "champion refresh failed (%s); keeping version %s; will retry",
                    message,
                    self.current.version if self.current else "none",
                )
            self.registry_error = message

    def start(self) -> None:
        self._refresh_logged()  # a registry hiccup at start must not keep the service down
        self._thread = threading.Thread(target=self._loop, name="champion-watcher", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._refresh_logged()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
