"""Verification batches for the fleet: images to re-check, for workers to regenerate.

A batch of kind ``verify`` lists the cells whose images a worker regenerates
and compares (``reprogrid.worker.verify.execute_verify_batch``). One verify batch
is formed per original batch, so each worker replays an original batch once and
in its recorded composition. They are dispatched like generation batches: rows
in ``pending`` on a queue, published by the scheduler.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from reprogrid.models import PENDING, Batch
from reprogrid.models.verifications import VERIFY_KIND, ImageRef, group_by_batch


def queue_verification(session: Session, images: list[ImageRef], queue: str) -> list[int]:
    """Create pending verify batches for these images on ``queue``; return their ids.

    Does not commit.
    """
    batch_ids = []
    for targets in group_by_batch(images).values():
        batch = Batch(
            job_id=targets[0].job_id,
            kind=VERIFY_KIND,
            cell_ids=[t.cell_id for t in targets],
            status=PENDING,
            queue=queue,
        )
        session.add(batch)
        session.flush()
        batch_ids.append(batch.id)
    return batch_ids
