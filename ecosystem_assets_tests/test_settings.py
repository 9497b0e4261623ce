"""Settings from the environment: the README's variables and defaults, blank = unset, errors that name
the variable, and secrets kept out (only whether they are set)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecosystem_assets.settings import Settings, SettingsError

HOME = "/srv/eco"
TRACKING_URI_CREDENTIALS = (
    "MLFLOW_TRACKING_URI must not contain user:password@ (or any user@): it is shown in the Dagster UI, in logs and on the "
    "training command line; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD instead"
)


def test_readme_defaults():
    settings = Settings.from_env({"ECOSYSTEM_HOME": HOME})
    assert settings.home == Path(HOME)
    assert settings.storage_url == f"{HOME}/storage" and settings.outbox_dir == Path(HOME) / "outbox"
    assert settings.mlflow_tracking_uri == f"sqlite:///{HOME}/mlflow.db"
    assert settings.mlflow_artifact_location == f"{HOME}/storage/mlflow-artifacts"
    assert settings.mlflow_ui_url == "http://127.0.0.1:5000"  # where `make mlflow` serves the UI
    assert not settings.fraud_db_url_set and settings.fraud_db_local_url == f"sqlite:///{HOME}/fraud_service.db"
    assert settings.fraud_db_url == settings.fraud_db_local_url
    assert (settings.sales_api_url, settings.smtp_host, settings.image_dataset_url, settings.fraud_service_url) == (None,) * 4
    assert (settings.report_timezone, settings.sales_start_date) == ("UTC", "2025-01-01")
    assert (settings.report_sender, settings.report_recipients) == ("reports@localhost", ("sales-team@localhost",))
    assert (settings.report_sender_name, settings.report_currency) == ("Sales reports", "USD")
    assert (settings.smtp_port, settings.smtp_security, settings.smtp_user, settings.smtp_ca_file) == (587, "starttls", None, None)
    assert (settings.fraud_precision_threshold, settings.fraud_monitoring_cron, settings.fraud_retrain_cooldown_hours) == (
        0.80,
        "0 * * * *",
        6.0,
    )
    assert (settings.fraud_max_amount, settings.fraud_max_clock_skew_s) == (1_000_000, 300)
    assert (settings.fraud_max_predict_bytes, settings.fraud_max_history_bytes) == (16_384, 16_777_216)
    assert (settings.artifact_retention_days, settings.artifact_retention_runs) == (14.0, 48)
    assert not (settings.sales_api_token_set or settings.smtp_password_set or settings.fraud_predict_token_set)


def test_every_variable_is_read_and_normalised():
    env = {
        "ECOSYSTEM_HOME": HOME,
        "ECOSYSTEM_STORAGE_URL": "s3://bucket/prefix",
        "SALES_API_URL": "https://sales.example/api/",
        "REPORT_TIMEZONE": "Europe/Berlin",
        "SALES_START_DATE": "2026-01-01",
        "REPORT_SENDER": "r@shop.example",
        "REPORT_RECIPIENTS": " ana@x.example , ,bo@x.example ",
        "REPORT_SENDER_NAME": "Ventes Nord",
        "REPORT_CURRENCY": "eur",
        "SMTP_HOST": "mail.example",
        "SMTP_PORT": "465",
        "SMTP_USER": "mailer",
        "SMTP_SECURITY": "SSL",
        "SMTP_CA_FILE": "/ca.pem",
        "IMAGE_DATASET_URL": "s3://imgs",
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "MLFLOW_UI_URL": "https://mlflow.example/ui/",
        "FRAUD_SERVICE_URL": "http://fraud:8000",
        "FRAUD_DB_URL": "postgresql://db/f",
        "FRAUD_PRECISION_THRESHOLD": "0.9",
        "FRAUD_DRIFT_FROM": "2026-10-01",
        "FRAUD_MONITORING_CRON": "*/5 * * * *",
        "FRAUD_RETRAIN_COOLDOWN_HOURS": "0.02",
        "FRAUD_TRANSACTIONS_URL": "/data/tx",
        "FRAUD_MAX_AMOUNT": "5000",
        "FRAUD_MAX_CLOCK_SKEW_S": "60",
        "FRAUD_MAX_PREDICT_BYTES": "4096",
        "FRAUD_MAX_HISTORY_BYTES": "1048576",
        "ARTIFACT_RETENTION_DAYS": "2.5",
        "ARTIFACT_RETENTION_RUNS": "0",
    }
    s = Settings.from_env(env)
    assert (s.storage_url, s.sales_api_url, s.report_timezone, s.sales_start_date) == (
        "s3://bucket/prefix",
        "https://sales.example/api",
        "Europe/Berlin",
        "2026-01-01",
    )
    assert (s.report_sender, s.report_recipients) == ("r@shop.example", ("ana@x.example", "bo@x.example"))
    assert (s.report_sender_name, s.report_currency) == ("Ventes Nord", "EUR")
    assert (s.smtp_host, s.smtp_port, s.smtp_user, s.smtp_security, s.smtp_ca_file) == ("mail.example", 465, "mailer", "ssl", "/ca.pem")
    assert (s.image_dataset_url, s.mlflow_tracking_uri, s.mlflow_artifact_location) == ("s3://imgs", "http://mlflow:5000", None)
    assert s.mlflow_ui_url == "https://mlflow.example/ui"
    assert (s.fraud_service_url, s.fraud_db_url_set, s.fraud_drift_from, s.fraud_transactions_url) == (
        "http://fraud:8000",
        True,
        "2026-10-01",
        "/data/tx",
    )
    assert (s.fraud_precision_threshold, s.fraud_monitoring_cron, s.fraud_retrain_cooldown_hours) == (0.9, "*/5 * * * *", 0.02)
    assert (s.fraud_max_amount, s.fraud_max_clock_skew_s, s.fraud_max_predict_bytes, s.fraud_max_history_bytes) == (5000, 60, 4096, 1048576)
    assert (s.artifact_retention_days, s.artifact_retention_runs) == (2.5, 0)


def test_blank_variables_count_as_unset():
    s = Settings.from_env({"ECOSYSTEM_HOME": HOME, "SMTP_HOST": "  ", "SMTP_PORT": "", "SALES_API_TOKEN": " ", "REPORT_TIMEZONE": "\t"})
    assert (s.smtp_host, s.smtp_port, s.sales_api_token_set, s.report_timezone) == (None, 587, False, "UTC")


def test_secrets_are_only_known_to_be_set():
    values = {
        "SALES_API_TOKEN": "tok-7f3a",
        "SMTP_PASSWORD": "pw-91c2",
        "FRAUD_PREDICT_TOKEN": "pred-55e1",
        "FRAUD_FEEDBACK_TOKEN": "fb-02d9",
        "FRAUD_DB_URL": "postgresql+psycopg2://fraud:db-pw-6b1e@db.internal:5432/fraud",
    }
    s = Settings.from_env({"ECOSYSTEM_HOME": HOME, **values})
    assert s.sales_api_token_set and s.smtp_password_set and s.fraud_predict_token_set and s.fraud_feedback_token_set
    assert s.fraud_db_url_set
    dumped = repr(s) + str(s.model_dump())
    assert not [v for v in values.values() if v in dumped]


def test_the_fraud_db_url_is_read_from_the_process_when_needed(monkeypatch):
    """Outside Dagster (the CLI starting the service) the URL is read from the environment when asked
    for, stripped; settings read from a mapping the process does not have refuse, quoting nothing."""
    url = "postgresql+psycopg2://fraud:db-pw-6b1e@db.internal:5432/fraud"
    monkeypatch.setenv("FRAUD_DB_URL", f" {url}\n")
    assert Settings.from_env().fraud_db_url == url
    monkeypatch.delenv("FRAUD_DB_URL")
    elsewhere = Settings.from_env({"ECOSYSTEM_HOME": HOME, "FRAUD_DB_URL": url})
    with pytest.raises(SettingsError) as err:
        _ = elsewhere.fraud_db_url
    assert "FRAUD_DB_URL" in str(err.value) and "db-pw" not in str(err.value)


def test_the_fraud_db_password_never_reaches_the_resource_config(monkeypatch):
    """Set: the resource gets dg.EnvVar (resolved at run time, shown by name only); unset: the local SQLite path."""
    import dagster as dg

    from ecosystem_assets.resources.wiring import build_resources

    unset = build_resources(Settings.from_env({"ECOSYSTEM_HOME": HOME}))["fraud_service"]
    assert unset.db_url == f"sqlite:///{HOME}/fraud_service.db"
    url = "postgresql+psycopg2://fraud:db-pw-6b1e@db.internal:5432/fraud"
    monkeypatch.setenv("FRAUD_DB_URL", url)
    wired = build_resources(Settings.from_env({"ECOSYSTEM_HOME": HOME, "FRAUD_DB_URL": url}))["fraud_service"]
    assert wired.db_url == dg.EnvVar("FRAUD_DB_URL")
    assert "db-pw" not in str(wired.get_resource_definition().config_schema.default_value)


def test_process_environment_is_the_default(monkeypatch):
    monkeypatch.setenv("ECOSYSTEM_HOME", HOME)
    monkeypatch.setenv("SMTP_PORT", "2525")
    assert Settings.from_env().smtp_port == 2525 and Settings.from_env().home == Path(HOME)


def test_settings_are_frozen():
    with pytest.raises(ValueError, match="frozen"):
        Settings.from_env({}).smtp_port = 25  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("FRAUD_PRECISION_THRESHOLD", "high", "FRAUD_PRECISION_THRESHOLD='high' is not a number"),
        ("FRAUD_PRECISION_THRESHOLD", "nan", "FRAUD_PRECISION_THRESHOLD='nan' must be at least 0"),
        ("FRAUD_RETRAIN_COOLDOWN_HOURS", "-1", "FRAUD_RETRAIN_COOLDOWN_HOURS='-1' must be at least 0"),
        ("FRAUD_MAX_PREDICT_BYTES", "1e4", "FRAUD_MAX_PREDICT_BYTES='1e4' is not an integer"),
        ("FRAUD_MAX_HISTORY_BYTES", "100", "FRAUD_MAX_HISTORY_BYTES='100' must be at least 256"),
        ("FRAUD_DRIFT_FROM", "2026-13-01", "FRAUD_DRIFT_FROM='2026-13-01' is not a YYYY-MM-DD date"),
        ("SMTP_PORT", "-25", "SMTP_PORT='-25' is not a port number"),
        ("MLFLOW_UI_URL", "127.0.0.1:5000", "MLFLOW_UI_URL='127.0.0.1:5000' is not an http(s) URL (e.g. http://127.0.0.1:5000)"),
        (
            "MLFLOW_UI_URL",
            "ftp://mlflow.example",
            "MLFLOW_UI_URL='ftp://mlflow.example' is not an http(s) URL (e.g. http://127.0.0.1:5000)",
        ),
        ("MLFLOW_UI_URL", "http://:5000", "MLFLOW_UI_URL='http://:5000' is not an http(s) URL (e.g. http://127.0.0.1:5000)"),
        ("MLFLOW_UI_URL", "http://host:99999", "MLFLOW_UI_URL='http://host:99999' is not an http(s) URL (e.g. http://127.0.0.1:5000)"),
        ("MLFLOW_UI_URL", "http://host/#/experiments", "MLFLOW_UI_URL='http://host/#/experiments' must have no ?query or #fragment"),
        # Credentials in the tracking URI would reach the UI, logs and command lines: refused, never quoted.
        *(
            ("MLFLOW_TRACKING_URI", uri, TRACKING_URI_CREDENTIALS)
            for uri in (
                "https://admin:s3cret@mlflow.example",
                "http://s3cret-token@mlflow.example:5000",
                "postgresql://mlflow:s3cret@db.internal/mlflow",
            )
        ),
        # The links are shown in the UI: credentials are refused, and never quoted.
        (
            "MLFLOW_UI_URL",
            "https://admin:s3cret@mlflow.example",
            "MLFLOW_UI_URL must not contain user:password@: the links built from it are shown in the Dagster UI",
        ),
        ("REPORT_CURRENCY", "ZZZ", "REPORT_CURRENCY='ZZZ' is not an ISO 4217 currency code (e.g. USD, EUR, GBP)"),
        ("REPORT_CURRENCY", "$", "REPORT_CURRENCY='$' is not an ISO 4217 currency code (e.g. USD, EUR, GBP)"),
        ("REPORT_CURRENCY", "dollars", "REPORT_CURRENCY='dollars' is not an ISO 4217 currency code (e.g. USD, EUR, GBP)"),
        (
            "REPORT_SENDER_NAME",
            "Sales\nBcc: x@evil.example",
            "REPORT_SENDER_NAME='Sales\\nBcc: x@evil.example' contains a line break or another control character",
        ),
        ("REPORT_SENDER_NAME", "Sales\r\nX: y", "REPORT_SENDER_NAME='Sales\\r\\nX: y' contains a line break or another control character"),
        (
            "REPORT_SENDER_NAME",
            "Sales\u2028reports",
            "REPORT_SENDER_NAME='Sales\\u2028reports' contains a line break or another control character",
        ),
    ],
)
def test_bad_values_name_the_variable(name, value, message):
    with pytest.raises(SettingsError) as err:
        Settings.from_env({name: value})
    assert str(err.value) == message


def test_tracking_uris_without_credentials_are_accepted():
    """Local stores, servers and a home whose path holds an @ (the default SQLite URI) all load."""
    for uri in ("http://mlflow:5000", "https://mlflow.example/prefix", "file:///srv/mlruns", "databricks", "/srv/mlruns"):
        assert Settings.from_env({"ECOSYSTEM_HOME": HOME, "MLFLOW_TRACKING_URI": uri}).mlflow_tracking_uri == uri
    assert Settings.from_env({"ECOSYSTEM_HOME": "/srv/team@corp/eco"}).mlflow_tracking_uri == "sqlite:////srv/team@corp/eco/mlflow.db"


def test_the_mlflow_ui_url_reaches_the_links():
    from ecosystem_assets.resources.wiring import build_resources

    tracking = build_resources(Settings.from_env({"ECOSYSTEM_HOME": HOME, "MLFLOW_UI_URL": "http://mlflow.internal:8080/"}))[
        "mlflow_tracking"
    ]
    run = "0" * 32
    assert tracking.run_url(run, "7") == f"http://mlflow.internal:8080/#/experiments/7/runs/{run}"
    assert (
        tracking.artifact_url(run, "drift v1.html", "7")
        == f"http://mlflow.internal:8080/#/experiments/7/runs/{run}/artifacts/drift%20v1.html"
    )
    assert tracking.raw_artifact_url(run, "a/b.html") == f"http://mlflow.internal:8080/get-artifact?path=a%2Fb.html&run_uuid={run}"
    # The name as the UI's own links encode it (encodeURIComponent).
    assert tracking.model_version_url("fraud-detector", "3") == "http://mlflow.internal:8080/#/models/fraud-detector/versions/3"
    assert tracking.model_version_url("team/model (v2)!", 1) == "http://mlflow.internal:8080/#/models/team%2Fmodel%20(v2)!/versions/1"


def test_the_sales_api_deadline_reaches_the_resource():
    from ecosystem_assets.resources.wiring import build_resources

    resources = build_resources(Settings.from_env({"ECOSYSTEM_HOME": HOME, "SALES_API_DEADLINE_S": "7.5"}))
    assert resources["sales_api"].deadline_s == 7.5


@pytest.mark.parametrize("name", ['Ventes "Nord", Équipe', "Отчёты о продажах", "O'Brien & Co. <sales>"])
def test_sender_names_are_encoded_in_the_from_header(name, tmp_path):
    """Quotes, commas, angle brackets and non-ASCII reach the From header intact, as one display name."""
    from email import message_from_bytes, policy

    from ecosystem_assets.resources.wiring import build_resources

    mailer = build_resources(Settings.from_env({"ECOSYSTEM_HOME": str(tmp_path), "REPORT_SENDER_NAME": name}))["mailer"]
    sent = mailer.send("Subject", "Body", "a.csv", b"x\n")
    message = message_from_bytes(Path(sent.transport).read_bytes(), policy=policy.default)
    [address] = message["From"].addresses
    assert (address.display_name, address.addr_spec) == (name, "reports@localhost")
    assert len(message.get_all("From")) == 1 and message.get_all("Bcc") is None


def test_the_report_currency_reaches_the_resource():
    from ecosystem_assets.resources.wiring import build_resources

    assert build_resources(Settings.from_env({"ECOSYSTEM_HOME": HOME, "REPORT_CURRENCY": "chf"}))["report_format"].currency == "CHF"
