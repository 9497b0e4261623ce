"""Scoring with the live champion (see champion.py): online features, micro-batched scoring and
group-committed writes to the prediction log."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ecosystem_assets.fraud.features import HISTORY_KEEP_S
from ecosystem_assets.serving.champion import ChampionWatcher
from ecosystem_assets.serving.feature_store import InProcessFeatures, Label, OnlineFeatures, Transaction, history_entry
from ecosystem_assets.serving.store import (
    FEATURE_COLUMNS,
    ConflictingTransaction,
    PredictionStore,
    StoreBusy,
    StoreUnavailable,
    time_ordered_id,
)

log = logging.getLogger(__name__)
# Rows stored later than this after the service's clock (only possible before input rules existed,
# or by writing to the database directly) are left out of the feature history at start.
WARM_UP_FUTURE_LIMIT_S = 86_400.0


class NoChampion(RuntimeError):
    pass


@dataclass
class _Pending:
    future: Any  # asyncio.Future resolved by the batch loop
    kind: str  # "predict" | "feedback"
    row: dict[str, Any] = field(default_factory=dict)  # "predict": the prediction row being built
    timestamp: datetime = datetime.min  # "predict": the transaction's time, with its offset
    label: tuple[str, bool] = ("", False)  # "feedback": (prediction_id, is_fraud)


def _answer(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "prediction_id": row["prediction_id"],
        "fraud_probability": float(row["fraud_probability"]),
        "is_fraud": bool(row["is_fraud"]),
        "model_version": str(row["model_version"]),
    }


_BODY = ("customer_id", "terminal_id", "amount", "tx_time", "tx_offset_min")


def _same_body(stored: dict[str, Any], row: dict[str, Any]) -> bool:
    """The stored prediction's transaction has this request's body: the request is a retry."""
    return all(stored[k] == row[k] for k in _BODY)


class Scorer:
    """Features from the online history, probability from the champion, one row in the log.

    Requests are answered in micro-batches: a request waits in a queue; a batch loop takes
    everything queued, computes the features in arrival order, scores them with one call of the
    champion and writes them in one transaction (group commit): on the event loop for SQLite, in
    one writer thread for a networked database (or while SQLite is locked by another writer). Under
    load the batches grow by themselves, so the model's per-call overhead and the commit are
    shared; a request is answered only after its row is committed.

    The feature history changes only for what was committed: a batch's transactions are observed
    provisionally (a transaction sees the earlier ones of its batch) and forgotten again if the
    write fails. A batch that fails for one bad row is written again row by row, so only that row
    fails. A transaction_id already stored answers with the original prediction (or 409 when the
    body differs): the database's unique index decides, so retries need no extra lookup.
    """

    def __init__(
        self,
        store: PredictionStore,
        watcher: ChampionWatcher,
        max_batch: int = 512,
        write_inline: bool | None = None,
        features: OnlineFeatures | None = None,
    ):
        self.store = store
        self.write_inline = store.is_sqlite if write_inline is None else write_inline
        self.watcher = watcher
        self.features: OnlineFeatures = features if features is not None else InProcessFeatures()
        self.max_batch = max_batch
        self._lock = threading.Lock()  # a batch's observe-write-keep against /history (a worker thread)
        self._queue: Any = None
        self._executor: Any = None

    def oldest_accepted(self) -> float | None:
        """The oldest transaction time (epoch s) the history can still place: older ones would change
        no feature (the windows reach back HISTORY_KEEP_S from the newest transaction)."""
        newest = self.features.newest_seen
        return None if newest is None else newest - HISTORY_KEEP_S

    def warm_up(self) -> int:
        """Rebuild the feature history from the store (what the windows can still see): always for
        an in-process one, only when empty for a shared one (Redis). A feature store that cannot be
        reached at start leaves the service running and not ready (/readyz names it)."""
        try:
            if not self.features.warm_up_needed:
                self.features.ping()  # a shared state's newest time: the input rules' anchor
                return 0
        except StoreUnavailable as exc:
            log.warning("feature history not checked at start: %s", exc)
            return 0
        latest = self.store.latest_seen_time()
        if latest is None:
            return 0
        until = time.time() + WARM_UP_FUTURE_LIMIT_S
        rows = self.store.feature_history(min(latest, until) - HISTORY_KEEP_S)
        kept = [r for r in rows if r["tx_time"] <= until]
        if len(kept) < len(rows):
            log.warning("feature history: left out %d stored transactions dated more than a day ahead of the clock", len(rows) - len(kept))
        self.observe_history(kept)
        return len(kept)

    def observe_history(self, rows: list[dict[str, Any]]) -> None:
        entries = []
        for r in rows:
            entry = history_entry(r)
            if entry is None:  # a row no input rule would accept today
                log.warning("feature history: left out transaction %r (time out of range or unreadable values)", r["transaction_id"][:64])
            else:
                entries.append(entry)
        with self._lock:
            self.features.load(entries)

    def load_history(self, transactions: list[dict[str, Any]]) -> int:
        """Warm the feature history with labelled past transactions (stored, then observed)."""
        rows = [
            {
                "transaction_id": t["transaction_id"],
                "customer_id": t["customer_id"],
                "terminal_id": t["terminal_id"],
                "amount": float(t["amount"]),
                "tx_time": t["timestamp"].timestamp(),
                "tx_offset_min": int(t["timestamp"].utcoffset().total_seconds() // 60),
                "is_fraud": t.get("is_fraud"),
            }
            for t in transactions
        ]
        fresh = self.store.add_history(rows)
        self.observe_history(fresh)  # a repeated upload must not count transactions twice
        return len(fresh)

    def _writer(self) -> Any:
        """The one writer thread (lazily: SQLite uses it only while another writer holds the lock)."""
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            from threadpoolctl import threadpool_limits

            self._executor = ThreadPoolExecutor(1, thread_name_prefix="scorer", initializer=threadpool_limits, initargs=(1,))
        return self._executor

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
                    try:
                        outcomes = self._process(batch, wait=False)
                    except StoreBusy:  # another writer holds SQLite: wait for it off the event loop
                        outcomes = await loop.run_in_executor(self._writer(), self._process, batch)
                else:
                    outcomes = await loop.run_in_executor(self._writer(), self._process, batch)
            except Exception as exc:  # noqa: BLE001 — the whole batch failed (e.g. the database is down)
                log.warning("a batch of %d requests failed: %s", len(batch), type(exc).__name__)
                outcomes = [exc] * len(batch)
            for item, outcome in zip(batch, outcomes, strict=True):
                if item.future.done():
                    continue
                if isinstance(outcome, Exception):
                    item.future.set_exception(outcome)
                else:
                    item.future.set_result(outcome)

    def _submit(self, item: _Pending) -> Any:
        self._queue.put_nowait(item)
        return item.future

    async def predict(self, tx: dict[str, Any]) -> dict[str, Any]:
        import asyncio

        if self.watcher.current is None:
            raise NoChampion(self.watcher.why_no_model())
        ts: datetime = tx["timestamp"]
        offset = ts.utcoffset()
        if offset is None:  # api_models refuses naive times; a caller that skipped it must not store one
            raise ValueError("the transaction timestamp has no UTC offset")
        row = {
            "prediction_id": time_ordered_id(),
            "transaction_id": tx["transaction_id"],
            "customer_id": tx["customer_id"],
            "terminal_id": tx["terminal_id"],
            "amount": float(tx["amount"]),
            "tx_time": ts.timestamp(),
            "tx_offset_min": int(offset.total_seconds() // 60),
        }
        return await self._submit(_Pending(asyncio.get_running_loop().create_future(), "predict", row=row, timestamp=ts))

    async def feedback(self, prediction_id: str, is_fraud: bool) -> str:
        import asyncio

        loop = asyncio.get_running_loop()
        return await self._submit(_Pending(loop.create_future(), "feedback", label=(prediction_id, is_fraud)))

    def _observe(self, items: list[_Pending]) -> Any:
        """Features of each transaction in arrival order, observing it provisionally; returns the
        token that `forget`s or `keep`s the observations."""
        txs = [
            Transaction(i.row["transaction_id"], i.row["customer_id"], i.row["terminal_id"], i.row["amount"], i.timestamp) for i in items
        ]
        rows, observed = self.features.observe(txs)
        for item, features in zip(items, rows, strict=True):
            item.row.update(zip(FEATURE_COLUMNS, features, strict=True))
        return observed

    def _score(self, items: list[_Pending]) -> None:
        import numpy as np

        champion = self.watcher.current  # one model for the whole batch, even if a swap lands now
        if champion is None:  # predict() refuses requests before the first champion; the watcher never unsets it
            raise NoChampion(self.watcher.why_no_model())
        probabilities = champion.score(np.asarray([[item.row[c] for c in FEATURE_COLUMNS] for item in items]))
        now = time.time()
        for item, probability in zip(items, probabilities, strict=True):
            item.row.update(
                fraud_probability=float(probability),
                is_fraud=bool(probability >= champion.threshold),
                model_version=champion.version,
                created_at=now,
            )

    def _process(self, batch: list[_Pending], wait: bool = True) -> list[Any]:
        """Score the batch's predictions with one call, write everything in one transaction; when
        the database refuses the batch, write its requests one by one."""
        predictions = [item for item in batch if item.kind == "predict"]
        labels = [item.label for item in batch if item.kind == "feedback"]
        with self._lock:
            observed = self._observe(predictions)  # FeatureStoreUnavailable: the whole batch answers 503
            try:
                if predictions:
                    self._score(predictions)
                label_outcomes = self.store.write_batch([item.row for item in predictions], labels, wait=wait)
            except BaseException as exc:  # noqa: BLE001 — undone here, re-raised below unless a row was refused
                self.features.forget(observed)
                failed: BaseException | None = exc
            else:
                self.features.keep(observed)
                failed = None
        if failed is None:
            return self._results(batch, [None] * len(predictions), label_outcomes)
        if isinstance(failed, StoreUnavailable) or not isinstance(failed, Exception):
            raise failed
        return self._process_each(batch, wait)  # a row the database refused, or a retried transaction id

    def _process_each(self, batch: list[_Pending], wait: bool = True) -> list[Any]:
        """Each request in a transaction of its own (after a batch failed): one bad row fails alone."""
        predictions = [item for item in batch if item.kind == "predict"]
        labels = [item.label for item in batch if item.kind == "feedback"]
        row_outcomes = []
        with self._lock:
            for item in predictions:
                try:
                    observed = self._observe([item])
                except StoreUnavailable as exc:  # the feature store: this request fails, the next may pass
                    row_outcomes.append(exc)
                    continue
                try:
                    self._score([item])
                    outcome = self.store.write_each([item.row], [], wait=wait)[0][0]
                except StoreBusy:  # SQLite got locked meanwhile: the whole batch goes to the writer thread
                    self.features.forget(observed)
                    raise
                except Exception as exc:  # noqa: BLE001 — this request alone fails
                    outcome = exc
                if outcome is None:
                    self.features.keep(observed)
                else:
                    retry = isinstance(outcome, dict) and _same_body(outcome, item.row)
                    self.features.forget(observed, stored=[retry])
                row_outcomes.append(outcome)
        _, label_outcomes = self.store.write_each([], labels, wait=wait)
        return self._results(batch, row_outcomes, label_outcomes)

    def _results(self, batch: list[_Pending], row_outcomes: list[Any], label_outcomes: list[Any]) -> list[Any]:
        """Per request: its answer or its error. Stored labels update the feature history."""
        rows, labels = iter(row_outcomes), iter(label_outcomes)
        results: list[Any] = []
        stored: list[Label] = []
        for item in batch:
            if item.kind == "predict":
                outcome = next(rows)
                if outcome is None:
                    results.append(_answer(item.row))
                elif isinstance(outcome, dict):  # the transaction_id was stored before: a retry?
                    same = _same_body(outcome, item.row)
                    results.append(
                        _answer(outcome)
                        if same
                        else ConflictingTransaction(
                            f"transaction_id {item.row['transaction_id'][:64]!r} was already scored with a different body "
                            f"(prediction {outcome['prediction_id']})"
                        )
                    )
                else:
                    results.append(outcome)
                continue
            outcome = next(labels)
            if isinstance(outcome, Exception):
                results.append(outcome)
                continue
            status, transaction_id, terminal_id, tx_time = outcome
            stored.append(Label(transaction_id, terminal_id, tx_time, bool(item.label[1])))
            results.append(status)
        if stored:
            try:
                with self._lock:
                    self.features.label(stored)
            except StoreUnavailable:
                # The labels are committed in the log; a shared state that missed them counts these
                # transactions as genuine in terminal risk, as for a label that has not arrived yet.
                log.warning("the feature store missed %d stored labels", len(stored))
        return results
