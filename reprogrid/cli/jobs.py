"""Commands for jobs in this process: run, status, query, show."""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from reprogrid.cli.app import App, BadInput, main, pass_app, pass_reader
from reprogrid.cli.output import (
    WORKER_COLUMNS,
    WORKER_DROP_FIRST,
    console,
    duration_text,
    json_text,
    print_table,
    rate_text,
    stdout_console,
    table_of,
    text_lines,
    write_json_array,
)
from reprogrid.cli.spec_flags import spec_flags, tokenized, validated_spec
from reprogrid.models.queries import QUERY_COLUMNS, SORT_KEYS, NotFound
from reprogrid.models.tables import FINISHED
from reprogrid.models.verifications import VERDICTS
from reprogrid.review.export import json_default, write_csv

if TYPE_CHECKING:
    from rich.console import Group
    from rich.progress import Progress

# Signals that stop a job run here as Ctrl-C does (SIGINT is Python's KeyboardInterrupt).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)

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
    job_spec = validated_spec(app, spec, flags)
    job_id = app.api.create(job_spec, tokens=tokenized(app, job_spec))
    run_here(app, job_id, job_spec.cell_count, device, threads, as_json)


class Stopped(BaseException):
    """SIGTERM or SIGHUP arrived: ``run`` stops as it does on Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def stopped_by_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP (``timeout``, systemd, Docker, a closed terminal) into
    :class:`Stopped` while a job runs here, as SIGINT is a KeyboardInterrupt."""

    def stop(signum: int, _frame: object) -> None:
        raise Stopped(signum)

    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_here(
    app: App, job_id: int, cells: int, device: str, threads: int | None, as_json: bool
) -> None:
    """Execute a created job in this process and print its summary; exit 1 unless it is done.

    Ctrl-C, SIGTERM and SIGHUP give the claims back and exit 128 + the signal's
    number; a failure that persists (see ``worker.embedded``) exits 1. Each says
    in one line how many images are recorded and how to resume.
    """
    from reprogrid.worker.embedded import RunStopped

    (row,) = _progress_rows(app, job_id)
    progress = JobProgress(job_id, cells, json_lines=as_json, loading=row["model"])
    try:
        with stopped_by_signals(), progress:
            result = app.api.run_job(
                job_id, device=device, threads=threads, on_batch=progress.advance
            )
            progress.finish(result.done, result.images_per_second)
    except KeyboardInterrupt:
        _stop(app, job_id, "interrupted", 128 + signal.SIGINT)
    except Stopped as stop:
        _stop(app, job_id, f"stopped by {stop}", 128 + stop.signum)
    except RunStopped as failure:
        _stop(app, job_id, f"stopped: {failure.error}", 1)
    if as_json:
        (counts,) = _progress_rows(app, job_id)
        summary = {
            **counts,
            "seconds": round(result.seconds, 3),
            "images_per_second": round(result.images_per_second, 3),
        }
        click.echo(json.dumps(summary, default=json_default))
    else:
        click.echo(
            f"job {job_id} {result.status}: {result.done} of {result.cells} images"
            f" in {result.seconds:.1f} s ({rate_text(result.images_per_second)} images/s),"
            f" {result.failed} failed"
        )
    if result.status != "done":
        sys.exit(1)


class JobProgress:
    """Progress of a long command, on stderr: a bar (images done, images/s, ETA) on a
    terminal, JSON lines with ``json_lines``, nothing otherwise.

    With ``loading`` (a checkpoint reference) the bar says "loading <model>..." until
    the first images are in, instead of a rate of zero.
    """

    def __init__(
        self,
        job_id: int | None,
        total: int,
        enabled: bool = True,
        json_lines: bool = False,
        loading: str | None = None,
    ) -> None:
        self.label = "all jobs" if job_id is None else f"job {job_id}"
        # rich only for a bar someone sees: a pipe or a file gets none, and no import.
        show = enabled and not json_lines and sys.stderr.isatty()
        waiting = f"loading {loading}..." if loading else ""
        self.bar = _progress_bar(self.label, total, waiting) if show else None
        self.job_id, self.total, self.json_lines = job_id, total, json_lines
        self.done = 0
        self.started = time.perf_counter()

    def __enter__(self) -> JobProgress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def advance(self, outcome: Any) -> None:
        """Count the images of a finished batch."""
        self.add(outcome.images)

    def add(self, images: int) -> None:
        """Count ``images`` more images done."""
        self.done += images
        self._show(self.done / max(time.perf_counter() - self.started, 1e-9))

    def finish(self, done: int, images_per_second: float) -> None:
        """End on the figures of the summary line, so that one rate is printed."""
        self.done = done
        self._show(images_per_second)

    def _show(self, rate: float) -> None:
        if self.bar is not None:
            self.bar.update(
                self.bar.task_ids[0],
                completed=self.done,
                description=self.label,
                rate=f"{rate_text(rate)} images/s",
            )
        if self.json_lines:
            line = {
                "event": "progress",
                "job_id": self.job_id,
                "done": self.done,
                "total": self.total,
                "images_per_second": round(rate, 3),
            }
            click.echo(json.dumps(line), err=True)


def _stop(app: App, job_id: int, why: str, exit_code: int) -> NoReturn:
    """Say why the run ended, how far it got and how to resume it, in one line; exit."""
    try:
        (counts,) = app.api.progress(job_id)
        recorded = f"{counts['done']} of {counts['cells']} images recorded"
    except Exception:  # the database may be what failed
        recorded = "images recorded: unknown"
    click.echo(
        f"job {job_id} {why}; {recorded}; resume it with: reprogrid retry {job_id}", err=True
    )
    sys.exit(exit_code)


def _progress_bar(label: str, total: int, waiting: str) -> Progress:
    """A rich bar on stderr: images done, images/s (``waiting`` until the first), time left."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=console(sys.stderr),
    )
    bar.add_task(label, total=total, rate=waiting)
    return bar


def _progress_rows(app: App, job_id: int | None) -> list[dict[str, Any]]:
    try:
        return app.api.progress(job_id)
    except NotFound as exc:
        raise BadInput(f"job: {exc}") from None


JOB_COLUMNS = [
    *("job_id", "name", "status", "cells", "done", "failed", "queued", "running"),
    *("cancelled", "images/s", "eta", "model"),
]
# Left out first, in this order, where a terminal is too narrow for all of them.
JOB_DROP_FIRST = ["cancelled", "queued", "running", "name", "model"]
QUERY_TABLE_COLUMNS = [
    *("image_id", "job_id", "status", "prompt", "seed", "params"),
    *("pixel_sha256", "truncated", "nsfw"),
]
QUERY_DROP_FIRST = ["nsfw", "truncated", "job_id", "pixel_sha256"]


@main.command()
@click.argument("job", type=int, required=False)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.option(
    "--watch",
    is_flag=True,
    help="Refresh the tables in place until Ctrl-C (or until JOB is finished).",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.2),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes with --watch.",
)
@pass_reader
def status(app: App, job: int | None, fmt: str, watch: bool, interval: float) -> None:
    """Show every job's progress (ETA from recent throughput), or one job's, and live workers.

    The JSON form lists the jobs only; `reprogrid workers` lists the workers.

    \b
    Example:
      reprogrid status
      reprogrid status 3 --format json
      reprogrid status --watch
    """
    if fmt == "json":
        if watch:
            raise BadInput("watch: --watch draws tables; leave out --format json")
        click.echo(json_text(_progress_rows(app, job)))
    elif watch:
        _watch_status(app, job, interval)
    else:
        stdout_console().print(_status_tables(app, job))


def _status_tables(app: App, job: int | None) -> Group:
    """The jobs table, and the live workers' below it when there are any."""
    from rich.console import Group
    from rich.text import Text

    rows = _progress_rows(app, job)
    for row in rows:
        row["eta"] = row["stalled"] or duration_text(row["eta_seconds"])
        row["images/s"] = rate_text(row["images_per_second"])
    workers = app.api.workers()
    tables: list[Any] = [table_of(rows, JOB_COLUMNS, JOB_DROP_FIRST)]
    tables += [Text(line) for row in rows if (line := _retrying_text(row))]
    if workers:
        tables.append(table_of(workers, WORKER_COLUMNS, WORKER_DROP_FIRST))
    return Group(*tables)


def _retrying_text(row: dict[str, Any]) -> str | None:
    """ "job 1: 2 batches to run again after: OSError: ... No space left on device"."""
    if not row["retrying"] or row["status"] in FINISHED:
        return None
    batches = "1 batch" if row["retrying"] == 1 else f"{row['retrying']} batches"
    error = (row["retry_error"] or "").splitlines()[0] if row["retry_error"] else "an error"
    return f"job {row['job_id']}: {batches} to run again after {error}"


def _watch_status(app: App, job: int | None, interval: float) -> None:
    """Redraw the status tables in place every ``interval`` seconds."""
    from rich.live import Live

    with Live(_status_tables(app, job), console=stdout_console(), auto_refresh=False) as live:
        try:
            while not (job is not None and _progress_rows(app, job)[0]["status"] in FINISHED):
                time.sleep(interval)
                live.update(_status_tables(app, job), refresh=True)
        except KeyboardInterrupt:
            pass


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
    "--truncated/--not-truncated",
    default=None,
    help="Only cells whose prompt or negative prompt a text encoder cuts (or does not).",
)
@click.option(
    "--nsfw/--not-nsfw",
    default=None,
    help="Only images the checkpoint's safety checker flagged (or passed).",
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
@pass_reader
def query(app: App, fmt: str, **filters: Any) -> None:
    """List cells and their images, filtered; one row per cell.

    \b
    Example:
      reprogrid query --job 1 --prompt fox --format json
      reprogrid query --status failed --format csv > failed.csv
      reprogrid query --job 1 --verdict different
      reprogrid query --since 12h --sort -time --limit 20
    """
    rows = app.api.query(**filters)
    if fmt == "json":
        write_json_array(rows)
    elif fmt == "csv":
        write_csv(rows, QUERY_COLUMNS, sys.stdout)
    else:
        print_table(list(rows), QUERY_TABLE_COLUMNS, QUERY_DROP_FIRST)


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
@pass_reader
def show(app: App, image: str, fmt: str) -> None:
    """Show everything recorded about one image: IMAGE is an id or sha:PREFIX.

    The prefix may be of the pixel, PNG or recipe hash (at least 4 hex digits).

    \b
    Example:
      reprogrid show 12
      reprogrid show 3fa9c2
    """
    try:
        record = app.api.record(image)
    except NotFound as exc:
        raise BadInput(f"image: {exc}") from None
    if fmt == "json":
        click.echo(json.dumps(record, indent=2))
    else:
        for line in text_lines(_short_packages(record)):
            click.echo(line)


def _short_packages(record: dict[str, Any]) -> dict[str, Any]:
    """The record with its environment's package list as one line (the JSON has them all)."""
    environment = dict(record["environment"])
    for name in ("packages", "package_sources"):
        if name in environment:
            environment[name] = (
                f"{len(environment[name])} (reprogrid environment"
                f" {environment['environment_id']} lists them)"
            )
    return {**record, "environment": environment}
