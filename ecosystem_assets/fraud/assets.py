"""Fraud assets: transactions → features → model (MLflow, champion gate) → live monitoring.

Thin Dagster wiring over fraud/*.py and serving/*.py; heavy libraries load inside the assets.
"""

import io
import warnings
from datetime import date, datetime, timedelta, timezone

import dagster as dg
from pydantic import Field

from ecosystem_assets.fraud.checks import (
    DRIFT_CHECK,
    FEATURES_CHECK,
    JUDGED,
    PRECISION_CHECK,
    WINDOW_END,
    Verdict,
    day_ranges,
    precision_verdict,
)
from ecosystem_assets.resources.fraud import FraudServiceResource, TransactionSource
from ecosystem_assets.resources.mlflow import MlflowTracking
from ecosystem_assets.resources.storage import ArtifactStorage

HISTORY_DAYS = 37  # the feature windows look back up to 7 + 30 days
EXPERIMENT = "fraud-detector"


def transactions_key(day: date) -> str:
    return f"fraud/transactions/{day.isoformat()}.parquet"


FEATURES_KEY = "fraud/features/training.parquet"


def reference_key(version: str) -> str:
    return f"fraud/reference/v{version}.parquet"


def _parquet(frame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


class FeaturesConfig(dg.Config):
    training_days: int = Field(default=14, description="Days of labelled transactions to train, calibrate and hold out on.")
    end_date: str | None = Field(default=None, description="Last day (YYYY-MM-DD); default: the newest day in storage.")


class FraudModelConfig(dg.Config):
    calibration_days: int = Field(default=2, description="Days before the holdout used to choose the threshold.")
    holdout_days: int = Field(default=2, description="Most recent days: the champion comparison and reported metrics.")
    target_precision: float = Field(default=0.9, description="The threshold is the lowest reaching this precision.")
    seed: int = 0
    max_iter: int = 200
    learning_rate: float = 0.1


class MonitoringConfig(dg.Config):
    window_hours: float = Field(default=24, description="Hours of traffic before the window's end to judge.")
    end: str | None = Field(default=None, description="End of the window, ISO-8601 with offset (e.g. 2026-09-18T00:00:00+00:00); "
                                                       "default: the schedule's tick, else now. Later rows are outside.")
    min_labelled: int = Field(default=200, description="Fewer labelled predictions than this are not judged.")
    # Undrifted traffic sampled against a 14-day reference (the simulator's 1,000 customers,
    # about 2,000 rows a day) showed dataset drift in 40 of 40 draws of 50 rows, 7 of 200, 1 of
    # 300 and none of 500: below that the tests measure sampling noise, not the world.
    min_drift_rows: int = Field(default=500, description="Fewer live rows of the serving model than this: drift is not judged.")


def _transactions_asset(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(group_name="fraud", partitions_def=partitions, kinds={"python", "parquet"},
              backfill_policy=dg.BackfillPolicy.single_run())
    def fraud_transactions(context: dg.AssetExecutionContext, transactions: TransactionSource, storage: ArtifactStorage):
        """Labelled card transactions of each day (the seeded simulator by default, or the Parquet days
        at FRAUD_TRANSACTIONS_URL): the training data and the ground truth that the live service's
        feedback reflects. A range of days runs as one run; re-materializing a day picks up labels
        that arrived since (rows still unlabelled are stored with a null `is_fraud`)."""
        from ecosystem_assets.fraud.transaction_files import TransactionFileError
        from ecosystem_assets.storage import StorageError

        window = context.partition_time_window
        first, last = window.start.date(), (window.end - timedelta(days=1)).date()
        try:
            frames = transactions.days(first, last)
        except (TransactionFileError, StorageError) as exc:
            raise dg.Failure(description=str(exc)) from None
        for day, frame in frames.items():
            storage.store.write_bytes(transactions_key(day), _parquet(frame))
        total = sum(len(f) for f in frames.values())
        labelled = sum(int(f["is_fraud"].notna().sum()) for f in frames.values())
        frauds = sum(int(f["is_fraud"].sum()) for f in frames.values())
        return dg.MaterializeResult(metadata={
            "days": dg.MetadataValue.int(len(frames)), "transactions": dg.MetadataValue.int(total),
            "unlabelled": dg.MetadataValue.int(total - labelled),
            "fraud_rate": dg.MetadataValue.float(frauds / labelled if labelled else 0.0),
            "source": transactions.source_label,
            "drift_from": transactions.drift_from or "none",
            "path": dg.MetadataValue.path(storage.store.uri(transactions_key(last))),
        })

    return fraud_transactions


def build_fraud_assets(partitions: dg.PartitionsDefinition, precision_threshold: float) -> list[dg.AssetsDefinition]:
    with warnings.catch_warnings():  # backfill_policy is "beta"; a single-run backfill is what we want
        warnings.simplefilter("ignore", dg.BetaWarning)
        fraud_transactions = _transactions_asset(partitions)

    @dg.asset(group_name="fraud", deps=[fraud_transactions], kinds={"python", "parquet"},
              check_specs=[dg.AssetCheckSpec(FEATURES_CHECK, asset="fraud_features", blocking=True,
                                             description="Schema, no nulls, amount ≥ 0, label in {0,1}, plausible fraud rate.")])
    def fraud_features(context: dg.AssetExecutionContext, config: FeaturesConfig, storage: ArtifactStorage):
        """The training table: the last N days of transactions with their features, computed by the
        same function the live service uses, on 37 days of history before them."""
        import pandas as pd

        from ecosystem_assets.fraud.checks import feature_expectations
        from ecosystem_assets.fraud.features import FEATURES, feature_table
        from ecosystem_assets.fraud.transaction_files import training_labels
        from ecosystem_assets.quality import validate_frame

        end = date.fromisoformat(config.end_date) if config.end_date else _newest_day(storage)
        first_train = end - timedelta(days=config.training_days - 1)
        days = [first_train - timedelta(days=HISTORY_DAYS) + timedelta(days=i) for i in range(config.training_days + HISTORY_DAYS)]
        missing = [d for d in days if not storage.store.exists(transactions_key(d))]
        if missing:
            raise dg.Failure(description=f"fraud_transactions is missing {len(missing)} days needed for {first_train}..{end} "
                                         f"(with {HISTORY_DAYS} days of history): {day_ranges(missing)}; backfill them first.")
        raw = pd.concat([pd.read_parquet(io.BytesIO(storage.store.read_bytes(transactions_key(d)))) for d in days], ignore_index=True)
        # Late labels: unlabelled rows are history (genuine for the terminal risk), not training rows.
        raw, unlabelled = training_labels(raw)
        table = feature_table(raw)
        table = table[table["timestamp"] >= pd.Timestamp(first_train, tz="UTC")].reset_index(drop=True)
        dropped = table["transaction_id"].isin(unlabelled)
        table = table[~dropped].reset_index(drop=True)
        gate = validate_frame(table, "fraud_features", feature_expectations(FEATURES))
        uri = storage.store.write_bytes(FEATURES_KEY, _parquet(table))
        yield dg.MaterializeResult(metadata={
            "path": dg.MetadataValue.path(uri), "rows": dg.MetadataValue.int(len(table)),
            "first_day": first_train.isoformat(), "last_day": end.isoformat(),
            "unlabelled_dropped": dg.MetadataValue.int(int(dropped.sum())),
            "fraud_rate": dg.MetadataValue.float(float(table["is_fraud"].mean())),
            "feature_means": dg.MetadataValue.md(table.groupby("is_fraud")[FEATURES].mean().T.round(3).to_markdown()),
        })
        yield gate.check_result(check_name=FEATURES_CHECK, asset_key="fraud_features")

    @dg.asset(group_name="fraud", deps=[fraud_features], kinds={"sklearn", "mlflow"})
    def fraud_model(context: dg.AssetExecutionContext, config: FraudModelConfig, storage: ArtifactStorage,
                    mlflow_tracking: MlflowTracking) -> dg.MaterializeResult:
        """The fraud classifier, registered in MLflow as `fraud-detector`. It becomes the `champion`
        (which the live service serves) only if at least as good as the current one on the most
        recent labelled days; otherwise it stays a registered challenger and the reason is recorded."""
        import pandas as pd

        from ecosystem_assets.fraud.training import train_and_promote

        table = pd.read_parquet(io.BytesIO(storage.store.read_bytes(FEATURES_KEY)))
        with mlflow_tracking.run(context, EXPERIMENT) as mlf:
            outcome, reference = train_and_promote(
                table, mlf, mlflow_tracking.client(), calibration_days=config.calibration_days, holdout_days=config.holdout_days,
                target_precision=config.target_precision, seed=config.seed,
                params={"max_iter": config.max_iter, "learning_rate": config.learning_rate},
                extra_params={"features_first_day": str(table["timestamp"].min().date()),
                              "features_last_day": str(table["timestamp"].max().date()), "dagster_run_id": context.run_id},
            )
        storage.store.write_bytes(reference_key(outcome.version), _parquet(reference))
        meta = {
            "model_version": outcome.version, "promoted": outcome.promoted, "reason": outcome.reason,
            "champion_before": outcome.champion_before or "none",
            "champion_after": outcome.version if outcome.promoted else (outcome.champion_before or "none"),
            "precision": dg.MetadataValue.float(outcome.new.precision), "recall": dg.MetadataValue.float(outcome.new.recall),
            "threshold": dg.MetadataValue.float(outcome.new.threshold),
            "holdout": f"{outcome.holdout_start}..{outcome.holdout_end}", "mlflow_run_id": outcome.run_id,
            "model_uri": outcome.model_uri,
        }
        if outcome.champion_score is not None:
            meta["champion_precision"] = dg.MetadataValue.float(outcome.champion_score.precision)
            meta["champion_recall"] = dg.MetadataValue.float(outcome.champion_score.recall)
        url = mlflow_tracking.run_url(outcome.run_id)
        if url:
            meta["mlflow_run"] = dg.MetadataValue.url(url)
        return dg.MaterializeResult(metadata=meta)

    @dg.asset(group_name="fraud", deps=[fraud_model], kinds={"evidently", "fastapi"},
              check_specs=[
                  dg.AssetCheckSpec(PRECISION_CHECK, asset="fraud_monitoring_metrics",
                                    description=f"Live precision of the serving model ≥ FRAUD_PRECISION_THRESHOLD ({precision_threshold})."),
                  dg.AssetCheckSpec(DRIFT_CHECK, asset="fraud_monitoring_metrics",
                                    description="No dataset drift of live features against the serving model's training reference."),
              ])
    def fraud_monitoring_metrics(context: dg.AssetExecutionContext, config: MonitoringConfig, storage: ArtifactStorage,
                                 fraud_service: FraudServiceResource):
        """How the live fraud model did over the window before the evaluation time (the schedule's
        tick, `end` in the config, or now; never the newest stored row): precision and recall on
        labelled predictions, and drift of live features against its training data (an Evidently
        report in storage). A check with too little to judge is a warning saying "not judged"; a
        failing check makes `fraud_retrain_sensor` retrain the model."""
        import pandas as pd

        from ecosystem_assets.fraud.drift import detect_drift, evidently_report_html
        from ecosystem_assets.fraud.features import FEATURES

        end, end_from = _evaluation_time(context, config)
        end_s = end.timestamp()
        summary = fraud_service.monitoring(config.window_hours, end_s)
        version = summary["model_version"]
        window = {WINDOW_END: end.isoformat(), "window_end_from": end_from,
                  "window_start": (end - timedelta(hours=config.window_hours)).isoformat()}
        meta = {
            "model_version": version or "none", "precision": summary["precision"], "recall": summary["recall"],
            "labelled": dg.MetadataValue.int(summary["labelled"]), "predictions": dg.MetadataValue.int(summary["predictions"]),
            "window_hours": config.window_hours, **window,
        }
        precision = precision_verdict(summary, precision_threshold, config.min_labelled)
        precision_meta = {"precision": summary["precision"], "labelled": summary["labelled"], "threshold": precision_threshold,
                          "model_version": version or "none", **window}

        live = fraud_service.store().live_features(config.window_hours, end_s)
        live = live[live["model_version"] == version]
        drift_meta = {"live_rows": len(live), "min_drift_rows": config.min_drift_rows, "model_version": version or "none", **window}
        if version is None:
            drifted = Verdict.not_judged("no serving model")
        elif len(live) < config.min_drift_rows:
            drifted = Verdict.not_judged(f"only {len(live)} live rows of v{version} in the window (< {config.min_drift_rows})")
        elif not storage.store.exists(reference_key(version)):
            drifted = Verdict.not_judged(f"no training reference for v{version} yet ({reference_key(version)})")
        else:
            reference = pd.read_parquet(io.BytesIO(storage.store.read_bytes(reference_key(version))))
            drift = detect_drift(reference, live, FEATURES)
            html, _ = evidently_report_html(reference, live, FEATURES)
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            report_uri = storage.store.write_bytes(f"fraud/monitoring/drift-v{version}-{stamp}.html", html.encode())
            drifted = Verdict(True, not drift.dataset_drift, f"{sum(c.drifted for c in drift.columns)} of {len(drift.columns)} "
                                                             f"features of v{version} drifted (share {drift.share:.2f}, {len(live)} rows)")
            drift_meta.update({"drift_share": dg.MetadataValue.float(drift.share), "features": dg.MetadataValue.md(drift.table_markdown()),
                               "evidently_report": dg.MetadataValue.path(report_uri)})
            meta.update({"drift_share": dg.MetadataValue.float(drift.share), "evidently_report": dg.MetadataValue.path(report_uri)})
        yield dg.MaterializeResult(metadata={k: v for k, v in meta.items() if v is not None})
        yield _check_result(PRECISION_CHECK, precision, dg.AssetCheckSeverity.ERROR, precision_meta)
        yield _check_result(DRIFT_CHECK, drifted, dg.AssetCheckSeverity.WARN, drift_meta)

    return [fraud_transactions, fraud_features, fraud_model, fraud_monitoring_metrics]


# The scheduler tags each run with its tick; 1.13 writes the hidden tag, older releases the plain one.
SCHEDULED_TIME_TAGS = (".dagster/scheduled_execution_time", "dagster/scheduled_execution_time")


def _evaluation_time(context: dg.AssetExecutionContext, config: MonitoringConfig) -> tuple[datetime, str]:
    """When the monitoring looks from, and where that came from: config `end`, the schedule's tick, or now."""
    from ecosystem_assets.serving.monitoring import parse_end

    tags = context.run.tags
    tick = next((tags[t] for t in SCHEDULED_TIME_TAGS if tags.get(t)), None)
    text, source = (config.end, "config") if config.end else (tick, "schedule tick") if tick else (None, "now")
    if text is None:
        return datetime.now(timezone.utc), source
    try:
        return datetime.fromtimestamp(parse_end(text), timezone.utc), source
    except ValueError as exc:
        raise dg.Failure(description=f"monitoring window end ({source}): {exc}") from None


def _check_result(name: str, verdict: Verdict, failure_severity: dg.AssetCheckSeverity, metadata: dict) -> dg.AssetCheckResult:
    """Not judged → a warning (passed=False, WARN, `judged: false`), never a pass: nothing was checked."""
    return dg.AssetCheckResult(
        check_name=name, asset_key="fraud_monitoring_metrics", passed=verdict.passed, description=verdict.reason,
        severity=failure_severity if verdict.judged else dg.AssetCheckSeverity.WARN,
        metadata={JUDGED: verdict.judged, **{k: v for k, v in metadata.items() if v is not None}},
    )


def _newest_day(storage: ArtifactStorage) -> date:
    days = [k.rsplit("/", 1)[-1].removesuffix(".parquet") for k in storage.store.list_keys("fraud/transactions")]
    if not days:
        raise dg.Failure(description="no fraud_transactions in storage yet; materialize (backfill) fraud_transactions first")
    return date.fromisoformat(max(days))

