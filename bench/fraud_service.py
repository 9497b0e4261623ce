"""The fraud service's POST /predict on loopback against a bare FastAPI endpoint, same run.

Goal (issue 4): throughput ≥ 0.5 of the bare endpoint's, p99 latency under 50 ms, at 8 clients.

The project side is `serving.app.create_app` as `ecosystem-assets serve` runs it: bearer tokens
checked on every request, every body held to the input rules (serving/api_models.py: strict
types, limits, clock and history checks, size limit), features from the online history,
micro-batched scoring with the MLflow champion, every prediction committed to SQLite in WAL mode
before the answer. Its champion is trained and registered here, in a temporary MLflow registry, by the
project's own code (`feature_table`, `train_and_promote`) on 14 simulated days; the service's
feature history is then warmed through POST /history with the 37 labelled days before the
traffic, as a new deployment would be. The baseline is a bare FastAPI app with the same route,
a plain request model of the same fields (FastAPI's usual body parameter, no token, no extra
rules) and the same response model, answering a constant, `async def`.

Each server runs under uvicorn in its own subprocess (`--serve`), one worker, log level warning,
on a free loopback port. The load generator, in this process, is a small asyncio HTTP/1.1 client:
8 keep-alive connections, closed loop, pre-encoded requests. Both servers get the same bodies:
real simulated transactions of the days after the training window, in time order, unique ids.
Rounds alternate bare/project (each after a warm-up) so load from other processes hits both alike;
throughput is the median round, latencies are pooled over all measured requests. The client shares
the machine's cores with the server; its CPU share during the measured rounds is printed.

Checks: every response is HTTP 200 with the response's four fields; the project answers with the
champion's version and unique prediction ids; afterwards its store holds exactly one prediction
row per request sent, for exactly the transaction ids sent. The mean micro-batch size is read from
the store (the rows of one batch share one `created_at`).

    python bench/fraud_service.py [--requests 4000] [--rounds 5] [--warmup 500] [--clients 8]
"""

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import date, timedelta
from pathlib import Path

from ecosystem_assets.fraud.features import HISTORY_DAYS  # the feature windows' reach
from ecosystem_assets.fraud.replay import payload as transaction  # the JSON transaction, as the replay sends it

HOST = "127.0.0.1"
TRAIN_END = date(2026, 8, 31)  # last training day; traffic starts the day after
TRAINING_DAYS = 14
P99_GOAL_S = 0.050
PREDICT_TOKEN_ENV, FEEDBACK_TOKEN_ENV = "FRAUD_PREDICT_TOKEN", "FRAUD_FEEDBACK_TOKEN"
RESPONSE_FIELDS = {"prediction_id", "fraud_probability", "is_fraud", "model_version"}


# --- servers (run in a subprocess: `--serve bare|project`) -----------------------------------------


def bare_app():  # no `from __future__ import annotations` in this file: FastAPI must see the local classes
    from fastapi import FastAPI
    from pydantic import AwareDatetime, BaseModel

    from ecosystem_assets.serving.api_models import PredictResponse

    class Transaction(BaseModel):
        transaction_id: str
        customer_id: str
        terminal_id: str
        amount: float
        timestamp: AwareDatetime

    class PredictRequest(BaseModel):
        transaction: Transaction

    app = FastAPI(title="bare baseline")
    answer = {"prediction_id": "0" * 32, "fraud_probability": 0.0, "is_fraud": False, "model_version": "1"}

    @app.post("/predict", response_model=PredictResponse)
    async def predict(body: PredictRequest) -> dict:
        return answer

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    return app


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    if args.serve == "bare":
        app = bare_app()
    else:
        from ecosystem_assets.serving.app import create_app

        # Tokens come through the environment (never argv, which `ps` shows), as for `serve`.
        app = create_app(
            args.db_url,
            args.tracking_uri,
            poll_s=args.poll_s,
            predict_token=os.environ[PREDICT_TOKEN_ENV],
            feedback_token=os.environ[FEEDBACK_TOKEN_ENV],
        )
    uvicorn.run(app, host=HOST, port=args.port, workers=1, log_level="warning")


class Server:
    """A `--serve` subprocess on a free port; stopped (SIGINT: uvicorn's graceful shutdown) on exit."""

    def __init__(self, kind: str, *extra: str, env: dict[str, str] | None = None):
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            self.port = probe.getsockname()[1]
        self.kind = kind
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", kind, "--port", str(self.port), *extra], env={**os.environ, **(env or {})}
        )
        self.url = f"http://{HOST}:{self.port}"

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.kind} server did not answer /healthz with 200 within {timeout_s:.0f} s")

    def cpu_seconds(self) -> float:
        """CPU time the server process has used so far (user + system, from /proc)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# --- data and champion -----------------------------------------------------------------------------


def train_champion(tracking_uri: str, artifacts: Path, raw) -> str:
    """Train on the last 14 days of ``raw`` (37 days of history before) and register the champion."""
    import logging
    import warnings

    import mlflow
    from mlflow import MlflowClient

    from ecosystem_assets.fraud.features import feature_table

    logging.getLogger("mlflow").setLevel(logging.ERROR)  # setup chatter (database creation, pickle format notice)
    warnings.filterwarnings("ignore", message="X has feature names")
    from ecosystem_assets.fraud.training import train_and_promote
    from ecosystem_assets.resources.mlflow import MlflowTracking

    table = feature_table(raw)
    table = table[table["timestamp"] >= str(TRAIN_END - timedelta(days=TRAINING_DAYS - 1))].reset_index(drop=True)
    experiment_id = MlflowTracking(tracking_uri=tracking_uri, artifact_location=str(artifacts)).ensure_experiment("fraud-detector")
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(experiment_id=experiment_id):
        outcome, _ = train_and_promote(
            table,
            mlflow,
            MlflowClient(tracking_uri),
            calibration_days=2,
            holdout_days=2,
            target_precision=0.9,
            seed=0,
            params={},
            extra_params={},
        )
    assert outcome.promoted, outcome.reason
    return outcome.version


def post_json(url: str, payload: dict, token: str) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())


# --- load generator ---------------------------------------------------------------------------------


def encode(port: int, bodies: list[bytes], token: str | None = None) -> list[bytes]:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = f"POST /predict HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n{auth}Content-Length: "
    return [(head + f"{len(b)}\r\n\r\n").encode() + b for b in bodies]


class TooSlow(RuntimeError):
    pass


async def drive(port: int, requests: list[bytes], clients: int, timeout_s: float) -> tuple[float, list[float], list[int], list[bytes]]:
    """Send every request over ``clients`` keep-alive connections, each waiting for its answer
    before the next (closed loop). Returns (wall seconds, latencies, statuses, bodies); raises
    TooSlow when they are not all answered within ``timeout_s``."""
    n = len(requests)
    latencies, statuses, bodies = [0.0] * n, [0] * n, [b""] * n
    connections = [await asyncio.open_connection(HOST, port) for _ in range(clients)]
    order = iter(range(n))  # shared by the clients: next() never yields to the loop

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        clock = time.perf_counter
        for i in order:
            started = clock()
            writer.write(requests[i])
            head = await reader.readuntil(b"\r\n\r\n")
            at = head.lower().find(b"\r\ncontent-length:")
            if at < 0:
                raise RuntimeError(f"response without Content-Length: {head[:200]!r}")
            length = int(head[at + 17 : head.index(b"\r\n", at + 2)])
            bodies[i] = await reader.readexactly(length)
            latencies[i] = clock() - started
            statuses[i] = int(head[9:12])

    started = time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.gather(*(client(r, w) for r, w in connections)), timeout_s)
    except TimeoutError:
        done = sum(1 for s in statuses if s)
        raise TooSlow(f"only {done:,} of {n:,} requests answered in {timeout_s:g} s ({done / timeout_s:,.1f} req/s)") from None
    finally:
        wall = time.perf_counter() - started
        for _, writer in connections:
            writer.close()
    return wall, latencies, statuses, bodies


def run_load(port: int, requests: list[bytes], clients: int, timeout_s: float):
    try:
        import uvloop
    except ImportError:
        return asyncio.run(drive(port, requests, clients, timeout_s))
    return uvloop.run(drive(port, requests, clients, timeout_s))


def check_answers(kind: str, statuses: list[int], bodies: list[bytes]) -> list[dict]:
    bad = [(s, b[:200]) for s, b in zip(statuses, bodies, strict=True) if s != 200]
    if bad:
        raise SystemExit(f"{kind}: {len(bad)} of {len(statuses)} responses were not HTTP 200, e.g. {bad[0]}")
    answers = [json.loads(b) for b in bodies]
    wrong = [a for a in answers if set(a) != RESPONSE_FIELDS]
    if wrong:
        raise SystemExit(f"{kind}: {len(wrong)} responses of another shape, e.g. {wrong[0]}")
    return answers


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


# --- main -------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="measured requests per server per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating bare/project rounds (median throughput)")
    parser.add_argument("--warmup", type=int, default=500, help="unmeasured requests per server before each round")
    parser.add_argument("--clients", type=int, default=8, help="concurrent keep-alive connections")
    parser.add_argument("--no-history", action="store_true", help="do not warm the service's feature history")
    parser.add_argument("--timeout-s", type=float, default=300, help="give up when a phase's requests are not all answered by then")
    parser.add_argument("--poll-s", type=float, default=2.0, help="the service's champion poll interval")
    parser.add_argument("--serve", choices=["bare", "project"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db-url", help=argparse.SUPPRESS)
    parser.add_argument("--tracking-uri", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    if args.serve:
        serve(args)
        return 0

    import pandas as pd
    import sqlalchemy as sa

    from ecosystem_assets.resources.fraud import TransactionSource
    from ecosystem_assets.serving.store import PredictionStore, predictions

    per_round = args.warmup + args.requests
    total = per_round * args.rounds
    source = TransactionSource()  # the default population: 1,000 customers, 2,000 terminals
    with tempfile.TemporaryDirectory(prefix="fraud-service-bench-") as tmp:
        root = Path(tmp)
        tracking_uri, db_url = f"sqlite:///{root / 'mlflow.db'}", f"sqlite:///{root / 'service.db'}"
        started = time.perf_counter()
        history_first = TRAIN_END - timedelta(days=TRAINING_DAYS + HISTORY_DAYS - 1)
        raw = pd.concat(source.days(history_first, TRAIN_END).values(), ignore_index=True)
        version = train_champion(tracking_uri, root / "artifacts", raw)
        traffic, day = [], TRAIN_END
        while sum(len(f) for f in traffic) < total:
            day += timedelta(days=1)
            traffic += source.days(day, day).values()
        rows = pd.concat(traffic, ignore_index=True).head(total)  # time order, day by day
        records = rows.to_dict("records")
        bodies = [json.dumps({"transaction": transaction(r)}).encode() for r in records]
        print(
            f"setup: champion v{version} trained on {TRAIN_END - timedelta(days=TRAINING_DAYS - 1)}..{TRAIN_END}; "
            f"{total:,} transactions of {TRAIN_END + timedelta(days=1)}..{day} to send; "
            f"{time.perf_counter() - started:.1f} s",
            flush=True,
        )

        import secrets

        tokens = {PREDICT_TOKEN_ENV: secrets.token_hex(32), FEEDBACK_TOKEN_ENV: secrets.token_hex(32)}
        bare = Server("bare")
        project = Server("project", "--db-url", db_url, "--tracking-uri", tracking_uri, "--poll-s", str(args.poll_s), env=tokens)
        try:
            bare.wait_ready()
            project.wait_ready()
            if not args.no_history:
                history = raw[raw["timestamp"] >= str(TRAIN_END - timedelta(days=HISTORY_DAYS - 1))]
                added = 0
                for begin in range(0, len(history), 5000):
                    chunk = history.iloc[begin : begin + 5000].to_dict("records")
                    payload = {"transactions": [{**transaction(r), "is_fraud": bool(r["is_fraud"])} for r in chunk]}
                    added += post_json(f"{project.url}/history", payload, tokens[FEEDBACK_TOKEN_ENV])["added"]
                print(f"project service: feature history warmed with {added:,} labelled transactions ({HISTORY_DAYS} days)", flush=True)
            results = {
                name: {"rps": [], "lat": [], "answers": [], "cpu": [], "server_cpu": [], "windows": []} for name in ("bare", "project")
            }
            for r in range(args.rounds):
                chunk = bodies[r * per_round : (r + 1) * per_round]
                for name, server in (("bare", bare), ("project", project)):
                    requests = encode(server.port, chunk, tokens[PREDICT_TOKEN_ENV] if name == "project" else None)
                    try:
                        _, _, statuses, answers = run_load(server.port, requests[: args.warmup], args.clients, args.timeout_s)
                        check_answers(name, statuses, answers)
                        wall_start, cpu_start, server_start = time.time(), time.process_time(), server.cpu_seconds()
                        wall, latencies, statuses, answers = run_load(server.port, requests[args.warmup :], args.clients, args.timeout_s)
                        results[name]["server_cpu"].append((server.cpu_seconds() - server_start) / wall)
                    except TooSlow as exc:
                        raise SystemExit(f"round {r + 1}, {name} server: {exc}; stopped") from None
                    results[name]["cpu"].append((time.process_time() - cpu_start) / wall)
                    results[name]["windows"].append((wall_start, time.time()))
                    results[name]["answers"] += check_answers(name, statuses, answers)
                    results[name]["rps"].append(args.requests / wall)
                    results[name]["lat"] += latencies
                print(
                    f"round {r + 1}: bare {results['bare']['rps'][-1]:,.0f} req/s, project {results['project']['rps'][-1]:,.0f} req/s",
                    flush=True,
                )
        finally:
            bare.stop()
            project.stop()

        # Checks on what the project answered and stored.
        answers = results["project"]["answers"]
        versions = {a["model_version"] for a in answers}
        assert versions == {version}, f"project answered with model versions {versions}, champion is {version}"
        assert len({a["prediction_id"] for a in answers}) == len(answers), "duplicate prediction ids"
        store = PredictionStore(db_url)
        stored = store.log_summary().predictions
        with store.engine.connect() as conn:
            stored_ids = set(conn.execute(sa.select(predictions.c.transaction_id)).scalars())
            batches = []
            for begin, end in results["project"]["windows"]:
                batches += (
                    conn.execute(
                        sa.select(sa.func.count()).where(predictions.c.created_at.between(begin, end)).group_by(predictions.c.created_at)
                    )
                    .scalars()
                    .all()
                )
        store.engine.dispose()
        sent_ids = {r["transaction_id"] for r in records}
        if stored != total or stored_ids != sent_ids:
            raise SystemExit(
                f"project store holds {stored:,} prediction rows ({len(stored_ids & sent_ids):,} of the "
                f"{len(sent_ids):,} transaction ids sent); {total:,} requests were sent"
            )
        measured = [records[r * per_round + args.warmup + i] for r in range(args.rounds) for i in range(args.requests)]
        flagged = sum(a["is_fraud"] for a in answers)
        true_pos = sum(a["is_fraud"] and m["is_fraud"] for a, m in zip(answers, measured, strict=True))

    print(
        f"\n{args.clients} clients, keep-alive, loopback; {args.rounds} rounds x {args.requests:,} measured requests per "
        f"server (after {args.warmup} warm-up each); throughput: median round; latency: all measured requests"
    )
    figures = {}
    for name, label in (("bare", "bare FastAPI endpoint (baseline)"), ("project", "project fraud service")):
        rps, lat = statistics.median(results[name]["rps"]), results[name]["lat"]
        p50, p99 = percentile(lat, 50), percentile(lat, 99)
        figures[name] = (rps, p99)
        rounds = ", ".join(f"{v:,.0f}" for v in results[name]["rps"])
        print(f"  {label:34} {rps:8,.0f} req/s (rounds: {rounds})  p50 {p50 * 1000:6.2f} ms  p99 {p99 * 1000:6.2f} ms")
    print(
        f"  (load generator in this process, on the same cores: {statistics.median(results['bare']['cpu']):.0%} of a core "
        f"during the bare rounds, {statistics.median(results['project']['cpu']):.0%} during the project rounds; "
        f"servers: bare {statistics.median(results['bare']['server_cpu']):.0%}, "
        f"project {statistics.median(results['project']['server_cpu']):.0%} of a core)"
    )
    ratio = figures["project"][0] / figures["bare"][0]
    print(
        f"throughput ratio project/bare: {ratio:.2f} (goal ≥ 0.5: {'met' if ratio >= 0.5 else 'NOT met'}); "
        f"project p99 < 50 ms: {'yes' if figures['project'][1] < P99_GOAL_S else 'NO'}"
    )
    print(
        f"checks: all {2 * total:,} responses HTTP 200 with the response's fields; store holds {stored:,} prediction rows "
        f"= {total:,} requests sent (same transaction ids); model v{version}"
    )
    if batches:
        print(
            f"project micro-batches in the measured phases: {len(batches):,}, mean size {sum(batches) / len(batches):.1f}, "
            f"largest {max(batches)}"
        )
    print(f"project flagged {flagged} of {len(answers):,} measured transactions, {true_pos} of them fraud per the simulator")
    return 0


if __name__ == "__main__":
    sys.exit(main())
