"""Bearer tokens with two scopes: "predict" (/predict) and "feedback" (/feedback, /history,
/monitoring). /healthz, /metrics and the OpenAPI document stay open (probes and Prometheus).

A scope without a token is open: `ecosystem-assets serve` allows that only on a loopback address
(`check_serving_tokens`), and the service then answers only requests addressed to a loopback name
(`LoopbackHosts`). Tokens never enter a log line, an error body or an exception message.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
from collections.abc import Sequence
from typing import Any

from fastapi import HTTPException

from ecosystem_assets.serving.api_models import excerpt

PREDICT, FEEDBACK = "predict", "feedback"


class TokenError(ValueError):
    """The tokens cannot protect the service as configured; the message names the variables only."""


def check_serving_tokens(host: str, predict_token: str | None, feedback_token: str | None) -> None:
    """Refuse configurations that would expose an open scope, or make the scopes indistinguishable."""
    if predict_token and feedback_token and hmac.compare_digest(predict_token.encode(), feedback_token.encode()):
        raise TokenError(
            "FRAUD_PREDICT_TOKEN and FRAUD_FEEDBACK_TOKEN are identical: a /predict client could "
            "also send labels and read monitoring. Give each scope its own token."
        )
    if not is_loopback(host) and not (predict_token and feedback_token):
        missing = " and ".join(
            name for name, token in (("FRAUD_PREDICT_TOKEN", predict_token), ("FRAUD_FEEDBACK_TOKEN", feedback_token)) if not token
        )
        raise TokenError(
            f"refusing to serve on {host} without authentication: {missing} not set. Set both tokens, "
            "or serve on a loopback address (127.0.0.1, ::1, localhost) to run open."
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


class BearerAuth:
    """Checks a request's ``Authorization: Bearer`` header against its scope's token: no token or
    an unknown one → 401 (with ``WWW-Authenticate: Bearer``), the other scope's token → 403."""

    def __init__(self, predict_token: str | None, feedback_token: str | None):
        check_serving_tokens("127.0.0.1", predict_token, feedback_token)  # identical tokens
        # Bytes: compare_digest refuses non-ASCII str, and a header may hold any Latin-1 byte.
        self._tokens = {
            PREDICT: predict_token.encode() if predict_token else None,
            FEEDBACK: feedback_token.encode() if feedback_token else None,
        }

    def open(self, scope: str) -> bool:
        return self._tokens[scope] is None

    def check(self, authorization: Sequence[str], scope: str) -> None:
        """``authorization``: every Authorization header the request carries. More than one is
        refused (400, RFC 6750's ``invalid_request``) whether or not the scope is open: proxies and
        frameworks disagree on which of two to read, so a token must never depend on that."""
        if len(authorization) > 1:
            raise HTTPException(
                400,
                "more than one Authorization header: send exactly one",
                headers={"WWW-Authenticate": 'Bearer error="invalid_request"'},
            )
        expected = self._tokens[scope]
        if expected is None:
            return
        scheme, _, presented = (authorization[0] if authorization else "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        given = presented.strip().encode("latin-1", "replace")  # Starlette decodes headers as Latin-1
        # Both comparisons always run, in constant time: timing tells nothing about either token.
        right = hmac.compare_digest(given, expected)
        other_token = self._tokens[FEEDBACK if scope == PREDICT else PREDICT]
        other = other_token is not None and hmac.compare_digest(given, other_token)
        if right:
            return
        if other:
            raise HTTPException(
                403,
                f"this token is not allowed the {scope} scope",
                headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
            )
        raise HTTPException(401, "invalid bearer token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


# A Host header: a name or an IPv4 address, or an IPv6 address in brackets; then an optional port.
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\[\]:]*)(?::[0-9]*)?")


class LoopbackHosts:
    """Plain ASGI middleware for a service with an open scope (no token): every request must be
    addressed to a loopback name (``Host: localhost``, ``127.0.0.1``, ``[::1]``, any port), else
    400. Binding to loopback keeps other machines out, but not a web page in the developer's own
    browser: through DNS rebinding (a name of the attacker's that resolves to 127.0.0.1 after the
    page has loaded) it could read and write the open service; its requests carry that name as
    their Host. Outermost, so the /predict fast path (front.py) and FastAPI's routes both stand
    behind it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        if scope["type"] == "http":
            hosts = [value for name, value in scope["headers"] if name == b"host"]
            problem = _host_problem(hosts)
            if problem:
                body = json.dumps({"detail": problem}).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 400,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return None
        return await self.app(scope, receive, send)


def _host_problem(hosts: list[bytes]) -> str | None:
    """Why these Host headers are refused by a service running without tokens; None if they are not."""
    advice = (
        "this service runs without tokens, so it answers only requests addressed to a loopback name: localhost, "
        "127.0.0.1 or [::1], with any port (set FRAUD_PREDICT_TOKEN and FRAUD_FEEDBACK_TOKEN to serve other names)"
    )
    if len(hosts) != 1:
        return f"{'no' if not hosts else 'more than one'} Host header: {advice}"
    value = hosts[0].decode("latin-1")
    found = _HOST.fullmatch(value)
    if found is None or not is_loopback(found.group(1).lower()):
        return f"Host {excerpt(value)!r} is not a loopback name: {advice}"
    return None
