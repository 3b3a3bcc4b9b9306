"""Commands for the morning review: grid, report, export, refine."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from reprogrid.cli.app import App, BadInput, main, pass_app, pass_reader
from reprogrid.cli.jobs import JobProgress, run_here, run_options
from reprogrid.cli.spec_flags import parse_setting
from reprogrid.models.queries import NotFound
from reprogrid.review.layout import ReviewError
from reprogrid.scheduler.spec import SpecError


@contextlib.contextmanager
def _review_errors() -> Iterator[None]:
    """Bad options and a missing job or image: one line, exit 2."""
    try:
        yield
    except (ReviewError, SpecError, NotFound) as exc:
        raise BadInput(str(exc)) from None


@main.command()
@click.argument("job", type=int)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="The PNG file to write; with further axes, one file per combination named after it.",
)
@click.option("--rows", help="The axis down the side. [default: prompt]")
@click.option("--cols", help="The axis across the top. [default: seed]")
@click.option(
    "--thumb", type=int, help="Tile size in pixels. [default: the image size, at most 256]"
)
@pass_reader
def grid(
    app: App, job: int, output: Path, rows: str | None, cols: str | None, thumb: int | None
) -> None:
    """Draw a job as a labelled contact sheet (prompts down, seeds across) and print its path.

    Axes are prompt, seed and the job's [axes] (sampler, steps, guidance_scale...).
    Every combination of the axes that are neither --rows nor --cols gets its own
    file, e.g. sheet-guidance_scale=5.0.png. Cells without an image are crossed out
    and marked failed, queued, running or cancelled. A refine job's sheet starts
    with its parent image.

    \b
    Example:
      reprogrid grid 1 -o sheet.png
      reprogrid grid 1 -o sheet.png --rows guidance_scale --cols seed --thumb 128
    """
    with _review_errors():
        paths = app.api.grid(job, output, rows=rows, cols=cols, thumb=thumb)
    for path in paths:
        click.echo(str(path))


# The report page's options, shared with ``reprogrid serve``.
thumb_option = click.option(
    "--thumb", type=int, help="Thumbnail size in pixels. [default: the image size, at most 160]"
)
page_tiles_option = click.option(
    "--page-tiles",
    type=int,
    default=1000,
    show_default=True,
    help="Tiles per data file, and the most the page shows at once.",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Progress as JSON lines on stderr."
)


@main.command()
@click.argument("job", type=int)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Folder to write index.html, reprogrid.js, data/ and thumbs/ into.",
)
@thumb_option
@page_tiles_option
@click.option(
    "--standalone",
    is_flag=True,
    help="Put a thumbnail of every image in the report and link the originals by absolute"
    " path: for a report moved without its store.",
)
@json_option
@pass_reader
def report(
    app: App,
    job: int,
    output: Path,
    thumb: int | None,
    page_tiles: int,
    standalone: bool,
    as_json: bool,
) -> None:
    """Write a job's HTML report, viewable offline, and print the path of its index page.

    The page shows the job's summary (cells, failures, wall time, images/s,
    workers, devices, checkpoint hashes, library versions), an interactive grid,
    the failures with their error text, the warnings grouped with their counts,
    the pipeline calls and the verification verdicts. In the grid any axis of the
    job goes on rows, columns or pages, the others fixed by selectors; a slider
    sizes the tiles, a click zooms one, two picked tiles are compared with the
    fields that differ highlighted, and each tile's recipe, call, hashes and
    verdict are one click away. It works offline (vanilla JavaScript, the job's
    data in script files of --page-tiles tiles, loaded as a view needs them) and
    links to the PNGs in the store by relative paths: move the report and the
    store together and it still works. Nothing is copied but thumbnails of images
    larger than --thumb. `reprogrid serve JOB` serves the same page live.

    \b
    Example:
      reprogrid report 1 -o report-1 && xdg-open report-1/index.html
    """
    with (
        _review_errors(),
        JobProgress(job, _images_of(app, job), json_lines=as_json) as progress,
    ):
        written = app.api.report(
            job,
            output,
            thumb=thumb,
            page_tiles=page_tiles,
            standalone=standalone,
            on_images=progress.add,
        )
    if written.absolute_links and not standalone:
        click.echo(
            f"report: {written.absolute_links} images have no relative path from {output}"
            " (another drive): the report holds their thumbnails and links to them by"
            " absolute path",
            err=True,
        )
    click.echo(str(written.index))


@main.command()
@click.argument("job", type=int, required=False)
@click.option("--all", "all_jobs", is_flag=True, help="Export the images of every job.")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="File to write. [default: stdout]",
)
@json_option
@pass_reader
def export(
    app: App, job: int | None, all_jobs: bool, fmt: str, output: Path | None, as_json: bool
) -> None:
    """Write every image record of a job, one row per image, recipe fields as columns.

    Rows are streamed: a million images export in constant memory. The columns
    are listed in docs/schema.md.

    \b
    Example:
      reprogrid export 1 --format csv -o job1.csv
      reprogrid export --all --format jsonl > images.jsonl
    """
    if (job is None) != all_jobs:
        raise BadInput("job: give a job id or --all (not both)")
    total = _images_of(app, job)
    to_terminal = output is None and sys.stdout.isatty()
    with (
        _written(output),
        JobProgress(job, total, enabled=not to_terminal, json_lines=as_json) as progress,
    ):
        if output is None:
            app.api.export(sys.stdout, job, fmt=fmt, on_rows=progress.add)
        else:
            _check_writable(output)
            app.api.export(output, job, fmt=fmt, on_rows=progress.add)


def _images_of(app: App, job: int | None) -> int:
    """How many images the job has (None: every job); a job that does not exist is bad
    input."""
    try:
        return app.api.count_images(job)
    except NotFound as exc:
        raise BadInput(f"job: {exc}") from None


@contextlib.contextmanager
def _written(output: Path | None) -> Iterator[None]:
    """A write that fails midway (a full disk, ``/dev/full``): one line, exit 1."""
    try:
        yield
    except OSError as exc:
        where = "stdout" if output is None else repr(str(output))
        raise click.ClickException(f"output: cannot write {where}: {exc.strerror}") from None


def _check_writable(output: Path) -> None:
    """An output file that cannot be opened (a missing folder, no permission) is bad input,
    found before anything is read."""
    try:
        output.open("a").close()
    except OSError as exc:
        raise BadInput(f"output: cannot write {str(output)!r}: {exc.strerror}") from None


@main.command()
@click.argument("image")
@click.option(
    "--append",
    "appends",
    multiple=True,
    help="Text added to the image's prompt: one refined prompt per --append (repeatable).",
)
@click.option(
    "--set",
    "changes",
    multiple=True,
    help="A recipe field to change, FIELD=VALUE, e.g. guidance_scale=9 (repeatable).",
)
@click.option("--run", "run_now", is_flag=True, help="Run the job here instead of queueing it.")
@run_options
@pass_app
def refine(
    app: App,
    image: str,
    appends: tuple[str, ...],
    changes: tuple[str, ...],
    run_now: bool,
    device: str,
    threads: int | None,
    as_json: bool,
) -> None:
    """Make a job that keeps every recipe field of IMAGE but the changed ones.

    IMAGE is an image id or sha:PREFIX of a hash. The job has the image's seed, model,
    sampler, steps, size and guidance; its prompts are the image's prompt with
    each --append added. Without --run it is queued for workers; with --run it
    runs here like `reprogrid run`. Its contact sheet and report show the parent
    image in their first row, above its variants.

    \b
    Example:
      reprogrid refine 12 --append ", highly realistic" --append ", artsy" --run
      reprogrid refine 3fa9c2 --append ", at night" --set guidance_scale=9
    """
    settings = dict(parse_setting(text) for text in changes)
    with _review_errors():
        refined = app.api.refine(image, appends, settings)
    job_id, spec = refined.job_id, refined.spec
    if run_now:
        run_here(app, job_id, spec.cell_count, device, threads, as_json)
    elif as_json:
        click.echo(json.dumps({"job_id": job_id, "status": "queued", "cells": spec.cell_count}))
    else:
        click.echo(
            f"job {job_id} queued: {spec.cell_count} cells refining image {refined.parent_image_id}"
        )
