"""Recorded pipeline calls (the ``pipeline_call`` table's JSON): one image's view, differences.

A call record (built by ``reprogrid.worker.pipeline_call``) holds the
arguments a batch's pipeline call shared, the pipeline's defaults among them,
the per-image arguments by the recipe field each comes from, the sampler as
built and whether classifier-free guidance ran. ``for_image`` fills in one
image's own values; ``differences`` names each way a replayed call differs
from the recorded one, with its cause.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reprogrid.models.recipes import canonical_json

# Arguments passed as one value per image, and the recipe field each value comes from.
PER_IMAGE_ARGUMENTS = {
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "generator": "seed",
}


def call_json(record: Mapping[str, Any]) -> str:
    """The canonical JSON a call is stored (and deduplicated) as."""
    return canonical_json(record)


def for_image(record: Mapping[str, Any], recipe: Mapping[str, Any]) -> dict[str, Any]:
    """The call as one image received it: the shared arguments and that image's own values."""
    own = {}
    for argument, field in record.get("per_image", {}).items():
        value = recipe.get(field)
        own[argument] = {"device": "cpu", "seed": value} if argument == "generator" else value
    return {**record, "arguments": {**record["arguments"], **own}}


def differences(recorded: Mapping[str, Any], replayed: Mapping[str, Any]) -> list[str]:
    """Each way the replayed call differs from the recorded one, as one line with its cause.

    e.g. ``true_cfg_scale 4.0 -> 5.0: pipeline default changed``.
    """
    found = []
    if recorded["pipeline_class"] != replayed["pipeline_class"]:
        found.append(
            f"pipeline class {recorded['pipeline_class']} -> {replayed['pipeline_class']}"
            ": checkpoint changed"
        )
    before, after = recorded["arguments"], replayed["arguments"]
    was_default, is_default = set(recorded["defaults"]), set(replayed["defaults"])
    for name in sorted(before.keys() | after.keys()):
        if name not in after:
            found.append(f"{name} {_shown(before[name])} -> absent: pipeline no longer takes it")
        elif name not in before:
            found.append(f"{name} absent -> {_shown(after[name])}: pipeline takes a new argument")
        elif before[name] != after[name]:
            cause = (
                "pipeline default changed"
                if name in was_default and name in is_default
                else "reprogrid passes it differently"
            )
            found.append(f"{name} {_shown(before[name])} -> {_shown(after[name])}: {cause}")
    found += _sampler_differences(recorded["sampler"], replayed["sampler"])
    if recorded.get("per_image") != replayed.get("per_image"):
        found.append("per-image arguments differ: reprogrid passes them differently")
    return found


def _sampler_differences(recorded: Mapping[str, Any], replayed: Mapping[str, Any]) -> list[str]:
    if recorded["class"] != replayed["class"]:
        return [f"sampler {recorded['class']} -> {replayed['class']}: sampler class changed"]
    before, after = recorded["config"], replayed["config"]
    found = []
    for name in sorted(before.keys() | after.keys()):
        was, now = before.get(name, "absent"), after.get(name, "absent")
        if was != now:
            found.append(
                f"sampler {name} {_shown(was)} -> {_shown(now)}: sampler config changed"
                " (checkpoint config or diffusers default)"
            )
    return found


def _shown(value: Any) -> str:
    return canonical_json(value) if isinstance(value, dict | list) else str(value)
