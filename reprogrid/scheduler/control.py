"""A job's life after submission: cancel, retry, its final status, and whether it is stalled.

The same functions serve embedded and distributed jobs: they only change
rows. A running batch notices its job's cancellation between denoising steps
(the worker's lease check reads the job's status) and stops there. A submitted
job is stalled while no live worker consumes its queue: ``status``,
``workers`` and the scheduler's log say so, since when, instead of an ETA.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from reprogrid.models import (
    CANCELLED,
    DONE,
    FAILED,
    FINISHED,
    PENDING,
    QUEUED,
    RUNNING,
    Batch,
    Cell,
    Job,
    Worker,
    utcnow,
)
from reprogrid.models.queries import LIVE_WORKER_SECONDS, NotFound, consuming

CANCELLED_ERROR = "job cancelled"
EMBEDDED_RUN_PREFIX = "run-"


@dataclass(frozen=True)
class JobChange:
    """What a cancel or retry changed."""

    job_id: int
    status: str
    cells: int  # cells cancelled, or re-queued
    running_batches: int  # batches still running, told to stop (cancel only)


@dataclass(frozen=True)
class Stall:
    """A job's queue that no live worker consumes, since the last sign of one."""

    queue: str
    since: datetime

    def __str__(self) -> str:
        return f"stalled: no worker consuming queue {self.queue} since {_clock(self.since)}"


def _clock(when: datetime) -> str:
    """Local time, ``14:02``; with the date when it is not within the last day."""
    local = when.astimezone()
    recent = utcnow() - when < timedelta(days=1)
    return local.strftime("%H:%M" if recent else "%Y-%m-%d %H:%M")


def stalled_jobs(session: Session) -> dict[int, Stall]:
    """Submitted jobs with work to do whose queue no live worker consumes, by id."""
    now = utcnow()
    served = select(Worker.queue).where(consuming(now - timedelta(seconds=LIVE_WORKER_SECONDS)))
    jobs = session.execute(
        select(Job.id, Job.queue, Job.created_at, Job.not_before).where(
            Job.queue.is_not(None),
            Job.status.in_([QUEUED, RUNNING]),
            or_(Job.not_before.is_(None), Job.not_before <= now),
            Job.queue.not_in(served),
        )
    ).all()
    return {
        job_id: Stall(queue, _last_served(session, job_id, queue, created_at, not_before))
        for job_id, queue, created_at, not_before in jobs
    }


def _last_served(session: Session, job_id: int, queue: str, *since: datetime | None) -> datetime:
    """The last sign of a worker serving the job: a consuming worker's beat on its queue,
    a batch of it finished, or else when it was submitted or became due."""
    beat = session.scalar(
        select(func.max(Worker.heartbeat_at)).where(Worker.queue == queue, Worker.state.is_(None))
    )
    finished = session.scalar(select(func.max(Batch.finished_at)).where(Batch.job_id == job_id))
    return max(when for when in (beat, finished, *since) if when is not None)


def with_stalls(session: Session, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Progress rows (``job_progress``) with ``stalled``: the stall's text, or None; a
    stalled job has no ETA."""
    stalls = stalled_jobs(session)
    for row in rows:
        stall = stalls.get(row["job_id"])
        row["stalled"] = str(stall) if stall else None
        if stall:
            row["eta_seconds"] = None
    return rows


def update_job_status(session: Session, job_id: int) -> str:
    """Set a job done, failed or cancelled once none of its cells is left to run."""
    # Runs after every batch: reads the status alone, not the job's whole spec. The row
    # is locked (PostgreSQL) so that two workers recording a job's last two batches at
    # once do not each see the other's cells unfinished and leave the job running.
    status = session.scalar(select(Job.status).where(Job.id == job_id).with_for_update())
    if status in FINISHED:
        return status
    unfinished = session.scalar(
        select(Cell.id).where(Cell.job_id == job_id, Cell.status.in_([QUEUED, RUNNING])).limit(1)
    )
    if unfinished is not None:
        return status
    counts = dict(
        session.execute(
            select(Cell.status, func.count()).where(Cell.job_id == job_id).group_by(Cell.status)
        ).all()
    )
    if counts.get(FAILED, 0):
        status = FAILED
    elif counts.get(CANCELLED, 0):
        status = CANCELLED
    else:
        status = DONE
    session.execute(update(Job).where(Job.id == job_id).values(status=status, finished_at=utcnow()))
    return status


def finish_batch(session: Session, batch_id: int, worker: str, status: str, error: str) -> bool:
    """End a batch leased to ``worker`` and its unfinished cells with ``status``.

    Returns False, changing nothing, if the batch is no longer running for that worker.
    """
    owned = session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.worker == worker, Batch.status == RUNNING)
        .values(status=status, finished_at=utcnow(), lease_until=None, error=error)
    ).rowcount
    if owned:
        cell_ids = session.scalar(select(Batch.cell_ids).where(Batch.id == batch_id))
        session.execute(
            update(Cell)
            .where(Cell.id.in_(cell_ids), Cell.status.not_in(FINISHED))
            .values(status=status, error=error)
        )
    return bool(owned)


def _locked_job(session: Session, job_id: int) -> Job:
    # The scheduler holds this lock while it forms batches: a cancel or retry
    # waits for it, so no batch is formed from a half-cancelled job.
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


def cancel_job(session: Session, job_id: int) -> JobChange:
    """Cancel a job: its waiting cells and batches now, its running batches at their next step.

    Commits. A finished job is left as it is.
    """
    job = _locked_job(session, job_id)
    if job.status in FINISHED:
        session.rollback()
        return JobChange(job_id, job.status, 0, 0)
    now = utcnow()
    job.status, job.finished_at = CANCELLED, now
    session.execute(
        update(Batch)
        .where(Batch.job_id == job_id, Batch.status.in_([PENDING, QUEUED]))
        .values(status=CANCELLED, finished_at=now, lease_until=None, error=CANCELLED_ERROR)
    )
    cells = session.execute(
        update(Cell)
        .where(Cell.job_id == job_id, Cell.status == QUEUED)
        .values(status=CANCELLED, error=CANCELLED_ERROR)
    ).rowcount
    running = session.scalar(
        select(func.count()).where(Batch.job_id == job_id, Batch.status == RUNNING)
    )
    session.commit()
    return JobChange(job_id, CANCELLED, cells, running)


def embedded_run_name() -> str:
    """The worker name ``reprogrid run`` claims its batches under: host and process id."""
    return f"{EMBEDDED_RUN_PREFIX}{socket.gethostname()}-{os.getpid()}"


def dead_embedded_runs(session: Session, job_id: int) -> list[str]:
    """Names of this host's ``reprogrid run`` processes that hold a batch of the job but
    are gone (crashed, killed): their batches can be taken back without waiting a lease."""
    prefix = f"{EMBEDDED_RUN_PREFIX}{socket.gethostname()}-"
    holders = session.scalars(
        select(Batch.worker)
        .where(Batch.job_id == job_id, Batch.status == RUNNING, Batch.worker.startswith(prefix))
        .distinct()
    )
    return [name for name in holders if not _alive(name.removeprefix(prefix))]


def _alive(pid: str) -> bool:
    if not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def retry_job(session: Session, job_id: int, dead_workers: Collection[str] = ()) -> JobChange:
    """Queue every cell of the job that is not done again, in its recorded batch. Commits.

    Failed and cancelled batches are re-opened, and so are running batches
    whose lease ran out or whose worker is in ``dead_workers`` (a ``reprogrid
    run`` that crashed); cells still queued stay queued. Reopening the same
    batch rows keeps every batch's composition, so a retried cell is computed
    exactly as it would have been the first time. ``cells`` in the answer
    counts every cell left to run. The job keeps its ``started_at``.
    """
    job = _locked_job(session, job_id)
    lost = list(
        session.scalars(
            select(Batch.id).where(
                Batch.job_id == job_id,
                Batch.status == RUNNING,
                or_(Batch.lease_until < utcnow(), Batch.worker.in_(list(dead_workers))),
            )
        )
    )
    session.execute(
        update(Cell).where(Cell.batch_id.in_(lost), Cell.status == RUNNING).values(status=QUEUED)
    )
    session.execute(
        update(Batch)
        .where(
            Batch.job_id == job_id,
            or_(Batch.status.in_([FAILED, CANCELLED]), Batch.id.in_(lost)),
        )
        .values(
            status=PENDING,
            attempts=0,
            worker=None,
            lease_until=None,
            error=None,
            published_at=None,
            started_at=None,
            finished_at=None,
            retry_at=None,
        )
    )
    session.execute(
        update(Cell)
        .where(Cell.job_id == job_id, Cell.status.in_([FAILED, CANCELLED]))
        .values(status=QUEUED, error=None)
    )
    cells = session.scalar(select(func.count()).where(Cell.job_id == job_id, Cell.status == QUEUED))
    if cells and job.status != RUNNING:
        job.status, job.finished_at = QUEUED, None
    session.commit()
    return JobChange(job_id, job.status, cells, 0)
