"""Commands for jobs in this process: run, status, query, show."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from reprogrid.cli.app import App, BadInput, main, pass_app
from reprogrid.cli.output import (
    WORKER_COLUMNS,
    duration_text,
    print_table,
    text_lines,
    write_csv,
    write_json_array,
)
from reprogrid.cli.spec_flags import spec_flags, validated_spec
from reprogrid.models.queries import (
    QUERY_COLUMNS,
    SORT_KEYS,
    CellFilter,
    NotFound,
    find_image,
    image_record,
    job_progress,
    live_workers,
    query_cells,
)
from reprogrid.models.verifications import VERDICTS

RUN_OPTIONS: list[Callable[[Callable], Callable]] = [
    click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto."),
    click.option(
        "--threads", type=int, help="CPU threads for torch (recorded). [env: REPROGRID_THREADS]"
    ),
    click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Progress as JSON lines on stderr; the result as one JSON line.",
    ),
]


def run_options(command: Callable) -> Callable:
    """Add --device, --threads and --json, the options of every command that runs a job here."""
    for option in reversed(RUN_OPTIONS):
        command = option(command)
    return command


@main.command()
@click.argument("spec", required=False, type=click.Path(path_type=Path))
@spec_flags
@run_options
@pass_app
def run(
    app: App, spec: Path | None, device: str, threads: int | None, as_json: bool, **flags: Any
) -> None:
    """Run a whole job in this process (no Redis needed) and print its id.

    SPEC is a TOML file; flags set or override its fields.

    \b
    Example:
      reprogrid run examples/tiny.toml
      reprogrid run --prompt "a cat" --prompt "a dog" --seeds 0-7 --width 64 --height 64
    """
    job_spec = validated_spec(app.settings, spec, flags)
    from reprogrid.scheduler.jobs import create_job

    job_id = create_job(app.db, job_spec)
    run_here(app, job_id, job_spec.cell_count, device, threads, as_json)


def run_here(
    app: App, job_id: int, cells: int, device: str, threads: int | None, as_json: bool
) -> None:
    """Execute a created job in this process and print its summary; exit 1 unless it is done."""
    from reprogrid.scheduler.control import embedded_run_name
    from reprogrid.worker.embedded import run_job
    from reprogrid.worker.execute import WorkerContext, pick_device

    settings = app.settings.with_overrides(threads=threads)
    ctx = WorkerContext.start(settings, app.db, pick_device(device), embedded_run_name())
    started = time.perf_counter()
    try:
        with JobProgress(job_id, cells, json_lines=as_json) as progress:
            status = run_job(ctx, job_id, on_batch=progress.advance)
    except KeyboardInterrupt:
        click.echo(f"job {job_id} interrupted; resume it with: reprogrid retry {job_id}", err=True)
        sys.exit(130)
    seconds = time.perf_counter() - started
    (counts,) = _progress_rows(app, job_id)
    summary = {
        **counts,
        "seconds": round(seconds, 3),
        "images_per_second": round(counts["done"] / seconds, 3),
    }
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(
            f"job {job_id} {status}: {counts['done']} of {counts['cells']} images"
            f" in {seconds:.1f} s ({summary['images_per_second']:.2f} images/s),"
            f" {counts['failed']} failed"
        )
    if status != "done":
        sys.exit(1)


class JobProgress:
    """Progress of a long command, on stderr: a bar (images done, images/s, ETA) on a
    terminal, JSON lines with ``json_lines``, nothing otherwise."""

    def __init__(
        self, job_id: int | None, total: int, enabled: bool = True, json_lines: bool = False
    ) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("all jobs" if job_id is None else f"job {job_id}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.2f} images/s"),
            TimeRemainingColumn(),
            console=console,
            disable=json_lines or not (enabled and console.is_terminal),
        )
        self.task = self.progress.add_task("cells", total=total, rate=0.0)
        self.job_id, self.total, self.json_lines = job_id, total, json_lines
        self.done = 0
        self.started = time.perf_counter()

    def __enter__(self) -> JobProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.stop()

    def advance(self, outcome: Any) -> None:
        """Count the images of a finished batch."""
        self.add(outcome.images)

    def add(self, images: int) -> None:
        """Count ``images`` more images done."""
        self.done += images
        rate = self.done / max(time.perf_counter() - self.started, 1e-9)
        self.progress.update(self.task, completed=self.done, rate=rate)
        if self.json_lines:
            line = {
                "event": "progress",
                "job_id": self.job_id,
                "done": self.done,
                "total": self.total,
                "images_per_second": round(rate, 3),
            }
            click.echo(json.dumps(line), err=True)


def _progress_rows(app: App, job_id: int | None) -> list[dict[str, Any]]:
    with app.db.reads() as session:
        try:
            return job_progress(session, job_id)
        except NotFound as exc:
            raise click.ClickException(str(exc)) from None


@main.command()
@click.argument("job", type=int, required=False)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@pass_app
def status(app: App, job: int | None, fmt: str) -> None:
    """Show every job's progress (ETA from recent throughput), or one job's, and live workers.

    The JSON form lists the jobs only; `reprogrid workers` lists the workers.

    \b
    Example:
      reprogrid status
      reprogrid status 3 --format json
    """
    rows = _progress_rows(app, job)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        row["eta"] = duration_text(row["eta_seconds"])
    columns = [
        "job_id",
        "name",
        "status",
        "cells",
        "done",
        "failed",
        "queued",
        "running",
        "cancelled",
        "eta",
        "model",
    ]
    print_table(rows, columns)
    with app.db.reads() as session:
        workers = live_workers(session)
    if workers:
        print_table(workers, WORKER_COLUMNS)


@main.command()
@click.option("--job", type=int, help="Only this job.")
@click.option("--prompt", help="Prompt contains this text.")
@click.option("--seed", type=click.IntRange(0, 2**64 - 1), help="Only this seed.")
@click.option("--model", help="Model as written in the spec, e.g. builtin:tiny.")
@click.option(
    "--status",
    type=click.Choice(["queued", "running", "done", "failed", "cancelled"]),
    help="Only cells in this state.",
)
@click.option(
    "--verdict",
    type=click.Choice(VERDICTS),
    help="Only images with a verification of this verdict (see reprogrid verify).",
)
@click.option(
    "--since",
    callback=lambda _ctx, _param, value: parse_since(value),
    help="Only cells whose image was made (or, without one, whose job was submitted)"
    " at or after this: 2h, 30m, 3d, or a date/time like 2025-05-01T06:00 (local time"
    " unless a zone is given).",
)
@click.option(
    "--sort",
    type=click.Choice([*SORT_KEYS, *(f"-{key}" for key in SORT_KEYS)]),
    default="grid",
    show_default=True,
    help="Order by this field (time: when the image was made); a leading - reverses.",
)
@click.option("--limit", type=click.IntRange(min=1), help="At most this many rows.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
)
@pass_app
def query(app: App, fmt: str, **filters: Any) -> None:
    """List cells and their images, filtered; one row per cell.

    \b
    Example:
      reprogrid query --job 1 --prompt fox --format json
      reprogrid query --status failed --format csv > failed.csv
      reprogrid query --job 1 --verdict different
      reprogrid query --since 12h --sort -time --limit 20
    """
    with app.db.reads() as session:
        rows = query_cells(session, CellFilter(**filters), app.settings.store)
        if fmt == "json":
            write_json_array(rows)
        elif fmt == "csv":
            write_csv(rows, QUERY_COLUMNS)
        else:
            print_table(
                list(rows),
                ["image_id", "job_id", "status", "prompt", "seed", "params", "pixel_sha256"],
            )


DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str | None) -> datetime | None:
    """``--since``: a duration back from now (30m, 2h, 3d) or an ISO date/time, as UTC."""
    if value is None:
        return None
    number, unit = value[:-1], value[-1:]
    if number.isdigit() and unit in DURATION_UNITS:
        return datetime.now(UTC) - timedelta(**{DURATION_UNITS[unit]: int(number)})
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise BadInput(
            f"since: expected a duration like 2h or a date/time like 2025-05-01T06:00,"
            f" got {value!r}"
        ) from None
    return when.astimezone(UTC)  # a naive time is taken as local time


@main.command()
@click.argument("image")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@pass_app
def show(app: App, image: str, fmt: str) -> None:
    """Show everything recorded about one image: IMAGE is an id or sha:PREFIX.

    The prefix may be of the pixel, PNG or recipe hash (at least 4 hex digits).

    \b
    Example:
      reprogrid show 12
      reprogrid show 3fa9c2
    """
    with app.db.reads() as session:
        try:
            record = image_record(session, find_image(session, image), app.settings.store)
        except NotFound as exc:
            raise click.ClickException(str(exc)) from None
    if fmt == "json":
        click.echo(json.dumps(record, indent=2))
    else:
        for line in text_lines(record):
            click.echo(line)
