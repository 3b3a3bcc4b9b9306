"""The ``parameters`` PNG text chunk, written as the AUTOMATIC1111 web UI writes it.

A1111's "infotext" is the prompt, a ``Negative prompt:`` line when there is
one, and a line of ``Key: value`` pairs joined by ``, ``; a value holding a
comma, colon, newline or double quote is written as a JSON string (A1111's
``quote()`` quotes the first three; a bare ``"`` is quoted too, since a value
that starts with one would otherwise be read as a quoted string). The sampler
is named the A1111 way (``Euler a``, ``DPM++ 2M SDE``) with ``Schedule type:
Karras`` where the diffusers sampler and its options have an A1111 name; any
other sampler keeps its diffusers class name. The exact class and options are
in the recipe, in the ``reprogrid`` JSON chunk.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import reprogrid

# diffusers sampler classes with one A1111 name whatever their options.
A1111_SAMPLERS = {
    "DDIMScheduler": "DDIM",
    "DPMSolverSDEScheduler": "DPM++ SDE",
    "EulerAncestralDiscreteScheduler": "Euler a",
    "EulerDiscreteScheduler": "Euler",
    "HeunDiscreteScheduler": "Heun",
    "KDPM2AncestralDiscreteScheduler": "DPM2 a",
    "KDPM2DiscreteScheduler": "DPM2",
    "LCMScheduler": "LCM",
    "LMSDiscreteScheduler": "LMS",
    "PNDMScheduler": "PLMS",
    "UniPCMultistepScheduler": "UniPC",
}
# DPMSolverMultistepScheduler by (algorithm_type, solver_order), as diffusers'
# docs map A1111's samplers; other combinations have no A1111 name.
DPM_MULTISTEP = "DPMSolverMultistepScheduler"
DPM_MULTISTEP_DEFAULTS = {"algorithm_type": "dpmsolver++", "solver_order": 2}
A1111_DPM_MULTISTEP = {
    ("dpmsolver++", 2): "DPM++ 2M",
    ("sde-dpmsolver++", 2): "DPM++ 2M SDE",
    ("sde-dpmsolver++", 3): "DPM++ 3M SDE",
}
# Recipe ``schedule_type`` values, and the sampler config flags that choose them.
SCHEDULE_TYPES = {"karras": "Karras", "exponential": "Exponential", "beta": "Beta"}
SIGMA_FLAGS = {
    "use_karras_sigmas": "karras",
    "use_exponential_sigmas": "exponential",
    "use_beta_sigmas": "beta",
}


def quote(value: object) -> str:
    """A value as A1111 writes it: as is, or as a JSON string when it would break the line."""
    text = str(value)
    if not any(mark in text for mark in (",", ":", "\n", '"')):
        return text
    return json.dumps(text, ensure_ascii=False)


def sampler_options(recipe: Mapping[str, Any], sampler_config: Mapping[str, Any]) -> dict:
    """The options the sampler ran with: the checkpoint's config, the recipe's over it."""
    options = dict(sampler_config)
    for name in ("algorithm_type", "solver_order", "timestep_spacing"):
        if recipe.get(name) is not None:
            options[name] = recipe[name]
    schedule = recipe.get("schedule_type")
    if schedule is not None:
        for flag, kind in SIGMA_FLAGS.items():
            options[flag] = kind == schedule
    return options


def a1111_sampler(sampler: str, options: Mapping[str, Any]) -> tuple[str, str | None]:
    """The A1111 sampler name and schedule type (None: none to write) of a diffusers sampler."""
    if sampler == DPM_MULTISTEP:
        key = tuple(options.get(k) or v for k, v in DPM_MULTISTEP_DEFAULTS.items())
        name = A1111_DPM_MULTISTEP.get(key, sampler)
    else:
        name = A1111_SAMPLERS.get(sampler, sampler)
    kinds = [kind for flag, kind in SIGMA_FLAGS.items() if options.get(flag)]
    return name, SCHEDULE_TYPES[kinds[0]] if kinds else None


def infotext(
    recipe: Mapping[str, Any], sampler_config: Mapping[str, Any], checkpoint_sha256: str
) -> str:
    """The ``parameters`` chunk of an image made from ``recipe``."""
    sampler = recipe["sampler"] or sampler_config["_class_name"]
    name, schedule = a1111_sampler(sampler, sampler_options(recipe, sampler_config))
    conditional = recipe["pipeline"] != "unconditional"
    fields: dict[str, object | None] = {
        "Steps": recipe["steps"],
        "Sampler": name,
        "Schedule type": schedule,
        "CFG scale": f"{recipe['guidance_scale']:g}" if conditional else None,
        "Distilled CFG Scale": _number(recipe.get("distilled_guidance_scale")),
        "Seed": recipe["seed"],
        "Size": f"{recipe['width']}x{recipe['height']}",
        "Model hash": checkpoint_sha256[:10],
        "Model": recipe["model"],
        "Version": f"reprogrid {reprogrid.__version__}",
    }
    lines = [recipe.get("prompt") or ""]
    if conditional and recipe.get("negative_prompt"):
        lines.append(f"Negative prompt: {recipe['negative_prompt']}")
    lines.append(", ".join(f"{k}: {quote(v)}" for k, v in fields.items() if v is not None))
    return "\n".join(lines)


def _number(value: float | None) -> str | None:
    return None if value is None else f"{value:g}"
