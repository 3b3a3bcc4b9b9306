"""The database tables: the source of truth for jobs, cells, batches and images.

docs/schema.md documents every column for people who query the database with
``sqlite3`` or ``psql``. Any change here needs an Alembic migration in
``reprogrid/models/migrations/versions``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Status values, shared by the scheduler and the workers.
QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
PENDING = "pending"  # a batch formed but not yet published
SPLIT = "split"  # a batch replaced by its two halves after running out of GPU memory
FINISHED = frozenset({DONE, FAILED, CANCELLED})


def utcnow() -> datetime:
    """Timestamps are stored in UTC."""
    return datetime.now(UTC)


class Seed(TypeDecorator[int]):
    """An unsigned 64-bit seed stored in a signed BIGINT.

    Seeds of 2**63 and above are stored as ``seed - 2**64``, the same
    two's-complement mapping ``torch.Generator.manual_seed`` applies to negative
    seeds, so every seed fits both SQLite and PostgreSQL integers.
    """

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: int | None, dialect: Any) -> int | None:
        return to_signed_seed(value) if value is not None else None

    def process_result_value(self, value: int | None, dialect: Any) -> int | None:
        return value + 2**64 if value is not None and value < 0 else value


def to_signed_seed(seed: int) -> int:
    """The stored form of an unsigned 64-bit seed."""
    return seed - 2**64 if seed >= 2**63 else seed


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    """Declarative base of every reprogrid table."""

    type_annotation_map: ClassVar = {
        dict[str, Any]: JSON,
        list[int]: JSON,
        list[dict[str, Any]]: JSON,
        datetime: UTCDateTime,
    }


class Job(Base):
    """One submitted grid."""

    __tablename__ = "job"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(500), index=True)
    spec: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default=QUEUED, index=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    not_before: Mapped[datetime | None]
    # the Celery queue of a submitted job; None for a job run embedded, which no scheduler touches
    queue: Mapped[str | None] = mapped_column(String(100))
    # no foreign key: job -> image -> cell -> job would be a cycle
    parent_image_id: Mapped[int | None] = mapped_column(Integer)
    cell_count: Mapped[int] = mapped_column(Integer)
    # The grid's shape without parsing the spec (whose prompt list may be huge): its seed
    # list as ranges and how many [axes] combinations it has (migration 0009).
    seeds: Mapped[str | None] = mapped_column(Text)
    combinations: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Cell(Base):
    """One image to make: a point of the grid."""

    __tablename__ = "cell"
    __table_args__ = (
        UniqueConstraint("job_id", "grid_index"),
        Index("ix_cell_job_status", "job_id", "status"),
        # query --status S [--job N]: matching cells already in job and grid order
        Index("ix_cell_status_job_grid", "status", "job_id", "grid_index"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # No foreign key (since 0009): checking it cost PostgreSQL 8 s per million cells, and
    # create_job writes a job's cells in the job's own transaction. Delete cells first.
    job_id: Mapped[int] = mapped_column(Integer)
    grid_index: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[str | None] = mapped_column(Text)
    seed: Mapped[int] = mapped_column(Seed)
    params: Mapped[dict[str, Any]]
    # Cells made before migration 0009 keep their recipe here; newer ones are NULL and
    # rebuilt from their RecipeBase row, prompt and seed (models/recipes.py).
    recipe: Mapped[str | None] = mapped_column(Text)
    recipe_sha256: Mapped[str] = mapped_column(String(64))
    batch_key: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batch.id"), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    # a text encoder cuts its prompt or negative prompt (see prompt_tokens); None: not tokenized
    truncated: Mapped[bool | None] = mapped_column(Boolean)

    job: Mapped[Job] = relationship(primaryjoin="foreign(Cell.job_id) == Job.id")
    image: Mapped[Image | None] = relationship(back_populates="cell", foreign_keys="Image.cell_id")


class Batch(Base):
    """Cells that run together in one pipeline call, in this order."""

    __tablename__ = "batch"
    __table_args__ = (Index("ix_batch_status_lease", "status", "lease_until"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="generate")
    cell_ids: Mapped[list[int]]
    # verify batches: how to regenerate (Replay's fields); None replays as recorded
    replay: Mapped[dict[str, Any] | None]
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    queue: Mapped[str] = mapped_column(String(100), default="default")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None]
    worker: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    # warnings diffusers, transformers and torch raised while it computed
    warnings: Mapped[list[dict[str, Any]] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    published_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # a failed attempt's backoff: not dispatched again before this time
    retry_at: Mapped[datetime | None]


class RecipeBase(Base):
    """The recipe shared by a job's cells of one batch key: everything but prompt and seed."""

    __tablename__ = "recipe_base"
    __table_args__ = (UniqueConstraint("job_id", "batch_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"))
    batch_key: Mapped[str] = mapped_column(String(32))
    recipe: Mapped[str] = mapped_column(Text)  # canonical JSON, without prompt and seed


class JobPrompt(Base):
    """One prompt of a job's prompt list: what ``query --prompt`` searches (trigram-indexed)."""

    __tablename__ = "job_prompt"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # in the spec's prompts, from 0
    prompt: Mapped[str] = mapped_column(Text)


class PromptTokens(Base):
    """How many tokens one distinct prompt (or negative prompt) of a job takes, per tokenizer."""

    __tablename__ = "prompt_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))  # prompt or negative_prompt
    text: Mapped[str] = mapped_column(Text)
    tokens: Mapped[dict[str, Any]]  # tokenizer folder -> token count, special tokens included
    limits: Mapped[dict[str, Any]]  # tokenizer folder -> tokens its text encoder reads
    truncated: Mapped[bool] = mapped_column(Boolean)


class Environment(Base):
    """Where an image was computed: device, libraries, thread count, flags."""

    __tablename__ = "environment"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    hostname: Mapped[str] = mapped_column(String(255))
    device_type: Mapped[str] = mapped_column(String(16))
    device_name: Mapped[str] = mapped_column(String(255))
    torch: Mapped[str] = mapped_column(String(64))
    diffusers: Mapped[str] = mapped_column(String(64))
    transformers: Mapped[str] = mapped_column(String(64))
    python: Mapped[str] = mapped_column(String(64))
    threads: Mapped[int] = mapped_column(Integer)
    dtype: Mapped[str] = mapped_column(String(16))
    full_determinism: Mapped[bool] = mapped_column(Boolean)
    details: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Checkpoint(Base):
    """A checkpoint's identity: model reference and the hashes of its files."""

    __tablename__ = "checkpoint"
    __table_args__ = (UniqueConstraint("model", "revision_key", "sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str] = mapped_column(String(500))
    revision: Mapped[str | None] = mapped_column(String(200))
    # revision or "" — NULLs never collide in a unique constraint
    revision_key: Mapped[str] = mapped_column(String(200), default="")
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    files: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PipelineCall(Base):
    """A pipeline call as the pipeline received it, once per distinct call (JSON in ``call``).

    Its pixel-affecting ``__call__`` arguments by diffusers' names (passed or
    the pipeline's defaults), the per-image ones named, the sampler's class and
    config as built, and whether classifier-free guidance ran
    (``reprogrid/worker/pipeline_call.py``).
    """

    __tablename__ = "pipeline_call"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    call: Mapped[str] = mapped_column(Text)  # canonical JSON
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Image(Base):
    """The result of one cell: hashes, file, and the conditions it was made in."""

    __tablename__ = "image"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cell_id: Mapped[int] = mapped_column(ForeignKey("cell.id", ondelete="CASCADE"), unique=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batch.id"), index=True)
    index_in_batch: Mapped[int] = mapped_column(Integer)
    batch_size: Mapped[int] = mapped_column(Integer)
    pixel_sha256: Mapped[str] = mapped_column(String(64), index=True)
    png_sha256: Mapped[str] = mapped_column(String(64), index=True)
    # the cell's recipe_sha256, copied when the image is recorded: ``show <prefix>`` looks here
    recipe_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    path: Mapped[str] = mapped_column(String(500))  # relative to the store
    # The store folder the file was written under, absolute as its worker saw it
    # (NULL for images recorded before migration 0008: read under the current store).
    store: Mapped[str | None] = mapped_column(String(1000))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    environment_id: Mapped[int] = mapped_column(ForeignKey("environment.id"), index=True)
    checkpoint_id: Mapped[int] = mapped_column(ForeignKey("checkpoint.id"), index=True)
    # the pipeline_call row of the call that made it (NULL for images recorded
    # before migration 0010); no foreign key, so adding it copies no table
    call_id: Mapped[int | None] = mapped_column(Integer, index=True)
    worker: Mapped[str | None] = mapped_column(String(200))
    generate_seconds: Mapped[float] = mapped_column(Float)
    # the checkpoint's safety checker flagged it (and blacked it out); None: no checker ran
    nsfw: Mapped[bool | None] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    cell: Mapped[Cell] = relationship(back_populates="image", foreign_keys=[cell_id])
    environment: Mapped[Environment] = relationship()
    checkpoint: Mapped[Checkpoint] = relationship()


class Verification(Base):
    """One check of an image against its record: a regeneration or a file re-hash."""

    __tablename__ = "verification"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"), index=True)
    environment_id: Mapped[int | None] = mapped_column(ForeignKey("environment.id"))
    mode: Mapped[str] = mapped_column(String(16))
    verdict: Mapped[str] = mapped_column(String(16), index=True)
    pixel_sha256: Mapped[str | None] = mapped_column(String(64))
    max_abs_diff: Mapped[float | None] = mapped_column(Float)
    mean_abs_diff: Mapped[float | None] = mapped_column(Float)
    psnr: Mapped[float | None] = mapped_column(Float)
    details: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Worker(Base):
    """A live (or lately live) worker process and what it is doing."""

    __tablename__ = "worker"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(32))
    queue: Mapped[str] = mapped_column(String(100))
    environment_id: Mapped[int | None] = mapped_column(ForeignKey("environment.id"))
    current_batch_id: Mapped[int | None] = mapped_column(Integer)
    checkpoints: Mapped[list[int]]
    # Checkpoint loads by this process (a model axis costs one per checkpoint per worker).
    checkpoint_loads: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    # None while consuming; otherwise why not ("not consuming: broker lost", ...)
    state: Mapped[str | None] = mapped_column(String(200))


class Fleet(Base):
    """The database's identity (one row, made by migration 0007): named in every message."""

    __tablename__ = "fleet"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fleet_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
