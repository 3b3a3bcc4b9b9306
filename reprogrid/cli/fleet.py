"""Commands for a fleet: submit, scheduler, worker, workers, and cancel/retry (any job)."""

from __future__ import annotations

import json
import logging
import re
import signal
import socket
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from reprogrid.cli.app import App, BadInput, main, pass_app, pass_reader
from reprogrid.cli.jobs import run_here
from reprogrid.cli.output import WORKER_COLUMNS, WORKER_DROP_FIRST, json_text, print_table
from reprogrid.cli.spec_flags import spec_flags, tokenized, validated_spec
from reprogrid.models.queries import NotFound
from reprogrid.scheduler.broker import DEFAULT_QUEUE

if TYPE_CHECKING:
    from reprogrid.scheduler.control import Stall
    from reprogrid.scheduler.dispatch import DispatchLimits, Publish

RELATIVE_TIME = re.compile(r"\+(\d+)([smhd])")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_QUEUE_NAME = 100


def parse_not_before(text: str, now: datetime | None = None) -> datetime:
    """``+30m``/``+2h``/``+1d`` from now, or an ISO 8601 time (local time unless zoned)."""
    now = now or datetime.now(UTC)
    if match := RELATIVE_TIME.fullmatch(text.strip()):
        return now + timedelta(seconds=int(match[1]) * UNIT_SECONDS[match[2]])
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadInput(f"not-before: expected an ISO 8601 time or +N[smhd], got {text!r}") from None
    return when.astimezone(UTC)  # a naive time is taken as local time


def _queue_name(value: str) -> str:
    if not value or len(value) > MAX_QUEUE_NAME or not value.isprintable() or " " in value:
        raise BadInput(f"queue: expected a name of 1 to {MAX_QUEUE_NAME} characters, got {value!r}")
    return value


def _log_to_stderr() -> None:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)


@main.command()
@click.argument("spec", required=False, type=click.Path(path_type=Path))
@spec_flags
@click.option("--priority", type=int, default=0, show_default=True, help="Higher runs first.")
@click.option(
    "--not-before",
    help="Hold the job until then: +30m, +2h, +1d, or ISO 8601 (local time unless zoned).",
)
@click.option(
    "--queue",
    default=DEFAULT_QUEUE,
    show_default=True,
    help="Celery queue of its batches (workers serve one queue each).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON line.")
@pass_app
def submit(
    app: App,
    spec: Path | None,
    priority: int,
    not_before: str | None,
    queue: str,
    as_json: bool,
    **flags: Any,
) -> None:
    """Write a job and all its cells to the database for the scheduler; print its id.

    Validates like `run`; needs no Redis. SPEC is a TOML file; flags set or override
    its fields.

    \b
    Example:
      reprogrid submit examples/tiny.toml --priority 10
      reprogrid submit --prompt "a cat" --seeds 0-999 --not-before +2h
    """
    job_spec = validated_spec(app, spec, flags)
    when = parse_not_before(not_before) if not_before else None
    job_id = app.api.submit(
        job_spec,
        priority=priority,
        not_before=when,
        queue=_queue_name(queue),
        tokens=tokenized(app, job_spec),
    )
    if as_json:
        click.echo(json.dumps({"job_id": job_id, "cells": job_spec.cell_count}))
    else:
        click.echo(
            f"job {job_id} submitted: {job_spec.cell_count} cells on queue {_queue_name(queue)}"
        )


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


@main.command("scheduler")
@click.option("--once", is_flag=True, help="Make one pass, then exit.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds between passes.",
)
@click.option(
    "--max-in-flight",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Batches queued or running per queue (at least two per live worker on it).",
)
@pass_app
def scheduler_command(app: App, once: bool, interval: float, max_in_flight: int) -> None:
    """Dispatch submitted jobs: publish their batches to the workers, a few at a time.

    Highest priority first, then submission order; jobs wait for their
    not-before time; batches whose message or worker was lost are published
    again. Stops cleanly on SIGTERM. Several schedulers may run at once.

    \b
    Example:
      REPROGRID_DB=postgresql://reprogrid:secret@db/reprogrid \\
      REPROGRID_BROKER=redis://:secret@redis:6379/0 reprogrid scheduler
    """
    from reprogrid.models.queries import fleet_id
    from reprogrid.scheduler.broker import BrokerWatch, celery_app, publish_batch
    from reprogrid.scheduler.dispatch import DispatchLimits, run_scheduler

    _log_to_stderr()
    settings = app.settings
    broker = celery_app(settings)
    limits = DispatchLimits(max_in_flight, settings.lease_seconds, settings.max_attempts)
    with app.db.sessions() as session:
        fleet = fleet_id(session)

    def publish(batch_id: int, queue: str) -> None:
        publish_batch(broker, batch_id, queue, fleet)

    if once:
        _dispatch_once(app, publish, limits)
        return
    watch = BrokerWatch(settings.broker_url)
    run_scheduler(app.db, publish, limits, interval, _stop_on_signals(), watch)


def _dispatch_once(app: App, publish: Publish, limits: DispatchLimits) -> None:
    """One pass; a broker or database outage is one line (exit 1)."""
    from reprogrid.scheduler.dispatch import dispatch_once, outage_reason

    try:
        report = dispatch_once(app.db, publish, limits)
    except Exception as exc:
        if (reason := outage_reason(exc)) is None:
            raise
        raise click.ClickException(reason) from None
    click.echo(
        f"published {report.published}, re-published {report.republished},"
        f" failed {report.failed}, cancelled {report.cancelled}"
    )


@main.command("worker")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--queue", default=DEFAULT_QUEUE, show_default=True, help="Queue to serve.")
@click.option("--name", help="Unique worker name. [default: HOST-DEVICE]")
@click.option(
    "--gpu-locks",
    type=click.Path(path_type=Path),
    help="Take the first GPU no other worker holds, by lock files in this folder.",
)
@click.option(
    "--threads", type=int, help="CPU threads for torch (recorded). [env: REPROGRID_THREADS]"
)
@click.option(
    "--exit-on-broker-loss",
    is_flag=True,
    help="When the broker restarts, exit with code 3 for a supervisor (systemd, Docker)"
    " to start the worker again, instead of restarting in place.",
)
@pass_app
def worker_command(
    app: App,
    device: str,
    queue: str,
    name: str | None,
    gpu_locks: Path | None,
    threads: int | None,
    exit_on_broker_loss: bool,
) -> None:
    """Run batches from a queue, one at a time, on one device (start one per GPU).

    When the broker restarts, the worker finishes its batch and restarts itself
    (same pid, one log line, a growing pause if it keeps happening).

    \b
    Example:
      reprogrid worker --device cuda:0 --name gpu-box-0
      CUDA_VISIBLE_DEVICES=1 reprogrid worker --device cuda --queue big
      reprogrid worker --gpu-locks /run/reprogrid   # identical workers, one per GPU
    """
    queue = _queue_name(queue)
    from reprogrid.worker.broker_watch import (
        EXIT_BROKER_RESTARTED,
        exit_for_supervisor,
        restart_in_place,
        restart_now,
    )
    from reprogrid.worker.execute import pick_device
    from reprogrid.worker.gpus import NoFreeGpu, claim_free_gpu
    from reprogrid.worker.heartbeat import NameTaken
    from reprogrid.worker.service import serve

    _log_to_stderr()
    lock = None
    if gpu_locks is not None:
        import torch

        try:
            device, lock = claim_free_gpu(gpu_locks, torch.cuda.device_count())
        except NoFreeGpu as exc:
            raise BadInput(f"gpu-locks: {exc}") from None
    device = pick_device(device)
    name = name or f"{socket.gethostname()}-{device}"
    settings = app.settings.with_overrides(threads=threads)
    give_up = exit_for_supervisor if exit_on_broker_loss else restart_now
    try:
        code = serve(settings, app.db, device, queue, name, give_up)
    except NameTaken as exc:
        raise BadInput(f"name: {exc}") from None
    finally:
        if lock is not None:
            lock.close()
    if code == EXIT_BROKER_RESTARTED and not exit_on_broker_loss:
        app.db.dispose()
        code = restart_in_place(_stop_on_signals())
    sys.exit(code)


@main.command()
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@pass_reader
def workers(app: App, fmt: str) -> None:
    """List live workers: device, queue, current job and batch, loaded checkpoints.

    Below the table, each job that no live worker serves: "job 3 stalled: no
    worker consuming queue default since 02:14".

    \b
    Example:
      reprogrid workers --format json
    """
    rows = app.api.workers()
    if fmt == "json":
        click.echo(json_text(rows))
        return
    print_table(rows, WORKER_COLUMNS, WORKER_DROP_FIRST)
    for job_id, stall in _stalls(app).items():
        click.echo(f"job {job_id} {stall}")


def _stalls(app: App) -> dict[int, Stall]:
    from reprogrid.scheduler.control import stalled_jobs

    with app.db.reads() as session:
        return stalled_jobs(session)


@main.command()
@click.argument("job", type=int)
@pass_reader
def cancel(app: App, job: int) -> None:
    """Cancel a job: waiting batches now, running ones at their next denoising step.

    \b
    Example:
      reprogrid cancel 3
    """
    change = _change_job(app.api.cancel, job)
    click.echo(
        f"job {job} {change.status}: {change.cells} cells cancelled,"
        f" {change.running_batches} running batches told to stop"
    )


@main.command()
@click.argument("job", type=int)
@click.option("--device", default="auto", show_default=True, help="For a job run here.")
@click.option("--threads", type=int, help="For a job run here. [env: REPROGRID_THREADS]")
@click.option("--json", "as_json", is_flag=True, help="For a job run here: one JSON line.")
@pass_reader
def retry(app: App, job: int, device: str, threads: int | None, as_json: bool) -> None:
    """Queue every cell of a job that is not done again, in its original batches.

    A submitted job goes back to the scheduler; a job made by `run` (stopped by
    Ctrl-C, a crash or failures) runs again here.

    \b
    Example:
      reprogrid retry 3
    """
    from reprogrid.models import Job

    change = _change_job(app.api.retry, job)
    with app.db.sessions() as session:
        embedded = session.get(Job, job).queue is None
    if embedded and change.cells:
        run_here(app, job, change.cells, device, threads, as_json)
    elif as_json:
        click.echo(json.dumps({"job_id": job, "status": change.status, "requeued": change.cells}))
    else:
        click.echo(f"job {job} {change.status}: {change.cells} cells to run")


def _change_job(change, job_id: int):
    try:
        return change(job_id)
    except NotFound as exc:
        raise BadInput(f"job: {exc}") from None
