"""The Celery worker: one process per GPU, running the batches the scheduler publishes.

The task body is a batch id; the batch's row says what kind of batch it is,
and ``BATCH_WORK`` says how each kind is computed. The pool is Celery's
``threads`` pool with one thread, so tasks run in this very process: nothing
forks after CUDA starts, and a checkpoint loaded for one batch stays in memory
for the next. (The ``solo`` pool would run them on the main thread, which then
could not answer ``celery inspect`` or Flower while a batch computes.)

A task returns once its batch is computed; the batch is recorded on a
background thread while the next task computes. The message is acknowledged
then, but the batch's row is what says it is done: if the process dies before
the row is written, the scheduler sees its heartbeat stop and publishes it again.

A message names its fleet (the database's identity). A worker of another
database (a stale process, a wrong ``REPROGRID_DB``) refuses it loudly: a log
line, its heartbeat row's state, and the message goes back to the queue for
its owner (rejected with requeue, never acknowledged); the worker then pauses
so that the owner's workers get it.
"""

from __future__ import annotations

import logging
import socket
import time

from celery import Celery
from celery.exceptions import Reject
from sqlalchemy import select

from reprogrid.config import Settings
from reprogrid.models import Batch, Database
from reprogrid.models.queries import fleet_id
from reprogrid.models.verifications import VERIFY_KIND
from reprogrid.scheduler.broker import RUN_BATCH_TASK, celery_app
from reprogrid.worker.broker_watch import (
    EXIT_BROKER_RESTARTED,
    BrokerWatch,
    BrokerWatcher,
)
from reprogrid.worker.execute import (
    BatchOutcome,
    BatchWork,
    OverlappedBatches,
    WorkerContext,
    generate_images,
)
from reprogrid.worker.heartbeat import Heartbeat
from reprogrid.worker.verify import verify_batch

log = logging.getLogger(__name__)
# After refusing another fleet's message: time for its owner's workers to take it.
REFUSED_PAUSE_SECONDS = 1.0

# How each kind of batch (``batch.kind``) is computed: a new kind is one more line.
BATCH_WORK: dict[str, BatchWork] = {
    "generate": generate_images,
    VERIFY_KIND: verify_batch,
}


def run_batch(batches: OverlappedBatches, batch_id: int) -> None:
    """Compute one batch with the work for its kind, and hand it over to be recorded."""
    with batches.ctx.db.sessions() as session:
        kind = session.scalar(select(Batch.kind).where(Batch.id == batch_id))
    work = BATCH_WORK.get(kind)
    if work is None:
        log.error("batch %s: %s", batch_id, "no such batch" if kind is None else f"kind {kind!r}")
        return
    batches.run(batch_id, work)


def log_outcome(outcome: BatchOutcome) -> None:
    """One log line per batch, once it is recorded."""
    log.info(
        "batch %s %s: %d images in %.1f s%s",
        outcome.batch_id,
        outcome.status,
        outcome.images,
        outcome.seconds,
        f" ({outcome.error})" if outcome.error else "",
    )


def refuse_other_fleets(heartbeat: Heartbeat, own: str, fleet: str | None) -> None:
    """Raise ``Reject(requeue=True)`` for a message of another fleet, saying so loudly."""
    if fleet is None or fleet == own:
        return
    reason = f"refusing messages of fleet {fleet}: this worker's database is fleet {own}"
    log.error("%s (check REPROGRID_DB); the message goes back to the queue", reason)
    heartbeat.state = reason
    time.sleep(REFUSED_PAUSE_SECONDS)
    raise Reject(reason, requeue=True)


def worker_app(settings: Settings, batches: OverlappedBatches, heartbeat: Heartbeat) -> Celery:
    """The shared Celery app with the ``run_batch`` task bound to this worker."""
    app = celery_app(settings)
    with batches.ctx.db.sessions() as session:
        own = fleet_id(session)

    @app.task(name=RUN_BATCH_TASK)
    def run_batch_task(batch_id: int, fleet: str | None = None) -> None:
        refuse_other_fleets(heartbeat, own, fleet)
        run_batch(batches, int(batch_id))

    return app


def celery_node_name(name: str) -> str:
    """The Celery node name of a reprogrid worker: ``NAME@HOST`` (a name with ``@`` as is)."""
    return name if "@" in name else f"{name}@{socket.gethostname()}"


def serve(settings: Settings, db: Database, device: str, queue: str, name: str) -> int:
    """Run the worker until a warm shutdown (SIGTERM or Ctrl-C); return its exit code.

    The code is ``EXIT_BROKER_RESTARTED`` when the worker stopped because the
    broker restarted (see ``broker_watch``): its supervisor should start it again.
    """
    ctx = WorkerContext.start(settings, db, device, name)
    heartbeat = Heartbeat(ctx, queue)
    heartbeat.start()
    watcher = BrokerWatcher(BrokerWatch(settings.broker_url), _state_setter(heartbeat))
    watcher.start()
    batches = OverlappedBatches(ctx, log_outcome)
    try:
        worker = worker_app(settings, batches, heartbeat).Worker(
            hostname=celery_node_name(name),
            pool="threads",
            concurrency=1,
            queues=[queue],
            loglevel="INFO",
            quiet=True,
            without_gossip=True,
            without_mingle=True,
            # Celery's heartbeat events are how Flower tells a worker is online.
            without_heartbeat=not settings.celery_monitoring,
        )
        worker.start()
        return EXIT_BROKER_RESTARTED if watcher.restarted.is_set() else worker.exitcode or 0
    finally:
        watcher.stop()
        batches.close()
        heartbeat.stop()


def _state_setter(heartbeat: Heartbeat):
    """Put the broker's state in the heartbeat row now, not at the next beat."""

    def set_state(state: str | None) -> None:
        heartbeat.state = state
        try:
            heartbeat.beat()
        except Exception:  # the database may be down too: the next beat writes it
            log.exception("could not write the worker's state")

    return set_state
