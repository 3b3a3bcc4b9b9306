"""Database state changes made by workers: claim, renew, record, fail.

Every change is conditional on the state the worker expects (the batch is
still ``running`` and leased to this worker), so a late, duplicated or stolen
batch can never overwrite another worker's result, and the unique constraint
on ``image.cell_id`` keeps one image per cell whatever happens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from reprogrid.models import (
    CANCELLED,
    DONE,
    FAILED,
    FINISHED,
    PENDING,
    QUEUED,
    RUNNING,
    SPLIT,
    Batch,
    Cell,
    Checkpoint,
    Environment,
    Image,
    Job,
    PipelineCall,
    RecipeBase,
    Verification,
    utcnow,
)
from reprogrid.models.recipes import cell_recipes
from reprogrid.scheduler.control import finish_batch, update_job_status


@dataclass(frozen=True)
class ClaimedBatch:
    """A batch this worker now holds the lease on, with its cells in batch order."""

    batch_id: int
    job_id: int
    attempt: int
    cells: list[tuple[int, int, str]]  # (cell id, grid index, recipe JSON)
    kind: str  # ``batch.kind``: what computing it means (``service.BATCH_WORK``)


def claim_batch(
    session: Session, batch_id: int, worker: str, lease_seconds: int
) -> ClaimedBatch | None:
    """Take the lease on a batch that is waiting, or whose lease ran out.

    Returns None when another worker holds it, it is finished, or its job was
    cancelled. Commits.
    """
    now = utcnow()
    batches, cells, jobs = Batch.__table__, Cell.__table__, Job.__table__
    # Core statements on the tables: this runs before every batch, on the device's time.
    claimable = or_(
        batches.c.status.in_([PENDING, QUEUED]),
        and_(batches.c.status == RUNNING, batches.c.lease_until < now),
    )
    claimed = session.execute(
        update(batches)
        .where(batches.c.id == batch_id, claimable)
        .values(
            status=RUNNING,
            worker=worker,
            attempts=batches.c.attempts + 1,
            lease_until=now + timedelta(seconds=lease_seconds),
            started_at=now,
        )
        .returning(batches.c.job_id, batches.c.attempts, batches.c.cell_ids, batches.c.kind)
    ).one_or_none()
    if claimed is None:
        session.rollback()
        return None
    job_id, attempt, cell_ids, kind = claimed
    job_status = session.scalar(select(jobs.c.status).where(jobs.c.id == job_id))
    if job_status == CANCELLED:
        finish_batch(session, batch_id, worker, CANCELLED, "job cancelled")
        session.commit()
        return None
    by_id = cell_recipes(session, cell_ids)
    session.execute(
        update(cells)
        .where(cells.c.id.in_(cell_ids), cells.c.status.not_in(FINISHED))
        .values(status=RUNNING, attempts=cells.c.attempts + 1)
    )
    if job_status == QUEUED:
        session.execute(
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.status == QUEUED)
            .values(status=RUNNING, started_at=func.coalesce(jobs.c.started_at, now))
        )
    session.commit()
    return ClaimedBatch(batch_id, job_id, attempt, [by_id[i] for i in cell_ids], kind)


def renew_lease(session: Session, batch_id: int, worker: str, lease_seconds: int) -> bool:
    """Extend this worker's lease; False if the batch is no longer ours or was cancelled."""
    result = session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.worker == worker, Batch.status == RUNNING)
        .values(lease_until=utcnow() + timedelta(seconds=lease_seconds))
    )
    job_cancelled = (
        session.scalar(
            select(Job.status).join(Batch, Batch.job_id == Job.id).where(Batch.id == batch_id)
        )
        == CANCELLED
    )
    session.commit()
    return result.rowcount == 1 and not job_cancelled


def environment_id(session: Session, fingerprint: str, info: dict[str, Any]) -> int:
    """The id of the environment row with this fingerprint, inserted if new."""
    return _get_or_insert(
        session,
        select(Environment.id).where(Environment.fingerprint == fingerprint),
        Environment(
            fingerprint=fingerprint,
            hostname=info["hostname"],
            device_type=info["device_type"],
            device_name=info["device_name"],
            torch=info["torch"],
            diffusers=info["diffusers"],
            transformers=info["transformers"],
            python=info["python"],
            threads=info["threads"],
            dtype=info["dtype"],
            full_determinism=info["full_determinism"],
            details=info,
        ),
    )


def checkpoint_id(
    session: Session, model: str, revision: str | None, sha256: str, files: dict[str, str]
) -> int:
    """The id of the checkpoint row for these files, inserted if new."""
    return _get_or_insert(
        session,
        select(Checkpoint.id).where(
            Checkpoint.model == model,
            Checkpoint.revision_key == (revision or ""),
            Checkpoint.sha256 == sha256,
        ),
        Checkpoint(
            model=model, revision=revision, revision_key=revision or "", sha256=sha256, files=files
        ),
    )


def call_id(session: Session, sha256: str, call: str) -> int:
    """The id of the pipeline_call row for this call (canonical JSON), inserted if new."""
    return _get_or_insert(
        session,
        select(PipelineCall.id).where(PipelineCall.sha256 == sha256),
        PipelineCall(sha256=sha256, call=call),
    )


def _get_or_insert(session: Session, query, row) -> int:
    found = session.scalar(query)
    if found is not None:
        return found
    session.add(row)
    try:
        session.commit()
    except IntegrityError:  # a concurrent worker inserted the same row first
        session.rollback()
        return session.scalar(query)
    return row.id


def record_images(
    session: Session,
    claim: ClaimedBatch,
    worker: str,
    images: list[dict[str, Any]],
    warnings: list[dict[str, Any]] | None = None,
) -> list[int]:
    """Insert image rows and finish the batch (with the warnings it raised), unless the lease
    was lost.

    Cells that already have an image (another worker finished them first) keep
    it. Returns the cell ids whose image row is this worker's. Commits.
    """
    still_ours = session.execute(
        update(Batch)
        .where(Batch.id == claim.batch_id, Batch.worker == worker, Batch.status == RUNNING)
        .values(status=DONE, finished_at=utcnow(), lease_until=None, error=None, warnings=warnings)
    ).rowcount
    # Each cell's recipe hash, and whether it has an image already.
    cell_rows = session.execute(
        select(Cell.id, Cell.recipe_sha256, Image.id)
        .outerjoin(Image, Image.cell_id == Cell.id)
        .where(Cell.id.in_([i["cell_id"] for i in images]))
    ).all()
    hashes = {cell_id: recipe_sha256 for cell_id, recipe_sha256, image in cell_rows if not image}
    fresh = [i | {"recipe_sha256": hashes[i["cell_id"]]} for i in images if i["cell_id"] in hashes]
    fresh = fresh if still_ours else []
    if fresh:
        session.execute(insert(Image.__table__), fresh)
        session.execute(
            update(Cell.__table__)
            .where(Cell.id.in_([i["cell_id"] for i in fresh]))
            .values(status=DONE, error=None)
        )
    update_job_status(session, claim.job_id)
    session.commit()
    return [i["cell_id"] for i in fresh]


def record_verifications(
    session: Session, claim: ClaimedBatch, worker: str, rows: list[dict[str, Any]]
) -> bool:
    """Insert verification rows and finish a verify batch, unless the lease was lost. Commits.

    Returns False (and writes nothing) when another worker now holds the batch.
    """
    still_ours = session.execute(
        update(Batch)
        .where(Batch.id == claim.batch_id, Batch.worker == worker, Batch.status == RUNNING)
        .values(status=DONE, finished_at=utcnow(), lease_until=None, error=None)
    ).rowcount
    if still_ours and rows:
        session.execute(insert(Verification), rows)
    session.commit()
    return bool(still_ours)


def fail_batch(
    session: Session, claim: ClaimedBatch, worker: str, error: str, retry_at: datetime | None
) -> bool:
    """Record a failed attempt: run again from ``retry_at``, or (None) fail the cells. Commits.

    Returns True when the batch will be retried.
    """
    retry = retry_at is not None
    if retry:
        owned = session.execute(
            update(Batch)
            .where(Batch.id == claim.batch_id, Batch.worker == worker, Batch.status == RUNNING)
            .values(status=PENDING, lease_until=None, error=error, worker=None, retry_at=retry_at)
        ).rowcount
        if owned:
            _set_cells(session, claim, QUEUED, error)
    else:
        finish_batch(session, claim.batch_id, worker, FAILED, error)
    update_job_status(session, claim.job_id)
    session.commit()
    return retry


def fail_same_calls(session: Session, claim: ClaimedBatch, error: str) -> int:
    """After the pipeline refused a batch's call (a ``CallRefused``: an argument it does
    not take, one it needs, images of another size), fail at once every cell of the job
    still waiting on the same checkpoint, and their waiting batches: each would make the
    same refused call. Cells on another checkpoint of a ``model`` axis, and batches
    running elsewhere, are left alone. Returns the cells failed. Commits."""
    checkpoint = _checkpoint_of(json.loads(claim.cells[0][2]))
    bases = session.execute(
        select(RecipeBase.batch_key, RecipeBase.recipe).where(RecipeBase.job_id == claim.job_id)
    ).all()
    keys = [key for key, recipe in bases if _checkpoint_of(json.loads(recipe)) == checkpoint]
    why = f"not run: the pipeline refused the same call in batch {claim.batch_id}: {error}"
    same = (Cell.job_id == claim.job_id, Cell.batch_key.in_(keys))
    session.execute(
        update(Batch)
        .where(
            Batch.job_id == claim.job_id,
            Batch.status.in_([PENDING, QUEUED]),
            Batch.id.in_(select(Cell.batch_id).where(*same)),
        )
        .values(status=FAILED, finished_at=utcnow(), lease_until=None, error=why)
    )
    failed = session.execute(
        update(Cell).where(*same, Cell.status == QUEUED).values(status=FAILED, error=why)
    ).rowcount
    update_job_status(session, claim.job_id)
    session.commit()
    return failed


def _checkpoint_of(recipe: dict[str, Any]) -> tuple[Any, ...]:
    return recipe["model"], recipe.get("revision"), recipe.get("config")


def release_claims(session: Session, job_id: int, worker: str) -> int:
    """Give back the job's batches this worker runs (it is stopping): they wait again,
    the interrupted attempt not counted, and the job is no longer ``running`` unless
    another worker runs some of it. Returns the batches released. Commits."""
    released = list(
        session.scalars(
            update(Batch)
            .where(Batch.job_id == job_id, Batch.worker == worker, Batch.status == RUNNING)
            .values(
                status=PENDING,
                worker=None,
                lease_until=None,
                attempts=Batch.attempts - 1,  # claimed, so at least 1
            )
            .returning(Batch.id)
        )
    )
    session.execute(
        update(Cell)
        .where(Cell.batch_id.in_(released), Cell.status == RUNNING)
        .values(status=QUEUED)
    )
    still_running = session.scalar(
        select(Batch.id).where(Batch.job_id == job_id, Batch.status == RUNNING).limit(1)
    )
    if still_running is None:
        session.execute(
            update(Job).where(Job.id == job_id, Job.status == RUNNING).values(status=QUEUED)
        )
    session.commit()
    return len(released)


def cancel_batch(session: Session, claim: ClaimedBatch, worker: str) -> None:
    """Mark a batch interrupted by its job's cancellation. Commits."""
    finish_batch(session, claim.batch_id, worker, CANCELLED, "job cancelled")
    update_job_status(session, claim.job_id)
    session.commit()


def _set_cells(session: Session, claim: ClaimedBatch, status: str, error: str) -> None:
    session.execute(
        update(Cell)
        .where(Cell.id.in_([c[0] for c in claim.cells]), Cell.status.not_in(FINISHED))
        .values(status=status, error=error)
    )


def split_batch(session: Session, claim: ClaimedBatch, worker: str, error: str) -> list[int]:
    """Replace a batch that ran out of memory by its two halves, in order. Commits.

    The halves wait to be dispatched like any new batch; each image records the
    batch it was finally computed in. Returns the new batch ids (none if the
    batch was no longer ours).
    """
    if not finish_batch(session, claim.batch_id, worker, SPLIT, error):
        session.rollback()
        return []
    batch = session.get(Batch, claim.batch_id)
    cell_ids = [cell_id for cell_id, _, _ in claim.cells]
    middle = len(cell_ids) // 2
    halves = []
    for half in (cell_ids[:middle], cell_ids[middle:]):
        # finish_batch marked the cells "split" too: give them to their half, waiting
        new = Batch(job_id=batch.job_id, kind=batch.kind, queue=batch.queue, cell_ids=half)
        session.add(new)
        session.flush()
        session.execute(
            update(Cell)
            .where(Cell.id.in_(half), Cell.status.not_in(FINISHED))
            .values(status=QUEUED, batch_id=new.id, error=error)
        )
        halves.append(new.id)
    session.commit()
    return halves
