"""Spec fields as CLI flags, shared by every command that takes a spec (run, submit)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from reprogrid.cli.app import BadInput
from reprogrid.config import Settings
from reprogrid.scheduler.spec import (
    JobSpec,
    SpecError,
    SpecLimits,
    read_spec_file,
    validate_spec,
)


def _parse_axis(text: str) -> tuple[str, list[Any]]:
    name, sep, values = text.partition("=")
    if not sep or not name or not values:
        raise BadInput(f"--axis: expected NAME=V1,V2,..., got {text!r}")
    return name.strip(), [_scalar(v.strip()) for v in values.split(",")]


def parse_setting(text: str) -> tuple[str, Any]:
    """``--set NAME=VALUE`` as a field name and a number, true/false, or text."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise BadInput(f"set: expected NAME=VALUE, got {text!r}")
    booleans = {"true": True, "false": False}
    return name.strip(), booleans.get(value.strip(), _scalar(value.strip()))


def _scalar(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


SPEC_FLAGS: list[Callable[[Callable], Callable]] = [
    click.option("--name", help="Job name."),
    click.option(
        "--model", help="builtin:tiny, builtin:tiny-ddpm, a local folder or a cached hub id."
    ),
    click.option("--revision", help="Hub revision of the model."),
    click.option("--sampler", help="Diffusers scheduler class, e.g. EulerDiscreteScheduler."),
    click.option("--prompt", "prompts", multiple=True, help="A prompt (repeat for several)."),
    click.option("--prompts-file", help="UTF-8 file with one prompt per line."),
    click.option("--negative-prompt", help="Negative prompt for every cell."),
    click.option("--seeds", help='Seeds: a list or ranges like "0-99,200,300-309".'),
    click.option("--steps", type=int, help="Denoising steps."),
    click.option("--guidance-scale", type=float, help="Classifier-free guidance scale."),
    click.option("--width", type=int, help="Image width in pixels (multiple of 8)."),
    click.option("--height", type=int, help="Image height in pixels (multiple of 8)."),
    click.option("--dtype", help="float32, float16 or bfloat16."),
    click.option("--batch-size", type=int, help="Images per pipeline call."),
    click.option("--batch-invariant/--batched", default=None, help="Compute each image alone."),
    click.option("--axis", "axes", multiple=True, help="Extra axis NAME=V1,V2 (repeatable)."),
]


def spec_flags(command: Callable) -> Callable:
    """Add every spec field as a flag; flags override the spec file's values."""
    for option in reversed(SPEC_FLAGS):
        command = option(command)
    return command


def load_spec(settings: Settings, spec_file: Path | None, flags: dict[str, Any]) -> JobSpec:
    """Read the spec file (if any), apply flags over it, and validate."""
    raw: dict[str, Any] = read_spec_file(spec_file) if spec_file else {}
    axes = flags.pop("axes")
    prompts = flags.pop("prompts")
    if prompts:
        raw.pop("prompts_file", None)
        raw["prompts"] = list(prompts)
    if flags.get("prompts_file"):
        raw.pop("prompts", None)
    for name, value in flags.items():
        if value is not None:
            raw[name] = value
    if axes:
        raw["axes"] = dict(raw.get("axes", {}), **dict(_parse_axis(a) for a in axes))
    base_dir = spec_file.parent if spec_file else Path.cwd()
    limits = SpecLimits(settings.max_steps, settings.max_image_side, settings.max_batch_size)
    return validate_spec(raw, settings.max_cells, base_dir, limits)


def validated_spec(settings: Settings, spec_file: Path | None, flags: dict[str, Any]) -> JobSpec:
    """:func:`load_spec`, with spec errors turned into exit code 2."""
    try:
        return load_spec(settings, spec_file, flags)
    except SpecError as exc:
        raise BadInput(str(exc)) from None
