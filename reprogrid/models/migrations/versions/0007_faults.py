"""batch.retry_at (backoff), worker.state (consuming or not), the fleet table (database identity)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batch", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("worker", schema=None) as worker_op:
        worker_op.add_column(sa.Column("state", sa.String(length=200), nullable=True))
    fleet = op.create_table(
        "fleet",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fleet_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(
        fleet, [{"id": 1, "fleet_id": uuid.uuid4().hex, "created_at": datetime.now(UTC)}]
    )


def downgrade() -> None:
    op.drop_table("fleet")
    with op.batch_alter_table("worker", schema=None) as worker_op:
        worker_op.drop_column("state")
    with op.batch_alter_table("batch", schema=None) as batch_op:
        batch_op.drop_column("retry_at")
