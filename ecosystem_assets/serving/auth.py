"""Bearer tokens with two scopes: "predict" (/predict) and "feedback" (/feedback, /history,
/monitoring). /healthz, /metrics and the OpenAPI document stay open (probes and Prometheus).

A scope without a token is open: `ecosystem-assets serve` allows that only on a loopback address
(`check_serving_tokens`). Tokens never enter a log line, an error body or an exception message.
"""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import HTTPException

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

    def check(self, authorization: str | None, scope: str) -> None:
        expected = self._tokens[scope]
        if expected is None:
            return
        scheme, _, presented = (authorization or "").partition(" ")
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
