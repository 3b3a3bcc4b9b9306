"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "checkpoint",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=500), nullable=False),
        sa.Column("revision", sa.String(length=200), nullable=True),
        sa.Column("revision_key", sa.String(length=200), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model", "revision_key", "sha256"),
    )
    with op.batch_alter_table("checkpoint", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_checkpoint_sha256"), ["sha256"], unique=False)

    op.create_table(
        "environment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("device_type", sa.String(length=16), nullable=False),
        sa.Column("device_name", sa.String(length=255), nullable=False),
        sa.Column("torch", sa.String(length=64), nullable=False),
        sa.Column("diffusers", sa.String(length=64), nullable=False),
        sa.Column("transformers", sa.String(length=64), nullable=False),
        sa.Column("python", sa.String(length=64), nullable=False),
        sa.Column("threads", sa.Integer(), nullable=False),
        sa.Column("dtype", sa.String(length=16), nullable=False),
        sa.Column("full_determinism", sa.Boolean(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("fingerprint"),
    )
    op.create_table(
        "job",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("model", sa.String(length=500), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("parent_image_id", sa.Integer(), nullable=True),
        sa.Column("cell_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_model"), ["model"], unique=False)
        batch_op.create_index(batch_op.f("ix_job_status"), ["status"], unique=False)

    op.create_table(
        "batch",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("cell_ids", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("queue", sa.String(length=100), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("batch", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_batch_job_id"), ["job_id"], unique=False)
        batch_op.create_index("ix_batch_status_lease", ["status", "lease_until"], unique=False)

    op.create_table(
        "worker",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("device", sa.String(length=32), nullable=False),
        sa.Column("queue", sa.String(length=100), nullable=False),
        sa.Column("environment_id", sa.Integer(), nullable=True),
        sa.Column("current_batch_id", sa.Integer(), nullable=True),
        sa.Column("checkpoints", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environment.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "cell",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("grid_index", sa.Integer(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("recipe", sa.Text(), nullable=False),
        sa.Column("recipe_sha256", sa.String(length=64), nullable=False),
        sa.Column("batch_key", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["batch.id"],
        ),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "grid_index"),
    )
    with op.batch_alter_table("cell", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cell_batch_id"), ["batch_id"], unique=False)
        batch_op.create_index("ix_cell_job_status", ["job_id", "status"], unique=False)
        batch_op.create_index(batch_op.f("ix_cell_recipe_sha256"), ["recipe_sha256"], unique=False)
        batch_op.create_index("ix_cell_seed", ["seed"], unique=False)

    op.create_table(
        "image",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cell_id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("index_in_batch", sa.Integer(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("pixel_sha256", sa.String(length=64), nullable=False),
        sa.Column("png_sha256", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("environment_id", sa.Integer(), nullable=False),
        sa.Column("checkpoint_id", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("generate_seconds", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["batch.id"],
        ),
        sa.ForeignKeyConstraint(["cell_id"], ["cell.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["checkpoint_id"],
            ["checkpoint.id"],
        ),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environment.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("cell_id"),
    )
    with op.batch_alter_table("image", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_image_batch_id"), ["batch_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_image_checkpoint_id"), ["checkpoint_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_image_environment_id"), ["environment_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_image_pixel_sha256"), ["pixel_sha256"], unique=False)
        batch_op.create_index(batch_op.f("ix_image_png_sha256"), ["png_sha256"], unique=False)

    op.create_table(
        "verification",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("environment_id", sa.Integer(), nullable=True),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("pixel_sha256", sa.String(length=64), nullable=True),
        sa.Column("max_abs_diff", sa.Float(), nullable=True),
        sa.Column("mean_abs_diff", sa.Float(), nullable=True),
        sa.Column("psnr", sa.Float(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environment.id"],
        ),
        sa.ForeignKeyConstraint(["image_id"], ["image.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("verification", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_verification_image_id"), ["image_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_verification_verdict"), ["verdict"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("verification", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_verification_verdict"))
        batch_op.drop_index(batch_op.f("ix_verification_image_id"))

    op.drop_table("verification")
    with op.batch_alter_table("image", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_image_png_sha256"))
        batch_op.drop_index(batch_op.f("ix_image_pixel_sha256"))
        batch_op.drop_index(batch_op.f("ix_image_environment_id"))
        batch_op.drop_index(batch_op.f("ix_image_checkpoint_id"))
        batch_op.drop_index(batch_op.f("ix_image_batch_id"))

    op.drop_table("image")
    with op.batch_alter_table("cell", schema=None) as batch_op:
        batch_op.drop_index("ix_cell_seed")
        batch_op.drop_index(batch_op.f("ix_cell_recipe_sha256"))
        batch_op.drop_index("ix_cell_job_status")
        batch_op.drop_index(batch_op.f("ix_cell_batch_id"))

    op.drop_table("cell")
    op.drop_table("worker")
    with op.batch_alter_table("batch", schema=None) as batch_op:
        batch_op.drop_index("ix_batch_status_lease")
        batch_op.drop_index(batch_op.f("ix_batch_job_id"))

    op.drop_table("batch")
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_status"))
        batch_op.drop_index(batch_op.f("ix_job_model"))

    op.drop_table("job")
    op.drop_table("environment")
    with op.batch_alter_table("checkpoint", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_checkpoint_sha256"))

    op.drop_table("checkpoint")
