"""Refining one image: the spec of a job that keeps every recipe field of it but the changed ones.

The practical use of the diffusers reproducibility guide: keep the seed of an
image you like and iterate on its prompt. A refine job's prompts are the
image's prompt with each appended text added to it (the prompt alone when only
``--set`` changes something); its one seed is the image's seed; every other
field comes from the image's recipe (model, revision, sampler, steps, size,
dtype, negative prompt, guidance scale, axis values) and its job's batching,
then ``--set`` overrides, validated like spec fields. The job is created with
``parent_image_id`` pointing at the image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.orm import object_session

from reprogrid.models import Image
from reprogrid.models.recipes import recipe_of
from reprogrid.scheduler.spec import SPEC_FIELDS, JobSpec, SpecError, validate_spec

# Fields a refine job takes from its parent image and --append, never from --set.
KEPT_FIELDS = frozenset({"prompts", "prompts_file", "seeds", "axes"})


def refine_spec(
    image: Image, appends: Sequence[str], changes: Mapping[str, Any], max_cells: int
) -> JobSpec:
    """The validated spec of a job refining ``image``; errors name the field."""
    if not appends and not changes:
        raise SpecError("append", "give at least one --append TEXT or --set FIELD=VALUE")
    for name in changes:
        if name in KEPT_FIELDS:
            raise SpecError(
                name, "a refine job keeps the image's seed; add to its prompt with --append"
            )
    cell = image.cell
    if appends and cell.prompt is None:
        raise SpecError("append", f"image {image.id} has no prompt to add to")
    parent = JobSpec.from_json(cell.job.spec)
    recipe = recipe_of(object_session(image), cell)
    raw: dict[str, Any] = {k: v for k, v in recipe.items() if k in SPEC_FIELDS}
    raw |= {
        "name": f"refine-image-{image.id}",
        "seeds": [cell.seed],
        "batch_size": parent.batch_size,
        "batch_invariant": parent.batch_invariant,
    }
    if cell.prompt is not None:
        raw["prompts"] = [cell.prompt + text for text in appends] or [cell.prompt]
    return validate_spec(raw | dict(changes), max_cells)
