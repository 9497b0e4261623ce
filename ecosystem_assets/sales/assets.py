"""Sales report assets: raw orders → quality gate → summary CSV → email. Thin Dagster wiring.

Every file is written under a key that contains the run id (`lineage.run_key`) and recorded in the
materialization (`lineage.STORAGE_KEY`); a downstream asset reads the key of the upstream
materialization its run made, else the latest one that passed its blocking checks (`lineage.upstream_partitions`). Two runs of the
same day at once therefore never read each other's files, and the email attaches exactly the
summary its run's lineage points to.

The gate runs *before* the day's raw Parquet is written (write-audit-publish inside `raw_sales`): a
fetch that fails it records no raw_sales materialization, so the last good raw file stays the one
every reader picks, and its rows go to a quarantine copy named with the run id instead.

The asset bodies are module-level functions; only the daily partitions (in the report's time zone,
from the settings) are applied when the definitions are built (`sales_assets`). pandas-based modules
are imported inside the functions: the code location must load fast.
"""

# No `from __future__ import annotations`: Dagster reads the `context` annotation at definition time.
from collections.abc import Callable, Iterator
from datetime import date, datetime
from typing import Any

import dagster as dg
from pydantic import Field

from ecosystem_assets import lineage
from ecosystem_assets.asset_metadata import table_metadata, table_preview
from ecosystem_assets.quality import QualityReport
from ecosystem_assets.resources.mail import MailDeliveryError, MailerResource
from ecosystem_assets.resources.report_format import ReportFormat
from ecosystem_assets.resources.sales_api import SalesApiError, SalesApiResource, SalesApiUnavailable
from ecosystem_assets.resources.storage import ArtifactStorage
from ecosystem_assets.sales.checks import validate_orders

QUALITY_CHECK = "orders_pass_quality_gate"
OWNERS = ["team:sales-analytics"]
# Code versions: bump an asset's when its logic changes, so Dagster marks what it made as stale.
RAW_SALES_CODE_VERSION = "1"
SUMMARY_CODE_VERSION = "1"
EMAIL_CODE_VERSION = "1"

_SALES_ASSETS: list[tuple[Callable[..., Any], dict[str, Any]]] = []


def _sales_asset(**spec: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Record a module-level asset body with its `dg.asset` arguments; `sales_assets` adds the partitions."""

    def record(fn: Callable[..., Any]) -> Callable[..., Any]:
        _SALES_ASSETS.append((fn, spec))
        return fn

    return record


def sales_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The sales assets on ``partitions`` (daily, in the report's time zone: the one thing settings change)."""
    return [dg.asset(group_name="sales", owners=OWNERS, partitions_def=partitions, **spec)(fn) for fn, spec in _SALES_ASSETS]


def _partition(context: dg.AssetExecutionContext) -> tuple[date, datetime, datetime]:
    window = context.partition_time_window
    return date.fromisoformat(context.partition_key), window.start, window.end


def _read(context: dg.AssetExecutionContext, upstream_asset: str) -> lineage.Upstream:
    """This partition's materialization of ``upstream_asset`` that this step reads (this run's, else the latest that passed its blocking checks);
    a partition never materialized fails naming the asset and partition to materialize first."""
    day = context.partition_key
    try:
        return lineage.upstream_partitions(context, upstream_asset, [day])[day]
    except lineage.MissingUpstream as exc:
        if exc.refused:  # materialized, but refused by its gate: lineage's message names the check
            raise
        raise dg.Failure(
            description=f"{upstream_asset} has no materialization for {day}: materialize {upstream_asset} for {day} first"
        ) from None


def _read_bytes(storage: ArtifactStorage, source: lineage.Upstream) -> bytes:
    """The file ``source`` recorded; one deleted since fails naming what to re-materialize, not a storage trace."""
    from ecosystem_assets.storage import StorageError

    asset, day = source.asset_key.to_user_string(), source.partition
    try:
        return storage.store.read_bytes(source.storage_key)
    except StorageError as exc:
        raise dg.Failure(
            description=f"{asset} for {day} (run {source.run_id}) recorded {storage.store.uri(source.storage_key)}, "
            f"which cannot be read ({exc}): materialize {asset} for {day} again first"
        ) from None


def _quarantined(gate: QualityReport, uri: str, key: str, fetched: dict[str, Any]) -> dg.AssetCheckEvaluation:
    """The failed gate as a check evaluation with no target materialization: the orders it judged were
    never published, and an `AssetCheckResult` would attach it to the previous (good) materialization."""
    return dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey("raw_sales"),
        check_name=QUALITY_CHECK,
        passed=False,
        severity=dg.AssetCheckSeverity.ERROR,
        blocking=True,
        description=gate.summary(),
        metadata={**gate.metadata(), **fetched, "quarantine_key": key, "quarantine_path": dg.MetadataValue.path(uri)},
        target_materialization_data=None,
    )


@_sales_asset(
    kinds={"python", "parquet"},
    code_version=RAW_SALES_CODE_VERSION,
    check_specs=[
        dg.AssetCheckSpec(
            QUALITY_CHECK,
            asset="raw_sales",
            blocking=True,
            description="Great Expectations gate: schema, non-null, unique order_id, quantity ≥ 1, "
            "unit_price ≥ 0, ordered_at inside the partition's day. Blocks the summary and the email.",
        )
    ],
)
def raw_sales(context: dg.AssetExecutionContext, sales_api: SalesApiResource, storage: ArtifactStorage) -> Iterator[Any]:
    """Every order of the partition's day from the sales API (or the demo feed), as Parquet.

    Pages are fetched until ``next_page`` is null; records repeated identically across pages
    (pagination overlap) are dropped and counted. The day's orders are gated before anything is
    written: orders that fail are not materialized (the last good raw file stays current) but
    quarantined at ``sales/quarantine/<day>/<run id>.parquet``, and the failed check shows the
    failed expectations, counts, offending rows and that key. A failing gate stops the summary and the email.
    """
    from ecosystem_assets.sales.orders import drop_identical_duplicates, orders_frame
    from ecosystem_assets.storage import write_parquet

    day, start, end = _partition(context)
    try:
        records, pages = sales_api.fetch_orders(day, log=context.log)
    except (SalesApiError, SalesApiUnavailable) as exc:
        raise dg.Failure(description=str(exc)) from None
    frame, duplicates = drop_identical_duplicates(orders_frame(records))
    fetched: dict[str, Any] = {
        "source": sales_api.source,
        "orders": dg.MetadataValue.int(len(frame)),
        "pages": dg.MetadataValue.int(pages),
        "duplicates_dropped": dg.MetadataValue.int(duplicates),
        "preview": table_preview(frame, 10),
    }
    gate = validate_orders(frame, start, end)
    if not gate.success:
        key = f"sales/quarantine/{day.isoformat()}/{context.run.run_id}.parquet"
        uri = write_parquet(storage.store, key, frame)
        yield _quarantined(gate, uri, key, fetched)
        raise dg.Failure(
            description=f"raw_sales for {day} not published: {gate.summary()}. The fetched orders are quarantined at "
            f"{uri}; the day's last good raw data stays the one downstream assets read.",
            metadata={"quarantine_key": key},
        )
    key = lineage.run_key("sales/raw", context.run.run_id, f"{day.isoformat()}.parquet")
    uri = write_parquet(storage.store, key, frame)
    yield dg.MaterializeResult(
        metadata={lineage.STORAGE_KEY: key, "path": dg.MetadataValue.path(uri), **fetched, **table_metadata(frame, preview_rows=10)}
    )
    yield gate.check_result(check_name=QUALITY_CHECK, asset_key="raw_sales")


RECONCILIATION_CHECK = "summary_matches_raw_orders"


@_sales_asset(
    deps=["raw_sales"],
    kinds={"duckdb", "csv"},
    code_version=SUMMARY_CODE_VERSION,
    # The summary follows its orders: when raw_sales of the latest day is materialized again outside
    # the daily job (a manual re-fetch), the summary is rebuilt by the automation sensor. Cheap, no side
    # effects, and gated again inside. The email is not automated (it sends mail; resends are explicit).
    automation_condition=dg.AutomationCondition.eager(),
    check_specs=[
        dg.AssetCheckSpec(
            RECONCILIATION_CHECK,
            asset="sales_summary_csv",
            # Blocking: the email states these totals. A summary that does not add up to the orders it
            # was built from is a wrong report, and the sales team must not get it; the CSV stays
            # inspectable beside the check's metadata (both sides' totals).
            blocking=True,
            description="The published CSV's totals (orders, units, revenue to the cent), read back from storage, "
            "equal those of the gated raw orders it was built from, recomputed independently with pandas over the "
            "raw Parquet (not the DuckDB query). Blocks the email.",
        )
    ],
)
def sales_summary_csv(context: dg.AssetExecutionContext, storage: ArtifactStorage) -> Iterator[Any]:
    """The day's summary by region and product (orders, units, revenue), as CSV for the sales team.

    Summarises the raw_sales materialization of this run (else the latest one that passed its blocking checks). The gate is run
    again on those orders before writing: even when this asset is materialized on its own, a day
    that fails the gate is never published. Records the day's totals (``orders``, ``units``,
    ``revenue_cents`` exact, ``revenue`` as a number the UI plots across partitions): the email's
    comparisons and chart read them back from here.
    """
    from ecosystem_assets.sales import report
    from ecosystem_assets.storage import read_parquet

    day, start, end = _partition(context)
    raw = _read(context, "raw_sales")
    orders = read_parquet(storage.store, raw.storage_key)
    gate = validate_orders(orders, start, end)
    if not gate.success:
        raise dg.Failure(
            description=f"not publishing the summary for {day} (raw_sales of run {raw.run_id}): {gate.summary()}",
            metadata={**gate.metadata(), **lineage.lineage_metadata(raw)},
        )
    # DuckDB scans the Parquet file itself (only the four columns it sums). The key is run-scoped
    # and never rewritten, so this second read sees the same orders the gate passed.
    with storage.store.local_copy(raw.storage_key) as raw_path:
        cents = report.summarize_parquet(str(raw_path))
    table = report.summary_table(cents)
    key = lineage.run_key("sales/summary", context.run.run_id, f"{day.isoformat()}.csv")
    uri = storage.store.write_bytes(key, report.summary_csv_bytes(table))
    totals = report.day_totals(cents)
    yield dg.MaterializeResult(
        metadata={
            lineage.STORAGE_KEY: key,
            "path": dg.MetadataValue.path(uri),
            "rows": dg.MetadataValue.int(len(table)),
            "orders": dg.MetadataValue.int(totals.orders),
            "units": dg.MetadataValue.int(totals.units),
            "revenue_cents": dg.MetadataValue.int(totals.revenue_cents),
            "revenue": dg.MetadataValue.float(round(totals.revenue_cents / 100, 2)),
            **table_metadata(table, preview_rows=20),
            **lineage.lineage_metadata(raw),
        }
    )
    # The CSV as published (read back from storage) against the raw orders, summed by pandas.
    yield _reconciliation(report.totals_of_summary_csv(storage.store.read_bytes(key)), report.raw_totals(orders))


def _reconciliation(published: Any, raw: Any) -> dg.AssetCheckResult:
    """Compare the published CSV's totals with the raw orders' (`report.DayTotals` both)."""
    fields = ("orders", "units", "revenue_cents")
    differ = [f for f in fields if getattr(published, f) != getattr(raw, f)]
    metadata: dict[str, Any] = {}
    for side, totals in (("csv", published), ("raw", raw)):
        metadata.update({f"{side}_{f}": dg.MetadataValue.int(getattr(totals, f)) for f in fields})
        metadata[f"{side}_revenue"] = totals.revenue
    description = (
        "the CSV's orders, units and revenue equal the raw orders' to the cent"
        if not differ
        else "the CSV does not add up to the raw orders it was built from: "
        + "; ".join(f"{f} {getattr(published, f)} in the CSV vs {getattr(raw, f)} in the raw orders" for f in differ)
    )
    return dg.AssetCheckResult(
        check_name=RECONCILIATION_CHECK,
        asset_key="sales_summary_csv",
        passed=not differ,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata=metadata,
    )


class SalesReportEmailConfig(dg.Config):
    resend: bool = Field(
        default=False,
        description="Send the day's email although it was sent already (or a run died while sending it). "
        "The materialization says so (resend: true, with the message it repeats).",
    )


def _run_has_ended(instance: dg.DagsterInstance) -> Callable[[str], bool]:
    def ended(run_id: str) -> bool:
        run = instance.get_run_by_id(run_id)
        return run is None or run.is_finished  # a run this instance does not know cannot finish a send

    return ended


def _history(instance: dg.DagsterInstance, day: date) -> dict[date, Any]:
    """The totals of the days before ``day`` the email shows (`history.earlier_days`): the metadata of the
    latest sales_summary_csv materialization of each of those partitions in the instance. A day never
    summarised, or whose materialization records no totals, is absent."""
    from ecosystem_assets.sales.history import earlier_days, totals_from_metadata

    key = dg.AssetKey("sales_summary_csv")
    wanted = {d.isoformat(): d for d in earlier_days(day)}
    latest = instance.get_latest_storage_id_by_partition(key, dg.DagsterEventType.ASSET_MATERIALIZATION, set(wanted))
    if not latest:
        return {}
    records = instance.fetch_materializations(dg.AssetRecordsFilter(key, storage_ids=list(latest.values())), limit=len(latest)).records
    found: dict[date, Any] = {}
    for record in records:
        materialization = record.asset_materialization
        if materialization is None or materialization.partition not in wanted:
            continue
        totals = totals_from_metadata({k: v.value for k, v in materialization.metadata.items()})
        if totals is not None:
            found[wanted[materialization.partition]] = totals
    return found


@_sales_asset(deps=["sales_summary_csv"], kinds={"email"}, code_version=EMAIL_CODE_VERSION)
def sales_report_email(
    context: dg.AssetExecutionContext,
    config: SalesReportEmailConfig,
    storage: ArtifactStorage,
    mailer: MailerResource,
    report_format: ReportFormat,
) -> dg.MaterializeResult:
    """The morning email to the sales team: an HTML email (with a plain-text part) of the day's totals,
    their change against the previous day and the same weekday a week earlier, totals by region, the
    top five products and a chart of the last 14 days' revenue; the summary CSV attached.

    The earlier days come from Dagster: the latest sales_summary_csv materialization of each earlier
    partition (its recorded totals). Days without one show as "no report for that day"; with none at
    all, the chart is left out. Amounts are in REPORT_CURRENCY.

    Sent once per day: the run that creates the day's sent-record (``sales/sent/<day>.json``,
    create-if-absent) sends; any other run of the day records who sent it, and sends nothing
    (`sales.delivery`). ``resend: true`` sends again on purpose. Attaches the sales_summary_csv
    materialization of this run (else the latest one that passed its blocking checks).
    """
    from ecosystem_assets.sales import delivery, report
    from ecosystem_assets.sales.email_report import build_report_email

    day, _, _ = _partition(context)
    summary = _read(context, "sales_summary_csv")
    csv_bytes = _read_bytes(storage, summary)
    cents = report.cents_from_summary_csv(csv_bytes)
    store, run_id = storage.store, context.run.run_id
    record_uri = dg.MetadataValue.path(store.uri(delivery.record_key(day.isoformat())))
    try:
        claim = delivery.claim(store, day.isoformat(), run_id, resend=config.resend, run_has_ended=_run_has_ended(context.instance))
    except delivery.DeliveryRecordError as exc:
        raise dg.Failure(description=str(exc)) from None
    if claim.mine is None:
        assert claim.previous is not None  # the sent record
        context.log.info(f"the email for {day} was sent by run {claim.previous.run_id}; not sending it again")
        return dg.MaterializeResult(
            metadata={
                "sent": False,
                "sent_by_run": claim.previous.run_id,
                "message_id": claim.previous.message_id or "",
                "sent_at": claim.previous.sent_at or "",
                "sent_record": record_uri,
                **lineage.lineage_metadata(summary),
            }
        )
    attachment_name = f"sales-summary-{day.isoformat()}.csv"
    history = _history(context.instance, day)
    email = build_report_email(day, cents, history, report_format.currency, attachment_name)
    try:
        sent = mailer.send(
            email.subject, email.text, attachment_name, csv_bytes, log=context.log, html=email.html, images=email.inline_images
        )
    except MailDeliveryError as exc:
        delivery.release(store, day.isoformat(), run_id)
        raise dg.Failure(
            description=f"{exc}. The summary CSV is kept at {store.uri(summary.storage_key)}; "
            "re-materialize sales_report_email to send it again."
        ) from None
    delivery.record_sent(store, claim.mine, sent.message_id, sent.sent_at, sent.transport)
    resent: dict[str, Any] = {"resend": config.resend}
    if claim.previous is not None:  # the message this one repeats
        resent["resent_message_id"] = claim.previous.message_id or ""
    return dg.MaterializeResult(
        metadata={
            "sent": True,
            **resent,
            "message_id": sent.message_id,
            "recipients": ", ".join(sent.recipients),
            "sender": sent.sender,
            "subject": sent.subject,
            "sent_at": sent.sent_at,
            "transport": sent.transport,
            "attempts": dg.MetadataValue.int(sent.attempts),
            "attachment_bytes": dg.MetadataValue.int(len(csv_bytes)),
            "history_days": dg.MetadataValue.int(len(history)),  # earlier days with totals (comparisons, chart)
            "chart": bool(email.images),
            "sent_record": record_uri,
            **lineage.lineage_metadata(summary),
        }
    )
