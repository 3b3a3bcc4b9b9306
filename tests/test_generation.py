"""Deterministic generation on the real built-in checkpoints (no mocks of torch or diffusers)."""

import json

import numpy as np
import pytest
import torch

from reprogrid.scheduler.grid import expand
from reprogrid.scheduler.spec import validate_spec
from reprogrid.worker.checkpoints import load_checkpoint
from reprogrid.worker.generate import generate_batch


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_checkpoint("builtin:tiny", None, "float32", "cpu")


def recipes(prompts=("a fox",), seeds="0-3", **fields):
    raw = {"prompts": list(prompts), "seeds": seeds, "steps": 3, "width": 64, "height": 64}
    job = validate_spec({**raw, **fields}, max_cells=100)
    return [json.loads(cell.recipe) for cell in expand(job)]


def test_the_same_batch_gives_the_same_pixels_when_run_again(tiny):
    batch = recipes()
    first = generate_batch(tiny, batch, "cpu")
    second = generate_batch(tiny, batch, "cpu")
    assert first.dtype == np.uint8 and first.shape == (4, 64, 64, 3)
    assert np.array_equal(first, second)


def test_different_seeds_give_different_pixels(tiny):
    pixels = generate_batch(tiny, recipes(seeds="0-3"), "cpu")
    flat = {pixels[i].tobytes() for i in range(4)}
    assert len(flat) == 4


def test_a_batch_does_not_depend_on_the_batch_that_ran_before_it(tiny):
    batch = recipes(seeds="10-11")
    before = generate_batch(tiny, batch, "cpu")
    generate_batch(tiny, recipes(seeds="0-3", sampler="EulerAncestralDiscreteScheduler"), "cpu")
    assert np.array_equal(before, generate_batch(tiny, batch, "cpu"))


def initial_latents(loaded, seeds):
    """The pipeline's own prepare_latents with one CPU generator per image."""
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    pipeline = loaded.pipeline
    return pipeline.prepare_latents(
        len(seeds), pipeline.unet.config.in_channels, 64, 64, torch.float32, "cpu", generators
    )


def test_initial_latents_of_a_seed_do_not_depend_on_its_position_in_the_batch(tiny):
    forward = initial_latents(tiny, [7, 8, 9])
    reverse = initial_latents(tiny, [9, 8, 7])
    assert torch.equal(forward[0], reverse[2]) and torch.equal(forward[2], reverse[0])


def test_initial_latents_of_a_seed_do_not_depend_on_its_batch_mates(tiny):
    alone = initial_latents(tiny, [7])
    with_mates = initial_latents(tiny, [1, 7, 2, 3])
    assert torch.equal(alone[0], with_mates[1])


def test_a_recipe_swept_over_samplers_uses_each_sampler(tiny):
    euler = generate_batch(tiny, recipes(seeds="0", sampler="EulerDiscreteScheduler"), "cpu")
    ddim = generate_batch(tiny, recipes(seeds="0", sampler="DDIMScheduler"), "cpu")
    assert not np.array_equal(euler, ddim)


def test_recipes_that_differ_in_a_shared_field_cannot_share_a_call(tiny):
    mixed = recipes(seeds="0") + recipes(seeds="1", steps=4)
    with pytest.raises(ValueError, match="steps"):
        generate_batch(tiny, mixed, "cpu")


def test_the_unconditional_checkpoint_generates_seeded_images():
    ddpm = load_checkpoint("builtin:tiny-ddpm", None, "float32", "cpu")
    job = validate_spec({"model": "builtin:tiny-ddpm", "seeds": "0-1", "steps": 3}, 10)
    batch = [json.loads(c.recipe) for c in expand(job)]
    first = generate_batch(ddpm, batch, "cpu")
    assert first.shape == (2, 32, 32, 3)
    assert np.array_equal(first, generate_batch(ddpm, batch, "cpu"))
    assert not np.array_equal(first[0], first[1])
