"""Retried transactions, one bad row in a micro-batch, and a locked database — on the real service
under uvicorn, with SQLite (written on the event loop, or in the writer thread) and with Postgres."""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import sqlalchemy as sa

from ecosystem_assets_tests.fraud.helpers import logged
from ecosystem_assets_tests.fraud.test_service import TX, predict
from ecosystem_assets_tests.waiting import wait_until

ALL_STORES = ["inline", "writer-thread", "postgres", "redis"]


def customer_history(service, customer_id: str) -> int:
    """How many transactions of the customer the online feature state holds (in-process or Redis)."""
    from ecosystem_assets.serving.feature_store import RedisFeatures

    features = service.app.state.scorer.features
    if isinstance(features, RedisFeatures):
        return features.client.zcard(f"{features.prefix}c:{customer_id}")
    return len(features.state.customers.get(customer_id, ([], []))[0])


@pytest.mark.parametrize("fraud_service", ALL_STORES, indirect=True)
def test_a_retried_transaction_returns_the_original_prediction(fraud_service):
    url = fraud_service.url
    first = predict(url)
    assert first.status_code == 200, first.text
    again = predict(url)
    assert again.status_code == 200 and again.json() == first.json()  # same id, probability, version
    assert logged(fraud_service.store) == (1, 0)
    assert customer_history(fraud_service, TX["customer_id"]) == 1  # the features were not touched again

    changed = predict(url, {**TX, "amount": TX["amount"] + 1})
    assert changed.status_code == 409 and TX["transaction_id"] in changed.json()["detail"]
    assert logged(fraud_service.store) == (1, 0) and customer_history(fraud_service, TX["customer_id"]) == 1

    # Eight clients retrying one new transaction at once: one row, one answer.
    fresh = {**TX, "transaction_id": "t-concurrent"}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: predict(url, fresh), range(8)))
    assert {a.status_code for a in answers} == {200}
    assert len({a.json()["prediction_id"] for a in answers}) == 1
    assert logged(fraud_service.store) == (2, 0) and customer_history(fraud_service, TX["customer_id"]) == 2


def refuse_customer(service, customer_id: str) -> None:
    """Make the database itself refuse one customer's rows (a trigger), as a real constraint would."""
    engine = sa.create_engine(service.store.url)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(
                sa.text(
                    f"CREATE TRIGGER refuse BEFORE INSERT ON predictions WHEN NEW.customer_id = '{customer_id}' "
                    "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                )
            )
        else:
            conn.execute(sa.text(f"ALTER TABLE predictions ADD CONSTRAINT refuse CHECK (customer_id <> '{customer_id}')"))
    engine.dispose()


@pytest.mark.parametrize("fraud_service", ALL_STORES, indirect=True)
def test_one_refused_row_fails_alone_and_leaves_the_features_alone(fraud_service):
    url = fraud_service.url
    refuse_customer(fraud_service, "C-refused")
    requests_ = [{**TX, "transaction_id": f"ok-{i}", "customer_id": f"C-{i % 5}"} for i in range(120)]
    requests_ += [{**TX, "transaction_id": f"bad-{i}", "customer_id": "C-refused"} for i in range(10)]
    local = threading.local()

    def send(tx):
        session = getattr(local, "s", None) or requests.Session()
        local.s = session
        return tx["transaction_id"], predict(url, tx, session)

    with ThreadPoolExecutor(8) as pool:  # concurrent: the refused rows share micro-batches with good ones
        answers = dict(pool.map(send, requests_[::2] + requests_[1::2]))
    assert {tid: r.status_code for tid, r in answers.items() if tid.startswith("ok-") and r.status_code != 200} == {}
    refused = [r for tid, r in answers.items() if tid.startswith("bad-")]
    assert {r.status_code for r in refused} == {422}
    assert "refused" in refused[0].text
    assert logged(fraud_service.store) == (120, 0)
    assert customer_history(fraud_service, "C-refused") == 0  # feature state changes only after a commit
    assert sum(customer_history(fraud_service, f"C-{i}") for i in range(5)) == 120
    # The next transaction of a customer sees exactly the stored ones.
    nxt = predict(url, {**TX, "transaction_id": "after", "customer_id": "C-0"})
    assert nxt.status_code == 200 and customer_history(fraud_service, "C-0") == 25


def test_a_locked_sqlite_never_blocks_healthz_or_metrics(fraud_service):
    url = fraud_service.url
    assert predict(url, {**TX, "transaction_id": "before"}).status_code == 200
    path = fraud_service.store.url.removeprefix("sqlite:///")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the database's write lock
    result: dict = {}
    pending = threading.Thread(target=lambda: result.setdefault("r", predict(url, {**TX, "transaction_id": "during"})))
    scorer = fraud_service.app.state.scorer
    try:
        pending.start()
        # Probe only once the write is really waiting: the batch loop found the store locked and
        # handed the batch to its writer thread (created for that, so absent until then).
        wait_until(lambda: scorer._executor is not None, 30, "the locked write handed to the writer thread")
        for _ in range(5):  # while the lock is held, the event loop still answers at once
            assert requests.get(f"{url}/healthz", timeout=2).status_code == 200
            assert requests.get(f"{url}/metrics", timeout=2).status_code == 200
        assert pending.is_alive() and "r" not in result  # the write waits for the lock, off the loop
    finally:
        other.execute("COMMIT")
        other.close()
    pending.join(timeout=60)
    assert result["r"].status_code == 200
    assert logged(fraud_service.store) == (2, 0)
