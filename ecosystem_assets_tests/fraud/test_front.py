"""POST /predict is answered by serving/front.py before FastAPI routes it: the fast path must give
exactly the answers of the documented FastAPI route, for every kind of refusal. Both stacks of one
app are called in-process over ASGI (httpx.ASGITransport); without the app's lifespan no champion
is loaded, so a valid request gets the 503 "no champion" answer from both. (The same refusals over
real HTTP: test_auth.py, test_browser_requests.py.)"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

PREDICT_TOKEN = "predict-5d1e7c3a9b2f4e6a8c0d2f4b6a8e0c2d"
FEEDBACK_TOKEN = "feedback-8a6c4e2f0d9b7a5c3e1f9d7b5a3c1e9f"
TX = {"transaction_id": "t-1", "customer_id": "C00001", "terminal_id": "T00001", "amount": 42.5, "timestamp": "2026-08-20T10:15:00+02:00"}
JSON_TYPE = {"Content-Type": "application/json"}


def body(**changes: object) -> bytes:
    return json.dumps({"transaction": {**TX, **changes}}).encode()


CASES: dict[str, tuple[dict | list, bytes]] = {  # name → (headers, body); a list of pairs may repeat a header
    "no token": (JSON_TYPE, body()),
    "not a bearer scheme": ({**JSON_TYPE, "Authorization": f"Basic {PREDICT_TOKEN}"}, body()),
    "wrong token": ({**JSON_TYPE, "Authorization": "Bearer nope"}, body()),
    "the other scope's token": ({**JSON_TYPE, "Authorization": f"Bearer {FEEDBACK_TOKEN}"}, body()),
    "too large": ({**JSON_TYPE, "Authorization": f"Bearer {PREDICT_TOKEN}"}, b" " * 20_000 + body()),
    "malformed JSON": ({**JSON_TYPE, "Authorization": f"Bearer {PREDICT_TOKEN}"}, b'{"transaction": {'),
    "three bad fields": (
        {**JSON_TYPE, "Authorization": f"Bearer {PREDICT_TOKEN}"},
        body(amount="12", customer_id="C\u0000", timestamp="2026-08-20T10:15:00"),
    ),
    "far future": ({**JSON_TYPE, "Authorization": f"Bearer {PREDICT_TOKEN}"}, body(timestamp="9999-12-31T23:30:00-01:00")),
    "lone surrogate": ({**JSON_TYPE, "Authorization": f"Bearer {PREDICT_TOKEN}"}, body().replace(b"C00001", b"C\\ud800")),
    "valid (no champion yet)": ({**JSON_TYPE, "Authorization": f"Bearer {PREDICT_TOKEN}"}, body()),
    # What a web page can send without a CORS preflight (text/plain, forms), and other non-JSON types.
    "text/plain": ({"Content-Type": "text/plain", "Authorization": f"Bearer {PREDICT_TOKEN}"}, body()),
    "form": ({"Content-Type": "application/x-www-form-urlencoded", "Authorization": f"Bearer {PREDICT_TOKEN}"}, body()),
    "no content type": ({"Authorization": f"Bearer {PREDICT_TOKEN}"}, body()),
    "charset latin-1": ({"Content-Type": "application/json; charset=latin-1", "Authorization": f"Bearer {PREDICT_TOKEN}"}, body()),
    "two content types": (
        [("Content-Type", "text/plain"), ("Content-Type", "application/json"), ("Authorization", f"Bearer {PREDICT_TOKEN}")],
        body(),
    ),
    "charset utf-8": ({"Content-Type": "application/json; charset=UTF-8", "Authorization": f"Bearer {PREDICT_TOKEN}"}, body()),
    "text/plain, no token": ({"Content-Type": "text/plain"}, body()),
    # Two Authorization headers: the fast path once read the last, FastAPI the first.
    "two tokens, wrong first": (
        [*JSON_TYPE.items(), ("Authorization", "Bearer nope"), ("Authorization", f"Bearer {PREDICT_TOKEN}")],
        body(),
    ),
    "two tokens, right first": (
        [*JSON_TYPE.items(), ("Authorization", f"Bearer {PREDICT_TOKEN}"), ("Authorization", f"Bearer {FEEDBACK_TOKEN}")],
        body(),
    ),
    # DNS rebinding: a loopback service reached under an attacker's name.
    "rebinding host": ({**JSON_TYPE, "Authorization": f"Bearer {PREDICT_TOKEN}", "Host": "rebind.evil.example"}, body()),
    "loopback host [::1]": ({**JSON_TYPE, "Authorization": f"Bearer {PREDICT_TOKEN}", "Host": "[::1]:8000"}, body()),
}


async def answers(app, cases: dict[str, tuple[dict | list, bytes]]) -> dict[str, tuple]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost:8000") as client:
        out = {}
        for name, (headers, content) in cases.items():
            response = await client.post("/predict", content=content, headers=headers)
            out[name] = (
                response.status_code,
                response.headers.get("content-type"),
                response.headers.get("www-authenticate"),
                response.headers.get("content-length"),
                response.content,
            )
        return out


@pytest.mark.parametrize("tokens", [True, False], ids=["secured", "open"])
def test_fast_path_answers_exactly_as_the_fastapi_route(tokens: bool, tmp_path: Path):
    from ecosystem_assets.serving.app import create_app
    from ecosystem_assets.serving.front import ServiceFront

    def app():
        return create_app(
            f"sqlite:///{tmp_path / 'service.db'}",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            predict_token=PREDICT_TOKEN if tokens else None,
            feedback_token=FEEDBACK_TOKEN if tokens else None,
        )

    fast = app()
    routed = app()
    routed.user_middleware = [m for m in routed.user_middleware if m.cls is not ServiceFront]  # before the stack is built
    assert len(routed.user_middleware) == len(fast.user_middleware) - 1

    via_fast, via_route = asyncio.run(answers(fast, CASES)), asyncio.run(answers(routed, CASES))
    for name in CASES:
        assert via_fast[name] == via_route[name], name
    statuses = {name: answer[0] for name, answer in via_fast.items()}
    if tokens:
        assert statuses["no token"] == statuses["wrong token"] == statuses["not a bearer scheme"] == 401
        assert statuses["the other scope's token"] == 403
    else:
        assert statuses["no token"] == statuses["wrong token"] == 503  # open scope: the token is not looked at
    assert statuses["too large"] == 413
    assert statuses["malformed JSON"] == statuses["three bad fields"] == statuses["far future"] == statuses["lone surrogate"] == 422
    assert len(json.loads(via_fast["three bad fields"][4])["detail"]) == 3
    assert statuses["valid (no champion yet)"] == statuses["charset utf-8"] == statuses["loopback host [::1]"] == 503
    for name in ("text/plain", "form", "no content type", "charset latin-1", "two content types"):
        assert statuses[name] == 415, name
        assert "application/json" in json.loads(via_fast[name][4])["detail"], name
    # The token is checked first: without one, a text/plain body is a 401 when the scope has a token.
    assert statuses["text/plain, no token"] == (401 if tokens else 415)
    for name in ("two tokens, wrong first", "two tokens, right first"):
        assert statuses[name] == 400, name
        assert json.loads(via_fast[name][4]) == {"detail": "more than one Authorization header: send exactly one"}
        assert via_fast[name][2] == 'Bearer error="invalid_request"'
    # Without tokens only loopback names are answered; with both tokens any (Kubernetes: the Service name).
    assert statuses["rebinding host"] == (503 if tokens else 400)
    if not tokens:
        assert "'rebind.evil.example' is not a loopback name" in json.loads(via_fast["rebinding host"][4])["detail"]


def test_fast_path_counts_by_route_template(tmp_path: Path):
    """/predict answered by the fast path is counted under its template with its status."""
    from ecosystem_assets.serving.app import create_app

    app = create_app(f"sqlite:///{tmp_path / 'service.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}", predict_token=PREDICT_TOKEN)

    async def scrape() -> str:
        await answers(app, {name: CASES[name] for name in ("no token", "too large", "valid (no champion yet)", "text/plain")})
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000") as client:
            await client.get("/predict")  # GET: FastAPI answers 405 for the route
            return (await client.get("/metrics")).text

    text = asyncio.run(scrape())
    for status in ("401", "413", "503", "405", "415"):
        assert f'fraud_requests_total{{endpoint="/predict",status="{status}"}} 1.0' in text, status
