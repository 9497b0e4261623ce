"""Sales report assets: raw orders → quality gate → summary CSV → email. Thin Dagster wiring.

pandas-based modules are imported inside the assets: the code location must load fast.
"""

import io
from datetime import date

import dagster as dg

from ecosystem_assets.resources.mail import MailDeliveryError, MailerResource
from ecosystem_assets.resources.sales_api import SalesApiError, SalesApiResource, SalesApiUnavailable
from ecosystem_assets.resources.storage import ArtifactStorage
from ecosystem_assets.sales.checks import validate_orders

QUALITY_CHECK = "orders_pass_quality_gate"


def raw_key(day: date) -> str:
    return f"sales/raw/{day.isoformat()}.parquet"


def summary_key(day: date) -> str:
    return f"sales/summary/{day.isoformat()}.csv"


def _partition(context: dg.AssetExecutionContext):
    window = context.partition_time_window
    return date.fromisoformat(context.partition_key), window.start, window.end


def build_sales_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The three sales assets on ``partitions`` (daily, in the report's time zone)."""

    @dg.asset(
        group_name="sales",
        partitions_def=partitions,
        kinds={"python", "parquet"},
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
    def raw_sales(context: dg.AssetExecutionContext, sales_api: SalesApiResource, storage: ArtifactStorage):
        """Every order of the partition's day from the sales API (or the demo feed), as Parquet.

        Pages are fetched until ``next_page`` is null; records repeated identically across pages
        (pagination overlap) are dropped and counted. The day's orders are then gated; a failing
        gate stops the summary and the email, and the offending rows are shown on the check.
        """
        from ecosystem_assets.sales.orders import drop_identical_duplicates, orders_frame

        day, start, end = _partition(context)
        try:
            records, pages = sales_api.fetch_orders(day, log=context.log)
        except (SalesApiError, SalesApiUnavailable) as exc:
            raise dg.Failure(description=str(exc)) from None
        frame, duplicates = drop_identical_duplicates(orders_frame(records))
        gate = validate_orders(frame, start, end)
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        uri = storage.store.write_bytes(raw_key(day), buffer.getvalue())
        yield dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(uri),
                "source": sales_api.source,
                "orders": dg.MetadataValue.int(len(frame)),
                "pages": dg.MetadataValue.int(pages),
                "duplicates_dropped": dg.MetadataValue.int(duplicates),
                "preview": dg.MetadataValue.md(frame.head(10).to_markdown(index=False)),
            }
        )
        yield gate.check_result(check_name=QUALITY_CHECK, asset_key="raw_sales")

    @dg.asset(group_name="sales", partitions_def=partitions, deps=[raw_sales], kinds={"duckdb", "csv"})
    def sales_summary_csv(context: dg.AssetExecutionContext, storage: ArtifactStorage) -> dg.MaterializeResult:
        """The day's summary by region and product (orders, units, revenue), as CSV for the sales team.

        The gate is run again before writing: even when this asset is materialized on its own, a
        day that fails the gate is never published.
        """
        import pandas as pd

        from ecosystem_assets.sales import report

        day, start, end = _partition(context)
        with storage.store.local_copy(raw_key(day)) as raw_path:
            gate = validate_orders(pd.read_parquet(raw_path), start, end)
            if not gate.success:
                raise dg.Failure(description=f"not publishing the summary for {day}: {gate.summary()}", metadata=gate.metadata())
            cents = report.summarize_parquet(str(raw_path))
        table = report.summary_table(cents)
        uri = storage.store.write_bytes(summary_key(day), report.summary_csv_bytes(table))
        totals = report.day_totals(cents)
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(uri),
                "rows": dg.MetadataValue.int(len(table)),
                "orders": dg.MetadataValue.int(totals.orders),
                "units": dg.MetadataValue.int(totals.units),
                "revenue": totals.revenue,
                "preview": dg.MetadataValue.md(table.head(20).to_markdown(index=False) if len(table) else "_no orders_"),
            }
        )

    @dg.asset(group_name="sales", partitions_def=partitions, deps=[sales_summary_csv], kinds={"email"})
    def sales_report_email(
        context: dg.AssetExecutionContext, storage: ArtifactStorage, mailer: MailerResource
    ) -> dg.MaterializeResult:
        """The morning email to the sales team: totals, top five products, the summary CSV attached.

        Reads the published CSV, so re-materializing this asset alone re-sends the same report.
        """
        from ecosystem_assets.sales import report

        day, _, _ = _partition(context)
        csv_bytes = storage.store.read_bytes(summary_key(day))
        cents = report.cents_from_summary_csv(csv_bytes)
        subject = f"Sales summary for {day.isoformat()}"
        try:
            sent = mailer.send(
                subject, report.email_body(day.isoformat(), cents), f"sales-summary-{day.isoformat()}.csv", csv_bytes, log=context.log
            )
        except MailDeliveryError as exc:
            raise dg.Failure(
                description=f"{exc}. The summary CSV is kept at {storage.store.uri(summary_key(day))}; "
                "re-materialize sales_report_email to send it again."
            ) from None
        return dg.MaterializeResult(
            metadata={
                "message_id": sent.message_id,
                "recipients": ", ".join(sent.recipients),
                "sender": sent.sender,
                "subject": sent.subject,
                "sent_at": sent.sent_at,
                "transport": sent.transport,
                "attempts": dg.MetadataValue.int(sent.attempts),
                "attachment_bytes": dg.MetadataValue.int(len(csv_bytes)),
            }
        )

    return [raw_sales, sales_summary_csv, sales_report_email]
