"""The Postgres drivers (issue 14): every database URI in deploy/ names a driver that is installed and
pinned, and a plain ``postgresql://`` URI — SQLAlchemy 2.x's default driver, psycopg 3 — connects
too (it failed with ModuleNotFoundError before psycopg was a dependency)."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
URI = re.compile(r"\bpostgresql(?:\+(?P<driver>\w+))?://")
# SQLAlchemy driver name → (module it imports, distribution pinned in pyproject.toml)
DRIVERS = {"psycopg2": ("psycopg2", "psycopg2-binary"), "psycopg": ("psycopg", "psycopg[binary]")}


def pins() -> dict[str, str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return {d.split("==")[0].strip(): d.split("==")[1].strip() for d in deps if "==" in d}


def test_every_database_uri_in_deploy_names_an_installed_pinned_driver() -> None:
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / "deploy").rglob("*")):
        if path.is_file() and path.suffix in {".yaml", ".yml", ".md", ".ini"}:
            for match in URI.finditer(path.read_text()):
                found.setdefault(match["driver"] or "psycopg", set()).add(str(path.relative_to(REPO)))
    assert found, "no postgresql URIs in deploy/ (the test reads the wrong folder?)"
    pinned = pins()
    for driver, files in found.items():
        assert driver in DRIVERS, f"{sorted(files)}: driver {driver!r} is not one the project pins"
        module, distribution = DRIVERS[driver]
        importlib.import_module(module)
        assert distribution in pinned, f"{distribution} (for postgresql+{driver}:// in {sorted(files)}) is not pinned in pyproject.toml"


def test_a_plain_postgresql_uri_connects_with_psycopg_3(postgres_url: str) -> None:
    import sqlalchemy as sa

    plain = sa.engine.make_url(postgres_url).set(drivername="postgresql")
    engine = sa.create_engine(plain)
    try:
        assert engine.dialect.driver == "psycopg"  # SQLAlchemy 2.x's default for postgresql://
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


def test_dagster_instances_in_deploy_name_psycopg2() -> None:
    """dagster-postgres builds ``<scheme>://…`` from postgres_db; with psycopg 3 installed a bare
    ``postgresql`` scheme makes SQLAlchemy pick it, and Dagster's storage then fails on its first
    statement (seen: 'syntax error at or near "$1"'). Both ways deploy/ configures Dagster name psycopg2."""
    import yaml

    instance = yaml.safe_load((REPO / "deploy" / "dagster.k8s.yaml").read_text())
    assert instance["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    values = yaml.safe_load((REPO / "deploy" / "helm" / "values.yaml").read_text())
    assert values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
