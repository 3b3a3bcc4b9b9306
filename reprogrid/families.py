"""Pipeline families: everything that differs between SD, SDXL, SD3, Flux, PixArt and the rest.

A family is data (a frozen :class:`Family`) plus the few small functions below
that read it. It says where a checkpoint's default size comes from, which
samplers fit it and how a sampler is configured for it, which extra recipe
fields it has (with their defaults) and which pipeline arguments they become.
The scheduler (spec validation, torch-free) and the worker (the pipeline call)
both read this module, so the two cannot disagree.

Adding a family: add a :class:`Family` to ``FAMILIES`` naming its pipeline
classes, then a tiny checkpoint for it in ``tests/tiny_families.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Samplers (diffusers scheduler classes) for checkpoints trained to predict
# noise or velocity (SD, SDXL, PixArt, DDPM). tests/test_families.py checks
# every name and option below against the installed diffusers.
DIFFUSION_SAMPLERS = frozenset(
    {
        "DDIMScheduler",
        "DDPMScheduler",
        "DEISMultistepScheduler",
        "DPMSolverMultistepScheduler",
        "DPMSolverSinglestepScheduler",
        "EDMEulerScheduler",
        "EulerAncestralDiscreteScheduler",
        "EulerDiscreteScheduler",
        "HeunDiscreteScheduler",
        "IPNDMScheduler",
        "KDPM2AncestralDiscreteScheduler",
        "KDPM2DiscreteScheduler",
        "LCMScheduler",
        "PNDMScheduler",
        "SASolverScheduler",
        "TCDScheduler",
        "UniPCMultistepScheduler",
    }
)
# Samplers built for flow matching (SD3, Flux), and whether their
# set_timesteps takes custom ``sigmas`` and the dynamic shift ``mu``.
FLOW_MATCH_SAMPLERS: Mapping[str, tuple[bool, bool]] = {
    "FlowMatchEulerDiscreteScheduler": (True, True),
    "FlowMatchHeunDiscreteScheduler": (False, False),
    "FlowMatchLCMScheduler": (True, True),
}
# Multistep samplers that diffusers configures correctly for flow matching
# (flow sigmas, flow prediction, the checkpoint's shift, ``mu`` for dynamic
# shift), and whether each accepts a ``mu`` when the checkpoint does not shift
# dynamically (Flux passes one always; DPM-Solver then refuses it).
FLOW_CONFIGURABLE_SAMPLERS: Mapping[str, bool] = {
    "DPMSolverMultistepScheduler": False,
    "UniPCMultistepScheduler": True,
}
ALL_SAMPLERS = DIFFUSION_SAMPLERS | frozenset(FLOW_MATCH_SAMPLERS)
# Samplers that draw fresh noise in every step. Reproducible only where the
# pipeline hands them the seeded generators (Family.seeds_sampler_noise).
STOCHASTIC_SAMPLERS = frozenset(
    {
        "DDPMScheduler",
        "EulerAncestralDiscreteScheduler",
        "FlowMatchLCMScheduler",
        "KDPM2AncestralDiscreteScheduler",
        "LCMScheduler",
        "SASolverScheduler",
        "TCDScheduler",
    }
)

# Sampler options a spec may set, and the samplers that have each.
_SIGMA_SCHEDULES = {
    "DEISMultistepScheduler",
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "EulerDiscreteScheduler",
    "FlowMatchEulerDiscreteScheduler",
    "FlowMatchLCMScheduler",
    "HeunDiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "KDPM2DiscreteScheduler",
    "SASolverScheduler",
    "UniPCMultistepScheduler",
}
_SPACED = {
    "DDIMScheduler",
    "DDPMScheduler",
    "DEISMultistepScheduler",
    "DPMSolverMultistepScheduler",
    "EulerAncestralDiscreteScheduler",
    "EulerDiscreteScheduler",
    "HeunDiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "KDPM2DiscreteScheduler",
    "LCMScheduler",
    "PNDMScheduler",
    "SASolverScheduler",
    "TCDScheduler",
    "UniPCMultistepScheduler",
}
_ORDERED = {
    "DEISMultistepScheduler",
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "UniPCMultistepScheduler",
}
ALGORITHMS: Mapping[str, tuple[str, ...]] = {
    "DEISMultistepScheduler": ("deis",),
    "DPMSolverMultistepScheduler": ("dpmsolver", "dpmsolver++", "sde-dpmsolver", "sde-dpmsolver++"),
    "DPMSolverSinglestepScheduler": ("dpmsolver", "dpmsolver++", "sde-dpmsolver++"),
    "SASolverScheduler": ("data_prediction", "noise_prediction"),
}
SCHEDULE_TYPES: Mapping[str, str] = {
    "karras": "use_karras_sigmas",
    "exponential": "use_exponential_sigmas",
    "beta": "use_beta_sigmas",
}
TIMESTEP_SPACINGS = ("leading", "linspace", "trailing")
SAMPLER_OPTIONS = ("schedule_type", "timestep_spacing", "solver_order", "algorithm_type")


def sampler_option_support(sampler: str, option: str, flow_configured: bool) -> bool:
    """Whether ``sampler`` has ``option``.

    A multistep sampler configured for flow computes its own flow sigmas and
    ignores a sigma schedule or timestep spacing, so it takes neither.
    """
    if flow_configured and option in {"schedule_type", "timestep_spacing"}:
        return False
    holders = {
        "schedule_type": _SIGMA_SCHEDULES,
        "timestep_spacing": _SPACED,
        "solver_order": _ORDERED,
        "algorithm_type": set(ALGORITHMS),
    }[option]
    return sampler in holders


@dataclass(frozen=True)
class Extra:
    """A recipe field of one family: its default and the pipeline argument it becomes."""

    name: str
    default: Any
    argument: str
    maximum: int | None = None  # the most the pipeline accepts (max_sequence_length)


@dataclass(frozen=True)
class Family:
    """What one pipeline family reads, accepts and passes."""

    key: str
    pipeline_classes: frozenset[str]
    denoiser: str | None = "unet"  # the folder whose config holds sample_size
    conditional: bool = True
    # The pipeline's own default latent size where the denoiser config has none (Flux: 128).
    fixed_sample_size: int | None = None
    # Latent pixels per token along each side (Flux packs 2x2 latents): sizes
    # must be a multiple of the VAE scale times this.
    size_patch: int = 1
    # False where the pipeline calls sampler.step without the seeded generators
    # (SD3, Flux): a stochastic sampler would draw unseeded noise there.
    seeds_sampler_noise: bool = True
    lora: bool = False  # the pipeline loads LoRA adapters (diffusers' load_lora_weights)
    guidance_argument: str = "guidance_scale"  # where recipe guidance_scale goes
    default_guidance: float = 7.5
    extras: tuple[Extra, ...] = ()
    # Transformer sample sizes the pipeline has resolution bins for (PixArt).
    binning_sample_sizes: frozenset[int] = frozenset()

    def extra(self, name: str) -> Extra | None:
        """The family's extra field ``name``, or None."""
        return next((e for e in self.extras if e.name == name), None)


def _max_sequence_length(default: int, maximum: int | None = None) -> Extra:
    return Extra("max_sequence_length", default, "max_sequence_length", maximum)


_PIXART_EXTRAS = (
    Extra("resolution_binning", False, "use_resolution_binning"),
    Extra("clean_caption", False, "clean_caption"),
)
FAMILIES: tuple[Family, ...] = (
    Family("sd", frozenset({"StableDiffusionPipeline"}), lora=True),
    Family("sdxl", frozenset({"StableDiffusionXLPipeline"}), lora=True),
    Family(
        "sd3",
        frozenset({"StableDiffusion3Pipeline"}),
        denoiser="transformer",
        seeds_sampler_noise=False,
        lora=True,
        extras=(_max_sequence_length(256, 512),),
    ),
    Family(
        "flux",
        frozenset({"FluxPipeline"}),
        denoiser="transformer",
        fixed_sample_size=128,
        size_patch=2,
        seeds_sampler_noise=False,
        lora=True,
        guidance_argument="true_cfg_scale",
        default_guidance=1.0,
        extras=(
            # None for checkpoints without a guidance embedding (schnell-style).
            Extra("distilled_guidance_scale", 3.5, "guidance_scale"),
            _max_sequence_length(512, 512),
        ),
    ),
    Family(
        "pixart",
        frozenset({"PixArtAlphaPipeline"}),
        denoiser="transformer",
        binning_sample_sizes=frozenset({32, 64, 128}),
        extras=(*_PIXART_EXTRAS, _max_sequence_length(120)),
    ),
    Family(
        "pixart",
        frozenset({"PixArtSigmaPipeline"}),
        denoiser="transformer",
        binning_sample_sizes=frozenset({32, 64, 128, 256}),
        extras=(*_PIXART_EXTRAS, _max_sequence_length(300)),
    ),
    Family(
        "unconditional",
        frozenset({"DDPMPipeline", "DDIMPipeline"}),
        conditional=False,
    ),
)
# Other pipeline classes run as they always did; what they pass to their sampler is unknown.
GENERIC = Family("generic", frozenset())
FAMILY_KEYS = tuple(dict.fromkeys(f.key for f in (*FAMILIES, GENERIC)))


def family_for(pipeline_class: str) -> Family:
    """The family of a pipeline class (``model_index.json``'s ``_class_name``)."""
    for family in FAMILIES:
        if pipeline_class in family.pipeline_classes:
            return family
    return GENERIC


@dataclass(frozen=True)
class CheckpointConfigs:
    """The JSON configs of a checkpoint that the families read."""

    index: Mapping[str, Any]
    sampler: Mapping[str, Any]
    denoisers: Mapping[str, Mapping[str, Any]]  # folder ("unet", "transformer") to config
    vae: Mapping[str, Any] = field(default_factory=dict)


def vae_scale(configs: CheckpointConfigs) -> int:
    """How many image pixels one latent pixel covers (1 without a VAE)."""
    blocks = configs.vae.get("block_out_channels")
    return 2 ** (len(blocks) - 1) if blocks else 1


def default_size(family: Family, configs: CheckpointConfigs) -> int | None:
    """The image side the pipeline makes when given no size, as the pipeline computes it."""
    denoiser = configs.denoisers.get(family.denoiser or "", {})
    if not denoiser:
        denoiser = next(iter(configs.denoisers.values()), {})
    size = denoiser.get("sample_size", family.fixed_sample_size)
    if isinstance(size, list):
        size = size[0]
    return None if size is None else size * vae_scale(configs)


def size_multiple(family: Family, configs: CheckpointConfigs) -> int:
    """Image sizes must be a multiple of this (and of 8)."""
    patch = configs.denoisers.get("transformer", {}).get("patch_size", 1)
    step = vae_scale(configs) * max(family.size_patch, patch if family.key == "sd3" else 1)
    return math.lcm(8, step)


def has_guidance_embedding(configs: CheckpointConfigs) -> bool:
    """Flux-dev style: the transformer takes the distilled guidance as an input."""
    return bool(configs.denoisers.get("transformer", {}).get("guidance_embeds", False))


def extra_defaults(family: Family, configs: CheckpointConfigs) -> dict[str, Any]:
    """The family's extra recipe fields with this checkpoint's defaults."""
    defaults = {e.name: e.default for e in family.extras}
    if "distilled_guidance_scale" in defaults and not has_guidance_embedding(configs):
        defaults["distilled_guidance_scale"] = None
    return defaults


def check_family_field(
    family: Family, configs: CheckpointConfigs, name: str, value: Any
) -> str | None:
    """Why the family's field ``name`` cannot take ``value`` here, or None if it can."""
    extra = family.extra(name)
    if extra is not None and extra.maximum is not None and value > extra.maximum:
        return f"at most {extra.maximum} for family {family.key}, got {value}"
    sample_size = configs.denoisers.get("transformer", {}).get("sample_size")
    if name == "resolution_binning" and value and sample_size not in family.binning_sample_sizes:
        return f"the pipeline has no resolution bins for a transformer sample_size of {sample_size}"
    return None


def is_flow(configs: CheckpointConfigs) -> bool:
    """A flow-matching checkpoint: its own sampler is a flow-matching one."""
    return configs.sampler.get("_class_name") in FLOW_MATCH_SAMPLERS


class SamplerMismatch(ValueError):
    """A sampler (or sampler option) that cannot run correctly on a checkpoint."""


def check_sampler(
    sampler: str | None, options: Mapping[str, Any], family: Family, configs: CheckpointConfigs
) -> None:
    """Raise :class:`SamplerMismatch` unless ``sampler`` and its options fit the checkpoint."""
    own = configs.sampler.get("_class_name")
    name = sampler or own
    if sampler is not None and sampler != own:
        _check_fit(sampler, family, configs)
    _check_seeded(name, options, family, configs)
    flow_configured = is_flow(configs) and name in FLOW_CONFIGURABLE_SAMPLERS
    for option, value in options.items():
        if value is not None and not sampler_option_support(name or "", option, flow_configured):
            how = " configured for flow matching" if flow_configured else ""
            raise SamplerMismatch(f"{option}: {name}{how} has no such option")
    algorithm = options.get("algorithm_type")
    if algorithm is not None and algorithm not in ALGORITHMS[name or ""]:
        known = ", ".join(ALGORITHMS[name or ""])
        raise SamplerMismatch(f"algorithm_type: {name} has no {algorithm!r} (known: {known})")


def _check_seeded(
    sampler: str | None, options: Mapping[str, Any], family: Family, configs: CheckpointConfigs
) -> None:
    """Refuse samplers whose noise the family's pipeline would leave unseeded."""
    if family.seeds_sampler_noise:
        return
    stochastic = (
        sampler in STOCHASTIC_SAMPLERS
        or str(options.get("algorithm_type") or "").startswith("sde-")
        or (
            sampler == configs.sampler.get("_class_name")
            and configs.sampler.get("stochastic_sampling")
        )
    )
    if stochastic:
        raise SamplerMismatch(
            f"sampler: {sampler} draws noise in each step, which the family {family.key}"
            " pipeline does not seed: images would not be reproducible"
        )


def _check_fit(sampler: str, family: Family, configs: CheckpointConfigs) -> None:
    if sampler not in ALL_SAMPLERS:
        known = ", ".join(sorted(ALL_SAMPLERS))
        raise SamplerMismatch(f"sampler: unknown sampler {sampler!r} (known: {known})")
    if not is_flow(configs):
        if sampler in FLOW_MATCH_SAMPLERS:
            raise SamplerMismatch(
                f"sampler: {sampler} is for flow-matching checkpoints, not family {family.key}"
            )
        return
    if sampler not in FLOW_MATCH_SAMPLERS and sampler not in FLOW_CONFIGURABLE_SAMPLERS:
        fits = ", ".join(
            sorted(
                name
                for name in {*FLOW_MATCH_SAMPLERS, *FLOW_CONFIGURABLE_SAMPLERS}
                if family.seeds_sampler_noise or name not in STOCHASTIC_SAMPLERS
            )
        )
        raise SamplerMismatch(
            f"sampler: {sampler} cannot be configured for flow matching"
            f" (family {family.key}; fits: {fits})"
        )
    dynamic = bool(configs.sampler.get("use_dynamic_shifting"))
    if sampler in FLOW_MATCH_SAMPLERS:
        takes_sigmas, takes_mu = FLOW_MATCH_SAMPLERS[sampler]
    else:
        takes_sigmas, takes_mu = True, dynamic or FLOW_CONFIGURABLE_SAMPLERS[sampler]
    # Flux passes custom sigmas (unless the sampler uses flow sigmas) and mu, always.
    needs_sigmas = family.key == "flux"
    needs_mu = family.key == "flux" or dynamic
    if (needs_sigmas and not takes_sigmas) or (needs_mu and not takes_mu):
        raise SamplerMismatch(
            f"sampler: {sampler} cannot take the dynamic shift family {family.key} passes"
        )


def sampler_config(
    sampler: str, checkpoint_config: Mapping[str, Any], recipe: Mapping[str, Any]
) -> dict[str, Any]:
    """The config a recipe's sampler is built from: the checkpoint's, adapted and with options.

    A multistep sampler on a flow-matching checkpoint gets flow sigmas, flow
    prediction and the checkpoint's shift (and its dynamic shifting), as
    diffusers documents for SD3 and Flux.
    """
    config = dict(checkpoint_config)
    # Records from before families (no "family") replay with the config as it was then.
    if (
        "family" in recipe
        and checkpoint_config.get("_class_name") in FLOW_MATCH_SAMPLERS
        and sampler in FLOW_CONFIGURABLE_SAMPLERS
    ):
        config.update(
            use_flow_sigmas=True,
            prediction_type="flow_prediction",
            flow_shift=checkpoint_config.get("shift", 1.0),
            use_dynamic_shifting=bool(checkpoint_config.get("use_dynamic_shifting")),
            time_shift_type=checkpoint_config.get("time_shift_type", "exponential"),
        )
    schedule = recipe.get("schedule_type")
    if schedule is not None:
        config.update({flag: kind == schedule for kind, flag in SCHEDULE_TYPES.items()})
    for option in ("timestep_spacing", "solver_order", "algorithm_type"):
        if recipe.get(option) is not None:
            config[option] = recipe[option]
    return config


def call_arguments(family: Family, recipe: Mapping[str, Any]) -> dict[str, Any]:
    """Pipeline arguments for a text-to-image recipe, beyond prompts, seeds and steps.

    A field missing from the recipe (a record older than the field) is not
    passed, so the pipeline uses its own default, as it did then.
    """
    arguments: dict[str, Any] = {
        family.guidance_argument: recipe["guidance_scale"],
        "width": recipe["width"],
        "height": recipe["height"],
    }
    for extra in family.extras:
        if recipe.get(extra.name) is not None:
            arguments[extra.argument] = recipe[extra.name]
    return arguments


def guidance_applies(guidance_scale: float) -> bool:
    """Every family's classifier-free guidance (Flux's true CFG) runs only above 1."""
    return guidance_scale > 1
