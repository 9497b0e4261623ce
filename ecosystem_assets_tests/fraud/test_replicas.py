"""Several replicas of the fraud service (`ecosystem-assets serve` processes) sharing one Redis
feature state and one Postgres prediction log: an interleaved stream gives exactly what one
process gives, and killing a replica under load loses no acknowledged prediction."""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import sqlalchemy as sa

from ecosystem_assets.fraud.replay import payload, send_history
from ecosystem_assets.serving.store import FEATURE_COLUMNS, predictions
from ecosystem_assets_tests.fraud.helpers import DRIFT, frames, serve_process

LIVE = DRIFT - timedelta(days=3)


@contextmanager
def replica(registry: str, db_url: str, redis_url: str, home: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """One `ecosystem-assets serve` process, ready (/readyz 200); yields (url, process)."""
    env = {"MLFLOW_TRACKING_URI": registry, "FRAUD_DB_URL": db_url, "FRAUD_FEATURE_STORE_URL": redis_url}
    with serve_process(env, home) as (url, process, log):
        yield url, process
    password = urlsplit(redis_url).password
    assert password and password not in log.read_text()


def send(urls: list[str], rows: list[dict]) -> None:
    """Each transaction in time order to the next replica in turn, then its label to the other."""
    with requests.Session() as session:
        for i, row in enumerate(rows):
            answer = session.post(f"{urls[i % len(urls)]}/predict", json={"transaction": payload(row)}, timeout=30)
            assert answer.status_code == 200, answer.text
            label = {"prediction_id": answer.json()["prediction_id"], "is_fraud": bool(row["is_fraud"])}
            assert session.post(f"{urls[(i + 1) % len(urls)]}/feedback", json=label, timeout=30).status_code == 200


def logged(db_url: str) -> dict[str, tuple]:
    engine = sa.create_engine(db_url)
    p = predictions.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(p.transaction_id, p.prediction_id, *[p[c] for c in FEATURE_COLUMNS], p.fraud_probability)).all()
    engine.dispose()
    return {r[0]: tuple(r[1:]) for r in rows}


@pytest.fixture
def databases(postgres_server_url: str) -> Iterator[list[str]]:
    from ecosystem_assets_tests.servers.postgres import fresh_database

    with ExitStack() as stack:
        yield [stack.enter_context(fresh_database(postgres_server_url)) for _ in range(2)]


def test_two_replicas_give_exactly_what_one_process_gives(registry, redis_url, databases, tmp_path):
    history = frames(LIVE - timedelta(days=10), LIVE - timedelta(days=1))  # reaches into every window (7-day label delay)
    live = frames(LIVE, LIVE).sort_values("timestamp", kind="stable").to_dict("records")
    window = {"window_hours": 24, "end": f"{LIVE + timedelta(days=1)}T00:00:00+00:00"}
    single_db, shared_db = databases
    monitoring = {}
    # One process (Redis database 1), then two replicas (database 0), each on a Postgres database of its own.
    with replica(registry, single_db, redis_url.rsplit("/", 1)[0] + "/1", tmp_path / "single") as (url, _):
        assert send_history(url, history) == len(history)
        send([url], live)
        monitoring["single"] = requests.get(f"{url}/monitoring", params=window, timeout=30).json()
    with (
        replica(registry, shared_db, redis_url, tmp_path / "a") as (a, _),
        replica(registry, shared_db, redis_url, tmp_path / "b") as (b, _),
    ):
        assert send_history(a, history) == len(history)
        assert send_history(b, history) == 0  # the log is shared: nothing new
        send([a, b], live)
        monitoring["a"], monitoring["b"] = (requests.get(f"{u}/monitoring", params=window, timeout=30).json() for u in (a, b))
    one, two = logged(single_db), logged(shared_db)
    assert set(one) == set(two) == {r["transaction_id"] for r in live}
    assert {k: v[1:] for k, v in one.items()} == {k: v[1:] for k, v in two.items()}  # features and probability, exactly
    assert monitoring["a"] == monitoring["b"] == monitoring["single"]
    assert monitoring["single"]["labelled"] == len(live) and monitoring["single"]["precision"] is not None


def test_killing_a_replica_under_load_loses_no_acknowledged_prediction(registry, redis_url, databases, tmp_path):
    """Four clients, each request to either replica; a client whose replica dies sends the same
    transaction to the other (what a load balancer's retry does). Replica a is killed (SIGKILL, no
    drain) a third of the way in."""
    rows = frames(LIVE, LIVE).sort_values("timestamp", kind="stable").to_dict("records")
    db = databases[0]
    acknowledged: dict[str, str] = {}
    retried: list[str] = []
    lock = threading.Lock()
    with (
        replica(registry, db, redis_url, tmp_path / "a") as (a, process_a),
        replica(registry, db, redis_url, tmp_path / "b") as (b, _),
    ):
        urls = [a, b]

        def client(k: int) -> None:
            with requests.Session() as session:
                for i in range(k, len(rows), 4):
                    body = {"transaction": payload(rows[i])}
                    try:
                        answer = session.post(f"{urls[i % 2]}/predict", json=body, timeout=30)
                    except requests.ConnectionError:
                        with lock:
                            retried.append(rows[i]["transaction_id"])
                        answer = session.post(f"{b}/predict", json=body, timeout=30)
                    assert answer.status_code == 200, answer.text
                    with lock:
                        acknowledged[rows[i]["transaction_id"]] = answer.json()["prediction_id"]
                        if len(acknowledged) == len(rows) // 3 and process_a.poll() is None:
                            process_a.send_signal(signal.SIGKILL)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert process_a.wait(timeout=10) == -signal.SIGKILL
        assert requests.get(f"{b}/readyz", timeout=5).status_code == 200  # the survivor keeps answering
    assert len(acknowledged) == len(rows)
    assert retried  # the kill did cut requests off
    stored = logged(db)
    assert {k: v[0] for k, v in stored.items()} == acknowledged  # every acknowledged prediction, as answered
