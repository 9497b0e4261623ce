"""Closed loop: `fraud_retrain_sensor` retrains the model when a monitoring check fails.

It reads the latest evaluation of each monitoring check (a failed non-blocking check leaves its
run green, so run-status sensors would never see it). One run per failed evaluation (run key),
none while a retrain is queued or running, none within the cooldown after the last one; every
skip says why.
"""

import time

import dagster as dg

from ecosystem_assets.fraud.checks import DRIFT_CHECK, PRECISION_CHECK

MONITORED = dg.AssetKey("fraud_monitoring_metrics")
ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


TRIGGER_TAG = "fraud/retrain_trigger"


def _window_end_day(record) -> str | None:
    """The last day of traffic the failed evaluation judged: the retrain trains up to it."""
    value = record.evaluation.metadata.get("window_end_day") if record.evaluation else None
    text = getattr(value, "value", value)
    return text if text and text != "none" else None


def build_retrain_sensor(job, cooldown_hours: float, interval_s: int = 30) -> dg.SensorDefinition:
    @dg.sensor(name="fraud_retrain_sensor", job=job, minimum_interval_seconds=interval_s,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Retrains fraud_features → fraud_model when {PRECISION_CHECK} or {DRIFT_CHECK} fails "
                           f"(cooldown {cooldown_hours:g} h).")
    def fraud_retrain_sensor(context: dg.SensorEvaluationContext):
        instance = context.instance
        records = {name: instance.get_latest_asset_check_evaluation_record(dg.AssetCheckKey(MONITORED, name))
                   for name in (PRECISION_CHECK, DRIFT_CHECK)}
        failed = {name: r for name, r in records.items() if r is not None and r.status.value == "FAILED"}
        if not failed:
            seen = ", ".join(f"{n}: {r.status.value.lower()}" if r else f"{n}: never evaluated" for n, r in records.items())
            return dg.SkipReason(f"no failing monitoring check ({seen})")
        newest = max(failed.values(), key=lambda r: r.id)
        if newest.id <= int(context.cursor or 0):
            return dg.SkipReason(f"the failed evaluation {newest.id} ({', '.join(failed)}) was already handled")
        active = instance.get_runs(filters=dg.RunsFilter(job_name=job.name, statuses=ACTIVE), limit=1)
        if active:
            return dg.SkipReason(f"a retrain is already in progress (run {active[0].run_id})")
        # The cooldown counts this sensor's retrains only: a hand-started training must not delay a fix.
        last = instance.get_run_records(filters=dg.RunsFilter(job_name=job.name, tags={TRIGGER_TAG: "fraud_retrain_sensor"}), limit=1)
        if last:
            age_h = (time.time() - last[0].create_timestamp.timestamp()) / 3600
            if age_h < cooldown_hours:
                return dg.SkipReason(
                    f"{', '.join(failed)} failed, but the last retrain (run {last[0].dagster_run.run_id}) started "
                    f"{age_h * 60:.0f} min ago; cooldown is {cooldown_hours:g} h"
                )
        context.update_cursor(str(newest.id))
        end_day = _window_end_day(newest)
        run_config = {"ops": {"fraud_features": {"config": {"end_date": end_day}}}} if end_day else {}
        return dg.RunRequest(
            run_key=f"fraud-retrain-after-evaluation-{newest.id}",
            run_config=run_config,
            tags={TRIGGER_TAG: "fraud_retrain_sensor", "fraud/failed_checks": ",".join(sorted(failed)),
                  "fraud/evaluation_run": newest.run_id},
        )

    return fraud_retrain_sensor
