"""Spec fields as CLI flags, shared by every command that takes a spec (run, submit)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from reprogrid.api import Reprogrid
from reprogrid.cli.app import App, BadInput
from reprogrid.scheduler.spec import JobSpec, SpecError, read_spec_file
from reprogrid.scheduler.tokenization import TokenReport


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
        "--model",
        help="builtin:tiny, a local folder, a cached hub id or a single .safetensors file.",
    ),
    click.option("--revision", help="Hub revision of the model."),
    click.option(
        "--config", help="Diffusers folder (or builtin:NAME) a single-file model is read with."
    ),
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
    click.option("--schedule-type", help="Sampler sigma schedule: karras, exponential or beta."),
    click.option("--timestep-spacing", help="leading, linspace or trailing."),
    click.option("--solver-order", type=int, help="Multistep sampler order (1-3)."),
    click.option("--algorithm-type", help="Sampler algorithm, e.g. dpmsolver++."),
    click.option("--distilled-guidance-scale", type=float, help="Flux's distilled guidance."),
    click.option(
        "--resolution-binning/--no-resolution-binning", default=None, help="PixArt size binning."
    ),
    click.option("--clean-caption/--no-clean-caption", default=None, help="PixArt captions."),
    click.option("--max-sequence-length", type=int, help="Text encoder tokens (T5 families)."),
    click.option(
        "--safety-checker/--no-safety-checker",
        default=None,
        help="Run the checkpoint's safety checker, if it has one. [default: on]",
    ),
    click.option("--axis", "axes", multiple=True, help="Extra axis NAME=V1,V2 (repeatable)."),
]


def spec_flags(command: Callable) -> Callable:
    """Add every spec field as a flag; flags override the spec file's values."""
    for option in reversed(SPEC_FLAGS):
        command = option(command)
    return command


def load_spec(api: Reprogrid, spec_file: Path | None, flags: dict[str, Any]) -> JobSpec:
    """Read the spec file (if any), apply flags over it, and validate."""
    axes = dict(_parse_axis(a) for a in flags.pop("axes"))
    flags["prompts"] = list(flags["prompts"]) or None
    if axes:  # flags add axes to the file's
        spec_axes = read_spec_file(spec_file).get("axes", {}) if spec_file else {}
        flags["axes"] = {**spec_axes, **axes}
    return api.spec(spec_file, **flags)


def tokenized(app: App, job_spec: JobSpec) -> TokenReport | None:
    """The spec's token counts; warns on stderr of prompts to be cut."""
    try:
        report = app.api.tokens(job_spec)
    except SpecError as exc:
        raise BadInput(str(exc)) from None
    if report is not None and (warning := report.warning()):
        click.echo(warning, err=True)
    return report


def validated_spec(app: App, spec_file: Path | None, flags: dict[str, Any]) -> JobSpec:
    """:func:`load_spec`, with spec errors turned into exit code 2."""
    try:
        return load_spec(app.api, spec_file, flags)
    except SpecError as exc:
        raise BadInput(str(exc)) from None
