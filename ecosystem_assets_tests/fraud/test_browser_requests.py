"""A web page in the developer's browser against the open fraud service (no tokens, `make serve` on
loopback, under uvicorn as in the tests' fixture). Two ways in, both closed:

- CORS "simple" requests: a page may POST text/plain, form and multipart bodies to any address
  without asking first; the service takes bodies only as ``Content-Type: application/json`` (415),
  which a page can send only after a CORS preflight, never granted here;
- DNS rebinding: a name of the attacker's that resolves to 127.0.0.1 makes the service same-origin
  with the page; its requests then carry that name as their Host, and an open service answers only
  loopback names (400).
"""

from __future__ import annotations

import json
import socket

import requests

from ecosystem_assets_tests.fraud.helpers import logged

TX = {"transaction_id": "t-1", "customer_id": "C00001", "terminal_id": "T00001", "amount": 42.5, "timestamp": "2026-08-20T10:15:00+02:00"}
EVIL = "http://evil.example"


def stored(service) -> tuple[int, int, int]:
    """(predictions, labels, history rows) in the service's database."""
    import sqlalchemy as sa

    from ecosystem_assets.serving.store import history

    with service.store.engine.connect() as conn:
        loaded = conn.execute(sa.select(sa.func.count()).select_from(history)).scalar_one()
    return (*logged(service.store), int(loaded))


def raw(port: int, request: bytes) -> tuple[int, bytes]:
    """One raw HTTP request (headers a client library would not send); the status and the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_simple_cross_origin_requests_cannot_write(fraud_service):
    url = fraud_service.url
    scored = requests.post(f"{url}/predict", json={"transaction": TX}, timeout=30)
    assert scored.status_code == 200, scored.text
    pid = scored.json()["prediction_id"]
    bodies = {
        "/predict": json.dumps({"transaction": {**TX, "transaction_id": "t-evil"}}),
        "/feedback": json.dumps({"prediction_id": pid, "is_fraud": True}),
        "/history": json.dumps({"transactions": [{**TX, "transaction_id": "h-evil", "is_fraud": True}]}),
    }
    content_types = {  # what fetch() and <form> send without a preflight, and other refusals
        "text/plain": {"Content-Type": "text/plain"},
        "text/plain with charset": {"Content-Type": "text/plain;charset=UTF-8"},
        "form": {"Content-Type": "application/x-www-form-urlencoded"},
        "multipart": {"Content-Type": "multipart/form-data; boundary=x"},
        "none": {},
        "JSON in another charset": {"Content-Type": "application/json; charset=iso-8859-1"},
        "a JSON look-alike": {"Content-Type": "application/jsonp"},
    }
    for path, body in bodies.items():
        for name, content_type in content_types.items():
            refused = requests.post(f"{url}{path}", data=body.encode(), headers={"Origin": EVIL, **content_type}, timeout=30)
            assert refused.status_code == 415, (path, name, refused.status_code, refused.text)
            detail = refused.json()["detail"]
            if name == "JSON in another charset":
                assert detail == "Content-Type 'application/json; charset=iso-8859-1': JSON bodies are UTF-8 (charset=utf-8, or no charset)"
            else:
                assert detail.endswith(": request bodies are JSON, sent with Content-Type: application/json"), (path, name, detail)
    assert stored(fraud_service) == (1, 0, 0)  # no prediction, no label, no history row

    # application/json, in the forms RFC 8259 and HTTP allow: accepted on every route.
    for content_type in ("application/json; charset=utf-8", "Application/JSON", 'application/json;charset="UTF-8"'):
        tx = {**TX, "transaction_id": f"t-{content_type}"}
        accepted = requests.post(f"{url}/predict", data=json.dumps({"transaction": tx}), headers={"Content-Type": content_type}, timeout=30)
        assert accepted.status_code == 200, (content_type, accepted.text)
    utf8 = {"Content-Type": "application/json; charset=utf-8"}
    assert requests.post(f"{url}/feedback", data=bodies["/feedback"], headers=utf8, timeout=30).json()["status"] == "recorded"
    assert requests.post(f"{url}/history", data=bodies["/history"], headers=utf8, timeout=30).json() == {"received": 1, "added": 1}
    assert stored(fraud_service) == (4, 1, 1)


def test_the_open_service_answers_only_loopback_names(fraud_service):
    """The connection always goes to 127.0.0.1: only the Host header differs, as after a rebinding."""
    url, port = fraud_service.url, fraud_service.server.port
    for host in ("rebind.evil.example", f"rebind.evil.example:{port}", "localhost.evil.example", "127.0.0.1.nip.io", "10.0.0.5"):
        headers = {"Host": host, "Origin": f"http://{host}"}
        for method, path, body in (
            ("GET", "/monitoring", None),
            ("GET", "/healthz", None),
            ("POST", "/predict", {"transaction": {**TX, "transaction_id": "t-rebound"}}),  # the fast path (front.py)
            ("POST", "/feedback", {"prediction_id": "p", "is_fraud": True}),
            ("POST", "/history", {"transactions": [{**TX, "transaction_id": "h-rebound", "is_fraud": True}]}),
        ):
            refused = requests.request(method, f"{url}{path}", json=body, headers=headers, timeout=30)
            assert refused.status_code == 400, (host, path, refused.status_code, refused.text)
            assert f"Host {host!r} is not a loopback name" in refused.json()["detail"], refused.text
    assert stored(fraud_service) == (0, 0, 0)

    for host in (f"localhost:{port}", "localhost", "LOCALHOST", f"127.0.0.1:{port}", f"[::1]:{port}", "[::1]"):
        answer = requests.get(f"{url}/monitoring", params={"window_hours": 24}, headers={"Host": host}, timeout=30)
        assert answer.status_code == 200, (host, answer.text)
    tx = {**TX, "transaction_id": "t-local"}
    assert requests.post(f"{url}/predict", json={"transaction": tx}, headers={"Host": f"[::1]:{port}"}, timeout=30).status_code == 200

    # No Host (HTTP/1.0), two of them, or a malformed one: refused too, never a 500.
    for request in (
        b"GET /healthz HTTP/1.0\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: rebind.evil.example\r\nConnection: close\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: [::1]x\r\nConnection: close\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:80:80\r\nConnection: close\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: \xe9\xff\r\nConnection: close\r\n\r\n",
    ):
        status, body = raw(port, request)
        assert status == 400, (request, status, body)
        assert b"a loopback name" in body, (request, body)
    assert stored(fraud_service) == (1, 0, 0)
