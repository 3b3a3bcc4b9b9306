"""Lighter cells: recipes per batch key, recipe_sha256 on the image, prompts trigram-indexed

New cells store no recipe (``cell.recipe`` NULL): the recipe shared by a batch
key is one ``recipe_base`` row and a cell's recipe is rebuilt from it, its
prompt and its seed (``models/recipes.py``). Cells made before keep theirs.
``cell.job_id`` loses its foreign key (its check was most of PostgreSQL's
time inserting a million cells). The two random-key indexes leave ``cell``:
``ix_cell_recipe_sha256`` becomes ``ix_image_recipe_sha256`` (``show <prefix>``
finds images), ``ix_cell_seed`` goes (``query --seed`` finds cells by grid
arithmetic). ``job_prompt`` holds each job's prompts and positions, indexed for
substring search: FTS5 with the trigram tokenizer on SQLite, pg_trgm's GIN
index on PostgreSQL where the extension can be created (else a one-line note,
and search scans the table).
``image_view`` reads recipe fields from the cell's recipe or its base.
``job.seeds`` and ``job.combinations`` give a grid's shape without its spec.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

import importlib.util
import sys
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from sqlalchemy.exc import DBAPIError

from reprogrid.scheduler.seeds import parse_seeds

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _load_0008():
    path = Path(__file__).with_name("0008_image_store_and_view.py")
    spec = importlib.util.spec_from_file_location("reprogrid_migration_0008", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


view_0008 = _load_0008().view_sql
FTS_TABLE = "job_prompt_fts"
TRIGRAM_INDEX = "ix_job_prompt_trgm"
SQLITE_SEARCH = (
    f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5("
    "prompt, content='job_prompt', content_rowid='id', tokenize='trigram')",
    f"CREATE TRIGGER job_prompt_fts_insert AFTER INSERT ON job_prompt BEGIN"
    f" INSERT INTO {FTS_TABLE} (rowid, prompt) VALUES (new.id, new.prompt); END",
    f"CREATE TRIGGER job_prompt_fts_delete AFTER DELETE ON job_prompt BEGIN"
    f" INSERT INTO {FTS_TABLE} ({FTS_TABLE}, rowid, prompt)"
    " VALUES ('delete', old.id, old.prompt); END",
)
PG_TRGM_NOTE = (
    "reprogrid: note: PostgreSQL extension pg_trgm could not be created ({reason});"
    " query --prompt scans job_prompt unindexed. As a superuser: CREATE EXTENSION pg_trgm;"
    f" CREATE INDEX {TRIGRAM_INDEX} ON job_prompt USING gin (prompt gin_trgm_ops);"
)


def view_sql(dialect: str) -> str:
    """image_view of 0008, with recipe fields read from the cell's recipe or its base."""
    recipe = "COALESCE(c.recipe, b.recipe)"
    sql = view_0008(dialect).replace("json_extract(c.recipe,", f"json_extract({recipe},")
    sql = sql.replace("(c.recipe::jsonb", f"({recipe}::jsonb")
    return sql.replace(
        "JOIN job j ON j.id = c.job_id",
        "JOIN job j ON j.id = c.job_id\n"
        "LEFT JOIN recipe_base b ON b.job_id = c.job_id AND b.batch_key = c.batch_key",
    )


def _create_pg_trgm_index(bind: sa.Connection) -> None:
    try:
        with bind.begin_nested():
            bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        print(PG_TRGM_NOTE.format(reason=reason), file=sys.stderr)
        return
    bind.exec_driver_sql(
        f"CREATE INDEX {TRIGRAM_INDEX} ON job_prompt USING gin (prompt gin_trgm_ops)"
    )


def _fill_from_specs(bind: sa.Connection) -> None:
    """Every existing job's grid shape columns, and a job_prompt row per prompt of its spec."""
    jobs = sa.table(
        "job",
        sa.column("id"),
        sa.column("spec", sa.JSON),
        sa.column("cell_count"),
        sa.column("seeds"),
        sa.column("combinations"),
    )
    prompts = sa.table(
        "job_prompt", sa.column("job_id"), sa.column("position"), sa.column("prompt")
    )
    rows = bind.execute(sa.select(jobs.c.id, jobs.c.spec, jobs.c.cell_count)).all()
    for job_id, spec, cell_count in rows:
        texts = spec.get("prompts") or ()
        seeds = parse_seeds(spec["seeds"])
        combinations = cell_count // (len(texts) or 1) // seeds.count
        bind.execute(
            sa.update(jobs)
            .where(jobs.c.id == job_id)
            .values(seeds=str(seeds), combinations=combinations)
        )
        listed = [{"job_id": job_id, "position": i, "prompt": p} for i, p in enumerate(texts)]
        if listed:
            bind.execute(sa.insert(prompts), listed)


def upgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    op.execute("DROP VIEW image_view")
    op.create_table(
        "recipe_base",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("batch_key", sa.String(length=32), nullable=False),
        sa.Column("recipe", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "batch_key"),
    )
    op.create_table(
        "job_prompt",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_job_prompt_job_id", "job_prompt", ["job_id"])
    if dialect == "sqlite":
        for statement in SQLITE_SEARCH:
            op.execute(statement)
    else:
        _create_pg_trgm_index(bind)
    with op.batch_alter_table("job", schema=None) as job_op:
        job_op.add_column(sa.Column("seeds", sa.Text(), nullable=True))
        job_op.add_column(sa.Column("combinations", sa.Integer(), nullable=True))
    _fill_from_specs(bind)
    # SQLite's foreign keys are unnamed: the convention names it for batch mode to drop.
    names = {"fk": "%(table_name)s_%(column_0_name)s_fkey"}
    with op.batch_alter_table("cell", schema=None, naming_convention=names) as cell_op:
        cell_op.drop_constraint("cell_job_id_fkey", type_="foreignkey")
        cell_op.alter_column("recipe", existing_type=sa.Text(), nullable=True)
        cell_op.drop_index("ix_cell_recipe_sha256")
        cell_op.drop_index("ix_cell_seed")
    with op.batch_alter_table("image", schema=None) as image_op:
        image_op.add_column(sa.Column("recipe_sha256", sa.String(length=64), nullable=True))
    op.execute(
        "UPDATE image SET recipe_sha256 ="
        " (SELECT c.recipe_sha256 FROM cell c WHERE c.id = image.cell_id)"
    )
    op.create_index("ix_image_recipe_sha256", "image", ["recipe_sha256"])
    op.execute(view_sql(dialect))


def downgrade() -> None:
    raise NotImplementedError("0009 cannot be undone: cells made since store no recipe")
