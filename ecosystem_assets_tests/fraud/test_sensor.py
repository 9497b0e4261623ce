"""fraud_retrain_sensor on a real Dagster instance: when it requests a retrain, up to which day, and
why it skips. Landed days and failed evaluations are recorded in the instance as Dagster records
them (a partition's materialization, a check evaluation with the monitoring asset's metadata keys);
the monitoring asset writing those evaluations is tested in test_monitoring.py."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest

from ecosystem_assets.fraud.checks import DRIFT_CHECK, JUDGED, PRECISION_CHECK, WINDOW_END
from ecosystem_assets.fraud.definitions import MONITORING_JOB, RETRAIN_JOB
from ecosystem_assets.fraud.features import HISTORY_DAYS
from ecosystem_assets.fraud.sensors import MONITORED
from ecosystem_assets.project import build_definitions
from ecosystem_assets.settings import Settings

DAY = date(2026, 9, 20)  # the newest landed day in these tests
NEEDED = 14 + HISTORY_DAYS  # training days and their feature history


@pytest.fixture
def defs(ecosystem_env, monkeypatch) -> dg.Definitions:
    monkeypatch.setenv("FRAUD_RETRAIN_COOLDOWN_HOURS", "0")  # these tests are about what comes after a cooldown
    return build_definitions(Settings.from_env())


def land(instance, first: date, last: date, *, skip: tuple[date, ...] = ()) -> None:
    for i in range((last - first).days + 1):
        day = first + timedelta(days=i)
        if day not in skip:
            instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="fraud_transactions", partition=str(day)))


def evaluate(instance, end: datetime, *, check: str = PRECISION_CHECK, passed: bool = False, judged: bool = True) -> None:
    severity = dg.AssetCheckSeverity.WARN if not judged or check == DRIFT_CHECK else dg.AssetCheckSeverity.ERROR
    reason = "live precision 0.410 of v1 is below 0.80 (900 labelled)" if judged else "not judged: only 3 labelled predictions"
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=MONITORED,
            check_name=check,
            passed=passed,
            severity=severity,
            description=reason,
            metadata={JUDGED: judged, WINDOW_END: end.isoformat()},
        )
    )


def at(day: date, hour: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def tick(defs, instance, cursor=None):
    sensor = defs.resolve_sensor_def("fraud_retrain_sensor")
    return sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor))


def test_a_check_that_judged_nothing_requests_no_retrain(defs, dagster_instance):
    # A real monitoring run with no serving model and no traffic: both checks are warnings, not passes.
    run = defs.resolve_job_def(MONITORING_JOB).execute_in_process(instance=dagster_instance)
    evaluations = {e.check_name: e for e in run.get_asset_check_evaluations()}
    assert evaluations.pop("freshness_check").passed  # the job's freshness check: monitoring just ran
    for evaluation in evaluations.values():
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
        assert evaluation.metadata[JUDGED].value is False and evaluation.description.startswith("not judged: ")
    assert "no serving model" in evaluations[PRECISION_CHECK].description
    assert evaluations[PRECISION_CHECK].metadata["window_end_from"].value == "now"

    skipped = tick(defs, dagster_instance)
    assert not skipped.run_requests
    assert "no failing monitoring check" in skipped.skip_message
    assert f"{PRECISION_CHECK}: not judged: no serving model" in skipped.skip_message
    assert "judged nothing never retrains" in skipped.skip_message


def test_a_real_failure_retrains_up_to_the_last_complete_materialized_day(defs, dagster_instance):
    land(dagster_instance, DAY - timedelta(days=70), DAY)
    # Judged at 10:00 two days after DAY: the day before is complete but not landed yet.
    evaluate(dagster_instance, at(DAY + timedelta(days=2), 10))
    evaluate(dagster_instance, at(DAY + timedelta(days=2), 10), check=DRIFT_CHECK, judged=False)  # the other check's warning
    first = tick(defs, dagster_instance)
    [request] = first.run_requests
    assert request.run_config == {"ops": {"fraud_features": {"config": {"end_date": str(DAY)}}}}
    assert request.tags["fraud/end_date"] == str(DAY) and request.tags["fraud/failed_checks"] == PRECISION_CHECK
    again = tick(defs, dagster_instance, cursor=first.cursor)
    assert not again.run_requests and "already handled" in again.skip_message

    # A newer evaluation that judged nothing hides the failure: it is the check's latest word.
    evaluate(dagster_instance, at(DAY + timedelta(days=2), 11), judged=False)
    quiet = tick(defs, dagster_instance, cursor=first.cursor)
    assert not quiet.run_requests and f"{PRECISION_CHECK}: not judged" in quiet.skip_message


def test_missing_transaction_days_skip_naming_them(defs, dagster_instance):
    gaps = (DAY - timedelta(days=30), DAY - timedelta(days=5), DAY - timedelta(days=4))
    land(dagster_instance, DAY - timedelta(days=70), DAY, skip=gaps)
    evaluate(dagster_instance, at(DAY + timedelta(days=1)))
    skipped = tick(defs, dagster_instance)
    assert not skipped.run_requests
    assert f"fraud_transactions is missing 3 days needed to train up to {DAY}" in skipped.skip_message
    assert skipped.skip_message.endswith(f": {gaps[0]}, {gaps[1]}..{gaps[2]}; backfill them first")
    # Nothing at all before the window's end: it says that instead.
    evaluate(dagster_instance, at(DAY - timedelta(days=70)))
    nothing = tick(defs, dagster_instance)
    assert not nothing.run_requests and f"no fraud_transactions day up to {DAY - timedelta(days=71)}" in nothing.skip_message

    land(dagster_instance, gaps[0], gaps[0])
    land(dagster_instance, gaps[1], gaps[2])
    evaluate(dagster_instance, at(DAY + timedelta(days=1)))
    [request] = tick(defs, dagster_instance).run_requests
    assert request.run_config["ops"]["fraud_features"]["config"]["end_date"] == str(DAY)


def test_a_failed_retrain_is_not_relaunched_until_a_new_day_lands(defs, dagster_instance):
    land(dagster_instance, DAY - timedelta(days=NEEDED + 5), DAY)
    evaluate(dagster_instance, at(DAY + timedelta(days=1), 1))
    first = tick(defs, dagster_instance)
    [request] = first.run_requests
    # The instance says the days landed, but their files are gone from storage: the retrain fails,
    # and fraud_features says which days it lacks.
    retrain = defs.resolve_job_def(RETRAIN_JOB).execute_in_process(
        instance=dagster_instance, run_config=request.run_config, tags=request.tags, raise_on_error=False
    )
    assert not retrain.success
    [failure] = retrain.get_step_failure_events()
    assert f"{DAY - timedelta(days=NEEDED - 1)}..{DAY}; backfill them first" in failure.step_failure_data.error.message

    # The same evaluation: already handled. A newer one for the same end day: not relaunched.
    assert "already handled" in tick(defs, dagster_instance, cursor=first.cursor).skip_message
    evaluate(dagster_instance, at(DAY + timedelta(days=1), 2))
    held = tick(defs, dagster_instance, cursor=first.cursor)
    assert not held.run_requests
    assert f"the retrain up to {DAY} (run {retrain.run_id}) ended FAILURE; not relaunched" in held.skip_message

    # A new day lands and is judged: a retrain up to it.
    land(dagster_instance, DAY + timedelta(days=1), DAY + timedelta(days=1))
    evaluate(dagster_instance, at(DAY + timedelta(days=2), 1))
    [retry] = tick(defs, dagster_instance, cursor=held.cursor or first.cursor).run_requests
    assert retry.run_config["ops"]["fraud_features"]["config"]["end_date"] == str(DAY + timedelta(days=1))


@pytest.mark.parametrize(("hours", "shown"), [(6, "cooldown 6 h"), (0.02, "cooldown 1.2 min"), (0.5, "cooldown 30 min")])
def test_the_sensor_states_its_cooldown_in_readable_units(ecosystem_env, monkeypatch, hours, shown):
    monkeypatch.setenv("FRAUD_RETRAIN_COOLDOWN_HOURS", str(hours))
    sensor = build_definitions(Settings.from_env()).resolve_sensor_def("fraud_retrain_sensor")
    assert shown in (sensor.description or "")
