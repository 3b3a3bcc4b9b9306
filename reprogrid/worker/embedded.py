"""Embedded mode: run a whole job in this process, no broker needed.

The same batches as the distributed path (formed by the scheduler's
``form_batches``), executed one after another by ``execute_batch``.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select

from reprogrid.models import PENDING, Batch, Job
from reprogrid.scheduler.jobs import form_batches
from reprogrid.worker.execute import BatchOutcome, WorkerContext, execute_batch


def run_job(
    ctx: WorkerContext, job_id: int, on_batch: Callable[[BatchOutcome], None] | None = None
) -> str:
    """Run every waiting cell of the job here; return the job's final status.

    Failed batches are retried up to the context's attempt limit; batches that
    another live worker holds are left to it.
    """
    while True:
        with ctx.db.sessions() as session:
            form_batches(session, job_id)
            session.commit()
            batch_ids = list(
                session.scalars(
                    select(Batch.id)
                    .where(
                        Batch.job_id == job_id, Batch.kind == "generate", Batch.status == PENDING
                    )
                    .order_by(Batch.id)
                )
            )
        if not batch_ids:
            break
        for batch_id in batch_ids:
            outcome = execute_batch(ctx, batch_id)
            if on_batch is not None:
                on_batch(outcome)
    with ctx.db.sessions() as session:
        return session.get(Job, job_id).status
