"""Settings → resources: the one place where the environment decides which systems are used."""

from __future__ import annotations

from typing import Any

import dagster as dg

from ecosystem_assets.resources.fraud import FraudServiceResource, TransactionSource
from ecosystem_assets.resources.mail import MailerResource
from ecosystem_assets.resources.mlflow import MlflowTracking
from ecosystem_assets.resources.report_format import ReportFormat
from ecosystem_assets.resources.sales_api import SalesApiResource
from ecosystem_assets.resources.storage import ArtifactStorage
from ecosystem_assets.resources.training import TrainingBackend
from ecosystem_assets.resources.vision import ImageSource
from ecosystem_assets.settings import Settings


def _smtp(settings: Settings) -> dict[str, Any]:
    """The sender and SMTP connection the report's mailer and the alerts' mailer share."""
    return {
        "sender": settings.report_sender,
        "smtp_host": settings.smtp_host,
        "smtp_port": settings.smtp_port,
        "smtp_user": settings.smtp_user,
        "smtp_password": dg.EnvVar("SMTP_PASSWORD") if settings.smtp_password_set else None,
        "smtp_security": settings.smtp_security,
        "smtp_ca_file": settings.smtp_ca_file,
        "outbox_dir": str(settings.outbox_dir),
    }


def build_resources(settings: Settings) -> dict[str, Any]:
    """Secrets are passed as `dg.EnvVar`, so their values are read at run time and never shown."""
    return {
        "storage": ArtifactStorage(  # boto3 itself honours AWS_ENDPOINT_URL
            url=settings.storage_url, keep_days=settings.artifact_retention_days, keep_runs=settings.artifact_retention_runs
        ),
        "sales_api": SalesApiResource(
            base_url=settings.sales_api_url,
            token=dg.EnvVar("SALES_API_TOKEN") if settings.sales_api_token_set else None,
            timezone=settings.report_timezone,
            deadline_s=settings.sales_api_deadline_s,
        ),
        "mailer": MailerResource(
            sender_name=settings.report_sender_name, recipients=",".join(settings.report_recipients), **_smtp(settings)
        ),
        # Alerts (alerts/sensors.py) go through the same mailer and SMTP settings to ALERT_RECIPIENTS; a short
        # timeout and two attempts keep one sensor tick well inside Dagster's sensor time limit.
        "alert_mailer": MailerResource(
            sender_name="ecosystem_assets alerts",
            recipients=",".join(settings.alert_recipients),
            **_smtp(settings),
            timeout_s=10.0,
            max_attempts=2,
            retry_delay_s=1.0,
        ),
        "report_format": ReportFormat(currency=settings.report_currency),
        "image_source": ImageSource(url=settings.image_dataset_url),
        "transactions": TransactionSource(url=settings.fraud_transactions_url, drift_from=settings.fraud_drift_from),
        "fraud_service": FraudServiceResource(
            url=settings.fraud_service_url,
            # A production URL holds the database password: read at run time, never in the config snapshot.
            db_url=dg.EnvVar("FRAUD_DB_URL") if settings.fraud_db_url_set else settings.fraud_db_local_url,
            tracking_uri=settings.mlflow_tracking_uri,
            feedback_token=dg.EnvVar("FRAUD_FEEDBACK_TOKEN") if settings.fraud_feedback_token_set else None,
            precision_threshold=settings.fraud_precision_threshold,
        ),
        "training": TrainingBackend(
            backend=settings.training_backend,
            nodes=settings.training_nodes,
            gpus_per_node=settings.training_gpus_per_node,
            image=settings.training_image,
            service_account=settings.training_service_account,
            env_config_map=settings.training_env_config_map,
            mlflow_secret=settings.training_mlflow_secret,
        ),
        "mlflow_tracking": MlflowTracking(
            tracking_uri=settings.mlflow_tracking_uri, ui_url=settings.mlflow_ui_url, artifact_location=settings.mlflow_artifact_location
        ),
    }
