"""Grid expansion order, recipes and their hashes, batch keys."""

import hashlib
import json

from reprogrid.scheduler.grid import canonical_json, cell_recipe, expand
from reprogrid.scheduler.spec import validate_spec

BASE = {"prompts": ["a fox", "a bird"], "seeds": "0-2", "width": 64, "height": 64}


def spec(**fields):
    return validate_spec({**BASE, **fields}, max_cells=10_000)


def test_seeds_are_innermost_then_prompts_then_axes_in_declared_order():
    cells = list(expand(spec(axes={"steps": [2, 3], "guidance_scale": [1.0, 5.0]})))
    order = [(c.params["steps"], c.params["guidance_scale"], c.prompt, c.seed) for c in cells]
    expected = [
        (steps, scale, prompt, seed)
        for steps in (2, 3)
        for scale in (1.0, 5.0)
        for prompt in ("a fox", "a bird")
        for seed in (0, 1, 2)
    ]
    assert order == expected
    assert [c.grid_index for c in cells] == list(range(len(expected)))


def test_the_grid_has_prompts_times_seeds_times_axis_values_cells():
    job = spec(axes={"steps": [2, 3, 4]})
    assert job.cell_count == 2 * 3 * 3 == len(list(expand(job)))


def test_each_recipe_is_canonical_json_of_every_pixel_determining_field():
    cell = next(expand(spec(negative_prompt="blurry")))
    recipe = json.loads(cell.recipe)
    assert cell.recipe == canonical_json(recipe)
    assert recipe == {
        "recipe_version": 1,
        "pipeline": "text-to-image",
        "model": "builtin:tiny",
        "revision": None,
        "sampler": "PNDMScheduler",
        "family": "sd",
        "schedule_type": None,
        "timestep_spacing": None,
        "solver_order": None,
        "algorithm_type": None,
        "adapters": [],
        "prompt": "a fox",
        "negative_prompt": "blurry",
        "seed": 0,
        "steps": 20,
        "guidance_scale": 7.5,
        "width": 64,
        "height": 64,
        "dtype": "float32",
    }


def test_recipe_sha256_is_the_sha256_of_the_recipe_bytes():
    for cell in expand(spec(prompts=['ünïcode "quoted" \\ prompt'])):
        assert cell.recipe_sha256 == hashlib.sha256(cell.recipe.encode("utf-8")).hexdigest()


def test_fast_expansion_matches_building_each_recipe_directly():
    job = spec(prompts=['a "fox"', "ü\t\\"], axes={"sampler": ["DDIMScheduler", "PNDMScheduler"]})
    for cell in expand(job):
        assert cell.recipe == cell_recipe(job, cell.prompt, cell.seed, cell.params)


def test_any_change_of_a_recipe_field_changes_the_hash():
    base = next(expand(spec())).recipe_sha256
    for change in (
        {"steps": 21},
        {"guidance_scale": 7.0},
        {"sampler": "DDIMScheduler"},
        {"seeds": "1"},
        {"prompts": ["a fox."]},
        {"width": 72},
    ):
        assert next(expand(spec(**change))).recipe_sha256 != base, change


def test_the_same_spec_always_hashes_the_same():
    assert [c.recipe_sha256 for c in expand(spec())] == [c.recipe_sha256 for c in expand(spec())]


def test_cells_differing_only_in_prompt_and_seed_share_a_batch_key():
    cells = list(expand(spec(axes={"steps": [2, 3]})))
    keys = {(c.params["steps"], c.batch_key) for c in cells}
    assert len(keys) == 2 and len({k for _, k in keys}) == 2


def test_unconditional_recipes_have_no_prompt_or_guidance():
    job = validate_spec({"model": "builtin:tiny-ddpm", "seeds": "0-1"}, max_cells=10)
    recipe = json.loads(next(expand(job)).recipe)
    assert "prompt" not in recipe and "guidance_scale" not in recipe
    assert recipe["pipeline"] == "unconditional" and (recipe["width"], recipe["height"]) == (32, 32)
