"""Helpers to run the sales job the way Dagster does, on a real instance."""

from __future__ import annotations

import email
from email.message import Message
from pathlib import Path
from typing import Any

import dagster as dg

from ecosystem_assets.lineage import STORAGE_KEY
from ecosystem_assets.project import build_definitions
from ecosystem_assets.sales.schedules import DAILY_JOB
from ecosystem_assets.settings import Settings


def definitions(**resource_overrides: Any) -> dg.Definitions:
    return build_definitions(Settings.from_env(), resource_overrides)


def run_daily(
    defs: dg.Definitions, instance: dg.DagsterInstance, day: str, run_config: dict[str, Any] | None = None
) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def(DAILY_JOB)
    return job.execute_in_process(partition_key=day, instance=instance, raise_on_error=False, run_config=run_config)


def run_assets(
    defs: dg.Definitions, instance: dg.DagsterInstance, day: str, *assets: str, run_config: dict[str, Any] | None = None
) -> dg.ExecuteInProcessResult:
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        partition_key=day,
        instance=instance,
        raise_on_error=False,
        asset_selection=[dg.AssetKey(a) for a in assets],
        run_config=run_config,
    )


RESEND = {"ops": {"sales_report_email": {"config": {"resend": True}}}}  # run config: send the day's email again


def outbox(env: dict[str, str]) -> list[Path]:
    return sorted((Path(env["ECOSYSTEM_HOME"]) / "outbox").glob("*.eml"))


def materialization(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    for event in result.get_asset_materialization_events():
        if event.asset_key == dg.AssetKey(asset):
            return {k: v.value for k, v in event.materialization.metadata.items()}
    raise AssertionError(f"{asset} was not materialized")


def storage_key(result: dg.ExecuteInProcessResult, asset: str) -> str:
    """Where the run wrote ``asset``'s file (its materialization's storage key)."""
    return materialization(result, asset)[STORAGE_KEY]


def local_file(env: dict[str, str], key: str) -> Path:
    """A key's file in the embedded default storage (``$ECOSYSTEM_HOME/storage``)."""
    return Path(env["ECOSYSTEM_HOME"]) / "storage" / key


def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(str(e.event_specific_data.error.message) for e in result.all_events if e.event_type_value == "STEP_FAILURE")


def parse_eml(path: str | Path) -> Message:
    return email.message_from_bytes(Path(path).read_bytes())


def attachment(message: Message) -> tuple[str, bytes]:
    parts = [p for p in message.walk() if p.get_filename()]
    assert len(parts) == 1, [p.get_filename() for p in parts]
    return parts[0].get_filename(), parts[0].get_payload(decode=True)


def plain_body(message: Message) -> str:
    return next(p for p in message.walk() if p.get_content_type() == "text/plain").get_payload(decode=True).decode()
