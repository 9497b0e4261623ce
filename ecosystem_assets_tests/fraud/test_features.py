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
