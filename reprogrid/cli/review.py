"""Commands for the morning review: grid, report, export, refine."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import click

from reprogrid.cli.app import App, BadInput, main, pass_app
from reprogrid.cli.jobs import JobProgress, run_here, run_options
from reprogrid.cli.output import write_csv, write_json_lines
from reprogrid.cli.spec_flags import parse_setting
from reprogrid.models.queries import NotFound, find_image
from reprogrid.review.layout import ReviewError, job_sheets
from reprogrid.scheduler.spec import SpecError


@contextlib.contextmanager
def _review_errors() -> Iterator[None]:
    """Bad options exit 2 (``Error: field: message``); a missing job or image exits 1."""
    try:
        yield
    except (ReviewError, SpecError) as exc:
        raise BadInput(str(exc)) from None
    except NotFound as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.argument("job", type=int)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="The PNG to write; with further axes, one file per combination named after it.",
)
@click.option("--rows", help="The axis down the side. [default: prompt]")
@click.option("--cols", help="The axis across the top. [default: seed]")
@click.option(
    "--thumb", type=int, help="Tile size in pixels. [default: the image size, at most 256]"
)
@pass_app
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
    from reprogrid.review.sheet import write_sheets

    with _review_errors():
        with app.db.sessions() as session:
            sheets = job_sheets(session, job, app.settings.store, rows, cols)
        paths = write_sheets(sheets, output, thumb)
    for path in paths:
        click.echo(str(path))
