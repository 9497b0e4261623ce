"""Bearer tokens on the live fraud service (uvicorn on loopback): two scopes, 401/403, open probes,
the project's own clients (monitoring resource, replay) sending them, and `ecosystem-assets serve`
refusing to run open on a non-loopback address. Tokens never appear in a response or a log."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from ecosystem_assets_tests.fraud.helpers import DRIFT, frames, logged
from ecosystem_assets_tests.servers.uvicorn_thread import UvicornThread

PREDICT_TOKEN = "predict-9f2c1e7a4b6d8e0f1a3c5e7b9d1f3a5c"
FEEDBACK_TOKEN = "feedback-2b4d6f8a0c1e3a5c7e9b1d3f5a7c9e1b"
TX = {"transaction_id": "t-1", "customer_id": "C00001", "terminal_id": "T00001", "amount": 42.5, "timestamp": "2026-08-20T10:15:00+02:00"}
BIN = Path(sys.executable).parent


class Secured:
    def __init__(self, app, url: str):
        self.app, self.url = app, url


@pytest.fixture
def secured(registry: str, tmp_path: Path) -> Iterator[Secured]:
    from ecosystem_assets.serving.app import create_app

    app = create_app(
        f"sqlite:///{tmp_path / 'service.db'}", registry, poll_s=0.2, predict_token=PREDICT_TOKEN, feedback_token=FEEDBACK_TOKEN
    )
    with UvicornThread(app) as server:
        yield Secured(app, server.url)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_no_token(text: str) -> None:
    assert PREDICT_TOKEN not in text and FEEDBACK_TOKEN not in text
    assert PREDICT_TOKEN[9:25] not in text and FEEDBACK_TOKEN[9:25] not in text  # not even a part


def test_each_endpoint_needs_its_scope_token(secured, caplog):
    caplog.set_level(logging.DEBUG)
    url = secured.url
    scored = requests.post(f"{url}/predict", json={"transaction": TX}, headers=bearer(PREDICT_TOKEN), timeout=30)
    assert scored.status_code == 200
    calls = {  # endpoint → (request, its scope's token, the other scope's token, status with the right token)
        "/predict": (
            lambda h: requests.post(f"{url}/predict", json={"transaction": {**TX, "transaction_id": "t-2"}}, headers=h, timeout=30),
            PREDICT_TOKEN,
            FEEDBACK_TOKEN,
        ),
        "/feedback": (
            lambda h: requests.post(
                f"{url}/feedback", headers=h, timeout=30, json={"prediction_id": scored.json()["prediction_id"], "is_fraud": True}
            ),
            FEEDBACK_TOKEN,
            PREDICT_TOKEN,
        ),
        "/history": (
            lambda h: requests.post(
                f"{url}/history", headers=h, timeout=30, json={"transactions": [{**TX, "transaction_id": "h-1", "is_fraud": False}]}
            ),
            FEEDBACK_TOKEN,
            PREDICT_TOKEN,
        ),
        "/monitoring": (
            lambda h: requests.get(f"{url}/monitoring", params={"window_hours": 24}, headers=h, timeout=30),
            FEEDBACK_TOKEN,
            PREDICT_TOKEN,
        ),
    }
    responses = []
    for endpoint, (call, right, other) in calls.items():
        for headers in (
            {},
            bearer("wrong-token"),
            {"Authorization": right},
            {"Authorization": f"Basic {right}"},
            bearer(right + "x"),
            bearer(right[:-1]),
            {"Authorization": "Bearer é€".encode()},
        ):
            denied = call(headers)
            assert denied.status_code == 401, (endpoint, denied.status_code, denied.text)
            assert denied.headers["WWW-Authenticate"].startswith("Bearer")
            responses.append(denied)
        forbidden = call(bearer(other))
        assert forbidden.status_code == 403, (endpoint, forbidden.text)
        allowed = call(bearer(right))
        assert allowed.status_code == 200, (endpoint, allowed.text)
        responses += [forbidden, allowed]
    assert logged(secured.app.state.store) == (2, 1)  # only the authorised requests were stored
    for path in ("/healthz", "/metrics", "/openapi.json"):  # probes and Prometheus need no token
        assert requests.get(f"{url}{path}", timeout=30).status_code == 200
    # /docs works offline: Swagger UI's script and styles come from the service itself, and are served.
    docs = requests.get(f"{url}/docs", timeout=30)
    assert docs.status_code == 200 and "cdn" not in docs.text.lower()
    assets = re.findall(r"""(?:src|href)=["']?(/[^"' >]+)""", docs.text)
    assert {a.rsplit("/", 1)[-1] for a in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css"}
    for asset in assets:
        assert requests.get(f"{url}{asset}", timeout=30).status_code == 200, asset
    paths = requests.get(f"{url}/openapi.json", timeout=30).json()["paths"]
    body = paths["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]["transaction"]["required"]) == set(TX)  # bodies are documented for clients
    for response in responses:
        assert_no_token(response.text + json.dumps(dict(response.headers)))
    assert_no_token(caplog.text)


def test_identical_tokens_are_refused_without_showing_them(registry: str, tmp_path: Path):
    from ecosystem_assets.serving.app import create_app
    from ecosystem_assets.serving.auth import TokenError

    with pytest.raises(TokenError) as refused:
        create_app(f"sqlite:///{tmp_path / 'service.db'}", registry, predict_token=PREDICT_TOKEN, feedback_token=PREDICT_TOKEN)
    assert "identical" in str(refused.value)
    assert_no_token(str(refused.value) + repr(refused.value))


def test_project_clients_send_their_tokens(secured, monkeypatch, caplog):
    """The monitoring resource (wired with dg.EnvVar) and `ecosystem-assets replay` (bearer())
    against the secured service; with a wrong token they fail, naming the status, not the token."""
    import dagster as dg

    from ecosystem_assets.fraud.replay import replay_day, send_history
    from ecosystem_assets.resources.wiring import build_resources
    from ecosystem_assets.settings import Settings

    caplog.set_level(logging.DEBUG)
    url = secured.url
    past = frames(DRIFT - timedelta(days=2), DRIFT - timedelta(days=2)).head(200)
    day = frames(DRIFT - timedelta(days=1), DRIFT - timedelta(days=1)).head(40)
    assert send_history(url, past, feedback_token=FEEDBACK_TOKEN) == 200
    report = replay_day(url, "day", day, workers=2, predict_token=PREDICT_TOKEN, feedback_token=FEEDBACK_TOKEN)
    assert report.transactions == 40 and report.versions == {"1"}
    with pytest.raises(requests.HTTPError) as denied:
        replay_day(url, "day", day.head(1), workers=1, predict_token=FEEDBACK_TOKEN, feedback_token=FEEDBACK_TOKEN)
    assert denied.value.response.status_code == 403
    assert_no_token(str(denied.value))

    end = datetime.combine(DRIFT, datetime.min.time(), UTC).timestamp()  # the replayed day's end
    for token, expected in ((FEEDBACK_TOKEN, None), ("not-the-token", "HTTP 401"), (PREDICT_TOKEN, "HTTP 403")):
        monkeypatch.setenv("FRAUD_FEEDBACK_TOKEN", token)
        settings = Settings.from_env({**os.environ, "FRAUD_SERVICE_URL": url})
        with dg.build_resources({"fraud_service": build_resources(settings)["fraud_service"]}) as resources:
            if expected is None:
                summary = resources.fraud_service.monitoring(24.0, end=end)
                assert summary["predictions"] == 40 and summary["labelled"] == 40
                continue
            with pytest.raises(RuntimeError) as failed:
                resources.fraud_service.monitoring(24.0, end=end)
            assert expected in str(failed.value)
            assert_no_token(str(failed.value))
    assert_no_token(caplog.text)


def serve(host: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ECOSYSTEM_", "FRAUD_", "MLFLOW_TRACKING"))}
    clean.update(ECOSYSTEM_HOME=str(tmp_path / "home"), **env)
    return subprocess.run(
        [str(BIN / "ecosystem-assets"), "serve", "--host", host, "--port", "1"], env=clean, capture_output=True, text=True, timeout=120
    )


def test_serve_refuses_to_run_open_on_a_non_loopback_address(tmp_path: Path):
    open_ = serve("0.0.0.0", {}, tmp_path)
    assert open_.returncode != 0
    assert "refusing to serve on 0.0.0.0 without authentication" in open_.stderr
    assert "FRAUD_PREDICT_TOKEN and FRAUD_FEEDBACK_TOKEN not set" in open_.stderr

    half = serve("10.1.2.3", {"FRAUD_PREDICT_TOKEN": PREDICT_TOKEN}, tmp_path)
    assert half.returncode != 0 and "FRAUD_FEEDBACK_TOKEN not set" in half.stderr
    assert_no_token(half.stdout + half.stderr)

    same = serve("0.0.0.0", {"FRAUD_PREDICT_TOKEN": PREDICT_TOKEN, "FRAUD_FEEDBACK_TOKEN": PREDICT_TOKEN}, tmp_path)
    assert same.returncode != 0 and "identical" in same.stderr
    assert_no_token(same.stdout + same.stderr)


def send(url: str, method: str, path: str, headers: list[tuple[str, str]], body: dict | None = None) -> tuple[int, dict, dict]:
    """One request with ``headers`` as given, a name possibly repeated (requests would merge them);
    the status, the JSON body and the headers of the answer."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.putrequest(method, path)
        for name, value in headers:
            conn.putheader(name, value)
        if data is not None:
            conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data)
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read()), dict(answer.getheaders())
    finally:
        conn.close()


def test_two_authorization_headers_are_refused_on_every_route(secured):
    """Which of two Authorization headers counts once depended on the route (/predict's fast path
    read the last, FastAPI the first): a request carrying two is refused everywhere, with one answer."""
    url = secured.url
    scored = requests.post(f"{url}/predict", json={"transaction": TX}, headers=bearer(PREDICT_TOKEN), timeout=30)
    assert scored.status_code == 200
    routes = {  # path → (method, its scope's token, the other scope's token, a body)
        "/predict": ("POST", PREDICT_TOKEN, FEEDBACK_TOKEN, {"transaction": {**TX, "transaction_id": "t-2"}}),
        "/feedback": ("POST", FEEDBACK_TOKEN, PREDICT_TOKEN, {"prediction_id": scored.json()["prediction_id"], "is_fraud": True}),
        "/history": ("POST", FEEDBACK_TOKEN, PREDICT_TOKEN, {"transactions": [{**TX, "transaction_id": "h-1", "is_fraud": False}]}),
        "/monitoring?window_hours=24": ("GET", FEEDBACK_TOKEN, PREDICT_TOKEN, None),
    }
    for path, (method, right, other, body) in routes.items():
        for pair in ((right, "wrong"), ("wrong", right), (right, right), (other, right), (right, other)):
            headers = [("Content-Type", "application/json"), *(("Authorization", f"Bearer {token}") for token in pair)]
            status, answer, response_headers = send(url, method, path, headers, body)
            assert status == 400, (path, status, answer)
            assert answer == {"detail": "more than one Authorization header: send exactly one"}, (path, answer)
            assert response_headers["www-authenticate"] == 'Bearer error="invalid_request"'
            assert_no_token(json.dumps(answer) + json.dumps(response_headers))
        status, answer, _ = send(url, method, path, [("Content-Type", "application/json"), ("Authorization", f"Bearer {right}")], body)
        assert status == 200, (path, status, answer)  # one header: the same request is served
    assert logged(secured.app.state.store) == (2, 1)


def test_with_tokens_bodies_are_still_json_only_and_any_host_is_answered(secured):
    """The Content-Type rule holds with tokens too; the loopback-Host rule is only for a service
    without them (on Kubernetes, with tokens, clients address the Service by name)."""
    url = secured.url
    bodies = {
        "/predict": ({"transaction": {**TX, "transaction_id": "t-plain"}}, PREDICT_TOKEN),
        "/feedback": ({"prediction_id": "p", "is_fraud": True}, FEEDBACK_TOKEN),
        "/history": ({"transactions": [{**TX, "transaction_id": "h-plain", "is_fraud": False}]}, FEEDBACK_TOKEN),
    }
    for path, (body, token) in bodies.items():
        for content_type in ("text/plain", "application/x-www-form-urlencoded"):
            refused = requests.post(
                f"{url}{path}", data=json.dumps(body), headers={**bearer(token), "Content-Type": content_type}, timeout=30
            )
            assert refused.status_code == 415, (path, content_type, refused.text)
            assert refused.json()["detail"] == (
                f"Content-Type {content_type!r}: request bodies are JSON, sent with Content-Type: application/json"
            )
    assert logged(secured.app.state.store) == (0, 0)

    in_cluster = {"Host": "fraud-service.ecosystem:8000"}
    scored = requests.post(f"{url}/predict", json=bodies["/predict"][0], headers={**bearer(PREDICT_TOKEN), **in_cluster}, timeout=30)
    assert scored.status_code == 200, scored.text
    monitoring = requests.get(f"{url}/monitoring", headers={**bearer(FEEDBACK_TOKEN), **in_cluster}, timeout=30)
    assert monitoring.status_code == 200, monitoring.text
    assert requests.get(f"{url}/readyz", headers={"Host": "10.0.3.17:8000"}, timeout=30).status_code == 200  # a kubelet probe
