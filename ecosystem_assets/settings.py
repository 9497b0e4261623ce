"""Environment variables → typed settings, with the embedded defaults.

This is the one place that reads the process environment. Everything else receives a `Settings`
(domain code) or a configured resource (Dagster code). Secrets are *not* copied here: only whether
they are set, so that resources can be wired with `dg.EnvVar` and the values never enter a config
snapshot, a log line or the UI.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

SMTP_SECURITY_CHOICES = ("none", "starttls", "ssl")


class SettingsError(ValueError):
    """A configuration value is malformed; the message names the variable."""


def secret(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """A secret's value, read when it is needed (never stored in `Settings`); None when unset or blank.
    For code outside Dagster (the fraud service, the CLI); Dagster resources use `dg.EnvVar`."""
    value = (os.environ if environ is None else environ).get(name, "").strip()
    return value or None


def _split_addresses(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    home: Path
    storage_url: str
    sales_api_url: str | None = None
    sales_api_token_set: bool = False
    report_timezone: str = "UTC"
    report_sender: str = "reports@localhost"
    report_recipients: tuple[str, ...] = ("sales-team@localhost",)
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_user: str | None = None
    smtp_password_set: bool = False
    smtp_security: str = "starttls"
    smtp_ca_file: str | None = None
    sales_start_date: str = "2025-01-01"
    image_dataset_url: str | None = None
    mlflow_tracking_uri: str = ""
    fraud_service_url: str | None = None
    fraud_db_url: str = ""
    fraud_precision_threshold: float = 0.80
    fraud_start_date: str = "2025-06-01"
    fraud_drift_from: str | None = None
    fraud_monitoring_cron: str = "0 * * * *"
    fraud_retrain_cooldown_hours: float = 6.0
    fraud_transactions_url: str | None = None
    # The fraud service's bearer tokens: only whether they are set (the service and the resources
    # read the values themselves, through the environment and `dg.EnvVar`).
    fraud_predict_token_set: bool = False
    fraud_feedback_token_set: bool = False
    fraud_max_clock_skew_s: float = 300.0
    fraud_max_amount: float = 1_000_000.0
    fraud_max_predict_bytes: int = 16_384
    fraud_max_history_bytes: int = 16 * 1024 * 1024

    @property
    def outbox_dir(self) -> Path:
        return self.home / "outbox"

    @property
    def mlflow_artifact_location(self) -> str | None:
        """Local tracking stores keep artifacts beside the other files; a tracking server decides itself."""
        if self.mlflow_tracking_uri.startswith(("http://", "https://", "databricks")):
            return None
        return f"{self.storage_url.rstrip('/')}/mlflow-artifacts"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        home = Path(get("ECOSYSTEM_HOME") or "./.ecosystem").expanduser().resolve()
        timezone = get("REPORT_TIMEZONE") or "UTC"
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise SettingsError(f"REPORT_TIMEZONE={timezone!r} is not an IANA time zone") from exc

        security = (get("SMTP_SECURITY") or "starttls").lower()
        if security not in SMTP_SECURITY_CHOICES:
            raise SettingsError(
                f"SMTP_SECURITY={security!r} must be one of {', '.join(SMTP_SECURITY_CHOICES)}"
            )
        port_text = get("SMTP_PORT") or "587"
        if not port_text.isdigit():
            raise SettingsError(f"SMTP_PORT={port_text!r} is not a port number")
        def number(name: str, default: str, kind: type = float, minimum: float = 0.0) -> float:
            text = get(name) or default
            try:
                value = kind(text)
            except ValueError as exc:
                raise SettingsError(f"{name}={text!r} is not {'an integer' if kind is int else 'a number'}") from exc
            if not value >= minimum:  # also refuses NaN
                raise SettingsError(f"{name}={text!r} must be at least {minimum:g}")
            return value

        threshold = number("FRAUD_PRECISION_THRESHOLD", "0.80")

        drift_from = get("FRAUD_DRIFT_FROM")
        if drift_from:
            try:
                date.fromisoformat(drift_from)
            except ValueError as exc:
                raise SettingsError(f"FRAUD_DRIFT_FROM={drift_from!r} is not a YYYY-MM-DD date") from exc
        cooldown = number("FRAUD_RETRAIN_COOLDOWN_HOURS", "6")

        recipients = _split_addresses(get("REPORT_RECIPIENTS") or "sales-team@localhost")
        if not recipients:
            raise SettingsError("REPORT_RECIPIENTS names no address")
        sales_api_url = get("SALES_API_URL")
        return cls(
            home=home,
            storage_url=get("ECOSYSTEM_STORAGE_URL") or str(home / "storage"),
            sales_api_url=sales_api_url.rstrip("/") if sales_api_url else None,
            sales_api_token_set=get("SALES_API_TOKEN") is not None,
            report_timezone=timezone,
            report_sender=get("REPORT_SENDER") or "reports@localhost",
            report_recipients=recipients,
            smtp_host=get("SMTP_HOST"),
            smtp_port=int(port_text),
            smtp_user=get("SMTP_USER"),
            smtp_password_set=get("SMTP_PASSWORD") is not None,
            smtp_security=security,
            smtp_ca_file=get("SMTP_CA_FILE"),
            sales_start_date=get("SALES_START_DATE") or "2025-01-01",
            image_dataset_url=get("IMAGE_DATASET_URL"),
            mlflow_tracking_uri=get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}",
            fraud_service_url=get("FRAUD_SERVICE_URL"),
            fraud_db_url=get("FRAUD_DB_URL") or f"sqlite:///{home / 'fraud_service.db'}",
            fraud_precision_threshold=threshold,
            fraud_drift_from=drift_from,
            fraud_monitoring_cron=get("FRAUD_MONITORING_CRON") or "0 * * * *",
            fraud_retrain_cooldown_hours=cooldown,
            fraud_transactions_url=get("FRAUD_TRANSACTIONS_URL"),
            fraud_predict_token_set=get("FRAUD_PREDICT_TOKEN") is not None,
            fraud_feedback_token_set=get("FRAUD_FEEDBACK_TOKEN") is not None,
            fraud_max_clock_skew_s=number("FRAUD_MAX_CLOCK_SKEW_S", "300"),
            fraud_max_amount=number("FRAUD_MAX_AMOUNT", "1000000"),
            fraud_max_predict_bytes=int(number("FRAUD_MAX_PREDICT_BYTES", "16384", int, 256)),
            fraud_max_history_bytes=int(number("FRAUD_MAX_HISTORY_BYTES", str(16 * 1024 * 1024), int, 256)),
        )
