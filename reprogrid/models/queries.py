"""Read-only queries behind ``status``, ``query`` and ``show``: no torch, one round trip each.

Rows come back as plain dicts ready for JSON, CSV or a table.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, union
from sqlalchemy.orm import Session

from reprogrid.models.tables import (
    Batch,
    Cell,
    Checkpoint,
    Environment,
    Image,
    Job,
    Verification,
)


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
    "checkpoint_sha256",
    "error",
)


def query_cells(session: Session, where: CellFilter, store: Path) -> Iterator[dict[str, Any]]:
    """Cells matching the filter, with their image if it exists, in job and grid order."""
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
            Checkpoint.sha256,
            Cell.error,
        )
        .outerjoin(Image, Image.cell_id == Cell.id)
        .outerjoin(Environment, Environment.id == Image.environment_id)
        .outerjoin(Checkpoint, Checkpoint.id == Image.checkpoint_id)
        .order_by(Cell.job_id, Cell.grid_index)
    )
    if where.job is not None:
        query = query.where(Cell.job_id == where.job)
    if where.prompt is not None:
        query = query.where(Cell.prompt.contains(where.prompt, autoescape=True))
    if where.seed is not None:
        query = query.where(Cell.seed == where.seed)
    if where.model is not None:
        query = query.where(Cell.job_id.in_(select(Job.id).where(Job.model == where.model)))
    if where.status is not None:
        query = query.where(Cell.status == where.status)
    for row in session.execute(query.execution_options(yield_per=1000)):
        record = dict(zip(QUERY_COLUMNS, row, strict=True))
        if record["path"] is not None:
            record["path"] = str(store / record["path"])
        yield record


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
                "cells": job.cell_count,
                **{
                    s: counts.get(s, 0)
                    for s in ("queued", "running", "done", "failed", "cancelled")
                },
                "created_at": job.created_at.isoformat(),
                "finished_at": job.finished_at.isoformat() if job.finished_at else None,
            }
        )
    if job_id is not None and not rows:
        raise NotFound(f"no job {job_id}")
    return rows


def find_image(session: Session, reference: str) -> Image:
    """An image by id, or by a unique prefix of its pixel, PNG or recipe hash."""
    if reference.isdigit():
        image = session.get(Image, int(reference))
        if image is not None:
            return image
    prefix = reference.lower()
    if len(prefix) < 4 or any(c not in "0123456789abcdef" for c in prefix):
        raise NotFound(f"no image {reference!r} (give an id or at least 4 hex digits of a hash)")
    # One index range per hash column, not LIKE across a join (a full scan: SQLite's
    # LIKE ignores case, so no index serves it). "g" sorts after every hex digit.
    low, high = prefix, prefix + "g"
    candidates = union(
        select(Image.id).where(Image.pixel_sha256 >= low, Image.pixel_sha256 < high),
        select(Image.id).where(Image.png_sha256 >= low, Image.png_sha256 < high),
        select(Image.id)
        .join(Cell, Cell.id == Image.cell_id)
        .where(Cell.recipe_sha256 >= low, Cell.recipe_sha256 < high),
    )
    matches = session.scalars(select(Image).where(Image.id.in_(candidates)).limit(2)).all()
    if not matches:
        raise NotFound(f"no image whose id or hash starts with {reference!r}")
    if len(matches) > 1:
        raise NotFound(f"{reference!r} matches several images; give more digits")
    return matches[0]


def image_record(session: Session, image: Image, store: Path) -> dict[str, Any]:
    """Everything recorded about one image: cell, recipe, batch, environment, checkpoint."""
    cell = image.cell
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
        "recipe": json.loads(cell.recipe),
        "recipe_sha256": cell.recipe_sha256,
        "pixel_sha256": image.pixel_sha256,
        "png_sha256": image.png_sha256,
        "path": str(store / image.path),
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
        "created_at": image.created_at.isoformat(),
        "environment": {"environment_id": image.environment_id, **image.environment.details},
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
