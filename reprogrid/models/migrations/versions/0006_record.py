"""The record grows: prompt_tokens, cell.truncated, image.nsfw, batch.warnings

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prompt_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("tokens", sa.JSON(), nullable=False),
        sa.Column("limits", sa.JSON(), nullable=False),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_prompt_tokens_job_id", "prompt_tokens", ["job_id"])
    with op.batch_alter_table("cell", schema=None) as batch_op:
        batch_op.add_column(sa.Column("truncated", sa.Boolean(), nullable=True))
    with op.batch_alter_table("image", schema=None) as batch_op:
        batch_op.add_column(sa.Column("nsfw", sa.Boolean(), nullable=True))
    with op.batch_alter_table("batch", schema=None) as batch_op:
        batch_op.add_column(sa.Column("warnings", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batch", schema=None) as batch_op:
        batch_op.drop_column("warnings")
    with op.batch_alter_table("image", schema=None) as batch_op:
        batch_op.drop_column("nsfw")
    with op.batch_alter_table("cell", schema=None) as batch_op:
        batch_op.drop_column("truncated")
    op.drop_index("ix_prompt_tokens_job_id", table_name="prompt_tokens")
    op.drop_table("prompt_tokens")
