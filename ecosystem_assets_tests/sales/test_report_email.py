"""The report people read: the HTML email with comparisons, regions, products and the chart, through the
fake sales API, a real SMTP server and a real Dagster instance; its history read from Dagster; the
reconciliation check; the 09:30 freshness check."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime
from decimal import Decimal
from email import message_from_bytes, policy
from email.message import EmailMessage
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from ecosystem_assets.sales import history
from ecosystem_assets.sales.email_report import money
from ecosystem_assets_tests.sales.orders_data import make_orders
from ecosystem_assets_tests.sales.pipeline import definitions, failure_message, materialization, outbox, run_assets, run_daily

DAY, PREVIOUS, WEEK_EARLIER = "2026-11-26", "2026-11-25", "2026-11-19"  # a Thursday, the Wednesday, the Thursday before
SENDER_NAME = 'Ventes "Nord", Équipe'


def totals(orders: list[dict]) -> tuple[int, int, int]:
    """Orders, units, revenue in cents, with Decimal (independently of the project's code)."""
    revenue = sum(o["quantity"] * Decimal(str(o["unit_price"])) for o in orders)
    return len(orders), sum(o["quantity"] for o in orders), int(revenue * 100)


def usd(cents: int, signed: bool = False) -> str:
    sign = "-" if cents < 0 else "+" if signed and cents > 0 else ""
    return f"{sign}${Decimal(abs(cents)) / 100:,.2f}"


def change(current: int, previous: int, revenue: bool = False) -> str:
    delta = current - previous
    shown = usd(delta, signed=True) if revenue else f"{delta:+,}"
    return f"{shown} ({delta * 100 / previous:+.1f}%)"


def parts(message: EmailMessage) -> list[tuple[int, str]]:
    """(depth, content type) of every part, in order."""
    found: list[tuple[int, str]] = []

    def walk(part: EmailMessage, depth: int) -> None:
        found.append((depth, part.get_content_type()))
        if part.is_multipart():
            for sub in part.iter_parts():
                walk(sub, depth + 1)

    walk(message, 0)
    return found


@pytest.fixture
def report_env(sales_api, ecosystem_env, monkeypatch):
    monkeypatch.setenv("SALES_API_URL", sales_api.url)
    monkeypatch.setenv("REPORT_SENDER", "reports@shop.example")
    monkeypatch.setenv("REPORT_RECIPIENTS", "ana@example.com")
    return ecosystem_env


def test_html_email_compares_with_earlier_days_from_dagster(report_env, sales_api, smtp_server, dagster_instance, monkeypatch):
    today = make_orders(DAY, 120)
    today[0]["region"] = "Øst & <Co>"  # escaped in the HTML, as is in the text
    sales_api.orders[DAY], sales_api.orders[PREVIOUS] = today, make_orders(PREVIOUS, 100)
    server = smtp_server("none")
    monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("SMTP_PORT", str(server.port))
    monkeypatch.setenv("SMTP_SECURITY", "none")
    monkeypatch.setenv("REPORT_SENDER_NAME", SENDER_NAME)
    defs = definitions()
    # The previous day: summarised by a run (no email). The same weekday a week earlier: a materialization
    # as older versions recorded it (revenue as text, no revenue_cents); only its latest one counts.
    assert run_assets(defs, dagster_instance, PREVIOUS, "raw_sales", "sales_summary_csv").success
    for revenue in ("1.00", "20000.05"):
        dagster_instance.report_runless_asset_event(
            dg.AssetMaterialization("sales_summary_csv", partition=WEEK_EARLIER, metadata={"orders": 150, "units": 400, "revenue": revenue})
        )

    result = run_daily(defs, dagster_instance, DAY)
    assert result.success, failure_message(result)
    meta = materialization(result, "sales_report_email")
    assert meta["history_days"] == 2 and meta["chart"] is True
    [received] = server.recorder.messages
    message = message_from_bytes(received.content, policy=policy.default)
    assert isinstance(message, EmailMessage)
    assert message["From"].addresses[0].display_name == SENDER_NAME
    assert message["From"].addresses[0].addr_spec == "reports@shop.example"
    assert parts(message) == [
        (0, "multipart/mixed"),
        (1, "multipart/alternative"),
        (2, "text/plain"),
        (2, "multipart/related"),
        (3, "text/html"),
        (3, "image/png"),
        (1, "text/csv"),
    ]
    text = message.get_body(("plain",)).get_content().replace("\r\n", "\n")  # SMTP's line ends
    html = message.get_body(("html",)).get_content()
    [image] = [p for p in message.walk() if p.get_content_type() == "image/png"]
    assert image.get_content().startswith(b"\x89PNG\r\n\x1a\n")
    assert f'src="cid:{image["Content-ID"].strip("<>")}"' in html
    assert not any(token in html.lower() for token in ("<script", "<link", "<style", "http://", "https://"))

    orders, units, cents = totals(today)
    p_orders, p_units, p_cents = totals(sales_api.orders[PREVIOUS])
    assert cents >= 1_000_00  # thousands: the separators show
    for body in (text, html):
        assert f"{orders:,}" in body and f"{units:,}" in body and usd(cents) in body
        assert change(orders, p_orders) in body and change(units, p_units) in body and change(cents, p_cents, revenue=True) in body
        assert change(orders, 150) in body and change(units, 400) in body and change(cents, 2000005, revenue=True) in body
    assert change(orders, 150).startswith("-") and change(orders, p_orders).startswith("+")  # both signs are exercised
    assert f"Revenue: {usd(cents)}" in text
    assert f"Compared with the previous day (Wednesday, {PREVIOUS}):" in text
    assert f"Compared with the same weekday a week earlier (Thursday, {WEEK_EARLIER}):" in text

    by_region: dict[str, list[dict]] = defaultdict(list)
    for o in today:
        by_region[o["region"]].append(o)
    for region, its_orders in by_region.items():
        r_orders, r_units, r_cents = totals(its_orders)
        assert f"{usd(r_cents)} ({r_orders:,} orders, {r_units:,} units)" in text
        escaped = region.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        assert f">{escaped}</td>" in html and f">{usd(r_cents)}</td>" in html
    assert "Øst & <Co>" not in html
    assert "Top products by revenue:\n  1. Gizmo: " in text  # the 120.10 gizmo leads
    assert f"  Wed {PREVIOUS}  {usd(p_cents)}" in text and "no report" in text  # the 14 days, most without a report


def test_without_history_there_is_no_chart_and_no_numbers_to_compare(report_env, sales_api, dagster_instance):
    sales_api.orders[DAY] = make_orders(DAY, 40)
    result = run_daily(definitions(), dagster_instance, DAY)
    assert result.success, failure_message(result)
    [eml] = outbox(report_env)
    message = message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert isinstance(message, EmailMessage)
    assert [t for _, t in parts(message)] == ["multipart/mixed", "multipart/alternative", "text/plain", "text/html", "text/csv"]
    text, html = message.get_body(("plain",)).get_content(), message.get_body(("html",)).get_content()
    assert f"Compared with the previous day (Wednesday, {PREVIOUS}): no report for that day" in text
    assert f"Compared with the same weekday a week earlier (Thursday, {WEEK_EARLIER}): no report for that day" in text
    assert html.count("no report for that day") == 2
    assert "cid:" not in html and "last 14 days" not in text + html and "chart" not in text.lower()
    assert str(message["From"]) == "Sales reports <reports@shop.example>"
    assert materialization(result, "sales_report_email")["chart"] is False


def test_reconciliation_fails_on_a_tampered_csv_and_blocks_the_email(report_env, sales_api, dagster_instance, monkeypatch):
    from ecosystem_assets.sales import report

    sales_api.orders[DAY] = make_orders(DAY, 40)
    write = report.summary_csv_bytes

    def tampered(table):  # the published file loses a cent on its first row
        data = write(table).decode().splitlines()
        fields = data[1].split(",")
        fields[-1] = str(Decimal(fields[-1]) - Decimal("0.01"))
        return "\n".join([data[0], ",".join(fields), *data[2:]]).encode() + b"\n"

    monkeypatch.setattr(report, "summary_csv_bytes", tampered)
    result = run_daily(definitions(), dagster_instance, DAY)
    assert not result.success
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == "summary_matches_raw_orders"]
    meta = {k: v.value for k, v in check.metadata.items()}
    assert not check.passed
    assert meta["csv_revenue_cents"] == meta["raw_revenue_cents"] - 1 == totals(sales_api.orders[DAY])[2] - 1
    assert meta["csv_orders"] == meta["raw_orders"] == 40
    assert "revenue_cents" in (check.description or "")
    assert outbox(report_env) == []  # blocking: the wrong report was not sent

    monkeypatch.setattr(report, "summary_csv_bytes", write)
    again = run_daily(definitions(), dagster_instance, DAY)
    assert again.success, failure_message(again)
    [check] = [e for e in again.get_asset_check_evaluations() if e.check_name == "summary_matches_raw_orders"]
    assert check.passed and check.metadata["csv_revenue"].value == check.metadata["raw_revenue"].value


def test_freshness_warns_until_yesterdays_email_is_sent(report_env, sales_api, dagster_instance, monkeypatch):
    from dagster._core.test_utils import freeze_time

    monkeypatch.setenv("REPORT_TIMEZONE", "Asia/Tokyo")
    sales_api.orders[DAY] = make_orders(DAY, 20, offset="+09:00")
    defs = definitions()
    key = dg.AssetCheckKey(dg.AssetKey("sales_report_email"), "freshness_check")
    checks = dg.Definitions.merge(defs, dg.Definitions(jobs=[dg.define_asset_job("freshness", selection=dg.AssetSelection.checks(key))]))

    def evaluate(day: int, hour: int, minute: int) -> dg.AssetCheckEvaluation:
        with freeze_time(datetime(2026, 11, day, hour, minute, tzinfo=ZoneInfo("Asia/Tokyo"))):
            result = checks.resolve_job_def("freshness").execute_in_process(instance=dagster_instance)
        [evaluation] = result.get_asset_check_evaluations()
        assert evaluation.severity == dg.AssetCheckSeverity.WARN
        return evaluation

    late = evaluate(27, 9, 31)  # yesterday's (26th) email is due by 09:30 Tokyo time
    assert not late.passed
    assert (
        late.metadata["dagster/latest_cron_tick_timestamp"].value
        == datetime(2026, 11, 27, 9, 30, tzinfo=ZoneInfo("Asia/Tokyo")).timestamp()
    )

    result = run_daily(defs, dagster_instance, DAY)
    assert result.success, failure_message(result)
    assert evaluate(27, 9, 31).passed
    assert evaluate(28, 9, 29).passed  # before the next deadline, the 26th is still the day judged
    assert not evaluate(28, 9, 31).passed  # the 27th's is now due and was never sent


def test_history_reads_recorded_totals_exactly():
    assert history.totals_from_metadata({"orders": 3, "units": 5, "revenue_cents": 1234, "revenue": 12.34}) == history.DayTotals(3, 5, 1234)
    assert history.totals_from_metadata({"orders": 3, "units": 5, "revenue": "114385.44"}) == history.DayTotals(3, 5, 11438544)
    assert history.totals_from_metadata({"orders": 3, "units": 5, "revenue": 0.29}) == history.DayTotals(3, 5, 29)  # not 28
    assert history.totals_from_metadata({"orders": 3, "units": 5}) is None
    assert history.totals_from_metadata({"orders": True, "units": 5, "revenue_cents": 1}) is None
    assert history.totals_from_metadata({"orders": 3, "units": 5, "revenue": "n/a"}) is None
    day = date(2026, 11, 26)
    assert history.earlier_days(day)[0] == date(2026, 11, 13) and history.earlier_days(day)[-1] == date(2026, 11, 25)
    [previous, week] = history.comparisons(day, {date(2026, 11, 25): history.DayTotals(0, 10, 1000)})
    assert week.totals is None and week.changes(history.DayTotals(1, 1, 1)) == []
    assert [c.percent for c in previous.changes(history.DayTotals(2, 5, 1500))] == [None, -50.0, 50.0]


@pytest.mark.parametrize(
    ("cents", "currency", "signed", "shown"),
    [
        (11438544, "USD", False, "$114,385.44"),
        (-123450, "USD", True, "-$1,234.50"),
        (123450, "USD", True, "+$1,234.50"),
        (0, "USD", True, "$0.00"),
        (11438544, "EUR", False, "€114,385.44"),
        (11438544, "CHF", False, "CHF 114,385.44"),  # no symbol of its own: the code
        (11438500, "JPY", False, "¥114,385"),  # no minor unit
        (11438544, "JPY", False, "¥114,385.44"),  # ... but the amount has cents: never rounded away
    ],
)
def test_money_has_separators_and_the_currency(cents, currency, signed, shown):
    assert money(cents, currency, signed=signed) == shown
