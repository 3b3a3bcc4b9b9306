"""AUTOMATIC1111's sampler names, both ways: diffusers sampler to A1111 name, and back.

The PNG's ``parameters`` chunk names the sampler as A1111 does (``Euler a``,
``DPM++ 2M`` with ``Schedule type: Karras``), and a spec may name its sampler
the same way, in A1111's current form (``DPM++ 2M`` and a separate schedule
type) or its older one with the schedule in the name (``DPM++ 2M Karras``).
One table serves both directions. Torch-free: spec validation reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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


# Recipe options each A1111 name sets, beyond its class (DPM-Solver's names).
_DPM_NAMES = {name: key for key, name in A1111_DPM_MULTISTEP.items()}


def a1111_sampler(sampler: str, options: Mapping[str, Any]) -> tuple[str, str | None]:
    """The A1111 sampler name and schedule type (None: none to write) of a diffusers sampler."""
    if sampler == DPM_MULTISTEP:
        key = tuple(options.get(k) or v for k, v in DPM_MULTISTEP_DEFAULTS.items())
        name = A1111_DPM_MULTISTEP.get(key, sampler)
    else:
        name = A1111_SAMPLERS.get(sampler, sampler)
    kinds = [kind for flag, kind in SIGMA_FLAGS.items() if options.get(flag)]
    return name, SCHEDULE_TYPES[kinds[0]] if kinds else None


def parse_a1111_sampler(name: str) -> tuple[str, dict[str, Any]] | None:
    """The diffusers class and recipe options an A1111 sampler name means, or None when
    ``name`` is no A1111 name (``DPM++ 2M Karras`` -> DPM-Solver, dpmsolver++, order 2,
    karras)."""
    options: dict[str, Any] = {}
    base = name.strip()
    for kind, label in SCHEDULE_TYPES.items():
        if base.endswith(f" {label}"):
            base, options["schedule_type"] = base.removesuffix(f" {label}"), kind
            break
    if base in _DPM_NAMES:
        algorithm, order = _DPM_NAMES[base]
        return DPM_MULTISTEP, {"algorithm_type": algorithm, "solver_order": order, **options}
    by_name = {label: cls for cls, label in A1111_SAMPLERS.items()}
    if base not in by_name:
        return None
    return by_name[base], options
