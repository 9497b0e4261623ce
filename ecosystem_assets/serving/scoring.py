"""Scoring with the live champion: the model comes from MLflow's ``models:/fraud-detector@champion``
and is swapped in by a watcher thread when the alias moves, without a restart or a dropped request
(each request takes one reference to the current champion and uses it to the end).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from ecosystem_assets.fraud.features import LABEL_DELAY_DAYS, TERMINAL_WINDOWS, FeatureState
from ecosystem_assets.fraud.model import MODEL_NAME
from ecosystem_assets.serving.store import FEATURE_COLUMNS, PredictionStore, time_ordered_id

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


class NoChampion(RuntimeError):
    pass


@dataclass
class _Pending:
    future: Any  # asyncio.Future resolved by the batch loop
    kind: str  # "predict" | "feedback"
    row: dict[str, Any] | None = None
    features: list[float] | None = None
    label: tuple[str, bool] | None = None


class Scorer:
    """Features from the online history, probability from the champion, one row in the log.

    Requests are answered in micro-batches: each request computes its features on arrival, then
    waits in a queue; a batch loop takes everything queued, scores it with one call of the
    champion and writes it in one transaction (group commit): on the event loop for SQLite, in one
    writer thread for a networked database. Under load the batches grow by themselves, so the
    model's per-call overhead and the commit are shared; a request is answered only after its row
    is committed.
    """

    def __init__(self, store: PredictionStore, watcher: ChampionWatcher, max_batch: int = 512,
                 write_inline: bool | None = None):
        self.store = store
        self.write_inline = store.is_sqlite if write_inline is None else write_inline
        self.watcher = watcher
        self.state = FeatureState()
        self.max_batch = max_batch
        self._lock = threading.Lock()  # FeatureState: event loop (features) and batch thread (labels)
        self._queue: Any = None
        self._executor: Any = None

    def warm_up(self) -> int:
        """Rebuild the feature history from the store (what the windows can still see)."""
        latest = self.store.latest_seen_time()
        if latest is None:
            return 0
        rows = self.store.feature_history(latest - (LABEL_DELAY_DAYS + max(TERMINAL_WINDOWS)) * 86_400)
        self.observe_history(rows)
        return len(rows)

    def observe_history(self, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            for r in rows:
                ts = datetime.fromtimestamp(r["tx_time"], timezone(timedelta(minutes=r["tx_offset_min"])))
                self.state.observe(r["transaction_id"], r["customer_id"], r["terminal_id"], r["amount"], ts)
                if r["is_fraud"] is not None:
                    self.state.label(r["transaction_id"], int(r["is_fraud"]))

    def load_history(self, transactions: list[dict[str, Any]]) -> int:
        """Warm the feature history with labelled past transactions (stored, then observed)."""
        rows = [
            {"transaction_id": t["transaction_id"], "customer_id": t["customer_id"], "terminal_id": t["terminal_id"],
             "amount": float(t["amount"]), "tx_time": t["timestamp"].timestamp(),
             "tx_offset_min": int(t["timestamp"].utcoffset().total_seconds() // 60), "is_fraud": t.get("is_fraud")}
            for t in transactions
        ]
        fresh = self.store.add_history(rows)
        self.observe_history(fresh)  # a repeated upload must not count transactions twice
        return len(fresh)

    async def run(self) -> None:
        """The batch loop; runs for the life of the app."""
        import asyncio

        from threadpoolctl import threadpool_limits

        # OpenMP limits are per thread, so they are set in the thread that scores. With 2 OpenMP
        # threads each of the fallback predict_proba's ~100 tree calls waits on a barrier, which
        # on a busy machine costs a scheduler slice per tree (seen: 20 req/s and 2 s p99).
        if self.write_inline:
            # SQLite is a local file: a batch's insert and commit take ~100 µs of CPU, and a
            # second thread only adds GIL hand-offs (measured: 35 % fewer requests per second).
            threadpool_limits(1)
        else:
            # A database across the network: its round trips must not stop the event loop.
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(1, thread_name_prefix="scorer", initializer=threadpool_limits, initargs=(1,))
        self._queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            # One more turn of the loop lets requests whose bytes already arrived join this batch:
            # at 8 clients, batches of 8 instead of two alternating halves of 4.
            await asyncio.sleep(0)
            while not self._queue.empty() and len(batch) < self.max_batch:
                batch.append(self._queue.get_nowait())
            try:
                if self.write_inline:
                    outcomes = self._process(batch)
                else:
                    outcomes = await loop.run_in_executor(self._executor, self._process, batch)
            except Exception as exc:  # noqa: BLE001 — the whole batch failed (e.g. the database is down)
                outcomes = [exc] * len(batch)
            for item, outcome in zip(batch, outcomes):
                if item.future.done():
                    continue
                if isinstance(outcome, Exception):
                    item.future.set_exception(outcome)
                else:
                    item.future.set_result(outcome)

    def _submit(self, item: _Pending):
        self._queue.put_nowait(item)
        return item.future

    async def predict(self, tx: dict[str, Any]) -> dict[str, Any]:
        import asyncio

        if self.watcher.current is None:
            raise NoChampion(f"no model has alias '{CHAMPION_ALIAS}' in registry '{MODEL_NAME}' yet")
        ts: datetime = tx["timestamp"]
        with self._lock:
            features = self.state.features(tx["customer_id"], tx["terminal_id"], tx["amount"], ts)
            self.state.observe(tx["transaction_id"], tx["customer_id"], tx["terminal_id"], tx["amount"], ts)
        row = {
            "prediction_id": time_ordered_id(), "transaction_id": tx["transaction_id"], "customer_id": tx["customer_id"],
            "terminal_id": tx["terminal_id"], "amount": float(tx["amount"]), "tx_time": ts.timestamp(),
            "tx_offset_min": int(ts.utcoffset().total_seconds() // 60),
            **dict(zip(FEATURE_COLUMNS, features)),
        }
        return await self._submit(_Pending(asyncio.get_running_loop().create_future(), "predict", row=row, features=features))

    async def feedback(self, prediction_id: str, is_fraud: bool) -> str:
        import asyncio

        loop = asyncio.get_running_loop()
        return await self._submit(_Pending(loop.create_future(), "feedback", label=(prediction_id, is_fraud)))

    def _process(self, batch: list[_Pending]) -> list[Any]:
        """Score the batch's predictions with one call, write everything in one transaction."""
        import numpy as np

        champion = self.watcher.current  # one model for the whole batch, even if a swap lands now
        predictions = [item for item in batch if item.kind == "predict"]
        if predictions:
            probabilities = champion.score(np.asarray([item.features for item in predictions]))
            now = time.time()
            for item, probability in zip(predictions, probabilities):
                item.row.update(fraud_probability=float(probability), is_fraud=bool(probability >= champion.threshold),
                                model_version=champion.version, created_at=now)
        labels = [item.label for item in batch if item.kind == "feedback"]
        label_outcomes = iter(self.store.write_batch([item.row for item in predictions], labels))
        results: list[Any] = []
        for item in batch:
            if item.kind == "predict":
                row = item.row
                results.append({"prediction_id": row["prediction_id"], "fraud_probability": row["fraud_probability"],
                                "is_fraud": row["is_fraud"], "model_version": row["model_version"]})
                continue
            outcome = next(label_outcomes)
            if isinstance(outcome, Exception):
                results.append(outcome)
                continue
            status, transaction_id = outcome
            with self._lock:
                self.state.label(transaction_id, int(item.label[1]))
            results.append(status)
        return results
