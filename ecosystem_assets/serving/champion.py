"""The serving model: MLflow's ``models:/fraud-detector@champion``, loaded by a watcher thread and
swapped in when the alias moves, without a restart or a dropped request (each request batch takes
one reference to the current champion and uses it to the end).

A new champion is loaded only through `load_fraud_estimator` (skops with our trusted-type list,
never a pickle) and must score the fixed probe rows before it serves. One that fails is refused:
the old model keeps serving, the refusal is kept (`ChampionWatcher.refused`, shown on /healthz
and /metrics) and logged once, and that version is tried again only after the alias has moved
elsewhere and back. A version whose files could not be fetched (`ModelFilesUnavailable`) is
refused the same way but retried with a back-off, since storage may come back.

A replica that starts (a restart, a scale-up) while the alias's version is refused has no old
model to keep. It falls back to the newest earlier version that was once promoted (registry tag
`promoted_at`, set by training) and loads, trying a few at most; /healthz says so (`fallback`).
When the alias moves to a version that loads, that one serves.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from ecosystem_assets.fraud.model import MODEL_NAME
from ecosystem_assets.fraud.model_store import (
    ModelFilesUnavailable,
    ModelRefused,
    check_on_probe,
    load_fraud_estimator,
    without_locations,
)
from ecosystem_assets.registry import CHAMPION, PROMOTED_AT, get_champion, without_credentials

log = logging.getLogger(__name__)
CHAMPION_ALIAS = CHAMPION
# Back-off of a version whose files could not be fetched, and of a failed fallback search: 30 s,
# doubling, at most 10 min. Each try downloads a model; every 2 s poll would hammer the storage.
RETRY_FIRST_S = 30.0
RETRY_MAX_S = 600.0
# Earlier promoted versions tried per fallback search: each is a download and a load.
FALLBACK_VERSIONS = 3


@dataclass(frozen=True)
class Champion:
    version: str
    estimator: Any
    threshold: float
    score: Any  # X (n × features) → P(fraud); see fast_trees


@dataclass(frozen=True)
class Refusal:
    version: str
    reason: str  # safe for the open /healthz: no storage locations, no credentials
    transient: bool = False  # the files could not be fetched: tried again at ``retry_at``
    attempts: int = 1
    retry_at: float | None = None  # time.monotonic() of the next try (transient only)


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


def _backoff(first_s: float, max_s: float, attempts: int) -> float:
    return min(first_s * 2 ** min(attempts - 1, 30), max_s)


def promoted_versions_before(tracking_uri: str, version: str) -> list[Any]:
    """Versions older than ``version`` that were once made champion (tag PROMOTED_AT), newest first.
    A registry that cannot be asked raises (an outage, as for the alias)."""
    from mlflow import MlflowClient

    if not version.isdigit():
        return []
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    found = [
        v
        for v in client.search_model_versions(f"name='{MODEL_NAME}'")
        if str(v.version).isdigit() and int(v.version) < int(version) and (v.tags or {}).get(PROMOTED_AT)
    ]
    return sorted(found, key=lambda v: int(v.version), reverse=True)


class ChampionWatcher:
    """Holds the current champion; a daemon thread polls the registry alias every ``poll_s`` seconds.
    ``retry_s``/``retry_max_s``: the back-off of versions whose files could not be fetched and of
    fallback searches; ``fallback_versions``: how many earlier champions one search tries."""

    def __init__(
        self,
        tracking_uri: str,
        poll_s: float = 2.0,
        *,
        retry_s: float = RETRY_FIRST_S,
        retry_max_s: float = RETRY_MAX_S,
        fallback_versions: int = FALLBACK_VERSIONS,
    ):
        self.tracking_uri = tracking_uri
        self.poll_s = poll_s
        self.retry_s, self.retry_max_s, self.fallback_versions = retry_s, retry_max_s, fallback_versions
        self.current: Champion | None = None
        self.refused: Refusal | None = None  # the version the alias points at, when it was refused
        self.fallback = False  # True while `current` is an earlier champion, not the alias's version
        self.no_fallback: str | None = None  # why the last fallback search found nothing to serve
        self.registry_error: str | None = None  # the last refresh's failure (a registry outage), None once one succeeds
        self._fallback_searches = 0  # failed searches in a row (their back-off)
        self._fallback_at = 0.0  # time.monotonic() of the next search
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Load the champion if the alias points at another version (or fall back, when nothing
        serves and the alias's version is refused); True when the serving model changed."""
        version = champion_version(self.tracking_uri)
        if version is None:
            return False
        number = str(version.version)
        if self.current and self.current.version == number:
            self.refused, self.fallback = None, False  # the alias is on the serving version
            return False
        refused = self.refused
        if refused is None or refused.version != number or (refused.transient and time.monotonic() >= (refused.retry_at or 0.0)):
            champion = self._load_or_refuse(version, refused)
            if champion is not None:
                self._serve(champion, fallback=False)
                return True
        # A refused version is never served, and a replica that has a model keeps it (as before).
        return self._fall_back(number) if self.current is None else False

    def _load_or_refuse(self, version: Any, before: Refusal | None) -> Champion | None:
        number = str(version.version)
        try:
            return load_champion(self.tracking_uri, version)
        except ModelRefused as exc:
            refusal, logged = Refusal(exc.version, without_locations(exc.reason)), exc.reason
        except ModelFilesUnavailable as exc:
            again = before is not None and before.version == number and before.transient
            attempts = before.attempts + 1 if before is not None and again else 1
            delay = _backoff(self.retry_s, self.retry_max_s, attempts)
            refusal = Refusal(number, without_locations(exc.reason), True, attempts, time.monotonic() + delay)
            logged = (
                f"{exc.reason} ({exc.detail}); trying again in {delay:g} s" if exc.detail else f"{exc.reason}; trying again in {delay:g} s"
            )
        self.refused = refusal
        if before is None or before.version != refusal.version:
            self._fallback_searches, self._fallback_at = 0, 0.0  # another version refused: search again now
        # Once per refusal: a retry that fails the same way adds no line.
        if before is None or (before.version, before.reason) != (refusal.version, refusal.reason):
            log.warning(
                "refused %s version %s: %s; still serving version %s",
                MODEL_NAME,
                refusal.version,
                without_credentials(logged),
                self.current.version if self.current else "none",
            )
        return None

    def _fall_back(self, refused: str) -> bool:
        """Serve the newest earlier promoted version that loads, trying at most
        ``fallback_versions``; a search that finds none is repeated with a back-off."""
        if time.monotonic() < self._fallback_at:
            return False
        tried = []
        for version in promoted_versions_before(self.tracking_uri, refused)[: self.fallback_versions]:
            try:
                champion = load_champion(self.tracking_uri, version)
            except (ModelRefused, ModelFilesUnavailable) as exc:
                tried.append(f"version {version.version}: {without_locations(exc.reason)}")
                continue
            self._serve(champion, fallback=True)
            return True
        self._fallback_searches += 1
        delay = _backoff(self.retry_s, self.retry_max_s, self._fallback_searches)
        self._fallback_at = time.monotonic() + delay
        if tried:
            why = f"no earlier promoted version of {MODEL_NAME} loads ({'; '.join(tried)})"[:500]
        else:
            why = f"no earlier version of {MODEL_NAME} carries the {PROMOTED_AT} tag of a promotion"
        if why != self.no_fallback:
            log.warning("%s; serving nothing while %s@%s is refused; searching again in %g s", why, MODEL_NAME, CHAMPION_ALIAS, delay)
        self.no_fallback = why
        return False

    def _serve(self, champion: Champion, *, fallback: bool) -> None:
        before = self.current
        self.current = champion  # one reference assignment: requests see the old or the new model
        self.fallback = fallback
        self.no_fallback, self._fallback_searches, self._fallback_at = None, 0, 0.0
        if fallback:
            refused = self.refused
            log.warning(
                "serving %s version %s as a fallback: %s@%s is version %s, refused (%s); "
                "version %s is the newest earlier promoted version that loads",
                MODEL_NAME,
                champion.version,
                MODEL_NAME,
                CHAMPION_ALIAS,
                refused.version if refused else "?",
                refused.reason if refused else "?",
                champion.version,
            )
            return
        self.refused = None
        log.info("serving %s version %s (was %s)", MODEL_NAME, champion.version, before.version if before else "none")

    def health(self) -> dict[str, Any]:
        """What /healthz shows: the serving version, whether it is a fallback, the refused alias
        version and why, a registry outage. Nothing here names a storage location."""
        current, refused, error = self.current, self.refused, self.registry_error
        body: dict[str, Any] = {"status": "ok" if current else "no champion model", "model_version": current and current.version}
        if current is not None and self.fallback:
            body["fallback"] = True  # serving an earlier champion: the alias's version is refused
        if refused:
            body["refused"] = {"version": refused.version, "reason": refused.reason}
            if refused.transient and refused.retry_at is not None:
                body["refused"]["retry_in_s"] = max(0.0, round(refused.retry_at - time.monotonic(), 1))
        if current is None and self.no_fallback:
            body["no_fallback"] = self.no_fallback
        if error:  # still serving the version above; the watcher retries
            body["registry_unavailable"] = error
        return body

    def why_no_model(self) -> str:
        """Why nothing serves, for a 503: no alias yet, a refused alias version with no fallback,
        or a registry outage."""
        refused, error = self.refused, self.registry_error
        if refused is not None:
            why = self.no_fallback or "no earlier promoted version loads"
            return f"no model to serve: {MODEL_NAME}@{CHAMPION_ALIAS} is version {refused.version}, refused ({refused.reason}); {why}"
        if error is not None:
            return f"no model to serve yet: the model registry is unavailable ({error})"
        return f"no model has alias '{CHAMPION_ALIAS}' in registry '{MODEL_NAME}' yet"

    def _refresh_logged(self) -> None:
        try:
            self.refresh()
            self.registry_error = None
        except Exception as exc:  # noqa: BLE001 — a registry outage (RegistryUnavailable) must not stop the watcher
            # One line per distinct failure, not one per poll while the registry is down. The log
            # keeps the locations (for whoever fixes it); /healthz, open to anyone, gets none.
            message = without_credentials(f"{type(exc).__name__}: {exc}")[:500]
            shown = without_locations(message)
            if shown != self.registry_error:
                log.warning(
                    "champion refresh failed (%s); keeping version %s; will retry",
                    message,
                    self.current.version if self.current else "none",
                )
            self.registry_error = shown

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
