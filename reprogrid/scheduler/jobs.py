"""Jobs in the database: create a job with all its cells, and group cells into batches.

Every cell of a grid is a row before any work starts; batches are formed from
waiting cells in grid order, so the same spec always gives the same batch
compositions (which the determinism contract depends on).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from datetime import datetime

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from reprogrid.models import PENDING, QUEUED, Batch, Cell, Database, Job
from reprogrid.models.tables import to_signed_seed
from reprogrid.scheduler.grid import CellPlan, expand
from reprogrid.scheduler.spec import JobSpec

INSERT_CHUNK = 20_000


def create_job(
    db: Database,
    spec: JobSpec,
    priority: int = 0,
    not_before: datetime | None = None,
    parent_image_id: int | None = None,
) -> int:
    """Insert the job and every cell of its grid in one transaction; return the job id."""
    with db.sessions() as session:
        job = Job(
            name=spec.name,
            model=spec.model,
            spec=spec.to_json(),
            status=QUEUED,
            priority=priority,
            not_before=not_before,
            parent_image_id=parent_image_id,
            cell_count=spec.cell_count,
        )
        session.add(job)
        session.flush()
        connection = session.connection()
        for chunk in _chunks(expand(spec), INSERT_CHUNK):
            connection.execute(insert(Cell.__table__), [_cell_row(job.id, c) for c in chunk])
        session.commit()
        return job.id


def _cell_row(job_id: int, cell: CellPlan) -> dict:
    # Core insert bypasses the ORM type's conversion: store the seed's signed form here.
    return {
        "job_id": job_id,
        "grid_index": cell.grid_index,
        "prompt": cell.prompt,
        "seed": to_signed_seed(cell.seed),
        "params": cell.params,
        "recipe": cell.recipe,
        "recipe_sha256": cell.recipe_sha256,
        "batch_key": cell.batch_key,
        "status": QUEUED,
        "attempts": 0,
    }


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def job_spec(session: Session, job_id: int) -> JobSpec:
    """The validated spec a job was created from."""
    return JobSpec.from_json(session.get(Job, job_id).spec)


def form_batches(
    session: Session, job_id: int, limit: int | None = None, queue: str = "default"
) -> list[int]:
    """Group the job's waiting, unbatched cells into new batches, in grid order.

    Cells share a batch only if they share a ``batch_key`` (everything but
    prompt and seed); a batch holds at most ``batch_size`` cells, one for
    batch-invariant jobs. Forms at most ``limit`` batches. Does not commit.
    """
    spec = job_spec(session, job_id)
    size = 1 if spec.batch_invariant else spec.batch_size
    query = (
        select(Cell.id, Cell.batch_key)
        .where(Cell.job_id == job_id, Cell.status == QUEUED, Cell.batch_id.is_(None))
        .order_by(Cell.grid_index)
    )
    if limit is not None:
        query = query.limit(limit * size)
    rows = session.execute(query).all()
    groups: list[list[int]] = []
    open_group: dict[str, list[int]] = {}
    for cell_id, key in rows:
        group = open_group.get(key)
        if group is None or len(group) == size:
            group = open_group[key] = []
            groups.append(group)
        group.append(cell_id)
    if limit is not None and len(rows) == limit * size and groups and len(groups[-1]) < size:
        # The query may have cut the last group short: form it on a later call, whole,
        # so batch compositions never depend on how many batches were formed at once.
        groups.pop()
    batches = [
        Batch(job_id=job_id, cell_ids=cell_ids, status=PENDING, queue=queue)
        for cell_ids in groups[:limit]
    ]
    if not batches:
        return []
    # One multi-row INSERT for the batches and one executemany UPDATE for their cells.
    session.add_all(batches)
    session.flush()
    cells = Cell.__table__
    session.connection().execute(
        update(cells).where(cells.c.id == bindparam("cell")).values(batch_id=bindparam("batch")),
        [{"cell": cell_id, "batch": batch.id} for batch in batches for cell_id in batch.cell_ids],
    )
    return [batch.id for batch in batches]
