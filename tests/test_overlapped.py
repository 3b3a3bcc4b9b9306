"""OverlappedBatches: each batch is recorded, and the next one claimed, while a batch computes."""

from __future__ import annotations

from reprogrid.config import Settings
from reprogrid.models import DONE, PENDING, RUNNING, Batch, Database
from reprogrid.scheduler.jobs import create_job, form_batches
from reprogrid.scheduler.spec import validate_spec
from reprogrid.worker.execute import OverlappedBatches, WorkerContext


def two_batches(db: Database) -> list[int]:
    spec = validate_spec(
        {
            "model": "builtin:tiny",
            "prompts": ["a fox"],
            "seeds": "0-3",
            "steps": 1,
            "width": 64,
            "height": 64,
            "batch_size": 2,
        },
        max_cells=100,
    )
    job_id = create_job(db, spec)
    with db.sessions() as session:
        batch_ids = form_batches(session, job_id)
        session.commit()
    return batch_ids


def batch_state(db: Database, batch_id: int) -> tuple[str, str | None]:
    with db.sessions() as session:
        batch = session.get(Batch, batch_id)
        return batch.status, batch.worker


def test_the_next_batch_is_claimed_before_the_one_running_is_recorded(
    db: Database, settings: Settings
):
    first, second = two_batches(db)
    ctx = WorkerContext.start(settings, db, "cpu", "w1")
    with OverlappedBatches(ctx, lambda _: None) as batches:
        batches.run(first, then=second)
        batches.wait()  # the recording thread claims `then` before it records `first`
        assert batch_state(db, first) == (DONE, "w1")
        assert batch_state(db, second) == (RUNNING, "w1")
        batches.run(second)
    assert batch_state(db, second) == (DONE, "w1")


def test_a_batch_claimed_ahead_by_another_worker_is_skipped_not_run_twice(
    db: Database, settings: Settings
):
    first, second = two_batches(db)
    ctx = WorkerContext.start(settings, db, "cpu", "w1")
    outcomes = []
    with OverlappedBatches(ctx, outcomes.append) as batches:
        batches.run(first, then=second)
        batches.wait()
        other = WorkerContext.start(settings, db, "cpu", "w2")
        with OverlappedBatches(other, outcomes.append) as theirs:
            theirs.run(second)  # w1 holds its lease: w2 does not take it
        batches.run(second)
    assert [(o.batch_id, o.status) for o in outcomes] == [
        (first, "done"),
        (second, "skipped"),
        (second, "done"),
    ]


def test_a_batch_claimed_ahead_whose_run_never_comes_is_given_back_on_close(
    db: Database, settings: Settings
):
    first, second = two_batches(db)
    ctx = WorkerContext.start(settings, db, "cpu", "w1")
    with OverlappedBatches(ctx, lambda _: None) as batches:
        batches.claim_ahead(second)  # as a Celery worker does when a message is reserved
        batches.run(first)
        assert batch_state(db, second) == (RUNNING, "w1")
    assert batch_state(db, first) == (DONE, "w1")
    assert batch_state(db, second) == (PENDING, None)
    with db.sessions() as session:
        assert session.get(Batch, second).attempts == 0  # the claim is not an attempt
    assert second not in ctx.active  # the heartbeat no longer renews its lease


def test_a_batch_claimed_ahead_runs_from_its_claim_without_claiming_again(
    db: Database, settings: Settings
):
    first, second = two_batches(db)
    ctx = WorkerContext.start(settings, db, "cpu", "w1")
    outcomes = []
    with OverlappedBatches(ctx, outcomes.append) as batches:
        batches.claim_ahead(second)
        batches.claim_ahead(second)  # a second copy of its message: one claim
        batches.run(first)
        batches.run(second)
    assert [(o.batch_id, o.status) for o in outcomes] == [(first, "done"), (second, "done")]
    with db.sessions() as session:
        assert session.get(Batch, second).attempts == 1
