"""Cell recipes, stored or rebuilt: the canonical JSON form and every read of a recipe.

A cell made before migration 0009 stores its whole recipe in ``cell.recipe``.
A newer cell stores none: its job has one ``recipe_base`` row per batch key
(the recipe without prompt and seed) and the cell's recipe is that base with
its seed and, for text-to-image, its prompt, written canonically. Either way
the text hashes to ``cell.recipe_sha256`` (tests/test_recipes.py checks it).
Readers go through this module and never read ``cell.recipe`` themselves.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, NamedTuple

from sqlalchemy import Select, and_, select
from sqlalchemy.orm import Session

from reprogrid.models.tables import Cell, RecipeBase


def canonical_json(data: Any) -> str:
    """JSON with sorted keys and no whitespace: the form recipes are hashed in."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def rebuilt_recipe(base: str, prompt: str | None, seed: int) -> str:
    """A cell's canonical recipe from its batch key's base recipe, prompt and seed."""
    recipe = json.loads(base)
    recipe["seed"] = seed
    if recipe["pipeline"] == "text-to-image":
        recipe["prompt"] = prompt
    return canonical_json(recipe)


def recipe_text(stored: str | None, base: str | None, prompt: str | None, seed: int) -> str:
    """The recipe a cell stores, else the one rebuilt from its base."""
    if stored is not None:
        return stored
    if base is None:
        raise LookupError("a cell without a stored recipe has no recipe_base row")
    return rebuilt_recipe(base, prompt, seed)


# Columns to select, in this order, for recipe_text(*row): add RecipeBase with with_base.
RECIPE_SOURCES = (Cell.recipe, RecipeBase.recipe, Cell.prompt, Cell.seed)


def with_base(query: Select) -> Select:
    """``query`` (over cells) joined to each cell's recipe base, where it has one."""
    return query.outerjoin(
        RecipeBase,
        and_(RecipeBase.job_id == Cell.job_id, RecipeBase.batch_key == Cell.batch_key),
    )


class CellRecipe(NamedTuple):
    """A cell's id, grid position and recipe text."""

    id: int
    grid_index: int
    recipe: str


def cell_recipes(session: Session, cell_ids: Iterable[int]) -> dict[int, CellRecipe]:
    """The recipes of these cells, by cell id."""
    rows = session.execute(
        with_base(select(Cell.id, Cell.grid_index, *RECIPE_SOURCES)).where(
            Cell.id.in_(list(cell_ids))
        )
    )
    return {row[0]: CellRecipe(row[0], row[1], recipe_text(*row[2:])) for row in rows}


def job_recipes(session: Session, job_id: int) -> dict[int, str]:
    """Every recipe of a job, by cell id."""
    rows = session.execute(with_base(select(Cell.id, *RECIPE_SOURCES)).where(Cell.job_id == job_id))
    return {row[0]: recipe_text(*row[1:]) for row in rows}


def recipe_of(session: Session, cell: Cell) -> dict[str, Any]:
    """One cell's recipe, parsed."""
    if cell.recipe is not None:
        return json.loads(cell.recipe)
    base = session.scalar(
        select(RecipeBase.recipe).where(
            RecipeBase.job_id == cell.job_id, RecipeBase.batch_key == cell.batch_key
        )
    )
    return json.loads(recipe_text(None, base, cell.prompt, cell.seed))
