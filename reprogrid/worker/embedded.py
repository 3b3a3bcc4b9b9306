"""Embedded mode: run a whole job in this process, no broker needed.

The same batches as the distributed path (formed by the scheduler's
``form_batches``), executed one after another, each recorded while the next
one computes (``OverlappedBatches``). A run stopped by Ctrl-C (or any error)
gives its claims back at once (``records.release_claims``): nothing waits a
lease, and ``reprogrid retry JOB`` carries on where it stopped.

Nobody may be awake to read a retry log, so a failure that persists (a full
disk, a store that cannot be written, a database that refuses writes) ends the
run: once batches have failed for ``GIVE_UP_SECONDS`` with none recorded in
between, the run gives its claims back and raises :class:`RunStopped` naming the
last error. The fleet's workers keep the longer retry policy of
``worker/failures.py``: there, another worker or a later hour may succeed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from itertools import zip_longest

from sqlalchemy import func, or_, select

from reprogrid.models import PENDING, Batch, Job, utcnow
from reprogrid.scheduler.jobs import form_batches
from reprogrid.worker import records
from reprogrid.worker.execute import BatchOutcome, OverlappedBatches, WorkerContext

log = logging.getLogger(__name__)

# How long batches may keep failing, none recorded meanwhile, before a run stops. A
# recording already rides out 35 s in place (execute.RECORD_TRIES), and the one in
# flight when the run gives up is still waited for: with the defaults a full disk
# stops the run about 70 s after its first failure.
GIVE_UP_SECONDS = 30.0
# Outcomes that mean the batch was not recorded and will not be without a retry.
_FAILING = ("retrying", "lost")


class RunStopped(Exception):
    """An embedded run gave up on a failure that persisted; its claims are given back."""

    def __init__(self, job_id: int, error: str) -> None:
        super().__init__(f"job {job_id} stopped: {error}")
        self.job_id, self.error = job_id, error


class FailureWatch:
    """Since when batches have failed with none recorded in between, and the last error.

    Told of each outcome on the recording thread; asked by the run's thread.
    """

    def __init__(self, give_up_seconds: float) -> None:
        self.give_up_seconds = give_up_seconds
        self._lock = threading.Lock()
        self._since: float | None = None
        self._error: str | None = None
        self._lost: str | None = None  # a failure that could not even be recorded

    def see(self, outcome: BatchOutcome) -> None:
        """A batch ended: recorded (the streak ends) or failed (it starts or goes on)."""
        with self._lock:
            if outcome.status == "done":
                self._since = self._error = None
            elif outcome.status in _FAILING:
                # the failure began when the batch did, at the latest
                started = time.monotonic() - outcome.seconds
                self._since = started if self._since is None else self._since
                self._error = outcome.error
            if outcome.status == "lost":
                self._lost = outcome.error

    def deadline(self) -> float | None:
        """When the run gives up (``time.monotonic()``) unless a batch is recorded first."""
        with self._lock:
            return None if self._since is None else self._since + self.give_up_seconds

    def failing(self) -> str | None:
        """The last error while batches fail, else None."""
        with self._lock:
            return self._error

    def lost(self) -> str | None:
        """The error of a batch whose failure could not be recorded, if any was."""
        with self._lock:
            return self._lost

    def check(self, job_id: int) -> None:
        """Raise RunStopped once the failures have lasted long enough."""
        deadline = self.deadline()
        if deadline is not None and time.monotonic() >= deadline:
            raise RunStopped(job_id, self.failing() or "batches keep failing")


def run_job(
    ctx: WorkerContext,
    job_id: int,
    on_batch: Callable[[BatchOutcome], None] | None = None,
    give_up_seconds: float = GIVE_UP_SECONDS,
) -> str:
    """Run every waiting cell of the job here; return the job's final status.

    Failed batches are retried as the context's retry policy says, each once
    its backoff has passed (this waits for it); batches that another live
    worker holds are left to it. ``on_batch`` hears of each batch once it is
    recorded, from the recording thread. Raises RunStopped when batches keep
    failing for ``give_up_seconds``, or when the run ends with batches it
    could not record.
    """
    watch = FailureWatch(give_up_seconds)
    tell = on_batch or (lambda _: None)

    def heard(outcome: BatchOutcome) -> None:
        watch.see(outcome)
        tell(outcome)

    try:
        with OverlappedBatches(ctx, heard) as batches:
            while (waiting := _waiting_batches(ctx, job_id, watch)) is not None:
                for batch_id, then in zip_longest(waiting, waiting[1:]):
                    watch.check(job_id)
                    batches.run(batch_id, then=then)
                batches.wait()  # a batch that failed is pending again: run it next round
                watch.check(job_id)
        if (error := watch.lost()) is not None:  # the batch waits for its lease to run out
            raise RunStopped(job_id, error)
    except BaseException:
        _release(ctx, job_id)
        raise
    with ctx.db.sessions() as session:
        return session.get(Job, job_id).status


def _release(ctx: WorkerContext, job_id: int) -> None:
    try:
        with ctx.db.sessions() as session:
            records.release_claims(session, job_id, ctx.name)
    except Exception as exc:  # the database is what failed: retry finds the dead run's batches
        log.error("could not give back the batches of job %d: %s", job_id, exc)


def _waiting_batches(ctx: WorkerContext, job_id: int, watch: FailureWatch) -> list[int] | None:
    """Form the job's next batches; the ids of its pending generation batches that are
    due, in order. When none is due yet, sleep until one is (or until the watch gives
    up) and return an empty list. None when none is left."""
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
        wait = (next_retry - utcnow()).total_seconds()
        if (deadline := watch.deadline()) is not None:
            wait = min(wait, deadline - time.monotonic())
        time.sleep(max(0.0, wait))
        return []
    return batch_ids or None
