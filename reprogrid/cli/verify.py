"""Commands that check images against their records: regenerate, verify, verifications.

torch is imported only by the commands that regenerate; ``verify --files-only``
and ``verifications`` never load it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click
from sqlalchemy.orm import Session

from reprogrid.cli.app import App, BadInput, main, pass_reader
from reprogrid.cli.output import print_table, write_json_array
from reprogrid.models.queries import NotFound
from reprogrid.models.verifications import (
    DEFAULT_TOLERANCE,
    FILE_VERDICTS,
    IDENTICAL,
    PASSING,
    REGENERATION_VERDICTS,
    VERDICTS,
    worker_queue,
)

REPLAY_OPTIONS: list[Callable[[Callable], Callable]] = [
    click.option(
        "--alone", is_flag=True, help="Regenerate only the asked images, not their whole batch."
    ),
    click.option(
        "--device", help="cpu, cuda, cuda:N or auto. [default: the original run's device type]"
    ),
    click.option(
        "--threads", type=click.IntRange(min=1), help="CPU threads. [default: the original run's]"
    ),
    click.option(
        "--full-determinism/--no-full-determinism",
        default=None,
        help="Deterministic algorithms, no TF32. [default: as in the original run]",
    ),
    click.option(
        "--tolerance",
        type=click.IntRange(0, 255),
        default=DEFAULT_TOLERANCE,
        show_default=True,
        help="Largest difference per channel, in uint8 levels, still called close.",
    ),
]
REPLAY_DEFAULTS = {
    "alone": False,
    "device": None,
    "threads": None,
    "full_determinism": None,
    "tolerance": DEFAULT_TOLERANCE,
}


def replay_options(command: Callable) -> Callable:
    """Add the options that say how to regenerate (by default: as recorded)."""
    for option in reversed(REPLAY_OPTIONS):
        command = option(command)
    return command


@main.command()
@click.argument("image")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the regenerated PNG here.",
)
@replay_options
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="List every environment difference (default: the numeric stack, the packages the"
    " pipeline imported, and a count of the rest).",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@pass_reader
def regenerate(
    app: App, image: str, out: Path | None, everything: bool, fmt: str, **replay_flags: Any
) -> None:
    """Rebuild one image from its record alone and say whether it is the same.

    IMAGE is an id or sha:PREFIX of a hash. By default the image's whole original batch
    runs again, in its order, on the original device type with the original thread
    count and determinism flags, so that the same environment gives identical
    pixels. The verdict is identical, close (within --tolerance) or different;
    environment fields and checkpoint files that changed since the original run
    are listed. Exit code 0 for identical or close, 1 otherwise. Writes nothing
    to the database (verify records its checks).

    \b
    Example:
      reprogrid regenerate 12
      reprogrid regenerate 3fa9c2 --alone --threads 4 --out /tmp/again.png
    """
    from reprogrid.worker.regenerate import ReplayError
    from reprogrid.worker.store import encode_png

    try:
        result = app.api.regenerate(image, **replay_flags)
    except NotFound as exc:
        raise BadInput(f"image: {exc}") from None
    except ReplayError as exc:
        raise click.ClickException(str(exc)) from None
    if out is not None:
        out.write_bytes(encode_png(result.pixels, result.png_chunks))
    if fmt == "json":
        row = {**result.verification_row(None), "environment": result.environment}
        click.echo(json.dumps(row, indent=2))
    else:
        for line in _regeneration_lines(result, out, everything):
            click.echo(line)
    sys.exit(0 if result.verdict in PASSING else 1)


def _regeneration_lines(result: Any, out: Path | None, everything: bool = False) -> list[str]:
    from reprogrid.worker.regenerate import describe_changes

    image, env = result.image, result.environment
    if result.batch_size == 1:
        how = "alone (a batch of 1)"
    else:
        how = (
            f"its original batch {image.batch_id}: {result.batch_size} images,"
            f" this one at position {image.index_in_batch + 1}"
        )
    differences = describe_differences(
        result.environment_differences, result.imported_differences, everything
    )
    lines = [
        f"image {image.image_id}: {result.verdict}{_metrics(result.comparison, result.tolerance)}",
        f"  replayed: {how}",
        f"  on: {env['device_type']} ({env['device_name']}), {env['dtype']},"
        f" threads {env['threads']}, full determinism {'on' if env['full_determinism'] else 'off'}",
        f"  pixel_sha256: {result.pixel_sha256} (recorded {image.pixel_sha256})",
        f"  checkpoint: {_checkpoint_source(result)}",
        "  environment: "
        + (f"differs from the original run in {differences}" if differences else "as recorded"),
        "  checkpoint files: "
        + (
            f"changed since the original run: {describe_changes(result.checkpoint_changes)}"
            if result.checkpoint_changes
            else "as recorded"
        ),
        "  pipeline call: "
        + ("; ".join(result.call_differences) if result.call_differences else "as recorded"),
    ]
    if out is not None:
        lines.append(f"  written to: {out}")
    return lines


def describe_differences(
    differences: dict[str, list[Any]], imported: Iterable[str] = (), everything: bool = False
) -> str:
    """Environment differences as ``name (before -> after)``, a missing package as ``absent``:
    first what changes every pipeline's numbers (torch, diffusers, the CUDA stack, torch's
    switches...), then the differing packages the regenerating process had imported
    (``imported``: their ``packages.NAME`` keys), then the rest, only counted unless
    ``everything``."""
    from reprogrid.worker.environment import ranked

    packages = frozenset(name.removeprefix("packages.") for name in imported)
    first, used, rest = ranked(differences, packages)
    shown = {**first, **used, **(rest if everything else {})}
    listed = ", ".join(f"{k} ({_value(old)} -> {_value(new)})" for k, (old, new) in shown.items())
    if not rest or everything:
        return listed
    more = f"{len(rest)} other package{'s' * (len(rest) != 1)} or field{'s' * (len(rest) != 1)}"
    return f"{listed}, and {more} (--all lists them)" if listed else f"only {more} (--all)"


def _ranked_names(found: dict[str, list[Any]]) -> str:
    """The names of the numeric differences, and a count of the rest."""
    from reprogrid.worker.environment import ranked

    first = ranked(found)[0]
    more = len(found) - len(first)
    return ", ".join([*first, *([f"and {more} more (--all)"] if more else [])])


def _value(value: Any) -> str:
    if value is None:
        return "absent"
    return json.dumps(value, sort_keys=True) if isinstance(value, dict) else str(value)


def _checkpoint_source(result: Any) -> str:
    """Which files were loaded: a hub checkpoint's recorded snapshot, offline."""
    if result.revision is None:
        return "as the recorded model reference resolves here"
    return f"revision {result.revision} as recorded, loaded offline from local files"


def _metrics(comparison: Any, tolerance: int) -> str:
    if comparison.max_abs_diff is None:
        return " (the stored PNG is missing or changed: nothing to measure against)"
    if comparison.psnr is None:
        return ""
    return (
        f": max abs diff {comparison.max_abs_diff:g}, mean abs diff"
        f" {comparison.mean_abs_diff:.4f} (uint8 levels), PSNR {comparison.psnr:.1f} dB"
        f" (tolerance {tolerance})"
    )


@main.command()
@click.argument("job", type=int, required=False)
@click.option("--image", "image_ids", type=int, multiple=True, help="An image id (repeatable).")
@click.option("--sample", type=click.IntRange(min=1), help="Check N images picked at random.")
@click.option(
    "--files-only",
    is_flag=True,
    help="Only check the stored PNGs, bytes and decoded pixels, against the record (no torch).",
)
@click.option(
    "--queue", "to_queue", is_flag=True, help="Leave the regeneration to workers: queue batches."
)
@click.option("--worker", "worker_name", help="Queue them for this worker (implies --queue).")
@replay_options
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@pass_reader
def verify(
    app: App,
    job: int | None,
    image_ids: tuple[int, ...],
    sample: int | None,
    files_only: bool,
    to_queue: bool,
    worker_name: str | None,
    fmt: str,
    **replay_flags: Any,
) -> None:
    """Regenerate images and compare them with their records; one verification row each.

    Checks a JOB's images, or those given with --image. Each original batch is
    replayed once, as recorded (see regenerate). Prints a summary; exit code 0
    when every image is identical or close (within --tolerance; --tolerance 0
    asks for identical), 1 otherwise. Each image's stored file is checked too:
    a verdict names every broken link (file missing, file changed, record
    changed, pixels differ), and a damaged file is never identical.
    --files-only checks the stored PNGs alone (their bytes and decoded pixels
    against the record) and tells pixels changed from file changed (metadata),
    record changed and missing.
    --queue and --worker publish verify batches for the fleet's workers, which
    record their verdicts as they run (see reprogrid verifications); the
    regeneration options go with them, except --device: a worker uses its own.

    \b
    Example:
      reprogrid verify 1
      reprogrid verify 1 --files-only
      reprogrid verify --image 12 --image 13 --alone --tolerance 0
      reprogrid verify 1 --sample 100 --worker gpu-a100-1 --alone
    """
    queued = to_queue or worker_name is not None
    if (job is None) == (not image_ids):
        raise BadInput("job: give a JOB or --image IDs (one of the two)")
    if files_only and replay_flags != REPLAY_DEFAULTS:
        raise BadInput("files-only: regeneration options only apply when images are regenerated")
    if queued and replay_flags["device"] is not None:
        raise BadInput("device: a queued verification runs on its worker's device (see --worker)")
    if files_only and queued:
        raise BadInput("files-only: files are re-hashed here, not queued")
    images = _selected_images(app, job, image_ids, sample)
    if queued:
        with app.db.reads() as session:
            queue = _worker_queue(session, worker_name) if worker_name else "default"
        _queue(app, images, queue, _stored_replay(replay_flags), fmt)
        return
    how = {} if files_only else replay_flags
    rows = app.api.verify(images=images, files_only=files_only, **how)
    _report(rows, fmt, files_only, replay_flags["tolerance"])
    sys.exit(0 if all(row["verdict"] in PASSING for row in rows) else 1)


def _selected_images(
    app: App, job: int | None, image_ids: tuple[int, ...], sample: int | None
) -> list[Any]:
    try:
        images = app.api.images_to_check(job, image_ids, sample)
    except NotFound as exc:
        raise BadInput(f"{'job' if job is not None else 'image'}: {exc}") from None
    if not images:
        raise BadInput(f"job: job {job} has no images yet")
    return images


def _worker_queue(session: Session, name: str) -> str:
    try:
        return worker_queue(session, name)
    except NotFound as exc:
        raise BadInput(f"worker: {exc}") from None


def _stored_replay(flags: dict[str, Any]) -> dict[str, Any] | None:
    """The replay options that differ from the defaults, as a verify batch stores them."""
    changed = {k: v for k, v in flags.items() if k != "device" and v != REPLAY_DEFAULTS[k]}
    return changed or None


def _queue(
    app: App, images: list[Any], queue: str, replay: dict[str, Any] | None, fmt: str
) -> None:
    batch_ids = app.api.queue_verification(images, queue, replay)
    if fmt == "json":
        click.echo(json.dumps({"batch_ids": batch_ids, "images": len(images), "queue": queue}))
    else:
        click.echo(
            f"queued {len(batch_ids)} verify batches ({len(images)} images) on queue {queue!r}"
        )


FILE_COLUMNS = ["image_id", "verdict", "broken", "path", "error"]
REGENERATION_COLUMNS = [
    "image_id",
    "verdict",
    "broken",
    "max_abs_diff",
    "mean_abs_diff",
    "psnr",
    "differs_in",
    "checkpoint_changes",
    "call_differences",
    "error",
]


def _report(rows: list[dict[str, Any]], fmt: str, files_only: bool, tolerance: int) -> None:
    if fmt == "json":
        write_json_array(rows)
        return
    counts = [{"verdict": v, "images": sum(row["verdict"] == v for row in rows)} for v in VERDICTS]
    print_table([c for c in counts if c["images"]], ["verdict", "images"])
    flagged = [row for row in rows if row["verdict"] != IDENTICAL]
    passed = sum(row["verdict"] in PASSING for row in rows)
    if files_only:
        if flagged:
            print_table([_flagged_row(row) for row in flagged], FILE_COLUMNS)
        click.echo(f"{passed} of {len(rows)} files as recorded")
        return
    # An identical image whose call differs is shown too: the difference had no effect here.
    flagged += [
        r for r in rows if r["verdict"] == IDENTICAL and r["details"].get("call_differences")
    ]
    if flagged:
        print_table([_regeneration_row(row) for row in flagged], REGENERATION_COLUMNS)
    click.echo(f"{passed} of {len(rows)} images identical or within {tolerance} levels")


def _regeneration_row(row: dict[str, Any]) -> dict[str, Any]:
    """A verification row's fields as short table cells."""
    from reprogrid.worker.regenerate import describe_changes

    details = row["details"]
    return {
        **_flagged_row(row),
        "mean_abs_diff": _rounded(row["mean_abs_diff"], 4),
        "psnr": _rounded(row["psnr"], 1),
        "differs_in": describe_differences(
            details.get("environment_differences", {}), details.get("imported_differences", ())
        ),
        "checkpoint_changes": describe_changes(details.get("checkpoint_changes", {})),
        "call_differences": "; ".join(details.get("call_differences", [])),
    }


def _flagged_row(row: dict[str, Any]) -> dict[str, Any]:
    """A verification row and its details as one flat row, its broken links as text."""
    details = row["details"]
    return {**row, **details, "broken": ", ".join(details.get("broken", []))}


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


@main.command()
@click.option("--job", type=int, help="Only this job's images.")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.option("--all", "everything", is_flag=True, help="List every environment difference.")
@pass_reader
def verifications(app: App, job: int | None, fmt: str, everything: bool) -> None:
    """Reproducibility report: verdicts per pair of environments (original run, verifier).

    Each image counts once per verifier environment and mode (batch or alone),
    by its latest verification; differs_in lists the environment fields that
    differ between the two (see `reprogrid show` for a single image's checks).

    \b
    Example:
      reprogrid verifications
      reprogrid verifications --job 1 --format json
    """
    rows = app.api.verifications(job)
    for row in rows:
        found = row.pop("differences")
        row["differs_in"] = ", ".join(found) if everything else _ranked_names(found)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no regenerations recorded yet (run reprogrid verify)")
        return
    found = [v for v in FILE_VERDICTS if any(row.get(v) for row in rows)]  # a damaged file
    columns = ["original_env", "verifier_env", "mode", *REGENERATION_VERDICTS, *found, "differs_in"]
    print_table(rows, columns)
