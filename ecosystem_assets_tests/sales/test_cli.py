"""The commands users type: `dagster asset materialize …` against a live API, and `ecosystem-assets demo`."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from zoneinfo import ZoneInfo

from ecosystem_assets_tests.sales.orders_data import expected_rows, make_orders

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TOKEN = "cli-token-5f4dcc3b5aa765d6"


def user_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALES_", "SMTP_", "REPORT_", "ECOSYSTEM_", "AWS_"))}
    home = tmp_path / "home"
    (home / "dagster").mkdir(parents=True)
    (home / "dagster" / "dagster.yaml").write_text((REPO / "deploy" / "dagster.local.yaml").read_text())
    env.update(ECOSYSTEM_HOME=str(home), DAGSTER_HOME=str(home / "dagster"), **extra)
    return env


def test_dagster_asset_materialize_against_live_api(sales_api, tmp_path):
    day = "2026-11-26"
    sales_api.token = TOKEN
    sales_api.orders[day] = make_orders(day, 230, offset="-05:00")
    env = user_env(tmp_path, SALES_API_URL=sales_api.url, SALES_API_TOKEN=TOKEN, REPORT_TIMEZONE="America/New_York")
    cmd = [str(BIN / "dagster"), "asset", "materialize", "-m", "ecosystem_assets.definitions", "--select", "raw_sales*", "--partition", day]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert TOKEN not in proc.stdout + proc.stderr
    home = Path(env["ECOSYSTEM_HOME"])
    [csv_path] = (home / "storage" / "sales" / "summary").glob(f"*/{day}.csv")  # a folder per run
    csv = csv_path.read_text()
    assert [line.split(",") for line in csv.splitlines()[1:]] == expected_rows(sales_api.orders[day])
    assert len(list((home / "outbox").glob(f"sales-summary-{day}-*.eml"))) == 1
    assert {r.query["page"] for r in sales_api.requests} == {"1", "2", "3"}


def test_demo_produces_yesterdays_csv_and_email_offline(tmp_path):
    env = user_env(tmp_path, REPORT_TIMEZONE="Asia/Tokyo")
    proc = subprocess.run([str(BIN / "ecosystem-assets"), "demo"], cwd=REPO, env=env, capture_output=True, text=True, timeout=480)
    assert proc.returncode == 0, proc.stderr[-3000:]
    yesterday = (datetime.now(ZoneInfo("Asia/Tokyo")).date() - timedelta(days=1)).isoformat()
    home = Path(env["ECOSYSTEM_HOME"])
    [csv] = (home / "storage" / "sales" / "summary").glob(f"*/{yesterday}.csv")
    assert csv.read_text().startswith("region,product,orders,units,revenue\n")
    [eml] = (home / "outbox").glob(f"sales-summary-{yesterday}-*.eml")
    assert str(csv) in proc.stdout and str(eml) in proc.stdout
    assert (home / "dagster" / "history" / "runs.db").exists()  # the run shows up in `make dev`
    # The 13 days before yesterday were summarised (no emails for them): yesterday's email compares and charts.
    assert "earlier days  13 summarised" in proc.stdout and "(13 earlier days compared, revenue chart)" in proc.stdout
    assert len(list((home / "storage" / "sales" / "summary").glob("*/*.csv"))) == 14 and len(list((home / "outbox").glob("*.eml"))) == 1
    message = message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert [p.get_content_type() for p in message.walk()].count("image/png") == 1
    text = message.get_body(("plain",)).get_content()
    assert "Compared with the same weekday a week earlier" in text and "no report for that day" not in text
    # A quiet demo (issue 13): a line per step and a closing summary, no Dagster DEBUG events, no MLflow
    # registry chatter; the instance's event log still has every event.
    output = proc.stdout + proc.stderr
    assert len(output.splitlines()) < 60, output
    assert "DEBUG" not in output and "already exists. Creating a new version" not in output, output
    assert "INFO" not in proc.stderr, proc.stderr  # MLflow's database set-up, Great Expectations' docs-site directory
    assert all(f"make {target}" in proc.stdout.split("Next:")[-1] for target in ("dev", "serve", "mlflow")), proc.stdout


def test_demo_email_line_says_when_the_email_was_sent_before():
    from ecosystem_assets.cli import _email_line

    sent = {"sent": True, "subject": "Sales summary for 2026-11-26", "transport": "/o/x.eml", "history_days": 13, "chart": True}
    assert _email_line(sent) == "Sales summary for 2026-11-26 (13 earlier days compared, revenue chart) → /o/x.eml"
    before = {"sent": False, "sent_by_run": "abc", "sent_at": "2026-11-27T00:01:02+00:00", "message_id": "<m@x>"}
    assert _email_line(before) == "already sent by run abc at 2026-11-27T00:01:02+00:00; not sent again"
