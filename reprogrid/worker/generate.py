"""Generation of one batch: recipes in, RGB uint8 pixels out.

This is the only place a pipeline is called, for ``run``, the Celery worker
and regeneration alike, so a batch computes the same way on every path.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from reprogrid import families
from reprogrid.worker.batch_warnings import captured_warnings
from reprogrid.worker.checkpoints import LoadedCheckpoint
from reprogrid.worker.pipeline_call import call_parameters, call_record, sampler_record

# Fields every recipe of one batch must share: one pipeline call takes one value of each.
SHARED_FIELDS = (
    "pipeline",
    "model",
    "revision",
    "config",
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


class CallRefused(ValueError):
    """The pipeline cannot take the call a recipe makes, or gave other than the recipe's images.

    A ``ValueError``: the batch fails at once, never retried (see ``failures``).
    """


@dataclass(frozen=True)
class GeneratedBatch:
    """What one pipeline call gave: pixels, safety checker flags, warnings raised, and
    the call itself as the pipeline received it (see ``pipeline_call``)."""

    pixels: np.ndarray  # (N, H, W, 3) uint8
    nsfw: list[bool] | None  # per image; None when no safety checker ran
    warnings: list[dict[str, Any]]  # see reprogrid.worker.batch_warnings
    call: dict[str, Any]


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

    # 4. The pipeline call, its warnings kept for the record; what it received is
    #    read back from the pipeline and the sampler instance that ran.
    pipeline = loaded.pipeline
    kwargs = _call_arguments(pipeline, family, recipes, generators)
    sampler = sampler_record(pipeline.scheduler)
    watched = dict(kwargs)
    if should_stop is not None and "callback_on_step_end" in call_parameters(pipeline):
        watched["callback_on_step_end"] = _stop_callback(should_stop)
    with torch.inference_mode(), captured_warnings() as warnings:
        output = pipeline(**watched)
    guidance = families.classifier_free_guidance(family, pipeline, kwargs)
    call = call_record(pipeline, kwargs, sampler, guidance)

    # 5. Floats in [0, 1] to uint8, rounded as diffusers' numpy_to_pil does, and
    #    exactly the recipe's size: a pipeline that resized would record a lie.
    pixels = _pixels(output, call["pipeline_class"], recipes)

    # 6. The safety checker's verdicts (diffusers blacks out what it flags).
    flags = getattr(output, "nsfw_content_detected", None)
    nsfw = None if flags is None else [bool(flag) for flag in flags]
    return GeneratedBatch(pixels, nsfw, warnings, call)


def _pixels(output: Any, pipeline_class: str, recipes: Sequence[dict[str, Any]]) -> np.ndarray:
    images = getattr(output, "images", None)
    if images is None:
        raise CallRefused(f"{pipeline_class} returned no images (it is not text-to-image)")
    pixels = (np.asarray(images, dtype=np.float32) * 255).round().astype(np.uint8)
    if pixels.ndim != 4 or pixels.shape[0] != len(recipes):
        raise CallRefused(
            f"{pipeline_class} returned images shaped {pixels.shape} for {len(recipes)} recipes"
        )
    height, width = pixels.shape[1:3]
    wanted = (recipes[0]["height"], recipes[0]["width"])
    if (height, width) != wanted:
        raise CallRefused(
            f"{pipeline_class} returned {width}x{height} images for a"
            f" {wanted[1]}x{wanted[0]} recipe: it resized them"
        )
    return pixels


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
) -> dict[str, Any]:
    """The pipeline's keyword arguments for the batch, each one it takes.

    Where the pipeline has ``use_resolution_binning`` and the recipe does not
    set it, it is passed as false: binning computes at another size than the
    recipe's. A recipe argument the pipeline does not take is refused, never
    dropped; so is a required argument (an input image) a recipe cannot give.
    """
    first = recipes[0]
    accepted = call_parameters(pipeline)
    kwargs: dict[str, Any] = {
        "generator": generators,
        "num_inference_steps": first["steps"],
        "output_type": "np",
    }
    if first["pipeline"] == "unconditional":
        kwargs["batch_size"] = len(recipes)
    else:
        kwargs["prompt"] = [r["prompt"] for r in recipes]
        if family.negative_prompt and ("negative_prompt" in accepted or first["negative_prompt"]):
            kwargs["negative_prompt"] = [r["negative_prompt"] for r in recipes]
        kwargs.update(families.call_arguments(family, first))
    if "use_resolution_binning" in accepted and "use_resolution_binning" not in kwargs:
        kwargs["use_resolution_binning"] = False
    _check_accepted(type(pipeline).__name__, accepted, kwargs)
    return kwargs


def _check_accepted(
    pipeline_class: str, accepted: Mapping[str, inspect.Parameter], kwargs: Mapping[str, Any]
) -> None:
    takes_any = any(p.kind == p.VAR_KEYWORD for p in accepted.values())
    refused = sorted(name for name in kwargs if name not in accepted)
    if refused and not takes_any:
        raise CallRefused(f"{pipeline_class} takes no argument {', '.join(refused)}")
    required = sorted(
        name
        for name, p in accepted.items()
        if p.default is p.empty
        and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        and name not in kwargs
    )
    if required:
        raise CallRefused(
            f"{pipeline_class} needs {', '.join(required)}, which a text-to-image recipe"
            " cannot give"
        )


def _stop_callback(should_stop: Callable[[], bool]) -> Callable[..., dict[str, Any]]:
    def on_step_end(_pipeline: Any, _step: int, _timestep: Any, tensors: dict) -> dict:
        if should_stop():
            raise BatchInterrupted()
        return tensors

    return on_step_end
