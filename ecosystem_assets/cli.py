"""`ecosystem-assets` console script: `demo` runs every workflow once on the current settings."""

from __future__ import annotations

import argparse
import io
import re
import sys
import time
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo


def _yesterday(timezone: str) -> str:
    return (datetime.now(ZoneInfo(timezone)).date() - timedelta(days=1)).isoformat()


def _instance() -> Any:
    import os

    import dagster as dg

    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    print("DAGSTER_HOME is not set: runs go to a throwaway instance and won't show in `dagster dev`.")
    return dg.DagsterInstance.ephemeral()


def _outputs(result: Any, asset: str) -> dict:
    """The metadata of ``asset``'s materialization in ``result`` (plain values)."""
    import dagster as dg

    for event in result.get_asset_materialization_events():
        if event.asset_key == dg.AssetKey(asset):
            return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}
    return {}


def _email_line(email: dict) -> str:
    """What became of the day's email: sent now (where to), or sent before by another run (then not again)."""
    if email.get("sent") is False:
        return f"already sent by run {email.get('sent_by_run')} at {email.get('sent_at') or '?'}; not sent again"
    extras = f"{email.get('history_days', 0)} earlier days compared" + (", revenue chart" if email.get("chart") else "")
    return f"{email.get('subject')} ({extras}) → {email.get('transport')}"


def _summarise_earlier_days(defs: Any, instance: Any, day: date, start: str) -> list[str]:
    """Summarise the days before ``day`` that the email looks back at (no email for them), skipping days
    this instance already summarised and days before SALES_START_DATE; the days run."""
    import dagster as dg

    from ecosystem_assets.sales.history import earlier_days

    key = dg.AssetKey("sales_summary_csv")
    wanted = [d.isoformat() for d in earlier_days(day) if d >= date.fromisoformat(start)]
    done = instance.get_latest_storage_id_by_partition(key, dg.DagsterEventType.ASSET_MATERIALIZATION, set(wanted))
    job = defs.resolve_implicit_global_asset_job_def()
    todo = [d for d in wanted if d not in done]
    for earlier in todo:
        result = job.execute_in_process(
            partition_key=earlier,
            instance=instance,
            raise_on_error=False,
            asset_selection=[dg.AssetKey("raw_sales"), key],
            run_config=QUIET_RUN_CONFIG,
        )
        if not result.success:
            raise SystemExit(f"FAILED: the summary of {earlier} (run {result.run_id}) did not succeed; `make dev` shows its event log.")
    return todo


# The demo's runs print only Dagster's warnings and errors to the terminal (the console logger's level);
# the instance's event log still records every event at every level, so `make dev` shows the full runs.
QUIET_RUN_CONFIG: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

# Lines that libraries print straight to stderr (not through logging) and that say nothing wrong.
_HARMLESS_STDERR = re.compile(
    # MLflow's registry (eprint): the model name exists from an earlier run, a new version is made as intended;
    # the version number is in the demo's summary.
    r"Registered model '[^']*' already exists\. Creating a new version"
    r"|Created version '\d+' of model"
)


class _DropHarmless(io.TextIOBase):
    """A stderr that drops the lines ``_HARMLESS_STDERR`` matches and passes everything else on."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            if not _HARMLESS_STDERR.search(line):
                self._stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        if self._pending and not _HARMLESS_STDERR.search(self._pending):
            self._stream.write(self._pending)
        self._pending = ""
        self._stream.flush()

    def fileno(self) -> int:  # subprocesses (torchrun) inherit the real descriptor
        return self._stream.fileno()

    def isatty(self) -> bool:
        return self._stream.isatty()


def _quiet_libraries() -> None:
    """Silence the libraries' messages that are harmless in the demo; their warnings stay visible."""
    import logging

    # MLflow's INFO lines ("Creating initial MLflow database tables...", "Updating database tables")
    # and alembic's migration steps: the first use of the local sqlite tracking store, expected.
    import mlflow  # noqa: F401  (imported first: its import sets the "mlflow" logger's level, which this then raises)

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Great Expectations' INFO line "Created temporary directory … for ephemeral docs site": the quality
    # gate runs in an ephemeral context that never builds the docs. That module sets its logger to INFO
    # when imported, so it is imported first.
    import great_expectations.data_context.types.base as ge_config

    logging.getLogger(ge_config.__name__).setLevel(logging.WARNING)
    sys.stderr = _DropHarmless(sys.stderr)


def _run(defs: Any, job: str, instance: Any, run_config: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    result = defs.resolve_job_def(job).execute_in_process(
        instance=instance, raise_on_error=False, run_config={**(run_config or {}), **QUIET_RUN_CONFIG}, **kwargs
    )
    if not result.success:
        raise SystemExit(f"FAILED: {job} run {result.run_id} did not succeed; `make dev` shows its event log.")
    return result


def demo(partition: str | None) -> int:
    """Materialize every asset on the current settings (embedded defaults unless overridden)."""
    _quiet_libraries()
    import dagster as dg

    from ecosystem_assets.definitions import defs
    from ecosystem_assets.fraud.definitions import MONITORING_JOB, RETRAIN_JOB
    from ecosystem_assets.sales.email_report import money
    from ecosystem_assets.sales.schedules import DAILY_JOB
    from ecosystem_assets.settings import Settings

    settings = Settings.from_env()
    instance = _instance()
    day = partition or _yesterday(settings.report_timezone)
    print(f"1/3 Sales report for {day} ({settings.report_timezone}); storage: {settings.storage_url}")
    summarised = _summarise_earlier_days(defs, instance, date.fromisoformat(day), settings.sales_start_date)
    if summarised:
        print(f"  earlier days  {len(summarised)} summarised ({summarised[0]}..{summarised[-1]}) for the comparisons and the chart")
    result = _run(defs, DAILY_JOB, instance, partition_key=day)
    raw, csv, email = (_outputs(result, a) for a in ("raw_sales", "sales_summary_csv", "sales_report_email"))
    print(f"  raw orders    {raw.get('orders')} orders → {raw.get('path')}")
    revenue = money(csv["revenue_cents"], settings.report_currency) if isinstance(csv.get("revenue_cents"), int) else csv.get("revenue")
    print(f"  summary CSV   {csv.get('rows')} rows, revenue {revenue} → {csv.get('path')}")
    print(f"  email         {_email_line(email)}")

    print("2/3 Image classifier: dataset → DDP training under torchrun → evaluation and promotion")
    result = _run(defs, "vision_training_job", instance)
    dataset, evaluation = _outputs(result, "image_dataset"), _outputs(result, "cnn_evaluation")
    print(
        f"  dataset       {dataset.get('usable_images')} images, version {str(dataset.get('dataset_version'))[:12]} → {dataset.get('manifest')}"
    )
    print(
        f"  evaluation    image-classifier v{evaluation.get('model_version')}: test accuracy {evaluation.get('test_accuracy'):.4f}; "
        f"champion v{evaluation.get('champion_version')} ({evaluation.get('promotion')})"
    )

    # The first model is trained on data ending 31 days ago, so that `make replay` can send the
    # last 30 days through the service as "production".
    today = datetime.now(ZoneInfo("UTC")).date()
    end = today - timedelta(days=31)
    print(f"3/3 Fraud model: transactions {today - timedelta(days=90)}..{today - timedelta(days=1)}, model trained up to {end}")
    assets_job = defs.resolve_implicit_global_asset_job_def()
    backfill = assets_job.execute_in_process(
        asset_selection=[dg.AssetKey("fraud_transactions")],
        instance=instance,
        raise_on_error=False,
        run_config=QUIET_RUN_CONFIG,
        tags={
            "dagster/asset_partition_range_start": str(today - timedelta(days=90)),
            "dagster/asset_partition_range_end": str(today - timedelta(days=1)),
        },
    )
    if not backfill.success:
        raise SystemExit(f"FAILED: fraud_transactions backfill run {backfill.run_id}")
    model = _outputs(
        _run(defs, RETRAIN_JOB, instance, run_config={"ops": {"fraud_features": {"config": {"end_date": str(end)}}}}), "fraud_model"
    )
    print(
        f"  fraud model   version {model.get('model_version')}, precision {model.get('precision'):.3f}, "
        f"recall {model.get('recall'):.3f}; champion {model.get('champion_after')} ({model.get('reason')})"
    )
    monitoring = _run(defs, MONITORING_JOB, instance)
    for check in monitoring.get_asset_check_evaluations():
        outcome = _check_outcome(check)  # a not-judged description already starts with "not judged"
        print(
            f"  monitoring    {check.check_name}: " + (check.description if outcome == "not judged" else f"{outcome} — {_describe(check)}")
        )
    _summary(settings, csv, email, evaluation, model)
    return 0


def _summary(settings: Any, csv: dict, email: dict, evaluation: dict, model: dict) -> None:
    """The closing lines: what the demo made, where it is, and what to run next."""
    import os

    home = os.environ.get("DAGSTER_HOME") or "a throwaway instance (set DAGSTER_HOME to keep the runs)"
    print("Done. Made:")
    print(f"  sales report  {csv.get('path')}; email {email.get('transport') or 'not sent again'}")
    print(f"  models        image-classifier v{evaluation.get('model_version')}, fraud model v{model.get('model_version')}")
    print(f"                in MLflow at {settings.mlflow_tracking_uri}")
    print(f"  storage       {settings.storage_url}")
    print(f"  Dagster runs  {home}")
    print("Next:")
    print("  make dev      the Dagster UI on http://127.0.0.1:3000: every run above, with its full event log")
    print("  make serve    the fraud service on http://127.0.0.1:8000 (then `make replay`: README, 'Closed-loop retraining')")
    print("  make mlflow   the MLflow UI on http://127.0.0.1:5000: the runs, metrics and registered models")


def serve(host: str, port: int, poll_s: float, access_log: bool = False) -> int:
    """Run the fraud service on FRAUD_DB_URL and MLFLOW_TRACKING_URI, with the bearer tokens
    FRAUD_PREDICT_TOKEN and FRAUD_FEEDBACK_TOKEN (without them only on a loopback address), and the
    online feature state in FRAUD_FEATURE_STORE_URL (Redis/Valkey, shared by replicas) or in-process."""
    from ecosystem_assets.serving.auth import TokenError, check_serving_tokens
    from ecosystem_assets.settings import Settings, secret

    settings = Settings.from_env()
    tokens: dict[str, Any] = {"predict_token": secret("FRAUD_PREDICT_TOKEN"), "feedback_token": secret("FRAUD_FEEDBACK_TOKEN")}
    try:
        check_serving_tokens(host, **tokens)
    except TokenError as exc:  # the message names the variables, never a value
        print(f"ecosystem-assets serve: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from ecosystem_assets.serving.app import create_app

    app = create_app(
        settings.fraud_db_url,
        settings.mlflow_tracking_uri,
        poll_s=poll_s,
        **tokens,
        max_amount=settings.fraud_max_amount,
        max_clock_skew_s=settings.fraud_max_clock_skew_s,
        max_predict_bytes=settings.fraud_max_predict_bytes,
        max_history_bytes=settings.fraud_max_history_bytes,
        feature_store_url=secret("FRAUD_FEATURE_STORE_URL"),  # may hold a password: a secret, not a setting
    )
    _service_logs()
    # No access log unless asked: one line per request is 133k lines per replayed month (the
    # request counts and latencies are in /metrics).
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=access_log)
    return 0


def _service_logs() -> None:
    """The service's own INFO lines (a champion swap, the warm-up) on stderr, as uvicorn's."""
    import logging

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    logger = logging.getLogger("ecosystem_assets")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _describe(evaluation: Any) -> str:
    """The check's description; for a freshness check our own words, since Dagster's reads "The last
    update was  ago" when the update is under a second old, as it is right after the demo's run."""
    meta = {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}
    updated, params = meta.get("dagster/last_updated_timestamp"), meta.get("dagster/freshness_params")
    if not isinstance(updated, float) or not isinstance(params, dict) or "lower_bound_delta_seconds" not in params:
        return str(evaluation.description)
    age_s = max(0.0, time.time() - updated)
    return f"last updated {age_s:.0f} s ago; expected at least every {params['lower_bound_delta_seconds'] / 3600:g} h"


def _check_outcome(evaluation: Any) -> str:
    """passed, FAILED, or not judged (a warning: too little to judge)."""
    from ecosystem_assets.fraud.checks import JUDGED

    judged = evaluation.metadata.get(JUDGED)
    if getattr(judged, "value", judged) is False:
        return "not judged"
    return "passed" if evaluation.passed else "FAILED"


def replay(
    service: str, first: str | None, days: int, history_days: int, workers: int, with_dagster: bool, day_seconds: float = 0.0
) -> int:
    """Replay simulated days through the service; after each day, land its transactions in storage and
    run the monitoring job, so that `dagster dev` shows the checks and the sensor reacting. Each day
    lasts at least ``day_seconds`` of wall-clock time: the sensor's interval and the retrain cooldown
    are wall-clock times, so without a pace a faster service would change which day a retrain lands on."""
    import time

    from ecosystem_assets.fraud.definitions import MONITORING_JOB
    from ecosystem_assets.fraud.features import HISTORY_DAYS
    from ecosystem_assets.fraud.replay import replay_day, send_history
    from ecosystem_assets.resources.fraud import TransactionSource
    from ecosystem_assets.settings import Settings, secret

    settings = Settings.from_env()
    tokens: dict[str, Any] = {"predict_token": secret("FRAUD_PREDICT_TOKEN"), "feedback_token": secret("FRAUD_FEEDBACK_TOKEN")}
    start = datetime.fromisoformat(first).date() if first else datetime.now(ZoneInfo("UTC")).date() - timedelta(days=days)
    source = TransactionSource(drift_from=settings.fraud_drift_from)
    print(f"Replaying {days} days from {start} through {service} (drift from {settings.fraud_drift_from or 'never'})")
    if history_days:
        past = source.days(start - timedelta(days=min(history_days, HISTORY_DAYS)), start - timedelta(days=1))
        import pandas as pd

        added = send_history(service, pd.concat(past.values(), ignore_index=True), feedback_token=tokens["feedback_token"])
        print(f"  feature history: {added} labelled past transactions loaded")
    if with_dagster:
        import dagster as dg

        from ecosystem_assets.definitions import defs

        instance = _instance()
        assets_job = defs.resolve_implicit_global_asset_job_def()
    for offset in range(days):
        began = time.monotonic()
        day = start + timedelta(days=offset)
        frame = source.days(day, day)[day]
        print("  " + replay_day(service, day.isoformat(), frame, workers=workers, **tokens).line(), flush=True)
        if with_dagster:
            # Tagged, so the UI's run list tells the replay's runs from scheduled and manual ones.
            tags = {REPLAY_TAG: day.isoformat()}
            assets_job.execute_in_process(
                asset_selection=[dg.AssetKey("fraud_transactions")],
                partition_key=day.isoformat(),
                instance=instance,
                raise_on_error=False,
                tags=tags,
            )
            # The window ends where the simulated day does, not at whatever newest row the store holds.
            end = datetime.combine(day + timedelta(days=1), datetime.min.time(), ZoneInfo("UTC")).isoformat()
            result = defs.resolve_job_def(MONITORING_JOB).execute_in_process(
                instance=instance,
                raise_on_error=False,
                run_config={"ops": {"fraud_monitoring_metrics": {"config": {"end": end}}}},
                tags=tags,
            )
            checks = ", ".join(f"{e.check_name} {_check_outcome(e)}" for e in result.get_asset_check_evaluations())
            print(f"    monitoring: {checks}", flush=True)
        time.sleep(max(0.0, day_seconds - (time.monotonic() - began)))
    return 0


REPLAY_TAG = "ecosystem/replay_day"  # on the Dagster runs `replay` starts: the simulated day


def main(argv: list[str] | None = None) -> int:
    from ecosystem_assets.fraud.features import HISTORY_DAYS

    parser = argparse.ArgumentParser(prog="ecosystem-assets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo_cmd = commands.add_parser("demo", help="materialize every workflow once (yesterday's sales report)")
    demo_cmd.add_argument("--partition", help="sales day YYYY-MM-DD (default: yesterday in REPORT_TIMEZONE)")
    serve_cmd = commands.add_parser(
        "serve",
        help="run the fraud service (FastAPI under uvicorn)",
        description="Bearer tokens come from FRAUD_PREDICT_TOKEN (/predict) and FRAUD_FEEDBACK_TOKEN (/feedback, "
        "/history, /monitoring); without both, the service runs open and only on a loopback host.",
    )
    serve_cmd.add_argument("--host", default="127.0.0.1", help="a non-loopback host needs both tokens set")
    serve_cmd.add_argument("--port", type=int, default=8000)
    serve_cmd.add_argument("--poll", type=float, default=2.0, help="seconds between checks for a new champion")
    serve_cmd.add_argument("--access-log", action="store_true", help="log one line per request (off by default)")
    replay_cmd = commands.add_parser("replay", help="replay simulated days through the fraud service")
    replay_cmd.add_argument("--service", default="http://127.0.0.1:8000")
    replay_cmd.add_argument("--first", help="first day YYYY-MM-DD (default: DAYS days ago)")
    replay_cmd.add_argument("--days", type=int, default=30)
    replay_cmd.add_argument(
        "--history-days",
        type=int,
        default=HISTORY_DAYS,
        help="labelled days before FIRST to warm the features (at most the feature windows' reach)",
    )
    replay_cmd.add_argument("--workers", type=int, default=8)
    replay_cmd.add_argument("--no-dagster", action="store_true", help="only send traffic; no storage or monitoring runs")
    replay_cmd.add_argument(
        "--day-seconds", type=float, default=0.0, help="shortest wall-clock time of a simulated day (the story's pace; see `make replay`)"
    )
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args.partition)
    if args.command == "serve":
        return serve(args.host, args.port, args.poll, args.access_log)
    if args.command == "replay":
        return replay(
            args.service.rstrip("/"), args.first, args.days, args.history_days, args.workers, not args.no_dagster, args.day_seconds
        )
    return 2


if __name__ == "__main__":
    sys.exit(main())
