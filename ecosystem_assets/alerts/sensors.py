"""The alert sensors: Dagster's records → `alerts.messages` → the project's mailer (ALERT_RECIPIENTS).

- `alert_on_run_failure` (a run-failure sensor over every run of the deployment, this code location's
  jobs included: runs started by `dagster asset materialize` or `make demo` have no code-location
  origin, so "this location only" would miss them): one alert per failed run with the failing steps
  and errors. Not for a run stopped by a failing check that `alert_on_checks` reports (the check's
  alert names the partition and its data; a second alert would say the same), and not for a run that
  fails the same way as the job's previous finished run (one outage failing a 30-day backfill is one
  alert; the next success resets it).
- `alert_on_checks` (a sensor over the check evaluations in the instance): incidents per check and
  partition (`alerts.incidents`), kept in its cursor, so a restarted daemon neither repeats nor loses
  an alert.

Alerts leave from the sensors, never from the runs they report on: a mail server that is down cannot
fail a job. A failed delivery is logged on the sensor's tick (and said in its skip reason); the check
sensor keeps the alert and tries again at its next ticks for a day, the run-failure sensor does not
(Dagster's run-status cursor moves on).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import dagster as dg

from ecosystem_assets.alerts import incidents, messages
from ecosystem_assets.alerts.incidents import Action, Incident, SensorState, Watermark
from ecosystem_assets.resources.mail import MailerResource

RUN_FAILURE_SENSOR = "alert_on_run_failure"
CHECK_SENSOR = "alert_on_checks"
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
PARTITION_TAG = "dagster/partition"
PAGE = 50
MAX_PAGES = 40  # 2,000 rows of one check per tick at most; the rest waits for the next tick


def _secrets() -> list[str]:
    from ecosystem_assets.settings import secret

    return [value for name in messages.SECRET_VARIABLES if (value := secret(name))]


def deliver(mailer: MailerResource, alert: messages.Alert, log: Any) -> bool:
    """Send ``alert`` (secrets scrubbed); False, logged as an error, when it could not be delivered. Never raises."""
    secrets = _secrets()
    alert = alert.redacted(secrets)
    try:
        sent = mailer.send(alert.subject, alert.body, log=log, outbox_stem="alert")
    except Exception as exc:  # noqa: BLE001 — an alert that cannot go out must not stop the others
        log.error(f"alert not delivered: {alert.subject!r}: {messages.redact(f'{type(exc).__name__}: {exc}', secrets)}")
        return False
    log.info(f"alert sent: {alert.subject!r} via {sent.transport}")
    return True


# ---- run failures ----------------------------------------------------------------------------------


def _error_text(event: Any) -> str:
    error = getattr(event.event_specific_data, "error", None)
    if error is None:
        return event.message or ""
    text = error.message.strip()
    cause = error.cause
    while cause is not None:  # dg.Failure raised "from" something: the cause is often the useful part
        text += f"\ncaused by {cause.message.strip()}"
        cause = cause.cause
    return text


def _failed_run(run: dg.DagsterRun, failure: Any, steps: Sequence[Any], timestamp: float) -> messages.FailedRun:
    return messages.FailedRun(
        run_id=run.run_id,
        job=run.job_name,
        partition=run.tags.get(PARTITION_TAG),
        steps=tuple(messages.FailedStep(e.step_key or "?", _error_text(e)) for e in steps),
        run_error=_error_text(failure) if failure is not None else "",
        timestamp=timestamp,
    )


def _events(instance: dg.DagsterInstance, run_id: str, kind: dg.DagsterEventType) -> list[Any]:
    records = instance.get_records_for_run(run_id, of_type=kind).records
    return [r.event_log_entry.dagster_event for r in records if r.event_log_entry.dagster_event is not None]


def _stopped_by_check(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """The check that stopped the run's data, when the check sensor alerts on it; None otherwise."""
    for event in _events(instance, run_id, dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        data = event.event_specific_data
        evaluation = _evaluation_of(data, 0, None, run_id, 0.0)
        if evaluation.blocking and messages.classify(evaluation) is messages.Outcome.FAIL:
            return f"{evaluation.check} on {evaluation.asset}"
    return None


def _same_as_previous(instance: dg.DagsterInstance, failed: messages.FailedRun) -> str | None:
    """The job's previous finished run (by end time) when it failed the same way; None otherwise."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=failed.job, statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]), limit=20
    )
    earlier = [r for r in records if r.dagster_run.run_id != failed.run_id and r.end_time and r.end_time <= failed.timestamp]
    if not earlier:
        return None
    previous = max(earlier, key=lambda r: r.end_time or 0.0).dagster_run
    if previous.status != dg.DagsterRunStatus.FAILURE:
        return None
    run_failures = _events(instance, previous.run_id, dg.DagsterEventType.RUN_FAILURE)
    steps = _events(instance, previous.run_id, dg.DagsterEventType.STEP_FAILURE)
    before = _failed_run(previous, run_failures[-1] if run_failures else None, steps, 0.0)
    return previous.run_id if incidents.failure_signature(before) == incidents.failure_signature(failed) else None


def build_run_failure_alert_sensor(ui_url: str, interval_s: int = 30) -> dg.SensorDefinition:
    @dg.run_failure_sensor(
        name=RUN_FAILURE_SENSOR,
        monitor_all_code_locations=True,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Emails ALERT_RECIPIENTS when a run fails (failing steps, errors, the run's link), once per cause: "
        "not for a run stopped by a check that alert_on_checks reports, nor for a repeat of the job's previous failure.",
    )
    def alert_on_run_failure(context: dg.RunFailureSensorContext, alert_mailer: MailerResource) -> None:
        run = context.dagster_run
        record = context.instance.get_run_record_by_id(run.run_id)
        ended = (record.end_time if record else None) or time.time()
        failed = _failed_run(run, context.failure_event, context.get_step_failure_events(), ended)
        check = _stopped_by_check(context.instance, run.run_id)
        if check:
            context.log.info(f"run {run.run_id} of {run.job_name} was stopped by {check}: {CHECK_SENSOR} alerts on it")
            return
        previous = _same_as_previous(context.instance, failed)
        if previous:
            context.log.info(f"run {run.run_id} of {run.job_name} failed like the previous run {previous}: already alerted")
            return
        deliver(alert_mailer, messages.run_alert(failed, ui_url), context.log)

    return alert_on_run_failure


# ---- check evaluations -----------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A metadata value as text or JSON-able data; a table is summarised (its rows are in the UI)."""
    if isinstance(value, dg.TableMetadataValue):
        return f"table of {len(value.records)} rows (in the UI)"
    return getattr(value, "value", value)


def _evaluation_of(data: Any, storage_id: int, partition: str | None, run_id: str | None, timestamp: float) -> messages.Evaluation:
    """An `AssetCheckEvaluation` event's data as a plain `Evaluation`."""
    return messages.Evaluation(
        storage_id=storage_id,
        asset_path=tuple(data.asset_key.path),
        check=data.check_name,
        passed=bool(data.passed),
        severity=data.severity.value,
        blocking=bool(data.blocking),
        description=data.description or "",
        metadata={key: _plain(value) for key, value in (data.metadata or {}).items()},
        # 1.13 records a partitioned check's result without its partition; the run's tag has it. A freshness
        # check judges the asset as a whole (its description names the overdue partition): one incident.
        partition=None if data.check_name == messages.FRESHNESS_CHECK else (data.partition or partition),
        run_id=run_id or None,
        timestamp=timestamp,
    )


def _history(storage: Any, key: dg.AssetCheckKey, stop: Callable[[Any], bool]) -> Iterator[Any]:
    """The check's execution rows, newest first, up to and including the first for which ``stop`` holds."""
    cursor = None
    for _ in range(MAX_PAGES):
        page = storage.get_asset_check_execution_history(key, limit=PAGE, cursor=cursor)
        for row in page:
            yield row
            if stop(row):
                return
        if len(page) < PAGE:
            return
        cursor = page[-1].id


def _new_evaluations(instance: dg.DagsterInstance, key: dg.AssetCheckKey, state: SensorState, now: float) -> list[messages.Evaluation]:
    """The check's evaluations not handled yet, oldest first; moves the check's watermark in ``state``."""
    name = key.to_user_string()
    storage = instance.event_log_storage
    mark = state.checks.get(name)
    if mark is None:  # a check first seen: only the last day counts
        since = now - incidents.LOOKBACK_S
        seen = [(r.id, r.create_timestamp) for r in _history(storage, key, lambda r: r.create_timestamp < since)]
        mark = Watermark(incidents.first_watermark(seen, since))
    after = mark.after
    rows = [r for r in _history(storage, key, lambda r: r.id <= after) if r.id > after]
    if not rows:
        state.checks[name] = mark
        return []
    run_ids = sorted({r.run_id for r in rows if r.run_id})  # runless evaluations have none
    runs = (
        {r.dagster_run.run_id: r.dagster_run for r in instance.get_run_records(filters=dg.RunsFilter(run_ids=run_ids))} if run_ids else {}
    )
    completed = {"SUCCEEDED", "FAILED"}

    def settled(row: Any) -> bool:
        run = runs.get(row.run_id)
        return row.status.value in completed or run is None or run.status in FINISHED

    new, state.checks[name] = incidents.scan(
        [incidents.Row(r.id, r.status.value in completed and r.event is not None, settled(r)) for r in rows], mark
    )
    by_id = {r.id: r for r in rows}
    evaluations = []
    for row_id in new:
        row = by_id[row_id]
        run = runs.get(row.run_id)
        partition = row.partition or (run.tags.get(PARTITION_TAG) if run else None)
        evaluations.append(_evaluation_of(row.event.dagster_event.event_specific_data, row.id, partition, row.run_id, row.event.timestamp))
    return evaluations


def _incident_alerts(
    state: SensorState, evaluations: Sequence[messages.Evaluation], ui_url: str, not_judged_after_s: float
) -> list[messages.Alert]:
    """Advance each evaluation's incident; the alerts and recovery notices that follow."""
    alerts = []
    for evaluation in evaluations:
        outcome = messages.classify(evaluation)
        if outcome is None:
            continue
        before = state.incidents.get(evaluation.incident_key, Incident())
        after, action = incidents.advance(before, outcome, evaluation.timestamp, not_judged_after_s)
        alert = None
        if action is Action.RECOVER:
            alert = messages.recovery_alert(evaluation, before.opened_at, before.subject, ui_url)
        elif action is not None:
            waited = evaluation.timestamp - (after.not_judged_since or evaluation.timestamp)
            alert = messages.check_alert(evaluation, outcome, ui_url, not_judged_for=waited)
            after = replace(after, subject=alert.subject)
        state.incidents[evaluation.incident_key] = after
        if alert:
            alerts.append(alert)
    return alerts


def build_check_alert_sensor(ui_url: str, not_judged_after_hours: float, interval_s: int = 30) -> dg.SensorDefinition:
    @dg.sensor(
        name=CHECK_SENSOR,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Emails ALERT_RECIPIENTS once per incident when a blocking check stops data, live precision fails "
        f"or stays not judged for {messages.duration(not_judged_after_hours * 3600)}, a new fraud model is refused "
        "promotion, or a freshness check fails; a recovery notice when the check passes again.",
    )
    def alert_on_checks(context: dg.SensorEvaluationContext, alert_mailer: MailerResource) -> dg.SkipReason:
        state = SensorState.from_json(context.cursor)
        now = time.time()
        assert context.repository_def is not None  # the daemon and build_sensor_context(definitions=...) set it
        alerts: list[messages.Alert] = []
        for key in sorted(context.repository_def.asset_graph.asset_check_keys, key=lambda k: k.to_user_string()):
            evaluations = _new_evaluations(context.instance, key, state, now)
            alerts += _incident_alerts(state, evaluations, ui_url, not_judged_after_hours * 3600)

        # Undelivered alerts of earlier ticks first (in order), then this tick's; what fails again waits in the
        # cursor, which the UI shows: scrubbed before it is kept.
        secrets = _secrets()
        fresh = [a.redacted(secrets) for a in alerts]
        queue = [*state.pending, *({"subject": a.subject, "body": a.body, "since": now} for a in fresh)]
        waiting: list[dict[str, object]] = []
        sent, failed = 0, False
        for item in queue:
            alert = messages.Alert(str(item["subject"]), str(item["body"]))
            # After one failure the rest wait untried: a mail server that times out must not hold the tick
            # past Dagster's sensor time limit (the cursor would not be saved, and sent alerts would repeat).
            if not failed and deliver(alert_mailer, alert, context.log):
                sent += 1
                continue
            failed = True
            if now - float(str(item["since"])) < incidents.PENDING_FOR_S:
                waiting.append(item)
            else:
                context.log.error(f"alert dropped after a day undelivered: {alert.subject!r}")
        for item in waiting[: -incidents.MAX_PENDING]:
            context.log.error(f"alert dropped, too many undelivered: {item['subject']!r}")
        state.pending = waiting[-incidents.MAX_PENDING :]
        context.update_cursor(state.to_json())
        opened = sum(1 for i in state.incidents.values() if i.open)
        summary = f"{sent} alert(s) sent; {opened} incident(s) open"
        if waiting:
            summary += f"; {len(waiting)} alert(s) not delivered, retried next tick (see this tick's log)"
        return dg.SkipReason(summary)

    return alert_on_checks


def alert_sensors(ui_url: str, not_judged_after_hours: float) -> list[dg.SensorDefinition]:
    """Both alert sensors, running by default (so `make dev` alerts)."""
    return [build_run_failure_alert_sensor(ui_url), build_check_alert_sensor(ui_url, not_judged_after_hours)]
