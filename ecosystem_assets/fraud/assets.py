"""Fraud assets: transactions → features → model (MLflow, champion gate) → live monitoring, and
the service's prediction log (observed, not materialized) upstream of the monitoring.

Thin Dagster wiring over fraud/*.py and serving/*.py; heavy libraries load inside the assets.
Every file an asset writes lives under a key holding its run id (`lineage.run_key`), recorded in
the materialization's metadata; readers take the upstream materialization lineage.upstream points
to (this run's, else the latest that passed its blocking checks), so two runs at once each read their own data.
"""

import dataclasses
import warnings
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
from pydantic import Field

from ecosystem_assets.asset_metadata import ROW_COUNT, metric, rounded, table_metadata, table_preview
from ecosystem_assets.fraud.checks import (
    DRIFT_CHECK,
    FEATURES_CHECK,
    JUDGED,
    PRECISION_CHECK,
    PROMOTION_CHECK,
    WINDOW_END,
    Verdict,
    day_ranges,
    precision_verdict,
)
from ecosystem_assets.fraud.features import HISTORY_DAYS
from ecosystem_assets.lineage import STORAGE_KEY, MissingUpstream, Upstream, lineage_metadata, run_key, upstream, upstream_partitions
from ecosystem_assets.resources.fraud import FraudServiceResource, TransactionSource
from ecosystem_assets.resources.mlflow import MlflowTracking
from ecosystem_assets.resources.storage import ArtifactStorage

REPORTS = "fraud/monitoring"  # the Evidently drift reports, one per monitoring run (retention.prune)

EXPERIMENT = "fraud-detector"
OWNERS = ["team:fraud"]
# Code versions: bump an asset's when its logic changes, so Dagster marks what it made as stale.
TRANSACTIONS_CODE_VERSION = "1"
FEATURES_CODE_VERSION = "1"
MODEL_CODE_VERSION = "1"
MONITORING_CODE_VERSION = "1"
TRANSACTIONS = dg.AssetKey("fraud_transactions")
TRANSACTIONS_PREFIX = "fraud/transactions"
FEATURES_PREFIX = "fraud/features"
# fraud_transactions' metadata: one materialization covers a run's days, each day's file lies at
# run_key(<storage_prefix>, <the materialization's run id>, "<day>.parquet").
STORAGE_PREFIX = "storage_prefix"


def transactions_key(run_id: str, day: date | str) -> str:
    """Where the run ``run_id`` stored the transactions of ``day``."""
    return run_key(TRANSACTIONS_PREFIX, run_id, f"{day}.parquet")


def reference_key(version: str) -> str:
    """The training reference of model version ``version`` (drift is judged against it)."""
    return f"fraud/reference/v{version}.parquet"


def drift_report_key(version: str, run_id: str, now: datetime | None = None) -> str:
    """Where a monitoring run stores its Evidently report: the run id keeps two runs of the same second
    apart (each keeps its own report); the UTC stamp stays last, where `retention` reads the age."""
    from ecosystem_assets import retention

    return f"{REPORTS}/drift-v{version}-{run_id}-{retention.stamp(now)}.html"


class FeaturesConfig(dg.Config):
    training_days: int = Field(default=14, description="Days of labelled transactions to train, calibrate and hold out on.")
    end_date: str | None = Field(
        default=None, description="Last day (YYYY-MM-DD); default: the newest materialized fraud_transactions day."
    )


class FraudModelConfig(dg.Config):
    calibration_days: int = Field(default=2, description="Days before the holdout used to choose the threshold.")
    holdout_days: int = Field(default=2, description="Most recent days: the champion comparison and reported metrics.")
    target_precision: float = Field(default=0.9, description="The threshold is the lowest reaching this precision.")
    seed: int = 0
    max_iter: int = 200
    learning_rate: float = 0.1


class MonitoringConfig(dg.Config):
    window_hours: float = Field(default=24, description="Hours of traffic before the window's end to judge.")
    end: str | None = Field(
        default=None,
        description="End of the window, ISO-8601 with offset (e.g. 2026-09-18T00:00:00+00:00); "
        "default: the schedule's tick, else now. Later rows are outside.",
    )
    min_labelled: int = Field(default=200, description="Fewer labelled predictions than this are not judged.")
    # Undrifted traffic sampled against a 14-day reference (the simulator's 1,000 customers,
    # about 2,000 rows a day) showed dataset drift in 40 of 40 draws of 50 rows, 7 of 200, 1 of
    # 300 and none of 500: below that the tests measure sampling noise, not the world.
    min_drift_rows: int = Field(default=500, description="Fewer live rows of the serving model than this: drift is not judged.")


def materialize_transactions(
    context: dg.AssetExecutionContext, transactions: TransactionSource, storage: ArtifactStorage
) -> dg.MaterializeResult:
    """Labelled card transactions of each day (the seeded simulator by default, or the Parquet days
    at FRAUD_TRANSACTIONS_URL): the training data and the ground truth that the live service's
    feedback reflects. A range of days runs as one run, which stores each day under its own run id;
    re-materializing a day picks up labels that arrived since (rows still unlabelled are stored with
    a null `is_fraud`), and readers then take the newest materialization of that day."""
    from ecosystem_assets.fraud.transaction_files import TransactionFileError
    from ecosystem_assets.storage import StorageError, write_parquet

    window = context.partition_time_window
    first, last = window.start.date(), (window.end - timedelta(days=1)).date()
    try:
        frames = transactions.days(first, last)
        uris = {day: write_parquet(storage.store, transactions_key(context.run.run_id, day), frame) for day, frame in frames.items()}
    except (TransactionFileError, StorageError) as exc:
        raise dg.Failure(description=str(exc)) from None
    total = sum(len(f) for f in frames.values())
    labelled = sum(int(f["is_fraud"].notna().sum()) for f in frames.values())
    frauds = sum(int(f["is_fraud"].sum()) for f in frames.values())
    # One materialization covers the run's days (each partition records the same metadata): the row
    # count is the run's (one day's when a single day runs); the schema and the preview are the last day's.
    standard = {**table_metadata(frames[last], preview_rows=10), ROW_COUNT: dg.MetadataValue.int(total)}
    return dg.MaterializeResult(
        metadata={
            "days": dg.MetadataValue.int(len(frames)),
            "transactions": dg.MetadataValue.int(total),
            "unlabelled": dg.MetadataValue.int(total - labelled),
            "fraud_rate": dg.MetadataValue.float(frauds / labelled if labelled else 0.0),
            "source": transactions.source_label,
            "drift_from": transactions.drift_from or "none",
            STORAGE_PREFIX: TRANSACTIONS_PREFIX,
            "path": dg.MetadataValue.path(uris[last]),
            **standard,
        }
    )


def fraud_transactions_asset(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """`fraud_transactions` over ``partitions``: the one fraud asset whose definition depends on a
    setting (the daily partitions start at FRAUD_START_DATE)."""
    with warnings.catch_warnings():  # backfill_policy is "beta"; a single-run backfill is what we want
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.asset(
            name="fraud_transactions",
            group_name="fraud",
            partitions_def=partitions,
            kinds={"python", "parquet"},
            owners=OWNERS,
            code_version=TRANSACTIONS_CODE_VERSION,
            backfill_policy=dg.BackfillPolicy.single_run(),
        )(materialize_transactions)


def newest_transaction_day(instance: dg.DagsterInstance) -> date:
    """The newest fraud_transactions day Dagster has a materialization of."""
    days = instance.get_materialized_partitions(TRANSACTIONS)
    if not days:
        raise MissingUpstream(description="fraud_transactions has no materialized day yet; materialize (backfill) fraud_transactions first")
    return date.fromisoformat(max(days))


def read_transaction_days(
    context: dg.AssetExecutionContext, storage: ArtifactStorage, days: list[date], needed_for: str
) -> tuple[list[Any], list[Upstream]]:
    """The stored transactions of ``days`` (this run's materialization of a day, else the latest that passed its blocking checks)
    and the materializations read; `MissingUpstream` naming the days that are not there."""
    from ecosystem_assets.storage import StorageError, read_parquet

    try:
        sources = upstream_partitions(context, TRANSACTIONS, [d.isoformat() for d in days])
    except MissingUpstream as exc:  # named as day ranges, with what they are needed for
        missing = [date.fromisoformat(p) for p in exc.missing]
        raise MissingUpstream(
            f"fraud_transactions is missing {len(missing)} days needed for {needed_for}: {day_ranges(missing)}; backfill them first.",
            exc.missing,
        ) from None
    frames, read, unreadable = [], [], []
    for day in days:
        source = sources[day.isoformat()]
        prefix = source.metadata.get(STORAGE_PREFIX)
        try:
            if not isinstance(prefix, str):  # reported from outside a run, with no file of ours
                raise StorageError(f"no {STORAGE_PREFIX!r} recorded")
            key = run_key(prefix, source.run_id, f"{day}.parquet")
            frames.append(read_parquet(storage.store, key))
        except StorageError:
            unreadable.append(day)
            continue
        # The file this day was read from, for the reader's `input/fraud_transactions` metadata.
        read.append(dataclasses.replace(source, metadata={**source.metadata, STORAGE_KEY: key}))
    if unreadable:
        raise MissingUpstream(
            description=f"fraud_transactions has no stored file for {len(unreadable)} days needed for "
            f"{needed_for} (recorded without one, or the file is gone): "
            f"{day_ranges(unreadable)}; backfill them first."
        )
    return frames, read


@dg.asset(
    group_name="fraud",
    deps=[TRANSACTIONS],
    kinds={"python", "parquet"},
    owners=OWNERS,
    code_version=FEATURES_CODE_VERSION,
    check_specs=[
        dg.AssetCheckSpec(
            FEATURES_CHECK,
            asset="fraud_features",
            blocking=True,
            description="Schema, no nulls, amount ≥ 0, label in {0,1}, plausible fraud rate.",
        )
    ],
)
def fraud_features(
    context: dg.AssetExecutionContext, config: FeaturesConfig, storage: ArtifactStorage
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """The training table: the last N days of transactions with their features, computed by the
    same function the live service uses, on 37 days of history before them. Each day is read from
    the fraud_transactions materialization this run made, else the latest one that passed its blocking checks (listed in
    `input/fraud_transactions`); the table is written under this run's id (`storage_key`), and its
    blocking quality check judges that table."""
    import pandas as pd

    from ecosystem_assets.fraud.checks import feature_expectations
    from ecosystem_assets.fraud.features import FEATURES, feature_table
    from ecosystem_assets.fraud.transaction_files import training_labels
    from ecosystem_assets.quality import validate_frame
    from ecosystem_assets.storage import write_parquet

    end = date.fromisoformat(config.end_date) if config.end_date else newest_transaction_day(context.instance)
    first_train = end - timedelta(days=config.training_days - 1)
    first = first_train - timedelta(days=HISTORY_DAYS)
    days = [first + timedelta(days=i) for i in range(config.training_days + HISTORY_DAYS)]
    frames, sources = read_transaction_days(context, storage, days, f"{first_train}..{end} (with {HISTORY_DAYS} days of history)")
    raw = pd.concat(frames, ignore_index=True)
    # Late labels: unlabelled rows are history (genuine for the terminal risk), not training rows.
    raw, unlabelled = training_labels(raw)
    table = feature_table(raw)
    table = table[table["timestamp"] >= pd.Timestamp(first_train, tz="UTC")].reset_index(drop=True)
    dropped = table["transaction_id"].isin(unlabelled)
    table = table[~dropped].reset_index(drop=True)
    gate = validate_frame(table, "fraud_features", feature_expectations(FEATURES))
    key = run_key(FEATURES_PREFIX, context.run.run_id, "training.parquet")
    uri = write_parquet(storage.store, key, table)
    judged: dict[str, Any] = {"rows": len(table), "first_day": first_train.isoformat(), "last_day": end.isoformat(), STORAGE_KEY: key}
    yield dg.MaterializeResult(
        metadata={
            **judged,
            "rows": dg.MetadataValue.int(len(table)),
            "path": dg.MetadataValue.path(uri),
            "unlabelled_dropped": dg.MetadataValue.int(int(dropped.sum())),
            "fraud_rate": metric(float(table["is_fraud"].mean())),
            "feature_means": table_preview(_feature_means(table, FEATURES), rows=len(FEATURES)),
            **table_metadata(table, preview_rows=10),
            **lineage_metadata(*sources),
        }
    )
    # The check says which table it judged: this materialization's.
    yield dg.AssetCheckResult(
        check_name=FEATURES_CHECK,
        asset_key="fraud_features",
        passed=gate.success,
        severity=dg.AssetCheckSeverity.ERROR,
        description=gate.summary(),
        metadata={**gate.metadata(), **judged},
    )


def _feature_means(table: Any, features: list[str]) -> Any:
    """Each feature's mean over legitimate and fraudulent rows (one row per feature)."""
    means = table.groupby("is_fraud")[features].mean().T
    return means.rename(columns={0: "legit_mean", 1: "fraud_mean"}).rename_axis("feature").reset_index()


@dg.asset(
    group_name="fraud",
    deps=[fraud_features],
    kinds={"sklearn", "mlflow"},
    owners=OWNERS,
    code_version=MODEL_CODE_VERSION,
    check_specs=[
        dg.AssetCheckSpec(
            PROMOTION_CHECK,
            asset="fraud_model",
            description="The champion decision for the newly trained model: promoted when at least as good as the current "
            "champion on the same most recent labelled days (or when there is none), else kept as a registered challenger. "
            "Passes either way with the reason; the metadata compares the candidate's metrics with the champion's.",
        )
    ],
)
def fraud_model(
    context: dg.AssetExecutionContext, config: FraudModelConfig, storage: ArtifactStorage, mlflow_tracking: MlflowTracking
) -> dg.MaterializeResult:
    """The fraud classifier, registered in MLflow as `fraud-detector`, trained on the fraud_features
    table this run built, else the latest one that passed its blocking checks (recorded in `input/fraud_features`). It becomes the
    `champion` (which the live service serves) only if at least as good as the current one on the
    most recent labelled days; otherwise it stays a registered challenger and the reason is recorded."""
    from ecosystem_assets.fraud.training import MODEL_NAME, train_and_promote
    from ecosystem_assets.registry import RegistryUnavailable
    from ecosystem_assets.storage import StorageError, read_parquet, write_parquet

    features = upstream(context, "fraud_features")
    try:
        table = read_parquet(storage.store, features.storage_key)
    except StorageError as exc:
        raise dg.Failure(description=f"fraud_features of run {features.run_id}: {exc}; re-materialize fraud_features") from None

    def keep_reference(version: str, reference: Any) -> None:
        """The drift reference of ``version``, stored before it can become the champion (`train_and_promote`)."""
        key = reference_key(version)
        try:
            write_parquet(storage.store, key, reference)
        except (StorageError, OSError) as exc:
            raise dg.Failure(
                description=f"the drift reference of v{version} could not be stored at {key} ({exc}); v{version} stays a "
                "registered model and was not promoted (the champion is unchanged); fix the storage and re-materialize fraud_model"
            ) from None

    try:
        with mlflow_tracking.run(context, EXPERIMENT) as mlf:
            outcome, _ = train_and_promote(
                table,
                mlf,
                mlflow_tracking.client(),
                calibration_days=config.calibration_days,
                holdout_days=config.holdout_days,
                target_precision=config.target_precision,
                seed=config.seed,
                params={"max_iter": config.max_iter, "learning_rate": config.learning_rate},
                extra_params={
                    "features_first_day": str(table["timestamp"].min().date()),
                    "features_last_day": str(table["timestamp"].max().date()),
                    "dagster_run_id": context.run_id,
                    "features_storage_key": features.storage_key,
                    "features_run_id": features.run_id,
                },
                keep_reference=keep_reference,
            )
    except RegistryUnavailable as exc:  # an outage, not "no champion": nothing was promoted
        raise dg.Failure(description=f"the model registry is unavailable: {exc}") from None
    meta: dict[str, Any] = {
        "model_version": outcome.version,
        "promoted": outcome.promoted,
        "reason": outcome.reason,
        "champion_before": outcome.champion_before or "none",
        "champion_after": outcome.version if outcome.promoted else (outcome.champion_before or "none"),
        "precision": metric(outcome.new.precision),
        "recall": metric(outcome.new.recall),
        "threshold": metric(outcome.new.threshold),
        "holdout": f"{outcome.holdout_start}..{outcome.holdout_end}",
        "mlflow_run_id": outcome.run_id,
        "model_uri": outcome.model_uri,
        "training_rows": dg.MetadataValue.int(len(table)),
        **lineage_metadata(features),
    }
    if outcome.champion_score is not None:
        meta["champion_precision"] = metric(outcome.champion_score.precision)
        meta["champion_recall"] = metric(outcome.champion_score.recall)
    # fraud_model registers every model it trains (a challenger too), so there is always a version page.
    meta["mlflow_run"] = dg.MetadataValue.url(mlflow_tracking.run_url(outcome.run_id))
    meta["mlflow_model_version"] = dg.MetadataValue.url(mlflow_tracking.model_version_url(MODEL_NAME, outcome.version))
    return dg.MaterializeResult(metadata=meta, check_results=[_promotion_check(outcome)])


def _promotion_check(outcome: Any) -> dg.AssetCheckResult:
    """The promotion decision (`training.Promotion`, made in `train_and_promote`) as a visible check:
    passed either way (promoted, or kept as a challenger for the reason given), never blocking."""
    new, champion = outcome.new, outcome.champion_score
    decision = "promoted" if outcome.promoted else "kept as challenger"
    metadata: dict[str, Any] = {
        "decision": decision,
        "reason": outcome.reason,
        "candidate_version": outcome.version,
        "champion_before": outcome.champion_before or "none",
        "candidate_precision": metric(new.precision),
        "candidate_recall": metric(new.recall),
        "candidate_average_precision": metric(new.average_precision),
        "candidate_threshold": metric(new.threshold),
        "target_precision": metric(new.target_precision),
        "holdout": f"{outcome.holdout_start}..{outcome.holdout_end}",
    }
    if champion is not None:
        metadata.update(
            {
                "champion_precision": metric(champion.precision),
                "champion_recall": metric(champion.recall),
                "champion_average_precision": metric(champion.average_precision),
                "champion_threshold": metric(champion.threshold),
            }
        )
    return dg.AssetCheckResult(
        check_name=PROMOTION_CHECK,
        asset_key="fraud_model",
        passed=True,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"v{outcome.version} {decision}: {outcome.reason}",
        metadata=metadata,
    )


def _observe_prediction_log(fraud_service: FraudServiceResource) -> dg.ObserveResult:
    """The fraud service's log of predictions and the labels that came back for them (a SQL table
    the service writes, FRAUD_DB_URL; Dagster only observes it): where the live monitoring's
    precision, recall and drift come from. An observation records how many predictions and labels
    it holds and the newest prediction; its data version changes whenever either grows."""
    summary = fraud_service.prediction_log()

    def when(epoch: float | None) -> str:
        return datetime.fromtimestamp(epoch, UTC).isoformat() if epoch is not None else "none"

    version = f"{summary.predictions}-{summary.labelled}-{when(summary.newest_prediction_at)}-{when(summary.newest_label_at)}"
    return dg.ObserveResult(
        data_version=dg.DataVersion(version),
        metadata={
            "rows": dg.MetadataValue.int(summary.predictions),
            "labelled": dg.MetadataValue.int(summary.labelled),
            "newest_prediction_at": when(summary.newest_prediction_at),
            "newest_transaction_time": when(summary.newest_transaction_time),
            "newest_label_at": when(summary.newest_label_at),
        },
    )


with warnings.catch_warnings():  # observable source assets are "beta" in Dagster 1.13 (not deprecated)
    warnings.simplefilter("ignore", dg.BetaWarning)
    # The decorator does not take the function's docstring as the description: passed explicitly.
    fraud_prediction_log = dg.observable_source_asset(
        name="fraud_prediction_log", group_name="fraud", description=_observe_prediction_log.__doc__
    )(_observe_prediction_log)


@dg.asset(
    group_name="fraud",
    deps=[fraud_model, fraud_prediction_log],
    kinds={"evidently", "fastapi"},
    owners=OWNERS,
    code_version=MONITORING_CODE_VERSION,
    check_specs=[
        dg.AssetCheckSpec(
            PRECISION_CHECK,
            asset="fraud_monitoring_metrics",
            description="Live precision of the serving model ≥ FRAUD_PRECISION_THRESHOLD "
            "(the fraud_service resource's precision_threshold, in each evaluation's metadata).",
        ),
        dg.AssetCheckSpec(
            DRIFT_CHECK,
            asset="fraud_monitoring_metrics",
            description="No dataset drift of live features against the serving model's training reference.",
        ),
    ],
)
def fraud_monitoring_metrics(
    context: dg.AssetExecutionContext,
    config: MonitoringConfig,
    storage: ArtifactStorage,
    fraud_service: FraudServiceResource,
    mlflow_tracking: MlflowTracking,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """How the live fraud model did over the window before the evaluation time (the schedule's
    tick, `end` in the config, or now; never the newest stored row): precision and recall on
    labelled predictions in fraud_prediction_log, and drift of live features against its training
    data (an Evidently report in storage, also logged to an MLflow run of `fraud-monitoring` and
    linked from the metadata). A check with too little to judge is a warning saying "not judged";
    a failing check makes `fraud_retrain_sensor` retrain the model."""
    from ecosystem_assets import retention
    from ecosystem_assets.fraud.drift import detect_drift, evidently_report_html
    from ecosystem_assets.fraud.features import FEATURES
    from ecosystem_assets.registry import RegistryUnavailable
    from ecosystem_assets.storage import read_parquet

    end, end_from = _evaluation_time(context, config)
    end_s = end.timestamp()
    try:
        summary = fraud_service.monitoring(config.window_hours, end_s)
    except RegistryUnavailable as exc:  # which model serves is unknown: nothing can be judged, and that is an error
        raise dg.Failure(description=f"the model registry is unavailable, so the serving model is unknown: {exc}") from None
    version = summary["model_version"]
    threshold = fraud_service.precision_threshold
    window = {
        WINDOW_END: end.isoformat(),
        "window_end_from": end_from,
        "window_start": (end - timedelta(hours=config.window_hours)).isoformat(),
    }
    meta = {
        "model_version": version or "none",
        "precision": rounded(summary["precision"]),
        "recall": rounded(summary["recall"]),
        "labelled": dg.MetadataValue.int(summary["labelled"]),
        "predictions": dg.MetadataValue.int(summary["predictions"]),
        "window_hours": config.window_hours,
        **window,
    }
    precision = precision_verdict(summary, threshold, config.min_labelled)
    precision_meta = {
        "precision": rounded(summary["precision"]),
        "labelled": summary["labelled"],
        "threshold": threshold,
        "model_version": version or "none",
        **window,
    }

    # The summary counted the serving version's rows in the window: a million-row read only to judge.
    live_rows = summary["predictions"] if version else 0
    drift_meta = {"live_rows": live_rows, "min_drift_rows": config.min_drift_rows, "model_version": version or "none", **window}
    if version is None:
        drifted = Verdict.not_judged("no serving model")
    elif live_rows < config.min_drift_rows:
        drifted = Verdict.not_judged(f"only {live_rows} live rows of v{version} in the window (< {config.min_drift_rows})")
    elif not storage.store.exists(reference_key(version)):
        drifted = Verdict.not_judged(f"no training reference for v{version} yet ({reference_key(version)})")
    else:
        live = fraud_service.store().live_features(config.window_hours, end_s, model_version=version)
        drift_meta["live_rows"] = len(live)
        reference = read_parquet(storage.store, reference_key(version))
        drift = detect_drift(reference, live, FEATURES)
        html, _ = evidently_report_html(reference, live, FEATURES)
        report_key = drift_report_key(version, context.run_id)
        report_uri = storage.store.write_bytes(report_key, html.encode())
        # One report per run adds up (~4 MB each): older ones go, past ARTIFACT_RETENTION_RUNS/_DAYS.
        pruned = retention.prune(storage.store, REPORTS, storage.keep_runs, storage.keep_days)
        meta["reports_deleted"] = dg.MetadataValue.int(len(pruned))
        # The stored file is for programs (and retention); people open the report through MLflow.
        figures = {"precision": summary["precision"], "recall": summary["recall"], "drift_share": drift.share, "live_rows": len(live)}
        links = _log_report(
            context,
            mlflow_tracking,
            storage,
            html,
            report_key,
            params={"model_version": str(version), **{k: str(v) for k, v in window.items()}},
            metrics={k: v for k, v in figures.items() if v is not None},
        )
        meta.update(links)
        drifted = Verdict(
            True,
            not drift.dataset_drift,
            f"{sum(c.drifted for c in drift.columns)} of {len(drift.columns)} "
            f"features of v{version} drifted (share {drift.share:.2f}, {len(live)} rows)",
        )
        drift_meta.update(
            {
                "drift_share": metric(drift.share),
                "features": dg.MetadataValue.md(drift.table_markdown()),
                "evidently_report": dg.MetadataValue.path(report_uri),
                **{k: v for k, v in links.items() if k.startswith("evidently_report")},
            }
        )
        meta.update({"drift_share": metric(drift.share), "evidently_report": dg.MetadataValue.path(report_uri)})
    yield dg.MaterializeResult(metadata={k: v for k, v in meta.items() if v is not None})
    yield _check_result(PRECISION_CHECK, precision, dg.AssetCheckSeverity.ERROR, precision_meta)
    yield _check_result(DRIFT_CHECK, drifted, dg.AssetCheckSeverity.WARN, drift_meta)


def _log_report(
    context: dg.AssetExecutionContext,
    mlflow_tracking: MlflowTracking,
    storage: ArtifactStorage,
    html: str,
    report_key: str,
    params: dict[str, str],
    metrics: dict[str, float],
) -> dict[str, Any]:
    """The drift report into an MLflow run of this monitoring run (`fraud/monitoring_runs.py`, which
    also says what that costs), runs past the reports' retention deleted; links for the metadata.
    MLflow being unreachable costs the links, never the checks: a warning, and the report stays in storage."""
    from ecosystem_assets.fraud import monitoring_runs
    from ecosystem_assets.registry import without_credentials

    artifact = report_key.rsplit("/", 1)[-1]
    try:
        with mlflow_tracking.run(context, monitoring_runs.EXPERIMENT) as mlf:
            run = mlf.active_run().info
            monitoring_runs.log_report(mlflow_tracking.client(), run.run_id, html, artifact, report_key, params, metrics)
    except Exception as exc:  # noqa: BLE001 — tracking store, HTTP and artifact store errors alike
        context.log.warning(
            f"the Evidently report was not logged to MLflow ({without_credentials(f'{type(exc).__name__}: {exc}')[:500]}); "
            f"it is in storage at {report_key}"
        )
        return {}
    links: dict[str, Any] = {
        "mlflow_run": dg.MetadataValue.url(mlflow_tracking.run_url(run.run_id, run.experiment_id)),
        # The MLflow UI renders the HTML (sandboxed frame); the server's raw route downloads it.
        "evidently_report_url": dg.MetadataValue.url(mlflow_tracking.artifact_url(run.run_id, artifact, run.experiment_id)),
        "evidently_report_download": dg.MetadataValue.url(mlflow_tracking.raw_artifact_url(run.run_id, artifact)),
    }
    try:
        deleted = monitoring_runs.prune_runs(mlflow_tracking.client(), run.experiment_id, storage.keep_runs, storage.keep_days)
    except Exception as exc:  # noqa: BLE001 — retried by the next monitoring run
        context.log.warning(f"old {monitoring_runs.EXPERIMENT} runs were not pruned: {without_credentials(str(exc))[:500]}")
    else:
        links["mlflow_runs_deleted"] = dg.MetadataValue.int(len(deleted))
    return links


# The scheduler tags each run with its tick; 1.13 writes the hidden tag, older releases the plain one.
SCHEDULED_TIME_TAGS = (".dagster/scheduled_execution_time", "dagster/scheduled_execution_time")


def _evaluation_time(context: dg.AssetExecutionContext, config: MonitoringConfig) -> tuple[datetime, str]:
    """When the monitoring looks from, and where that came from: config `end`, the schedule's tick, or now."""
    from ecosystem_assets.serving.monitoring import parse_end

    tags = context.run.tags
    tick = next((tags[t] for t in SCHEDULED_TIME_TAGS if tags.get(t)), None)
    text, source = (config.end, "config") if config.end else (tick, "schedule tick") if tick else (None, "now")
    if text is None:
        return datetime.now(UTC), source
    try:
        return datetime.fromtimestamp(parse_end(text), UTC), source
    except ValueError as exc:
        raise dg.Failure(description=f"monitoring window end ({source}): {exc}") from None


def _check_result(name: str, verdict: Verdict, failure_severity: dg.AssetCheckSeverity, metadata: dict) -> dg.AssetCheckResult:
    """Not judged → a warning (passed=False, WARN, `judged: false`), never a pass: nothing was checked."""
    return dg.AssetCheckResult(
        check_name=name,
        asset_key="fraud_monitoring_metrics",
        passed=verdict.passed,
        description=verdict.reason,
        severity=failure_severity if verdict.judged else dg.AssetCheckSeverity.WARN,
        metadata={JUDGED: verdict.judged, **{k: v for k, v in metadata.items() if v is not None}},
    )
