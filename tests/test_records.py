"""Claims, leases and idempotent results in the real database (SQLite and PostgreSQL)."""

import os
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select, update

from reprogrid.config import Settings
from reprogrid.models import DONE, PENDING, RUNNING, Batch, Cell, Image, Job, open_database, utcnow
from reprogrid.models.recipes import cell_recipes
from reprogrid.scheduler.control import retry_job
from reprogrid.scheduler.jobs import create_job, form_batches
from reprogrid.scheduler.spec import validate_spec
from reprogrid.worker import records
from reprogrid.worker.embedded import run_job
from reprogrid.worker.execute import WorkerContext, execute_batch, generate_images

SPEC = {"prompts": ["a fox", "a bird"], "seeds": "0-2", "steps": 2, "width": 64, "height": 64}


def new_job(db, **fields):
    return create_job(db, validate_spec({**SPEC, **fields}, max_cells=100))


def context(db, tmp_path: Path, name="w1", lease=600, **retry) -> WorkerContext:
    """A worker's context; ``retry``: the ``Settings`` of its retry policy."""
    settings = Settings(store=tmp_path / "store", threads=1, lease_seconds=lease, **retry)
    return WorkerContext.start(settings, db, "cpu", name)


def batches_of(db, job_id):
    with db.sessions() as session:
        form_batches(session, job_id)
        session.commit()
        return list(session.scalars(select(Batch).where(Batch.job_id == job_id).order_by(Batch.id)))


def _recipe(session, cell: Cell) -> str:
    """The cell's recipe text (rebuilt: new cells store none), to store an altered copy."""
    return cell_recipes(session, [cell.id])[cell.id].recipe


def test_creating_a_job_writes_every_cell_with_its_recipe(database):
    job_id = new_job(database)
    with database.sessions() as session:
        cells = session.scalars(select(Cell).where(Cell.job_id == job_id).order_by(Cell.grid_index))
        assert [(c.prompt, c.seed) for c in cells] == [
            (p, s) for p in ("a fox", "a bird") for s in range(3)
        ]
        assert session.get(Job, job_id).cell_count == 6


def test_seeds_above_two_to_the_63_round_trip_through_the_database(database):
    job_id = new_job(database, seeds=[2**64 - 1, 2**63], prompts=["a fox"])
    with database.sessions() as session:
        seeds = session.scalars(select(Cell.seed).where(Cell.job_id == job_id).order_by(Cell.id))
        assert list(seeds) == [2**64 - 1, 2**63]


def test_batches_group_cells_in_grid_order_up_to_batch_size(database):
    job_id = new_job(database, batch_size=4)
    assert [b.cell_ids for b in batches_of(database, job_id)] == [[1, 2, 3, 4], [5, 6]]


def test_batch_invariant_jobs_compute_every_image_alone(database):
    job_id = new_job(database, batch_invariant=True)
    assert all(len(b.cell_ids) == 1 for b in batches_of(database, job_id))


def test_batch_compositions_do_not_depend_on_how_many_are_formed_at_once(database):
    first, second = new_job(database, batch_size=4), new_job(database, batch_size=4)
    with database.sessions() as session:
        while form_batches(session, second, limit=1):
            pass
        session.commit()
    offset = 6
    whole = [b.cell_ids for b in batches_of(database, first)]
    piecewise = [[c - offset for c in b.cell_ids] for b in batches_of(database, second)]
    assert whole == piecewise


def test_a_batch_can_be_claimed_by_one_worker_only(database):
    (batch, *_) = batches_of(database, new_job(database))
    with database.sessions() as session:
        assert records.claim_batch(session, batch.id, "w1", 600) is not None
        assert records.claim_batch(session, batch.id, "w2", 600) is None


def test_a_batch_whose_lease_expired_can_be_claimed_again(database):
    (batch, *_) = batches_of(database, new_job(database))
    with database.sessions() as session:
        records.claim_batch(session, batch.id, "w1", 600)
        session.execute(
            update(Batch).where(Batch.id == batch.id).values(lease_until=utcnow() - timedelta(1))
        )
        session.commit()
        claim = records.claim_batch(session, batch.id, "w2", 600)
        assert claim is not None and claim.attempt == 2


def test_a_worker_that_lost_its_lease_records_nothing(database, tmp_path):
    (batch, *_) = batches_of(database, new_job(database))
    with database.sessions() as session:
        claim = records.claim_batch(session, batch.id, "w1", 600)
        session.execute(update(Batch).where(Batch.id == batch.id).values(worker="w2"))
        session.commit()
        image = {"cell_id": claim.cells[0][0]}
        assert records.record_images(session, claim, "w1", [image]) == []
        assert session.scalar(select(func.count()).select_from(Image)) == 0


def test_a_worker_that_lost_its_lease_leaves_the_new_owner_s_files_in_place(database, tmp_path):
    """The new owner has written its files and is about to commit when the stale worker
    finishes: the stale worker must not delete them (they are the same content-addressed
    files)."""
    (batch, *_) = batches_of(database, new_job(database))
    stale, owner = context(database, tmp_path, "stale"), context(database, tmp_path, "owner")
    with database.sessions() as session:
        stale_claim = records.claim_batch(session, batch.id, "stale", 600)
        stale_images = generate_images(stale, stale_claim)
        session.execute(update(Batch).where(Batch.id == batch.id).values(lease_until=utcnow()))
        session.commit()
        owner_claim = records.claim_batch(session, batch.id, "owner", 600)
    owner_images = generate_images(owner, owner_claim)
    assert stale_images.record(stale.recording) == 0  # lost: records nothing, deletes nothing
    # the owner's files (the same content-addressed names) would be written by now
    assert len(list((tmp_path / "store").rglob("*.png"))) == len(batch.cell_ids)
    assert owner_images.record(owner.recording) == len(batch.cell_ids)
    with database.sessions() as session:
        paths = session.scalars(select(Image.path)).all()
    assert len(paths) == len(batch.cell_ids)
    assert all((tmp_path / "store" / path).is_file() for path in paths)


def test_a_batch_executed_twice_leaves_one_image_and_one_file_per_cell(database, tmp_path):
    (batch, *_) = batches_of(database, new_job(database))
    ctx = context(database, tmp_path)
    assert execute_batch(ctx, batch.id).status == "done"
    assert execute_batch(ctx, batch.id).status == "skipped"
    with database.sessions() as session:
        session.execute(update(Batch).where(Batch.id == batch.id).values(status=PENDING))
        session.commit()
    assert execute_batch(context(database, tmp_path, "w2"), batch.id).images == 0
    with database.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Image)) == len(batch.cell_ids)
    assert len(list((tmp_path / "store").rglob("*.png"))) == len(batch.cell_ids)


def test_running_a_finished_job_again_creates_no_row_or_file(database, tmp_path):
    job_id = new_job(database)
    ctx = context(database, tmp_path)
    assert run_job(ctx, job_id) == DONE
    files = sorted((tmp_path / "store").rglob("*.png"))
    assert run_job(ctx, job_id) == DONE
    assert sorted((tmp_path / "store").rglob("*.png")) == files
    with database.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Image)) == 6
        assert session.scalar(select(func.count()).select_from(Batch)) == 2


def test_a_failing_batch_is_retried_then_its_cells_are_marked_failed(database, tmp_path):
    job_id = new_job(database)
    (batch, *_) = batches_of(database, job_id)
    with database.sessions() as session:  # a recipe naming a checkpoint that is gone
        for cell_id in batch.cell_ids:
            cell = session.get(Cell, cell_id)
            cell.recipe = _recipe(session, cell).replace("builtin:tiny", "builtin:gone")
        session.commit()
    ctx = context(database, tmp_path, max_attempts=2, retry_delay_seconds=0)
    assert execute_batch(ctx, batch.id).status == "retrying"
    outcome = execute_batch(ctx, batch.id)
    assert outcome.status == "failed" and "builtin:gone" in outcome.error
    with database.sessions() as session:
        cell = session.get(Cell, batch.cell_ids[0])
        assert cell.status == "failed" and "builtin:gone" in cell.error
        assert session.get(Batch, batch.id).attempts == 2


def test_a_batch_whose_pipeline_refuses_its_arguments_fails_at_once(database, tmp_path):
    """A ValueError from the pipeline call cannot change on retry: one attempt, text kept."""
    job_id = new_job(database, prompts=["a fox"], seeds="0-1")
    (batch,) = batches_of(database, job_id)
    with database.sessions() as session:
        for cell_id in batch.cell_ids:
            cell = session.get(Cell, cell_id)
            cell.recipe = _recipe(session, cell).replace('"width":64', '"width":60')
        session.commit()
    outcome = execute_batch(context(database, tmp_path), batch.id)
    assert outcome.status == "failed" and outcome.error.startswith("ValueError")
    with database.sessions() as session:
        assert session.get(Batch, batch.id).attempts == 1
        assert session.get(Cell, batch.cell_ids[0]).error == outcome.error


def test_a_transient_failure_waits_its_backoff_before_the_next_attempt(database, tmp_path):
    job_id = new_job(database, prompts=["a fox"], seeds="0-1")
    (batch,) = batches_of(database, job_id)
    ctx = context(database, tmp_path, retry_delay_seconds=0.01, retry_max_delay_seconds=60)
    ctx.store.write_text("a file where the store should be")
    before = utcnow()
    assert execute_batch(ctx, batch.id).status == "retrying"
    with database.sessions() as session:
        waiting = session.get(Batch, batch.id)
        assert waiting.status == "pending"
        assert waiting.retry_at >= before + timedelta(seconds=ctx.retry.delay(1))


def test_a_job_whose_cells_all_failed_or_finished_is_failed(database, tmp_path):
    job_id = new_job(database)
    first, _ = batches_of(database, job_id)
    with database.sessions() as session:
        cell = session.get(Cell, first.cell_ids[0])
        cell.recipe = _recipe(session, cell).replace('"steps":2', '"steps":0')
        session.commit()
    ctx = context(database, tmp_path, max_attempts=1)
    assert run_job(ctx, job_id) == "failed"
    with database.sessions() as session:
        statuses = dict(
            session.execute(select(Cell.status, func.count()).group_by(Cell.status)).all()
        )
        assert statuses == {"failed": 4, DONE: 2}


def test_a_batch_that_cannot_be_stored_is_retried_then_its_cells_are_marked_failed(
    database, tmp_path
):
    """Storing runs on the recording thread; its errors count as attempts all the same."""
    job_id = new_job(database, prompts=["a fox"], seeds="0-1")
    ctx = context(database, tmp_path, max_transient_attempts=2, retry_delay_seconds=0)
    ctx.store.write_text("a file where the store should be")
    outcomes = []
    assert run_job(ctx, job_id, on_batch=outcomes.append) == "failed"
    assert [o.status for o in outcomes] == ["retrying", "failed"]
    with database.sessions() as session:
        cells = session.scalars(select(Cell).where(Cell.job_id == job_id)).all()
        assert {c.status for c in cells} == {"failed"}
        assert all(c.error.startswith(("FileExistsError", "NotADirectoryError")) for c in cells)
        assert session.scalar(select(func.count()).select_from(Image)) == 0


def test_batches_are_reported_once_recorded_in_the_order_they_ran(database, tmp_path):
    job_id = new_job(database, batch_size=2)
    reported = []

    def on_batch(outcome):
        with database.sessions() as session:  # recorded before it is reported
            status = session.scalar(select(Batch.status).where(Batch.id == outcome.batch_id))
        reported.append((outcome.batch_id, outcome.status, outcome.images, status))

    assert run_job(context(database, tmp_path), job_id, on_batch=on_batch) == DONE
    assert reported == [(batch_id, DONE, 2, DONE) for batch_id in (1, 2, 3)]


def test_a_running_batch_renews_its_lease(database, tmp_path):
    (batch, *_) = batches_of(database, new_job(database))
    with database.sessions() as session:
        records.claim_batch(session, batch.id, "w1", 10)
        before = session.scalar(select(Batch.lease_until).where(Batch.id == batch.id))
        assert records.renew_lease(session, batch.id, "w1", 600)
        after = session.scalar(select(Batch.lease_until).where(Batch.id == batch.id))
        assert after > before and session.get(Batch, batch.id).status == RUNNING
        assert not records.renew_lease(session, batch.id, "w2", 600)


def test_a_long_read_on_sqlite_does_not_hold_the_write_lock(tmp_path):
    import sqlite3

    path = tmp_path / "r.db"
    db = open_database(f"sqlite:///{path}")
    new_job(db)
    with db.reads() as session:
        rows = session.execute(select(Cell.id)).yield_per(1)
        next(iter(rows))  # a read transaction is open, its rows half consumed
        writer = sqlite3.connect(path, timeout=1, isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")  # a worker's write gets the lock at once
        writer.execute("UPDATE job SET priority = 1")
        writer.execute("COMMIT")
        writer.close()
    db.dispose()


def test_a_worker_sweeps_temp_files_left_by_killed_writers(database, tmp_path):
    folder = tmp_path / "store" / "ab"
    folder.mkdir(parents=True)
    orphan, fresh = folder / ".tmp-orphan.png", folder / ".tmp-writing.png"
    orphan.write_bytes(b"half a png")
    fresh.write_bytes(b"being written")
    os.utime(orphan, (time.time() - 2 * 3600,) * 2)
    context(database, tmp_path)
    assert not orphan.exists() and fresh.exists()


def test_a_retried_job_keeps_the_time_it_first_started(database, tmp_path):
    job_id = new_job(database, prompts=["a fox"], seeds="0-1")
    (batch,) = batches_of(database, job_id)
    with database.sessions() as session:
        claim = records.claim_batch(session, batch.id, "w1", 60)
        records.fail_batch(session, claim, "w1", "OSError: gone", retry_at=None)
        first_start = session.get(Job, job_id).started_at
        retry_job(session, job_id)
    assert run_job(context(database, tmp_path), job_id) == DONE
    with database.sessions() as session:
        assert session.get(Job, job_id).started_at == first_start
