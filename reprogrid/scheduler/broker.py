"""The Celery app both sides share, and publishing a batch by task name.

Redis only carries messages; the database says what each batch is and who
holds it. So the settings are the safe ones: JSON only (a pickle message is
refused), no result backend, acknowledgement after the task ran, no ETA or
countdown (not-before lives in the job row). Each worker reserves one message
beyond the one it runs, and claims that batch at once (``worker.service``): its
device then goes from one pipeline call to the next without waiting for
Redis or the database.
The scheduler names the task by string, so this module never imports the
worker or torch. Each message names the fleet (the database) it belongs to.

A message reads ``run_batch(batch_id, job_id, cells=N, fleet=F)``: Flower and
``celery inspect`` show which job and batch each task is and how many cells it
holds. Only the batch id is read by the worker (the job and cells are for
people; the batch's row is what counts), and a bare ``[batch_id]`` message of
an older scheduler runs as before. The task's name stays ``reprogrid.run_batch``
(no per-batch ``shadow`` name), so Flower's task-type filter and its
Prometheus labels keep one series for all batches.

Celery's own tools load this module's ``app`` (built on first access from the
``REPROGRID_*`` settings): ``celery -A reprogrid.scheduler.broker inspect
active``, ``... events``, ``... flower``. Workers answer remote control and
send task events unless ``REPROGRID_CELERY_MONITORING`` is false.

``BrokerWatch`` tells both sides when Redis restarted (its ``run_id``
changed: the messages it held may be gone) or cannot be used (down, or a
wrong password), without going through Celery.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from reprogrid.config import Settings

if TYPE_CHECKING:
    from celery import Celery

# The one task: run the batch with this id (its job and cell count ride along).
RUN_BATCH_TASK = "reprogrid.run_batch"
DEFAULT_QUEUE = "default"
# Redis hands an unacknowledged message to another worker after this long. The
# scheduler already re-publishes a batch whose lease ran out, and a second copy
# is refused by the claim, so this only needs to outlast the longest batch.
MIN_VISIBILITY_SECONDS = 3600
VISIBILITY_LEASES = 6
WATCH_TIMEOUT_SECONDS = 2.0
UNREACHABLE = "not consuming: the broker cannot be reached"
RESTARTED = "not consuming: the broker restarted"


def visibility_timeout(lease_seconds: int) -> int:
    """Seconds before Redis redelivers an unacknowledged message."""
    return max(MIN_VISIBILITY_SECONDS, VISIBILITY_LEASES * lease_seconds)


def celery_app(settings: Settings) -> Celery:
    """A Celery app on ``settings.broker_url`` with reprogrid's settings."""
    from celery import Celery  # only commands that talk to the broker pay for the import

    monitoring = settings.celery_monitoring
    app = Celery("reprogrid", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # The task running and the next one, claimed ahead (a worker runs one at a time).
        worker_prefetch_multiplier=2,
        task_default_queue=DEFAULT_QUEUE,
        broker_transport_options={"visibility_timeout": visibility_timeout(settings.lease_seconds)},
        broker_connection_retry_on_startup=True,
        # A broker down for long is waited for: the worker's BrokerWatch restarts
        # its consumer once the broker is back (broker_watch.py).
        broker_connection_max_retries=None,
        # Celery's inspect and control commands and Flower see the workers
        # through remote control (a pidbox queue per worker) and task events.
        worker_enable_remote_control=monitoring,
        worker_send_task_events=monitoring,
        task_send_sent_event=monitoring,
        worker_hijack_root_logger=False,
    )
    return app


@functools.cache
def shared_app() -> Celery:
    """The app on this process's ``REPROGRID_*`` settings, built once."""
    return celery_app(Settings.from_env())


def __getattr__(name: str) -> Celery:
    """``app``: :func:`shared_app`, built on first access so importing stays cheap."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return shared_app()


class BatchId(int):
    """A batch id that also says the batch's job and how many cells it holds.

    It is the id wherever an ``int`` is expected; ``publish_batch`` puts the
    rest in the message, for Flower and ``celery inspect`` to show.
    """

    job_id: int | None
    cells: int | None

    def __new__(cls, batch_id: int, job_id: int | None = None, cells: int | None = None) -> BatchId:
        self = super().__new__(cls, batch_id)
        self.job_id, self.cells = job_id, cells
        return self


def batch_title(batch_id: int, job_id: int | None = None, cells: int | None = None) -> str:
    """``job 3 batch 17 (8 cells)``: a batch as tasks, logs and errors name it."""
    title = f"batch {batch_id}" if job_id is None else f"job {job_id} batch {batch_id}"
    if cells is not None:
        title += f" ({cells} cell{'' if cells == 1 else 's'})"
    return title


def message_fields(batch_id: int, fleet: str | None = None) -> tuple[list[int], dict[str, object]]:
    """The ``run_batch`` message's args and kwargs: ``[batch, job]``, ``{cells, fleet}``.

    The job and cell count are sent when ``batch_id`` is a ``BatchId`` that knows them.
    """
    ref = batch_id if isinstance(batch_id, BatchId) else BatchId(batch_id)
    args = [int(ref)] if ref.job_id is None else [int(ref), ref.job_id]
    kwargs: dict[str, object] = {} if ref.cells is None else {"cells": ref.cells}
    if fleet:
        kwargs["fleet"] = fleet
    return args, kwargs


def publish_batch(app: Celery, batch_id: int, queue: str, fleet: str | None = None) -> None:
    """Send one ``run_batch`` message for the batch to its queue.

    ``fleet`` is the database's identity (``models.queries.fleet_id``): a worker
    of another database refuses the message and leaves it for its owner.
    """
    args, kwargs = message_fields(batch_id, fleet)
    app.send_task(RUN_BATCH_TASK, args=args, kwargs=kwargs, queue=queue)


class BrokerWatch:
    """Compares the broker's ``run_id`` with the one seen first; ``error`` says why not reached.

    Only Redis is watched (another transport: ``check`` always answers None).
    """

    def __init__(self, broker_url: str) -> None:
        import redis  # only commands that talk to the broker pay for the import
        from kombu.utils.url import maybe_sanitize_url

        self.shown_url = maybe_sanitize_url(broker_url)  # password masked

        redis_url = broker_url.startswith(("redis://", "rediss://", "unix://"))
        self.client = (
            redis.Redis.from_url(
                broker_url,
                socket_timeout=WATCH_TIMEOUT_SECONDS,
                socket_connect_timeout=WATCH_TIMEOUT_SECONDS,
            )
            if redis_url
            else None
        )
        self.run_id: str | None = None
        self.error: str | None = None  # the last error's first line, while unreachable

    def check(self) -> str | None:
        """None while the broker is the one seen first; ``UNREACHABLE`` or ``RESTARTED``."""
        import redis

        if self.client is None:
            return None
        try:
            run_id = self.client.info("server")["run_id"]
        except redis.RedisError as exc:
            self.error = (str(exc).splitlines() or [type(exc).__name__])[0]
            return UNREACHABLE
        self.error = None
        if self.run_id is None:
            self.run_id = run_id
        return None if run_id == self.run_id else RESTARTED

    def accept_restart(self) -> None:
        """Take the broker as it is now as the one seen first (after acting on a restart)."""
        self.run_id = None
