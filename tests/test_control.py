"""Submitting, cancelling and retrying jobs, and splitting a batch that ran out of memory.

Embedded jobs (made by ``reprogrid run``) are cancelled and retried with the
same commands as submitted ones; these tests use SQLite and no broker.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from processes import (
    Fleet,
    cell_counts,
    generating,
    image_batches,
    interrupted_by_cancel,
    store_files,
    wait_until,
)
from sqlalchemy import func, select

from reprogrid.cli.app import BadInput
from reprogrid.cli.fleet import parse_not_before
from reprogrid.config import Settings
from reprogrid.models import Batch, Cell, Database, Image, Job
from reprogrid.scheduler.control import retry_job
from reprogrid.scheduler.jobs import create_job, form_batches
from reprogrid.scheduler.spec import validate_spec
from reprogrid.worker import records
from reprogrid.worker.embedded import run_job
from reprogrid.worker.execute import WorkerContext

TINY = {"model": "builtin:tiny", "prompts": ["a red fox"], "width": 64, "height": 64}


def test_submit_writes_the_job_and_every_cell_without_a_broker(cli, db: Database) -> None:
    result = cli(
        "submit",
        "--prompt",
        "a red fox",
        "--seeds",
        "0-99",
        "--priority",
        "3",
        "--queue",
        "big",
        "--json",
    )
    assert result.exit_code == 0, result.output
    job_id = json.loads(result.output)["job_id"]
    with db.sessions() as session:
        job = session.get(Job, job_id)
        assert (job.status, job.priority, job.queue, job.not_before) == ("queued", 3, "big", None)
        assert session.scalar(select(func.count()).where(Cell.job_id == job_id)) == 100
        assert session.scalar(select(func.count()).select_from(Batch)) == 0


def test_submit_with_a_bad_not_before_says_so_and_writes_nothing(cli, db: Database) -> None:
    result = cli("submit", "--prompt", "a red fox", "--not-before", "tomorrow")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: not-before: expected an ISO 8601 time or +N[smhd], got 'tomorrow'"
    ]
    with db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0


def test_not_before_reads_relative_times_and_iso_8601() -> None:
    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    assert parse_not_before("+90s", now) == now + timedelta(seconds=90)
    assert parse_not_before("+2h", now) == now + timedelta(hours=2)
    assert parse_not_before("+1d", now) == now + timedelta(days=1)
    assert parse_not_before("2026-12-01T22:00:00+01:00") == datetime(2026, 12, 1, 21, tzinfo=UTC)
    naive = datetime(2026, 12, 1, 22, 0)
    assert parse_not_before("2026-12-01T22:00") == naive.astimezone(UTC)
    with pytest.raises(BadInput):
        parse_not_before("+2 weeks")


def test_cancel_and_retry_an_unknown_job_is_bad_input(cli, db: Database) -> None:
    for command in ("cancel", "retry"):
        result = cli(command, "42")
        assert result.exit_code == 2
        assert result.output.strip() == "Error: job: no job 42"


def test_cancel_interrupts_an_embedded_run_between_denoising_steps(
    db: Database, sqlite_url: str, tmp_path: Path
) -> None:
    fleet = Fleet(sqlite_url, "redis://127.0.0.1:1/0", tmp_path)  # no broker is needed
    # Far more steps than any machine runs before the cancel lands: the batch is mid-way.
    run = fleet.start(
        "run", "--prompt", "a red fox", "--seeds", "0-3", "--steps", "20000", "--device", "cpu"
    )
    try:
        batch = wait_until(
            lambda: (name := _run_worker(db)) and generating(db, name), 120, "the run", fleet
        )
        cancel = fleet.command("cancel", "1")
        assert cancel.returncode == 0, cancel.stderr
        assert run.wait(timeout=60) == 1
    finally:
        fleet.stop()
    assert "job 1 cancelled: 0 of 4 images" in fleet.logs()
    assert cell_counts(db, 1) == {"cancelled": 4}
    with db.sessions() as session:
        assert session.get(Batch, batch).status == "cancelled"
    assert store_files(tmp_path / "store") == []


def test_retry_runs_a_batch_cancelled_mid_run_here_to_the_end(cli, db: Database) -> None:
    job_id = create_job(db, validate_spec({**TINY, "seeds": "0-3", "steps": 2}, 100))
    batch = interrupted_by_cancel(db, job_id)
    result = cli("retry", str(job_id), "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"job {job_id} done: 4 of 4 images")
    assert cell_counts(db, job_id) == {"done": 4}
    assert image_batches(db, job_id) == {batch}


def test_a_batch_failing_every_attempt_fails_its_cells_with_the_error_then_retry_runs_it(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    job_id = create_job(db, validate_spec({**TINY, "seeds": "0-3", "steps": 2}, 100))
    settings.store.write_text("a file where the store should be")  # OSError on every write
    transient_twice = settings.with_overrides(max_transient_attempts=2, retry_delay_seconds=0)
    ctx = WorkerContext.start(transient_twice, db, "cpu", "w")
    assert run_job(ctx, job_id) == "failed"
    with db.sessions() as session:
        batch = session.scalar(select(Batch))
        cells = session.scalars(select(Cell)).all()
    assert (batch.status, batch.attempts) == ("failed", 2)
    assert {c.status for c in cells} == {"failed"}
    assert all(c.error.startswith(("FileExistsError", "NotADirectoryError")) for c in cells)
    settings.store.unlink()
    with db.sessions() as session:
        assert retry_job(session, job_id).cells == 4
    assert run_job(ctx, job_id) == "done"


def test_a_batch_out_of_gpu_memory_is_replaced_by_its_halves_in_order(
    db: Database, settings: Settings
) -> None:
    job_id = create_job(db, validate_spec({**TINY, "seeds": "0-3", "steps": 2}, 100))
    with db.sessions() as session:
        (batch_id,) = form_batches(session, job_id)
        session.commit()
    with db.sessions() as session:
        claim = records.claim_batch(session, batch_id, "w", 60)
        halves = records.split_batch(session, claim, "w", "OutOfMemoryError: CUDA out of memory")
    cell_ids = [cell_id for cell_id, _, _ in claim.cells]
    with db.sessions() as session:
        assert session.get(Batch, batch_id).status == "split"
        assert [session.get(Batch, h).cell_ids for h in halves] == [cell_ids[:2], cell_ids[2:]]
        assert {c.status for c in session.scalars(select(Cell))} == {"queued"}
    assert run_job(WorkerContext.start(settings, db, "cpu", "w"), job_id) == "done"
    with db.sessions() as session:
        placed = session.execute(
            select(Image.cell_id, Image.batch_id, Image.index_in_batch, Image.batch_size)
        ).all()
    assert sorted(placed) == [
        (cell_ids[0], halves[0], 0, 2),
        (cell_ids[1], halves[0], 1, 2),
        (cell_ids[2], halves[1], 0, 2),
        (cell_ids[3], halves[1], 1, 2),
    ]


def _run_worker(db: Database) -> str | None:
    """The lease-holder name of the embedded run, once it holds a batch."""
    with db.sessions() as session:
        return session.scalar(select(Batch.worker).where(Batch.worker.is_not(None)))
