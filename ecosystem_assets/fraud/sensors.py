"""Closed loop: `fraud_retrain_sensor` retrains the model when a monitoring check fails.

It reads the latest evaluation of each monitoring check (a failed non-blocking check leaves its
run green, so run-status sensors would never see it). An evaluation that judged nothing (a warning
with `judged: false`: too few labels or rows, no reference) never triggers a retrain. The retrain
trains up to the last complete day before the failed evaluation's window end whose transactions
are materialized, and is requested only when every day `fraud_features` needs is materialized.
One run per failed evaluation (run key); none while a retrain is queued or running, none within
the cooldown after the last one, none again up to a day a retrain already ran on (the same days
train the same model; a failed one would fail again) until a newer day lands. Every skip says why.
"""

import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg

from ecosystem_assets.fraud.assets import FeaturesConfig
from ecosystem_assets.fraud.checks import DRIFT_CHECK, JUDGED, PRECISION_CHECK, WINDOW_END, day_ranges
from ecosystem_assets.fraud.features import HISTORY_DAYS

MONITORED = dg.AssetKey("fraud_monitoring_metrics")
TRANSACTIONS = dg.AssetKey("fraud_transactions")
ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
FAILED_RUN = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}

SENSOR = "fraud_retrain_sensor"
TRIGGER_TAG = "fraud/retrain_trigger"
END_DATE_TAG = "fraud/end_date"


def _meta(record: Any, key: str) -> Any:
    value = record.evaluation.metadata.get(key) if record.evaluation else None
    return getattr(value, "value", value)


def _failed(record: Any) -> bool:
    return record is not None and record.status.value == "FAILED"


def _judged(record: Any) -> bool:
    return _meta(record, JUDGED) is not False  # evaluations from before `judged` existed were all verdicts


def _seen(name: str, record: Any) -> str:
    if record is None:
        return f"{name}: never evaluated"
    if _failed(record) and not _judged(record):
        return f"{name}: {record.evaluation.description}"
    return f"{name}: {record.status.value.lower()}"


def training_end(instance: dg.DagsterInstance, window_end: str | None, training_days: int) -> tuple[date | None, str]:
    """The day a retrain after an evaluation ending at ``window_end`` trains up to: the newest
    materialized fraud_transactions day that is complete by then. (None, why) when there is none,
    or when days fraud_features needs (training days and their history) are not materialized."""
    if not window_end:
        return None, "the failed evaluation records no window end"
    last_complete = datetime.fromisoformat(window_end).astimezone(UTC).date() - timedelta(days=1)
    materialized = {date.fromisoformat(key) for key in instance.get_materialized_partitions(TRANSACTIONS)}
    complete = [day for day in materialized if day <= last_complete]
    if not complete:
        return None, f"no fraud_transactions day up to {last_complete} (the last complete day of the window) is materialized"
    end = max(complete)
    needed = training_days + HISTORY_DAYS
    missing = [d for d in (end - timedelta(days=needed - 1 - i) for i in range(needed)) if d not in materialized]
    if missing:
        return None, (
            f"fraud_transactions is missing {len(missing)} days needed to train up to {end} "
            f"({training_days} days with {HISTORY_DAYS} days of history): {day_ranges(missing)}; backfill them first"
        )
    return end, ""


def _duration(hours: float) -> str:
    """``6`` → "6 h", ``0.02`` → "1.2 min": a short cooldown (make dev) reads in minutes."""
    return f"{hours:g} h" if hours >= 1 else f"{hours * 60:.3g} min"


def build_retrain_sensor(job: Any, cooldown_hours: float, interval_s: int = 30) -> dg.SensorDefinition:
    training_days = FeaturesConfig().training_days

    @dg.sensor(
        name=SENSOR,
        job=job,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Retrains fraud_features → fraud_model when {PRECISION_CHECK} or {DRIFT_CHECK} fails "
        f"(not when it judged nothing; cooldown {_duration(cooldown_hours)}).",
    )
    def fraud_retrain_sensor(context: dg.SensorEvaluationContext) -> Any:
        instance = context.instance
        records = {
            name: instance.get_latest_asset_check_evaluation_record(dg.AssetCheckKey(MONITORED, name))
            for name in (PRECISION_CHECK, DRIFT_CHECK)
        }
        failed: dict[str, Any] = {name: r for name, r in records.items() if _failed(r) and _judged(r)}  # not None
        if not failed:
            seen = "; ".join(_seen(n, r) for n, r in records.items())
            return dg.SkipReason(f"no failing monitoring check ({seen}); an evaluation that judged nothing never retrains")
        newest = max(failed.values(), key=lambda r: r.id)
        if newest.id <= int(context.cursor or 0):
            return dg.SkipReason(f"the failed evaluation {newest.id} ({', '.join(failed)}) was already handled")
        active = instance.get_runs(filters=dg.RunsFilter(job_name=job.name, statuses=ACTIVE), limit=1)
        if active:
            return dg.SkipReason(f"a retrain is already in progress (run {active[0].run_id})")
        # The cooldown counts this sensor's retrains only: a hand-started training must not delay a fix.
        last = instance.get_run_records(filters=dg.RunsFilter(job_name=job.name, tags={TRIGGER_TAG: SENSOR}), limit=1)
        if last:
            age_h = (time.time() - last[0].create_timestamp.timestamp()) / 3600
            if age_h < cooldown_hours:
                return dg.SkipReason(
                    f"{', '.join(failed)} failed, but the last retrain (run {last[0].dagster_run.run_id}) started "
                    f"{age_h * 60:.0f} min ago; cooldown is {_duration(cooldown_hours)}"
                )
        end_day, why = training_end(instance, _meta(newest, WINDOW_END), training_days)
        if end_day is None:
            return dg.SkipReason(f"{', '.join(failed)} failed (evaluation {newest.id}), but no retrain can succeed: {why}")
        before = instance.get_run_records(
            filters=dg.RunsFilter(job_name=job.name, tags={TRIGGER_TAG: SENSOR, END_DATE_TAG: str(end_day)}), limit=1
        )
        if before:
            run = before[0].dagster_run
            if run.status in FAILED_RUN:
                return dg.SkipReason(
                    f"{', '.join(failed)} failed, but the retrain up to {end_day} (run {run.run_id}) ended "
                    f"{run.status.value}; not relaunched until a newer transaction day lands"
                )
            return dg.SkipReason(
                f"{', '.join(failed)} failed, but a retrain up to {end_day} already ran (run {run.run_id}, "
                f"{run.status.value}); the same days train the same model, so it waits for a newer day"
            )
        context.update_cursor(str(newest.id))
        return dg.RunRequest(
            run_key=f"fraud-retrain-after-evaluation-{newest.id}",
            run_config={"ops": {"fraud_features": {"config": {"end_date": str(end_day)}}}},
            tags={
                TRIGGER_TAG: SENSOR,
                END_DATE_TAG: str(end_day),
                "fraud/failed_checks": ",".join(sorted(failed)),
                "fraud/evaluation_run": newest.run_id,
            },
        )

    return fraud_retrain_sensor
