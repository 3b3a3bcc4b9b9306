"""Exports: every image record of a job, or of all jobs, as flat rows, streamed.

One row per image: the image and its cell, every field of its recipe as a
column of its own, its batch, environment and checkpoint, and the verdict of
its latest verification. Rows are read ``yield_per`` at a time (a server-side
cursor on PostgreSQL) and handed on as they come, so memory stays flat however
many images a job has. Rows hold Python values (``created_at`` a UTC datetime);
the writers here turn them into CSV or JSON lines.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from reprogrid.models import Cell, Checkpoint, Environment, Image, Job, RecipeBase, Verification
from reprogrid.models.queries import image_path
from reprogrid.models.recipes import recipe_text, with_base

STREAM_ROWS = 1000
FORMATS = ("csv", "jsonl")
# A CSV cell starting with one of these is a formula to spreadsheet programs (OWASP's
# "CSV injection"): export writes it with a leading ' so it is shown as text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Every field of a recipe (scheduler.grid.base_recipe plus prompt and seed).
RECIPE_COLUMNS = (
    "prompt",
    "seed",
    "negative_prompt",
    "model",
    "revision",
    "pipeline",
    "sampler",
    "steps",
    "guidance_scale",
    "width",
    "height",
    "dtype",
    "safety_checker",
    "recipe_version",
    "family",
    "schedule_type",
    "timestep_spacing",
    "solver_order",
    "algorithm_type",
    "distilled_guidance_scale",
    "resolution_binning",
    "clean_caption",
    "max_sequence_length",
    "adapters",
)
_SOURCES = {
    "image_id": Image.id,
    "job_id": Cell.job_id,
    "job_name": Job.name,
    "cell_id": Cell.id,
    "grid_index": Cell.grid_index,
    "recipe": Cell.recipe,
    "recipe_base": RecipeBase.recipe,
    "cell_prompt": Cell.prompt,
    "cell_seed": Cell.seed,
    "recipe_sha256": Cell.recipe_sha256,
    "pixel_sha256": Image.pixel_sha256,
    "png_sha256": Image.png_sha256,
    "path": Image.path,
    "batch_id": Image.batch_id,
    "index_in_batch": Image.index_in_batch,
    "batch_size": Image.batch_size,
    "worker": Image.worker,
    "generate_seconds": Image.generate_seconds,
    "nsfw": Image.nsfw,
    "truncated": Cell.truncated,
    "created_at": Image.created_at,
    "environment_id": Image.environment_id,
    "hostname": Environment.hostname,
    "device_type": Environment.device_type,
    "device_name": Environment.device_name,
    "torch": Environment.torch,
    "diffusers": Environment.diffusers,
    "transformers": Environment.transformers,
    "python": Environment.python,
    "threads": Environment.threads,
    "full_determinism": Environment.full_determinism,
    "checkpoint_id": Image.checkpoint_id,
    "checkpoint_sha256": Checkpoint.sha256,
    "store": Image.store,
    "verdict": select(Verification.verdict)
    .where(Verification.image_id == Image.id)
    .order_by(Verification.id.desc())
    .limit(1)
    .scalar_subquery(),
}
# Read to rebuild the recipe (models/recipes.py) or resolve the path, not exported.
_HIDDEN = frozenset({"recipe_base", "cell_prompt", "cell_seed", "store"})
# The recipe column becomes one column per recipe field, in its place.
EXPORT_COLUMNS = tuple(
    itertools.chain.from_iterable(
        RECIPE_COLUMNS if n == "recipe" else (n,) for n in _SOURCES if n not in _HIDDEN
    )
)


def _images(job_id: int | None) -> Select:
    query = with_base(
        select(Image)
        .join(Cell, Cell.id == Image.cell_id)
        .join(Job, Job.id == Cell.job_id)
        .join(Environment, Environment.id == Image.environment_id)
        .join(Checkpoint, Checkpoint.id == Image.checkpoint_id)
    )
    return query if job_id is None else query.where(Cell.job_id == job_id)


def count_images(session: Session, job_id: int | None = None) -> int:
    """How many image rows an export of the job (None: of every job) writes."""
    return session.scalar(_images(job_id).with_only_columns(func.count(Image.id)))


def image_rows(
    session: Session, store: Path, job_id: int | None = None
) -> Iterator[dict[str, Any]]:
    """The job's images (None: every job's) as flat rows in ``EXPORT_COLUMNS`` order,
    in job and grid order, streamed."""
    query = (
        _images(job_id)
        .with_only_columns(*(column.label(name) for name, column in _SOURCES.items()))
        .order_by(Cell.job_id, Cell.grid_index)
        .execution_options(yield_per=STREAM_ROWS)
    )
    for row in session.execute(query):
        record = dict(row._mapping)
        sources = (record.pop(n) for n in ("recipe", "recipe_base", "cell_prompt", "cell_seed"))
        recipe = json.loads(recipe_text(*sources))
        record |= {name: recipe.get(name) for name in RECIPE_COLUMNS}
        record["path"] = image_path(record.pop("store"), record["path"], store)
        yield {name: record[name] for name in EXPORT_COLUMNS}


def write_rows(
    rows: Iterable[dict[str, Any]],
    fmt: str,
    out: TextIO,
    on_rows: Callable[[int], None] | None = None,
) -> int:
    """Write image rows as ``csv`` (``EXPORT_COLUMNS``) or ``jsonl``; return how many.

    ``on_rows`` hears of every thousand rows written, and of the rest at the end.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format: {fmt!r} is not one of {', '.join(FORMATS)}")
    counted = _Counted(rows, on_rows or (lambda _n: None))
    if fmt == "csv":
        write_csv(counted, EXPORT_COLUMNS, out)
    else:
        write_json_lines(counted, out)
    return counted.count


class _Counted(Iterator[dict[str, Any]]):
    """Rows passed on, counted into ``tell`` every ``STREAM_ROWS`` rows and at the end."""

    def __init__(self, rows: Iterable[dict[str, Any]], tell: Callable[[int], None]) -> None:
        self.rows, self.tell, self.count = iter(rows), tell, 0

    def __next__(self) -> dict[str, Any]:
        try:
            row = next(self.rows)
        except StopIteration:
            if self.count % STREAM_ROWS:
                self.tell(self.count % STREAM_ROWS)
            raise
        self.count += 1
        if self.count % STREAM_ROWS == 0:
            self.tell(STREAM_ROWS)
        return row


def json_default(value: Any) -> Any:
    """What ``json.dumps`` writes for the values rows hold beyond JSON's: ISO 8601 times."""
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def write_json_lines(rows: Iterable[dict[str, Any]], out: TextIO) -> None:
    """Stream rows as JSON lines."""
    for row in rows:
        out.write(json.dumps(row, default=json_default) + "\n")


def write_csv(rows: Iterable[dict[str, Any]], columns: Iterable[str], out: TextIO) -> None:
    """Stream rows as CSV; nested values are written as JSON, times as ISO 8601."""
    writer = csv.DictWriter(out, fieldnames=list(columns))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(v) for k, v in row.items()})


def _csv_cell(value: Any) -> Any:
    """Nested values as JSON; text a spreadsheet would run as a formula starts with ``'``."""
    if isinstance(value, dict | list):
        value = json.dumps(value)
    elif isinstance(value, datetime):
        value = value.isoformat()
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value
