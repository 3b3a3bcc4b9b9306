"""image_view.seed becomes a number, seed_text keeps the exact decimal text

0008's ``seed`` column was exact unsigned decimal text, so ``WHERE seed = 3``
found nothing on SQLite and failed on PostgreSQL (``text = integer``), ``ORDER
BY seed`` sorted 0, 1, 10, 100 and pandas read strings. Now:

- ``seed``: on PostgreSQL ``numeric(20,0)``, exact for every unsigned 64-bit
  seed. On SQLite an INTEGER for every seed below 2**63; a seed of 2**63 or
  more, which SQLite cannot hold as an integer, is a REAL within 2**11 of it
  (doubles are 2**11 apart there). SQLite compares INTEGER and REAL values
  numerically and exactly, so ``=``, ``<``, ``ORDER BY``, ``min`` and ``max``
  stay right for every seed below 2**63 and those past it sort after them, in
  order (NULL would sort first and drop out of every comparison); only seeds
  past 2**63 closer than about 2**11 to each other may compare equal, and
  ``typeof(seed) = 'real'`` flags them.
- ``seed_text``: the exact unsigned decimal text of every seed (0008's
  ``seed``): where to read a seed past 2**63 on SQLite.

Every other column is 0009's.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

import importlib.util
from pathlib import Path

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def _load(filename: str, name: str):
    path = Path(__file__).with_name(filename)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_0008 = _load("0008_image_store_and_view.py", "reprogrid_migration_0008")
view_0009 = _load("0009_cells_per_batch_key.py", "reprogrid_migration_0009").view_sql
VIEW = _0008.VIEW
TEXT_SEED = {"sqlite": _0008.SQLITE_SEED, "postgresql": _0008.POSTGRESQL_SEED}
# A negative stored seed is seed - 2**64. On SQLite the sum is REAL (2**64 is no integer
# there): rounding keeps the order, never reverses it.
NUMERIC_SEED = {
    "sqlite": "CASE WHEN c.seed >= 0 THEN c.seed ELSE c.seed + 18446744073709551616.0 END",
    "postgresql": (
        "(CASE WHEN c.seed >= 0 THEN c.seed::numeric"
        f" ELSE c.seed::numeric + {_0008.TWO_TO_THE_64} END)::numeric(20,0)"
    ),
}


def view_sql(dialect: str) -> str:
    """image_view of 0009, with ``seed`` a number and its exact text as ``seed_text``."""
    sql = view_0009(dialect)
    old = f"  {TEXT_SEED[dialect]} AS seed,\n"
    if sql.count(old) != 1:
        raise RuntimeError(f"0011: the seed column of 0009's image_view ({dialect}) is not {old}")
    return sql.replace(
        old, f"  {NUMERIC_SEED[dialect]} AS seed,\n  {TEXT_SEED[dialect]} AS seed_text,\n"
    )


def upgrade() -> None:
    op.execute(f"DROP VIEW {VIEW}")
    op.execute(view_sql(op.get_bind().dialect.name))


def downgrade() -> None:
    op.execute(f"DROP VIEW {VIEW}")
    op.execute(view_0009(op.get_bind().dialect.name))
