"""A job's cells arranged as sheets: one axis down, one across, a sheet per value of the rest.

The axes of a job are ``prompt`` (text-to-image jobs), ``seed`` and its
``[axes]``, in that order. By default prompts go down and seeds across (like
the X/Y plot of the web UIs); every combination of the remaining axes gets a
sheet of its own, in grid order. A refine job's sheets start with a row that
holds its parent image, so the parent is seen beside its variants. The contact
sheet and the HTML report both draw these sheets.

A sheet holds its labels and where its cells sit in the job's grid, never the
cells: ``grid_index`` is a mixed-radix number of the cell's position on each
axis (scheduler/grid.py), so the cell at a row and column of a sheet is found
by arithmetic, and ``sheet_rows`` reads a sheet's tiles row by row, at most
``FETCH_CELLS`` cells a query. Memory follows a sheet's rows and columns (its
labels), not its cells, and a job's sheets are made one at a time on demand.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from sqlalchemy import select
from sqlalchemy.orm import Session

from reprogrid.models import Cell, Checkpoint, Environment, Image, Job, Verification
from reprogrid.models.queries import NotFound, image_path, image_record, readable_path
from reprogrid.models.recipes import RecipeBase, recipe_text, with_base
from reprogrid.scheduler.spec import JobSpec

MIN_THUMB, MAX_THUMB = 16, 2048
FETCH_CELLS = 500  # cells read by one query: the most a sheet holds in memory besides a row
Tile = dict[str, Any]  # a cell and its image: status, prompt, seed, params, image_id, path...
_TILE_COLUMNS = {
    "image_id": Image.id,
    "cell_id": Cell.id,
    "grid_index": Cell.grid_index,
    "status": Cell.status,
    "prompt": Cell.prompt,
    "seed": Cell.seed,
    "params": Cell.params,
    "recipe_sha256": Cell.recipe_sha256,
    "pixel_sha256": Image.pixel_sha256,
    "png_sha256": Image.png_sha256,
    "path": Image.path,
    "store": Image.store,
    "width": Image.width,
    "height": Image.height,
    "environment_id": Image.environment_id,
    "device": Environment.device_name,
    "checkpoint_sha256": Checkpoint.sha256,
    "call_id": Image.call_id,  # the report lists each distinct call once
    "error": Cell.error,
    "truncated": Cell.truncated,
    "stored_recipe": Cell.recipe,  # these two make the recipe (models/recipes.py)
    "recipe_base": RecipeBase.recipe,
    "nsfw": Image.nsfw,
    "verdict": select(Verification.verdict)  # the latest verification's
    .where(Verification.image_id == Image.id)
    .order_by(Verification.id.desc())
    .limit(1)
    .scalar_subquery(),
}


class ReviewError(ValueError):
    """An option of a review command cannot be used; the message starts with its name."""


@dataclass(frozen=True)
class Sheet:
    """One sheet of a job: its labels, and where the cell of each row and column sits.

    The cell at ``(row, col)`` has grid index ``first + row * row_step + col *
    col_step``; a refine job's sheet has its parent alone on an extra first row.
    """

    job_id: int
    job_name: str
    fixed: dict[str, Any]  # the values of the axes that are neither rows nor columns
    row_labels: list[str]
    col_labels: list[str]
    image_size: int  # the largest width or height of the job's images
    first: int = 0
    row_step: int = 0
    col_step: int = 0
    parent: Tile | None = None
    parent_col: int = 0  # the parent's column: the one of its value of the column axis

    @property
    def fixed_label(self) -> str:
        """The fixed axis values, e.g. ``guidance_scale=5.0``; empty if none."""
        return " ".join(f"{name}={value}" for name, value in self.fixed.items())

    @property
    def title(self) -> str:
        """``job 3 foxes`` and the fixed axis values, if any."""
        return f"job {self.job_id} {self.job_name} {self.fixed_label}".rstrip()

    def grid_index(self, row: int, col: int) -> int | None:
        """The grid index of the cell at a row and column; None on the parent's row."""
        if self.parent is not None:
            if row == 0:
                return None
            row -= 1
        return self.first + row * self.row_step + col * self.col_step


class JobSheets(Sequence[Sheet]):
    """A job's sheets in grid order, each made when asked for."""

    def __init__(
        self,
        job: Job,
        axes: dict[str, list[Any]],
        row_axis: str | None,
        col_axis: str | None,
        parent: Tile | None,
    ) -> None:
        spec = JobSpec.from_json(job.spec)
        self.job = job
        self.axes = axes
        self.steps = _grid_steps(axes, spec)
        self.fixed_axes = [name for name in axes if name not in (row_axis, col_axis)]
        self.row_axis, self.col_axis, self.parent = row_axis, col_axis, parent
        row_values = axes[row_axis] if row_axis else [None]
        col_values = axes[col_axis] if col_axis else [None]
        self.row_labels = [axis_label(row_axis, r) for r in row_values]
        self.col_labels = [axis_label(col_axis, c) for c in col_values]
        self.parent_col = 0
        if parent is not None:
            self.row_labels.insert(0, parent_label(parent))
            value = coordinates(parent).get(col_axis) if col_axis else None
            self.parent_col = col_values.index(value) if value in col_values else 0
        sizes = [spec.width, spec.height, *axes.get("width", ()), *axes.get("height", ())]
        self.image_size = max(sizes)

    def __len__(self) -> int:
        return math.prod(len(self.axes[name]) for name in self.fixed_axes)

    @overload
    def __getitem__(self, number: int) -> Sheet: ...
    @overload
    def __getitem__(self, number: slice) -> list[Sheet]: ...
    def __getitem__(self, number: int | slice) -> Sheet | list[Sheet]:
        if isinstance(number, slice):
            return [self[n] for n in range(len(self))[number]]
        if not -len(self) <= number < len(self):
            raise IndexError(number)
        rest, positions = number % len(self), {}
        for name in reversed(self.fixed_axes):  # the last fixed axis varies fastest
            rest, positions[name] = divmod(rest, len(self.axes[name]))
        fixed = {name: self.axes[name][positions[name]] for name in self.fixed_axes}
        return Sheet(
            self.job.id,
            self.job.name,
            fixed,
            self.row_labels,
            self.col_labels,
            self.image_size,
            first=sum(positions[name] * self.steps[name] for name in self.fixed_axes),
            row_step=self.steps.get(self.row_axis, 0),
            col_step=self.steps.get(self.col_axis, 0),
            parent=self.parent,
            parent_col=self.parent_col,
        )


def _grid_steps(axes: dict[str, list[Any]], spec: JobSpec) -> dict[str | None, int]:
    """How far apart in grid index two neighbouring values of each axis are: seeds are
    innermost, then prompts, then the ``[axes]``, the first declared outermost."""
    inner_first = ["seed", *(["prompt"] if "prompt" in axes else []), *reversed(spec.axes)]
    steps: dict[str | None, int] = {}
    step = 1
    for name in inner_first:
        steps[name] = step
        step *= len(axes[name])
    return steps


def job_axes(spec: JobSpec) -> dict[str, list[Any]]:
    """The job's axes and their values: prompt, seed, then the ``[axes]`` as declared."""
    axes: dict[str, list[Any]] = {}
    if spec.prompts is not None:
        axes["prompt"] = list(spec.prompts)
    axes["seed"] = list(spec.seeds)
    axes.update((name, list(values)) for name, values in spec.axes.items())
    return axes


def job_sheets(
    session: Session, job_id: int, store: Path, rows: str | None = None, cols: str | None = None
) -> JobSheets:
    """The job's sheets, ``rows`` down and ``cols`` across (default: prompt by seed)."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    axes = job_axes(JobSpec.from_json(job.spec))
    row_axis, col_axis = pick_axes(axes, rows, cols)
    return JobSheets(job, axes, row_axis, col_axis, parent_tile(session, job, store))


def sheet_rows(
    session: Session, sheet: Sheet, store: Path, rows: range, cols: range
) -> Iterator[list[Tile | None]]:
    """The tiles of ``rows`` of a sheet between ``cols``, row by row: None where the sheet
    has no cell. Rows are read together, ``FETCH_CELLS`` cells or one row a query."""
    pending: list[int] = []
    for row in rows:
        pending.append(row)
        if (len(pending) + 1) * len(cols) <= FETCH_CELLS and row != rows[-1]:
            continue
        wanted = [sheet.grid_index(r, c) for r in pending for c in cols]
        found = fetch_tiles(session, sheet.job_id, [i for i in wanted if i is not None], store)
        for r in pending:
            yield [_tile_at(sheet, found, r, c) for c in cols]
        pending, found = [], {}  # let these tiles go before the next fetch


def _tile_at(sheet: Sheet, found: dict[int, Tile], row: int, col: int) -> Tile | None:
    index = sheet.grid_index(row, col)
    if index is None:  # the parent's row
        return sheet.parent if col == sheet.parent_col else None
    return found.get(index)


def fetch_tiles(
    session: Session, job_id: int, grid_indices: list[int], store: Path
) -> dict[int, Tile]:
    """The job's cells at these grid indices, with their images, by grid index; read
    ``FETCH_CELLS`` a query, as one index range where they run on without a gap."""
    found: dict[int, Tile] = {}
    columns = [column.label(name) for name, column in _TILE_COLUMNS.items()]
    for start in range(0, len(grid_indices), FETCH_CELLS):
        chunk = sorted(grid_indices[start : start + FETCH_CELLS])
        if chunk[-1] - chunk[0] + 1 == len(chunk):
            where = Cell.grid_index.between(chunk[0], chunk[-1])
        else:
            where = Cell.grid_index.in_(chunk)
        query = with_base(
            select(*columns)
            .select_from(Cell)
            .outerjoin(Image, Image.cell_id == Cell.id)
            .outerjoin(Environment, Environment.id == Image.environment_id)
            .outerjoin(Checkpoint, Checkpoint.id == Image.checkpoint_id)
            .where(Cell.job_id == job_id, where)
        )
        for row in session.execute(query):
            tile = dict(row._mapping)
            recorded = tile.pop("stored_recipe"), tile.pop("recipe_base")
            tile["recipe"] = json.loads(recipe_text(*recorded, tile["prompt"], tile["seed"]))
            written_under = tile.pop("store")
            if tile["path"] is not None:
                path = image_path(written_under, tile["path"], store)
                tile["path"] = readable_path(path, tile["png_sha256"], store)
            found[tile["grid_index"]] = tile
    return found


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


def parent_tile(session: Session, job: Job, store: Path) -> Tile | None:
    """The image a refine job was made from, as a tile (None for other jobs)."""
    image = session.get(Image, job.parent_image_id) if job.parent_image_id else None
    if image is None:
        return None
    record = image_record(session, image, store)
    checks = record["verifications"]
    return {
        **record,
        "status": "done",
        "error": None,
        "path": readable_path(record["path"], record["png_sha256"], store),
        "verdict": checks[-1]["verdict"] if checks else None,
    }


def parent_label(parent: Tile) -> str:
    """The label of a refine job's parent row."""
    label = f"parent: image {parent['image_id']}"
    return f"{label}: {parent['prompt']}" if parent["prompt"] is not None else label
