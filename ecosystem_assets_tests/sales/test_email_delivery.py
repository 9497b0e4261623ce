"""Email through a real SMTP server (aiosmtpd): each security mode, auth, failures and re-sending."""

from __future__ import annotations

from email import message_from_bytes
from pathlib import Path

import pytest

from ecosystem_assets.resources.mail import MailConfigurationError, MailerResource
from ecosystem_assets_tests.sales.orders_data import make_orders
from ecosystem_assets_tests.sales.pipeline import attachment, definitions, failure_message, materialization, run_assets, run_daily

DAY = "2026-11-26"
PASSWORD = "pw-Zq8-very-secret"


@pytest.fixture
def report_env(sales_api, ecosystem_env, monkeypatch):
    sales_api.orders[DAY] = make_orders(DAY, 120)
    monkeypatch.setenv("SALES_API_URL", sales_api.url)
    monkeypatch.setenv("REPORT_SENDER", "reports@shop.example")
    monkeypatch.setenv("REPORT_RECIPIENTS", "ana@example.com,bo@example.com")
    return ecosystem_env


def use_smtp(monkeypatch, server, security, user=None):
    monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("SMTP_PORT", str(server.port))
    monkeypatch.setenv("SMTP_SECURITY", security)
    if server.cert_file:
        monkeypatch.setenv("SMTP_CA_FILE", str(server.cert_file))
    if user:
        monkeypatch.setenv("SMTP_USER", user)
        monkeypatch.setenv("SMTP_PASSWORD", PASSWORD)


def csv_of(env) -> bytes:
    """The day's one published summary CSV (its key contains the run id)."""
    [path] = (Path(env["ECOSYSTEM_HOME"]) / "storage" / "sales" / "summary").glob(f"*/{DAY}.csv")
    return path.read_bytes()


@pytest.mark.parametrize(("security", "user"), [("none", None), ("none", "mailer"), ("starttls", "mailer@shop.example"), ("ssl", "mailer")])
def test_delivers_the_report(security, user, report_env, smtp_server, dagster_instance, monkeypatch):
    server = smtp_server(security, credentials=(user, PASSWORD) if user else None)
    use_smtp(monkeypatch, server, security, user)
    result = run_daily(definitions(), dagster_instance, DAY)
    assert result.success, failure_message(result)

    [received] = server.recorder.messages
    assert received.mail_from == "reports@shop.example"
    assert received.rcpt_tos == ["ana@example.com", "bo@example.com"]
    assert received.login == user
    message = message_from_bytes(received.content)
    assert message["Subject"] == f"Sales summary for {DAY}"
    assert message["From"].endswith("<reports@shop.example>")
    assert attachment(message) == (f"sales-summary-{DAY}.csv", csv_of(report_env))
    meta = materialization(result, "sales_report_email")
    assert meta["message_id"] == message["Message-ID"]
    assert meta["transport"] == f"smtp://127.0.0.1:{server.port} ({security})"


def test_untrusted_certificate_is_refused(report_env, smtp_server, dagster_instance, monkeypatch):
    server = smtp_server("ssl")
    use_smtp(monkeypatch, server, "ssl")
    monkeypatch.delenv("SMTP_CA_FILE")
    defs = definitions(mailer=MailerResource(smtp_host="127.0.0.1", smtp_port=server.port, smtp_security="ssl", retry_delay_s=0.01))
    result = run_daily(defs, dagster_instance, DAY)
    assert not result.success
    assert "CERTIFICATE_VERIFY_FAILED" in failure_message(result)
    assert server.recorder.messages == []


def test_failed_delivery_keeps_the_csv_and_a_rerun_resends(report_env, smtp_server, dagster_instance, monkeypatch):
    server = smtp_server("none", credentials=("mailer", PASSWORD))
    use_smtp(monkeypatch, server, "none", "mailer")
    server.recorder.reject_next = 3
    fast = MailerResource(
        sender="reports@shop.example",
        recipients="ana@example.com",
        smtp_host="127.0.0.1",
        smtp_port=server.port,
        smtp_security="none",
        smtp_user="mailer",
        smtp_password=PASSWORD,
        max_attempts=3,
        retry_delay_s=0.01,
    )
    result = run_daily(definitions(mailer=fast), dagster_instance, DAY)
    assert not result.success
    message = failure_message(result)
    assert "after 3 attempts" in message and "554" in message and "rejected for this test" in message
    assert "re-materialize sales_report_email" in message and PASSWORD not in message
    assert server.recorder.rejected == 3 and server.recorder.messages == []
    kept = csv_of(report_env)  # the CSV is published and stays

    again = run_assets(definitions(mailer=fast), dagster_instance, DAY, "sales_report_email")
    assert again.success, failure_message(again)
    [received] = server.recorder.messages
    assert attachment(message_from_bytes(received.content))[1] == kept


def test_transient_rejection_is_retried(report_env, smtp_server, monkeypatch):
    server = smtp_server("none")
    server.recorder.reject_next = 1
    mailer = MailerResource(
        recipients="ana@example.com", smtp_host="127.0.0.1", smtp_port=server.port, smtp_security="none", retry_delay_s=0.01
    )
    sent = mailer.send("Subject", "Body", "a.csv", b"x,y\n1,2\n")
    assert sent.attempts == 2 and len(server.recorder.messages) == 1


def test_wrong_password_fails_without_revealing_it(report_env, smtp_server, monkeypatch):
    server = smtp_server("none", credentials=("mailer", "the-right-one"))
    mailer = MailerResource(
        recipients="ana@example.com",
        smtp_host="127.0.0.1",
        smtp_port=server.port,
        smtp_security="none",
        smtp_user="mailer",
        smtp_password=PASSWORD,
        max_attempts=2,
        retry_delay_s=0.01,
    )
    with pytest.raises(Exception) as err:
        mailer.send("Subject", "Body", "a.csv", b"x\n")
    assert "after 1 attempts" in str(err.value)  # not retried: it would not get better
    assert "SMTPAuthenticationError" in str(err.value) and "535" in str(err.value)
    assert PASSWORD not in str(err.value) and PASSWORD not in repr(err.value)


def test_user_without_password_is_refused_before_connecting(report_env, smtp_server):
    server = smtp_server("none", credentials=("mailer", PASSWORD))
    mailer = MailerResource(
        recipients="ana@example.com",
        smtp_host="127.0.0.1",
        smtp_port=server.port,
        smtp_security="none",
        smtp_user="mailer",
        retry_delay_s=0.01,
    )
    with pytest.raises(MailConfigurationError, match="SMTP_USER is set but SMTP_PASSWORD is not"):
        mailer.send("Subject", "Body", "a.csv", b"x\n")
    assert server.recorder.messages == [] and server.recorder.rejected == 0
