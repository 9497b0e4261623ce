"""`fraud_monitoring_metrics` end to end over a prediction log of 1 million labelled predictions,
on SQLite and on Postgres, and its drift computation against Evidently's DataDriftPreset on the
live frame the asset built, all measured in the same run.

Goals (issue 11): one run of `fraud_monitoring_job` (what the hourly schedule launches: the
observation of `fraud_prediction_log`, then `fraud_monitoring_metrics` and its two checks) in
≤ 15 s on SQLite, the same figure on Postgres reported beside it; the project's drift computation
(`detect_drift`) ≥ 5× faster than Evidently 0.7's DataDriftPreset on the same live frame (the rows
the asset read from the store, against the champion's training reference), with the same
dataset-drift verdict. The script exits non-zero when the verdicts differ or a run fails.

What runs, as in production with FRAUD_SERVICE_URL set (nothing of the asset is replaced):
- the champion: trained and registered in a temporary MLflow registry by the project's own code
  (`feature_table`, `train_and_promote`) on the 14 simulated days to TRAIN_END (default population:
  1,000 customers, 2,000 terminals, no drift); its training reference (the sample
  `train_and_promote` returns) is written where `fraud_model` writes it;
- the fraud service (`ecosystem-assets serve` in a subprocess, bearer tokens set) on the store,
  serving that champion: it answers the asset's GET /monitoring (precision and recall in SQL);
- the store: SQLite in WAL mode in a temporary folder, or a fresh database on a real Postgres
  server started from the `pgserver` wheel as the tests start it (ecosystem_assets_tests/servers);
- the project's `fraud_monitoring_job`, built by `build_definitions` from the environment,
  executed in-process on a temporary Dagster instance with `end` = the window's end in its config.
  One unmeasured run first per backend (imports, caches), then ``--repeat`` measured runs (median).

Data, deterministic: the ``--pool-days`` simulated days after TRAIN_END with their features
(`feature_table` on 37 days of history before them) are scored by the champion as the service
scores (`load_champion`: its compiled trees and its threshold), then resampled with replacement
(fixed seed) to ``--rows`` predictions, each at its own time of day inside the 24 h before
WINDOW_END, with the simulator's label as feedback: every row is logged, labelled and in the
window. They go straight into the `predictions` and `feedback` tables (store.py) in bulk:
executemany in one transaction on SQLite (then a WAL checkpoint), COPY on Postgres (then VACUUM
ANALYZE, the state autovacuum reaches). The service is started on the empty store, before the
fill: its start-up replay of the feature history is not what is measured. The simulated days
with their features are cached in bench/.data/ (gitignored).

Where the time goes: the functions the asset calls are wrapped with timers for the measured runs
(the log summary of the observation, the store opens, GET /monitoring, the live-features query,
reading the reference, `detect_drift`, the Evidently HTML report, writing it); "Dagster and the
asset's own code" is the rest of the run's wall time. The baseline of the end-to-end figure is a
bare read of the same window's 13 feature columns with the database driver (one SELECT, rows into
numpy): the least any monitoring of these rows has to read.

Evidently gets the 13 features as numerical columns; its dataset verdict is the legacy rule it
uses itself (share of drifted columns ≥ drift_share = 0.5); the helpers are bench/drift.py's.

    python bench/monitoring.py [--rows 1000000] [--backend sqlite|postgres|both] [--repeat 3] [--pool-days 30]
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from ecosystem_assets.fraud.features import HISTORY_DAYS  # the feature windows' reach

DATA = Path(__file__).resolve().parent / ".data"
TRAIN_END = date(2026, 8, 31)  # last training day; the live traffic comes from the days after it
TRAINING_DAYS = 14  # fraud_features' default window
WINDOW_HOURS = 24.0  # MonitoringConfig's default window
WINDOW_END = datetime(2026, 10, 1, tzinfo=UTC)  # the evaluation time (config `end`), in the clock's past
SEED = 20261001
GOAL_S = 15.0
GOAL_SPEEDUP = 5.0
HOST = "127.0.0.1"
PREDICT_TOKEN_ENV, FEEDBACK_TOKEN_ENV = "FRAUD_PREDICT_TOKEN", "FRAUD_FEEDBACK_TOKEN"


# --- data and champion -----------------------------------------------------------------------------


def build_data(pool_days: int):
    """(training table, pool): feature tables of the 14 training days and of the ``pool_days`` after them, cached."""
    import pandas as pd

    from ecosystem_assets.fraud.features import feature_table
    from ecosystem_assets.resources.fraud import TransactionSource

    stem = f"monitoring-{TRAIN_END}-{pool_days}-v1"
    paths = {name: DATA / f"{stem}-{name}.parquet" for name in ("training", "pool")}
    if all(p.exists() for p in paths.values()):
        return pd.read_parquet(paths["training"]), pd.read_parquet(paths["pool"])
    first_train = TRAIN_END - timedelta(days=TRAINING_DAYS - 1)
    first, last = first_train - timedelta(days=HISTORY_DAYS), TRAIN_END + timedelta(days=pool_days)
    started = time.perf_counter()
    print(f"building data: simulating {first}..{last} and computing features ...", flush=True)
    raw = pd.concat(TransactionSource().days(first, last).values(), ignore_index=True)
    table = feature_table(raw)
    day = table["timestamp"].dt.date
    training = table[(day >= first_train) & (day <= TRAIN_END)].reset_index(drop=True)
    pool = table[day > TRAIN_END].reset_index(drop=True)
    print(
        f"  {len(raw):,} transactions; training {len(training):,} rows ({first_train}..{TRAIN_END}), pool {len(pool):,} rows "
        f"({TRAIN_END + timedelta(days=1)}..{last}); {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    DATA.mkdir(parents=True, exist_ok=True)
    training.to_parquet(paths["training"], index=False)
    pool.to_parquet(paths["pool"], index=False)
    return training, pool


def live_rows(pool, rows: int, tracking_uri: str):
    """``rows`` predictions of the champion inside the window, time-ordered, with their labels:
    the `predictions` table's columns plus `label`."""
    import numpy as np
    import pandas as pd
    import uuid6

    from ecosystem_assets.fraud.features import FEATURES
    from ecosystem_assets.serving.champion import champion_version, load_champion
    from ecosystem_assets.serving.store import FEATURE_COLUMNS

    champion = load_champion(tracking_uri, champion_version(tracking_uri))  # what the service serves
    probability = np.asarray(champion.score(pool[FEATURES].to_numpy(dtype=float)), dtype=float)
    pick = np.random.default_rng(SEED).integers(0, len(pool), rows)
    stamps = pool["timestamp"]
    second_of_day = (stamps - stamps.dt.normalize()).dt.total_seconds().to_numpy()
    start = WINDOW_END.timestamp() - WINDOW_HOURS * 3600
    tx_time = start + second_of_day[pick] * (WINDOW_HOURS / 24.0)
    order = np.argsort(tx_time, kind="stable")  # the service logs in time order
    pick, tx_time = pick[order], tx_time[order]
    first_id = uuid6.uuid7().int  # time-ordered ids, as the service mints them
    frame = pd.DataFrame(
        {
            "prediction_id": [f"{first_id + i:032x}" for i in range(rows)],
            "transaction_id": [f"bench-{i:08d}" for i in range(rows)],
            "customer_id": pool["customer_id"].to_numpy()[pick],
            "terminal_id": pool["terminal_id"].to_numpy()[pick],
            "amount": pool["amount"].to_numpy(dtype=float)[pick],
            "tx_time": tx_time,
            "tx_offset_min": 0,
            **{column: pool[name].to_numpy(dtype=float)[pick] for column, name in zip(FEATURE_COLUMNS, FEATURES, strict=True)},
            "fraud_probability": probability[pick],
            "is_fraud": probability[pick] >= champion.threshold,
            "model_version": champion.version,
            "created_at": tx_time + 0.005,
            "label": pool["is_fraud"].to_numpy(dtype=bool)[pick],
        }
    )
    return frame, champion


# --- the store -------------------------------------------------------------------------------------


def fill(store, frame) -> None:
    """``frame`` into `predictions`, its labels into `feedback` (received a day after each transaction)."""
    import io

    import sqlalchemy as sa

    from ecosystem_assets.serving.store import feedback, predictions

    columns = [c.name for c in predictions.columns]
    labels = frame[["prediction_id", "label"]].rename(columns={"label": "is_fraud"})
    labels["received_at"] = frame["tx_time"] + 86_400.0
    tables = ((predictions.name, frame[columns]), (feedback.name, labels[[c.name for c in feedback.columns]]))
    connection = store.engine.raw_connection()
    try:
        cursor = connection.cursor()
        for table, data in tables:
            names = ", ".join(data.columns)
            if store.is_sqlite:
                sql = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(data.columns))})"
                for begin in range(0, len(data), 200_000):
                    part = data.iloc[begin : begin + 200_000]
                    cursor.executemany(sql, zip(*(part[c].tolist() for c in data.columns), strict=True))
            else:
                cursor.copy_expert(
                    f"COPY {table} ({names}) FROM STDIN WITH (FORMAT csv)", io.StringIO(data.to_csv(index=False, header=False))
                )
        connection.commit()
        cursor.close()
    finally:
        connection.close()
    if store.is_sqlite:
        with store.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    else:
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table, _ in tables:
                conn.execute(sa.text(f"VACUUM ANALYZE {table}"))


def bare_read(store) -> int:
    """The window's 13 feature columns with the driver, one SELECT, into numpy (the baseline)."""
    import numpy as np

    from ecosystem_assets.serving.store import FEATURE_COLUMNS

    end = WINDOW_END.timestamp()
    mark = "?" if store.is_sqlite else "%s"
    sql = f"SELECT {', '.join(FEATURE_COLUMNS)} FROM predictions WHERE tx_time >= {mark} AND tx_time < {mark}"
    connection = store.engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute(sql, (end - WINDOW_HOURS * 3600, end))
        values = np.array(cursor.fetchall(), dtype=float)
        cursor.close()
    finally:
        connection.close()
    return len(values)


# --- the fraud service ------------------------------------------------------------------------------


class Service:
    """`ecosystem-assets serve` in a subprocess on a free loopback port (FRAUD_DB_URL etc. from the environment)."""

    def __init__(self, log_path: Path):
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = log_path
        self.log = log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ecosystem_assets.cli", "serve", "--host", HOST, "--port", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, version: str, timeout_s: float = 180.0) -> None:
        """Until /healthz answers 200 with ``version`` serving."""
        import json

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the fraud service exited with {self.process.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                    if response.status == 200 and json.loads(response.read()).get("model_version") == version:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"the fraud service did not serve v{version} within {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


# --- timing what the asset calls --------------------------------------------------------------------


class Probe:
    """Wall time spent in the functions the monitoring run calls, patched on their class or module
    while active (restored after); keeps the arguments of the last `detect_drift` call."""

    def __init__(self) -> None:
        from ecosystem_assets import storage
        from ecosystem_assets.fraud import drift
        from ecosystem_assets.resources.fraud import FraudServiceResource
        from ecosystem_assets.serving.store import PredictionStore

        self.targets = [
            ("observation: log summary (2 SQL aggregates)", PredictionStore, "log_summary"),
            ("store opens (engine, schema check)", PredictionStore, "__init__"),
            ("GET /monitoring (precision/recall in SQL)", FraudServiceResource, "monitoring"),
            ("live features query (driver cursor)", PredictionStore, "live_features"),
            ("reference read", storage, "read_parquet"),
            ("drift: detect_drift", drift, "detect_drift"),
            ("Evidently HTML report (sample)", drift, "evidently_report_html"),
            ("report write", storage.LocalStore, "write_bytes"),
        ]
        self.seconds: dict[str, float] = defaultdict(float)
        self.drift_args: tuple = ()
        self._saved: list[tuple[Any, str, Any]] = []

    def _wrap(self, label: str, function: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - started
                if function.__name__ == "detect_drift":
                    self.drift_args = args

        return timed

    def __enter__(self) -> Probe:
        self.seconds.clear()
        for label, owner, name in self.targets:
            original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
            self._saved.append((owner, name, original))
            setattr(owner, name, self._wrap(label, original))
        return self

    def __exit__(self, *exc: Any) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()


def run_monitoring(job, instance) -> tuple[float, Any]:
    run_config = {
        "ops": {"fraud_monitoring_metrics": {"config": {"end": WINDOW_END.isoformat(), "window_hours": WINDOW_HOURS}}},
        "loggers": {"console": {"config": {"log_level": "WARNING"}}},
    }
    started = time.perf_counter()
    result = job.execute_in_process(instance=instance, run_config=run_config, raise_on_error=False)
    seconds = time.perf_counter() - started
    if not result.success:
        raise SystemExit(f"fraud_monitoring_job failed: {[e.message for e in result.all_events if e.is_failure]}")
    return seconds, result


def outcome(result) -> dict[str, Any]:
    """What the run recorded: the materialization's metadata and the two checks."""
    from ecosystem_assets.fraud.checks import DRIFT_CHECK, JUDGED, PRECISION_CHECK

    [materialization] = result.asset_materializations_for_node("fraud_monitoring_metrics")
    meta = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    drift, precision = checks[DRIFT_CHECK], checks[PRECISION_CHECK]
    return {
        **{k: meta.get(k) for k in ("model_version", "precision", "recall", "labelled", "predictions", "drift_share")},
        "precision_check": precision.passed,
        "drift_judged": drift.metadata[JUDGED].value,
        "live_rows": drift.metadata["live_rows"].value,
        "dataset_drift": not drift.passed,
        "drift_description": drift.description,
    }


# --- one backend ------------------------------------------------------------------------------------


def bench_backend(name: str, db_url: str, frame, version: str, repeat: int, root: Path, instance) -> dict[str, Any]:
    from ecosystem_assets.fraud.definitions import MONITORING_JOB
    from ecosystem_assets.project import build_definitions
    from ecosystem_assets.serving.store import PredictionStore
    from ecosystem_assets.settings import Settings

    os.environ["FRAUD_DB_URL"] = db_url
    store = PredictionStore(db_url)  # the schema, as the service creates it
    service = Service(root / f"service-{name}.log")
    try:
        service.wait_ready(version)
        os.environ["FRAUD_SERVICE_URL"] = service.url
        started = time.perf_counter()
        fill(store, frame)
        fill_s = time.perf_counter() - started
        print(f"[{name}] filled {len(frame):,} predictions and {len(frame):,} labels in {fill_s:.1f} s", flush=True)
        job = build_definitions(Settings.from_env()).resolve_job_def(MONITORING_JOB)
        warm_s, result = run_monitoring(job, instance)
        print(f"[{name}] unmeasured first run: {warm_s:.2f} s", flush=True)
        runs, bare = [], []
        for _ in range(repeat):
            started = time.perf_counter()
            read = bare_read(store)
            bare.append(time.perf_counter() - started)
            assert read == len(frame), f"bare read found {read:,} rows in the window, {len(frame):,} expected"
            with Probe() as probe:
                seconds, result = run_monitoring(job, instance)
            runs.append((seconds, dict(probe.seconds), outcome(result)))
            print(f"[{name}] run {len(runs)}: {seconds:.2f} s (bare read {bare[-1]:.2f} s)", flush=True)
        return {"fill_s": fill_s, "warm_s": warm_s, "runs": runs, "bare": bare, "drift_args": probe.drift_args}
    finally:
        service.stop()
        store.engine.dispose()
        store._nowait_engine.dispose()


def report_backend(name: str, figures: dict[str, Any], rows: int) -> float:
    runs = figures["runs"]
    median_s = statistics.median(r[0] for r in runs)
    bare_s = statistics.median(figures["bare"])
    last = runs[-1][2]
    print(f"\n[{name}] {rows:,} labelled predictions in the 24 h window; fraud_monitoring_job end to end")
    print(
        f"  bare driver read of the window's features (baseline)  median {bare_s:7.2f} s over {len(figures['bare'])} read(s)\n"
        f"  project fraud_monitoring_job (observation + asset + checks) median {median_s:7.2f} s over {len(runs)} run(s) "
        f"({', '.join(f'{r[0]:.2f}' for r in runs)}; unmeasured first run {figures['warm_s']:.2f} s)\n"
        f"  ratio project/bare read: {median_s / bare_s:.1f}x"
    )
    labels = list(runs[0][1])
    print("  where the time goes (median over the measured runs):")
    parts = {label: statistics.median(r[1].get(label, 0.0) for r in runs) for label in labels}
    rest = statistics.median(r[0] - sum(r[1].values()) for r in runs)
    for label, seconds in [*parts.items(), ("Dagster and the asset's own code (the rest)", rest)]:
        print(f"    {label:48} {seconds:7.2f} s  {seconds / median_s:5.1%}")
    print(
        f"  recorded: v{last['model_version']}, precision {last['precision']:.4f}, recall {last['recall']:.4f}, "
        f"labelled {last['labelled']:,} of {last['predictions']:,}; drift share {last['drift_share']:.3f}, "
        f"dataset drift {last['dataset_drift']} ({last['drift_description']})"
    )
    if last["labelled"] != rows or last["predictions"] != rows or last["live_rows"] != rows or not last["drift_judged"]:
        raise SystemExit(f"[{name}] the run did not judge the {rows:,} rows: {last}")
    return median_s


# --- main -------------------------------------------------------------------------------------------


def bench_drift():
    """bench/drift.py's helpers (`project`, `evidently`, `timed`), loaded from its file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_drift", Path(__file__).with_name("drift.py"))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def clean_environment(root: Path, tracking_uri: str) -> None:
    """Only this run's settings: every project variable cleared, then the run's own set."""
    from ecosystem_assets.settings import Settings

    for field in Settings.model_fields.values():  # each field names its variable
        if isinstance(field.validation_alias, str):
            os.environ.pop(field.validation_alias, None)
    for name in [n for n in os.environ if n.startswith("FRAUD_")]:  # secrets read outside Settings too
        os.environ.pop(name)
    os.environ.update(
        {
            "ECOSYSTEM_HOME": str(root / "home"),
            "MLFLOW_TRACKING_URI": tracking_uri,
            PREDICT_TOKEN_ENV: secrets.token_hex(32),
            FEEDBACK_TOKEN_ENV: secrets.token_hex(32),
            "DO_NOT_TRACK": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="labelled predictions in the window")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--repeat", type=int, default=3, help="measured runs per backend (median), after one unmeasured")
    parser.add_argument("--pool-days", type=int, default=30, help="simulated days after training whose rows are resampled")
    parser.add_argument("--drift-repeat", type=int, default=3, help="runs of detect_drift in the comparison (median)")
    parser.add_argument("--evidently-repeat", type=int, default=1, help="runs of Evidently in the comparison (median)")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]

    import contextlib
    import logging
    import warnings

    import dagster as dg

    from ecosystem_assets.fraud.assets import reference_key
    from ecosystem_assets.fraud.features import FEATURES
    from ecosystem_assets.resources.storage import ArtifactStorage
    from ecosystem_assets.storage import write_parquet

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")  # pgserver's platformdirs, as root
    logging.getLogger("alembic").setLevel(logging.WARNING)
    figures: dict[str, dict[str, Any]] = {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="monitoring-bench-") as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
        clean_environment(root, tracking_uri)
        training, pool = build_data(args.pool_days)
        started = time.perf_counter()
        from fraud_service import register_champion  # bench/ is the script's folder, first on sys.path

        version, reference = register_champion(tracking_uri, root / "artifacts", training)
        write_parquet(ArtifactStorage(url=str(root / "home" / "storage")).store, reference_key(version), reference)
        frame, champion = live_rows(pool, args.rows, tracking_uri)
        print(
            f"setup: champion v{version} (threshold {champion.threshold:.3f}) trained on "
            f"{TRAIN_END - timedelta(days=TRAINING_DAYS - 1)}..{TRAIN_END}, reference {len(reference):,} rows; "
            f"{args.rows:,} predictions resampled from {len(pool):,} rows of {args.pool_days} days, "
            f"flagged {int(frame['is_fraud'].sum()):,}, frauds {int(frame['label'].sum()):,}; "
            f"window {(WINDOW_END - timedelta(hours=WINDOW_HOURS)).isoformat()}..{WINDOW_END.isoformat()}; "
            f"{time.perf_counter() - started:.1f} s",
            flush=True,
        )
        (root / "dagster").mkdir()
        instance = stack.enter_context(dg.instance_for_test(temp_dir=str(root / "dagster"), overrides={"telemetry": {"enabled": False}}))
        for name in backends:
            if name == "sqlite":
                db_url = f"sqlite:///{root / 'service.db'}"
            else:
                sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' package is not installed
                from ecosystem_assets_tests.servers.postgres import fresh_database, postgres_server

                server_url = stack.enter_context(postgres_server(root / "pgdata"))
                db_url = stack.enter_context(fresh_database(server_url))
            figures[name] = bench_backend(name, db_url, frame, version, args.repeat, root, instance)
        del frame

        results = {name: report_backend(name, figures[name], args.rows) for name in backends}
        recorded = [figures[name]["runs"][-1][2] for name in backends]
        same = all(r == recorded[0] for r in recorded)
        if len(backends) > 1:
            print(f"\nboth backends recorded the same precision, recall, counts and drift: {same}")

        # The drift comparison, on the frame the asset passed to detect_drift in its last run.
        module = bench_drift()
        reference_used, live = figures[backends[0]]["drift_args"][:2]
        small = live.head(5_000)
        with warnings.catch_warnings():  # constant columns make Evidently's correlation plots divide by zero
            warnings.simplefilter("ignore", RuntimeWarning)
            module.project(reference_used, small, FEATURES), module.evidently(reference_used, small, FEATURES)  # warm-up
            p_time, (p_verdict, p_share, _) = module.timed(module.project, args.drift_repeat, reference_used, live, FEATURES)
            e_time, (e_verdict, e_share, _) = module.timed(module.evidently, args.evidently_repeat, reference_used, live, FEATURES)
        in_run = statistics.median(r[1]["drift: detect_drift"] for r in figures[backends[0]]["runs"])
    equal = p_verdict == e_verdict == recorded[0]["dataset_drift"]
    speedup = e_time / p_time
    print(
        f"\ndrift on the asset's live frame ({backends[0]}: {len(live):,} rows of v{version}) vs the champion's "
        f"training reference ({len(reference_used):,} rows), {len(FEATURES)} features"
    )
    print(
        f"  Evidently DataDriftPreset (baseline)  median {e_time:7.2f} s over {args.evidently_repeat} run(s); "
        f"dataset drift {e_verdict}, share {e_share:.3f}"
    )
    print(
        f"  project detect_drift                  median {p_time:7.2f} s over {args.drift_repeat} run(s) "
        f"({in_run:.2f} s inside the asset's runs); dataset drift {p_verdict}, share {p_share:.3f}"
    )
    print(f"  verdicts (Evidently, project, the asset's drift check) {'EQUAL' if equal else 'DIFFER'}")

    print(
        f"\nload average (1/5/15 min) at the start {'/'.join(f'{x:.1f}' for x in load_before)}, at the end "
        f"{'/'.join(f'{x:.1f}' for x in os.getloadavg())}, on {os.cpu_count()} cores (this script keeps about one busy)"
    )
    print("\ngoals (issue 11):")
    if "sqlite" in results:
        met = results["sqlite"] <= GOAL_S
        print(f"  fraud_monitoring_job on SQLite ≤ {GOAL_S:g} s: {results['sqlite']:.2f} s, {'met' if met else 'NOT met'}")
    if "postgres" in results:
        print(f"  the same on Postgres (reported): {results['postgres']:.2f} s")
    print(
        f"  detect_drift ≥ {GOAL_SPEEDUP:g}x faster than Evidently: {speedup:.1f}x, {'met' if speedup >= GOAL_SPEEDUP else 'NOT met'}; "
        f"same dataset-drift verdict: {'met' if equal else 'NOT met'}"
    )
    if len(backends) > 1 and not same:
        print("the backends recorded different figures (see above)")
        return 1
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
