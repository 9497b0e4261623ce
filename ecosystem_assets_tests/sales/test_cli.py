"""The commands users type: `dagster asset materialize …` against a live API; the demo's email line
(the demo itself runs in ecosystem_assets_tests/test_demo.py, followed by the UI in a browser)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


def test_demo_email_line_says_when_the_email_was_sent_before():
    from ecosystem_assets.cli import _email_line

    sent = {"sent": True, "subject": "Sales summary for 2026-11-26", "transport": "/o/x.eml", "history_days": 13, "chart": True}
    assert _email_line(sent) == "Sales summary for 2026-11-26 (13 earlier days compared, revenue chart) → /o/x.eml"
    before = {"sent": False, "sent_by_run": "abc", "sent_at": "2026-11-27T00:01:02+00:00", "message_id": "<m@x>"}
    assert _email_line(before) == "already sent by run abc at 2026-11-27T00:01:02+00:00; not sent again"
