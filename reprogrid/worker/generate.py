"""Generation of one batch: recipes in, RGB uint8 pixels out.

This is the only place a pipeline is called, for ``run``, the Celery worker
and regeneration alike, so a batch computes the same way on every path.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from reprogrid import families
from reprogrid.worker.batch_warnings import captured_warnings
from reprogrid.worker.checkpoints import LoadedCheckpoint

# Fields every recipe of one batch must share: one pipeline call takes one value of each.
SHARED_FIELDS = (
    "pipeline",
    "model",
    "revision",
    "sampler",
    "steps",
    "width",
    "height",
    "dtype",
    "guidance_scale",
    "family",
    *families.SAMPLER_OPTIONS,
    "distilled_guidance_scale",
    "resolution_binning",
    "clean_caption",
    "max_sequence_length",
    "adapters",
    "safety_checker",
)


class BatchInterrupted(Exception):
    """Raised between denoising steps when the batch should stop (job cancelled)."""


@dataclass(frozen=True)
class GeneratedBatch:
    """What one pipeline call gave: pixels, safety checker flags, warnings raised."""

    pixels: np.ndarray  # (N, H, W, 3) uint8
    nsfw: list[bool] | None  # per image; None when no safety checker ran
    warnings: list[dict[str, Any]]  # see reprogrid.worker.batch_warnings


def generate_batch(
    loaded: LoadedCheckpoint,
    recipes: Sequence[dict[str, Any]],
    device: str,
    should_stop: Callable[[], bool] | None = None,
) -> np.ndarray:
    """Run one pipeline call for ``recipes``; return pixels shaped (N, H, W, 3)."""
    return generate(loaded, recipes, device, should_stop).pixels


def generate(
    loaded: LoadedCheckpoint,
    recipes: Sequence[dict[str, Any]],
    device: str,
    should_stop: Callable[[], bool] | None = None,
) -> GeneratedBatch:
    """Run one pipeline call for ``recipes``: pixels, safety checker flags and warnings."""
    import torch

    # 1. One call takes one value of each shared field.
    first = recipes[0]
    for field in SHARED_FIELDS:
        if any(r.get(field) != first.get(field) for r in recipes):
            raise ValueError(f"recipes of one batch differ in {field!r}")

    # 2. A fresh sampler, configured as the recipe says: no state carried over
    #    from the previous batch.
    loaded.set_fresh_sampler(first["sampler"], first)
    loaded.set_adapters(first.get("adapters", []))
    family = _family(loaded, first)
    _check_caption_cleaning(first)

    # 3. One CPU generator per image, seeded with that image's seed: the same
    #    noise on every machine, whatever the image's position in the batch.
    generators = [torch.Generator(device="cpu").manual_seed(r["seed"]) for r in recipes]

    # 4. The pipeline call, its warnings kept for the record.
    kwargs = _call_arguments(loaded.pipeline, family, recipes, generators, should_stop)
    with torch.inference_mode(), captured_warnings() as warnings:
        output = loaded.pipeline(**kwargs)
    images = output.images

    # 5. Floats in [0, 1] to uint8, rounded as diffusers' numpy_to_pil does.
    pixels = (np.asarray(images, dtype=np.float32) * 255).round().astype(np.uint8)
    if pixels.shape[0] != len(recipes):
        raise RuntimeError(f"pipeline returned {pixels.shape[0]} images for {len(recipes)}")

    # 6. The safety checker's verdicts (diffusers blacks out what it flags).
    flags = getattr(output, "nsfw_content_detected", None)
    nsfw = None if flags is None else [bool(flag) for flag in flags]
    return GeneratedBatch(pixels, nsfw, warnings)


def _family(loaded: LoadedCheckpoint, recipe: dict[str, Any]) -> families.Family:
    """The family the recipe ran as; records from before families name none."""
    family = loaded.ref.family
    if recipe.get("family", family.key) != family.key:
        raise ValueError(
            f"the recipe ran as family {recipe['family']!r},"
            f" but {recipe['model']} is {family.key!r}"
        )
    return family


def _check_caption_cleaning(recipe: dict[str, Any]) -> None:
    """PixArt silently skips caption cleaning without bs4 and ftfy: refuse instead."""
    if not recipe.get("clean_caption"):
        return
    import importlib.util

    missing = [m for m in ("bs4", "ftfy") if importlib.util.find_spec(m) is None]
    if missing:
        raise RuntimeError(f"clean_caption needs {' and '.join(missing)} installed on the worker")


def _call_arguments(
    pipeline: Any,
    family: families.Family,
    recipes: Sequence[dict[str, Any]],
    generators: list[Any],
    should_stop: Callable[[], bool] | None,
) -> dict[str, Any]:
    first = recipes[0]
    accepted = inspect.signature(pipeline.__call__).parameters
    kwargs: dict[str, Any] = {
        "generator": generators,
        "num_inference_steps": first["steps"],
        "output_type": "np",
    }
    if first["pipeline"] == "unconditional":
        kwargs["batch_size"] = len(recipes)
    else:
        kwargs.update(
            prompt=[r["prompt"] for r in recipes],
            negative_prompt=[r["negative_prompt"] for r in recipes],
            **families.call_arguments(family, first),
        )
    if should_stop is not None and "callback_on_step_end" in accepted:
        kwargs["callback_on_step_end"] = _stop_callback(should_stop)
    return kwargs


def _stop_callback(should_stop: Callable[[], bool]) -> Callable[..., dict[str, Any]]:
    def on_step_end(_pipeline: Any, _step: int, _timestep: Any, tensors: dict) -> dict:
        if should_stop():
            raise BatchInterrupted()
        return tensors

    return on_step_end
