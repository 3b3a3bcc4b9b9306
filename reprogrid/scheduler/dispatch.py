"""The dispatch loop: turn waiting cells into batches and publish them, a few at a time.

Each pass (``dispatch_once``):

1. recovers lost work, in seconds rather than a lease: a queued batch nobody
   claimed within ``redeliver_seconds`` although a worker of its queue is idle
   (its message was lost: Redis restarted empty, a scheduler killed between
   commit and publish), and a running batch whose worker's heartbeat stopped
   (``LIVE_WORKER_SECONDS``: three missed beats) or whose lease ran out, are
   published again; a batch whose workers died ``max_attempts`` times fails.
   A copy too many is harmless: the claim lets one worker run a batch, the
   unique image per cell keeps one result;
2. walks the runnable jobs (submitted, not held by ``not_before``), highest
   priority first, then in submission order, and tops each queue up to
   ``max_in_flight`` batches queued or running (at least two per live worker
   consuming it: ``InFlight``), re-sending batches waiting to be retried
   before forming new ones;
3. finishes jobs none of whose cells or batches is left to run.

A job row is locked (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's
``BEGIN IMMEDIATE`` serializes writers anyway) while its batches are formed,
so two schedulers never form two batches from the same cells. Messages are
sent after the commit: a scheduler killed in between leaves queued batches
that step 1 re-sends. Each message says the batch's job and cell count
besides its id (``broker.BatchId``), for Flower and ``celery inspect``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from reprogrid.models import (
    CANCELLED,
    FAILED,
    PENDING,
    QUEUED,
    RUNNING,
    Batch,
    Cell,
    Database,
    Job,
    Worker,
    utcnow,
)
from reprogrid.models.db import DatabaseUnavailable, first_line
from reprogrid.models.queries import LIVE_WORKER_SECONDS, consuming
from reprogrid.models.verifications import VERIFY_KIND
from reprogrid.scheduler.broker import RESTARTED, UNREACHABLE, BatchId, BrokerWatch
from reprogrid.scheduler.control import (
    CANCELLED_ERROR,
    finish_batch,
    stalled_jobs,
    update_job_status,
)
from reprogrid.scheduler.jobs import form_batches

log = logging.getLogger(__name__)

Publish = Callable[[int, str], None]  # (batch id, a BatchId; queue name)
RECOVER_CHUNK = 500
# A queue holds at least this many batches per live worker: one computing, one claimed ahead.
BATCHES_PER_WORKER = 2
MAX_BACKOFF_SECONDS = 60.0
STALL_LOG_SECONDS = 60.0
# Batches the scheduler looks after: those of submitted jobs (a job made by
# `run` has no queue), and verify batches whatever their job.
FLEET_BATCH = or_(Job.queue.is_not(None), Batch.kind == VERIFY_KIND)


class Outgoing(NamedTuple):
    """A batch to send: its id and queue, and its job and cell count for the message."""

    batch_id: int
    queue: str
    job_id: int
    cells: int

    @classmethod
    def of(cls, batch_id: int, queue: str, job_id: int, cell_ids: list[int] | None) -> Outgoing:
        return cls(batch_id, queue, job_id, len(cell_ids or ()))

    def message_id(self) -> BatchId:
        """The id to publish, carrying the job and cell count."""
        return BatchId(self.batch_id, self.job_id, self.cells)


# The columns an ``Outgoing`` is made of, in ``Outgoing.of``'s order.
OUTGOING_COLUMNS = (Batch.id, Batch.queue, Batch.job_id, Batch.cell_ids)


@dataclass(frozen=True)
class DispatchLimits:
    """How much to keep in flight, and when work counts as lost."""

    max_in_flight: int
    lease_seconds: int
    max_attempts: int
    # a batch re-sent (or first sent) less than this long ago is not re-sent again
    redeliver_seconds: int = 20


@dataclass
class DispatchReport:
    """What one pass did."""

    published: int = 0
    republished: int = 0
    failed: int = 0
    cancelled: int = 0
    in_flight: dict[str, int] = field(default_factory=dict)
    # queues with batches waiting for a message to be read, and no live worker consuming
    unserved: dict[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.published or self.republished or self.failed or self.cancelled)


@dataclass
class InFlight:
    """Batches queued or running per queue, and how many each queue is topped up to.

    A queue holds at least ``BATCHES_PER_WORKER`` per live worker consuming it,
    whatever ``max_in_flight`` says: each worker computes one batch and holds the
    next, claimed ahead (``worker.service``). With fewer, a worker that reserved
    two messages would leave another idle.
    """

    counts: Counter[str]
    max_in_flight: int
    workers: Counter[str]

    @classmethod
    def now(cls, session: Session, max_in_flight: int) -> InFlight:
        """The counts and live workers per queue, as the database has them now."""
        counts = session.execute(
            select(Batch.queue, func.count())
            .join(Job, Job.id == Batch.job_id)
            .where(FLEET_BATCH, Batch.status.in_([QUEUED, RUNNING]))
            .group_by(Batch.queue)
        ).all()
        alive_since = utcnow() - timedelta(seconds=LIVE_WORKER_SECONDS)
        workers = session.execute(
            select(Worker.queue, func.count()).where(consuming(alive_since)).group_by(Worker.queue)
        ).all()
        return cls(Counter(dict(counts)), max_in_flight, Counter(dict(workers)))

    def free(self, queue: str) -> int:
        """How many more batches the queue may take now."""
        bound = max(self.max_in_flight, BATCHES_PER_WORKER * self.workers[queue])
        return bound - self.counts[queue]

    def add(self, queue: str) -> None:
        """Count one more batch queued on ``queue``."""
        self.counts[queue] += 1


def dispatch_once(db: Database, publish: Publish, limits: DispatchLimits) -> DispatchReport:
    """One pass of the scheduler: recover lost work, publish new work, finish jobs."""
    report = DispatchReport()
    _recover(db, publish, limits, report)
    with db.sessions() as session:
        in_flight = InFlight.now(session, limits.max_in_flight)
        jobs = session.execute(_runnable_jobs()).all()
    for job_id, queue in jobs:
        if in_flight.free(queue) > 0:
            report.published += _dispatch_job(db, job_id, publish, in_flight)
    report.published += _dispatch_verification(db, publish, in_flight)
    report.in_flight = dict(in_flight.counts)
    return report


def run_scheduler(
    db: Database,
    publish: Publish,
    limits: DispatchLimits,
    interval: float,
    stop: threading.Event,
    broker: BrokerWatch | None = None,
) -> None:
    """Dispatch every ``interval`` seconds until ``stop`` is set (by SIGTERM, say).

    ``broker`` is looked at before each pass: while it cannot be used (down, a
    wrong password) nothing is dispatched; after it restarted, the queued
    batches' messages count as lost. An outage of the broker or the database
    is one log line, and the passes back off while it lasts; stalled jobs are
    logged once a minute.
    """
    backoff = Backoff(interval)
    stalls = StallLog()
    while not stop.is_set():
        try:
            _check_broker(db, broker)
            report = dispatch_once(db, publish, limits)
        except Exception as exc:
            backoff.failed(exc)
        else:
            backoff.recovered()
            _log_report(report)
            stalls.log(db)
        stop.wait(backoff.delay)


class BrokerUnusable(RuntimeError):
    """The broker cannot be reached or refuses this scheduler (a wrong password)."""


def _check_broker(db: Database, broker: BrokerWatch | None) -> None:
    """Raise ``BrokerUnusable`` while the broker cannot be used; after it restarted,
    take its queued batches' messages as lost, to be sent again at once."""
    state = broker.check() if broker is not None else None
    if state == UNREACHABLE:
        raise BrokerUnusable(f"broker {broker.shown_url}: {broker.error}")
    if state == RESTARTED:
        lost = _forget_messages(db)
        log.warning("the broker restarted: re-sending %d queued batches", lost)
        broker.accept_restart()


def _forget_messages(db: Database) -> int:
    """Mark every queued batch's message as never sent (the recovery step re-sends it
    to a queue with an idle worker without waiting); return how many."""
    with db.sessions() as session:
        lost = session.execute(
            update(Batch)
            .where(Batch.status == QUEUED, Batch.queue.is_not(None))
            .values(published_at=None)
        ).rowcount
        session.commit()
    return lost


def _log_report(report: DispatchReport) -> None:
    if report:
        log.info(
            "published %d, re-published %d, failed %d, cancelled %d; in flight %s",
            report.published,
            report.republished,
            report.failed,
            report.cancelled,
            report.in_flight,
        )


class Backoff:
    """The wait between passes: ``interval``, doubled after each failed pass up to a
    minute. An outage (broker, database) is one line when it starts or its reason
    changes, and one when it ends; any other error is logged with its traceback."""

    def __init__(self, interval: float) -> None:
        self.interval = self.delay = interval
        self.reason: str | None = None

    def failed(self, exc: Exception) -> None:
        self.delay = min(self.delay * 2, max(self.interval, MAX_BACKOFF_SECONDS))
        reason = outage_reason(exc)
        if reason is None:
            log.exception("dispatch pass failed; retrying in %.0f s", self.delay)
        elif reason != self.reason:
            log.error("%s; retrying, at most every %.0f s", reason, MAX_BACKOFF_SECONDS)
        self.reason = reason

    def recovered(self) -> None:
        if self.reason is not None:
            log.info("dispatching again")
        self.reason, self.delay = None, self.interval


def outage_reason(exc: Exception) -> str | None:
    """One line for an error of the broker or the database; None for anything else."""
    from kombu.exceptions import OperationalError as BrokerError

    if isinstance(exc, BrokerUnusable | DatabaseUnavailable):
        return str(exc)
    if isinstance(exc, BrokerError):
        return f"broker: {first_line(exc)}"
    if isinstance(exc, OperationalError):
        return f"database: {first_line(exc)}"
    return None


class StallLog:
    """Logs the stalled jobs (``control.stalled_jobs``) at most once a minute."""

    def __init__(self) -> None:
        self.last = -STALL_LOG_SECONDS

    def log(self, db: Database) -> None:
        if time.monotonic() - self.last < STALL_LOG_SECONDS:
            return
        with db.reads() as session:
            stalls = stalled_jobs(session)
        for job_id, stall in stalls.items():
            log.warning("job %d %s", job_id, stall)
        if stalls:
            self.last = time.monotonic()


def _runnable_jobs():
    now = utcnow()
    return (
        select(Job.id, Job.queue)
        .where(
            Job.queue.is_not(None),
            Job.status.in_([QUEUED, RUNNING]),
            or_(Job.not_before.is_(None), Job.not_before <= now),
        )
        .order_by(Job.priority.desc(), Job.id)
    )


def _dispatch_job(db: Database, job_id: int, publish: Publish, in_flight: InFlight) -> int:
    """Top the job's queue up with its waiting batches, forming new ones as needed."""
    with db.sessions() as session:
        job = session.scalar(
            select(Job)
            .where(Job.id == job_id, Job.status.in_([QUEUED, RUNNING]))
            .with_for_update(skip_locked=True)
        )
        if job is None:  # another scheduler holds it, or it was cancelled meanwhile
            return 0
        free = in_flight.free(job.queue)
        pending = _pending_batches(session, job_id)
        if len(pending) < free and _has_unbatched_cells(session, job_id):
            form_batches(session, job_id, limit=free - len(pending), queue=job.queue)
            pending = _pending_batches(session, job_id)
        chosen = _queue_within_bound(session, pending, in_flight)
        if not chosen and not _has_active_batches(session, job_id):
            update_job_status(session, job_id)
        session.commit()
    _publish_all(db, publish, chosen)
    return len(chosen)


def _queue_within_bound(
    session: Session,
    pending: list[Outgoing],
    in_flight: InFlight,
) -> list[Outgoing]:
    """Mark as queued the pending batches their queue's in-flight bound allows; return them."""
    chosen = []
    for batch in pending:
        if in_flight.free(batch.queue) > 0:
            chosen.append(batch)
            in_flight.add(batch.queue)
    if chosen:
        _stamp_published(session, [batch.batch_id for batch in chosen], status=QUEUED)
    return chosen


def _dispatch_verification(db: Database, publish: Publish, in_flight: InFlight) -> int:
    """Publish waiting verify batches (``reprogrid verify --queue``), after generation work.

    They belong to jobs that are usually finished, run embedded or on the
    fleet alike, so they are found by kind rather than through a runnable job.
    """
    with db.sessions() as session:
        pending = session.execute(
            select(*OUTGOING_COLUMNS)
            .where(Batch.kind == VERIFY_KIND, Batch.status == PENDING)
            .order_by(Batch.id)
            .limit(RECOVER_CHUNK)
            .with_for_update(skip_locked=True)
        ).all()
        chosen = _queue_within_bound(session, [Outgoing.of(*row) for row in pending], in_flight)
        session.commit()
    _publish_all(db, publish, chosen)
    return len(chosen)


def _has_unbatched_cells(session: Session, job_id: int) -> bool:
    query = select(Cell.id).where(
        Cell.job_id == job_id, Cell.status == QUEUED, Cell.batch_id.is_(None)
    )
    return session.scalar(query.limit(1)) is not None


def _has_active_batches(session: Session, job_id: int) -> bool:
    query = select(Batch.id).where(
        Batch.job_id == job_id, Batch.status.in_([PENDING, QUEUED, RUNNING])
    )
    return session.scalar(query.limit(1)) is not None


def _pending_batches(session: Session, job_id: int) -> list[Outgoing]:
    """The job's generation batches waiting to be sent, once any retry backoff has passed."""
    rows = session.execute(
        select(*OUTGOING_COLUMNS)
        .where(
            Batch.job_id == job_id,
            Batch.kind == "generate",
            Batch.status == PENDING,
            or_(Batch.retry_at.is_(None), Batch.retry_at <= utcnow()),
        )
        .order_by(Batch.id)
    ).all()
    return [Outgoing.of(*row) for row in rows]


def _stamp_published(session: Session, batch_ids: list[int], **values: str) -> None:
    session.execute(
        update(Batch).where(Batch.id.in_(batch_ids)).values(published_at=utcnow(), **values)
    )


def _publish_all(db: Database, publish: Publish, batches: list[Outgoing]) -> None:
    """Send the messages; if the broker fails, put the unsent batches back to wait."""
    for index, batch in enumerate(batches):
        try:
            publish(batch.message_id(), batch.queue)
        except Exception:
            unsent = [b.batch_id for b in batches[index:]]
            with db.sessions() as session:
                session.execute(
                    update(Batch)
                    .where(Batch.id.in_(unsent), Batch.status == QUEUED)
                    .values(status=PENDING, published_at=None)
                )
                session.commit()
            raise


def _recover(
    db: Database, publish: Publish, limits: DispatchLimits, report: DispatchReport
) -> None:
    """Re-send batches whose message or worker was lost; give up on those lost too often.

    A queued batch is re-sent only to a queue that has an idle live worker: a
    message still waiting behind busy workers is not lost. A batch whose worker
    died is re-sent to a queue some live worker consumes, busy or not: it is
    lost for sure. Nothing is sent to a queue no live worker consumes: it
    would only wait there too (``report.unserved`` says so).
    """
    now = utcnow()
    resent_before = now - timedelta(seconds=min(limits.redeliver_seconds, limits.lease_seconds))
    alive_since = now - timedelta(seconds=LIVE_WORKER_SECONDS)
    with db.sessions() as session:
        live = session.execute(
            select(Worker.queue, Worker.current_batch_id).where(consuming(alive_since))
        ).all()
        served = {queue for queue, _ in live}
        idle = {queue for queue, batch_id in live if batch_id is None}
        report.unserved = _unserved_queues(session, alive_since)
        dead_holders = select(Worker.name).where(Worker.heartbeat_at < alive_since)
        lost = session.scalars(
            select(Batch)
            .join(Job, Job.id == Batch.job_id)
            .where(
                FLEET_BATCH,
                or_(
                    (Batch.status == QUEUED) & Batch.queue.in_(idle),
                    (Batch.status == RUNNING)
                    & or_(Batch.lease_until < now, Batch.worker.in_(dead_holders))
                    & Batch.queue.in_(served),
                ),
                or_(Batch.published_at.is_(None), Batch.published_at < resent_before),
            )
            .order_by(Batch.id)
            .limit(RECOVER_CHUNK)
            .with_for_update(skip_locked=True, of=Batch)
        ).all()
        resend = [
            Outgoing.of(batch.id, batch.queue, batch.job_id, batch.cell_ids)
            for batch in lost
            if _settle_lost(session, batch, limits.max_attempts, report)
        ]
        # A running batch stays with its worker until another claims it; its lease
        # is cut short so that the claim can: a worker that was only slow finds
        # the batch gone at its next lease check and stops.
        if resend:
            resent = [batch.batch_id for batch in resend]
            _stamp_published(session, resent)
            session.execute(
                update(Batch)
                .where(Batch.id.in_(resent), Batch.status == RUNNING)
                .values(lease_until=now)
            )
        session.commit()
    for batch in resend:
        publish(batch.message_id(), batch.queue)
    report.republished += len(resend)


def _unserved_queues(session: Session, alive_since: datetime) -> dict[str, int]:
    """Queues whose queued batches no live, consuming worker could be reading."""
    served = select(Worker.queue).where(consuming(alive_since))
    return dict(
        session.execute(
            select(Batch.queue, func.count())
            .join(Job, Job.id == Batch.job_id)
            .where(FLEET_BATCH, Batch.status == QUEUED, Batch.queue.not_in(served))
            .group_by(Batch.queue)
        ).all()
    )


def _settle_lost(session: Session, batch: Batch, max_attempts: int, report: DispatchReport) -> bool:
    """Fail or cancel a lost batch if that is its fate; True if it should be re-sent."""
    if batch.status != RUNNING:
        return True
    if session.get(Job, batch.job_id).status == CANCELLED:
        finish_batch(session, batch.id, batch.worker, CANCELLED, CANCELLED_ERROR)
        report.cancelled += 1
    elif batch.attempts >= max_attempts:
        error = (
            f"worker {batch.worker} lost (lease expired or heartbeat stopped)"
            f" on attempt {batch.attempts}"
        )
        finish_batch(session, batch.id, batch.worker, FAILED, error)
        report.failed += 1
    else:
        return True
    update_job_status(session, batch.job_id)
    return False
