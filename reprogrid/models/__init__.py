"""Database tables, engine and sessions, and the Alembic migrations that build them."""

from reprogrid.models.db import Database, open_database
from reprogrid.models.tables import (
    CANCELLED,
    DONE,
    FAILED,
    FINISHED,
    PENDING,
    QUEUED,
    RUNNING,
    Base,
    Batch,
    Cell,
    Checkpoint,
    Environment,
    Image,
    Job,
    Verification,
    Worker,
    utcnow,
)

__all__ = [
    "CANCELLED",
    "DONE",
    "FAILED",
    "FINISHED",
    "PENDING",
    "QUEUED",
    "RUNNING",
    "Base",
    "Batch",
    "Cell",
    "Checkpoint",
    "Database",
    "Environment",
    "Image",
    "Job",
    "Verification",
    "Worker",
    "open_database",
    "utcnow",
]
