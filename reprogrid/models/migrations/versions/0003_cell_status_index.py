"""index cells by status, then job and grid order

``reprogrid query --status failed`` (and ``--job N --status S``) read the
matching cells in job and grid order from this index instead of scanning
every cell: 1 s became milliseconds over a million cells (docs/benchmarks.md).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_cell_status_job_grid", "cell", ["status", "job_id", "grid_index"])


def downgrade() -> None:
    op.drop_index("ix_cell_status_job_grid", table_name="cell")
