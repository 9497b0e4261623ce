"""Scoring with the live champion (see champion.py): online features, micro-batched scoring and
group-committed writes to the prediction log."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from ecosystem_assets.fraud.features import HISTORY_KEEP_S, FeatureState
from ecosystem_assets.fraud.model import MODEL_NAME
from ecosystem_assets.serving.champion import CHAMPION_ALIAS, ChampionWatcher
from ecosystem_assets.serving.store import FEATURE_COLUMNS, PredictionStore, time_ordered_id

log = logging.getLogger(__name__)


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
        self.newest_seen: float | None = None  # newest transaction time in the feature history

    def oldest_accepted(self) -> float | None:
        """The oldest transaction time (epoch s) the history can still place: older ones would change
        no feature (the windows reach back HISTORY_KEEP_S from the newest transaction)."""
        return None if self.newest_seen is None else self.newest_seen - HISTORY_KEEP_S

    def _seen(self, t: float) -> None:
        if self.newest_seen is None or t > self.newest_seen:
            self.newest_seen = t

    def warm_up(self) -> int:
        """Rebuild the feature history from the store (what the windows can still see)."""
        latest = self.store.latest_seen_time()
        if latest is None:
            return 0
        rows = self.store.feature_history(latest - HISTORY_KEEP_S)
        self.observe_history(rows)
        return len(rows)

    def observe_history(self, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            for r in rows:
                ts = datetime.fromtimestamp(r["tx_time"], timezone(timedelta(minutes=r["tx_offset_min"])))
                self.state.observe(r["transaction_id"], r["customer_id"], r["terminal_id"], r["amount"], ts)
                self._seen(r["tx_time"])
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
            self._seen(ts.timestamp())
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
