"""The online feature state's two implementations (in-process, Redis on a real server): the same
rows as the training table, atomic micro-batches shared by replicas, exact undo, expiry, eviction,
and a clean error when Redis is gone."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from ecosystem_assets.fraud.features import FEATURES, HISTORY_DAYS, HISTORY_KEEP_S, feature_table
from ecosystem_assets.serving.feature_store import (
    FeatureStoreUnavailable,
    InProcessFeatures,
    Label,
    RedisFeatures,
    Transaction,
)
from ecosystem_assets_tests.fraud.helpers import DRIFT, frames

T0 = datetime(2026, 8, 1, 12, tzinfo=UTC)


def open_store(kind: str, request) -> InProcessFeatures | RedisFeatures:
    if kind == "in-process":
        return InProcessFeatures()
    # "redis, cache of 1": the replica's near cache holds one customer, so nearly every
    # transaction reads its customer from Redis (customer_cache.py).
    return RedisFeatures(request.getfixturevalue("redis_url"), cached_customers=1 if kind == "redis, cache of 1" else 20_000)


def stream(first, last) -> list[dict]:
    table = frames(first, last).sort_values("timestamp", kind="stable")
    records = table.to_dict("records")
    for r in records:
        r["timestamp"] = r["timestamp"].to_pydatetime()
    return records


def tx(r: dict) -> Transaction:
    return Transaction(r["transaction_id"], r["customer_id"], r["terminal_id"], float(r["amount"]), r["timestamp"])


def score_in_batches(store, records: list[dict], batch: int) -> np.ndarray:
    """The service's path: a micro-batch observed, kept (committed), then its labels."""
    rows = []
    for i in range(0, len(records), batch):
        part = records[i : i + batch]
        features, observed = store.observe([tx(r) for r in part])
        store.keep(observed)
        store.label([Label(r["transaction_id"], r["terminal_id"], r["timestamp"].timestamp(), bool(r["is_fraud"])) for r in part])
        rows += features
    return np.array(rows)


@pytest.mark.parametrize("kind", ["in-process", "redis", "redis, cache of 1"])
def test_online_rows_equal_the_training_table_exactly(kind, request):
    records = stream(DRIFT - timedelta(days=HISTORY_DAYS + 3), DRIFT - timedelta(days=1))
    store = open_store(kind, request)
    online = score_in_batches(store, records, batch=64)
    import pandas as pd

    offline = feature_table(pd.DataFrame(records))[FEATURES].to_numpy()
    np.testing.assert_array_equal(online, offline)
    assert online[:, FEATURES.index("terminal_risk_30d")].max() > 0  # the labels were in play
    assert store.newest_seen == records[-1]["timestamp"].timestamp()


def test_two_replicas_on_one_redis_give_one_process_rows(request):
    """One stream, each batch sent to either of two clients (two replicas), equals one client."""
    records = stream(DRIFT - timedelta(days=12), DRIFT - timedelta(days=1))  # terminal windows reach 7 days back
    url = request.getfixturevalue("redis_url")
    single = score_in_batches(RedisFeatures(url, prefix="single:"), records, batch=16)
    replicas = [RedisFeatures(url, prefix="shared:"), RedisFeatures(url, prefix="shared:")]
    rows = []
    for n, i in enumerate(range(0, len(records), 16)):
        rows.append(score_in_batches(replicas[n % 2], records[i : i + 16], batch=16))
    np.testing.assert_array_equal(np.concatenate(rows), single)
    assert single[:, FEATURES.index("terminal_nb_tx_7d")].max() > 0 and single[:, FEATURES.index("customer_nb_tx_7d")].max() > 1


def test_concurrent_batches_of_one_customer_lose_no_update(request):
    url = request.getfixturevalue("redis_url")
    replicas = [RedisFeatures(url), RedisFeatures(url)]
    start = threading.Barrier(2, timeout=30)
    counts: dict[int, list[float]] = {}

    def replica(k: int) -> None:
        start.wait()
        seen = []
        for i in range(200):  # same customer and terminal, interleaved times
            t = T0 + timedelta(seconds=2 * i + k)
            rows, observed = replicas[k].observe([Transaction(f"r{k}-{i}", "C1", "T1", 10.0, t)])
            replicas[k].keep(observed)
            seen.append(rows[0][FEATURES.index("customer_nb_tx_1d")])
        counts[k] = seen

    threads = [threading.Thread(target=replica, args=(k,)) for k in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert replicas[0].client.zcard("fraud:v1:c:C1") == 400 and replicas[0].client.zcard("fraud:v1:t:T1") == 400
    # Every later transaction saw every earlier one that had landed: counts only grow.
    assert all(b >= a for k in (0, 1) for a, b in zip(counts[k], counts[k][1:], strict=False))
    rows, _ = replicas[0].observe([Transaction("late-probe", "C1", "T1", 10.0, T0 + timedelta(seconds=400))])
    assert rows[0][FEATURES.index("customer_nb_tx_1d")] == 401  # all 400 earlier ones, and itself


@pytest.mark.parametrize("kind", ["in-process", "redis"])
def test_forget_undoes_only_what_the_batch_added(kind, request):
    store = open_store(kind, request)
    first = Transaction("x1", "C1", "T1", 10.0, T0)
    store.keep(store.observe([first])[1])
    # A retry of x1 and a new transaction, in a batch whose write failed: x1 stays, once.
    _, observed = store.observe([first, Transaction("x2", "C1", "T1", 20.0, T0 + timedelta(hours=1))])
    store.forget(observed)
    rows, _ = store.observe([Transaction("probe", "C1", "T1", 30.0, T0 + timedelta(hours=2))])
    row = dict(zip(FEATURES, rows[0], strict=True))
    assert row["customer_nb_tx_1d"] == 2 and row["customer_mean_amount_1d"] == 20.0  # x1 and the probe


def customer_reads(store: RedisFeatures) -> int:
    """How many times Redis has sent a customer's whole set (the observe script's ZRANGE)."""
    return int(store.client.info("commandstats").get("cmdstat_zrange", {}).get("calls", 0))


def test_a_replica_reads_a_customer_again_only_after_someone_else_changed_it(request):
    url = request.getfixturevalue("redis_url")
    a, b = RedisFeatures(url), RedisFeatures(url)
    a.client.config_resetstat()

    def observe(store: RedisFeatures, n: int, customer: str = "C1") -> float:
        rows, observed = store.observe([Transaction(f"x{n}", customer, "T1", 10.0 * n, T0 + timedelta(minutes=n))])
        store.keep(observed)
        return rows[0][FEATURES.index("customer_nb_tx_1d")]

    assert observe(a, 1) == 1 and customer_reads(a) == 1  # a new customer: its (empty) set read once
    assert observe(a, 2) == 2 and observe(a, 3) == 3 and customer_reads(a) == 1  # a's own changes: cached
    assert observe(b, 4) == 4 and customer_reads(a) == 2  # b had never seen C1
    assert observe(a, 5) == 5 and customer_reads(a) == 3  # b changed C1: a reads it again, and sees x4
    assert observe(a, 6, "C2") == 1 and customer_reads(a) == 4
    # A forgotten batch changes the set behind everyone's cache: the next reader reads it whole.
    _, observed = b.observe([Transaction("x7", "C1", "T1", 70.0, T0 + timedelta(minutes=7))])
    b.forget(observed)
    assert observe(a, 8) == 6 and customer_reads(a) == 6  # b's read for x7, a's after the undo


def test_versions_never_repeat_even_after_redis_is_emptied(request):
    """A replica caching C1 must not mistake a new C1 (after the keys expired, or a flushed Redis)
    for the one it cached: versions restart at a random point, not at 1."""
    url = request.getfixturevalue("redis_url")
    a, b = RedisFeatures(url), RedisFeatures(url)
    a.keep(a.observe([Transaction("x1", "C1", "T1", 10.0, T0)])[1])
    a.client.flushdb()
    b.keep(b.observe([Transaction("x2", "C1", "T1", 20.0, T0 + timedelta(minutes=1))])[1])
    rows, _ = a.observe([Transaction("x3", "C1", "T1", 30.0, T0 + timedelta(minutes=2))])
    row = dict(zip(FEATURES, rows[0], strict=True))
    assert row["customer_nb_tx_1d"] == 2 and row["customer_mean_amount_1d"] == 25.0  # x2 and x3, not x1


def test_the_near_cache_keeps_the_most_recently_used_customers():
    from ecosystem_assets.serving.customer_cache import CustomerCache

    cache = CustomerCache(max_customers=2)
    for key in ("c:1", "c:2"):
        cache.fill(key, ["10.0|x", "100.0"])
        cache.add(key, 200.0, 5.0, True, "7")
    cache.windows("c:1", 300.0)  # c:1 used last: c:2 goes first
    cache.fill("c:3", [])
    cache.shrink()
    assert len(cache) == 2 and cache.version("c:2") == "" and cache.version("c:1") == "7"
    cache.add("c:3", 1.0, 1.0, True, "9")
    assert cache.windows("c:3", 2.0)[0] == [1.0]


def test_redis_keys_expire_after_the_history_window(request):
    store = RedisFeatures(request.getfixturevalue("redis_url"))
    store.keep(store.observe([Transaction("x1", "C1", "T1", 10.0, T0)])[1])
    store.label([Label("x1", "T1", T0.timestamp(), True)])
    for key in ("fraud:v1:c:C1", "fraud:v1:v:C1", "fraud:v1:t:T1", "fraud:v1:f:T1", "fraud:v1:newest"):
        ttl_ms = store.client.pttl(key)
        assert HISTORY_KEEP_S * 1000 - 60_000 < ttl_ms <= HISTORY_KEEP_S * 1000, (key, ttl_ms)
    # Old entries leave a key as newer transactions (and, for fraud labels, newer labels) arrive:
    # trimmed on transaction time.
    later = T0 + timedelta(days=HISTORY_DAYS + 1)
    store.observe([Transaction("x2", "C1", "T1", 10.0, later)])
    assert store.client.zrange("fraud:v1:c:C1", 0, -1) == ["10.0|x2"]
    assert store.client.zrange("fraud:v1:t:T1", 0, -1) == ["x2"]
    store.label([Label("x2", "T1", later.timestamp(), True)])
    assert store.client.zrange("fraud:v1:f:T1", 0, -1) == ["x2"]


def test_redis_labels_count_only_for_transactions_it_holds(request):
    store = RedisFeatures(request.getfixturevalue("redis_url"))
    store.keep(store.observe([Transaction("x1", "C1", "T1", 10.0, T0)])[1])
    store.label([Label("x1", "T1", T0.timestamp(), True), Label("ghost", "T1", T0.timestamp(), True)])
    assert store.client.zrange("fraud:v1:f:T1", 0, -1) == ["x1"]
    store.label([Label("x1", "T1", T0.timestamp(), False)])  # a correction removes it
    assert not store.client.exists("fraud:v1:f:T1")


def test_in_process_state_evicts_idle_entities():
    store = InProcessFeatures()
    store.keep(store.observe([Transaction(f"x{i}", f"C{i}", f"T{i}", 10.0, T0) for i in range(100)])[1])
    store.label([Label("x1", "T1", T0.timestamp(), True)])
    assert len(store.state.customers) == 100 and store.state.frauds == {"x1"}
    # 36 days later the old entities can still be seen by an accepted late transaction: kept.
    store.keep(store.observe([Transaction("y", "CY", "TY", 10.0, T0 + timedelta(days=36))])[1])
    assert len(store.state.customers) == 101
    # Once nothing the input rules accept can see them, they go (labels with them).
    store.keep(store.observe([Transaction("z", "CZ", "TZ", 10.0, T0 + timedelta(days=2 * HISTORY_DAYS + 1))])[1])
    assert set(store.state.customers) == {"CY", "CZ"} and set(store.state.terminals) == {"TY", "TZ"}
    assert not store.state.frauds


def test_a_stopped_redis_is_a_clean_unavailable_error(tmp_path):
    from ecosystem_assets_tests.servers.redis import redis_server

    with redis_server(tmp_path / "redis") as url:
        store = RedisFeatures(url, timeout_s=0.5)
        store.keep(store.observe([Transaction("x1", "C1", "T1", 10.0, T0)])[1])
    password = url.split(":")[2].split("@")[0]
    with pytest.raises(FeatureStoreUnavailable) as raised:
        store.observe([Transaction("x2", "C1", "T1", 10.0, T0)])
    assert "feature store is unavailable" in str(raised.value) and password not in str(raised.value)
    with pytest.raises(FeatureStoreUnavailable):
        store.ping()


def test_an_empty_redis_is_seeded_from_the_log_once(request, tmp_path):
    """A new Redis (or one idle past the history window) is filled from the prediction log at
    start; a restarted replica on a filled one reads nothing."""
    from ecosystem_assets.serving.scoring import Scorer
    from ecosystem_assets.serving.store import PredictionStore

    records = stream(DRIFT - timedelta(days=3), DRIFT - timedelta(days=1))
    store = PredictionStore(f"sqlite:///{tmp_path / 'log.db'}")
    url = request.getfixturevalue("redis_url")
    first = Scorer(store, watcher=None, features=RedisFeatures(url))  # type: ignore[arg-type]  # warm-up never asks for the model
    assert first.load_history(records) == len(records)
    restarted = Scorer(store, watcher=None, features=RedisFeatures(url))  # type: ignore[arg-type]
    assert restarted.warm_up() == 0
    assert restarted.oldest_accepted() == records[-1]["timestamp"].timestamp() - HISTORY_KEEP_S
    probe = [tx(r) for r in stream(DRIFT, DRIFT)[:50]]
    seeded_rows, _ = restarted.features.observe(probe)
    restarted.features.client.flushdb()
    fresh = Scorer(store, watcher=None, features=RedisFeatures(url))  # type: ignore[arg-type]
    assert fresh.warm_up() == len(records)
    assert fresh.features.observe(probe)[0] == seeded_rows


def test_a_retry_on_two_replicas_at_once_keeps_the_stored_observation(request):
    """Replica a observes x1 first, replica b observes the same x1 and commits it; a's write then
    meets the stored row (a retry with the same body): a's undo must leave b's transaction in."""
    url = request.getfixturevalue("redis_url")
    a, b = RedisFeatures(url), RedisFeatures(url)
    x1 = Transaction("x1", "C1", "T1", 10.0, T0)
    _, observed_a = a.observe([x1])
    _, observed_b = b.observe([x1])
    b.keep(observed_b)
    a.forget(observed_a, stored=[True])
    assert a.client.zrange("fraud:v1:c:C1", 0, -1, withscores=True) == [("10.0|x1", T0.timestamp())]
    # The same id sent again with another time (a 409 body) never moves the stored one.
    _, moved = a.observe([Transaction("x1", "C1", "T1", 10.0, T0 + timedelta(hours=5))])
    a.forget(moved)
    assert a.client.zrange("fraud:v1:c:C1", 0, -1, withscores=True) == [("10.0|x1", T0.timestamp())]
    assert a.client.zrange("fraud:v1:t:T1", 0, -1, withscores=True) == [("x1", T0.timestamp())]


def prediction_row(transaction_id: str, when: datetime, customer: str, terminal: str, amount: float = 20.0) -> dict:
    """A row as the scorer writes it to the prediction log (the features do not matter here)."""
    from ecosystem_assets.serving.store import FEATURE_COLUMNS, time_ordered_id

    return {
        "prediction_id": time_ordered_id(),
        "transaction_id": transaction_id,
        "customer_id": customer,
        "terminal_id": terminal,
        "amount": amount,
        "tx_time": when.timestamp(),
        "tx_offset_min": 0,
        **{c: 0.0 for c in FEATURE_COLUMNS},
        "fraud_probability": 0.1,
        "is_fraud": False,
        "model_version": "1",
        "created_at": when.timestamp(),
    }


def probe_row(features, customer: str = "CP", terminal: str = "TX9") -> dict[str, float]:
    rows, _ = features.observe([Transaction("probe", customer, terminal, 20.0, T0)])
    return dict(zip(FEATURES, rows[0], strict=True))


@pytest.mark.parametrize("kind", ["in-process", "redis"])
def test_a_scored_transaction_uploaded_as_history_is_not_counted_again(kind, request, tmp_path):
    """The review's attack on the scorer: a transaction scored ten days ago is sent to /history
    again (same id and body): without a label it is already there (added 0, counted once); with a
    label the prediction does not have, it is refused (the label goes to /feedback)."""
    from ecosystem_assets.serving.scoring import Scorer
    from ecosystem_assets.serving.store import ConflictingTransaction, PredictionStore

    store = PredictionStore(f"sqlite:///{tmp_path / 'log.db'}")
    when = T0 - timedelta(days=10)
    store.write_batch([prediction_row("coll-1", when, "CC1", "TX9")], [])
    scorer = Scorer(store, watcher=None, features=open_store(kind, request))  # type: ignore[arg-type]  # no model needed
    assert scorer.warm_up() == 1
    upload = {"transaction_id": "coll-1", "customer_id": "CC1", "terminal_id": "TX9", "amount": 20.0, "timestamp": when}
    with pytest.raises(ConflictingTransaction, match="unlabelled: its label goes to /feedback"):
        scorer.load_history([{**upload, "is_fraud": True}])
    assert scorer.load_history([{**upload, "is_fraud": None}, {**upload, "transaction_id": "old-1", "is_fraud": True}]) == 1
    row = probe_row(scorer.features)
    assert row["terminal_nb_tx_7d"] == 2 and row["terminal_risk_7d"] == 0.5  # coll-1 once, unlabelled; old-1 a fraud


def test_a_restart_counts_a_transaction_stored_twice_once_in_either_feature_store(request, tmp_path):
    """A store from before ids were one namespace holds coll-1 as a prediction and as history (with
    the upload's fraud label): in-process it counted twice, in Redis once (members are sets). Now
    both replay it once, as the prediction, and give the same rows."""
    import sqlalchemy as sa

    from ecosystem_assets.serving.scoring import Scorer
    from ecosystem_assets.serving.store import PredictionStore, history

    store = PredictionStore(f"sqlite:///{tmp_path / 'log.db'}")
    when = T0 - timedelta(days=10)
    store.write_batch([prediction_row("coll-1", when, "CC1", "TX9"), prediction_row("other", when, "CC2", "TX9", amount=7.0)], [])
    with store.engine.begin() as conn:  # what add_history stored before it checked the prediction log
        conn.execute(
            history.insert(),
            [
                {
                    "transaction_id": "coll-1",
                    "customer_id": "CC1",
                    "terminal_id": "TX9",
                    "amount": 20.0,
                    "tx_time": when.timestamp(),
                    "tx_offset_min": 0,
                    "is_fraud": True,
                }
            ],
        )
        assert conn.execute(sa.select(sa.func.count()).select_from(history)).scalar() == 1
    rows = {}
    for kind in ("in-process", "redis"):
        scorer = Scorer(store, watcher=None, features=open_store(kind, request))  # type: ignore[arg-type]
        assert scorer.warm_up() == 2
        rows[kind] = (probe_row(scorer.features), probe_row(scorer.features, customer="CC1"))
    assert rows["in-process"] == rows["redis"]
    terminal, customer = rows["in-process"]
    assert terminal["terminal_nb_tx_7d"] == 2 and terminal["terminal_risk_7d"] == 0.0
    assert customer["customer_nb_tx_30d"] == 2  # coll-1 once, and the probe


@pytest.mark.parametrize("kind", ["in-process", "redis"])
def test_a_stored_row_that_cannot_be_read_does_not_stop_the_start(kind, request, tmp_path, caplog):
    """SQLite keeps text in a REAL column: a history row with amount 'abc' made every start fail
    (ValueError: could not convert string to float), so the service restarted in a loop. The row is
    left out with one warning that counts and shows no value; the rest is loaded."""
    import logging

    import sqlalchemy as sa

    from ecosystem_assets.serving.scoring import Scorer
    from ecosystem_assets.serving.store import PredictionStore

    caplog.set_level(logging.WARNING)
    store = PredictionStore(f"sqlite:///{tmp_path / 'log.db'}")
    loaded = [
        {
            "transaction_id": f"h{i}",
            "customer_id": "C-private",
            "terminal_id": "TX9",
            "amount": 20.0,
            "timestamp": T0 - timedelta(days=10, minutes=i),
        }
        for i in range(4)
    ]
    Scorer(store, watcher=None).load_history(loaded)  # type: ignore[arg-type]
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE history SET amount = 'abc' WHERE transaction_id = 'h1'"))
        conn.execute(sa.text("UPDATE history SET tx_time = 'abc' WHERE transaction_id = 'h2'"))
    scorer = Scorer(store, watcher=None, features=open_store(kind, request))  # type: ignore[arg-type]
    caplog.clear()
    assert scorer.warm_up() == 2
    assert [r.getMessage() for r in caplog.records] == ["feature history: skipped 2 stored transactions whose values cannot be read"]
    assert "abc" not in caplog.text and "C-private" not in caplog.text and "h1" not in caplog.text
    assert probe_row(scorer.features)["terminal_nb_tx_7d"] == 2
