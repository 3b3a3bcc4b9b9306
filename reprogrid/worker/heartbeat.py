"""A worker's row in the ``worker`` table, refreshed every few seconds by a thread.

The row says who the worker is (name, host, pid, device, queue, environment),
what it runs now and which checkpoints it holds in memory; ``reprogrid status``
lists the workers whose heartbeat is recent. A name belongs to one live
process at a time, because batches are leased to workers by name.

Each beat also renews the lease of every batch this process works on
(``WorkerContext.active``: computing, loading its checkpoint, or being
recorded), so a lease only has to outlast a few missed beats; the scheduler
takes a batch back as soon as its worker's beats stop. It does so for at most
``HEARTBEAT_HOLD_SECONDS`` after the claim: a process whose main thread hangs
(a store write that never returns) keeps beating, but loses its batch then
(denoising renews the lease itself, between steps).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from reprogrid.models import RUNNING, Batch, Worker, utcnow
from reprogrid.models.queries import LIVE_WORKER_SECONDS
from reprogrid.worker.checkpoints import checkpoint_loads, loaded_checkpoints
from reprogrid.worker.execute import WorkerContext

HEARTBEAT_SECONDS = 5.0
HEARTBEAT_HOLD_SECONDS = 3600.0

log = logging.getLogger(__name__)


class NameTaken(RuntimeError):
    """Another live worker process already uses this name."""


class Heartbeat:
    """Keeps this process's worker row up to date until stopped."""

    def __init__(self, ctx: WorkerContext, queue: str, interval: float = HEARTBEAT_SECONDS):
        self.ctx = ctx
        self.queue = queue
        self.interval = interval
        self.state: str | None = None  # None while consuming; else why not
        self.environment_id = ctx.environment_id("float32")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reprogrid-heartbeat", daemon=True)

    def start(self) -> None:
        """Write the row (refusing a name a live process holds), then keep it fresh."""
        with self.ctx.db.sessions() as session:
            _check_name_free(session, self.ctx.name)
            _free_predecessor_batches(session, self.ctx.name)
        self.beat(started=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and remove the row: this worker is gone."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        with self.ctx.db.sessions() as session:
            session.execute(
                delete(Worker).where(Worker.name == self.ctx.name, Worker.pid == os.getpid())
            )
            session.commit()

    def beat(self, started: bool = False) -> None:
        """Insert or refresh the row now."""
        values = {
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "device": self.ctx.device,
            "queue": self.queue,
            "environment_id": self.environment_id,
            "current_batch_id": self._current_batch(),
            "checkpoints": [self.ctx.checkpoint(c) for c in loaded_checkpoints()],
            "checkpoint_loads": checkpoint_loads(),
            "heartbeat_at": utcnow(),
            "state": self.state,
        }
        if started:
            values["started_at"] = values["heartbeat_at"]
        with self.ctx.db.sessions() as session:
            self._renew_leases(session, values["heartbeat_at"])
            row = session.scalar(select(Worker).where(Worker.name == self.ctx.name))
            if row is None:
                session.add(Worker(name=self.ctx.name, **values))
            else:
                for key, value in values.items():
                    setattr(row, key, value)
            try:
                session.commit()
            except IntegrityError:  # the same name inserted at the same moment elsewhere
                session.rollback()
                raise NameTaken(f"worker name {self.ctx.name!r} was just taken") from None

    def _current_batch(self) -> int | None:
        """The batch claimed last of those this worker holds: the one computing (the one
        before it may still be recording). Not the message's batch: affinity may have
        claimed another batch of the job (worker/affinity.py)."""
        active = dict(self.ctx.active)
        return max(active, key=active.__getitem__) if active else None

    def _renew_leases(self, session: Session, now: datetime) -> None:
        since = time.monotonic() - HEARTBEAT_HOLD_SECONDS
        active = [batch for batch, claimed in list(self.ctx.active.items()) if claimed > since]
        if active:
            session.execute(
                update(Batch)
                .where(Batch.id.in_(active), Batch.worker == self.ctx.name, Batch.status == RUNNING)
                .values(lease_until=now + timedelta(seconds=self.ctx.lease_seconds))
            )

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception:  # a database hiccup must not kill the worker
                log.exception("heartbeat failed")


def _free_predecessor_batches(session: Session, name: str) -> None:
    """Cut short the leases a dead process of this name left: this process's beats
    must not make them look alive. The scheduler then sends them again."""
    session.execute(
        update(Batch)
        .where(Batch.worker == name, Batch.status == RUNNING)
        .values(lease_until=utcnow())
    )
    session.commit()


def _check_name_free(session: Session, name: str) -> None:
    row = session.scalar(select(Worker).where(Worker.name == name))
    if row is None or row.heartbeat_at < utcnow() - timedelta(seconds=LIVE_WORKER_SECONDS):
        return
    here = row.hostname == socket.gethostname()
    if here and (row.pid == os.getpid() or not _pid_alive(row.pid)):
        return  # a restart after this host's previous process with the name died
    raise NameTaken(
        f"worker name {name!r} is in use by pid {row.pid} on {row.hostname}"
        " (give each worker its own --name)"
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
