"""Verification batches for the fleet: images to re-check, for workers to regenerate.

A batch of kind ``verify`` lists the cells whose images a worker regenerates
and compares (``reprogrid.worker.verify.verify_batch``). One verify batch
is formed per original batch, so each worker replays an original batch once and
in its recorded composition. They are dispatched like generation batches: rows
in ``pending`` on a queue, published by the scheduler. ``replay`` says how the
worker regenerates (``alone``, ``threads``, ``full_determinism``,
``tolerance``); the worker always uses its own device.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from reprogrid.models import PENDING, Batch
from reprogrid.models.verifications import VERIFY_KIND, ImageRef, group_by_batch


def queue_verification(
    session: Session, images: list[ImageRef], queue: str, replay: dict[str, Any] | None = None
) -> list[int]:
    """Create pending verify batches for these images on ``queue``; return their ids.

    ``replay`` (None: as recorded) is stored with each batch. Does not commit.
    """
    batch_ids = []
    for targets in group_by_batch(images).values():
        batch = Batch(
            job_id=targets[0].job_id,
            kind=VERIFY_KIND,
            cell_ids=[t.cell_id for t in targets],
            replay=replay,
            status=PENDING,
            queue=queue,
        )
        session.add(batch)
        session.flush()
        batch_ids.append(batch.id)
    return batch_ids
