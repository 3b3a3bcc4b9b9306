"""Embedded mode: run a whole job in this process, no broker needed.

The same batches as the distributed path (formed by the scheduler's
``form_batches``), executed one after another, each recorded while the next
one computes (``OverlappedBatches``). A run stopped by Ctrl-C (or any error)
gives its claims back at once (``records.release_claims``): nothing waits a
lease, and ``reprogrid retry JOB`` carries on where it stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import func, or_, select

from reprogrid.models import PENDING, Batch, Job, utcnow
from reprogrid.scheduler.jobs import form_batches
from reprogrid.worker import records
from reprogrid.worker.execute import BatchOutcome, OverlappedBatches, WorkerContext

log = logging.getLogger(__name__)


def run_job(
    ctx: WorkerContext, job_id: int, on_batch: Callable[[BatchOutcome], None] | None = None
) -> str:
    """Run every waiting cell of the job here; return the job's final status.

    Failed batches are retried as the context's retry policy says, each once
    its backoff has passed (this waits for it); batches that another live
    worker holds are left to it. ``on_batch`` hears of each batch once it is
    recorded, from the recording thread.
    """
    try:
        with OverlappedBatches(ctx, on_batch or (lambda _: None)) as batches:
            while (waiting := _waiting_batches(ctx, job_id)) is not None:
                for batch_id, then in zip(waiting, [*waiting[1:], None], strict=True):
                    batches.run(batch_id, then=then)
                batches.wait()  # a batch that failed is pending again: run it next round
    except BaseException:
        _release(ctx, job_id)
        raise
    with ctx.db.sessions() as session:
        return session.get(Job, job_id).status


def _release(ctx: WorkerContext, job_id: int) -> None:
    try:
        with ctx.db.sessions() as session:
            records.release_claims(session, job_id, ctx.name)
    except Exception:  # the database is what failed: retry finds the dead run's batches
        log.exception("could not give back the batches of job %d", job_id)


def _waiting_batches(ctx: WorkerContext, job_id: int) -> list[int] | None:
    """Form the job's next batches; the ids of its pending generation batches that are
    due, in order, after sleeping until one is due. None when none is left."""
    with ctx.db.sessions() as session:
        form_batches(session, job_id)
        session.commit()
        pending = (Batch.job_id == job_id) & (Batch.kind == "generate") & (Batch.status == PENDING)
        due = or_(Batch.retry_at.is_(None), Batch.retry_at <= utcnow())
        batch_ids = list(session.scalars(select(Batch.id).where(pending, due).order_by(Batch.id)))
        next_retry = (
            None if batch_ids else session.scalar(select(func.min(Batch.retry_at)).where(pending))
        )
    if next_retry is not None:
        time.sleep(max(0.0, (next_retry - utcnow()).total_seconds()))
        return []
    return batch_ids or None
