"""The Celery worker: one process per GPU, running the batches the scheduler publishes.

The task is ``run_batch(batch_id, job_id, cells=N, fleet=F)`` (an older
scheduler's bare ``[batch_id]`` runs too). Only the batch id and the fleet are
read: the batch's row says what kind of batch it is (its claim reads it), and
``BATCH_WORK`` how each kind is computed. The pool is Celery's ``threads`` pool with one thread,
so tasks run in this very process: nothing forks after CUDA starts, and a
checkpoint loaded for one batch stays in memory for the next. (The ``solo``
pool would run them on the main thread, which then could not answer ``celery
inspect`` or Flower while a batch computes.)

Celery reserves one message beyond the task running (``broker``); the moment
it arrives (``task_received``), its batch is claimed (``OverlappedBatches.claim_ahead``:
lease taken, kind and recipes read) and queued on the device thread, which
computes it as soon as the batch before it is computed, before its task
starts: the task then waits for it. No hand-over of Celery's sits between two
pipeline calls. A worker killed holding a batch claimed ahead loses it like
the one it computes (its heartbeat stops, the scheduler publishes both
again); one that stops cleanly gives it back, stopped at its next denoising
step if it computes already (its task never started, and its message returns
to the queue). A task returns once its batch is computed; the batch is
recorded in the recording process while the next one computes. The message is
acknowledged then, but the batch's row is what says it is done: if the
process dies before the row is written, the scheduler sees its heartbeat stop
and publishes it again.

The task's Celery state repeats what the batch's row says, for Celery's events
and Flower: a batch whose cells ended failed is a FAILURE with the error, an
attempt that will run again (retrying, split after running out of memory, or a
failure that could not be written yet) is a RETRY, and anything else a SUCCESS
whose result says what became of it. FAILURE and RETRY are raised only after
the row is written, and neither makes Celery send or requeue anything: the
message is acknowledged, and the scheduler re-publishes a retried batch as ever. A batch
that was computed is a SUCCESS as soon as it is handed over to be recorded
(the next batch computes meanwhile): if recording it then fails past its
retries, only its row and the log say so.

A message names its fleet (the database's identity). A worker of another
database (a stale process, a wrong ``REPROGRID_DB``) refuses it loudly: one log
line per message (Celery's own traceback of the rejection is filtered out),
its heartbeat row's state, and the message goes back to the queue for its
owner (rejected with requeue, never acknowledged); the worker then pauses so
that the owner's workers get it.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Celery, signals
from celery.exceptions import Reject, Retry

from reprogrid.config import Settings
from reprogrid.models import Batch, Database
from reprogrid.models.queries import fleet_id
from reprogrid.models.verifications import VERIFY_KIND
from reprogrid.scheduler.broker import RUN_BATCH_TASK, batch_title, celery_app
from reprogrid.worker.broker_watch import (
    EXIT_BROKER_RESTARTED,
    BrokerWatch,
    BrokerWatcher,
    exit_for_supervisor,
)
from reprogrid.worker.execute import (
    BatchOutcome,
    BatchWork,
    OverlappedBatches,
    Results,
    WorkerContext,
    generate_images,
)
from reprogrid.worker.heartbeat import Heartbeat
from reprogrid.worker.records import ClaimedBatch
from reprogrid.worker.verify import verify_batch

log = logging.getLogger(__name__)
# After refusing another fleet's message: time for its owner's workers to take it.
REFUSED_PAUSE_SECONDS = 1.0

# How each kind of batch (``batch.kind``) is computed: a new kind is one more line.
BATCH_WORK: dict[str, BatchWork] = {
    "generate": generate_images,
    VERIFY_KIND: verify_batch,
}


# Outcomes (``BatchOutcome.status``) of an attempt whose cells will run again.
RETRIED = {
    "retrying": "failed, to be retried",
    "split": "out of memory, split in two batches",
    "lost": "failed, unrecorded: it runs again when its lease ends",
}


class BatchFailed(Exception):
    """A batch whose cells ended failed (or a message naming no batch): a FAILURE task."""


class BatchRetried(Retry):
    """An attempt that failed and whose cells will run again: a RETRY task.

    Raised, not ``Task.retry``: Celery marks the attempt RETRY and sends
    nothing (the scheduler re-sends the batch when it is due).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)

    def __repr__(self) -> str:  # what the task-retried event and Flower show
        return f"{type(self).__name__}({self.message!r})"


@dataclass
class Attempt:
    """What one task saw of its batch: the claim (None if none)."""

    batch_id: int
    job_id: int | None = None
    cells: int | None = None
    claim: ClaimedBatch | None = None

    @property
    def title(self) -> str:
        """``job 3 batch 17 (8 cells)``: the batch claimed, else the one the message named."""
        if self.claim is None:
            return batch_title(self.batch_id, self.job_id, self.cells)
        claim = self.claim
        return batch_title(claim.batch_id, claim.job_id, len(claim.cells))


class UnknownKind(Exception):
    """A batch of a kind this worker cannot compute (a newer scheduler's?)."""


def compute_by_kind(ctx: WorkerContext, claim: ClaimedBatch) -> Results:
    """Compute a claimed batch with the work for its kind (``BATCH_WORK``).

    An unknown kind is an error like any other: retried (a newer worker may
    take it), then the batch's cells fail with it.
    """
    work = BATCH_WORK.get(claim.kind)
    if work is None:
        raise UnknownKind(f"unknown kind {claim.kind!r}: upgrade this worker's reprogrid")
    return work(ctx, claim)


def run_batch(batches: OverlappedBatches, attempt: Attempt) -> BatchOutcome | None:
    """Compute one batch with the work for its kind, and hand it over to be recorded.

    Returns the batch's outcome when it ended without results to record (failed,
    retrying, split, lost, cancelled, skipped: already written), None once it
    is computed and handed over. Raises ``BatchFailed`` for a message naming
    no batch.
    """
    ran = batches.run(attempt.batch_id, compute_by_kind)
    attempt.claim = ran.claim
    if ran.computed:
        return None
    # The outcome is written already and only passes the recording thread.
    outcome = ran.recorded.result()
    if outcome.status == "skipped" and not _exists(batches.ctx, attempt.batch_id):
        log.error("batch %s: no such batch", attempt.batch_id)
        raise BatchFailed(f"{attempt.title}: no such batch")
    return outcome


def _exists(ctx: WorkerContext, batch_id: int) -> bool:
    with ctx.db.sessions() as session:
        return session.get(Batch, batch_id) is not None


def task_result(attempt: Attempt, outcome: BatchOutcome | None) -> str:
    """The task's result for a batch that ran; raises for a FAILURE or a RETRY."""
    if outcome is None:
        return f"{attempt.title}: computed, recorded in the background"
    if outcome.status == "failed":
        raise BatchFailed(f"{attempt.title}: cells failed: {outcome.error}")
    if outcome.status in RETRIED:
        raise BatchRetried(f"{attempt.title}: {RETRIED[outcome.status]}: {outcome.error}")
    return f"{attempt.title}: {outcome.status}"


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


class ForeignMessage(Reject):
    """A message of another fleet, rejected with requeue for its owner's workers."""


class QuietRefusals(logging.Filter):
    """Drops Celery's report of a refused message (a traceback): ours is one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ForeignMessage))


def refuse_other_fleets(heartbeat: Heartbeat, own: str, fleet: str | None) -> None:
    """Raise ``ForeignMessage`` (requeue) for a message of another fleet, saying so in a line."""
    if fleet is None or fleet == own:
        return
    reason = f"refusing messages of fleet {fleet}: this worker's database is fleet {own}"
    log.error("%s (check REPROGRID_DB); the message goes back to the queue", reason)
    heartbeat.state = reason
    time.sleep(REFUSED_PAUSE_SECONDS)
    raise ForeignMessage(reason, requeue=True)


def worker_app(
    settings: Settings, batches: OverlappedBatches, heartbeat: Heartbeat, own: str
) -> Celery:
    """The shared Celery app with the ``run_batch`` task bound to this worker."""
    app = celery_app(settings)
    logging.getLogger("celery.app.trace").addFilter(QuietRefusals())

    # ``throws``: a failed batch is logged as expected (one line, no traceback).
    @app.task(name=RUN_BATCH_TASK, throws=(BatchFailed,))
    def run_batch_task(
        batch_id: int,
        job_id: int | None = None,
        cells: int | None = None,
        fleet: str | None = None,
        **later: object,  # fields a newer scheduler may add: not read
    ) -> str:
        refuse_other_fleets(heartbeat, own, fleet)
        attempt = Attempt(int(batch_id), _int_or_none(job_id), _int_or_none(cells))
        return task_result(attempt, run_batch(batches, attempt))

    return app


def claim_ahead_on_receipt(batches: OverlappedBatches, own: str) -> Callable[..., None]:
    """A ``task_received`` receiver: claim the batch of a message of this fleet as soon
    as it is reserved, while the batch before it computes (Celery reserves a second
    message per worker: ``worker_prefetch_multiplier``)."""

    def received(sender: object = None, request: Any = None, **_: object) -> None:
        if request is None or request.task_name != RUN_BATCH_TASK:
            return
        if request.kwargs.get("fleet", own) != own:  # refused when its task runs
            return
        try:
            batch_id = int(request.args[0])
        except (IndexError, TypeError, ValueError):
            return
        batches.claim_ahead(batch_id, compute_by_kind)

    return received


def _int_or_none(value: object) -> int | None:
    """A message's job id or cell count (shown only), None if absent or not a number."""
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def celery_node_name(name: str) -> str:
    """The Celery node name of a reprogrid worker: ``NAME@HOST`` (a name with ``@`` as is)."""
    return name if "@" in name else f"{name}@{socket.gethostname()}"


def serve(
    settings: Settings,
    db: Database,
    device: str,
    queue: str,
    name: str,
    give_up: Callable[[], object] = exit_for_supervisor,
) -> int:
    """Run the worker until a warm shutdown (SIGTERM or Ctrl-C); return its exit code.

    The code is ``EXIT_BROKER_RESTARTED`` when the worker stopped because the
    broker restarted (see ``broker_watch``): it should be started again.
    ``give_up`` ends the process if that stop hangs.
    """
    ctx = WorkerContext.start(settings, db, device, name)
    with db.sessions() as session:
        own = fleet_id(session)
    heartbeat = Heartbeat(ctx, queue)
    heartbeat.start()
    watcher = BrokerWatcher(BrokerWatch(settings.broker_url), _state_setter(heartbeat), give_up)
    watcher.start()
    batches = OverlappedBatches(ctx, log_outcome)
    claim_ahead = claim_ahead_on_receipt(batches, own)
    signals.task_received.connect(claim_ahead, weak=False)
    try:
        worker = worker_app(settings, batches, heartbeat, own).Worker(
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
        if watcher.restarted.is_set():
            return EXIT_BROKER_RESTARTED
        if worker.exitcode and watcher.lost_broker():
            log.warning("Celery stopped on an error while the broker was lost: starting afresh")
            return EXIT_BROKER_RESTARTED
        return worker.exitcode or 0
    finally:
        signals.task_received.disconnect(claim_ahead)
        watcher.stop()
        batches.close()
        heartbeat.stop()
        ctx.close()


def _state_setter(heartbeat: Heartbeat):
    """Put the broker's state in the heartbeat row now, not at the next beat."""

    def set_state(state: str | None) -> None:
        heartbeat.state = state
        try:
            heartbeat.beat()
        except Exception:  # the database may be down too: the next beat writes it
            log.exception("could not write the worker's state")

    return set_state
