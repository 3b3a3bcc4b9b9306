"""Verification vocabulary (modes, verdicts, the default tolerance) and its read-only queries.

A verification checks one image against its record: by regenerating it, either
inside a replay of its whole original batch (mode ``batch``) or on its own
(mode ``alone``), or by re-hashing its stored file (mode ``files``). These
queries select the images to check, in the order their batches ran, and
summarise verdicts per pair of environments (original run, verifier).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from reprogrid.models.queries import NotFound
from reprogrid.models.tables import Cell, Environment, Image, Job, Verification, Worker

BATCH, ALONE, FILES = "batch", "alone", "files"

# Verdicts of a regeneration.
IDENTICAL, CLOSE, DIFFERENT, ERROR = "identical", "close", "different", "error"
# Verdicts of a stored file's check, besides IDENTICAL (every link holds): see
# worker/files_check.py. A regeneration whose stored file fails its check gets these too.
FILE_CHANGED, PIXELS_CHANGED, MISSING, UNREADABLE, RECORD_CHANGED = (
    "file-changed",
    "pixels-changed",
    "missing",
    "unreadable",
    "record-changed",
)
FILE_VERDICTS = (FILE_CHANGED, PIXELS_CHANGED, MISSING, UNREADABLE, RECORD_CHANGED)
VERDICTS = (IDENTICAL, CLOSE, DIFFERENT, ERROR, *FILE_VERDICTS)
PASSING = frozenset({IDENTICAL, CLOSE})
REGENERATION_VERDICTS = (IDENTICAL, CLOSE, DIFFERENT, ERROR)

# Largest per-channel difference, in uint8 levels, still called "close". diffusers'
# tests accept float differences of 1e-3 to 1e-2 of full scale (0.26 to 2.6 levels);
# two levels is the largest whole number of levels inside that range (7.8e-3 of
# full scale, PSNR >= 42.1 dB even if every pixel were off by 2).
DEFAULT_TOLERANCE = 2

# Batch.kind of the batches that workers run as verifications.
VERIFY_KIND = "verify"


@dataclass(frozen=True)
class ImageRef:
    """What checking one image needs to know about it, without loading its rows."""

    image_id: int
    job_id: int
    cell_id: int
    batch_id: int
    index_in_batch: int
    pixel_sha256: str
    png_sha256: str
    path: str


def images_to_verify(
    session: Session,
    job: int | None = None,
    image_ids: Sequence[int] = (),
    cell_ids: Sequence[int] = (),
) -> list[ImageRef]:
    """The images of a job, or with these ids, or of these cells, in the order they were made."""
    query = (
        select(
            Image.id,
            Cell.job_id,
            Image.cell_id,
            Image.batch_id,
            Image.index_in_batch,
            Image.pixel_sha256,
            Image.png_sha256,
            Image.path,
        )
        .join(Cell, Cell.id == Image.cell_id)
        .order_by(Image.batch_id, Image.index_in_batch)
    )
    if job is not None:
        if session.get(Job, job) is None:
            raise NotFound(f"no job {job}")
        query = query.where(Cell.job_id == job)
    elif image_ids:
        query = query.where(Image.id.in_(image_ids))
    else:
        query = query.where(Image.cell_id.in_(cell_ids))
    refs = [ImageRef(*row) for row in session.execute(query)]
    missing = set(image_ids) - {r.image_id for r in refs}
    if missing:
        raise NotFound(f"no image {min(missing)}")
    return refs


def sample_images(refs: list[ImageRef], count: int | None) -> list[ImageRef]:
    """``count`` images picked at random (all if there are fewer), kept in the order made."""
    if count is None or count >= len(refs):
        return refs
    picked = random.sample(range(len(refs)), count)
    return [refs[i] for i in sorted(picked)]


def group_by_batch(refs: list[ImageRef]) -> dict[int, list[ImageRef]]:
    """Images grouped by the batch that made them, so each batch is replayed once."""
    ordered = sorted(refs, key=lambda r: (r.batch_id, r.index_in_batch))
    return {
        batch_id: list(group)
        for batch_id, group in itertools.groupby(ordered, key=lambda r: r.batch_id)
    }


def worker_queue(session: Session, name: str) -> str:
    """The queue a worker listens on."""
    queue = session.scalar(select(Worker.queue).where(Worker.name == name))
    if queue is None:
        raise NotFound(f"no worker named {name!r}")
    return queue


def verification_summary(session: Session, job: int | None = None) -> list[dict[str, Any]]:
    """Regeneration verdicts per (original environment, verifier environment, mode).

    Counts images, each by its latest verification in that verifier environment
    and mode, so verifying twice does not count an image twice.
    """
    latest = (
        select(func.max(Verification.id))
        .where(Verification.mode != FILES, Verification.environment_id.is_not(None))
        .group_by(Verification.image_id, Verification.environment_id, Verification.mode)
    )
    query = (
        select(
            Image.environment_id,
            Verification.environment_id,
            Verification.mode,
            Verification.verdict,
            func.count(),
        )
        .join(Image, Image.id == Verification.image_id)
        .where(Verification.id.in_(latest))
        .group_by(
            Image.environment_id,
            Verification.environment_id,
            Verification.mode,
            Verification.verdict,
        )
    )
    if job is not None:
        query = query.join(Cell, Cell.id == Image.cell_id).where(Cell.job_id == job)
    rows: dict[tuple[int, int, str], dict[str, Any]] = {}
    for original, verifier, mode, verdict, count in session.execute(query):
        row = rows.setdefault(
            (original, verifier, mode),
            {
                "original_env": original,
                "verifier_env": verifier,
                "mode": mode,
                **dict.fromkeys(REGENERATION_VERDICTS, 0),
            },
        )
        row[verdict] = count
    return [rows[key] for key in sorted(rows)]


def environment_details(session: Session, ids: set[int]) -> dict[int, dict[str, Any]]:
    """The recorded description of each environment, by id."""
    found = select(Environment.id, Environment.details).where(Environment.id.in_(ids))
    return {row.id: row.details for row in session.execute(found)}
