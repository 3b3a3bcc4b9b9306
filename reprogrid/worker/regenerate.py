"""Regeneration: rebuild recorded images from their records alone and compare them.

The record holds everything a replay needs: the recipes of the batch an image
was computed in, in their order; the hashes of the checkpoint's files; the
environment of the original run. By default the whole original batch runs again
in one pipeline call (``generate``, as the original run did), on the
recorded device type, with the recorded thread count and full-determinism flag,
so that on the same environment the pixels come out identical. ``alone`` runs
each asked image by itself instead: bit for bit only for batch-invariant jobs,
whose batches hold one image.

Every result carries its verdict, the environment fields that differ from the
original run, the checkpoint files that changed since and each argument of the
pipeline call (or of its sampler's config) that differs from the recorded call,
so that a mismatch comes with every cause that can be known.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from reprogrid.adapters import changed_adapters
from reprogrid.models import Batch, Image, PipelineCall, calls
from reprogrid.models.recipes import cell_recipes
from reprogrid.models.verifications import ALONE, BATCH, DEFAULT_TOLERANCE, ERROR, ImageRef
from reprogrid.scheduler.checkpoint_refs import CheckpointNotFound, resolve_checkpoint
from reprogrid.worker.checkpoints import (
    LoadedCheckpoint,
    PipelineKey,
    checkpoint_identity,
    load_current_checkpoint,
)
from reprogrid.worker.compare import Comparison, compare, stored_pixels
from reprogrid.worker.determinism import configured
from reprogrid.worker.environment import (
    describe_environment,
    differences,
    imported_packages,
    ranked,
)
from reprogrid.worker.execute import png_chunks
from reprogrid.worker.generate import generate
from reprogrid.worker.store import pixel_sha256


class ReplayError(RuntimeError):
    """The record cannot be replayed here: no such device, checkpoint gone, record broken."""


@dataclass(frozen=True)
class Replay:
    """How to regenerate; None means as recorded (device type, threads, full determinism)."""

    device: str | None = None
    threads: int | None = None
    full_determinism: bool | None = None
    alone: bool = False
    tolerance: float = DEFAULT_TOLERANCE

    @property
    def mode(self) -> str:
        """The verification mode this replay gives: ``alone`` or ``batch``."""
        return ALONE if self.alone else BATCH


@dataclass(frozen=True)
class RecordedBatch:
    """A batch as recorded: its cells in order and the conditions its images were made in."""

    batch_id: int
    job_id: int
    cells: list[tuple[int, int, str]]  # (cell id, grid index, recipe JSON), in batch order
    environment: dict[str, Any]
    checkpoint_files: dict[str, str]
    call: dict[str, Any] | None = None  # None for images recorded before calls were


@dataclass
class Regeneration:
    """One regenerated image and how it compares with its record."""

    image: ImageRef
    mode: str
    comparison: Comparison
    pixel_sha256: str
    batch_size: int  # images in the pipeline call that made it
    seconds: float  # its share of that call's time
    tolerance: float
    environment: dict[str, Any]  # where it was regenerated
    environment_differences: dict[str, list[Any]]
    # the differing packages this process had imported when it regenerated: the
    # pipeline's own (verdicts name them before the other packages)
    imported_differences: list[str]
    checkpoint_changes: dict[str, list[str]]
    revision: str | None  # the recorded revision: a hub checkpoint's snapshot commit
    # each way the replayed call differs from the recorded one, with its cause
    call_differences: list[str]
    pixels: np.ndarray = field(repr=False)
    png_chunks: dict[str, str] = field(repr=False)

    @property
    def verdict(self) -> str:
        """identical, close or different."""
        return self.comparison.verdict

    def verification_row(self, environment_id: int, **details: Any) -> dict[str, Any]:
        """The ``verification`` row recording this result."""
        return {
            "image_id": self.image.image_id,
            "environment_id": environment_id,
            "mode": self.mode,
            "verdict": self.verdict,
            "pixel_sha256": self.pixel_sha256,
            "max_abs_diff": self.comparison.max_abs_diff,
            "mean_abs_diff": self.comparison.mean_abs_diff,
            "psnr": self.comparison.psnr,
            "details": {
                "original_batch_id": self.image.batch_id,
                "batch_size": self.batch_size,
                "tolerance": self.tolerance,
                "seconds": round(self.seconds, 4),
                "environment_differences": self.environment_differences,
                "imported_differences": self.imported_differences,
                "checkpoint_changes": self.checkpoint_changes,
                "call_differences": self.call_differences,
                "revision": self.revision,
                **details,
            },
        }


def error_row(image: ImageRef, mode: str, error: str, **details: Any) -> dict[str, Any]:
    """The ``verification`` row of an image that could not be regenerated."""
    return {
        "image_id": image.image_id,
        "environment_id": None,
        "mode": mode,
        "verdict": ERROR,
        "pixel_sha256": None,
        "max_abs_diff": None,
        "mean_abs_diff": None,
        "psnr": None,
        "details": {"original_batch_id": image.batch_id, "error": error, **details},
    }


def load_recorded_batch(session: Session, batch_id: int) -> RecordedBatch:
    """The recorded composition and conditions of the batch that made some images."""
    batch = session.get(Batch, batch_id)
    by_id = cell_recipes(session, batch.cell_ids)
    # One worker records all of a batch's images at once: they share environment and checkpoint.
    image = session.scalars(select(Image).where(Image.batch_id == batch_id).limit(1)).one()
    return RecordedBatch(
        batch_id=batch_id,
        job_id=batch.job_id,
        cells=[by_id[i] for i in batch.cell_ids],
        environment=image.environment.details,
        checkpoint_files=image.checkpoint.files,
        call=None if image.call_id is None else _stored_call(session, image.call_id),
    )


def _stored_call(session: Session, call_id: int) -> dict[str, Any]:
    return json.loads(session.get(PipelineCall, call_id).call)


def regenerate(
    recorded: RecordedBatch,
    images: list[ImageRef],
    replay: Replay,
    store: Path,
    should_stop: Callable[[], bool] | None = None,
) -> list[Regeneration]:
    """Regenerate ``images`` (all made by ``recorded``) and compare each with its record."""
    for image in images:
        if recorded.cells[image.index_in_batch][0] != image.cell_id:
            raise ReplayError(f"image {image.image_id}: not at its recorded place in its batch")
    recipes = [json.loads(recipe) for _, _, recipe in recorded.cells]
    first = recipes[0]
    device = replay.device or recorded.environment["device_type"]
    _check_device(device)
    changes = checkpoint_changes(
        first["model"], first["revision"], recorded.checkpoint_files, first.get("config")
    )
    changed = changed_adapters(first.get("adapters", []))
    if changed:
        raise ReplayError(f"adapters: changed since the record: {', '.join(changed)}")
    with configured(*_settings(recorded, replay)) as determinism:
        loaded = _load(first, device, changes)
        environment = describe_environment(device, first["dtype"], determinism)
        groups = [[i.index_in_batch] for i in images] if replay.alone else [range(len(recipes))]
        made: dict[int, tuple[np.ndarray, float, int]] = {}
        replayed_calls = []
        for positions in groups:
            pixels, call = _generate(loaded, recipes, positions, device, should_stop)
            made.update(pixels)
            replayed_calls.append(call)
    call = replayed_calls[0]
    found = differences(recorded.environment, environment)
    result = functools.partial(
        Regeneration,
        mode=replay.mode,
        tolerance=replay.tolerance,
        environment=environment,
        environment_differences=found,
        imported_differences=sorted(ranked(found, imported_packages())[1]),
        checkpoint_changes=changes,
        revision=first["revision"],
        call_differences=[] if recorded.call is None else calls.differences(recorded.call, call),
    )
    results = []
    for image in images:
        pixels, seconds, batch_size = made[image.index_in_batch]
        cell_id, grid_index, recipe_json = recorded.cells[image.index_in_batch]
        results.append(
            result(
                image=image,
                comparison=_compare(image, pixels, store, replay.tolerance),
                pixel_sha256=pixel_sha256(pixels),
                batch_size=batch_size,
                seconds=seconds,
                pixels=pixels,
                png_chunks=png_chunks(
                    recorded.job_id, cell_id, grid_index, recipe_json, loaded.identity, call
                ),
            )
        )
    return results


def checkpoint_changes(
    model: str, revision: str | None, recorded: dict[str, str], config: str | None = None
) -> dict[str, list[str]]:
    """Files of the checkpoint that changed, went missing or appeared since the record
    (a single file's config folder's under ``config/``)."""
    try:
        current = checkpoint_identity(resolve_checkpoint(model, revision, config)).files
    except CheckpointNotFound as exc:
        raise ReplayError(f"checkpoint: {exc}") from None
    found = {
        "changed": sorted(n for n in recorded.keys() & current.keys() if recorded[n] != current[n]),
        "missing": sorted(recorded.keys() - current.keys()),
        "added": sorted(current.keys() - recorded.keys()),
    }
    return {kind: names for kind, names in found.items() if names}


def describe_changes(changes: dict[str, list[str]]) -> str:
    """Checkpoint changes as one line, e.g. ``unet/model.safetensors (changed)``."""
    return ", ".join(f"{name} ({kind})" for kind, names in changes.items() for name in names)


def _settings(recorded: RecordedBatch, replay: Replay) -> tuple[int, bool]:
    """Thread count and full-determinism flag: the replay's where given, else the record's."""
    full = replay.full_determinism
    if full is None:
        full = recorded.environment["full_determinism"]
    return replay.threads or recorded.environment["threads"], full


def _compare(image: ImageRef, pixels: np.ndarray, store: Path, tolerance: float) -> Comparison:
    return compare(
        image.pixel_sha256,
        pixels,
        lambda: stored_pixels(store / image.path, image.pixel_sha256),
        tolerance,
    )


def _check_device(device: str) -> None:
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError as exc:
        raise ReplayError(f"device: {exc}") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ReplayError(f"device: no CUDA device here for {device!r} (give --device cpu)")


def _load(recipe: dict[str, Any], device: str, changes: dict[str, list[str]]) -> LoadedCheckpoint:
    try:
        return load_current_checkpoint(PipelineKey.for_recipe(recipe, device))
    except Exception as exc:
        cause = f"; files changed since the record: {describe_changes(changes)}" if changes else ""
        raise ReplayError(
            f"checkpoint: loading {recipe['model']!r} failed ({type(exc).__name__}: {exc}){cause}"
        ) from exc


def _generate(
    loaded: LoadedCheckpoint,
    recipes: list[dict[str, Any]],
    positions: Iterable[int],
    device: str,
    should_stop: Callable[[], bool] | None,
) -> tuple[dict[int, tuple[np.ndarray, float, int]], dict[str, Any]]:
    """One pipeline call for the recipes at ``positions``: position -> (pixels, seconds,
    size), and the call the pipeline received."""
    positions = list(positions)
    started = time.perf_counter()
    made = generate(loaded, [recipes[p] for p in positions], device, should_stop)
    seconds = (time.perf_counter() - started) / len(positions)
    pixels = {p: (made.pixels[i], seconds, len(positions)) for i, p in enumerate(positions)}
    return pixels, made.call
