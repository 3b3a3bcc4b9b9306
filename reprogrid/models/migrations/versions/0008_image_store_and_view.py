"""image.store (the folder each PNG was written under) and the flat image_view

One row per image, for SQL without JSON digging: its job, cell and recipe
fields as columns (absent from an older recipe: NULL), the seed as exact
unsigned decimal text, checkpoint and image hashes, the path where the PNG was
written, the device and library versions, and the latest verdict.
docs/schema.md documents the columns.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

VIEW = "image_view"
# Recipe fields as columns, with their SQL type ("text", "integer", "real", "boolean"
# (0/1 in SQLite) or "json": a list as JSON text).
# Fields a recipe may lack (older recipes, other families) read as NULL.
RECIPE_FIELDS = (
    ("negative_prompt", "text"),
    ("model", "text"),
    ("revision", "text"),
    ("family", "text"),
    ("pipeline", "text"),
    ("sampler", "text"),
    ("schedule_type", "text"),
    ("timestep_spacing", "text"),
    ("solver_order", "integer"),
    ("algorithm_type", "text"),
    ("steps", "integer"),
    ("guidance_scale", "real"),
    ("distilled_guidance_scale", "real"),
    ("width", "integer"),
    ("height", "integer"),
    ("dtype", "text"),
    ("resolution_binning", "boolean"),
    ("clean_caption", "boolean"),
    ("max_sequence_length", "integer"),
    ("safety_checker", "boolean"),
    ("adapters", "json"),
    ("recipe_version", "integer"),
)
POSTGRESQL_TYPES = {
    "text": "::text",
    "integer": "::integer",
    "real": "::double precision",
    "boolean": "::boolean",
    "json": "",  # the JSON text as stored
}
TWO_TO_THE_64 = 2**64
# SQLite has no integer wider than 64 bits: a stored seed below zero (seed - 2**64)
# is written as decimal text in two parts of ten digits, 2**64 = 1844674407|3709551616.
SQLITE_LOW = "(3709551616 + c.seed % 10000000000)"
SQLITE_BORROW = f"({SQLITE_LOW} < 0)"
SQLITE_SEED = (
    "CASE WHEN c.seed >= 0 THEN CAST(c.seed AS TEXT) ELSE"
    f" CAST(1844674407 + c.seed / 10000000000 - {SQLITE_BORROW} AS TEXT)"
    f" || printf('%010d', {SQLITE_LOW} + 10000000000 * {SQLITE_BORROW}) END"
)
POSTGRESQL_SEED = (
    f"CASE WHEN c.seed >= 0 THEN c.seed::text ELSE (c.seed::numeric + {TWO_TO_THE_64})::text END"
)


def _recipe_column(dialect: str, name: str, kind: str) -> str:
    if dialect == "sqlite":
        return f"json_extract(c.recipe, '$.{name}') AS {name}"
    return f"(c.recipe::jsonb ->> '{name}'){POSTGRESQL_TYPES[kind]} AS {name}"


def view_sql(dialect: str) -> str:
    """The CREATE VIEW statement for ``dialect`` (sqlite or postgresql)."""
    seed = SQLITE_SEED if dialect == "sqlite" else POSTGRESQL_SEED
    recipe = ",\n  ".join(_recipe_column(dialect, n, k) for n, k in RECIPE_FIELDS)
    return f"""CREATE VIEW {VIEW} AS SELECT
  i.id AS image_id,
  c.job_id AS job_id,
  j.name AS job_name,
  c.id AS cell_id,
  c.grid_index AS grid_index,
  c.prompt AS prompt,
  {seed} AS seed,
  {recipe},
  k.sha256 AS checkpoint_sha256,
  i.pixel_sha256 AS pixel_sha256,
  i.png_sha256 AS png_sha256,
  c.recipe_sha256 AS recipe_sha256,
  c.truncated AS truncated,
  i.nsfw AS nsfw,
  COALESCE(i.store || '/' || i.path, i.path) AS path,
  e.device_type AS device_type,
  e.device_name AS device_name,
  e.torch AS torch,
  e.diffusers AS diffusers,
  e.transformers AS transformers,
  e.python AS python,
  i.worker AS worker,
  i.created_at AS created_at,
  (SELECT v.verdict FROM verification v WHERE v.image_id = i.id
   ORDER BY v.id DESC LIMIT 1) AS verdict
FROM image i
JOIN cell c ON c.id = i.cell_id
JOIN job j ON j.id = c.job_id
JOIN checkpoint k ON k.id = i.checkpoint_id
JOIN environment e ON e.id = i.environment_id"""


def upgrade() -> None:
    with op.batch_alter_table("image", schema=None) as batch_op:
        batch_op.add_column(sa.Column("store", sa.String(length=1000), nullable=True))
    op.execute(view_sql(op.get_bind().dialect.name))


def downgrade() -> None:
    op.execute(f"DROP VIEW {VIEW}")
    with op.batch_alter_table("image", schema=None) as batch_op:
        batch_op.drop_column("store")
