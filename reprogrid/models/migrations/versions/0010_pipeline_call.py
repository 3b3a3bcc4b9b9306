"""pipeline_call (each distinct call a pipeline received) and image.call_id

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pipeline_call",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("call", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sha256"),
    )
    # A plain ADD COLUMN (no foreign key): SQLite adds it without copying the image table.
    op.add_column("image", sa.Column("call_id", sa.Integer(), nullable=True))
    op.create_index("ix_image_call_id", "image", ["call_id"])


def downgrade() -> None:
    op.drop_index("ix_image_call_id", table_name="image")
    with op.batch_alter_table("image", schema=None) as batch_op:
        batch_op.drop_column("call_id")
    op.drop_table("pipeline_call")
