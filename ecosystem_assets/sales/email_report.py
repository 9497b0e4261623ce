"""The morning email's content: plain text, HTML and the revenue chart. No Dagster.

The HTML is built for mail clients, not browsers: nested ``<table>`` layout, every style inline, no
``<style>`` block, no external CSS, scripts, fonts or remote images (Outlook's Word engine, Gmail's
sanitiser and Apple Mail all render it the same). The chart is a PNG carried in the message itself
(``cid:`` reference, multipart/related) and exists only when Dagster holds earlier days. The
plain-text part states the same facts.

Money is integer cents until it is shown; `money` formats it with thousands separators and the
currency's symbol (Babel's CLDR data), or its ISO code when it has no symbol of its own
(``CHF 1,234.50``). Heavy modules (Babel, matplotlib) are imported inside the functions.
"""

from __future__ import annotations

import html
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING

from ecosystem_assets.sales.history import Change, Comparison, DayTotals, comparisons, revenue_series

if TYPE_CHECKING:
    import pandas as pd

LOCALE = "en_US"  # the report's language: separators and symbol placement
TOP_PRODUCTS = 5
CHART_WIDTH, CHART_HEIGHT = 552, 180  # pixels, as shown in the 600 px wide email

_UP, _DOWN, _FLAT = "#1a7f37", "#cf222e", "#57606a"
_FONT = "font-family:Arial,Helvetica,sans-serif;"
_TH = f"{_FONT}font-size:12px;color:#57606a;text-align:left;padding:6px 8px;border-bottom:1px solid #d0d7de;"
_TD = f"{_FONT}font-size:14px;color:#24292f;padding:6px 8px;border-bottom:1px solid #eaeef2;"
_NUM = "text-align:right;white-space:nowrap;"
_H2 = f"{_FONT}font-size:16px;color:#24292f;margin:0;padding:20px 24px 8px 24px;"


def money(cents: int, currency: str, *, signed: bool = False) -> str:
    """``11438544`` → ``$114,385.44`` (USD), ``€114,385.44``, ``CHF 114,385.44``. Amounts are hundredths:
    a currency with fewer decimals shows them only when the amount has some (never rounds)."""
    from babel.numbers import format_currency, get_currency_precision, get_currency_symbol

    digits = get_currency_precision(currency)
    exact = digits >= 2 or cents % 10 ** (2 - digits) == 0
    pattern = "¤#,##0.00" if get_currency_symbol(currency, locale=LOCALE) != currency else "¤¤ #,##0.00"
    text = format_currency(Decimal(cents).scaleb(-2), currency, format=pattern, locale=LOCALE, currency_digits=exact)
    return f"+{text}" if signed and cents > 0 else text


def _count(value: int, *, signed: bool = False) -> str:
    return f"{value:+,}" if signed and value else f"{value:,}"


def _percent(change: Change) -> str:
    percent = change.percent
    if percent is None:
        return "from 0"
    return "0.0%" if change.delta == 0 else f"{percent:+.1f}%"


def change_text(change: Change, currency: str) -> str:
    """``+$1,234.56 (+1.1%)``, ``-12 (-0.8%)``, ``+5 (from 0)``."""
    delta = money(change.delta, currency, signed=True) if change.metric == "revenue" else _count(change.delta, signed=True)
    return f"{delta} ({_percent(change)})"


def _day(day: date) -> str:
    return f"{day:%A}, {day.isoformat()}"


@dataclass(frozen=True)
class InlineImage:
    """A PNG carried in the message, shown by the HTML part as ``<img src="cid:{cid}">``."""

    cid: str  # without angle brackets
    data: bytes


@dataclass(frozen=True)
class ReportEmail:
    subject: str
    text: str
    html: str
    images: tuple[InlineImage, ...]

    @property
    def inline_images(self) -> list[tuple[str, bytes]]:
        """As `MailerResource.send` takes them."""
        return [(image.cid, image.data) for image in self.images]


def build_report_email(
    day: date, cents: pd.DataFrame, history: Mapping[date, DayTotals], currency: str, attachment_name: str
) -> ReportEmail:
    """The day's email from its summary (integer cents per region and product) and the earlier days'
    totals Dagster recorded (``history``; empty: no comparisons' numbers, no chart)."""
    from ecosystem_assets.sales import report

    totals = report.day_totals(cents)
    compared = comparisons(day, history)
    series = revenue_series(day, totals, history)
    has_history = any(value is not None for _, value in series[:-1])
    chart = InlineImage(f"revenue-chart.{uuid.uuid4().hex}@sales-report", revenue_chart_png(series, currency)) if has_history else None
    regions, products = report.region_totals(cents), report.top_products(cents, TOP_PRODUCTS)
    top = [(str(r.product), int(r.orders), int(r.units), int(r.revenue_cents)) for r in products.itertuples(index=False)]
    by_region = [(str(r.region), int(r.orders), int(r.units), int(r.revenue_cents)) for r in regions.itertuples(index=False)]
    return ReportEmail(
        subject=f"Sales summary for {day.isoformat()}",
        text=_text(day, totals, compared, series if has_history else None, by_region, top, currency, attachment_name),
        html=_html(day, totals, compared, chart, by_region, top, currency, attachment_name),
        images=(chart,) if chart else (),
    )


Row = tuple[str, int, int, int]  # name, orders, units, revenue cents


def _text(
    day: date,
    totals: DayTotals,
    compared: Sequence[Comparison],
    series: Sequence[tuple[date, int | None]] | None,
    by_region: Sequence[Row],
    top: Sequence[Row],
    currency: str,
    attachment_name: str,
) -> str:
    lines = [
        f"Sales summary for {_day(day)}",
        "",
        f"Orders:  {totals.orders:,}",
        f"Units:   {totals.units:,}",
        f"Revenue: {money(totals.revenue_cents, currency)}",
    ]
    for comparison in compared:
        heading = f"Compared with the {comparison.label} ({_day(comparison.day)})"
        changes = comparison.changes(totals)
        if not changes:
            lines += ["", f"{heading}: no report for that day"]
            continue
        lines += ["", f"{heading}:"]
        lines += [f"  {c.metric.capitalize() + ':':<9}{change_text(c, currency)}" for c in changes]
    if not by_region:
        lines += ["", f"No orders were recorded on {day.isoformat()}. The attached summary is empty (header only)."]
    else:
        lines += ["", "Revenue by region:"]
        width = max(len(name) for name, *_ in by_region)
        for name, orders, units, cents in by_region:
            lines.append(f"  {name:<{width}}  {money(cents, currency)} ({orders:,} orders, {units:,} units)")
        lines += ["", "Top products by revenue:"]
        for rank, (name, orders, units, cents) in enumerate(top, start=1):
            lines.append(f"  {rank}. {name}: {money(cents, currency)} ({units:,} units, {orders:,} orders)")
    if series is not None:
        lines += ["", f"Revenue, last {len(series)} days:"]
        lines += [f"  {d:%a} {d.isoformat()}  {money(c, currency) if c is not None else 'no report'}" for d, c in series]
    lines += ["", f"The full summary by region and product is attached as CSV ({attachment_name})."]
    return "\n".join(lines) + "\n"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _color(delta: int) -> str:
    return _UP if delta > 0 else _DOWN if delta < 0 else _FLAT


def _section(title: str, body: str) -> str:
    return f'<tr><td style="{_H2}"><strong>{_e(title)}</strong></td></tr><tr><td style="padding:0 24px 8px 24px;">{body}</td></tr>'


Cell = tuple[str, bool, str]  # html, numeric, extra style


def _cell(cell: Cell, span: int) -> str:
    html_text, numeric, extra = cell
    colspan = f' colspan="{span}"' if span > 1 else ""
    return f'<td{colspan} style="{_TD}{_NUM if numeric else ""}{extra}">{html_text}</td>'


def _table(headers: Sequence[tuple[str, bool]], rows: Sequence[Sequence[Cell]]) -> str:
    """headers: (text, numeric); rows of cells; a row with fewer cells lets its last one span the rest."""
    head = "".join(f'<th style="{_TH}{_NUM if numeric else ""}">{_e(text)}</th>' for text, numeric in headers)
    body = "".join(
        "<tr>" + "".join(_cell(cell, 1 + (len(headers) - len(row) if i == len(row) - 1 else 0)) for i, cell in enumerate(row)) + "</tr>"
        for row in rows
    )
    return (
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0" '
        f'style="border-collapse:collapse;width:100%;"><tr>{head}</tr>{body}</table>'
    )


def _html(
    day: date,
    totals: DayTotals,
    compared: Sequence[Comparison],
    chart: InlineImage | None,
    by_region: Sequence[Row],
    top: Sequence[Row],
    currency: str,
    attachment_name: str,
) -> str:
    figures = "".join(
        f'<td width="33%" valign="top" style="padding:12px 8px;background-color:#f6f8fa;border:1px solid #eaeef2;">'
        f'<div style="{_FONT}font-size:12px;color:#57606a;">{label}</div>'
        f'<div style="{_FONT}font-size:22px;font-weight:bold;color:#24292f;white-space:nowrap;">{_e(value)}</div></td>'
        for label, value in (
            ("Orders", f"{totals.orders:,}"),
            ("Units", f"{totals.units:,}"),
            ("Revenue", money(totals.revenue_cents, currency)),
        )
    )
    sections = [
        f'<tr><td style="padding:16px 24px 4px 24px;"><table role="presentation" width="100%" cellpadding="0" cellspacing="6" '
        f'border="0" style="width:100%;"><tr>{figures}</tr></table></td></tr>'
    ]
    rows: list[list[Cell]] = []
    for comparison in compared:
        label = f'{_e(comparison.label.capitalize())}<br><span style="font-size:12px;color:#57606a;">{_e(_day(comparison.day))}</span>'
        changes = comparison.changes(totals)
        if not changes:
            rows.append([(label, False, ""), ("no report for that day", False, f"color:{_FLAT};font-style:italic;")])
            continue
        rows.append([(label, False, "")] + [(_e(change_text(c, currency)), True, f"color:{_color(c.delta)};") for c in changes])
    head = [("Compared with", False), ("Orders", True), ("Units", True), ("Revenue", True)]
    sections.append(_section("Change", _table(head, rows)))  # a missing day's note spans the number columns
    if chart is not None:
        image = (
            f'<img src="cid:{_e(chart.cid)}" width="{CHART_WIDTH}" height="{CHART_HEIGHT}" alt="Revenue of the last 14 days, bar chart" '
            f'style="display:block;border:0;outline:none;width:100%;max-width:{CHART_WIDTH}px;height:auto;">'
        )
        sections.append(_section("Revenue, last 14 days", image))
    if not by_region:
        sections.append(
            _section("Orders", f'<p style="{_FONT}font-size:14px;margin:0;">No orders were recorded on {_e(day.isoformat())}.</p>')
        )
    else:
        total = totals.revenue_cents or 1
        region_rows = [
            [
                (_e(name), False, ""),
                (_e(f"{orders:,}"), True, ""),
                (_e(f"{units:,}"), True, ""),
                (_e(money(cents, currency)), True, ""),
                (_e(f"{cents * 100 / total:.1f}%"), True, "color:#57606a;"),
            ]
            for name, orders, units, cents in by_region
        ]
        sections.append(
            _section(
                "By region", _table([("Region", False), ("Orders", True), ("Units", True), ("Revenue", True), ("Share", True)], region_rows)
            )
        )
        product_rows = [
            [
                (str(rank), False, "color:#57606a;"),
                (_e(name), False, ""),
                (_e(f"{orders:,}"), True, ""),
                (_e(f"{units:,}"), True, ""),
                (_e(money(cents, currency)), True, ""),
            ]
            for rank, (name, orders, units, cents) in enumerate(top, start=1)
        ]
        sections.append(
            _section(
                "Top products by revenue",
                _table([("#", False), ("Product", False), ("Orders", True), ("Units", True), ("Revenue", True)], product_rows),
            )
        )
    footer = (
        f'<tr><td style="{_FONT}font-size:12px;color:#57606a;padding:16px 24px 24px 24px;">'
        f"The full summary by region and product is attached as CSV ({_e(attachment_name)}).</td></tr>"
    )
    title = f"Sales summary for {day.isoformat()}"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title></head>"
        '<body style="margin:0;padding:0;background-color:#f4f5f7;">'
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0" style="background-color:#f4f5f7;">'
        '<tr><td align="center" style="padding:24px 12px;">'
        '<table role="presentation" width="600" cellpadding="0" cellspacing="0" border="0" '
        'style="width:600px;max-width:600px;background-color:#ffffff;border:1px solid #d0d7de;">'
        f'<tr><td style="{_FONT}background-color:#0b3d91;color:#ffffff;padding:20px 24px;">'
        f'<div style="font-size:20px;font-weight:bold;">Sales summary</div>'
        f'<div style="font-size:14px;">{_e(_day(day))}</div></td></tr>'
        + "\n".join(sections)
        + footer
        + "</table></td></tr></table></body></html>\n"
    )


def revenue_chart_png(series: Sequence[tuple[date, int | None]], currency: str) -> bytes:
    """Bars of the daily revenue (the last day highlighted; a day without a report has no bar), as PNG."""
    import io

    from babel.numbers import format_compact_currency
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    dpi = 100
    figure = Figure(figsize=(CHART_WIDTH / dpi, CHART_HEIGHT / dpi), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positions = range(len(series))
    heights = [(cents or 0) / 100 for _, cents in series]
    colors = ["#0b3d91" if i == len(series) - 1 else "#8fb3e8" for i in positions]
    axes.bar(positions, heights, color=colors, width=0.7)
    for i, (_, cents) in enumerate(series):
        if cents is None:
            axes.text(i, 0, "–", ha="center", va="bottom", fontsize=8, color="#8c959f")
    axes.set_xticks(list(positions), [f"{d:%a}\n{d.day}" for d, _ in series], fontsize=7, color="#57606a")
    axes.yaxis.set_major_formatter(FuncFormatter(lambda v, _: format_compact_currency(v, currency, locale=LOCALE, fraction_digits=0)))
    axes.tick_params(axis="y", labelsize=7, colors="#57606a", length=0)
    axes.tick_params(axis="x", length=0)
    axes.grid(axis="y", color="#eaeef2", linewidth=0.8)
    axes.set_axisbelow(True)
    for side in ("top", "right", "left"):
        axes.spines[side].set_visible(False)
    axes.spines["bottom"].set_color("#d0d7de")
    figure.tight_layout(pad=0.4)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()
