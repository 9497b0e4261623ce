"""Hostile input against the live fraud service (uvicorn on loopback, SQLite and Postgres): every
input rule of serving/api_models.py answers 422 naming the field (413 for oversized bodies), with
a short error body, stores nothing, and the service still answers and still restarts."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests

from ecosystem_assets_tests.fraud.helpers import logged
from ecosystem_assets_tests.servers.uvicorn_thread import UvicornThread

pytestmark = pytest.mark.parametrize("fraud_service", ["inline", "postgres"], indirect=True)

TX = {"transaction_id": "t-1", "customer_id": "C00001", "terminal_id": "T00001", "amount": 42.5, "timestamp": "2026-08-20T10:15:00+02:00"}
MAX_ERROR_BYTES = 4096  # a 422 lists at most 20 errors, each with at most 100 characters of the input


def raw_tx(**fields: str) -> bytes:
    """A /predict body with some fields given as raw JSON text (to send what json.dumps would not)."""
    parts = [f'"{k}": {fields.pop(k) if k in fields else json.dumps(v)}' for k, v in TX.items()]
    parts += [f'"{k}": {v}' for k, v in fields.items()]
    return ('{"transaction": {' + ", ".join(parts) + "}}").encode()


def post(url: str, path: str, body: bytes | str, **kwargs) -> requests.Response:
    data = body.encode() if isinstance(body, str) else body
    return requests.post(f"{url}{path}", data=data, headers={"Content-Type": "application/json"}, timeout=60, **kwargs)


def stored(service) -> tuple[int, int, int]:
    """(predictions, labels, history rows) in the service's database."""
    import sqlalchemy as sa

    from ecosystem_assets.serving.store import history

    with service.store.engine.connect() as conn:
        loaded = conn.execute(sa.select(sa.func.count()).select_from(history)).scalar_one()
    return (*logged(service.store), int(loaded))


def assert_names_field(response: requests.Response, field: str | int, status: int = 422) -> None:
    assert response.status_code == status, (field, response.status_code, response.text[:500])
    assert len(response.content) <= MAX_ERROR_BYTES, (field, len(response.content))
    errors = response.json()["detail"]
    assert any(field in error["loc"] for error in errors), (field, errors)
    for error in errors:
        assert error["loc"][0] in ("body", "query")
        assert_short_input(error)


def assert_short_input(error: dict) -> None:
    """An error's input is an excerpt of what was sent, never all of it: at most 100 characters and
    "…", whatever its JSON type (an integer of 4,001 digits was once echoed in full)."""
    if "input" in error:
        shown = error["input"] if isinstance(error["input"], str) else json.dumps(error["input"])
        assert len(shown) <= 101, error


def raw_http(port: int, header: bytes, body: bytes = b"") -> bytes:
    """POST /predict with ``header`` and an unfinished ``body`` over a raw socket; the response's
    first bytes (the service must answer without waiting for the rest of the body)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" + header + b"\r\n" + body)
        return sock.recv(4096)


def iso(epoch: float, offset_hours: int = 2) -> str:
    return datetime.fromtimestamp(epoch, timezone(timedelta(hours=offset_hours))).isoformat()


PREDICT_CASES = {
    # strict types: nothing is coerced
    "string amount": ("amount", raw_tx(amount='"12"')),
    "bool amount": ("amount", raw_tx(amount="true")),
    "null amount": ("amount", raw_tx(amount="null")),
    "number as id": ("customer_id", raw_tx(customer_id="12345")),
    # numbers: finite, 0 ≤ amount ≤ FRAUD_MAX_AMOUNT
    "negative amount": ("amount", raw_tx(amount="-0.01")),
    "amount over the maximum": ("amount", raw_tx(amount="1000000.01")),
    "1e308": ("amount", raw_tx(amount="1e308")),
    "NaN literal": ("amount", raw_tx(amount="NaN")),
    "Infinity literal": ("amount", raw_tx(amount="Infinity")),
    "-Infinity literal": ("amount", raw_tx(amount="-Infinity")),
    "overflows to inf": ("amount", raw_tx(amount="1e400")),
    "a long string as amount": ("amount", raw_tx(amount=json.dumps("9" * 12_000))),
    "an integer of 4,001 digits": ("amount", raw_tx(amount="1" + "0" * 4_000)),
    "a negative integer of 4,001 digits": ("amount", raw_tx(amount="-1" + "0" * 4_000)),
    "an integer of 4,001 digits as an id": ("customer_id", raw_tx(customer_id="9" * 4_001)),
    "an integer of 5,000 digits": ("body", raw_tx(amount="1" + "0" * 4_999)),  # beyond what the parser reads
    # ids: 1–128 printable characters
    "empty id": ("transaction_id", raw_tx(transaction_id='""')),
    "129-character id": ("customer_id", raw_tx(customer_id=json.dumps("c" * 129))),
    "NUL in an id": ("terminal_id", raw_tx(terminal_id='"T\\u0000"')),
    "newline in an id": ("transaction_id", raw_tx(transaction_id='"t\\n1"')),
    "escape sequence in an id": ("customer_id", raw_tx(customer_id='"\\u001b[31mred"')),
    "lone surrogate escape": ("customer_id", raw_tx(customer_id='"C\\ud800"')),
    "invalid UTF-8 bytes": ("terminal_id", raw_tx(terminal_id='"T0000"').replace(b"T0000", b"T\xff\xfe0")),
    # timestamps: ISO-8601 with offset, 2000-01-01 ≤ t ≤ clock + FRAUD_MAX_CLOCK_SKEW_S
    "naive timestamp": ("timestamp", raw_tx(timestamp='"2026-08-20T10:15:00"')),
    "year 10000 in UTC": ("timestamp", raw_tx(timestamp='"9999-12-31T23:30:00-01:00"')),
    "year 0 in UTC": ("timestamp", raw_tx(timestamp='"0001-01-01T00:30:00+01:00"')),
    "before 2000": ("timestamp", raw_tx(timestamp='"1999-12-31T23:59:59Z"')),
    "Unix time in a string": ("timestamp", raw_tx(timestamp='"1700000000"')),
    "Unix time as a number": ("timestamp", raw_tx(timestamp="1700000000")),
    "not a date": ("timestamp", raw_tx(timestamp='"2026-02-30T10:00:00+00:00"')),
    # shape
    "unknown field": ("is_vip", raw_tx(is_vip="true")),
    "missing field": ("customer_id", json.dumps({"transaction": {k: v for k, v in TX.items() if k != "customer_id"}})),
    "a key of 10,000 characters": ("x" * 100 + "…", raw_tx(**{"x" * 10_000: "1"})),
    # not JSON at all
    "malformed JSON": ("body", b'{"transaction": {"amount": 1,'),
    "empty body": ("body", b""),
    "trailing garbage": ("body", json.dumps({"transaction": TX}).encode() + b" tail"),
    "a list": ("body", b"[1, 2, 3]"),
    "nested 8,000 deep": ("body", b"[" * 8000 + b"]" * 8000),
}


def test_every_hostile_predict_gets_422_naming_the_field_and_stores_nothing(fraud_service):
    url = fraud_service.url
    for field, body in PREDICT_CASES.values():
        assert_names_field(post(url, "/predict", body), field)
    assert stored(fraud_service) == (0, 0, 0)
    assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
    assert post(url, "/predict", json.dumps({"transaction": TX})).status_code == 200  # still serving


def test_timestamps_beyond_the_clock_or_the_history_get_422(fraud_service):
    url, now = fraud_service.url, time.time()
    late = post(url, "/predict", json.dumps({"transaction": {**TX, "timestamp": iso(now + 300 + 60)}}))
    assert_names_field(late, "timestamp")
    assert "clock" in late.json()["detail"][0]["msg"]
    assert stored(fraud_service) == (0, 0, 0)

    # The history reaches 37 days back from the newest transaction seen (not from the clock):
    # replaying past days works, scoring something older than the history can place does not.
    assert post(url, "/predict", json.dumps({"transaction": TX})).status_code == 200
    newest = datetime.fromisoformat(TX["timestamp"])
    too_old = (newest - timedelta(days=37, seconds=1)).isoformat()
    old = post(url, "/predict", json.dumps({"transaction": {**TX, "transaction_id": "t-old", "timestamp": too_old}}))
    assert_names_field(old, "timestamp")
    assert "history" in old.json()["detail"][0]["msg"]
    history = post(url, "/history", json.dumps({"transactions": [{**TX, "transaction_id": "h-old", "timestamp": too_old}]}))
    assert_names_field(history, "timestamp")
    oldest_ok = (newest - timedelta(days=37)).isoformat()
    assert post(url, "/predict", json.dumps({"transaction": {**TX, "transaction_id": "t-37", "timestamp": oldest_ok}})).status_code == 200
    assert stored(fraud_service) == (2, 0, 0)


def test_hostile_feedback_and_history(fraud_service):
    url = fraud_service.url
    answer = post(url, "/predict", json.dumps({"transaction": TX})).json()
    pid = answer["prediction_id"]
    feedback_cases = {
        "string label": ("is_fraud", json.dumps({"prediction_id": pid, "is_fraud": "yes"})),
        "number label": ("is_fraud", json.dumps({"prediction_id": pid, "is_fraud": 1})),
        "NUL in the id": ("prediction_id", json.dumps({"prediction_id": "\u0000", "is_fraud": True})),
        "lone surrogate in the id": ("prediction_id", '{"prediction_id": "\\udfff", "is_fraud": true}'),
        "long id": ("prediction_id", json.dumps({"prediction_id": "p" * 129, "is_fraud": True})),
        "a 900-digit label": ("is_fraud", f'{{"prediction_id": "{pid}", "is_fraud": {"1" * 900}}}'),
        "malformed": ("body", '{"prediction_id": '),
    }
    for field, body in feedback_cases.values():
        assert_names_field(post(url, "/feedback", body), field)

    labelled = {**TX, "transaction_id": "h-1", "is_fraud": False}
    history_cases = {
        "string label": ("is_fraud", {"transactions": [{**labelled, "is_fraud": "yes"}]}),
        "bool amount": ("amount", {"transactions": [labelled, {**labelled, "transaction_id": "h-2", "amount": True}]}),
        "year 10000": ("timestamp", {"transactions": [{**labelled, "timestamp": "9999-12-31T23:30:00-01:00"}]}),
        "control character": ("customer_id", {"transactions": [{**labelled, "customer_id": "C\u0007"}]}),
        "not a list": ("transactions", {"transactions": {"a": 1}}),
    }
    for field, body in history_cases.values():
        response = post(url, "/history", json.dumps(body))
        assert_names_field(response, field)
    # The second transaction is the bad one: its position is named.
    response = post(url, "/history", json.dumps(history_cases["bool amount"][1]))
    assert response.json()["detail"][0]["loc"] == ["body", "transactions", 1, "amount"]

    # 50,001 transactions: over the count limit (the body itself is under 16 MiB).
    many = {"transactions": [{**labelled, "transaction_id": f"h-{i}"} for i in range(50_001)]}
    too_many = post(url, "/history", json.dumps(many))
    assert_names_field(too_many, "transactions")
    # 5,000 bad transactions: 20 errors listed, the total given, the body still short.
    bad = {"transactions": [{**labelled, "transaction_id": f"h-{i}", "amount": "1"} for i in range(5_000)]}
    response = post(url, "/history", json.dumps(bad))
    assert_names_field(response, "amount")
    assert len(response.json()["detail"]) == 20 and response.json()["errors_total"] == 5_000
    # 100 amounts of 4,001 digits (400 kB): 20 errors, each echoing at most 100 digits.
    huge = ", ".join(
        f'{{"transaction_id": "h-{i}", "customer_id": "C1", "terminal_id": "T1", "amount": 1{"0" * 4_000}, '
        f'"timestamp": "2026-08-20T10:15:00+02:00", "is_fraud": false}}'
        for i in range(100)
    )
    response = post(url, "/history", '{"transactions": [' + huge + "]}")
    assert response.status_code == 422, response.text[:500]
    errors = response.json()["detail"]
    assert len(errors) == 20 and response.json()["errors_total"] == 100
    assert [error["loc"] for error in errors] == [["body", "transactions", i, "amount"] for i in range(20)]
    for error in errors:
        assert_short_input(error)
        assert error["input"] == "1" + "0" * 99 + "…"
    assert len(response.content) <= 20 * 300  # was 80 kB: every digit of 20 amounts
    assert stored(fraud_service) == (1, 0, 0)


def test_oversized_bodies_get_413_before_parsing(fraud_service):
    url = fraud_service.url
    padding = "x" * 17_000
    big = json.dumps({"transaction": {**TX, "pad": padding}})
    response = post(url, "/predict", big)
    assert response.status_code == 413 and len(response.content) < 200

    # Refused on the declared length alone: no body byte is ever sent.
    assert raw_http(fraud_service.server.port, b"Content-Length: 1000000000\r\n").startswith(b"HTTP/1.1 413")
    # A chunked body (no Content-Length) that never ends: refused once 16 KiB have arrived.
    chunk = b"1000\r\n" + b" " * 4096 + b"\r\n"
    assert raw_http(fraud_service.server.port, b"Transfer-Encoding: chunked\r\n", chunk * 6).startswith(b"HTTP/1.1 413")
    assert post(url, "/feedback", json.dumps({"prediction_id": "p", "is_fraud": True, "pad": "x" * 2000})).status_code == 413
    huge_history = b'{"transactions": [' + b" " * (16 * 1024 * 1024) + b"]}"
    response = post(url, "/history", huge_history)
    assert response.status_code == 413 and len(response.content) < 200
    # A large body under the limit is still parsed, and its 422 does not echo it (once: 59 MB).
    response = post(url, "/history", json.dumps({"transactions": [{**TX, "amount": "1" * 8_000_000}]}))
    assert_names_field(response, "amount")
    assert stored(fraud_service) == (0, 0, 0)
    assert requests.get(f"{url}/healthz", timeout=10).status_code == 200


def test_accepted_edge_values_survive_a_restart(fraud_service, registry):
    """Every input at the edge of the rules is accepted, stored, and a new service over the same
    database warms up from it (the warm-up rebuilds the history from every stored row): once,
    year 10000 in a stored row stopped the service from starting."""
    from ecosystem_assets.serving.app import create_app

    url, now = fraud_service.url, time.time()
    edge = [
        {**TX, "transaction_id": "e-zero", "amount": 0},
        {**TX, "transaction_id": "e-max", "amount": 1_000_000},
        {**TX, "transaction_id": "e-max-float", "amount": 999_999.99},
        {**TX, "transaction_id": "e-unicode", "customer_id": "客户-Ünïcode-🙂", "terminal_id": "テルミナル 7"},
        {**TX, "transaction_id": "i" * 128, "customer_id": "c" * 128, "terminal_id": "t" * 128},
        {**TX, "transaction_id": "e-offset", "timestamp": "2026-08-20T10:15:00+23:59"},
        {**TX, "transaction_id": "e-west", "timestamp": "2026-08-20T10:15:00-12:00"},
        {**TX, "transaction_id": "e-future", "timestamp": iso(now + 300 - 1, offset_hours=-1)},
    ]
    for tx in edge:
        response = post(url, "/predict", json.dumps({"transaction": tx}))
        assert response.status_code == 200, (tx, response.text)
    oldest = fraud_service.app.state.scorer.oldest_accepted()
    oldest_tx = {**TX, "transaction_id": "e-oldest", "timestamp": iso(oldest + 0.001, offset_hours=-11)}
    assert post(url, "/predict", json.dumps({"transaction": oldest_tx})).status_code == 200
    history = [
        {**TX, "transaction_id": "h-edge", "amount": 0, "is_fraud": None, "timestamp": iso(oldest + 1)},
        {**TX, "transaction_id": "h-max", "amount": 1_000_000, "is_fraud": True, "timestamp": iso(now - 60)},
    ]
    response = post(url, "/history", json.dumps({"transactions": history}))
    assert response.status_code == 200 and response.json() == {"received": 2, "added": 2}
    counts = stored(fraud_service)
    assert counts == (len(edge) + 1, 0, 2)

    restarted = create_app(fraud_service.store.url, registry, poll_s=0.2)
    with UvicornThread(restarted) as server:
        health = requests.get(f"{server.url}/healthz", timeout=10)
        assert health.status_code == 200, health.text
        assert restarted.state.scorer.features.newest_seen == pytest.approx(now + 299, abs=1)  # every row was read back
        again = post(server.url, "/predict", json.dumps({"transaction": {**TX, "transaction_id": "after-restart", "timestamp": iso(now)}}))
        assert again.status_code == 200, again.text
    assert stored(fraud_service) == (counts[0] + 1, 0, 2)


def test_unknown_paths_add_one_metric_series(fraud_service):
    import random
    import re

    url = fraud_service.url
    session = requests.Session()
    for i in range(3_000):
        path = "/" + "".join(random.choices("abcdefghijklmnopqrstuvwxyz0123456789/-_", k=random.randint(1, 40)))
        assert session.get(f"{url}{path}-{i}", timeout=10).status_code == 404
    assert session.post(f"{url}/predict", json={"transaction": TX}, timeout=10).status_code == 200
    assert session.get(f"{url}/predict", timeout=10).status_code == 405
    metrics = session.get(f"{url}/metrics", timeout=10).text
    series = re.findall(r'^fraud_requests_total\{endpoint="([^"]*)",status="(\d+)"\} (\S+)$', metrics, re.M)
    assert ("unmatched", "404", "3000.0") in series
    assert ("/predict", "200", "1.0") in series and ("/predict", "405", "1.0") in series
    assert {endpoint for endpoint, _, _ in series} <= {"unmatched", "/predict", "/metrics", "/healthz"}
