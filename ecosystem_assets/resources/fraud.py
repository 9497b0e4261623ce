"""The fraud systems: the transaction source (the simulator by default) and the fraud service."""

from __future__ import annotations

from datetime import date
from typing import Any

import dagster as dg
from pydantic import Field


class TransactionSource(dg.ConfigurableResource):
    """Labelled card transactions by day: the seeded simulator (`fraud/simulate.py`) by default, or
    day-partitioned Parquet at ``url`` (`fraud/transaction_files.py`: layout, checks, late labels)."""

    url: str | None = Field(
        default=None,
        description="FRAUD_TRANSACTIONS_URL: local folder or s3://bucket/prefix of date=YYYY-MM-DD/*.parquet; unset → the simulator.",
    )
    n_customers: int = 1000
    n_terminals: int = 2000
    seed: int = 7
    drift_from: str | None = Field(default=None, description="YYYY-MM-DD: the skimming-ring pattern starts that day (simulator).")

    @property
    def source_label(self) -> str:
        """Where the transactions come from, for metadata and logs."""
        return self.url or f"simulator (seed {self.seed}, drift from {self.drift_from or 'never'})"

    def simulation_config(self) -> Any:
        from ecosystem_assets.fraud.simulate import SimulationConfig

        drift = date.fromisoformat(self.drift_from) if self.drift_from else None
        return SimulationConfig(n_customers=self.n_customers, n_terminals=self.n_terminals, seed=self.seed, drift_from=drift)

    def days(self, first: date, last: date) -> Any:  # -> dict[date, pd.DataFrame]
        """Every day from ``first`` to ``last`` inclusive. From files, ``is_fraud`` is nullable Int64 on
        days with labels still missing; a bad file raises `TransactionFileError` naming it."""
        from datetime import timedelta

        if self.url:
            from ecosystem_assets.fraud.transaction_files import read_days
            from ecosystem_assets.storage import open_store

            return read_days(open_store(self.url), first, last, self.url)

        from ecosystem_assets.fraud.simulate import Population

        population = Population(self.simulation_config())
        return {first + timedelta(days=i): population.day(first + timedelta(days=i)) for i in range((last - first).days + 1)}


class FraudServiceResource(dg.ConfigurableResource):
    """Live metrics from the fraud service (``url``), or from its store in-process when ``url`` is
    unset; live features and the log's summary always come from the store (the prediction log)."""

    url: str | None = None
    db_url: str = Field(
        description="FRAUD_DB_URL (a secret when set: it holds the database password; set with dg.EnvVar); "
        "unset → SQLite under ECOSYSTEM_HOME."
    )
    tracking_uri: str
    timeout_s: float = 30.0
    feedback_token: str | None = Field(default=None, description="FRAUD_FEEDBACK_TOKEN (a secret, set with dg.EnvVar).")
    precision_threshold: float = Field(
        default=0.80, ge=0.0, le=1.0, description="FRAUD_PRECISION_THRESHOLD: live precision below it fails the monitoring check."
    )

    def monitoring(self, window_hours: float, end: float) -> dict[str, Any]:
        """The /monitoring summary of the ``window_hours`` before ``end`` (epoch seconds: the evaluation time).
        In-process, a registry that cannot be asked which model serves raises `RegistryUnavailable`."""
        if self.url:
            import requests

            from ecosystem_assets.fraud.replay import bearer

            headers = bearer(self.feedback_token)
            params: dict[str, str | float] = {"window_hours": window_hours, "end": repr(end)}
            response = requests.get(f"{self.url.rstrip('/')}/monitoring", params=params, headers=headers, timeout=self.timeout_s)
            if response.status_code != 200:
                raise RuntimeError(f"fraud service {self.url} answered /monitoring with HTTP {response.status_code}: {response.text[:200]}")
            return response.json()
        from ecosystem_assets.serving.champion import champion_version
        from ecosystem_assets.serving.monitoring import monitoring_summary

        version = champion_version(self.tracking_uri)
        return monitoring_summary(self.store(), str(version.version) if version else None, window_hours, end)

    def store(self) -> Any:
        """The prediction log (serving/store.py `PredictionStore`)."""
        from ecosystem_assets.serving.store import PredictionStore

        return PredictionStore(self.db_url.strip())  # stripped as settings strip: a mounted file's newline is fine

    def prediction_log(self) -> Any:
        """What the prediction log holds now (`LogSummary`: predictions, labels, newest times)."""
        return self.store().log_summary()
