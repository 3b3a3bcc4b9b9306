"""The Celery app both sides share, and publishing a batch by task name.

Redis only carries messages; the database says what each batch is and who
holds it. So the settings are the safe ones: JSON only (a pickle message is
refused), no result backend, acknowledgement after the task ran, one message
prefetched per worker, no ETA or countdown (not-before lives in the job row).
The scheduler names the task by string, so this module never imports the
worker or torch. Each message names the fleet (the database) it belongs to.

Celery's own tools load this module's ``app`` (built on first access from the
``REPROGRID_*`` settings): ``celery -A reprogrid.scheduler.broker inspect
active``, ``... events``, ``... flower``. Workers answer remote control and
send task events unless ``REPROGRID_CELERY_MONITORING`` is false.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from reprogrid.config import Settings

if TYPE_CHECKING:
    from celery import Celery

# The one task: run the batch with this id. Its message body is just the id.
RUN_BATCH_TASK = "reprogrid.run_batch"
DEFAULT_QUEUE = "default"
# Redis hands an unacknowledged message to another worker after this long. The
# scheduler already re-publishes a batch whose lease ran out, and a second copy
# is refused by the claim, so this only needs to outlast the longest batch.
MIN_VISIBILITY_SECONDS = 3600
VISIBILITY_LEASES = 6


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
        worker_prefetch_multiplier=1,
        task_default_queue=DEFAULT_QUEUE,
        broker_transport_options={"visibility_timeout": visibility_timeout(settings.lease_seconds)},
        broker_connection_retry_on_startup=True,
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


def publish_batch(app: Celery, batch_id: int, queue: str, fleet: str | None = None) -> None:
    """Send one ``run_batch`` message for the batch to its queue.

    ``fleet`` is the database's identity (``models.queries.fleet_id``): a worker
    of another database refuses the message and leaves it for its owner.
    """
    kwargs = {"fleet": fleet} if fleet else {}
    app.send_task(RUN_BATCH_TASK, args=[batch_id], kwargs=kwargs, queue=queue)
