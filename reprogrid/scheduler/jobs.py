"""Jobs in the database: create a job with all its cells, and group cells into batches.

Every cell of a grid is a row before any work starts; batches are formed from
waiting cells in grid order, so the same spec always gives the same batch
compositions (which the determinism contract depends on). A cell row holds no
recipe: its job holds one ``recipe_base`` per batch key and one ``job_prompt``
per prompt (docs/architecture.md, "How cells are stored").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from reprogrid.models import (
    PENDING,
    QUEUED,
    Batch,
    Cell,
    Database,
    Job,
    JobPrompt,
    PromptTokens,
    RecipeBase,
)
from reprogrid.models.db import bulk_insert
from reprogrid.models.tables import to_signed_seed
from reprogrid.scheduler.grid import CellPlan, expand
from reprogrid.scheduler.spec import JobSpec
from reprogrid.scheduler.tokenization import TokenReport, tokenize_spec, truncated_cells


def create_job(
    db: Database,
    spec: JobSpec,
    priority: int = 0,
    not_before: datetime | None = None,
    parent_image_id: int | None = None,
    queue: str | None = None,
    tokens: TokenReport | None = None,
) -> int:
    """Insert the job and every cell of its grid in one transaction; return the job id.

    A job with a ``queue`` is dispatched by the scheduler; one without is run
    embedded by the process that created it. ``tokens`` is the spec's
    :func:`tokenize_spec` report where the caller has it already.
    """
    tokens = tokens or tokenize_spec(spec)
    with db.sessions() as session:
        job = Job(
            name=spec.name,
            model=spec.model,
            spec=spec.to_json(),
            status=QUEUED,
            priority=priority,
            not_before=not_before,
            parent_image_id=parent_image_id,
            queue=queue,
            cell_count=spec.cell_count,
            seeds=str(spec.seeds),
            combinations=spec.cell_count // (len(spec.prompts or ()) or 1) // spec.seeds.count,
        )
        session.add(job)
        session.flush()
        bases: dict[str, str] = {}
        rows = _cell_rows(job.id, expand(spec), truncated_cells(spec, tokens), bases)
        connection = session.connection()
        if tokens is not None:
            bulk_insert(
                connection, PromptTokens.__table__, TOKEN_COLUMNS, _token_rows(job.id, tokens)
            )
        bulk_insert(connection, Cell.__table__, CELL_COLUMNS, rows)
        bulk_insert(
            connection,
            RecipeBase.__table__,
            ("job_id", "batch_key", "recipe"),
            ((job.id, key, base) for key, base in bases.items()),
        )
        bulk_insert(
            connection,
            JobPrompt.__table__,
            ("job_id", "position", "prompt"),
            ((job.id, i, p) for i, p in enumerate(spec.prompts or ())),
        )
        session.commit()
        return job.id


CELL_COLUMNS = (
    "job_id",
    "grid_index",
    "prompt",
    "seed",
    "params",
    "recipe_sha256",
    "batch_key",
    "status",
    "attempts",
    "truncated",
)


TOKEN_COLUMNS = ("job_id", "role", "text", "tokens", "limits", "truncated")


def _token_rows(job_id: int, tokens: TokenReport) -> Iterator[tuple]:
    """``prompt_tokens`` rows in their stored form (JSON as text), one per distinct text:
    a million prompts are a million tuples streamed to the driver, not ORM objects."""
    limits = json.dumps(tokens.limits)
    for count in tokens.counts:
        yield job_id, count.role, count.text, json.dumps(count.tokens), limits, count.truncated


def _cell_rows(
    job_id: int,
    cells: Iterable[CellPlan],
    truncated: Callable[[CellPlan], bool | None],
    bases: dict[str, str],
) -> Iterator[tuple]:
    """Cells in their stored form, in the order of ``CELL_COLUMNS``; fills ``bases``
    (batch key -> base recipe) as it goes."""
    params, params_json = None, "{}"
    for cell in cells:
        grid_index, prompt, seed, cell_params, recipe_sha256, batch_key, base = cell
        if cell_params is not params:  # one dict per axis combination: serialize it once
            params, params_json = cell_params, json.dumps(cell_params)
            bases[batch_key] = base
        yield (
            job_id,
            grid_index,
            prompt,
            to_signed_seed(seed),
            params_json,
            recipe_sha256,
            batch_key,
            QUEUED,
            0,
            truncated(cell),
        )


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
