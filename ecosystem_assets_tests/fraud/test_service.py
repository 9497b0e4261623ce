"""The fraud service under uvicorn on loopback, as its clients use it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone

import pytest
import requests

from ecosystem_assets_tests.fraud.helpers import DRIFT, frames, logged
from ecosystem_assets_tests.waiting import wait_until

# An hour ago (in UTC+2): inside the default monitoring window, which ends now.
TX = {
    "transaction_id": "t-1",
    "customer_id": "C00001",
    "terminal_id": "T00001",
    "amount": 42.5,
    "timestamp": (datetime.now(timezone(timedelta(hours=2))) - timedelta(hours=1)).isoformat(timespec="seconds"),
}


def predict(url, tx=TX, session=requests):
    return session.post(f"{url}/predict", json={"transaction": tx}, timeout=30)


def test_predict_feedback_monitoring_metrics_healthz(fraud_service):
    url = fraud_service.url
    health = requests.get(f"{url}/healthz").json()
    assert health == {"status": "ok", "model_version": "1"}

    answer = predict(url).json()
    assert set(answer) == {"prediction_id", "fraud_probability", "is_fraud", "model_version"}
    assert 0 <= answer["fraud_probability"] <= 1 and answer["model_version"] == "1"
    unseen = predict(url, {**TX, "transaction_id": "t-2", "customer_id": "never-seen", "terminal_id": "nor-this"})
    assert unseen.status_code == 200  # unknown customers and terminals are scored too

    first = requests.post(f"{url}/feedback", json={"prediction_id": answer["prediction_id"], "is_fraud": True})
    again = requests.post(f"{url}/feedback", json={"prediction_id": answer["prediction_id"], "is_fraud": True})
    assert first.json()["status"] == "recorded" and again.json()["status"] == "unchanged"  # idempotent
    conflict = requests.post(f"{url}/feedback", json={"prediction_id": answer["prediction_id"], "is_fraud": False})
    assert conflict.status_code == 409
    unknown = requests.post(f"{url}/feedback", json={"prediction_id": "nope", "is_fraud": True})
    assert unknown.status_code == 404 and "nope" in unknown.json()["detail"]
    assert logged(fraud_service.store) == (2, 1)

    monitoring = requests.get(f"{url}/monitoring", params={"window_hours": 24}).json()
    assert monitoring["predictions"] == 2 and monitoring["labelled"] == 1 and monitoring["model_version"] == "1"
    assert monitoring["recall"] == (1.0 if answer["is_fraud"] else 0.0)

    # The live figures are recomputed in the background (a scrape never waits for the database).
    metrics = wait_until(
        lambda: requests.get(f"{url}/metrics"),
        30,
        "/metrics shows the labelled prediction",
        done=lambda m: 'fraud_live_metric{metric="labelled"} 1.0' in m.text,
    )
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'fraud_requests_total{endpoint="/predict",status="200"} 2.0' in metrics.text
    assert 'fraud_live_metric{metric="labelled"} 1.0' in metrics.text
    assert "fraud_predict_seconds_bucket" in metrics.text and "fraud_model_version 1.0" in metrics.text


def test_bad_payloads_get_422_naming_the_field(fraud_service):
    url = fraud_service.url
    cases = {
        "amount": {**TX, "amount": -3},
        "timestamp": {**TX, "timestamp": "2026-08-20T10:15:00"},  # no offset
        "customer_id": {k: v for k, v in TX.items() if k != "customer_id"},
        "terminal_id": {**TX, "terminal_id": ""},
    }
    for field, tx in cases.items():
        response = predict(url, tx)
        assert response.status_code == 422, field
        assert any(field in error["loc"] for error in response.json()["detail"]), (field, response.json())
    bad_feedback = requests.post(f"{url}/feedback", json={"prediction_id": "x", "is_fraud": "maybe"})
    assert bad_feedback.status_code == 422 and bad_feedback.json()["detail"][0]["loc"][-1] == "is_fraud"
    assert requests.get(f"{url}/monitoring", params={"window_hours": -1}).status_code == 422
    assert logged(fraud_service.store) == (0, 0)


@pytest.mark.parametrize("fraud_service", ["inline", "writer-thread", "postgres"], indirect=True)
def test_2000_requests_from_8_threads_all_stored(fraud_service):
    url = fraud_service.url
    rows = frames(DRIFT - timedelta(days=3), DRIFT - timedelta(days=1)).head(1000).to_dict("records")
    assert len(rows) == 1000
    local = threading.local()
    errors: list[str] = []

    def one(row):
        session = getattr(local, "s", None) or requests.Session()
        local.s = session
        tx = {k: row[k] for k in ("transaction_id", "customer_id", "terminal_id")} | {
            "amount": float(row["amount"]),
            "timestamp": row["timestamp"].isoformat(),
        }
        r = predict(url, tx, session)
        if r.status_code != 200:
            errors.append(f"predict {r.status_code}")
            return
        f = session.post(f"{url}/feedback", json={"prediction_id": r.json()["prediction_id"], "is_fraud": bool(row["is_fraud"])})
        if f.status_code != 200:
            errors.append(f"feedback {f.status_code}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, rows))
    assert errors == []
    assert logged(fraud_service.store) == (1000, 1000)  # 1,000 predictions + 1,000 labels = 2,000 requests
    end = datetime.combine(DRIFT, datetime.min.time(), UTC).isoformat()  # the simulated days' end
    monitoring = requests.get(f"{url}/monitoring", params={"window_hours": 72, "end": end}).json()
    assert monitoring["labelled"] == 1000


def test_champion_hot_swap_under_load(fraud_service, registry):
    from mlflow import MlflowClient

    from ecosystem_assets_tests.fraud.helpers import train_champion

    url = fraud_service.url
    watcher = fraud_service.app.state.watcher
    # A challenger trained on later days before the traffic starts (training beside four load
    # threads in this process took a minute); it is made champion by hand while traffic flows.
    from pathlib import Path

    root = Path(registry.removeprefix("sqlite:///")).parent
    outcome = train_champion(registry, root / "artifacts2", DRIFT + timedelta(days=5))
    client = MlflowClient(registry)
    client.set_registered_model_alias("fraud-detector", "champion", "1")  # back, if the promotion moved it
    wait_until(lambda: watcher.current.version, 30, "the service serves version 1", done=lambda v: v == "1")
    stop = threading.Event()
    seen: list[tuple[int, str]] = []

    def load():
        session = requests.Session()
        i = 0
        while not stop.is_set():
            i += 1
            r = predict(url, {**TX, "transaction_id": f"load-{threading.get_ident()}-{i}"}, session)
            seen.append((r.status_code, r.json().get("model_version") if r.status_code == 200 else r.text))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(seen), 30, "requests answered by version 1", done=lambda n: n >= 50)
        client.set_registered_model_alias("fraud-detector", "champion", outcome.version)
        wait_until(lambda: watcher.current.version, 30, "the service swaps the new champion in", done=lambda v: v == outcome.version)
        # Traffic goes on after the swap until the new version has answered requests (not a fixed pause).
        answered = len(seen)
        wait_until(
            lambda: [v for _, v in seen[answered:]],
            30,
            "requests answered by the new champion",
            done=lambda vs: vs.count(outcome.version) >= 20,
        )
    finally:
        stop.set()
        for t in threads:
            t.join()
    statuses = {status for status, _ in seen}
    versions = [version for _, version in seen]
    assert statuses == {200}, [s for s in seen if s[0] != 200][:3]
    assert versions[0] == "1" and versions[-1] == outcome.version == "2"
    assert "2" in versions and len(seen) > 50
    assert requests.get(f"{url}/healthz").json()["model_version"] == "2"
