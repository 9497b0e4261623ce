"""One feature function: the service computes exactly what training computes, for the same history."""

from __future__ import annotations

from datetime import UTC, timedelta

import numpy as np
import pandas as pd
import pytest
import requests

from ecosystem_assets.fraud.features import FEATURES, HISTORY_DAYS, FeatureState, feature_table
from ecosystem_assets.fraud.replay import replay_day, send_history
from ecosystem_assets_tests.fraud.helpers import DRIFT, frames


@pytest.mark.parametrize("fraud_service", ["inline", "redis"], indirect=True)
def test_service_features_equal_offline_features(fraud_service):
    first_live = DRIFT - timedelta(days=4)
    history = frames(first_live - timedelta(days=HISTORY_DAYS), first_live - timedelta(days=1))
    live = frames(first_live, first_live)
    assert send_history(fraud_service.url, history) == len(history)
    assert send_history(fraud_service.url, history) == 0  # a repeated upload adds nothing
    # One client, in time order: the same history as offline. (Concurrent clients may deliver a
    # later transaction first; then the service has, rightly, seen less when it scores it.)
    assert replay_day(fraud_service.url, str(first_live), live, workers=1).transactions == len(live)

    offline = feature_table(pd.concat([history, live], ignore_index=True)).set_index("transaction_id")
    stored = fraud_service.store.live_features(window_hours=24 * 3, end=pd.Timestamp(first_live + timedelta(days=1), tz="UTC").timestamp())
    with fraud_service.store.engine.connect() as conn:
        import sqlalchemy as sa

        from ecosystem_assets.serving.store import FEATURE_COLUMNS, predictions

        rows = conn.execute(sa.select(predictions.c.transaction_id, *[predictions.c[c] for c in FEATURE_COLUMNS])).all()
    assert len(rows) == len(live) == len(stored)
    online = np.array([list(r[1:]) for r in rows])
    expected = offline.loc[[r.transaction_id for r in rows], FEATURES].to_numpy()
    np.testing.assert_array_equal(online, expected)  # exactly: one feature function, exact sums
    # The windows saw real history: 30-day customer counts well above a cold start's 1.
    assert online[:, FEATURES.index("customer_nb_tx_30d")].mean() > 10
    assert online[:, FEATURES.index("terminal_nb_tx_30d")].mean() > 5


def test_terminal_risk_ignores_the_last_seven_days():
    from datetime import datetime

    state = FeatureState()
    t0 = datetime(2026, 8, 1, 12, tzinfo=UTC)
    for i, (days_ago, fraud) in enumerate([(10, 1), (9, 0), (3, 1), (1, 1)]):
        state.observe(f"x{i}", f"c{i}", "T1", 10.0, t0 - timedelta(days=days_ago))
        state.label(f"x{i}", fraud)
    row = dict(zip(FEATURES, state.features("c9", "T1", 20.0, t0), strict=True))
    assert row["terminal_nb_tx_7d"] == 2 and row["terminal_risk_7d"] == 0.5  # 10 and 9 days ago only
    assert row["customer_nb_tx_1d"] == 1 and row["customer_mean_amount_1d"] == 20.0  # the current one counts


def test_monitoring_is_per_serving_version(fraud_service):
    day = frames(DRIFT - timedelta(days=2), DRIFT - timedelta(days=2))
    replay_day(fraud_service.url, "d", day, workers=4)
    end = f"{DRIFT - timedelta(days=1)}T00:00:00+00:00"  # the window ends at the evaluation time (default now)
    body = requests.get(f"{fraud_service.url}/monitoring", params={"window_hours": 24, "end": end}).json()
    assert body["model_version"] == "1" and body["predictions"] == len(day) == body["labelled"]
    flagged = body["flagged_labelled"]
    assert flagged > 0 and body["precision"] is not None


def test_late_arrivals_land_in_time_order():
    """Concurrent clients deliver some transactions late: once all have arrived, the state (and so
    every later feature row) is the one an in-order history gives."""
    import random

    history = frames(DRIFT - timedelta(days=40), DRIFT - timedelta(days=1)).sort_values("timestamp", kind="stable")
    records = history.to_dict("records")
    shuffled = records[:]
    rng = random.Random(7)
    for i in range(0, len(shuffled) - 50, 50):  # shuffle within blocks: late by up to ~50 transactions
        block = shuffled[i : i + 50]
        rng.shuffle(block)
        shuffled[i : i + 50] = block
    states = []
    for order in (records, shuffled):
        state = FeatureState()
        for r in order:
            state.observe(r["transaction_id"], r["customer_id"], r["terminal_id"], r["amount"], r["timestamp"].to_pydatetime())
            state.label(r["transaction_id"], r["is_fraud"])
        states.append(state)
    probe = frames(DRIFT, DRIFT).to_dict("records")
    in_order, late = (
        np.array([s.features(r["customer_id"], r["terminal_id"], r["amount"], r["timestamp"].to_pydatetime()) for r in probe])
        for s in states
    )
    assert shuffled != records
    np.testing.assert_allclose(late, in_order, rtol=0, atol=1e-9)
    assert in_order[:, FEATURES.index("terminal_risk_30d")].max() > 0  # the fraud labels were in play


def stored_features(service, transaction_id: str) -> dict[str, float]:
    import sqlalchemy as sa

    from ecosystem_assets.serving.store import FEATURE_COLUMNS, predictions

    with service.store.engine.connect() as conn:
        found = conn.execute(
            sa.select(*[predictions.c[c] for c in FEATURE_COLUMNS]).where(predictions.c.transaction_id == transaction_id)
        ).one()
    return dict(zip(FEATURES, found, strict=True))


@pytest.mark.parametrize("fraud_service", ["inline", "redis", "postgres"], indirect=True)
def test_a_transaction_counts_once_whether_scored_or_loaded(fraud_service):
    """Transaction ids are one namespace across /predict and /history (the review's attack: a
    scored transaction uploaded again as history counted twice at its terminal, and the upload's
    label became the scored one's). Repeats within an upload count once; conflicts are 409, never
    a 500."""
    from datetime import datetime

    url = fraud_service.url
    now = datetime.now(UTC).replace(microsecond=0)
    ten_days_ago = (now - timedelta(days=10)).isoformat()

    def predict(transaction_id: str, when: datetime, customer: str) -> requests.Response:
        tx = {
            "transaction_id": transaction_id,
            "customer_id": customer,
            "terminal_id": "TX9",
            "amount": 20.0,
            "timestamp": when.isoformat(),
        }
        return requests.post(f"{url}/predict", json={"transaction": tx}, timeout=30)

    def upload(*transactions: dict) -> requests.Response:
        return requests.post(f"{url}/history", json={"transactions": list(transactions)}, timeout=30)

    coll = {"transaction_id": "coll-1", "customer_id": "CC1", "terminal_id": "TX9", "amount": 20.0, "timestamp": ten_days_ago}
    assert predict("coll-1", now - timedelta(days=10), "CC1").status_code == 200
    assert predict("probe-1", now - timedelta(minutes=5), "CC2").status_code == 200
    assert stored_features(fraud_service, "probe-1")["terminal_nb_tx_7d"] == 1

    labelled = upload({**coll, "is_fraud": True})
    assert labelled.status_code == 409 and "/feedback" in labelled.json()["detail"]
    assert upload(coll).json() == {"received": 1, "added": 0}  # the same transaction, no label: already there
    changed = upload({**coll, "amount": 21.0})
    assert changed.status_code == 409 and "'coll-1' was already scored" in changed.json()["detail"]
    assert predict("probe-2", now - timedelta(minutes=4), "CC3").status_code == 200
    probe = stored_features(fraud_service, "probe-2")
    assert probe["terminal_nb_tx_7d"] == 1 and probe["terminal_risk_7d"] == 0.0

    # Repeats in one upload: the same once (it was a 500), different ones refused, nothing stored.
    old = {
        "transaction_id": "old-1",
        "customer_id": "CC4",
        "terminal_id": "TX9",
        "amount": 5.0,
        "timestamp": ten_days_ago,
        "is_fraud": True,
    }
    refused = upload({**old, "transaction_id": "old-2"}, old, {**old, "amount": 6.0})
    assert refused.status_code == 409 and "'old-1' is sent more than once" in refused.json()["detail"]
    assert upload(old, dict(old)).json() == {"received": 2, "added": 1}
    assert upload({**old, "is_fraud": False}).status_code == 409  # a loaded row never changes
    # A loaded transaction is not scored afterwards: 409, and it is not counted a second time.
    again = predict("old-1", now - timedelta(days=10), "CC4")
    assert again.status_code == 409 and "loaded as history" in again.json()["detail"]
    assert predict("probe-3", now - timedelta(minutes=3), "CC5").status_code == 200
    probe = stored_features(fraud_service, "probe-3")
    assert probe["terminal_nb_tx_7d"] == 2 and probe["terminal_risk_7d"] == 0.5  # coll-1 (no label) and old-1 (fraud)
