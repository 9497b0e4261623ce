"""The fraud service (FastAPI): /predict, /feedback, /monitoring, /metrics, /healthz.

Started by ``ecosystem-assets serve --host --port``. Every prediction (id, features, probability,
decision, model version, time) and every label goes to the store; /monitoring measures the live
model's precision and recall over labelled predictions; /metrics exposes them to Prometheus.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, HTTPException, Query, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from ecosystem_assets.serving.monitoring import monitoring_summary
from ecosystem_assets.serving.champion import ChampionWatcher
from ecosystem_assets.serving.scoring import NoChampion, Scorer
from ecosystem_assets.serving.store import ConflictingFeedback, PredictionStore, UnknownPrediction

Id = Annotated[str, Field(min_length=1, max_length=128)]


class Transaction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    transaction_id: Id
    customer_id: Id
    terminal_id: Id
    amount: float = Field(ge=0, allow_inf_nan=False)
    timestamp: AwareDatetime  # ISO-8601 with offset; a naive time is rejected


class PredictRequest(BaseModel):
    transaction: Transaction


class PredictResponse(BaseModel):
    prediction_id: str
    fraud_probability: float
    is_fraud: bool
    model_version: str


class LabelledTransaction(Transaction):
    is_fraud: bool | None = None


class HistoryRequest(BaseModel):
    transactions: list[LabelledTransaction] = Field(max_length=50_000)


class FeedbackRequest(BaseModel):
    prediction_id: Id
    is_fraud: bool


class RequestCounter:
    """Counts HTTP requests by path and status for Prometheus (`fraud_requests_total`).

    A plain ASGI middleware (FastAPI's `@app.middleware("http")` wraps every response in a stream
    and cost two thirds of a bare endpoint's throughput) that counts into a dict on the event loop;
    `collect` turns the dict into the counter at scrape time, so a request pays no metric locks."""

    def __init__(self, app, counts: dict[tuple[str, str], int]):
        self.app, self.counts = app, counts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        counts, path = self.counts, scope["path"]

        async def counting_send(message):
            if message["type"] == "http.response.start":
                key = (path, str(message["status"]))
                counts[key] = counts.get(key, 0) + 1
            await send(message)

        await self.app(scope, receive, counting_send)


class RequestCounts:
    """A Prometheus collector over `RequestCounter`'s dict."""

    def __init__(self):
        self.counts: dict[tuple[str, str], int] = {}

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily("fraud_requests", "HTTP requests", labels=["endpoint", "status"])
        for (path, status), value in list(self.counts.items()):  # a copy: the event loop keeps counting
            family.add_metric([path, status], value)
        yield family


def create_app(db_url: str, tracking_uri: str, poll_s: float = 2.0, default_window_hours: float = 24.0,
               write_inline: bool | None = None) -> FastAPI:
    """The service; ``write_inline`` (default: for SQLite) writes batches on the event loop, else
    in a writer thread."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    store = PredictionStore(db_url)
    watcher = ChampionWatcher(tracking_uri, poll_s=poll_s)
    scorer = Scorer(store, watcher, write_inline=write_inline)
    registry = CollectorRegistry()  # per app: several services can live in one test process
    requests = RequestCounts()
    registry.register(requests)
    latency = Histogram("fraud_predict_seconds", "Time to answer /predict", registry=registry,
                        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
    flagged = Counter("fraud_flagged", "Predictions flagged as fraud", registry=registry)
    live = Gauge("fraud_live_metric", "Live metric of the serving model over the default window", ["metric"], registry=registry)
    version_info = Gauge("fraud_model_version", "Serving model version (value = version number)", registry=registry)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        import asyncio

        watcher.start()
        scorer.warm_up()
        batcher = asyncio.create_task(scorer.run())
        yield
        batcher.cancel()
        watcher.stop()
        store.engine.dispose()

    app = FastAPI(title="fraud-detector service", lifespan=lifespan)
    app.state.scorer, app.state.watcher, app.state.store = scorer, watcher, store

    app.add_middleware(RequestCounter, counts=requests.counts)

    @app.post("/predict", response_model=PredictResponse)
    async def predict(body: PredictRequest) -> dict:
        started = time.perf_counter()
        try:
            result = await scorer.predict(body.transaction.model_dump())
        except NoChampion as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from None
        latency.observe(time.perf_counter() - started)
        if result["is_fraud"]:
            flagged.inc()
        return result

    @app.post("/feedback")
    async def post_feedback(body: FeedbackRequest) -> dict:
        try:
            status = await scorer.feedback(body.prediction_id, body.is_fraud)
        except UnknownPrediction:
            raise HTTPException(status_code=404, detail=f"unknown prediction_id {body.prediction_id!r}") from None
        except ConflictingFeedback as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
        return {"prediction_id": body.prediction_id, "status": status}

    @app.post("/history")
    def post_history(body: HistoryRequest) -> dict:
        """Warm a new service's feature history with labelled past transactions from the warehouse."""
        added = scorer.load_history([t.model_dump() for t in body.transactions])
        return {"received": len(body.transactions), "added": added}

    def monitoring_body(window_hours: float) -> dict:
        champion = watcher.current
        return monitoring_summary(store, champion.version if champion else None, window_hours)

    @app.get("/monitoring")
    def monitoring(window_hours: Annotated[float, Query(gt=0, le=24 * 90)] = default_window_hours) -> dict:
        """Precision/recall of the serving model over the last ``window_hours`` of traffic."""
        return monitoring_body(window_hours)

    @app.get("/metrics")
    def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = monitoring_body(default_window_hours)
        for name in ("precision", "recall", "labelled", "predictions"):
            live.labels(name).set(body[name] if body[name] is not None else float("nan"))
        version_info.set(float(body["model_version"]) if body["model_version"] else 0)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz(response: Response) -> dict:
        champion = watcher.current
        if champion is None:
            response.status_code = 503
        return {"status": "ok" if champion else "no champion model", "model_version": champion and champion.version}

    return app
