"""Issue 13 points 2 and 3 on the code location: owners and code versions on every asset, the freshness
expectations with the sensors that evaluate them, the automation condition, and the table-metadata helper."""

from __future__ import annotations

import dagster as dg
import pytest

from ecosystem_assets.settings import Settings


@pytest.fixture
def defs(ecosystem_env) -> dg.Definitions:
    from ecosystem_assets.project import build_definitions

    return build_definitions(Settings.from_env())


def test_every_asset_has_an_owner_and_a_code_version(defs):
    graph = defs.resolve_asset_graph()
    materializable = [k for k in graph.get_all_asset_keys() if graph.get(k).is_materializable]
    assert len(materializable) >= 11
    owners = {"sales": ["team:sales-analytics"], "fraud": ["team:fraud"], "vision": ["team:ml-platform"]}
    for key in materializable:
        node = graph.get(key)
        assert list(node.owners) == owners[node.group_name], key.to_user_string()
        assert node.code_version, key.to_user_string()
    assert {graph.get(k).group_name for k in materializable} == set(owners)


def test_hourly_monitoring_has_a_freshness_check_and_a_running_sensor(defs, dagster_instance):
    from ecosystem_assets.fraud.definitions import FRESHNESS_SENSOR

    graph = defs.resolve_asset_graph()
    check = dg.AssetCheckKey(dg.AssetKey("fraud_monitoring_metrics"), "freshness_check")
    assert check in graph.asset_check_keys
    sensor = defs.resolve_sensor_def(FRESHNESS_SENSOR)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    # On a fresh instance the sensor asks for the check to be evaluated (never materialized: overdue).
    tick = sensor.evaluate_tick(dg.build_sensor_context(instance=dagster_instance, definitions=defs))
    [request] = tick.run_requests
    assert check in set(request.asset_check_keys or [])


def test_only_the_summary_follows_its_parent(defs):
    from ecosystem_assets.sales.definitions import AUTOMATION_SENSOR

    graph = defs.resolve_asset_graph()
    automated = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).automation_condition is not None}
    assert automated == {"sales_summary_csv"}  # never the email, training or anything with side effects
    sensor = defs.resolve_sensor_def(AUTOMATION_SENSOR)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_table_metadata_is_standard_and_json_safe():
    import json

    import numpy as np
    import pandas as pd

    from ecosystem_assets.asset_metadata import COLUMN_SCHEMA, ROW_COUNT, table_metadata

    frame = pd.DataFrame(
        {
            "n": np.array([1, 2, 3], dtype="int64"),
            "x": [0.123456789, np.nan, 2.0],
            "when": pd.to_datetime(["2026-01-01", None, "2026-01-03"], utc=True),
            "label": ["a", None, "c"],
            "flag": [True, False, True],
            "maybe": pd.array([1, None, 3], dtype="Int64"),
        }
    )
    meta = table_metadata(frame, preview_rows=2)
    assert meta[ROW_COUNT].value == 3
    schema = meta[COLUMN_SCHEMA].schema
    assert [(c.name, c.type) for c in schema.columns] == [
        ("n", "int"),
        ("x", "float"),
        ("when", "timestamp"),
        ("label", "string"),
        ("flag", "bool"),
        ("maybe", "int"),
    ]
    rows = [r.data for r in meta["preview"].records]
    assert rows == [
        {"n": 1, "x": 0.1235, "when": "2026-01-01T00:00:00+00:00", "label": "a", "flag": True, "maybe": 1},
        {"n": 2, "x": None, "when": None, "label": None, "flag": False, "maybe": None},
    ]
    json.dumps(rows)  # plain JSON values only
    assert "preview" not in table_metadata(frame, preview_rows=0)
