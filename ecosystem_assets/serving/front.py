"""The service's outermost application layer: request counting for Prometheus and POST /predict
answered as a plain ASGI endpoint, in front of FastAPI's router.

Why /predict skips FastAPI: profiled under bench/fraud_service.py at 8 clients, FastAPI's exception
and exit-stack middleware, the router, the Request object and dependency solving took about 40 %
of the service's CPU per /predict, more than scoring and the group commit together. The fast path
reads the headers it needs from the ASGI scope and answers with the same function the FastAPI
route calls (`Predict`), so the route stays the documented one (OpenAPI schema, /docs) and both
paths give the same answers and the same error bodies. Every other route goes through FastAPI.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from fastapi import HTTPException

from ecosystem_assets.serving.api_models import InvalidBody
from ecosystem_assets.serving.limits import asgi_chunks, read_limited

UNMATCHED = "unmatched"  # the endpoint label of requests no route matched (404s): one series, whatever the path
PREDICT_PATH = "/predict"

# (every Authorization header, every Content-Type header, body reader taking the size limit) ->
# the JSON answer; raises HTTPException or InvalidBody for a request it refuses. All the headers of
# a name, not one of them: two paths that picked different ones would read different requests.
Predict = Callable[[list[str], list[str], Callable[[int], Awaitable[bytes]]], Awaitable[bytes]]

_JSON = (b"content-type", b"application/json")


class RequestCounts:
    """HTTP requests by route template and status, counted into a dict on the event loop; a
    Prometheus collector (`fraud_requests_total`) reads it at scrape time, so a request pays no
    metric locks."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def add(self, path: str, status: int) -> None:
        key = (path, str(status))
        self.counts[key] = self.counts.get(key, 0) + 1

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily("fraud_requests", "HTTP requests", labels=["endpoint", "status"])
        for (path, status), value in list(self.counts.items()):  # a copy: the event loop keeps counting
            family.add_metric([path, status], value)
        yield family


class ServiceFront:
    """A plain ASGI middleware (FastAPI's `@app.middleware("http")` wraps every response in a stream
    and cost two thirds of a bare endpoint's throughput). POST /predict is answered here by
    ``predict``; other requests go on to FastAPI and are labelled with the matched route's path
    template, which the router leaves in ``scope["route"]`` before the response starts (raw paths
    would give a series per URL)."""

    def __init__(self, app: Any, counts: RequestCounts, predict: Predict) -> None:
        self.app, self.counts, self.predict = app, counts, predict

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        counts = self.counts
        if scope["path"] == PREDICT_PATH and scope["method"] == "POST":
            try:
                status = await self._predict(scope, receive, send)
            except Exception:
                counts.add(PREDICT_PATH, 500)  # FastAPI's ServerErrorMiddleware, outside this one, answers 500
                raise
            if status:
                counts.add(PREDICT_PATH, status)
            return None

        async def counting_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                route = scope.get("route")
                counts.add(getattr(route, "path", None) or UNMATCHED, message["status"])
            await send(message)

        return await self.app(scope, receive, counting_send)

    async def _predict(self, scope: Any, receive: Any, send: Any) -> int:
        """Answer one POST /predict; its status, or 0 when the client left before the body came."""
        from starlette.requests import ClientDisconnect

        authorization: list[str] = []
        content_type: list[str] = []
        declared: bytes | None = None
        for name, value in scope["headers"]:  # lower-case names (ASGI); a few headers per request
            if name == b"authorization":
                authorization.append(value.decode("latin-1"))  # as Starlette decodes them
            elif name == b"content-type":
                content_type.append(value.decode("latin-1"))
            elif name == b"content-length":
                declared = value
        try:
            body = await self.predict(authorization, content_type, lambda limit: read_limited(declared, asgi_chunks(receive), limit))
        except ClientDisconnect:
            return 0
        except (HTTPException, InvalidBody) as exc:  # rendered by Starlette, as the FastAPI route's handlers do
            from fastapi.responses import JSONResponse

            refusal = (
                JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
                if isinstance(exc, HTTPException)
                else JSONResponse(exc.body(), status_code=422)
            )
            await refusal(scope, receive, send)
            return refusal.status_code
        # The answer itself is sent by hand: a Response object per request is measurable here.
        await send({"type": "http.response.start", "status": 200, "headers": [_JSON, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return 200
