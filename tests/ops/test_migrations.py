"""`chorus db upgrade` on an empty database leaves exactly the schema the models describe.

Whatever the head revision is: autogenerate's comparison (alembic.autogenerate.compare_metadata)
between the upgraded database and models.tables must find nothing, on PostgreSQL and on SQLite.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from models.db import alembic_config
from models.tables import Base
from tests.conftest import PG_ADMIN_URL, clean_env

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    import psycopg

    name = f"chorus_mig_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_chorus_db_upgrade_brings_an_empty_database_to_head_with_no_drift_from_the_models(empty_database, tmp_path):
    proc = subprocess.run(["chorus", "db", "upgrade", "--json"], env=clean_env(CHORUS_DATABASE_URL=empty_database),
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    reported = json.loads(proc.stdout)
    assert reported["current"] is True and "worker_outcome" in reported["tables"]
    assert reported["database"].endswith(empty_database.rsplit("/", 1)[1])

    head = ScriptDirectory.from_config(alembic_config(empty_database)).get_current_head()
    engine = create_engine(empty_database)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert context.get_current_revision() == head
            drift = compare_metadata(context, Base.metadata)
            tables = set(inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert drift == [], f"models.tables and the migrations differ: {drift}"
    assert tables == set(Base.metadata.tables) | {"alembic_version"}
