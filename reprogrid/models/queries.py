"""Read-only queries behind ``status``, ``query`` and ``show``: no torch, few round trips.

Rows come back as plain dicts ready for JSON, CSV or a table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Integer,
    Select,
    and_,
    any_,
    case,
    column,
    false,
    func,
    literal,
    or_,
    select,
    text,
    true,
    tuple_,
    union,
)
from sqlalchemy.orm import Session

from reprogrid.models.calls import for_image
from reprogrid.models.recipes import recipe_of
from reprogrid.models.tables import (
    FINISHED,
    PENDING,
    Batch,
    Cell,
    Checkpoint,
    Environment,
    Fleet,
    Image,
    Job,
    JobPrompt,
    PipelineCall,
    PromptTokens,
    Verification,
    Worker,
    utcnow,
)
from reprogrid.scheduler.grid import GridShape, seed_position
from reprogrid.scheduler.seeds import parse_seeds

# A worker whose heartbeat (every 5 s) is older than this is taken for gone.
LIVE_WORKER_SECONDS = 15
# query --prompt/--seed: beyond this many grid_index ranges per job, test every cell of it.
GRID_RANGES = 2000
# Up to LISTED_CELLS matching cells are listed by id (and sorted by the database): faster
# than testing cells along the index, whose per-row test on SQLite costs ~50 us a cell.
# More are tested along the index from the first match, in grid order. Rows are
# fetched CHUNK at a time.
CHUNK = 1000
LISTED_CELLS = 5000
# The trigram index serves needles of at least this many characters.
TRIGRAM = 3
PROMPT_FTS = "job_prompt_fts"  # SQLite's FTS5 table over job_prompt (migration 0009)
TRIGRAM_INDEX = "ix_job_prompt_trgm"  # PostgreSQL's pg_trgm GIN index (migration 0009)
# Throughput, and so the ETA, is measured over the images of the last few minutes.
THROUGHPUT_WINDOW_SECONDS = 300


def consuming(alive_since: datetime) -> ColumnElement[bool]:
    """The condition on ``Worker`` rows of live workers (a heartbeat since ``alive_since``)
    whose consumer reads its queue (no broker trouble in the row's state)."""
    return (Worker.heartbeat_at >= alive_since) & Worker.state.is_(None)


class NotFound(LookupError):
    """No row matches, or a hash prefix matches several."""


@dataclass(frozen=True)
class CellFilter:
    """Filters of ``reprogrid query``; None means no filter on that field."""

    job: int | None = None
    prompt: str | None = None
    seed: int | None = None
    model: str | None = None
    status: str | None = None
    verdict: str | None = None  # the image has a verification with this verdict
    since: datetime | None = None
    truncated: bool | None = None  # a text encoder cuts (or does not cut) the cell's prompts
    nsfw: bool | None = None  # the safety checker flagged (or passed) the cell's image
    sort: str = "grid"  # a SORT_KEYS name, "-name" for descending
    limit: int | None = None


QUERY_COLUMNS = (
    "image_id",
    "job_id",
    "cell_id",
    "grid_index",
    "status",
    "prompt",
    "seed",
    "params",
    "recipe_sha256",
    "pixel_sha256",
    "png_sha256",
    "path",
    "environment_id",
    "device",
    "torch",
    "diffusers",
    "transformers",
    "python",
    "checkpoint_sha256",
    "error",
    "truncated",
    "nsfw",
)


def _model_condition(session: Session, model: str) -> Any:
    """Cells made with ``model``: every cell of a job on it, or its cells on a model axis.

    The job ids as literals: as a subquery, PostgreSQL sorts every matching
    cell before returning the first row (docs/benchmarks.md).
    """
    jobs = session.execute(select(Job.id, Job.model, Job.spec["axes"]["model"])).all()
    plain = [job_id for job_id, job_model, swept in jobs if not swept and job_model == model]
    swept = [job_id for job_id, _, models in jobs if models and model in models]
    condition = Cell.job_id.in_(plain)
    if swept:
        on_axis = and_(Cell.job_id.in_(swept), Cell.params["model"].as_string() == model)
        condition = or_(condition, on_axis)
    return condition


def image_path(written_under: str | None, relative: str, store: Path) -> str:
    """Where an image's PNG was written: under its recorded store folder, else ``store``."""
    return os.path.join(written_under or store, relative)  # pathlib would intern every name


def store_path(png_sha256: str) -> str:
    """Path of a PNG inside the store, relative to its root."""
    return f"{png_sha256[:2]}/{png_sha256}.png"


def readable_path(path: str | None, png_sha256: str | None, store: Path) -> str | None:
    """The file to read for an image: where it was written or, if the store has moved
    since, the same content-addressed file under ``store``."""
    if path is None or png_sha256 is None or os.path.exists(path):
        return path
    moved = os.path.join(store, store_path(png_sha256))
    return moved if os.path.exists(moved) else path


# When a cell's row last changed: its image was made, or (no image) its job was submitted.
made_at = func.coalesce(Image.created_at, Job.created_at)
SORT_KEYS = {
    "grid": (),
    # seeds >= 2**63 are stored negative: sort them after the others
    "seed": (case((Cell.seed < 0, 1), else_=0), Cell.seed),
    "prompt": (Cell.prompt,),
    "status": (Cell.status,),
    "time": (made_at,),
}


def query_cells(session: Session, where: CellFilter, store: Path) -> Iterator[dict[str, Any]]:
    """Cells matching the filter, with their image if it exists, sorted (job and grid order)."""
    query = (
        select(
            Image.id,
            Cell.job_id,
            Cell.id,
            Cell.grid_index,
            Cell.status,
            Cell.prompt,
            Cell.seed,
            Cell.params,
            Cell.recipe_sha256,
            Image.pixel_sha256,
            Image.png_sha256,
            Image.path,
            Image.environment_id,
            Environment.device_name,
            Environment.torch,
            Environment.diffusers,
            Environment.transformers,
            Environment.python,
            Checkpoint.sha256,
            Cell.error,
            Cell.truncated,
            Image.nsfw,
            Image.store,
        )
        .outerjoin(Image, Image.cell_id == Cell.id)
        .outerjoin(Environment, Environment.id == Image.environment_id)
        .outerjoin(Checkpoint, Checkpoint.id == Image.checkpoint_id)
        .join(Job, Job.id == Cell.job_id)
        .order_by(*_sort_order(where.sort), Cell.job_id, Cell.grid_index)
        .limit(where.limit)
    )
    if where.job is not None:
        query = query.where(Cell.job_id == where.job)
    if where.prompt is not None or where.seed is not None:
        query = query.where(_grid_condition(session, where))
    if where.model is not None:
        query = query.where(_model_condition(session, where.model))
    if where.status is not None:
        query = query.where(Cell.status == where.status)
    if where.verdict is not None:
        verified = select(Verification.image_id).where(Verification.verdict == where.verdict)
        query = query.where(Image.id.in_(verified))
    if where.since is not None:
        query = query.where(made_at >= where.since)
    if where.truncated is not None:
        query = query.where(Cell.truncated.is_(where.truncated))
    if where.nsfw is not None:
        query = query.where(Image.nsfw.is_(where.nsfw))
    for row in session.execute(query.execution_options(yield_per=CHUNK)):
        *values, written_under = row
        record = dict(zip(QUERY_COLUMNS, values, strict=True))
        if record["path"] is not None:
            record["path"] = image_path(written_under, record["path"], store)
        yield record


def _grid_condition(session: Session, where: CellFilter) -> Any:
    """Cells of the filter's prompt substring and seed, found by grid arithmetic.

    ``cell`` has no index on prompt or seed (each would cost a million-cell
    submission seconds): the matching prompts come from ``job_prompt`` (its
    trigram index), and each job's spec says which ``grid_index`` values hold
    them and the seed, read on the ``(job_id, grid_index)`` index. Few matches
    are listed as ranges (the database sorts them); more are tested cell by
    cell along the index from the first match, in grid order, so that the
    first rows come without reading every match (see the constants).
    """
    prompts: dict[int, list[int]] | None = None
    if where.prompt is not None:
        prompts = {}
        for job_id, position in session.execute(prompt_matches(session, where.prompt, where.job)):
            prompts.setdefault(job_id, []).append(position)
    # The job's shape columns, never its spec: a spec's prompt list can hold a million prompts.
    jobs = select(Job.id, Job.cell_count, Job.seeds, Job.combinations).order_by(Job.id)
    if where.job is not None:
        jobs = jobs.where(Job.id == where.job)
    elif prompts is not None:
        jobs = jobs.where(Job.id.in_(prompts))
    found: dict[int, tuple[GridShape, list[int] | None, int | None]] = {}
    for job_id, cell_count, stored_seeds, combinations in session.execute(jobs):
        seeds = parse_seeds(stored_seeds)
        positions = None if prompts is None else prompts.get(job_id, [])
        seed = None if where.seed is None else seed_position(seeds, where.seed)
        if positions != [] and (where.seed is None or seed is not None):
            found[job_id] = (GridShape.of(cell_count, seeds, combinations), positions, seed)
    listed = {j: shape.ranges(p, s, most=GRID_RANGES) for j, (shape, p, s) in found.items()}
    if all(r is not None for r in listed.values()):
        matches = _cells(listed.values())
        if matches <= LISTED_CELLS:
            # The ids first: with them as literals, PostgreSQL knows how few rows to join.
            postgres = session.get_bind().dialect.name == "postgresql"
            each = (and_(Cell.job_id == j, _in_ranges(r, postgres)) for j, r in listed.items())
            ids = session.scalars(select(Cell.id).where(or_(false(), *each))).all()
            return _one_of(Cell.id, list(ids), postgres)
    if not found:
        return false()
    tests = {job_id: _grid_test(*match) for job_id, match in found.items()}
    # From the first job's first match to the last job's last: row-value bounds that both
    # databases read as one range of the (job_id, grid_index) index.
    first_job, (shape, positions, seed) = next(iter(found.items()))
    first = (min(positions) if positions else 0) * shape.seeds + (seed or 0)
    last_job, (shape, positions, seed) = list(found.items())[-1]
    last_prompt = max(positions) if positions else shape.prompts - 1
    last_seed = shape.seeds - 1 if seed is None else seed
    last = ((shape.combinations - 1) * shape.prompts + last_prompt) * shape.seeds + last_seed
    key = tuple_(Cell.job_id, Cell.grid_index)
    bounds = and_(key >= (first_job, first), key <= (last_job, last))
    return and_(bounds, case(tests, value=Cell.job_id, else_=false()))


def _cells(ranges: Iterable[list[tuple[int, int]]]) -> int:
    return sum(high - low + 1 for job in ranges for low, high in job)


def _in_ranges(ranges: list[tuple[int, int]], postgres: bool) -> Any:
    single = [low for low, high in ranges if low == high]
    spans = [Cell.grid_index.between(low, high) for low, high in ranges if low != high]
    return or_(_one_of(Cell.grid_index, single, postgres), *spans) if single else or_(*spans)


def _one_of(column: Any, values: list[int], postgres: bool) -> Any:
    """``column IN values``; on PostgreSQL ``= ANY`` of one array parameter, which
    binds in constant time where an IN list of a thousand values costs tens of ms."""
    if postgres:
        return column == any_(literal(values, ARRAY(Integer)))
    return column.in_(values)


def _grid_test(shape: GridShape, prompts: list[int] | None, seed: int | None) -> Any:
    """Whether a cell of a job of this shape is at these prompt positions (None: any) and
    this seed position (None: any)."""
    tests = []
    if prompts is not None and len(prompts) < shape.prompts:
        tests.append((Cell.grid_index // shape.seeds % shape.prompts).in_(prompts))
    if seed is not None:
        tests.append(Cell.grid_index % shape.seeds == seed)
    return and_(true(), *tests)


def prompt_matches(session: Session, needle: str, job_id: int | None = None) -> Select:
    """(job_id, position) of every job prompt holding ``needle``: today's ``LIKE '%needle%'``
    (ASCII case-insensitive on SQLite, case-sensitive on PostgreSQL), through the
    trigram index where it serves (needles of 3 characters or more)."""
    escaped = needle.replace("/", "//").replace("%", "/%").replace("_", "/_")
    # The pattern as one value (not '%' || value || '%'): pg_trgm's index reads it.
    query = select(JobPrompt.job_id, JobPrompt.position).where(
        JobPrompt.prompt.like(f"%{escaped}%", escape="/")
    )
    if job_id is not None:
        query = query.where(JobPrompt.job_id == job_id)
    if session.get_bind().dialect.name == "sqlite" and len(needle) >= TRIGRAM:
        # FTS5 folds case further than LIKE does (non-ASCII too): it narrows, LIKE decides.
        found = (
            text(f"SELECT rowid FROM {PROMPT_FTS} WHERE {PROMPT_FTS} MATCH :phrase")
            .bindparams(phrase='"' + needle.replace('"', '""') + '"')
            .columns(column("rowid", Integer))
        )
        query = query.where(JobPrompt.id.in_(found))
    return query


def prompt_search_index(session: Session) -> str:
    """Which index serves ``query --prompt`` on this database, in words."""
    if session.get_bind().dialect.name == "sqlite":
        return f"FTS5 trigram ({PROMPT_FTS}), for substrings of {TRIGRAM}+ characters"
    found = session.scalar(
        text("SELECT count(*) FROM pg_indexes WHERE indexname = :name"), {"name": TRIGRAM_INDEX}
    )
    return f"pg_trgm GIN ({TRIGRAM_INDEX})" if found else "none (pg_trgm missing): a scan"


def _sort_order(sort: str) -> list[Any]:
    descending = sort.startswith("-")
    keys = SORT_KEYS[sort.removeprefix("-")]
    return [key.desc() for key in keys] if descending else list(keys)


def job_progress(session: Session, job_id: int | None = None) -> list[dict[str, Any]]:
    """Per job: status and how many cells are queued, running, done, failed, cancelled."""
    jobs = select(Job).order_by(Job.id)
    if job_id is not None:
        jobs = jobs.where(Job.id == job_id)
    rows = []
    for job in session.scalars(jobs):
        counts = dict(
            session.execute(
                select(Cell.status, func.count()).where(Cell.job_id == job.id).group_by(Cell.status)
            ).all()
        )
        rows.append(
            {
                "job_id": job.id,
                "name": job.name,
                "model": job.model,
                "status": job.status,
                "priority": job.priority,
                "queue": job.queue,
                "not_before": job.not_before,
                "cells": job.cell_count,
                **{
                    s: counts.get(s, 0)
                    for s in ("queued", "running", "done", "failed", "cancelled")
                },
                "created_at": job.created_at,
                "finished_at": job.finished_at,
                **_throughput(session, job, counts.get("queued", 0) + counts.get("running", 0)),
                **_retrying(session, job.id),
            }
        )
    if job_id is not None and not rows:
        raise NotFound(f"no job {job_id}")
    return rows


def _retrying(session: Session, job_id: int) -> dict[str, Any]:
    """How many of the job's batches wait to run again after a failed attempt, and the
    latest of their errors (a full disk, a lost database): what an overnight run is
    waiting out."""
    waiting = (Batch.job_id == job_id, Batch.status == PENDING, Batch.error.is_not(None))
    count = session.scalar(select(func.count()).select_from(Batch).where(*waiting))
    error = None
    if count:
        latest = select(Batch.error).where(*waiting).order_by(Batch.retry_at.desc()).limit(1)
        error = session.scalar(latest)
    return {"retrying": count, "retry_error": error}


def _throughput(session: Session, job: Job, remaining: int) -> dict[str, float | None]:
    """Images per second over the last few minutes, and the ETA of the rest at that pace."""
    if job.started_at is None:
        return {"images_per_second": None, "eta_seconds": None}
    end = job.finished_at or utcnow()
    since = max(job.started_at, end - timedelta(seconds=THROUGHPUT_WINDOW_SECONDS))
    recent = session.scalar(
        select(func.count())
        .select_from(Image)
        .join(Cell, Cell.id == Image.cell_id)
        .where(Cell.job_id == job.id, Image.created_at >= since)
    )
    seconds = (end - since).total_seconds()
    rate = recent / seconds if seconds > 0 else None
    eta = remaining / rate if rate and job.status not in FINISHED else None
    return {
        "images_per_second": round(rate, 3) if rate is not None else None,
        "eta_seconds": round(eta) if eta is not None else None,
    }


def fleet_id(session: Session) -> str:
    """The database's identity, named in every message so that a worker of another
    database refuses it (the row is made by migration 0007)."""
    return session.scalar(select(Fleet.fleet_id).where(Fleet.id == 1))


def live_workers(session: Session, now: datetime | None = None) -> list[dict[str, Any]]:
    """Workers whose heartbeat is recent: device, queue, current batch and job, checkpoints."""
    now = now or utcnow()
    workers = session.scalars(
        select(Worker)
        .where(Worker.heartbeat_at >= now - timedelta(seconds=LIVE_WORKER_SECONDS))
        .order_by(Worker.name)
    ).all()
    rows = []
    for worker in workers:
        batch = session.get(Batch, worker.current_batch_id) if worker.current_batch_id else None
        checkpoints = session.scalars(
            select(Checkpoint.model).where(Checkpoint.id.in_(worker.checkpoints))
        ).all()
        rows.append(
            {
                "name": worker.name,
                "hostname": worker.hostname,
                "pid": worker.pid,
                "device": worker.device,
                "queue": worker.queue,
                "environment_id": worker.environment_id,
                "batch_id": worker.current_batch_id,
                "job_id": batch.job_id if batch else None,
                "checkpoints": sorted(checkpoints),
                "checkpoint_loads": worker.checkpoint_loads,
                "heartbeat_seconds_ago": round((now - worker.heartbeat_at).total_seconds(), 1),
                "started_at": worker.started_at,
                # "consuming", or why not (a dead broker connection, another fleet's message)
                "state": worker.state or "consuming",
            }
        )
    return rows


def find_image(session: Session, reference: str) -> Image:
    """An image by id, or by a unique prefix of its pixel, PNG or recipe hash.

    Plain digits are always an id, never a hash prefix (``6553`` is image 6553
    or no image); a prefix is written ``sha:6553``, or bare when it holds a
    letter a-f and so cannot be an id.
    """
    if reference.isdigit():
        image = session.get(Image, int(reference))
        if image is None:
            raise NotFound(f"no image {reference} (for a hash prefix, write sha:{reference})")
        return image
    prefix = reference.lower().removeprefix("sha:")
    if len(prefix) < 4 or any(c not in "0123456789abcdef" for c in prefix):
        raise NotFound(
            f"no image {reference!r} (give an id, or sha: and at least 4 hex digits of a hash)"
        )
    # One index range per hash column, not LIKE across a join (a full scan: SQLite's
    # LIKE ignores case, so no index serves it). "g" sorts after every hex digit.
    low, high = prefix, prefix + "g"
    candidates = union(
        select(Image.id).where(Image.pixel_sha256 >= low, Image.pixel_sha256 < high),
        select(Image.id).where(Image.png_sha256 >= low, Image.png_sha256 < high),
        select(Image.id).where(Image.recipe_sha256 >= low, Image.recipe_sha256 < high),
    )
    matches = session.scalars(select(Image).where(Image.id.in_(candidates)).limit(2)).all()
    if not matches:
        raise NotFound(f"no image whose hash starts with {prefix!r}")
    if len(matches) > 1:
        raise NotFound(f"{reference!r} matches several images; give more digits")
    return matches[0]


def _prompt_tokens(session: Session, cell: Cell, recipe: dict[str, Any]) -> dict[str, Any]:
    """Token counts of the cell's prompt and negative prompt: role -> {tokenizer: count}."""
    texts = {"prompt": cell.prompt, "negative_prompt": recipe.get("negative_prompt")}
    rows = session.scalars(
        select(PromptTokens).where(
            PromptTokens.job_id == cell.job_id,
            PromptTokens.text.in_([t for t in texts.values() if t]),
        )
    )
    return {
        row.role: {"tokens": row.tokens, "limits": row.limits, "truncated": row.truncated}
        for row in rows
        if texts.get(row.role) == row.text
    }


def _call_of(
    session: Session, image: Image, cell: Cell, recipe: dict[str, Any]
) -> dict[str, Any] | None:
    """The call that made the image, as the image received it (its prompt and seed filled in)."""
    if image.call_id is None:
        return None
    stored = session.get(PipelineCall, image.call_id)
    return for_image(json.loads(stored.call), {**recipe, "prompt": cell.prompt, "seed": cell.seed})


def image_record(session: Session, image: Image, store: Path) -> dict[str, Any]:
    """Everything recorded about one image: cell, recipe, batch, environment, checkpoint."""
    cell = image.cell
    recipe = recipe_of(session, cell)
    batch = session.get(Batch, image.batch_id)
    verifications = session.scalars(
        select(Verification).where(Verification.image_id == image.id).order_by(Verification.id)
    )
    return {
        "image_id": image.id,
        "job_id": cell.job_id,
        "job_name": cell.job.name,
        "cell_id": cell.id,
        "grid_index": cell.grid_index,
        "prompt": cell.prompt,
        "seed": cell.seed,
        "params": cell.params,
        "truncated": cell.truncated,
        "tokens": _prompt_tokens(session, cell, recipe),
        "recipe": recipe,
        "recipe_sha256": cell.recipe_sha256,
        "pixel_sha256": image.pixel_sha256,
        "png_sha256": image.png_sha256,
        "path": image_path(image.store, image.path, store),
        "width": image.width,
        "height": image.height,
        "batch": {
            "batch_id": batch.id,
            "cell_ids": batch.cell_ids,
            "index_in_batch": image.index_in_batch,
            "batch_size": image.batch_size,
        },
        "worker": image.worker,
        "generate_seconds": image.generate_seconds,
        "nsfw": image.nsfw,
        "batch_warnings": batch.warnings or [],
        "created_at": image.created_at.isoformat(),
        "environment": {"environment_id": image.environment_id, **image.environment.details},
        # None for images recorded before calls were (migration 0010)
        "call": _call_of(session, image, cell, recipe),
        "checkpoint": {
            "checkpoint_id": image.checkpoint_id,
            "model": image.checkpoint.model,
            "revision": image.checkpoint.revision,
            "sha256": image.checkpoint.sha256,
            "files": image.checkpoint.files,
        },
        "verifications": [
            {
                "verification_id": v.id,
                "mode": v.mode,
                "verdict": v.verdict,
                "max_abs_diff": v.max_abs_diff,
                "mean_abs_diff": v.mean_abs_diff,
                "psnr": v.psnr,
                "environment_id": v.environment_id,
                "created_at": v.created_at.isoformat(),
                **v.details,
            }
            for v in verifications
        ],
    }
