"""The API token and SMTP password never appear in the event log, captured logs, errors or files."""

from __future__ import annotations

from pathlib import Path

from ecosystem_assets_tests.sales.orders_data import make_orders
from ecosystem_assets_tests.sales.pipeline import definitions, run_daily

DAY = "2026-11-26"
TOKEN = "TOKEN-d41d8cd98f00b204e980"
PASSWORD = "PASSWORD-9e107d9d372bb682"


def leaks(root: Path, text: str, *secrets: str) -> list[str]:
    found = [f"captured output contains {s[:8]}…" for s in secrets if s in text]
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path} contains {s[:8]}…" for s in secrets if s.encode() in data]
    return found


def test_secrets_stay_out_of_runs_logs_and_files(
    sales_api, smtp_server, ecosystem_env, dagster_instance, monkeypatch, caplog, capfd, tmp_path
):
    sales_api.token = TOKEN
    sales_api.orders[DAY] = make_orders(DAY, 150)
    server = smtp_server("none", credentials=("mailer", PASSWORD))
    for key, value in {
        "SALES_API_URL": sales_api.url,
        "SALES_API_TOKEN": TOKEN,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(server.port),
        "SMTP_SECURITY": "none",
        "SMTP_USER": "mailer",
        "SMTP_PASSWORD": PASSWORD,
    }.items():
        monkeypatch.setenv(key, value)

    ok = run_daily(definitions(), dagster_instance, DAY)
    assert ok.success and len(server.recorder.messages) == 1  # the secrets were really used

    # Failing runs too: a refused token (401) and a refused password (535).
    sales_api.token = "another-token"
    assert not run_daily(definitions(), dagster_instance, DAY).success
    sales_api.token = TOKEN
    wrong = smtp_server("none", credentials=("mailer", "not-the-password"))
    monkeypatch.setenv("SMTP_PORT", str(wrong.port))
    assert not run_daily(definitions(), dagster_instance, DAY).success

    events = "\n".join(repr(e) for run in dagster_instance.get_runs() for e in dagster_instance.all_logs(run.run_id))
    assert "STEP_FAILURE" in events and "HTTP 401" in events and "SMTPAuthenticationError" in events
    out, err = capfd.readouterr()
    captured = "\n".join([events, caplog.text, out, err])
    # Every file under tmp_path: the instance's SQLite event log and run storage, compute logs,
    # artifact storage and the outbox.
    assert leaks(tmp_path, captured, TOKEN, PASSWORD) == []
