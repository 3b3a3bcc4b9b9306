"""The Celery worker: one process per GPU, running the batches the scheduler publishes.

The task body is a batch id; the batch's row says what kind of batch it is,
and ``BATCH_RUNNERS`` says how each kind runs. The pool is Celery's ``solo``
pool, so tasks run in this very process: nothing forks after CUDA starts, and a
checkpoint loaded for one batch stays in memory for the next.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

from celery import Celery
from sqlalchemy import select

from reprogrid.config import Settings
from reprogrid.models import Batch, Database
from reprogrid.models.verifications import VERIFY_KIND
from reprogrid.scheduler.broker import RUN_BATCH_TASK, celery_app
from reprogrid.worker.execute import BatchOutcome, WorkerContext, execute_batch
from reprogrid.worker.heartbeat import Heartbeat
from reprogrid.worker.verify import execute_verify_batch

log = logging.getLogger(__name__)

BatchRunner = Callable[[WorkerContext, int], BatchOutcome]

# How each kind of batch (``batch.kind``) is run: a new kind is one more line.
BATCH_RUNNERS: dict[str, BatchRunner] = {
    "generate": execute_batch,
    VERIFY_KIND: execute_verify_batch,
}


def run_batch(ctx: WorkerContext, heartbeat: Heartbeat, batch_id: int) -> BatchOutcome | None:
    """Run one batch with the runner for its kind; None if there is nothing to run."""
    with ctx.db.sessions() as session:
        kind = session.scalar(select(Batch.kind).where(Batch.id == batch_id))
    runner = BATCH_RUNNERS.get(kind)
    if runner is None:
        log.error("batch %s: %s", batch_id, "no such batch" if kind is None else f"kind {kind!r}")
        return None
    heartbeat.current_batch = batch_id
    try:
        return runner(ctx, batch_id)
    finally:
        heartbeat.current_batch = None


def worker_app(settings: Settings, ctx: WorkerContext, heartbeat: Heartbeat) -> Celery:
    """The shared Celery app with the ``run_batch`` task bound to this worker."""
    app = celery_app(settings)

    @app.task(name=RUN_BATCH_TASK)
    def run_batch_task(batch_id: int) -> None:
        outcome = run_batch(ctx, heartbeat, int(batch_id))
        if outcome is not None:
            log.info(
                "batch %s %s: %d images in %.1f s%s",
                outcome.batch_id,
                outcome.status,
                outcome.images,
                outcome.seconds,
                f" ({outcome.error})" if outcome.error else "",
            )

    return app


def serve(settings: Settings, db: Database, device: str, queue: str, name: str) -> int:
    """Run the worker until a warm shutdown (SIGTERM or Ctrl-C); return its exit code."""
    ctx = WorkerContext.start(settings, db, device, name)
    heartbeat = Heartbeat(ctx, queue)
    heartbeat.start()
    try:
        worker = worker_app(settings, ctx, heartbeat).Worker(
            hostname=f"{name}@{socket.gethostname()}",
            pool="solo",
            concurrency=1,
            queues=[queue],
            loglevel="INFO",
            quiet=True,
            without_gossip=True,
            without_mingle=True,
            without_heartbeat=True,
        )
        worker.start()
        return worker.exitcode or 0
    finally:
        heartbeat.stop()
