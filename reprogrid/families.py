"""Pipeline families: everything that differs between SD, SDXL, SD3, Flux, PixArt and the rest.

A family is data (a frozen :class:`Family`) plus the few small functions below
that read it. It says where a checkpoint's default size comes from, which
samplers fit it and how a sampler is configured for it, which extra recipe
fields it has (with their defaults) and which pipeline arguments they become.
The scheduler (spec validation, torch-free) and the worker (the pipeline call)
both read this module, so the two cannot disagree.

Each family also says what its pipeline passes its sampler's ``set_timesteps``
(custom sigmas, timesteps, the dynamic shift ``mu``) and whether it seeds the
noise a sampler draws in each step: together they decide which samplers fit.
Pipeline classes with no family run generically (``GENERIC``), unless their
name says they are not text to image (``NOT_TEXT_TO_IMAGE``): then the spec is
refused. Whatever the family, the worker records the call the pipeline really
received (``reprogrid.worker.pipeline_call``); this module only decides what to pass.

Adding a family: add a :class:`Family` to ``FAMILIES`` naming its pipeline
classes, then a tiny checkpoint for it in ``tests/tiny_families.py`` (or
``tests/tiny_families_flow.py``, ``tests/tiny_families_dit.py``) and its rows
in ``tests/test_families.py``.
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
# shift): whether each takes custom sigmas (Chroma and Qwen-Image pass them
# even to a flow-sigma sampler), and whether it accepts a ``mu`` when the
# checkpoint does not shift dynamically (Flux passes one always; DPM-Solver
# then refuses it).
FLOW_CONFIGURABLE_SAMPLERS: Mapping[str, tuple[bool, bool]] = {
    "DPMSolverMultistepScheduler": (False, False),
    "UniPCMultistepScheduler": (True, True),
}
# The flow samplers whose set_timesteps takes custom ``timesteps`` (CogView4 passes them).
TAKES_TIMESTEPS = frozenset(
    {"FlowMatchEulerDiscreteScheduler", "FlowMatchLCMScheduler", "DPMSolverMultistepScheduler"}
)
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


# What a pipeline passes its sampler's set_timesteps (Family.passes_sigmas, passes_mu).
NEVER, ALWAYS = "never", "always"
UNLESS_FLOW_SIGMAS = "unless_flow_sigmas"  # Flux: no custom sigmas to a use_flow_sigmas sampler
WHEN_DYNAMIC = "when_dynamic"  # SD3: mu only where the sampler config shifts dynamically


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
    # The pipeline's own default image side, whatever the configs say (Z-Image: 1024).
    fixed_image_size: int | None = None
    # Latent pixels per token along each side (Flux packs 2x2 latents): sizes
    # must be a multiple of the VAE scale times this.
    size_patch: int = 1
    # True where the transformer config's patch_size counts too (SD3 checks it).
    config_patch: bool = False
    # The multiple the pipeline itself demands of a size whatever the VAE (Sana: 32).
    min_size_multiple: int = 8
    # The VAE scale the pipeline assumes, where it ignores the VAE config (Lumina2: 8).
    fixed_vae_scale: int | None = None
    # False where the pipeline calls sampler.step without the seeded generators
    # (SD3, Flux): a stochastic sampler would draw unseeded noise there.
    seeds_sampler_noise: bool = True
    lora: bool = False  # the pipeline loads LoRA adapters (diffusers' load_lora_weights)
    guidance_argument: str = "guidance_scale"  # where recipe guidance_scale goes
    default_guidance: float = 7.5
    # Classifier-free guidance runs above this guidance (Z-Image: above 0); None
    # where guidance_argument is a distilled guidance input (Flux.2 dev), never CFG.
    cfg_above: float | None = 1.0
    negative_prompt: bool = True  # __call__ takes a negative prompt
    # What the pipeline passes to its sampler's set_timesteps: custom sigmas
    # (NEVER, ALWAYS, or UNLESS_FLOW_SIGMAS: not to a sampler using flow sigmas)
    # and the dynamic shift mu (NEVER, ALWAYS, or WHEN_DYNAMIC: when the
    # checkpoint's sampler config shifts dynamically).
    passes_sigmas: str = NEVER
    passes_mu: str = WHEN_DYNAMIC
    # True where those sigmas are a Python list (Z-Image), which the flow-configured
    # multistep samplers cannot scale: only the FlowMatch* samplers take them.
    list_sigmas: bool = False
    passes_timesteps: bool = False  # custom timesteps too (CogView4)
    extras: tuple[Extra, ...] = ()
    # Transformer sample sizes the pipeline has resolution bins for (PixArt).
    binning_sample_sizes: frozenset[int] = frozenset()
    # False where reprogrid only knows the pipeline class is text-to-image
    # (the generic family): which samplers it seeds and what it passes is unknown.
    known: bool = True

    def extra(self, name: str) -> Extra | None:
        """The family's extra field ``name``, or None."""
        return next((e for e in self.extras if e.name == name), None)


def _max_sequence_length(default: int, maximum: int | None = None) -> Extra:
    return Extra("max_sequence_length", default, "max_sequence_length", maximum)


def _flow_transformer(key: str, classes: set[str], **fields: Any) -> Family:
    """A family as most flow-matching transformer pipelines of 2024-2026 are: 2x2
    latent patches, custom sigmas and ``mu`` passed to the sampler, no generator
    handed to its step, LoRA loaded; ``fields`` say where one differs."""
    common: dict[str, Any] = {
        "denoiser": "transformer",
        "size_patch": 2,
        "seeds_sampler_noise": False,
        "lora": True,
        "passes_sigmas": ALWAYS,
        "passes_mu": ALWAYS,
    }
    return Family(key, frozenset(classes), **(common | fields))


_PIXART_EXTRAS = (
    Extra("resolution_binning", False, "use_resolution_binning"),
    Extra("clean_caption", False, "clean_caption"),
)
FAMILIES: tuple[Family, ...] = (
    Family("sd", frozenset({"StableDiffusionPipeline"}), lora=True),
    Family("sdxl", frozenset({"StableDiffusionXLPipeline"}), lora=True),
    Family(
        "sd3",
        frozenset({"StableDiffusion3Pipeline"}),  # SD3 and SD3.5
        denoiser="transformer",
        config_patch=True,
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
        passes_sigmas=UNLESS_FLOW_SIGMAS,
        passes_mu=ALWAYS,
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
    _flow_transformer(
        "qwen-image",
        {"QwenImagePipeline"},
        fixed_sample_size=128,
        # True CFG, run (as the model card runs it) with the recipe's negative
        # prompt, "" included: above 1, like every other family's guidance.
        guidance_argument="true_cfg_scale",
        default_guidance=4.0,
        extras=(_max_sequence_length(512, 1024),),
    ),
    _flow_transformer(
        "flux2",
        {"Flux2Pipeline"},  # dev: guidance distilled into an embedding
        fixed_sample_size=128,
        cfg_above=None,
        negative_prompt=False,
        default_guidance=4.0,
        passes_sigmas=UNLESS_FLOW_SIGMAS,
        extras=(_max_sequence_length(512),),
    ),
    _flow_transformer(
        "flux2-klein",
        {"Flux2KleinPipeline"},  # CFG against an empty negative prompt
        fixed_sample_size=128,
        negative_prompt=False,
        default_guidance=4.0,
        passes_sigmas=UNLESS_FLOW_SIGMAS,
        extras=(_max_sequence_length(512),),
    ),
    _flow_transformer(
        "z-image",
        {"ZImagePipeline"},
        fixed_image_size=1024,
        cfg_above=0.0,  # its CFG runs at any guidance above 0
        default_guidance=5.0,
        list_sigmas=True,
        extras=(_max_sequence_length(512),),
    ),
    _flow_transformer(
        "chroma",
        {"ChromaPipeline"},
        fixed_sample_size=128,
        default_guidance=5.0,
        extras=(_max_sequence_length(512, 512),),
    ),
    _flow_transformer(
        "auraflow",
        {"AuraFlowPipeline"},
        fixed_image_size=1024,
        default_guidance=3.5,
        passes_sigmas=NEVER,
        passes_mu=NEVER,
        extras=(_max_sequence_length(256),),
    ),
    Family(
        "sana",
        frozenset({"SanaPipeline"}),  # flow matching, through its DPM-Solver's flow sigmas
        denoiser="transformer",
        fixed_image_size=1024,
        min_size_multiple=32,
        lora=True,
        default_guidance=4.5,
        passes_mu=NEVER,
        extras=(Extra("clean_caption", False, "clean_caption"), _max_sequence_length(300)),
    ),
    Family(
        "hunyuan-dit",
        frozenset({"HunyuanDiTPipeline"}),
        denoiser="transformer",
        default_guidance=5.0,
    ),
    _flow_transformer(
        "cogview4",
        {"CogView4Pipeline"},
        default_guidance=5.0,
        passes_timesteps=True,
        extras=(_max_sequence_length(1024),),
    ),
    _flow_transformer(
        "lumina2",
        {"Lumina2Pipeline"},
        fixed_vae_scale=8,
        default_guidance=4.0,
        extras=(_max_sequence_length(256, 512),),
    ),
    Family(
        "unconditional",
        frozenset({"DDPMPipeline", "DDIMPipeline"}),
        conditional=False,
    ),
)
# Other text-to-image pipeline classes run generically: what they pass to their
# sampler is unknown, so samplers that draw noise in each step are refused.
GENERIC = Family("generic", frozenset(), seeds_sampler_noise=False, known=False)
FAMILY_KEYS = tuple(dict.fromkeys(f.key for f in (*FAMILIES, GENERIC)))
# Each family by its key (PixArt's two classes share one: they differ only in data).
FAMILIES_BY_KEY: Mapping[str, Family] = {f.key: f for f in (GENERIC, *reversed(FAMILIES))}


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


def vae_scale(family: Family, configs: CheckpointConfigs) -> int:
    """How many image pixels one latent pixel covers (1 without a VAE), as the family's
    pipeline computes it: a literal (Lumina2), Qwen-Image's VAE's temporal downsampling
    list, a deep compression autoencoder's (Sana) encoder blocks, others' blocks."""
    if family.fixed_vae_scale is not None:
        return family.fixed_vae_scale
    vae = configs.vae
    if "temperal_downsample" in vae:
        return 2 ** len(vae["temperal_downsample"])
    blocks = vae.get("encoder_block_out_channels") or vae.get("block_out_channels")
    return 2 ** (len(blocks) - 1) if blocks else 1


def default_size(family: Family, configs: CheckpointConfigs) -> int | None:
    """The image side the pipeline makes when given no size, as the pipeline computes it."""
    if family.fixed_image_size is not None:
        return family.fixed_image_size
    denoiser = configs.denoisers.get(family.denoiser or "", {})
    if not denoiser:
        denoiser = next(iter(configs.denoisers.values()), {})
    size = denoiser.get("sample_size", family.fixed_sample_size)
    if isinstance(size, list):
        size = size[0]
    return None if size is None else size * vae_scale(family, configs)


def size_multiple(family: Family, configs: CheckpointConfigs) -> int:
    """Image sizes must be a multiple of this (and of 8, or what the pipeline demands)."""
    patch = configs.denoisers.get("transformer", {}).get("patch_size", 1)
    step = vae_scale(family, configs) * max(family.size_patch, patch if family.config_patch else 1)
    return math.lcm(family.min_size_multiple, step)


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
    """A flow-matching checkpoint: its own sampler is a flow-matching one, or one
    configured for flow matching (Sana's DPM-Solver with flow sigmas)."""
    sampler = configs.sampler
    return (
        sampler.get("_class_name") in FLOW_MATCH_SAMPLERS
        or sampler.get("prediction_type") == "flow_prediction"
        or bool(sampler.get("use_flow_sigmas"))
    )


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
    if not stochastic:
        return
    why = (
        f"which the family {family.key} pipeline does not seed"
        if family.known
        else f"and {pipeline_class(configs)} runs generically: reprogrid cannot tell whether"
        " it seeds that noise"
    )
    raise SamplerMismatch(
        f"sampler: {sampler} draws noise in each step, {why}: images would not be reproducible"
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
    fits = sorted(
        name
        for name in {*FLOW_MATCH_SAMPLERS, *FLOW_CONFIGURABLE_SAMPLERS}
        if _takes_timesteps(name, family, configs)
        and (family.seeds_sampler_noise or name not in STOCHASTIC_SAMPLERS)
    )
    if sampler not in FLOW_MATCH_SAMPLERS and sampler not in FLOW_CONFIGURABLE_SAMPLERS:
        raise SamplerMismatch(
            f"sampler: {sampler} cannot be configured for flow matching"
            f" (family {family.key}; fits: {', '.join(fits)})"
        )
    if not _takes_timesteps(sampler, family, configs):
        raise SamplerMismatch(
            f"sampler: {sampler} cannot take the custom sigmas or dynamic shift the family"
            f" {family.key} pipeline passes (fits: {', '.join(fits)})"
        )


def _takes_timesteps(sampler: str, family: Family, configs: CheckpointConfigs) -> bool:
    """Whether ``sampler``'s set_timesteps takes what the family's pipeline passes it."""
    dynamic = bool(configs.sampler.get("use_dynamic_shifting"))
    if sampler in FLOW_MATCH_SAMPLERS:
        takes_sigmas, takes_mu = FLOW_MATCH_SAMPLERS[sampler]
        flow_sigmas = False
    else:
        takes_sigmas, takes_mu_undynamic = FLOW_CONFIGURABLE_SAMPLERS[sampler]
        takes_mu = dynamic or takes_mu_undynamic
        flow_sigmas = True  # configured for flow matching by sampler_config
    needs_sigmas = family.passes_sigmas == ALWAYS or (
        family.passes_sigmas == UNLESS_FLOW_SIGMAS and not flow_sigmas
    )
    needs_mu = family.passes_mu == ALWAYS or (family.passes_mu == WHEN_DYNAMIC and dynamic)
    if needs_sigmas and family.list_sigmas and sampler not in FLOW_MATCH_SAMPLERS:
        return False
    if family.passes_timesteps and sampler not in TAKES_TIMESTEPS:
        return False
    return (takes_sigmas or not needs_sigmas) and (takes_mu or not needs_mu)


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


def guidance_applies(family: Family, guidance_scale: float) -> bool:
    """Whether the family's classifier-free guidance (Flux's and Qwen-Image's true CFG)
    runs at ``guidance_scale``: above 1 (Z-Image: above 0), never where it is distilled."""
    return family.cfg_above is not None and guidance_scale > family.cfg_above


def classifier_free_guidance(family: Family, pipeline: Any, arguments: Mapping[str, Any]) -> bool:
    """Whether a finished call ran classifier-free guidance.

    Read from the pipeline's own ``do_classifier_free_guidance`` where it has
    one (set during the call); else the family's rule applied to the arguments
    it received (Flux and Qwen-Image decide in ``__call__``: above 1, with a
    negative prompt).
    """
    try:
        return bool(pipeline.do_classifier_free_guidance)
    except AttributeError:
        pass
    scale = arguments.get(family.guidance_argument)
    negative = "negative_prompt" not in arguments or arguments["negative_prompt"] is not None
    return isinstance(scale, int | float) and guidance_applies(family, scale) and negative


# Words in a pipeline class name that mark a task other than text to image: the
# pipeline needs an input a spec cannot give (an image, a mask, a control
# image, image embeddings) or makes no image (video, audio).
NOT_TEXT_TO_IMAGE = (
    "Img2Img",
    "Image2Image",
    "ImageToImage",
    "Inpaint",
    "ControlNet",
    "Control",
    "Adapter",
    "Edit",
    "InstructPix2Pix",
    "Depth2Img",
    "Upscale",
    "SuperResolution",
    "Variation",
    "Refiner",
    "Redux",
    "Fill",
    "Kontext",
    "Layered",
    "PaintByExample",
    "Prior",
    "Video",
    "Wan",
    "Mochi",
    "LTX",
    "Latte",
    "Allegro",
    "AnimateDiff",
    "I2VGen",
    "Audio",
    "Music",
    "Speech",
    "ShapE",
    "Stable3D",
)


def pipeline_class(configs: CheckpointConfigs) -> str:
    """The pipeline class ``model_index.json`` names."""
    return str(configs.index.get("_class_name", "DiffusionPipeline"))


def not_text_to_image(name: str) -> str | None:
    """Why pipeline class ``name`` cannot run a text-to-image recipe, or None if it can."""
    if any(name in f.pipeline_classes for f in FAMILIES):
        return None
    marker = next((m for m in NOT_TEXT_TO_IMAGE if m in name), None)
    if marker is None:
        return None
    return (
        f"{name} is not a text-to-image pipeline ({marker}): it needs an input a spec"
        " cannot give, or makes no image"
    )
