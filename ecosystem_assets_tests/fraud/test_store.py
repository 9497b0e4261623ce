"""The prediction/feedback store on SQLite (WAL) and on a real Postgres server started by the tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecosystem_assets.fraud.features import FEATURES
from ecosystem_assets.serving.store import FEATURE_COLUMNS, ConflictingFeedback, PredictionStore, UnknownPrediction
from ecosystem_assets_tests.fraud.helpers import logged


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
