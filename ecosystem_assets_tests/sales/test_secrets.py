"""The API token and SMTP password never appear in the event log, captured logs, errors or files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import dagster as dg
import pytest

from ecosystem_assets.resources.sales_api import SalesApiResource
from ecosystem_assets.sales.redact import REDACTED, scrub
from ecosystem_assets.settings import Settings, SettingsError
from ecosystem_assets_tests.sales.orders_data import make_orders
from ecosystem_assets_tests.sales.pipeline import RESEND, definitions, failure_message, run_daily
from ecosystem_assets_tests.servers.sales_api import Fault

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
    assert not run_daily(definitions(), dagster_instance, DAY, run_config=RESEND).success  # the day was sent: resend

    events = "\n".join(repr(e) for run in dagster_instance.get_runs() for e in dagster_instance.all_logs(run.run_id))
    assert "STEP_FAILURE" in events and "HTTP 401" in events and "SMTPAuthenticationError" in events
    out, err = capfd.readouterr()
    captured = "\n".join([events, caplog.text, out, err])
    # Every file under tmp_path: the instance's SQLite event log and run storage, compute logs,
    # artifact storage and the outbox.
    assert leaks(tmp_path, captured, TOKEN, PASSWORD) == []


RUN_TOKEN = "RUNTOKEN-6f1ed002ab5595859014ebf0951522d9"
# Each failure kind: how the API misbehaves (or the secret is malformed), the SALES_API_TOKEN value,
# and what the run's failure must say instead of the token.
FAILURE_KINDS = {
    "401 echoing the Authorization header": (lambda api: setattr(api, "token", "the-token-the-api-wants"), RUN_TOKEN, "HTTP 401"),
    "500 with the token in the body": (
        lambda api: api.faults.extend([Fault(status=500, body=f'{{"error": "token {RUN_TOKEN} is revoked"}}'.encode())] * 3),
        RUN_TOKEN,
        "last error HTTP 500",
    ),
    "timeouts": (lambda api: api.faults.extend([Fault(hang_s=2.0)] * 3), RUN_TOKEN, "ReadTimeout after 0.5s timeout"),
    "a line break inside the token": (
        lambda api: None,
        "RUNTOKEN-first-half-77c3\nRUNTOKEN-second-half-9a1b",
        "SALES_API_TOKEN contains a line break",
    ),
}


def instance_and_files_leak(root: Path, instance, capfd, caplog, *secrets: str) -> list[str]:
    """Every place a run leaves text: the instance's event log and run storage (as Dagster returns them and
    as files: SQLite databases, compute logs), the artifact storage and outbox under ``root``, and the output."""
    events = "\n".join(repr(e) for run in instance.get_runs() for e in instance.all_logs(run.run_id))
    runs = "\n".join(repr(run) for run in instance.get_runs())
    out, err = capfd.readouterr()
    return leaks(root, "\n".join([events, runs, caplog.text, out, err]), *secrets)


def wire_api(api, monkeypatch, token: str) -> Any:
    """Definitions on the live API, the token read at run time through dg.EnvVar, with test-sized timeouts."""
    monkeypatch.setenv("SALES_API_URL", api.url)
    monkeypatch.setenv("SALES_API_TOKEN", "valid-at-load-time")  # the settings see a valid secret …
    resource = SalesApiResource(base_url=api.url, token=dg.EnvVar("SALES_API_TOKEN"), timeout_s=0.5, max_retries=2, backoff_s=0.01)
    defs = definitions(sales_api=resource)
    monkeypatch.setenv("SALES_API_TOKEN", token)  # … the run reads the secret as it is now (a rotated or re-mounted file)
    return defs


@pytest.mark.parametrize("kind", FAILURE_KINDS)
def test_no_failure_kind_leaks_the_token(kind, sales_api, ecosystem_env, dagster_instance, monkeypatch, caplog, capfd, tmp_path):
    misbehave, token, expected = FAILURE_KINDS[kind]
    sales_api.token, sales_api.echo_auth = RUN_TOKEN, True
    sales_api.orders[DAY] = make_orders(DAY, 150)
    misbehave(sales_api)
    result = run_daily(wire_api(sales_api, monkeypatch, token), dagster_instance, DAY)
    assert not result.success
    message = failure_message(result)
    assert expected in message
    if kind == "a line break inside the token":  # refused before any request
        assert sales_api.requests == []
    else:  # the failure names the request, without its token
        assert f"{sales_api.url}/orders?date={DAY}&page=1" in message
    if kind.startswith("401"):
        assert "[redacted]" in message and sales_api.requests[0].headers["Authorization"] == f"Bearer {RUN_TOKEN}"
    secrets = [RUN_TOKEN, *token.split("\n")]  # each half of a broken token too
    assert instance_and_files_leak(tmp_path, dagster_instance, capfd, caplog, *secrets) == []
    assert list(tmp_path.rglob("*.db")) and list(tmp_path.rglob("compute_logs/*.err")), "the instance's files were grepped"


def test_a_token_with_a_trailing_newline_works(sales_api, ecosystem_env, dagster_instance, monkeypatch, caplog, capfd, tmp_path):
    """A secret mounted from a file ends in a newline: stripped, it is the token."""
    sales_api.token, sales_api.echo_auth = RUN_TOKEN, True
    sales_api.orders[DAY] = make_orders(DAY, 150)
    monkeypatch.setenv("SALES_API_URL", sales_api.url)
    monkeypatch.setenv("SALES_API_TOKEN", RUN_TOKEN + "\n")
    result = run_daily(definitions(), dagster_instance, DAY)
    assert result.success, failure_message(result)
    assert sales_api.requests[0].headers["Authorization"] == f"Bearer {RUN_TOKEN}"
    assert len(list((Path(ecosystem_env["ECOSYSTEM_HOME"]) / "outbox").glob("*.eml"))) == 1
    assert instance_and_files_leak(tmp_path, dagster_instance, capfd, caplog, RUN_TOKEN) == []


@pytest.mark.parametrize("token", ["abc\ndef-secret-part", "abc\x00def-secret-part", "abc€def-secret-part"])
def test_a_token_that_cannot_be_a_header_is_refused_without_showing_it(token):
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"SALES_API_TOKEN": token})
    message = str(refused.value)
    assert message.startswith("SALES_API_TOKEN contains ") and "secret-part" not in message and "abc" not in message
    assert refused.value.__cause__ is None and refused.value.__suppress_context__  # pydantic's error (which quotes it) is dropped


def test_scrub_removes_every_spelling_of_the_token_and_authorization_values():
    token = "tok/en+with=specials"
    text = (
        f"echo {token}; json {json.dumps({'Authorization': 'Bearer ' + token})}; "
        f"url {quote(token, safe='')}; header Authorization: Bearer other-credential-1234; got Bearer zzzzzzzzzz"
    )
    scrubbed = scrub(text, token)
    assert token not in scrubbed and quote(token, safe="") not in scrubbed
    assert "other-credential-1234" not in scrubbed and "zzzzzzzzzz" not in scrubbed
    assert scrubbed.count(REDACTED) >= 5
