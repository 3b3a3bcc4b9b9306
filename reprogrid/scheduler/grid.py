"""Grid expansion: a JobSpec becomes cells, each with its canonical recipe.

Expansion order (``grid_index`` counts from 0 in this order):

1. the ``[axes]`` combinations, first declared axis outermost, each axis's
   values in the order written;
2. within one combination, the prompts in order;
3. within one prompt, the seeds in order (innermost).

A recipe is everything that determines a cell's pixels apart from the batch it
runs in, as JSON with sorted keys and no spaces; ``recipe_sha256`` is the
SHA-256 of those UTF-8 bytes. Cells that share a ``batch_key`` (the recipe
without prompt and seed) may run in one pipeline call.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator
from typing import Any, NamedTuple

from reprogrid.scheduler.spec import JobSpec

RECIPE_VERSION = 1
_PROMPT = "@@reprogrid:prompt@@"
_SEED = "@@reprogrid:seed@@"


class CellPlan(NamedTuple):
    """One cell of an expanded grid, before it is a database row.

    A named tuple rather than a dataclass: a million of them are built per
    million-cell grid, and a tuple is built several times faster.
    """

    grid_index: int
    prompt: str | None
    seed: int
    params: dict[str, Any]
    recipe: str
    recipe_sha256: str
    batch_key: str


def canonical_json(data: Any) -> str:
    """JSON with sorted keys and no whitespace: the form recipes are hashed in."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_text(text: str) -> str:
    """Hex SHA-256 of UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def base_recipe(spec: JobSpec, params: dict[str, Any]) -> dict[str, Any]:
    """The recipe fields shared by every cell with these axis values."""
    recipe: dict[str, Any] = {
        "recipe_version": RECIPE_VERSION,
        "pipeline": spec.pipeline,
        "model": spec.model,
        "revision": spec.revision,
        "sampler": spec.sampler,
        "steps": spec.steps,
        "width": spec.width,
        "height": spec.height,
        "dtype": spec.dtype,
    }
    if spec.pipeline == "text-to-image":
        recipe["negative_prompt"] = spec.negative_prompt
        recipe["guidance_scale"] = spec.guidance_scale
    if spec.family is not None:  # jobs from before families keep their recipes' bytes
        recipe["family"] = spec.family
        recipe.update(spec.sampler_options)
        recipe.update(spec.family_fields)
        recipe["adapters"] = [dict(a) for a in spec.adapters]
    if spec.safety_checker is not None:
        recipe["safety_checker"] = spec.safety_checker
    recipe.update(params)
    if "adapter_scale" in recipe:  # an axis value: every adapter at that scale
        scale = recipe.pop("adapter_scale")
        recipe["adapters"] = [dict(a, scale=scale) for a in recipe["adapters"]]
    return recipe


def expand(spec: JobSpec) -> Iterator[CellPlan]:
    """Yield the grid's cells in the documented order."""
    grid_index = 0
    names = list(spec.axes)
    for values in itertools.product(*(spec.axes[n] for n in names)):
        params = dict(zip(names, values, strict=True))
        recipe = base_recipe(spec, params)
        batch_key = sha256_text(canonical_json(recipe))[:32]
        head, tail = _template(recipe, spec.pipeline)
        for prompt in spec.prompts or (None,):
            prompt_head = head.replace(_PROMPT, json.dumps(prompt, ensure_ascii=False)[1:-1])
            # Every recipe of this prompt starts with prompt_head: hash it once, then
            # finish a copy of that hash per seed.
            head_hash = hashlib.sha256(prompt_head.encode("utf-8"))
            for seed in spec.seeds:
                end = str(seed) + tail
                digest = head_hash.copy()
                digest.update(end.encode("utf-8"))
                yield CellPlan(
                    grid_index,
                    prompt,
                    seed,
                    params,
                    prompt_head + end,
                    digest.hexdigest(),
                    batch_key,
                )
                grid_index += 1


def _template(recipe: dict[str, Any], pipeline: str) -> tuple[str, str]:
    """Canonical JSON of the recipe split around the seed, with a prompt marker.

    Building each cell's recipe by substitution gives the same bytes as
    ``canonical_json`` on the full dict, at a fraction of the cost for
    million-cell grids (tests/test_grid.py checks the equality).
    """
    full = dict(recipe, seed=_SEED)
    if pipeline == "text-to-image":
        full["prompt"] = _PROMPT
    head, tail = canonical_json(full).split(f'"{_SEED}"')
    return head, tail


def cell_recipe(spec: JobSpec, prompt: str | None, seed: int, params: dict[str, Any]) -> str:
    """The canonical recipe of one cell, built directly (the slow, obvious way)."""
    recipe = base_recipe(spec, params)
    recipe["seed"] = seed
    if spec.pipeline == "text-to-image":
        recipe["prompt"] = prompt
    return canonical_json(recipe)
