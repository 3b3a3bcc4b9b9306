"""A job's cells arranged as sheets: one axis down, one across, a sheet per value of the rest.

The axes of a job are ``prompt`` (text-to-image jobs), ``seed`` and its
``[axes]``, in that order. By default prompts go down and seeds across (like
the X/Y plot of the web UIs); every combination of the remaining axes gets a
sheet of its own, in grid order. A refine job's sheets start with a row that
holds its parent image, so the parent is seen beside its variants. The contact
sheet and the HTML report both draw these sheets.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from reprogrid.models import Image, Job
from reprogrid.models.queries import (
    CellFilter,
    NotFound,
    image_record,
    query_cells,
    readable_path,
)
from reprogrid.scheduler.spec import JobSpec

MIN_THUMB, MAX_THUMB = 16, 2048
Tile = dict[str, Any]  # a row of query_cells: status, prompt, seed, params, image_id, path...


class ReviewError(ValueError):
    """An option of a review command cannot be used; the message starts with its name."""


@dataclass(frozen=True)
class Sheet:
    """One sheet of a job: tiles[row][col] is a cell, or None where the sheet has no cell."""

    job_id: int
    job_name: str
    fixed: dict[str, Any]  # the values of the axes that are neither rows nor columns
    row_labels: list[str]
    col_labels: list[str]
    tiles: list[list[Tile | None]]
    image_size: int  # the largest width or height of the job's images

    @property
    def fixed_label(self) -> str:
        """The fixed axis values, e.g. ``guidance_scale=5.0``; empty if none."""
        return " ".join(f"{name}={value}" for name, value in self.fixed.items())

    @property
    def title(self) -> str:
        """``job 3 foxes`` and the fixed axis values, if any."""
        return f"job {self.job_id} {self.job_name} {self.fixed_label}".rstrip()


def job_axes(spec: JobSpec) -> dict[str, list[Any]]:
    """The job's axes and their values, in grid order (outermost last)."""
    axes: dict[str, list[Any]] = {}
    if spec.prompts is not None:
        axes["prompt"] = list(spec.prompts)
    axes["seed"] = list(spec.seeds)
    axes.update((name, list(values)) for name, values in spec.axes.items())
    return axes


def job_sheets(
    session: Session, job_id: int, store: Path, rows: str | None = None, cols: str | None = None
) -> list[Sheet]:
    """The job's sheets, ``rows`` down and ``cols`` across (default: prompt by seed)."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    spec = JobSpec.from_json(job.spec)
    axes = job_axes(spec)
    row_axis, col_axis = pick_axes(axes, rows, cols)
    fixed_axes = [name for name in axes if name not in (row_axis, col_axis)]
    tiles_of_job = (_located(t, store) for t in query_cells(session, CellFilter(job=job_id), store))
    cells = {_key(coordinates(tile), axes): tile for tile in tiles_of_job}
    parent = parent_tile(session, job, store)
    sizes = [spec.width, spec.height, *axes.get("width", ()), *axes.get("height", ())]
    row_values = axes[row_axis] if row_axis else [None]
    col_values = axes[col_axis] if col_axis else [None]
    sheets = []
    for values in itertools.product(*(axes[name] for name in fixed_axes)):
        fixed = dict(zip(fixed_axes, values, strict=True))
        tiles = [
            [cells.get(_key(fixed | {row_axis: r, col_axis: c}, axes)) for c in col_values]
            for r in row_values
        ]
        row_labels = [axis_label(row_axis, r) for r in row_values]
        if parent is not None:
            tiles.insert(0, _parent_row(parent, col_axis, col_values))
            row_labels.insert(0, parent_label(parent))
        col_labels = [axis_label(col_axis, c) for c in col_values]
        sheets.append(Sheet(job_id, job.name, fixed, row_labels, col_labels, tiles, max(sizes)))
    return sheets


def thumb_size(thumb: int | None, sheet: Sheet, largest: int) -> int:
    """The thumbnail size: the one asked for, else the job's image size up to ``largest``."""
    if thumb is None:
        return min(largest, sheet.image_size)
    if not MIN_THUMB <= thumb <= MAX_THUMB:
        raise ReviewError(f"thumb: must be between {MIN_THUMB} and {MAX_THUMB} pixels, got {thumb}")
    return thumb


def pick_axes(
    axes: dict[str, list[Any]], rows: str | None, cols: str | None
) -> tuple[str | None, str | None]:
    """The row and column axes: the chosen ones, else prompt down and seed across."""
    for option, name in (("rows", rows), ("cols", cols)):
        if name is not None and name not in axes:
            raise ReviewError(
                f"{option}: the job has no axis {name!r} (its axes: {', '.join(axes)})"
            )
    if rows is not None and rows == cols:
        raise ReviewError(f"cols: must differ from rows ({rows!r})")
    col_axis = cols or _first_free(("seed", *axes), axes, rows)
    row_axis = rows or _first_free(("prompt", *axes), axes, col_axis)
    return row_axis, col_axis


def _first_free(candidates: Iterable[str], axes: dict[str, list[Any]], taken: str | None):
    return next((name for name in candidates if name in axes and name != taken), None)


def axis_label(axis: str | None, value: Any) -> str:
    """How a row or column is labelled: the prompt itself, ``seed 3``, ``steps=20``."""
    if axis is None:
        return ""
    if axis == "prompt":
        return str(value)
    if axis == "seed":
        return f"seed {value}"
    return f"{axis}={value}"


def coordinates(tile: Tile) -> dict[str, Any]:
    """Where a tile sits on each axis: its prompt, its seed and its axis values."""
    return {"prompt": tile["prompt"], "seed": tile["seed"], **tile["params"]}


def _key(point: dict[str, Any], axes: dict[str, list[Any]]) -> tuple[Any, ...]:
    return tuple(point[name] for name in axes)


def parent_tile(session: Session, job: Job, store: Path) -> Tile | None:
    """The image a refine job was made from, as a tile (None for other jobs)."""
    image = session.get(Image, job.parent_image_id) if job.parent_image_id else None
    if image is None:
        return None
    return _located({**image_record(session, image, store), "status": "done", "error": None}, store)


def _located(tile: Tile, store: Path) -> Tile:
    """The tile with the path its PNG can be read at (``store`` when the store moved)."""
    return {**tile, "path": readable_path(tile["path"], tile["png_sha256"], store)}


def parent_label(parent: Tile) -> str:
    """The label of a refine job's parent row."""
    label = f"parent: image {parent['image_id']}"
    return f"{label}: {parent['prompt']}" if parent["prompt"] is not None else label


def _parent_row(parent: Tile, col_axis: str | None, col_values: list[Any]) -> list[Tile | None]:
    row: list[Tile | None] = [None] * len(col_values)
    value = coordinates(parent).get(col_axis) if col_axis else None
    row[col_values.index(value) if value in col_values else 0] = parent
    return row
