"""The ``parameters`` PNG text chunk, written as the AUTOMATIC1111 web UI writes it.

A1111's "infotext" is the prompt, a ``Negative prompt:`` line when there is
one, and a line of ``Key: value`` pairs joined by ``, ``; a value holding a
comma, colon, newline or double quote is written as a JSON string (A1111's
``quote()`` quotes the first three; a bare ``"`` is quoted too, since a value
that starts with one would otherwise be read as a quoted string). The sampler
is named the A1111 way (``Euler a``, ``DPM++ 2M SDE``) with ``Schedule type:
Karras`` where the diffusers sampler and its options have an A1111 name; any
other sampler keeps its diffusers class name. The sampler's class and whole
config, as built, are in the recorded call, in the ``reprogrid`` JSON chunk.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import reprogrid
from reprogrid.a1111 import a1111_sampler
from reprogrid.adapters import a1111_lora_hash
from reprogrid.scheduler.single_file import SINGLE_FILE_SUFFIX


def quote(value: object) -> str:
    """A value as A1111 writes it: as is, or as a JSON string when it would break the line."""
    text = str(value)
    if not any(mark in text for mark in (",", ":", "\n", '"')):
        return text
    return json.dumps(text, ensure_ascii=False)


def infotext(recipe: Mapping[str, Any], sampler: Mapping[str, Any], model_hash: str) -> str:
    """The ``parameters`` chunk of an image made from ``recipe`` by ``sampler``, the
    sampler as built (``{"class", "config"}`` of a recorded call).

    ``model_hash`` is the checkpoint's ``Model hash``: for a single file A1111's
    AutoV2, the first 10 hex digits of the file's SHA-256; for a folder the first
    10 of the checkpoint's identity (``CheckpointIdentity.a1111_hash``). Longer
    hashes are cut to 10 digits."""
    name, schedule = a1111_sampler(sampler["class"], sampler["config"])
    conditional = recipe["pipeline"] != "unconditional"
    fields: dict[str, object | None] = {
        "Steps": recipe["steps"],
        "Sampler": name,
        "Schedule type": schedule,
        "CFG scale": f"{recipe['guidance_scale']:g}" if conditional else None,
        "Distilled CFG Scale": _number(recipe.get("distilled_guidance_scale")),
        "Seed": recipe["seed"],
        "Size": f"{recipe['width']}x{recipe['height']}",
        "Model hash": model_hash[:10],
        "Model": a1111_model_name(recipe["model"]),
        "Version": f"reprogrid {reprogrid.__version__}",
    }
    loras = [(Path(a["path"]).stem, a) for a in recipe.get("adapters") or []]
    if loras:
        fields["Lora hashes"] = ", ".join(
            f"{name}: {a1111_lora_hash(a['path'], a['sha256'])}" for name, a in loras
        )
    # A1111 activates a LoRA by a <lora:name:scale> tag in the prompt: written the same way.
    tags = "".join(f" <lora:{name}:{a['scale']:g}>" for name, a in loras)
    lines = [(recipe.get("prompt") or "") + tags]
    if conditional and recipe.get("negative_prompt"):
        lines.append(f"Negative prompt: {recipe['negative_prompt']}")
    lines.append(", ".join(f"{k}: {quote(v)}" for k, v in fields.items() if v is not None))
    return "\n".join(lines)


def a1111_model_name(model: str) -> str:
    """The ``Model`` value: a built-in checkpoint by its bare name (``builtin:tiny`` is
    ``tiny``), as A1111 names a checkpoint, since readers such as sd-parsers drop any
    value with a colon; a single file by its stem (``dreamshaper_8.safetensors`` is
    ``dreamshaper_8``), as A1111 does; any other reference as given. The exact
    reference is in the ``reprogrid`` chunk."""
    if model.lower().endswith(SINGLE_FILE_SUFFIX):
        return PurePath(model.replace("\\", "/")).stem
    return model.removeprefix("builtin:")


def _number(value: float | None) -> str | None:
    return None if value is None else f"{value:g}"
