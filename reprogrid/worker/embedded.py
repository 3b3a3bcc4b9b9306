"""Embedded mode: run a whole job in this process, no broker needed.

The same batches as the distributed path (formed by the scheduler's
``form_batches``), executed one after another, each recorded while the next
one computes (``OverlappedBatches``).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select

from reprogrid.models import PENDING, Batch, Job
from reprogrid.scheduler.jobs import form_batches
from reprogrid.worker.execute import BatchOutcome, OverlappedBatches, WorkerContext


def run_job(
    ctx: WorkerContext, job_id: int, on_batch: Callable[[BatchOutcome], None] | None = None
) -> str:
    """Run every waiting cell of the job here; return the job's final status.

    Failed batches are retried up to the context's attempt limit; batches that
    another live worker holds are left to it. ``on_batch`` hears of each batch
    once it is recorded, from the recording thread.
    """
    with OverlappedBatches(ctx, on_batch or (lambda _: None)) as batches:
        while batch_ids := _waiting_batches(ctx, job_id):
            for batch_id in batch_ids:
                batches.run(batch_id)
            batches.wait()  # a batch that failed is pending again: run it in the next round
    with ctx.db.sessions() as session:
        return session.get(Job, job_id).status


def _waiting_batches(ctx: WorkerContext, job_id: int) -> list[int]:
    """Form the job's next batches; the ids of its pending generation batches, in order."""
    with ctx.db.sessions() as session:
        form_batches(session, job_id)
        session.commit()
        return list(
            session.scalars(
                select(Batch.id)
                .where(Batch.job_id == job_id, Batch.kind == "generate", Batch.status == PENDING)
                .order_by(Batch.id)
            )
        )
