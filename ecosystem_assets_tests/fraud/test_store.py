"""The prediction/feedback store on SQLite (WAL) and on a real Postgres server started by the tests."""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from ecosystem_assets.fraud.features import FEATURES
from ecosystem_assets.serving.store import (
    FEATURE_COLUMNS,
    ConflictingFeedback,
    ConflictingTransaction,
    PredictionStore,
    RejectedRow,
    UnknownPrediction,
    create_engine,
    history,
    predictions,
)
from ecosystem_assets_tests.fraud.helpers import logged
from ecosystem_assets_tests.waiting import wait_until


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path: Path):
    if request.param == "sqlite":
        return PredictionStore(f"sqlite:///{tmp_path / 'service.db'}")
    return PredictionStore(request.getfixturevalue("postgres_url"))


def row(pid: str, tx_time: float, decision: bool, version: str = "1") -> dict:
    return {
        "prediction_id": pid,
        "transaction_id": f"tx-{pid}",
        "customer_id": "C1",
        "terminal_id": "T1",
        "amount": 12.5,
        "tx_time": tx_time,
        "tx_offset_min": 60,
        **{c: float(i) for i, c in enumerate(FEATURE_COLUMNS)},
        "fraud_probability": 0.9 if decision else 0.1,
        "is_fraud": decision,
        "model_version": version,
        "created_at": tx_time,
    }


def test_batches_labels_and_window_metrics(store):
    day = 86_400.0
    store.write_batch(
        [row("a", 10 * day, True), row("b", 10 * day + 60, True), row("c", 10 * day + 120, False), row("old", 8 * day, True)], []
    )
    outcomes = store.write_batch(
        [row("d", 10 * day + 180, False, version="2")], [("a", True), ("b", False), ("c", True), ("a", True), ("zzz", True), ("b", True)]
    )
    # (status, transaction, terminal, time): where the label lands in the online feature state
    a, b, c = ("tx-a", "T1", 10 * day), ("tx-b", "T1", 10 * day + 60), ("tx-c", "T1", 10 * day + 120)
    assert outcomes[:4] == [("recorded", *a), ("recorded", *b), ("recorded", *c), ("unchanged", *a)]
    assert isinstance(outcomes[4], UnknownPrediction) and isinstance(outcomes[5], ConflictingFeedback)
    assert logged(store) == (5, 3)

    end = 10 * day + 3600  # "old" is outside the 24 h before it
    v1 = store.window_metrics(24, end, model_version="1")
    assert (v1.predictions, v1.labelled, v1.flagged_labelled) == (3, 3, 2)
    assert v1.precision == 0.5 and v1.recall == 0.5
    assert store.window_metrics(24, end).predictions == 4 and store.window_metrics(24 * 5, end).predictions == 5

    live = store.live_features(24, end)
    assert list(live.columns) == FEATURES and len(live) == 4
    assert live["amount"].tolist() == [0.0] * 4  # the feature column, not the raw amount
    assert len(store.live_features(24, end, model_version="1")) == 3 and len(store.live_features(24, end, model_version="2")) == 1
    assert store.live_features(24, end, model_version="9").shape == (0, len(FEATURES))
    overall, v2 = store.window_summary(24, end, "2")
    assert (overall.predictions, v2.predictions, v2.labelled) == (4, 1, 0) and v2.precision is None


def test_the_window_ends_at_the_evaluation_time_not_at_the_newest_row(store):
    """Far-future rows and later traffic (today's requests during a replay of past days) are outside
    a window that ends earlier, however many there are. Half-open like a daily partition: a day's
    window holds the transactions at its first second, not those at the next day's."""
    day = 86_400.0
    end = 20 * day
    store.write_batch(
        [
            row("before", end - day - 1, True),
            row("start", end - day, True),
            row("in", end - 60, False),
            row("last", end - 0.5, True),
            row("end", end, True),
            row("today", 100 * day, True),
            row("future", 10_000 * day, True),
        ],
        [("start", True), ("in", False), ("last", False), ("end", False), ("today", False), ("future", False)],
    )
    window = store.window_metrics(24, end)
    assert (window.predictions, window.labelled, window.flagged_labelled) == (3, 3, 2)
    assert window.precision == 0.5 and (window.window_start, window.window_end) == (end - day, end)
    assert len(store.live_features(24, end)) == 3
    assert store.window_metrics(24, 101 * day).predictions == 1  # the same store judged at a later time
    assert store.window_metrics(24, 30 * day).predictions == 0 and store.window_metrics(24, 30 * day).precision is None
    assert len(store.live_features(24, 30 * day)) == 0


def test_history_is_loaded_once_and_joins_the_feature_history(store):
    history = [
        {
            "transaction_id": f"h{i}",
            "customer_id": "C1",
            "terminal_id": "T1",
            "amount": 1.0,
            "tx_time": 100.0 + i,
            "tx_offset_min": 0,
            "is_fraud": i % 2 == 0,
        }
        for i in range(5)
    ]
    assert len(store.add_history(history)) == 5 and store.add_history(history) == []
    store.write_batch([row("p", 200.0, False)], [("p", True)])
    seen = store.feature_history(since=0)
    assert [r["transaction_id"] for r in seen] == ["h0", "h1", "h2", "h3", "h4", "tx-p"]
    assert seen[-1]["is_fraud"] is True and store.latest_seen_time() == 200.0


def test_a_failed_batch_commits_nothing_and_the_store_goes_on(store):
    store.write_batch([row("a", 100.0, True)], [])
    with pytest.raises(store.engine.dialect.dbapi.IntegrityError):  # the driver's own error (DBAPI)
        store.write_batch([row("b", 101.0, False), row("a", 102.0, False)], [("a", True)])
    assert logged(store) == (1, 0)  # neither "b" nor the label: one transaction
    assert store.write_batch([row("c", 103.0, False)], [("a", False)]) == [("recorded", "tx-a", "T1", 100.0)]
    assert logged(store) == (2, 1)


def past(transaction_id: str, tx_time: float = 100.0, **changes) -> dict:
    """A /history row as the scorer hands it to the store."""
    return {
        "transaction_id": transaction_id,
        "customer_id": "C1",
        "terminal_id": "T1",
        "amount": 12.5,
        "tx_time": tx_time,
        "tx_offset_min": 60,
        "is_fraud": False,
        **changes,
    }


def stored_ids(store: PredictionStore, table: sa.Table) -> list[str]:
    with store.engine.connect() as conn:
        return sorted(conn.execute(sa.select(table.c.transaction_id)).scalars())


def test_a_transaction_repeated_in_one_upload_counts_once_or_is_refused(store):
    """The same id twice in one request: once when the two are the same (the 500 was a UNIQUE
    violation), refused when they differ in anything stored, the label included; a refused
    request stores nothing."""
    rows = [past("h1"), past("h2"), dict(past("h1"))]
    assert store.add_history(rows) == [rows[0], rows[1]]
    assert stored_ids(store, history) == ["h1", "h2"]
    for changed in ({"amount": 13.0}, {"is_fraud": True}, {"is_fraud": None}, {"tx_offset_min": 0}, {"terminal_id": "T2"}):
        with pytest.raises(ConflictingTransaction, match="'h3' is sent more than once"):
            store.add_history([past("h4"), past("h3"), past("h3", **changed)])
    assert stored_ids(store, history) == ["h1", "h2"]


def test_an_id_loaded_before_is_skipped_when_the_same_and_refused_when_changed(store):
    store.add_history([past("h1"), past("h2", is_fraud=None)])
    assert store.add_history([past("h1"), past("h2", is_fraud=None), past("h3")]) == [past("h3")]
    for row in (past("h1", amount=500.0), past("h1", tx_time=101.0), past("h1", is_fraud=True), past("h2", is_fraud=True)):
        with pytest.raises(ConflictingTransaction, match=f"{row['transaction_id']!r} was already loaded with different values"):
            store.add_history([past("h9"), row])  # a late label too: a loaded row never changes
    assert stored_ids(store, history) == ["h1", "h2", "h3"]


def test_transaction_ids_are_one_namespace_for_predictions_and_history(store):
    """An id scored by /predict is never loaded as history too (its features would count it twice,
    and the upload's label would land on the scored transaction); an id loaded as history is never
    scored."""
    scored = row("p", 100.0, False)  # transaction "tx-p", body as past()
    store.write_batch([scored, row("q", 100.0, False)], [("q", True)])
    same = past("tx-p", is_fraud=None)
    # The same transaction, without a label or with the one it has: already there, nothing added.
    assert store.add_history([same, past("h1")]) == [past("h1")]
    assert store.add_history([past("tx-q", is_fraud=True)]) == []
    for changed, reason in (
        (past("tx-p", amount=99.0), " with a different body"),
        (past("tx-p", is_fraud=True), ", unlabelled: its label goes to /feedback"),
        (past("tx-q", is_fraud=False), ", labelled is_fraud=True: its label goes to /feedback"),
    ):
        with pytest.raises(
            ConflictingTransaction, match=rf"'{changed['transaction_id']}' was already scored \(prediction [pq]\){re.escape(reason)}"
        ):
            store.add_history([past("h2"), changed])
    assert stored_ids(store, history) == ["h1"] and stored_ids(store, predictions) == ["tx-p", "tx-q"]

    # The other way round: a loaded id sent to /predict is refused, whatever its body, and its
    # batch stores nothing; written one by one, it fails alone.
    loaded = {**row("r", 100.0, False), "transaction_id": "h1"}
    with pytest.raises(ConflictingTransaction, match="'h1' was loaded as history"):
        store.write_batch([row("s", 101.0, False), loaded], [])
    assert stored_ids(store, predictions) == ["tx-p", "tx-q"]
    outcomes, _ = store.write_each([row("s", 101.0, False), loaded], [])
    assert outcomes[0] is None and isinstance(outcomes[1], ConflictingTransaction)
    assert stored_ids(store, predictions) == ["tx-p", "tx-q", "tx-s"]
    # Larger batches are checked as well (their ids go to the lookup padded to a power of two).
    batch = [row(f"b{i}", 102.0, False) for i in range(37)] + [{**row("t", 102.0, False), "transaction_id": "h1"}]
    with pytest.raises(ConflictingTransaction):
        store.write_batch(batch, [])
    assert len(store.write_batch(batch[:-1], [])) == 0 and logged(store)[0] == 40


def test_the_feature_history_holds_each_transaction_once(store):
    """Stores written before ids were one namespace may hold a transaction both as a prediction and
    as history: it is replayed once, as the prediction (with the prediction's label, not the
    upload's), so the in-process and the Redis feature stores count the same."""
    store.write_batch([row("p", 200.0, False)], [])
    with store.engine.begin() as conn:  # as the old add_history stored it: beside the prediction
        conn.execute(history.insert(), [past("tx-p", tx_time=200.0, is_fraud=True), past("h1")])
    seen = store.feature_history(since=0)
    assert [(r["transaction_id"], r["is_fraud"]) for r in seen] == [("h1", False), ("tx-p", None)]


@pytest.fixture(params=["sqlite", "postgres"])
def damaged(request, tmp_path: Path):
    """A store with four readable history rows and, per database, what it lets in that cannot be
    read: SQLite keeps text in a REAL or INTEGER column (or a BOOLEAN one), Postgres NaN and
    infinity in a float column."""
    url = f"sqlite:///{tmp_path / 'service.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    store = PredictionStore(url)
    store.add_history([past(f"h{i}", tx_time=100.0 + i, customer_id="C-private") for i in range(8)])
    store.write_batch([row("p1", 300.0, False), row("p2", 301.0, False)], [])
    if store.is_sqlite:
        damage = [
            ("history", "amount", "'abc'", "h1"),
            ("history", "tx_time", "'abc'", "h2"),
            ("history", "tx_offset_min", "'x'", "h3"),
            ("history", "is_fraud", "'abc'", "h4"),
            ("predictions", "amount", "'abc'", "tx-p2"),
            ("predictions", "tx_time", "9e999", "tx-p1"),  # infinity
        ]
    else:
        damage = [
            ("history", "amount", "'NaN'", "h1"),
            ("history", "tx_time", "'Infinity'", "h2"),
            ("history", "amount", "'-Infinity'", "h3"),
            ("history", "tx_time", "'NaN'", "h4"),
            ("predictions", "amount", "'NaN'", "tx-p2"),
            ("predictions", "tx_time", "'Infinity'", "tx-p1"),
        ]
    with store.engine.begin() as conn:
        for table, column, value, transaction_id in damage:
            conn.execute(sa.text(f"UPDATE {table} SET {column} = {value} WHERE transaction_id = :t"), {"t": transaction_id})
    return store


def test_rows_that_cannot_be_read_are_skipped_with_one_warning(damaged, caplog):
    """One damaged row must not keep the service from starting (it restarted in a loop on
    ValueError: could not convert string to float: 'abc'); the warning counts, never shows values."""
    caplog.set_level(logging.WARNING, logger="ecosystem_assets.serving.store")
    seen = damaged.feature_history(since=0)
    assert [r["transaction_id"] for r in seen] == ["h0", "h5", "h6", "h7"]
    warnings = [r.getMessage() for r in caplog.records if r.name == "ecosystem_assets.serving.store"]
    assert warnings == ["feature history: skipped 6 stored transactions whose values cannot be read"]
    assert damaged.latest_seen_time() == 301.0  # tx-p2 (its amount is damaged, not its time); never text or infinity


def test_concurrent_uploads_of_one_new_transaction_never_fail(store):
    """Two uploads of the same new id at once: the second waits for the first and then compares —
    skipped when the same, refused when not — never a UNIQUE violation (a 500 with the row's values
    in the log). Made deterministic: the first upload is held open until the second one's insert
    has been sent."""
    other = create_engine(store.url).connect()  # an engine of its own: its insert is not the one awaited
    sent = threading.Event()

    @sa.event.listens_for(store.engine, "before_cursor_execute")
    def _signal(_conn, _cursor, statement, *_args) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO HISTORY"):
            sent.set()

    results: dict[str, object] = {}

    def upload(name: str, rows: list[dict]) -> None:
        try:
            results[name] = store.add_history(rows)
        except Exception as exc:  # noqa: BLE001 — the outcome is what the test looks at
            results[name] = exc

    for name, second in (("same", past("x1")), ("changed", past("x2", amount=1.0))):
        sent.clear()
        with other.begin():  # the first upload, inside its transaction
            other.execute(history.insert(), [past(second["transaction_id"])])
            thread = threading.Thread(target=upload, args=(name, [past(f"{name}-new"), second]))
            thread.start()
            assert sent.wait(30), "the second upload never reached its insert"
        thread.join(60)
        assert not thread.is_alive()
        if name == "same":
            assert results[name] == [past("same-new")]
        else:
            assert isinstance(results[name], ConflictingTransaction) and "'x2' was already loaded" in str(results[name])
    other.close()
    assert stored_ids(store, history) == ["same-new", "x1", "x2"]


# Sessions of this test's database waiting for a lock (the server may be shared: ECOSYSTEM_TEST_POSTGRES_URL).
WAITING_HERE = "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE NOT l.granted AND a.datname = current_database()"


def test_a_prediction_committed_during_an_upload_keeps_the_id_out_of_history(store):
    """An upload and a /predict batch of the same id at once: whichever commits second sees the
    other (SQLite: one writer at a time; Postgres: the upload locks predictions before checking
    them). Here the batch has inserted and not committed when the upload starts."""
    other = store.engine.connect()
    sent = threading.Event()

    @sa.event.listens_for(store.engine, "before_cursor_execute")
    def _signal(_conn, _cursor, statement, *_args) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO HISTORY"):
            sent.set()

    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(store.add_history([past("tx-p", is_fraud=None), past("h1")])))
    with other.begin():
        other.execute(predictions.insert(), [row("p", 100.0, False)])
        thread.start()
        assert sent.wait(30), "the upload never reached its insert"
        if not store.is_sqlite:  # wait until it waits for this transaction (or has, wrongly, finished)

            def upload_waits() -> bool:
                waiting = other.execute(sa.text(WAITING_HERE)).scalar()
                return bool(waiting) or not thread.is_alive()

            wait_until(upload_waits, 30, "the upload waits for the uncommitted prediction")
    thread.join(60)
    other.close()
    assert results == [[past("h1")]]
    assert stored_ids(store, history) == ["h1"] and stored_ids(store, predictions) == ["tx-p"]


def test_a_refused_upload_names_no_value_it_holds(store):
    """What the database refuses in an upload surfaces as a short error of its own (an unhandled
    IntegrityError printed the INSERT's parameters, customers and amounts, into the log)."""
    with pytest.raises(RejectedRow) as refused:
        store.add_history([past("h1", customer_id=None, terminal_id="T-private", amount=4321.5)])
    assert str(refused.value) in {f"the database refused the history ({name})" for name in ("IntegrityError", "NotNullViolation")}
    assert refused.value.__cause__ is None and refused.value.__suppress_context__
    assert stored_ids(store, history) == []


def test_a_log_with_repeated_transaction_ids_replays_each_once(store, caplog):
    """A log that already held repeated transaction ids when the unique index came (so it has none):
    each id is replayed once, as its first prediction, never also as history."""
    with store.engine.begin() as conn:
        conn.execute(sa.text("DROP INDEX uq_predictions_transaction_id"))
    store.write_batch([row("p1", 200.0, False), {**row("p2", 300.0, False), "transaction_id": "tx-p1"}, row("p3", 400.0, False)], [])
    with store.engine.begin() as conn:
        conn.execute(history.insert(), [past("tx-p1", tx_time=100.0, is_fraud=True), past("tx-p3", tx_time=500.0), past("h1")])
    caplog.set_level(logging.WARNING, logger="ecosystem_assets.serving.store")
    reopened = PredictionStore(store.url)
    assert not reopened.unique_transaction_ids
    seen = reopened.feature_history(since=0)
    assert [(r["transaction_id"], r["tx_time"], r["is_fraud"]) for r in seen] == [
        ("h1", 100.0, False),
        ("tx-p1", 200.0, None),
        ("tx-p3", 400.0, None),
    ]
    assert "feature history: 3 stored transactions repeat a transaction_id; counted once" in caplog.messages
