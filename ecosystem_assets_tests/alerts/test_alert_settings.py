"""The alert settings: README defaults, parsing, errors that name the variable, and where they reach."""

from __future__ import annotations

import pytest

from ecosystem_assets.settings import Settings, SettingsError


def test_defaults():
    s = Settings.from_env({"ECOSYSTEM_HOME": "/srv/eco"})
    assert (s.alert_recipients, s.dagster_ui_url, s.alert_not_judged_after_hours) == (
        ("data-oncall@localhost",),
        "http://127.0.0.1:3000",
        24.0,
    )


def test_values_are_read_and_normalised():
    s = Settings.from_env(
        {
            "ALERT_RECIPIENTS": " oncall@x.example, ,lead@x.example ",
            "DAGSTER_UI_URL": "https://dagster.x.example/prod/",
            "ALERT_NOT_JUDGED_AFTER_HOURS": "6.5",
        }
    )
    assert s.alert_recipients == ("oncall@x.example", "lead@x.example")
    assert s.dagster_ui_url == "https://dagster.x.example/prod"  # the links append /runs/… and /assets/…
    assert s.alert_not_judged_after_hours == 6.5


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ALERT_RECIPIENTS", " , ", "ALERT_RECIPIENTS names no address"),
        ("DAGSTER_UI_URL", "127.0.0.1:3000", "DAGSTER_UI_URL='127.0.0.1:3000' is not an http(s) URL (e.g. http://127.0.0.1:3000)"),
        ("DAGSTER_UI_URL", "http://host:port", "DAGSTER_UI_URL='http://host:port' is not an http(s) URL (e.g. http://127.0.0.1:3000)"),
        ("DAGSTER_UI_URL", "http://h/?x=1", "DAGSTER_UI_URL='http://h/?x=1' must have no ?query or #fragment"),
        ("ALERT_NOT_JUDGED_AFTER_HOURS", "a day", "ALERT_NOT_JUDGED_AFTER_HOURS='a day' is not a number"),
        ("ALERT_NOT_JUDGED_AFTER_HOURS", "-1", "ALERT_NOT_JUDGED_AFTER_HOURS='-1' must be at least 0"),
    ],
)
def test_bad_values_name_the_variable(name, value, message):
    with pytest.raises(SettingsError) as err:
        Settings.from_env({name: value})
    assert str(err.value) == message


def test_a_ui_url_with_credentials_is_refused_without_quoting_them():
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"DAGSTER_UI_URL": "https://admin:s3cret-pw@dagster.x.example"})
    assert "s3cret-pw" not in str(err.value) and "DAGSTER_UI_URL must not contain user:password@" in str(err.value)


def test_the_settings_reach_the_sensors_and_the_alert_mailer(tmp_path):
    from ecosystem_assets.project import build_definitions

    env = {"ECOSYSTEM_HOME": str(tmp_path), "ALERT_RECIPIENTS": "oncall@x.example", "ALERT_NOT_JUDGED_AFTER_HOURS": "6"}
    defs = build_definitions(Settings.from_env(env))
    mailer = defs.resources["alert_mailer"]
    assert mailer.recipient_list == ("oncall@x.example",) and mailer.outbox_dir == str(tmp_path / "outbox")  # type: ignore[attr-defined]
    assert "not judged for 6 h" in (defs.resolve_sensor_def("alert_on_checks").description or "")
