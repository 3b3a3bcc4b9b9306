"""Alembic migrations, on SQLite and PostgreSQL: they build the schema the tables declare."""

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from reprogrid.models import Base, Database, open_database
from reprogrid.models.db import alembic_config
from reprogrid.models.queries import PROMPT_FTS, TRIGRAM_INDEX


def _declared(obj, name, type_, reflected, compare_to) -> bool:
    """Not the prompt search's own objects, which no model declares: FTS5's tables, the
    pg_trgm index (migration 0009)."""
    return not (name or "").startswith((PROMPT_FTS, TRIGRAM_INDEX))


def test_migrations_build_exactly_the_tables_the_models_declare(database: Database) -> None:
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_object": _declared})
        differences = compare_metadata(context, Base.metadata)
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
