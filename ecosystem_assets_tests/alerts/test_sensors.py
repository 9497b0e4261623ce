"""The alert sensors on a real Dagster instance after real runs: the sales API and the SMTP server on
loopback, alerts read back as the `.eml` files of the outbox or as the messages the SMTP server got.

Each sensor is evaluated the way the daemon does it (its definition's `evaluate_tick`, the cursor
carried from tick to tick); the run-failure sensor's first tick only sets its cursor, so every test
ticks once before the runs it reports on."""

from __future__ import annotations

import email
from collections.abc import Iterator
from datetime import date, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from ecosystem_assets.alerts.sensors import CHECK_SENSOR, RUN_FAILURE_SENSOR
from ecosystem_assets.fraud.checks import JUDGED, PRECISION_CHECK, WINDOW_END
from ecosystem_assets.fraud.definitions import RETRAIN_JOB
from ecosystem_assets.fraud.sensors import MONITORED
from ecosystem_assets.project import build_definitions
from ecosystem_assets.resources.mail import MailerResource
from ecosystem_assets.settings import Settings
from ecosystem_assets_tests.sales.orders_data import make_orders
from ecosystem_assets_tests.sales.pipeline import run_assets, run_daily
from ecosystem_assets_tests.servers.sales_api import FakeSalesApi
from ecosystem_assets_tests.servers.smtp import SmtpServer

DAY = "2026-11-26"
UI = "http://dagster.example:3000"  # DAGSTER_UI_URL, given with a trailing slash below
# Secrets in the environment of every test: none may appear in any alert.
SECRETS = {"SALES_API_TOKEN": "tok-7f3a-alerts", "SMTP_PASSWORD": "pw-91c2-alerts", "FRAUD_FEEDBACK_TOKEN": "fb-02d9-alerts"}


class Sensors:
    """Both alert sensors of ``defs``, ticked like the daemon does, cursors carried over."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance):
        self.defs, self.instance = defs, instance
        self.cursors: dict[str, str | None] = {RUN_FAILURE_SENSOR: None, CHECK_SENSOR: None}
        self.messages: dict[str, str | None] = {}

    def tick(self) -> None:
        for name in self.cursors:
            context = dg.build_sensor_context(
                instance=self.instance,
                definitions=self.defs,
                cursor=self.cursors[name],
                resources={"alert_mailer": self.defs.resources["alert_mailer"]},
            )
            result = self.defs.resolve_sensor_def(name).evaluate_tick(context)
            self.cursors[name], self.messages[name] = result.cursor, result.skip_message


@pytest.fixture
def env(ecosystem_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("DAGSTER_UI_URL", UI + "/")
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return ecosystem_env


@pytest.fixture
def sales_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSalesApi]:
    api = FakeSalesApi(page_size=100, token=SECRETS["SALES_API_TOKEN"]).start()
    monkeypatch.setenv("SALES_API_URL", api.url)
    yield api
    api.stop()


def alert_files(env: dict[str, str]) -> list[Path]:
    return sorted((Path(env["ECOSYSTEM_HOME"]) / "outbox").glob("alert-*.eml"), key=lambda p: p.stat().st_mtime_ns)


def parse(raw: bytes) -> tuple[EmailMessage, str]:
    """The message and its text."""
    message = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message, message.get_content()


def subject(message: EmailMessage) -> str:
    """The Subject unfolded as mail clients show it: the email package folds a long one right after
    ``Subject:`` and its parser keeps the space the unfolding leaves."""
    return str(message["Subject"]).strip()


def assert_no_secret(raw: bytes) -> None:
    text = raw.decode() + parse(raw)[1]
    assert not [name for name, value in SECRETS.items() if value in text]


def test_a_failing_sales_gate_alerts_once_naming_check_and_partition_then_recovers(env, sales_api, dagster_instance):
    defs = build_definitions(Settings.from_env())
    sensors = Sensors(defs, dagster_instance)
    sensors.tick()
    bad = sales_api.orders[DAY] = make_orders(DAY, 150)
    bad[17]["quantity"] = 0

    first = run_daily(defs, dagster_instance, DAY)
    assert not first.success
    sensors.tick()
    [path] = alert_files(env)
    message, body = parse(path.read_bytes())
    assert subject(message) == f"[ecosystem_assets] orders_pass_quality_gate failed on raw_sales {DAY}: data stopped"
    assert message["To"] == "data-oncall@localhost"
    assert f"Check in the UI: {UI}/assets/raw_sales?view=checks&checkDetail=orders_pass_quality_gate" in body
    assert f"Run: {UI}/runs/{first.run_id}" in body
    assert "expect_column_values_to_be_between on 'quantity': 1 rows" in body  # the check's description and metadata
    assert f"quarantine_key: sales/quarantine/{DAY}/{first.run_id}.parquet" in body
    assert body.rstrip().endswith("Troubleshooting: docs/troubleshooting.md#sales-gate")
    # The run failed too, but its alert would repeat the check's: the run-failure sensor left it to the check's.

    second = run_daily(defs, dagster_instance, DAY)  # the same failure again: the same incident
    assert not second.success
    sensors.tick()
    assert len(alert_files(env)) == 1

    sales_api.orders[DAY] = make_orders(DAY, 150)
    good = run_assets(defs, dagster_instance, DAY, "raw_sales")  # the corrected day passes the gate
    assert good.success
    sensors.tick()
    [_, recovered] = alert_files(env)
    notice, notice_body = parse(recovered.read_bytes())
    assert subject(notice) == f"[ecosystem_assets] recovered: orders_pass_quality_gate on raw_sales {DAY} passes again"
    assert f"Run: {UI}/runs/{good.run_id}" in notice_body and subject(message) in notice_body
    for path in alert_files(env):
        assert_no_secret(path.read_bytes())


def land(instance: dg.DagsterInstance, first: date, last: date) -> None:
    for i in range((last - first).days + 1):
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key="fraud_transactions", partition=str(first + timedelta(days=i)))
        )


def test_a_failed_retrain_alerts_once(env, dagster_instance):
    defs = build_definitions(Settings.from_env())
    sensors = Sensors(defs, dagster_instance)
    sensors.tick()
    end = date(2026, 9, 20)
    # The instance says the days landed, but their files are not in storage: fraud_features fails, naming them.
    land(dagster_instance, end - timedelta(days=60), end)
    config = {"ops": {"fraud_features": {"config": {"end_date": str(end)}}}}
    retrain = defs.resolve_job_def(RETRAIN_JOB)
    failed = retrain.execute_in_process(instance=dagster_instance, run_config=config, raise_on_error=False)
    assert not failed.success
    sensors.tick()
    [path] = alert_files(env)
    message, body = parse(path.read_bytes())
    assert subject(message) == "[ecosystem_assets] retrain failed: fraud_retrain_job at fraud_features"
    assert f"Run: {UI}/runs/{failed.run_id}" in body and "Step fraud_features:" in body
    assert "backfill them first" in body  # the step's error
    assert body.rstrip().endswith("Troubleshooting: docs/troubleshooting.md#retrain-failed")

    # A second retrain failing the same way is the same cause: no second alert.
    assert not retrain.execute_in_process(instance=dagster_instance, run_config=config, raise_on_error=False).success
    sensors.tick()
    assert len(alert_files(env)) == 1
    assert_no_secret(path.read_bytes())


def evaluate_precision(instance: dg.DagsterInstance, *, passed: bool, judged: bool = True, description: str = "") -> None:
    """A monitoring evaluation as fraud_monitoring_metrics records it (see fraud/test_sensor.py)."""
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=MONITORED,
            check_name=PRECISION_CHECK,
            passed=passed,
            severity=dg.AssetCheckSeverity.ERROR if judged else dg.AssetCheckSeverity.WARN,
            description=description or ("live precision 0.410 of v1 is below 0.80 (900 labelled)" if not passed else "ok"),
            metadata={JUDGED: judged, WINDOW_END: "2026-09-22T10:00:00+00:00", "precision": 0.41 if not passed else 0.93},
        )
    )


def subjects(env: dict[str, str]) -> list[str]:
    return [subject(parse(p.read_bytes())[0]) for p in alert_files(env)]


def test_precision_recovering_sends_one_recovery_notice(env, dagster_instance):
    sensors = Sensors(build_definitions(Settings.from_env()), dagster_instance)
    sensors.tick()
    evaluate_precision(dagster_instance, passed=False)
    sensors.tick()
    evaluate_precision(dagster_instance, passed=False)
    sensors.tick()
    assert subjects(env) == [f"[ecosystem_assets] live precision below threshold: {PRECISION_CHECK} failed on fraud_monitoring_metrics"]
    evaluate_precision(dagster_instance, passed=True)
    sensors.tick()
    evaluate_precision(dagster_instance, passed=True)
    sensors.tick()
    assert subjects(env)[1:] == [f"[ecosystem_assets] recovered: {PRECISION_CHECK} on fraud_monitoring_metrics passes again"]
    assert "Troubleshooting: docs/troubleshooting.md#precision-low" in parse(alert_files(env)[1].read_bytes())[1]


def test_not_judged_past_the_limit_alerts_once_and_a_leaked_secret_is_scrubbed(env, dagster_instance, monkeypatch):
    monkeypatch.setenv("ALERT_NOT_JUDGED_AFTER_HOURS", "0")  # at once: the clock itself is tested in test_incidents.py
    sensors = Sensors(build_definitions(Settings.from_env()), dagster_instance)
    sensors.tick()
    # A description that (wrongly) quotes a secret: the alert must not carry it.
    leak = f"not judged: no serving model (token {SECRETS['FRAUD_FEEDBACK_TOKEN']} refused)"
    evaluate_precision(dagster_instance, passed=False, judged=False, description=leak)
    evaluate_precision(dagster_instance, passed=False, judged=False, description=leak)
    sensors.tick()
    [path] = alert_files(env)
    message, body = parse(path.read_bytes())
    assert subject(message).startswith("[ecosystem_assets] live precision not judged for 0 min")
    assert "(token *** refused)" in body
    assert_no_secret(path.read_bytes())


def test_the_alert_smtp_server_down_fails_no_job_is_logged_and_retried(env, dagster_instance, monkeypatch, capfd):
    smtp = SmtpServer("none", None, None)  # its port, with nothing listening yet: the alert SMTP server is down
    monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("SMTP_PORT", str(smtp.port))
    monkeypatch.setenv("SMTP_SECURITY", "none")
    # The report itself goes to the outbox: the job under test sends no mail of its own through the dead server.
    outbox = str(Path(env["ECOSYSTEM_HOME"]) / "outbox")
    defs = build_definitions(Settings.from_env(), {"mailer": MailerResource(outbox_dir=outbox)})
    sensors = Sensors(defs, dagster_instance)
    sensors.tick()

    # A long-past day from the demo feed: the job succeeds, and its freshness check fails (today's report is
    # due, not that day's), which is an alert.
    result = run_daily(defs, dagster_instance, "2025-03-03")
    assert result.success
    sensors.tick()
    assert dagster_instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS
    assert "1 alert(s) not delivered, retried next tick" in str(sensors.messages[CHECK_SENSOR])
    logged = capfd.readouterr().err
    assert "alert not delivered: '[ecosystem_assets] sales_report_email late: freshness_check failed'" in logged
    assert f"smtp://127.0.0.1:{smtp.port}" in logged and SECRETS["SMTP_PASSWORD"] not in logged

    with smtp:  # the server is back: the next tick delivers the alert, once
        sensors.tick()
        sensors.tick()
        [received] = smtp.recorder.messages
    message, _ = parse(received.content)
    assert subject(message) == "[ecosystem_assets] sales_report_email late: freshness_check failed"
    assert received.rcpt_tos == ["data-oncall@localhost"]
    assert_no_secret(received.content)


def test_both_sensors_run_by_default_and_the_mailer_goes_to_the_alert_recipients(ecosystem_env, monkeypatch):
    monkeypatch.setenv("ALERT_RECIPIENTS", "oncall@x.example, lead@x.example")
    defs = build_definitions(Settings.from_env())
    for name in (RUN_FAILURE_SENSOR, CHECK_SENSOR):
        assert defs.resolve_sensor_def(name).default_status == dg.DefaultSensorStatus.RUNNING
    mailer: Any = defs.resources["alert_mailer"]
    assert mailer.recipient_list == ("oncall@x.example", "lead@x.example")
