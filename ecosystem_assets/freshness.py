"""Dagster's freshness checks with the sensor that evaluates them: one wiring for every workflow."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

import dagster as dg


def checks_with_sensor(
    build: Callable[[], Iterable[dg.AssetChecksDefinition]], sensor_name: str
) -> tuple[list[dg.AssetChecksDefinition], dg.SensorDefinition]:
    """The checks ``build`` makes (a `dg.build_*_freshness_checks` call) and a sensor, running by
    default, that evaluates them every five minutes.

    Dagster marks these builders "superseded" by FreshnessPolicy. They stay on purpose: each is a
    check with its own severity and history in the UI; the warning would print at every load of
    the code location."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is superseded.*")
        checks = list(build())
        sensor = dg.build_sensor_for_freshness_checks(
            freshness_checks=checks, name=sensor_name, minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING
        )
    return checks, sensor
