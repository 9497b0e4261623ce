"""The prediction and feedback log (SQLAlchemy Core): SQLite in WAL mode locally, Postgres in production.

The prediction log is also the online feature history: on start the service replays it into its
`FeatureState`, and the monitoring asset reads live features and labels from it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import uuid6
from sqlalchemy.dialects import postgresql, sqlite

from ecosystem_assets.fraud.features import FEATURES

log = logging.getLogger(__name__)
FEATURE_COLUMNS = [f"feature_{name}" for name in FEATURES]  # "amount" is also a raw column
metadata = sa.MetaData()
predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("prediction_id", sa.String(32), primary_key=True),
    # Unique (index below): a client's retry of a transaction returns the original prediction.
    sa.Column("transaction_id", sa.String(128), nullable=False),
    sa.Column("customer_id", sa.String(128), nullable=False),
    sa.Column("terminal_id", sa.String(128), nullable=False),
    sa.Column("amount", sa.Float, nullable=False),
    sa.Column("tx_time", sa.Float, nullable=False, index=True),  # transaction time, epoch seconds
    sa.Column("tx_offset_min", sa.Integer, nullable=False),  # its UTC offset, to rebuild local time
    # One typed column per feature: the monitoring reads a million rows without decoding anything.
    *[sa.Column(column, sa.Float, nullable=False) for column in FEATURE_COLUMNS],
    sa.Column("fraud_probability", sa.Float, nullable=False),
    sa.Column("is_fraud", sa.Boolean, nullable=False),
    # Not indexed: monitoring filters by version within a tx_time range, and every index is one
    # more page written per commit on the serving path.
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
TRANSACTION_ID_UNIQUE = sa.Index("uq_predictions_transaction_id", predictions.c.transaction_id, unique=True)
feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("prediction_id", sa.String(32), sa.ForeignKey("predictions.prediction_id"), primary_key=True),
    sa.Column("is_fraud", sa.Boolean, nullable=False),
    sa.Column("received_at", sa.Float, nullable=False),
)

# Labelled past transactions loaded from the warehouse to warm the feature history of a new
# service (its own prediction log covers only what it has scored). Never part of monitoring.
# Transaction ids are one namespace across both tables: an id is either scored or loaded, never
# both (`add_history` and `write_batch` check the other table inside their write transaction).
history = sa.Table(
    "history",
    metadata,
    sa.Column("transaction_id", sa.String(128), primary_key=True),
    sa.Column("customer_id", sa.String(128), nullable=False),
    sa.Column("terminal_id", sa.String(128), nullable=False),
    sa.Column("amount", sa.Float, nullable=False),
    sa.Column("tx_time", sa.Float, nullable=False, index=True),
    sa.Column("tx_offset_min", sa.Integer, nullable=False),
    sa.Column("is_fraud", sa.Boolean, nullable=True),
)


def time_ordered_id() -> str:
    """A UUIDv7 (RFC 9562, the `uuid6` package) as 32 hex digits. Ids minted together sit together
    in the primary-key index, so inserts append to it instead of touching random pages: with uuid4
    ids an insert of a prediction row cost SQLite about twice as much. (uuid6 keeps ids of one
    process strictly increasing by stepping the millisecond field; nothing reads a time from them.)"""
    return uuid6.uuid7().hex


# What makes two uploads of one transaction "the same": the transaction's body (as for a retried
# /predict) and, for history, its label (as /feedback compares labels). Nothing else is stored.
TRANSACTION_BODY = ("customer_id", "terminal_id", "amount", "tx_time", "tx_offset_min")
HISTORY_FIELDS = (*TRANSACTION_BODY, "is_fraud")
_IN_CHUNK = 1_000  # ids per IN (…) lookup: SQLite allows 32,766 parameters a statement, /history sends up to 50,000
_FINITE = 1e300  # a stored number is readable when it lies in [-_FINITE, _FINITE]: not text, NaN or ±inf


def _label(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _history_values(row: Any) -> tuple[Any, ...]:
    """A history row's HISTORY_FIELDS, comparable between a request and the database."""
    return (*(row[k] for k in TRANSACTION_BODY), _label(row["is_fraud"]))


def _short(transaction_id: str) -> str:
    return repr(transaction_id[:64])


def _chunks(items: list[Any], size: int = _IN_CHUNK) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _readable(*columns: Any) -> Any:
    """SQL: the row's stored values can be read as a transaction. SQLite stores what it is given
    (text in a REAL column, a label "abc"): such a row, or a NaN/infinite number, would stop the
    feature history from loading. Text compares above every number in SQLite, NaN above every
    number in Postgres, so a range test on each number column catches all of them."""
    *numbers, label = columns
    return sa.and_(*(c.between(-_FINITE, _FINITE) for c in numbers), sa.or_(label.is_(None), label.in_([False, True])))


class UnknownPrediction(LookupError):
    pass


class ConflictingFeedback(ValueError):
    pass


class ConflictingTransaction(ValueError):
    """A transaction_id already scored or loaded as history, sent again with a different body, or
    to the other endpoint (HTTP 409)."""


class RejectedRow(ValueError):
    """The database refused this one row (HTTP 422); the rest of its batch is stored."""


class StoreUnavailable(RuntimeError):
    """The database cannot be written now (down, or locked past the wait); HTTP 503."""


class StoreBusy(StoreUnavailable):
    """SQLite is locked by another writer and the caller asked not to wait."""


@dataclass(frozen=True)
class LogSummary:
    predictions: int
    labelled: int
    newest_prediction_at: float | None  # epoch s the newest prediction was made (created_at)
    newest_transaction_time: float | None  # epoch s of the newest scored transaction (tx_time)
    newest_label_at: float | None  # epoch s the newest label arrived


@dataclass(frozen=True)
class WindowMetrics:
    precision: float | None
    recall: float | None
    labelled: int
    predictions: int
    flagged_labelled: int
    frauds_labelled: int
    window_start: float | None
    window_end: float | None


def create_engine(url: str, busy_timeout_s: float = 30.0, pool_size: int = 16) -> sa.Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and NORMAL sync (durable in WAL mode).
    Errors never carry the statement's parameters (customers, terminals, amounts) into messages or
    logs (``hide_parameters``)."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": busy_timeout_s},
            pool_size=pool_size,
            max_overflow=16,
            hide_parameters=True,
        )

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            cursor.close()
    else:
        engine = sa.create_engine(url, pool_size=16, max_overflow=16, pool_pre_ping=True, hide_parameters=True)
    return engine


class _DriverStatement:
    """A statement compiled once for the engine's driver and run on a DBAPI cursor. The serving
    path writes every few hundred microseconds; SQLAlchemy's per-execution work there (connection
    checkout, transaction events, parameter processing) cost more than SQLite's insert itself.
    Only for columns the drivers take as is (strings, floats, integers, booleans)."""

    def __init__(self, statement: Any, dialect: sa.Dialect):
        from operator import itemgetter

        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        keys = list(compiled.positiontup) if compiled.positional else None
        # Positional drivers (sqlite3) take tuples in the statement's order; named ones take the dict.
        self._positional = itemgetter(*keys) if keys and len(keys) > 1 else None
        self._single = keys[0] if keys and len(keys) == 1 else None

    def params(self, values: dict[str, Any]) -> Any:  # a tuple or a dict, as the driver takes them
        if self._positional is not None:
            return self._positional(values)
        return (values[self._single],) if self._single is not None else values


class PredictionStore:
    def __init__(self, url: str):
        if url.startswith("sqlite:///"):
            from pathlib import Path

            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.url = url
        self.engine = create_engine(url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._dbapi: Any = self.engine.dialect.dbapi  # the driver module: its exception classes
        # SQLite writes on the event loop must not wait for a lock (it would stall every request and
        # /healthz): they use this engine, which fails at once, and the caller retries in a thread.
        self._nowait_engine = create_engine(url, busy_timeout_s=0, pool_size=1) if self.is_sqlite else self.engine
        metadata.create_all(self.engine)
        self.unique_transaction_ids = self._ensure_unique_transaction_ids()
        dialect = self.engine.dialect
        self._insert_prediction = _DriverStatement(predictions.insert(), dialect)
        self._insert_feedback = _DriverStatement(feedback.insert(), dialect)
        self._find_prediction = _DriverStatement(
            sa.select(predictions.c.transaction_id, feedback.c.is_fraud, predictions.c.terminal_id, predictions.c.tx_time)
            .select_from(predictions.outerjoin(feedback))
            .where(predictions.c.prediction_id == sa.bindparam("prediction_id")),
            dialect,
        )
        self._loaded_lookups: dict[int, _DriverStatement] = {}  # by number of ids (a power of two)

    def _loaded_lookup(self, count: int) -> tuple[_DriverStatement, int]:
        """The statement finding which of ``count`` transaction ids were loaded as history, compiled
        once per power of two (a batch pads its ids by repeating the last one)."""
        size = 1 << max(count - 1, 0).bit_length()
        if size not in self._loaded_lookups:
            ids: list[Any] = [sa.bindparam(f"id{i}") for i in range(size)]
            self._loaded_lookups[size] = _DriverStatement(
                sa.select(history.c.transaction_id).where(history.c.transaction_id.in_(ids)), self.engine.dialect
            )
        return self._loaded_lookups[size], size

    def _ensure_unique_transaction_ids(self) -> bool:
        """Stores created before transaction ids were unique get the index now; one already holding
        duplicates keeps working (logged), and idempotency then covers only new transactions' retries.
        Returns whether the index is there."""
        try:
            TRANSACTION_ID_UNIQUE.create(self.engine, checkfirst=True)
        except sa.exc.IntegrityError:
            log.error("the prediction log holds repeated transaction ids; retries of those are not detected")
            return False
        return True

    def write_batch(
        self, rows: list[dict[str, Any]], labels: list[tuple[str, bool]], wait: bool = True
    ) -> list[tuple[str, str, str, float] | Exception]:
        """One transaction for a batch: insert predictions, then apply labels in order. Returns, per
        label, (status, transaction_id, terminal_id, tx_time) or the error that label alone met (the rest still commit).
        A database that cannot be written raises `StoreUnavailable` (`StoreBusy`: SQLite is locked
        and ``wait`` is False); a row the database refuses raises the driver's error, and a row
        whose transaction_id was loaded as history (`add_history`) `ConflictingTransaction`: then
        nothing of the batch is stored (`write_each` then isolates it)."""
        try:
            return self._write(rows, labels, self.engine if wait else self._nowait_engine)
        except (sa.exc.DBAPIError, self._dbapi.Error) as exc:
            raw = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps errors met on pool checkout
            if not isinstance(raw, (self._dbapi.OperationalError, self._dbapi.InterfaceError)):
                raise raw from None
            if self.is_sqlite and not wait and "locked" in str(raw):
                raise StoreBusy("the prediction log is locked by another writer") from None
            raise StoreUnavailable(f"the prediction store is unavailable ({type(raw).__name__})") from None

    def write_each(self, rows: list[dict[str, Any]], labels: list[tuple[str, bool]], wait: bool = True) -> tuple[list[Any], list[Any]]:
        """Write every row and label in a transaction of its own, so that one the database refuses
        fails alone. Per row: None (stored), the stored row of the same transaction_id (a retry), or
        the error; per label: as `write_batch`. `StoreBusy` (``wait`` False) is raised, not recorded:
        the caller retries everything in its writer thread, where what was stored here is a retry."""
        row_outcomes: list[Any] = []
        for row in rows:
            try:
                self.write_batch([row], [], wait=wait)
                row_outcomes.append(None)
            except StoreBusy:
                raise
            except (StoreUnavailable, ConflictingTransaction) as exc:  # the latter: the id was loaded as history
                row_outcomes.append(exc)
            except self._dbapi.IntegrityError as exc:
                original = self.find_transaction(row["transaction_id"])
                row_outcomes.append(original or RejectedRow(f"the database refused the transaction ({type(exc).__name__})"))
            except Exception as exc:  # noqa: BLE001 — drivers also raise plain errors (psycopg2: ValueError on NUL)
                row_outcomes.append(RejectedRow(f"the database refused the transaction ({type(exc).__name__})"))
        label_outcomes: list[Any] = []
        for label in labels:
            try:
                label_outcomes += self.write_batch([], [label], wait=wait)
            except StoreBusy:
                raise
            except StoreUnavailable as exc:
                label_outcomes.append(exc)
            except Exception as exc:  # noqa: BLE001
                label_outcomes.append(RejectedRow(f"the database refused the label ({type(exc).__name__})"))
        return row_outcomes, label_outcomes

    def find_transaction(self, transaction_id: str) -> dict[str, Any] | None:
        """The stored prediction of ``transaction_id`` (body and answer), or None."""
        p = predictions.c
        query = sa.select(
            p.prediction_id,
            p.transaction_id,
            p.customer_id,
            p.terminal_id,
            p.amount,
            p.tx_time,
            p.tx_offset_min,
            p.fraud_probability,
            p.is_fraud,
            p.model_version,
        ).where(p.transaction_id == transaction_id)
        with self.engine.connect() as conn:
            found = conn.execute(query).first()
        return dict(found._mapping) if found else None

    def _write(
        self, rows: list[dict[str, Any]], labels: list[tuple[str, bool]], engine: sa.Engine
    ) -> list[tuple[str, str, str, float] | Exception]:
        outcomes: list[tuple[str, str, str, float] | Exception] = []
        connection = engine.raw_connection()  # pooled; Postgres connections are pinged on checkout
        try:
            cursor = connection.cursor()
            if rows:
                cursor.executemany(self._insert_prediction.sql, [self._insert_prediction.params(r) for r in rows])
                self._refuse_loaded(cursor, [r["transaction_id"] for r in rows])
            # prediction_id → [transaction_id, label, terminal_id, tx_time], this batch's labels included
            known: dict[str, list[Any] | None] = {}
            fresh = []
            for prediction_id, is_fraud in labels:
                if prediction_id not in known:
                    cursor.execute(self._find_prediction.sql, self._find_prediction.params({"prediction_id": prediction_id}))
                    found = cursor.fetchone()
                    known[prediction_id] = list(found) if found else None
                entry = known[prediction_id]
                if entry is None:
                    outcomes.append(UnknownPrediction(prediction_id))
                elif entry[1] is None:
                    entry[1] = bool(is_fraud)
                    fresh.append({"prediction_id": prediction_id, "is_fraud": bool(is_fraud), "received_at": time.time()})
                    outcomes.append(("recorded", entry[0], entry[2], entry[3]))
                elif bool(entry[1]) != bool(is_fraud):
                    outcomes.append(ConflictingFeedback(f"prediction {prediction_id} is already labelled is_fraud={bool(entry[1])}"))
                else:
                    outcomes.append(("unchanged", entry[0], entry[2], entry[3]))
            if fresh:
                cursor.executemany(self._insert_feedback.sql, [self._insert_feedback.params(f) for f in fresh])
            cursor.close()
            connection.commit()
        except BaseException:
            with contextlib.suppress(Exception):  # a dead connection cannot roll back; the original error matters
                connection.rollback()
            raise
        finally:
            connection.close()  # back to the pool
        return outcomes

    def _refuse_loaded(self, cursor: Any, transaction_ids: list[str]) -> None:
        """Raise `ConflictingTransaction` when one of the ids just inserted was loaded as history.
        Checked after the insert, inside its transaction: on SQLite the insert holds the write lock,
        so an upload of history cannot commit in between; on Postgres the upload takes a SHARE lock
        on predictions before it checks them, which waits for this transaction (holding ROW
        EXCLUSIVE since its insert) and blocks inserts until it commits, so one of the two sees the
        other whichever order they run in."""
        for chunk in _chunks(transaction_ids):
            statement, size = self._loaded_lookup(len(chunk))
            padded = chunk + [chunk[-1]] * (size - len(chunk))
            cursor.execute(statement.sql, statement.params({f"id{i}": t for i, t in enumerate(padded)}))
            found = cursor.fetchone()
            if found is not None:
                raise ConflictingTransaction(f"transaction_id {_short(found[0])} was loaded as history (POST /history): it is not scored")

    def window_metrics(self, window_hours: float, end: float, model_version: str | None = None) -> WindowMetrics:
        """Precision and recall over labelled predictions with end − ``window_hours`` ≤ transaction
        time < ``end`` (epoch seconds: the evaluation time), of ``model_version`` or of all versions.
        Rows from ``end`` on are outside, however many there are: a far-future row or today's traffic
        must not move a replayed day's window. Half-open like a daily partition: a day's window holds
        its transactions at 00:00:00."""
        overall, serving = self.window_summary(window_hours, end, model_version)
        return overall if model_version is None else serving

    def window_summary(self, window_hours: float, end: float, model_version: str | None) -> tuple[WindowMetrics, WindowMetrics]:
        """(all versions, ``model_version``) over the window of `window_metrics`, in one pass: a
        query grouped by version (a million rows' join with their labels is the cost)."""
        start = end - window_hours * 3600
        p, f = predictions.c, feedback.c
        query = (
            sa.select(
                p.model_version,
                sa.func.count(),
                sa.func.count(f.is_fraud),
                sa.func.sum(sa.case((sa.and_(p.is_fraud, f.is_fraud.is_not(None)), 1), else_=0)),
                sa.func.sum(sa.case((sa.and_(p.is_fraud, f.is_fraud), 1), else_=0)),
                sa.func.sum(sa.case((f.is_fraud, 1), else_=0)),
            )
            .select_from(predictions.outerjoin(feedback))
            .where(p.tx_time >= start, p.tx_time < end)
            .group_by(p.model_version)
        )
        with self.engine.connect() as conn:
            groups = {version: [int(v or 0) for v in counts] for version, *counts in conn.execute(query)}
        total = [sum(column) for column in zip(*groups.values(), strict=True)] if groups else [0] * 5

        def metrics(counts: list[int]) -> WindowMetrics:
            predictions_, labelled, flagged, tp, frauds = counts
            return WindowMetrics(
                precision=tp / flagged if flagged else None,
                recall=tp / frauds if frauds else None,
                labelled=labelled,
                predictions=predictions_,
                flagged_labelled=flagged,
                frauds_labelled=frauds,
                window_start=start,
                window_end=end,
            )

        return metrics(total), metrics(groups.get(model_version, [0] * 5) if model_version is not None else total)

    def add_history(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Insert labelled past transactions (HISTORY_FIELDS and transaction_id) in one transaction;
        returns those that were new, each once. Transaction ids are one namespace with the prediction
        log's. Per transaction_id:

        - sent twice in ``rows``: counted once when both have the same HISTORY_FIELDS, else
          `ConflictingTransaction`;
        - already loaded (earlier, or by a concurrent upload that committed first): skipped when its
          HISTORY_FIELDS are the same, else `ConflictingTransaction` — a loaded row is never changed,
          a late label included;
        - already scored (/predict): skipped when the body (TRANSACTION_BODY) is the same and the
          upload has no label or the prediction's own label, else `ConflictingTransaction` — a
          scored transaction's label goes to /feedback, by its prediction_id.

        On any conflict nothing of ``rows`` is stored. A database that cannot be written raises
        `StoreUnavailable`; any other refusal `RejectedRow`; neither message holds row values."""
        unique: dict[str, dict[str, Any]] = {}
        for r in rows:
            first = unique.setdefault(r["transaction_id"], r)
            if first is not r and _history_values(first) != _history_values(r):
                raise ConflictingTransaction(
                    f"transaction_id {_short(r['transaction_id'])} is sent more than once in this request, with different values"
                )
        if not unique:
            return []
        # In id order: two uploads inserting the same new ids wait for each other in one order (Postgres).
        ordered = [unique[t] for t in sorted(unique)]
        try:
            with self.engine.begin() as conn:
                fresh = self._add_history(conn, ordered)
        except (sa.exc.DBAPIError, self._dbapi.Error) as exc:
            raw = getattr(exc, "orig", None) or exc
            if isinstance(raw, (self._dbapi.OperationalError, self._dbapi.InterfaceError)):
                raise StoreUnavailable(f"the prediction store is unavailable ({type(raw).__name__})") from None
            raise RejectedRow(f"the database refused the history ({type(raw).__name__})") from None
        out = []
        for r in rows:  # in the request's order, the first of repeats
            if r["transaction_id"] in fresh:
                fresh.discard(r["transaction_id"])
                out.append(r)
        return out

    def _add_history(self, conn: sa.Connection, rows: list[dict[str, Any]]) -> set[str]:
        """`add_history` inside its transaction; the ids it stored."""
        h, p, f = history.c, predictions.c, feedback.c
        dialect_insert = (sqlite.insert if self.is_sqlite else postgresql.insert)(history)
        insert = dialect_insert.on_conflict_do_nothing(index_elements=[h.transaction_id]).returning(h.transaction_id)
        by_id = {r["transaction_id"]: r for r in rows}

        def known(ids: list[str]) -> set[str]:
            """Those of ``ids`` already loaded, when they are the same; `ConflictingTransaction` if not."""
            found_ids = set()
            for chunk in _chunks(ids):
                stored = sa.select(h.transaction_id, *[h[k] for k in HISTORY_FIELDS]).where(h.transaction_id.in_(chunk))
                for found in conn.execute(stored).mappings():
                    if _history_values(found) != _history_values(by_id[found["transaction_id"]]):
                        raise ConflictingTransaction(
                            f"transaction_id {_short(found['transaction_id'])} was already loaded with different values"
                        )
                    found_ids.add(found["transaction_id"])
            return found_ids

        loaded = known(list(by_id))  # a repeated upload (every replica warming up) stops here
        values = [{"transaction_id": t, **{k: r[k] for k in HISTORY_FIELDS}} for t, r in by_id.items() if t not in loaded]
        inserted: set[str] = set()
        for chunk in _chunks(values):
            # ON CONFLICT DO NOTHING: an id loaded meanwhile by a concurrent upload is compared below,
            # never an IntegrityError (on Postgres the insert waits for that upload to finish).
            inserted.update(conn.execute(insert, chunk).scalars())
        known([v["transaction_id"] for v in values if v["transaction_id"] not in inserted])
        if not inserted:
            return inserted
        if not self.is_sqlite:
            # After the insert, so that the lock is held only for the check and the commit (see
            # `_refuse_loaded`); SQLite needs none: the insert took the database's write lock.
            conn.execute(sa.text("LOCK TABLE predictions IN SHARE MODE"))
        scored_ids = set()
        for chunk in _chunks(sorted(inserted)):
            scored = (
                sa.select(p.prediction_id, p.transaction_id, *[p[k] for k in TRANSACTION_BODY], f.is_fraud)
                .select_from(predictions.outerjoin(feedback))
                .where(p.transaction_id.in_(chunk))
            )
            for found in conn.execute(scored).mappings():
                new = by_id[found["transaction_id"]]
                label = _label(new["is_fraud"])
                if any(found[k] != new[k] for k in TRANSACTION_BODY):
                    problem = " with a different body"
                elif label is not None and label != _label(found["is_fraud"]):
                    problem = ", unlabelled" if found["is_fraud"] is None else f", labelled is_fraud={bool(found['is_fraud'])}"
                    problem += ": its label goes to /feedback"
                else:
                    scored_ids.add(found["transaction_id"])
                    continue
                raise ConflictingTransaction(
                    f"transaction_id {_short(found['transaction_id'])} was already scored (prediction {found['prediction_id']}){problem}"
                )
        for chunk in _chunks(sorted(scored_ids)):  # the same transaction as a prediction: stored there only
            conn.execute(history.delete().where(h.transaction_id.in_(chunk)))
        return inserted - scored_ids

    def latest_seen_time(self) -> float | None:
        """Newest transaction time in the prediction log or the loaded history (unreadable stored
        times, see `feature_history`, left out)."""
        with self.engine.connect() as conn:
            times = [
                conn.execute(sa.select(sa.func.max(t.c.tx_time)).where(t.c.tx_time.between(-_FINITE, _FINITE))).scalar()
                for t in (predictions, history)
            ]
        return max((t for t in times if t is not None), default=None)

    def feature_history(self, since: float) -> list[dict[str, Any]]:
        """Everything the feature windows may need since ``since``: loaded history and scored
        predictions with their labels, oldest first, each transaction_id once (a scored transaction
        over a loaded one: stores written before ids were one namespace may hold both), so that the
        in-process and the Redis feature stores count the same. Rows whose values cannot be read
        (text in a number column, NaN, infinity, a label that is not a boolean: SQLite stores what
        it is given) are skipped, with one warning that counts them and shows none of their values."""
        p, f, h = predictions.c, feedback.c, history.c

        def columns(t: Any, label: Any, loaded: bool) -> list[Any]:
            readable = _readable(t.amount, t.tx_time, t.tx_offset_min, label)
            values = [t.transaction_id, t.customer_id, t.terminal_id, t.amount, t.tx_time, t.tx_offset_min, label]
            return [*values, sa.literal(loaded).label("loaded"), readable.label("readable")]

        scored = sa.select(*columns(p, f.is_fraud, False)).select_from(predictions.outerjoin(feedback)).where(p.tx_time >= since)
        loaded = sa.select(*columns(h, h.is_fraud, True)).where(h.tx_time >= since)
        if self.unique_transaction_ids:  # an indexed lookup per loaded row (without the index: below)
            loaded = loaded.where(~sa.exists().where(p.transaction_id == h.transaction_id))
        query = sa.union_all(loaded, scored).order_by("tx_time")
        keys = ("transaction_id", "customer_id", "terminal_id", "amount", "tx_time", "tx_offset_min", "is_fraud")
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        readable = [row for row in rows if row[-1]]
        if len(readable) < len(rows):
            log.warning("feature history: skipped %d stored transactions whose values cannot be read", len(rows) - len(readable))
        if not self.unique_transaction_ids:
            # A log that holds repeated transaction ids (so it has no unique index): each id once,
            # as its first prediction in time order, else as history.
            scored_ids = {row[0] for row in readable if not row[-2]}
            seen: set[str] = set()
            kept = []
            for row in readable:
                if row[0] not in seen and not (row[-2] and row[0] in scored_ids):
                    seen.add(row[0])
                    kept.append(row)
            if len(kept) < len(readable):
                log.warning("feature history: %d stored transactions repeat a transaction_id; counted once", len(readable) - len(kept))
            readable = kept
        return [dict(zip(keys, row, strict=False)) for row in readable]

    def live_features(self, window_hours: float, end: float, model_version: str | None = None) -> Any:  # -> pd.DataFrame
        """Features (FEATURES columns) of the traffic of ``model_version`` (all versions when None)
        with end − ``window_hours`` ≤ transaction time < ``end`` (epoch seconds), for drift: the
        window of `window_metrics`. Read through the driver's cursor straight into a float array:
        pandas.read_sql over SQLAlchemy rows took 3× as long for a million rows."""
        import numpy as np
        import pandas as pd

        p = predictions.c
        conditions = [p.tx_time >= sa.bindparam("start"), p.tx_time < sa.bindparam("end")]
        if model_version is not None:
            conditions.append(p.model_version == sa.bindparam("version"))
        statement = _DriverStatement(sa.select(*[p[c] for c in FEATURE_COLUMNS]).where(*conditions), self.engine.dialect)
        values = {"start": end - window_hours * 3600, "end": end, "version": model_version}
        connection = self.engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute(statement.sql, statement.params(values))
            rows = cursor.fetchall()
            cursor.close()
        finally:
            connection.close()
        return pd.DataFrame(np.array(rows, dtype=np.float64).reshape(len(rows), len(FEATURES)), columns=FEATURES)

    def log_summary(self) -> LogSummary:
        """How much the prediction log holds: predictions, labels, the newest prediction (its
        creation and its transaction time). What an observation of `fraud_prediction_log` records."""
        p, f = predictions.c, feedback.c
        with self.engine.connect() as conn:
            scored = conn.execute(sa.select(sa.func.count(), sa.func.max(p.created_at), sa.func.max(p.tx_time))).one()
            labels = conn.execute(sa.select(sa.func.count(), sa.func.max(f.received_at))).one()
        return LogSummary(int(scored[0]), int(labels[0]), scored[1], scored[2], labels[1])
