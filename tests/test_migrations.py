"""Alembic migrations, on SQLite and PostgreSQL: they build the schema the tables declare."""

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from reprogrid.models import Base, Database, open_database
from reprogrid.models.db import alembic_config


def test_migrations_build_exactly_the_tables_the_models_declare(database: Database) -> None:
    with database.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_a_database_from_an_earlier_version_is_brought_up_to_date_on_open(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = open_database(url, migrate=False)
    config = alembic_config()
    with old.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0003")
    assert "replay" not in {c["name"] for c in inspect(old.engine).get_columns("batch")}
    old.dispose()
    current = open_database(url)
    assert "replay" in {c["name"] for c in inspect(current.engine).get_columns("batch")}
    current.dispose()
