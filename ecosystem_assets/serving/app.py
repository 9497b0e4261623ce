"""The fraud service (FastAPI): /predict, /feedback, /monitoring, /metrics, /healthz.

Started by ``ecosystem-assets serve --host --port``. Every prediction (id, features, probability,
decision, model version, time) and every label goes to the store; /monitoring measures the live
model's precision and recall over labelled predictions; /metrics exposes them to Prometheus.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from ecosystem_assets.serving import api_models
from ecosystem_assets.serving.api_models import (
    MAX_FEEDBACK_BYTES,
    FeedbackRequest,
    HistoryRequest,
    InvalidBody,
    Limits,
    PredictRequest,
    PredictResponse,
)
from ecosystem_assets.serving.auth import FEEDBACK, PREDICT, BearerAuth, LoopbackHosts
from ecosystem_assets.serving.champion import ChampionWatcher
from ecosystem_assets.serving.feature_store import open_feature_store
from ecosystem_assets.serving.front import RequestCounts, ServiceFront
from ecosystem_assets.serving.limits import read_body, require_json
from ecosystem_assets.serving.live_metrics import LiveMetrics
from ecosystem_assets.serving.monitoring import monitoring_summary, parse_end
from ecosystem_assets.serving.scoring import NoChampion, Scorer
from ecosystem_assets.serving.store import (
    ConflictingFeedback,
    ConflictingTransaction,
    PredictionStore,
    RejectedRow,
    StoreUnavailable,
    UnknownPrediction,
)


def create_app(
    db_url: str,
    tracking_uri: str,
    poll_s: float = 2.0,
    default_window_hours: float = 24.0,
    write_inline: bool | None = None,
    *,
    predict_token: str | None = None,
    feedback_token: str | None = None,
    max_amount: float = 1_000_000.0,
    max_clock_skew_s: float = 300.0,
    max_predict_bytes: int = 16_384,
    max_history_bytes: int = 16 * 1024 * 1024,
    metrics_refresh_s: float = 5.0,
    feature_store_url: str | None = None,
) -> FastAPI:
    """The service; ``write_inline`` (default: for SQLite) writes batches on the event loop, else
    in a writer thread. A scope whose token is None is open (`ecosystem-assets serve` allows that
    on loopback only); the limits are Settings.fraud_max_* (api_models lists every input rule).
    ``feature_store_url`` (redis://…) shares the online feature state between replicas; None keeps
    it in this process (feature_store.py)."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    auth = BearerAuth(predict_token, feedback_token)  # refuses two identical tokens

    store = PredictionStore(db_url)
    watcher = ChampionWatcher(tracking_uri, poll_s=poll_s)
    features = open_feature_store(feature_store_url)
    scorer = Scorer(store, watcher, write_inline=write_inline, features=features)
    registry = CollectorRegistry()  # per app: several services can live in one test process
    requests = RequestCounts()
    registry.register(requests)
    latency = Histogram(
        "fraud_predict_seconds",
        "Time to answer /predict",
        registry=registry,
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
    )
    flagged = Counter("fraud_flagged", "Predictions flagged as fraud", registry=registry)
    live = Gauge("fraud_live_metric", "Live metric of the serving model over the default window", ["metric"], registry=registry)
    version_info = Gauge("fraud_model_version", "Serving model version (value = version number)", registry=registry)
    refused_info = Gauge("fraud_model_refused", "1 for the champion version the service refused to load", ["version"], registry=registry)
    fallback_info = Gauge(
        "fraud_model_fallback", "1 while serving an earlier champion because the alias's version is refused", registry=registry
    )
    live_age = Gauge(
        "fraud_live_metric_age_seconds", "Age of the fraud_live_metric figures (computed in the background)", registry=registry
    )
    live_metrics = LiveMetrics(lambda: monitoring_body(default_window_hours), refresh_s=metrics_refresh_s)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        import asyncio

        watcher.start()
        scorer.warm_up()
        batcher = asyncio.create_task(scorer.run())
        live_metrics.start()
        yield
        batcher.cancel()
        live_metrics.stop()
        watcher.stop()
        features.close()
        store.engine.dispose()

    # /docs and /redoc with Swagger UI and ReDoc served from the fastapi-offline package, not a CDN:
    # they work where the service runs without internet (a private cluster, a laptop offline).
    app = FastAPIOffline(title="fraud-detector service", lifespan=lifespan)
    app.state.scorer, app.state.watcher, app.state.store = scorer, watcher, store

    @app.exception_handler(InvalidBody)
    async def invalid_body(_request: Request, exc: InvalidBody) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=422)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the whole input (a 60 MB body came back in a 59 MB 422).
        errors = exc.errors()
        shortened = InvalidBody([api_models.short_error(e) for e in errors[: api_models.MAX_ERRORS]], len(errors))
        return JSONResponse(shortened.body(), status_code=422)

    def limits() -> Limits:
        return Limits.now(max_amount, max_clock_skew_s, scorer.oldest_accepted())

    def require(scope: str) -> Any:
        async def check(request: Request) -> None:
            auth.check(request.headers.getlist("authorization"), scope)

        return check

    async def answer_predict(authorization: list[str], content_type: list[str], read: Callable[[int], Awaitable[bytes]]) -> bytes:
        """The JSON answer to a /predict request (scope "predict"); HTTPException or InvalidBody
        when it is refused. The token and the Content-Type are checked before a byte of the body
        is read (``read`` takes the size limit), the size before anything is parsed, and the bytes
        are validated once (api_models.parse)."""
        auth.check(authorization, PREDICT)
        require_json(content_type)
        body = api_models.parse(PredictRequest, await read(max_predict_bytes), limits())
        started = time.perf_counter()
        try:
            result = await scorer.predict(vars(body.transaction))  # the fields, without model_dump's copy
        except NoChampion as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from None
        except ConflictingTransaction as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
        except RejectedRow as exc:  # this row alone; the rest of its micro-batch is stored
            raise HTTPException(status_code=422, detail=str(exc)) from None
        except StoreUnavailable as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from None
        latency.observe(time.perf_counter() - started)
        if result["is_fraud"]:
            flagged.inc()
        # Encoded here: the answer is built by the scorer from typed values, and FastAPI's
        # re-validation through response_model (kept for the OpenAPI schema) cost ~5 % of throughput.
        return json.dumps(result).encode()

    # POST /predict is answered by ServiceFront before FastAPI routes anything (front.py says why);
    # the route documents it (OpenAPI, /docs) and gives the same answers through FastAPI.
    app.add_middleware(ServiceFront, counts=requests, predict=answer_predict)
    if auth.open(PREDICT) or auth.open(FEEDBACK):
        # An open scope: only requests addressed to a loopback name (DNS rebinding, auth.py). Added
        # last, so outermost: in front of the fast path as well.
        app.add_middleware(LoopbackHosts)

    @app.post("/predict", response_model=PredictResponse, openapi_extra=api_models.openapi_body(PredictRequest))
    async def predict(request: Request) -> Response:
        """Score one transaction: ``{"transaction": {transaction_id, customer_id, terminal_id, amount,
        timestamp}}`` (api_models.PredictRequest; scope "predict")."""
        headers = request.headers
        answer = await answer_predict(headers.getlist("authorization"), headers.getlist("content-type"), partial(read_body, request))
        return Response(answer, media_type="application/json")

    @app.post("/feedback", dependencies=[Depends(require(FEEDBACK))], openapi_extra=api_models.openapi_body(FeedbackRequest))
    async def post_feedback(request: Request) -> dict:
        """The label of a scored transaction: ``{prediction_id, is_fraud}`` (scope "feedback")."""
        require_json(request.headers.getlist("content-type"))
        body = api_models.parse(FeedbackRequest, await read_body(request, MAX_FEEDBACK_BYTES), limits())
        try:
            status = await scorer.feedback(body.prediction_id, body.is_fraud)
        except UnknownPrediction:
            raise HTTPException(status_code=404, detail=f"unknown prediction_id {api_models.excerpt(body.prediction_id)!r}") from None
        except ConflictingFeedback as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
        except RejectedRow as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        except StoreUnavailable as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from None
        return {"prediction_id": body.prediction_id, "status": status}

    @app.post("/history", dependencies=[Depends(require(FEEDBACK))], openapi_extra=api_models.openapi_body(HistoryRequest))
    async def post_history(request: Request) -> dict:
        """Warm a new service's feature history with labelled past transactions from the warehouse:
        ``{"transactions": [...]}`` (scope "feedback")."""
        from starlette.concurrency import run_in_threadpool

        require_json(request.headers.getlist("content-type"))
        raw = await read_body(request, max_history_bytes)
        # Up to 16 MiB: parsed and stored in a thread, so /predict keeps being answered meanwhile.
        body = await run_in_threadpool(api_models.parse, HistoryRequest, raw, limits())
        try:
            added = await run_in_threadpool(lambda: scorer.load_history([t.model_dump() for t in body.transactions]))
        except ConflictingTransaction as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
        except RejectedRow as exc:  # the database refused the rows; the message holds no values
            raise HTTPException(status_code=422, detail=str(exc)) from None
        except StoreUnavailable as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from None
        return {"received": len(body.transactions), "added": added}

    def monitoring_body(window_hours: float, end: float | None = None) -> dict:
        champion = watcher.current
        return monitoring_summary(store, champion.version if champion else None, window_hours, end)

    @app.get("/monitoring", dependencies=[Depends(require(FEEDBACK))])
    def monitoring(
        window_hours: Annotated[float, Query(gt=0, le=24 * 90)] = default_window_hours,
        end: Annotated[str | None, Query(max_length=64)] = None,
    ) -> dict:
        """Precision/recall of the serving model over the ``window_hours`` of traffic before ``end``
        (ISO-8601 with offset, or epoch seconds; default now): the evaluation time, not the newest row."""
        try:
            end_s = parse_end(end) if end is not None else None
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        return monitoring_body(window_hours, end_s)

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text; never touches the database (live figures come from `LiveMetrics`)."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = live_metrics.latest or {}
        for name in ("precision", "recall", "labelled", "predictions"):
            live.labels(name).set(body[name] if body.get(name) is not None else float("nan"))
        live_age.set(live_metrics.age_s())
        champion = watcher.current
        version_info.set(float(champion.version) if champion else 0)
        fallback_info.set(1 if champion is not None and watcher.fallback else 0)
        refused = watcher.refused
        refused_info.clear()
        if refused:
            refused_info.labels(refused.version).set(1)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz(response: Response) -> dict:  # async: answered on the event loop, never queued for a thread
        body = watcher.health()  # the serving version; a fallback, a refusal, an outage (no storage locations)
        if body["model_version"] is None:
            response.status_code = 503
        return body

    @app.get("/readyz")
    async def readyz(response: Response) -> dict:
        """Readiness (Kubernetes): 200 only when this replica can answer /predict now: a champion is
        loaded and scores a probe row, and the feature state and the prediction log answer. Nothing
        is written."""
        from starlette.concurrency import run_in_threadpool

        problems = await run_in_threadpool(readiness_problems)
        if problems:
            response.status_code = 503
        return {"status": "ready" if not problems else "not ready", "problems": problems}

    def readiness_problems() -> list[str]:
        import numpy as np
        import sqlalchemy as sa

        from ecosystem_assets.fraud.features import FEATURES

        problems = []
        champion = watcher.current
        if champion is None:
            problems.append(watcher.why_no_model())
        else:
            try:
                [probability] = champion.score(np.zeros((1, len(FEATURES))))
                if not 0.0 <= float(probability) <= 1.0:
                    problems.append(f"champion {champion.version} scored the probe row {float(probability)!r}")
            except Exception as exc:  # noqa: BLE001 — any failure to score is "not ready", named
                problems.append(f"champion {champion.version} cannot score: {type(exc).__name__}")
        try:
            features.ping()
        except StoreUnavailable as exc:
            problems.append(str(exc))
        try:
            with store.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 — the driver's error class, never its message (it may name the URL)
            problems.append(f"the prediction store is unavailable ({type(exc).__name__})")
        return problems

    return app
