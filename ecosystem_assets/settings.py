"""Environment variables → typed settings, with the embedded defaults (pydantic-settings).

This is the one place that reads the process environment. Everything else receives a `Settings`
(domain code) or a configured resource (Dagster code). Secrets are *not* copied here: only whether
they are set, so that resources can be wired with `dg.EnvVar` and the values never enter a config
snapshot, a log line or the UI.

Each field names its variable (``validation_alias``); a blank variable counts as unset; a bad
value raises `SettingsError` naming the variable, with the messages the README documents.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Callable, Mapping
from datetime import date
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

SMTP_SECURITY_CHOICES = ("none", "starttls", "ssl")
TRAINING_BACKENDS = ("local", "pytorchjob")


class SettingsError(ValueError):
    """A configuration value is malformed; the message names the variable."""


def secret(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """A secret's value, read when it is needed (never stored in `Settings`); None when unset or blank.
    For code outside Dagster (the fraud service, the CLI); Dagster resources use `dg.EnvVar`."""
    value = (os.environ if environ is None else environ).get(name, "").strip()
    return value or None


def _variable(info: ValidationInfo) -> str:
    """The environment variable of the field being validated."""
    assert info.field_name is not None
    alias = Settings.model_fields[info.field_name].validation_alias
    return alias if isinstance(alias, str) else info.field_name.upper()


def _number(kind: type[int] | type[float], minimum: float) -> Callable[[Any, ValidationInfo], Any]:
    def parse(value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, str):  # the embedded default
            return value
        try:
            number = kind(value)
        except ValueError:
            raise SettingsError(f"{_variable(info)}={value!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not number >= minimum:  # also refuses NaN
            raise SettingsError(f"{_variable(info)}={value!r} must be at least {minimum:g}")
        return number

    return parse


def _one_of(choices: tuple[str, ...]) -> Callable[[Any, ValidationInfo], Any]:
    """Case-insensitive choice, with our message (runs before pydantic's literal check)."""

    def parse(value: Any, info: ValidationInfo) -> Any:
        value = str(value).lower()
        if value not in choices:
            raise SettingsError(f"{_variable(info)}={value!r} must be one of {', '.join(choices)}")
        return value

    return parse


def _is_set(value: Any) -> bool:
    """A secret's variable → whether it is set; the value itself is dropped here."""
    return bool(value.strip()) if isinstance(value, str) else bool(value)


def _header_secret_is_set(value: Any, info: ValidationInfo) -> bool:
    """`_is_set` for a secret sent as an HTTP header: the stripped value must be a valid header value,
    else the code location refuses to load, naming the variable but never quoting the value."""
    from ecosystem_assets.sales.redact import header_value_problem

    problem = header_value_problem(value.strip()) if isinstance(value, str) else None
    if problem:
        raise SettingsError(f"{_variable(info)} {problem}: it is sent as an HTTP header value (Authorization: Bearer …)")
    return _is_set(value)


NonNegative = Annotated[float, BeforeValidator(_number(float, 0.0))]
ByteLimit = Annotated[int, BeforeValidator(_number(int, 256))]
Count = Annotated[int, BeforeValidator(_number(int, 1))]
NonNegativeInt = Annotated[int, BeforeValidator(_number(int, 0))]
SecretIsSet = Annotated[bool, BeforeValidator(_is_set)]
HeaderSecretIsSet = Annotated[bool, BeforeValidator(_header_secret_is_set)]


class _Environment(EnvSettingsSource):
    """The variables of ``environ`` (default: the process environment), stripped; blank ones count as
    unset. Values reach the validators as text (no JSON decoding of list-like fields)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        super().__init__(settings_cls, case_sensitive=True)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name: value.strip() for name, value in self._environ.items() if value.strip()}

    def prepare_field_value(self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool) -> Any:
        return value


class Settings(BaseSettings):
    """The project's settings; build them with `Settings.from_env()`."""

    model_config = SettingsConfigDict(frozen=True, case_sensitive=True)

    home: Path = Field(Path(".ecosystem"), validation_alias="ECOSYSTEM_HOME", validate_default=True)
    storage_url: str = Field("", validation_alias="ECOSYSTEM_STORAGE_URL", validate_default=True)  # "" → <home>/storage
    sales_api_url: str | None = Field(None, validation_alias="SALES_API_URL")
    sales_api_token_set: HeaderSecretIsSet = Field(False, validation_alias="SALES_API_TOKEN")
    sales_api_deadline_s: Annotated[float, BeforeValidator(_number(float, 1.0))] = Field(120.0, validation_alias="SALES_API_DEADLINE_S")
    report_timezone: str = Field("UTC", validation_alias="REPORT_TIMEZONE")
    report_sender: str = Field("reports@localhost", validation_alias="REPORT_SENDER")
    report_recipients: tuple[str, ...] = Field(("sales-team@localhost",), validation_alias="REPORT_RECIPIENTS")
    report_sender_name: str = Field("Sales reports", validation_alias="REPORT_SENDER_NAME")  # the From header's display name
    report_currency: str = Field("USD", validation_alias="REPORT_CURRENCY")  # ISO 4217 code of the report's amounts
    smtp_host: str | None = Field(None, validation_alias="SMTP_HOST")
    smtp_port: int = Field(587, validation_alias="SMTP_PORT")
    smtp_user: str | None = Field(None, validation_alias="SMTP_USER")
    smtp_password_set: SecretIsSet = Field(False, validation_alias="SMTP_PASSWORD")
    smtp_security: Annotated[Literal["none", "starttls", "ssl"], BeforeValidator(_one_of(SMTP_SECURITY_CHOICES))] = Field(
        "starttls", validation_alias="SMTP_SECURITY"
    )
    smtp_ca_file: str | None = Field(None, validation_alias="SMTP_CA_FILE")
    sales_start_date: str = Field("2025-01-01", validation_alias="SALES_START_DATE")
    image_dataset_url: str | None = Field(None, validation_alias="IMAGE_DATASET_URL")
    mlflow_tracking_uri: str = Field("", validation_alias="MLFLOW_TRACKING_URI", validate_default=True)  # "" → <home>/mlflow.db
    # Where a browser reaches the MLflow UI (`make mlflow`): the base of the run, model-version and
    # report links in the assets' metadata. Not the tracking URI: a SQLite store has no UI of its own,
    # and an in-cluster server's address is not the one a person's browser uses.
    mlflow_ui_url: str = Field("http://127.0.0.1:5000", validation_alias="MLFLOW_UI_URL")
    fraud_service_url: str | None = Field(None, validation_alias="FRAUD_SERVICE_URL")
    # The prediction log's database: only whether FRAUD_DB_URL is set (a production URL holds the
    # database password); unset → SQLite under ECOSYSTEM_HOME (`fraud_db_local_url`, no secret in it).
    fraud_db_url_set: SecretIsSet = Field(False, validation_alias="FRAUD_DB_URL")
    fraud_precision_threshold: NonNegative = Field(0.80, validation_alias="FRAUD_PRECISION_THRESHOLD")
    fraud_drift_from: str | None = Field(None, validation_alias="FRAUD_DRIFT_FROM")
    fraud_monitoring_cron: str = Field("0 * * * *", validation_alias="FRAUD_MONITORING_CRON")
    fraud_retrain_cooldown_hours: NonNegative = Field(6.0, validation_alias="FRAUD_RETRAIN_COOLDOWN_HOURS")
    fraud_transactions_url: str | None = Field(None, validation_alias="FRAUD_TRANSACTIONS_URL")
    # The fraud service's bearer tokens: only whether they are set (the service and the resources
    # read the values themselves, through the environment and `dg.EnvVar`).
    fraud_predict_token_set: SecretIsSet = Field(False, validation_alias="FRAUD_PREDICT_TOKEN")
    fraud_feedback_token_set: SecretIsSet = Field(False, validation_alias="FRAUD_FEEDBACK_TOKEN")
    fraud_max_clock_skew_s: NonNegative = Field(300.0, validation_alias="FRAUD_MAX_CLOCK_SKEW_S")
    fraud_max_amount: NonNegative = Field(1_000_000.0, validation_alias="FRAUD_MAX_AMOUNT")
    fraud_max_predict_bytes: ByteLimit = Field(16_384, validation_alias="FRAUD_MAX_PREDICT_BYTES")
    fraud_max_history_bytes: ByteLimit = Field(16 * 1024 * 1024, validation_alias="FRAUD_MAX_HISTORY_BYTES")
    fraud_start_date: ClassVar[str] = "2025-06-01"  # the simulator's first day; not configurable
    # Per-run artifacts (Evidently drift reports): the newest RUNS always kept, older ones for DAYS.
    artifact_retention_days: NonNegative = Field(14.0, validation_alias="ARTIFACT_RETENTION_DAYS")
    artifact_retention_runs: NonNegativeInt = Field(48, validation_alias="ARTIFACT_RETENTION_RUNS")
    # Alerts (`alerts/`): who is told, the UI their links open, and how long live precision may stay
    # "not judged" (too few labels, no serving model) before someone is told.
    alert_recipients: tuple[str, ...] = Field(("data-oncall@localhost",), validation_alias="ALERT_RECIPIENTS")
    dagster_ui_url: str = Field("http://127.0.0.1:3000", validation_alias="DAGSTER_UI_URL")
    alert_not_judged_after_hours: NonNegative = Field(24.0, validation_alias="ALERT_NOT_JUDGED_AFTER_HOURS")
    # Where cnn_model trains: `local` (torchrun in the run's own process tree) or `pytorchjob` (a
    # Kubeflow PyTorchJob of TRAINING_NODES pods; needs TRAINING_IMAGE and S3 storage).
    training_backend: Annotated[Literal["local", "pytorchjob"], BeforeValidator(_one_of(TRAINING_BACKENDS))] = Field(
        "local", validation_alias="TRAINING_BACKEND"
    )
    training_nodes: Count = Field(1, validation_alias="TRAINING_NODES")
    training_gpus_per_node: NonNegativeInt = Field(0, validation_alias="TRAINING_GPUS_PER_NODE")
    training_image: str | None = Field(None, validation_alias="TRAINING_IMAGE")
    training_service_account: str | None = Field(None, validation_alias="TRAINING_SERVICE_ACCOUNT")
    training_env_config_map: str | None = Field(None, validation_alias="TRAINING_ENV_CONFIG_MAP")
    training_mlflow_secret: str | None = Field(None, validation_alias="TRAINING_MLFLOW_SECRET")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``environ`` (default: the process environment); `SettingsError` names a bad variable."""
        try:
            # Keyword arguments are the only source (below): the mapping given is all that is read.
            return cls(**_Environment(cls, environ)())
        except ValidationError as exc:
            raise _settings_error(exc) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # No .env or secrets files, and no implicit environment: `from_env` passes the variables of
        # the mapping it reads (the process environment by default), so a test's mapping is never
        # mixed with variables the process happens to have (MLflow sets MLFLOW_TRACKING_URI itself).
        return (init_settings,)

    @field_validator("home")
    @classmethod
    def _resolve_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("storage_url", "mlflow_tracking_uri")
    @classmethod
    def _under_home(cls, value: str, info: ValidationInfo) -> str:
        home = info.data.get("home")
        if value or home is None:
            return value
        return {
            "storage_url": str(home / "storage"),
            "mlflow_tracking_uri": f"sqlite:///{home / 'mlflow.db'}",
        }[info.field_name or ""]

    @field_validator("mlflow_tracking_uri")
    @classmethod
    def _no_credentials_in_tracking_uri(cls, value: str) -> str:
        """The tracking URI is not a secret: it is resource config (shown in the Dagster UI), the training
        command line and PyTorchJob arguments, and MLflow's own error messages. Credentials go in
        MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD, which MLflow reads itself."""
        try:
            netloc = urlsplit(value).netloc
        except ValueError:
            netloc = ""
        if "@" in netloc:
            # Never quoted: the part before @ may be a password.
            raise SettingsError(
                "MLFLOW_TRACKING_URI must not contain user:password@ (or any user@): it is shown in the Dagster UI, "
                "in logs and on the training command line; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD instead"
            )
        return value

    @field_validator("sales_api_url")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @field_validator("mlflow_ui_url")
    @classmethod
    def _mlflow_ui_url(cls, value: str) -> str:
        """The links in the assets' metadata are built from it and shown in the Dagster UI."""
        return _browser_url("MLFLOW_UI_URL", value, "http://127.0.0.1:5000", "the links built from it are shown in the Dagster UI")

    @field_validator("alert_recipients", mode="before")
    @classmethod
    def _alert_addresses(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        addresses = tuple(part.strip() for part in value.split(",") if part.strip())
        if not addresses:
            raise SettingsError("ALERT_RECIPIENTS names no address")
        return addresses

    @field_validator("dagster_ui_url")
    @classmethod
    def _dagster_ui_url(cls, value: str) -> str:
        """The run and check links of the alerts are built from it."""
        return _browser_url("DAGSTER_UI_URL", value, "http://127.0.0.1:3000", "alerts show the links built from it")

    @field_validator("report_timezone")
    @classmethod
    def _iana_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise SettingsError(f"REPORT_TIMEZONE={value!r} is not an IANA time zone") from None
        return value

    @field_validator("report_currency")
    @classmethod
    def _iso_4217(cls, value: str) -> str:
        """An ISO 4217 code Babel knows (its CLDR data: the currencies it can name and format)."""
        code = value.upper()
        if code == "USD":  # the default (validated too): no need to load Babel while the code location loads
            return code
        from babel.numbers import list_currencies

        if not (len(code) == 3 and code.isascii() and code.isalpha() and code in list_currencies()):
            raise SettingsError(f"REPORT_CURRENCY={value!r} is not an ISO 4217 currency code (e.g. USD, EUR, GBP)")
        return code

    @field_validator("report_sender_name")
    @classmethod
    def _display_name(cls, value: str) -> str:
        """Quotes, commas and non-ASCII are fine (the mailer encodes them, RFC 5322/2047); control characters
        (CR/LF above all: header injection) are refused."""
        if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in value):
            raise SettingsError(f"REPORT_SENDER_NAME={value!r} contains a line break or another control character")
        if len(value) > 100:
            raise SettingsError(f"REPORT_SENDER_NAME is {len(value)} characters long; at most 100")
        return value

    @field_validator("report_recipients", mode="before")
    @classmethod
    def _addresses(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        addresses = tuple(part.strip() for part in value.split(",") if part.strip())
        if not addresses:
            raise SettingsError("REPORT_RECIPIENTS names no address")
        return addresses

    @field_validator("smtp_port", mode="before")
    @classmethod
    def _port(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.isdigit():
            raise SettingsError(f"SMTP_PORT={value!r} is not a port number")
        return value

    @field_validator("fraud_drift_from")
    @classmethod
    def _iso_date(cls, value: str | None) -> str | None:
        if value:
            try:
                date.fromisoformat(value)
            except ValueError:
                raise SettingsError(f"FRAUD_DRIFT_FROM={value!r} is not a YYYY-MM-DD date") from None
        return value

    @model_validator(mode="after")
    def _pytorchjob_needs(self) -> Settings:
        if self.training_backend == "pytorchjob":
            if not self.training_image:
                raise SettingsError("TRAINING_BACKEND=pytorchjob needs TRAINING_IMAGE (the image of the training pods)")
            if not self.storage_url.startswith("s3://"):
                raise SettingsError(
                    "TRAINING_BACKEND=pytorchjob needs ECOSYSTEM_STORAGE_URL=s3://…: the training pods read the data, "
                    "write the weights and report through Pipes messages there"
                )
        return self

    @property
    def outbox_dir(self) -> Path:
        return self.home / "outbox"

    @property
    def fraud_db_local_url(self) -> str:
        """FRAUD_DB_URL's embedded default: SQLite under ECOSYSTEM_HOME (a path, no secret in it)."""
        return f"sqlite:///{self.home / 'fraud_service.db'}"

    @property
    def fraud_db_url(self) -> str:
        """The prediction log's URL for code outside Dagster (the CLI that starts the fraud service):
        FRAUD_DB_URL read from the process environment now, never kept here (it may hold a password),
        else `fraud_db_local_url`. Dagster resources get ``dg.EnvVar("FRAUD_DB_URL")`` instead
        (`resources/wiring.py`), so the value never enters a config snapshot or the UI."""
        if not self.fraud_db_url_set:
            return self.fraud_db_local_url
        value = secret("FRAUD_DB_URL")
        if value is None:  # the settings were read from another mapping than this process's environment
            raise SettingsError("FRAUD_DB_URL was set where the settings were read, but is not set in this process's environment")
        return value

    @property
    def mlflow_artifact_location(self) -> str | None:
        """Local tracking stores keep artifacts beside the other files; a tracking server decides itself."""
        if self.mlflow_tracking_uri.startswith(("http://", "https://", "databricks")):
            return None
        return f"{self.storage_url.rstrip('/')}/mlflow-artifacts"


def _browser_url(name: str, value: str, example: str, shown: str) -> str:
    """A UI's base URL as a person's browser reaches it: http(s) with a host; no user:password (the
    links built from it are shown to people: ``shown`` says where), query or fragment (the links
    append a path and a fragment of their own). Without a trailing slash."""
    try:
        parts = urlsplit(value)
        _ = parts.port  # a port that is no number or out of range raises ValueError
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{name}={value!r} is not an http(s) URL (e.g. {example})")
    if parts.username is not None or parts.password is not None:
        # Never quoted: the part before @ may be a password.
        raise SettingsError(f"{name} must not contain user:password@: {shown}")
    if parts.query or parts.fragment:
        raise SettingsError(f"{name}={value!r} must have no ?query or #fragment")
    return value.rstrip("/")


def _settings_error(exc: ValidationError) -> SettingsError:
    """Our validators' message for the first bad variable; pydantic's own wording otherwise (never the value:
    a secret's variable could be the one refused)."""
    errors = exc.errors()
    for error in errors:
        raised = (error.get("ctx") or {}).get("error")
        if isinstance(raised, SettingsError):
            return raised
    first = errors[0]
    field = str(first["loc"][0]) if first["loc"] else "settings"
    return SettingsError(f"{field}: {first['msg']}")
