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
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from reprogrid.models.recipes import canonical_json, rebuilt_recipe
from reprogrid.scheduler.seeds import SeedRanges
from reprogrid.scheduler.single_file import is_single_file
from reprogrid.scheduler.spec import JobSpec, spec_sampler

RECIPE_VERSION = 1
_PROMPT = "@@reprogrid:prompt@@"
_SEED = "@@reprogrid:seed@@"
# expand keeps each seed's encoded recipe end for reuse across prompts up to this many seeds.
CACHED_SEEDS = 100_000


class CellPlan(NamedTuple):
    """One cell of an expanded grid, before it is a database row.

    A named tuple rather than a dataclass: a million of them are built per
    million-cell grid, and a tuple is built several times faster.
    """

    grid_index: int
    prompt: str | None
    seed: int
    params: dict[str, Any]
    recipe_sha256: str
    batch_key: str
    base: str  # canonical JSON of the batch key's recipe (no prompt, no seed)

    @property
    def recipe(self) -> str:
        """The cell's canonical recipe, built on demand (a cell row stores only its hash)."""
        return rebuilt_recipe(self.base, self.prompt, self.seed)


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
        "sampler": spec_sampler(spec, params.get("model", spec.model)),
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
    if spec.config is not None and is_single_file(recipe["model"]):
        recipe["config"] = spec.config  # a single file's configs, tokenizer and other weights
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
        base = canonical_json(recipe)
        batch_key = sha256_text(base)[:32]
        head, tail = _template(recipe, spec.pipeline)
        prompts = spec.prompts or (None,)
        # The bytes after each seed's digits are the same for every prompt: encode them once.
        cached = len(prompts) > 1 and spec.seeds.count <= CACHED_SEEDS
        ends = list(_seed_ends(spec, tail)) if cached else None
        for prompt in prompts:
            prompt_head = head.replace(_PROMPT, json.dumps(prompt, ensure_ascii=False)[1:-1])
            # Every recipe of this prompt starts with prompt_head: hash it once, then
            # finish a copy of that hash per seed.
            head_hash = hashlib.sha256(prompt_head.encode("utf-8"))
            for seed, end in ends if ends is not None else _seed_ends(spec, tail):
                digest = head_hash.copy()
                digest.update(end)
                yield CellPlan(
                    grid_index, prompt, seed, params, digest.hexdigest(), batch_key, base
                )
                grid_index += 1


def _seed_ends(spec: JobSpec, tail: str) -> Iterator[tuple[int, bytes]]:
    """Each seed and the UTF-8 end of its recipes: its digits and what follows them."""
    return ((seed, f"{seed}{tail}".encode()) for seed in spec.seeds)


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


class GridShape(NamedTuple):
    """How a grid's cells are laid out: ``grid_index = (c * prompts + p) * seeds + s``."""

    combinations: int  # of the axes' values
    prompts: int  # 1 for a pipeline without prompts
    seeds: int

    @property
    def cells(self) -> int:
        """How many cells the grid has."""
        return self.combinations * self.prompts * self.seeds

    @classmethod
    def of(cls, cell_count: int, seeds: SeedRanges, combinations: int) -> GridShape:
        """The layout of a job's grid from its cell count, seeds and axis combinations."""
        return cls(combinations, cell_count // (combinations * seeds.count), seeds.count)

    def ranges(
        self, prompt_positions: Iterable[int] | None, seed_position: int | None, most: int
    ) -> list[tuple[int, int]] | None:
        """Inclusive ``grid_index`` ranges of the cells at these prompt positions (None:
        every prompt) and this seed position (None: every seed), in grid order; None
        when they take more than ``most`` ranges."""
        prompts = range(self.prompts) if prompt_positions is None else sorted(prompt_positions)
        first, last = (0, self.seeds - 1) if seed_position is None else (seed_position,) * 2
        if self.combinations * len(prompts) > most:
            return None
        merged: list[tuple[int, int]] = []
        for c in range(self.combinations):
            for p in prompts:
                start = (c * self.prompts + p) * self.seeds
                low, high = start + first, start + last
                if merged and merged[-1][1] + 1 == low:
                    merged[-1] = (merged[-1][0], high)
                else:
                    merged.append((low, high))
        return merged


def seed_position(seeds: SeedRanges, seed: int) -> int | None:
    """Where ``seed`` is in a seed list (seeds never repeat), None if absent."""
    offset = 0
    for first, last in seeds.runs:
        if first <= seed <= last:
            return offset + seed - first
        offset += last - first + 1
    return None
