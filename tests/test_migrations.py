"""Alembic migrations, on SQLite and PostgreSQL: they build the schema the tables declare."""

import json

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from conftest import Cli
from sqlalchemy import insert, inspect, select

from reprogrid.config import Settings
from reprogrid.models import Base, Cell, Database, Job, JobPrompt, open_database, utcnow
from reprogrid.models.db import alembic_config
from reprogrid.models.queries import PROMPT_FTS, TRIGRAM_INDEX
from reprogrid.scheduler.grid import expand
from reprogrid.scheduler.spec import validate_spec
from reprogrid.worker.embedded import run_job
from reprogrid.worker.execute import WorkerContext


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


def test_a_job_made_before_0009_keeps_its_stored_recipes_and_runs_and_verifies(
    cli: Cli, sqlite_url: str, tmp_path
) -> None:
    old = open_database(sqlite_url, migrate=False)
    config = alembic_config()
    with old.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0008")
        spec = validate_spec(OLD_SPEC, max_cells=100)
        _insert_as_0008_did(connection, spec)
    old.dispose()
    db = open_database(sqlite_url)
    with db.reads() as session:
        cells = session.scalars(select(Cell).order_by(Cell.grid_index)).all()
        assert all(cell.recipe is not None for cell in cells)
        prompts = session.scalars(select(JobPrompt.prompt).where(JobPrompt.job_id == 1))
        assert sorted(prompts) == ["a blue bird", "a red fox"]
    settings = Settings(store=tmp_path / "store", threads=1)
    assert run_job(WorkerContext.start(settings, db, "cpu", "w1"), 1) == "done"
    db.dispose()
    verified = cli("verify", "1", "--format", "json")
    assert verified.exit_code == 0, verified.output
    assert {row["verdict"] for row in json.loads(verified.output)} == {"identical"}
    shown = cli("show", f"sha:{cells[3].recipe_sha256[:10]}", "--format", "json")
    assert json.loads(shown.output)["recipe"] == json.loads(cells[3].recipe)
    found = cli("query", "--prompt", "BIRD", "--format", "json")
    assert [row["cell_id"] for row in json.loads(found.output)] == [3, 4]


OLD_SPEC = {
    "prompts": ["a red fox", "a blue bird"],
    "seeds": "0-1",
    "steps": 2,
    "width": 64,
    "height": 64,
    "batch_size": 2,
}


def _insert_as_0008_did(connection, spec) -> None:
    """Job 1 and its cells as create_job wrote them up to 0008: every cell's whole recipe."""
    connection.execute(
        insert(Job.__table__).values(
            id=1,
            name="old",
            model=spec.model,
            spec=spec.to_json(),
            status="queued",
            priority=0,
            cell_count=spec.cell_count,
            created_at=utcnow(),
        )
    )
    connection.execute(
        insert(Cell.__table__),
        [
            {
                "job_id": 1,
                "grid_index": c.grid_index,
                "prompt": c.prompt,
                "seed": c.seed,
                "params": c.params,
                "recipe": c.recipe,
                "recipe_sha256": c.recipe_sha256,
                "batch_key": c.batch_key,
                "status": "queued",
                "attempts": 0,
            }
            for c in expand(spec)
        ],
    )
