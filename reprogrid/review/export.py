"""Exports: every image record of a job, or of all jobs, as flat rows, streamed.

One row per image: the image and its cell, every field of its recipe as a
column of its own, its batch, environment and checkpoint, and the verdict of
its latest verification. Rows are read ``yield_per`` at a time (a server-side
cursor on PostgreSQL) and handed on as they come, so memory stays flat however
many images a job has.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from reprogrid.models import Cell, Checkpoint, Environment, Image, Job, RecipeBase, Verification
from reprogrid.models.queries import image_path
from reprogrid.models.recipes import recipe_text, with_base

STREAM_ROWS = 1000
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
        record["created_at"] = record["created_at"].isoformat()
        yield {name: record[name] for name in EXPORT_COLUMNS}
