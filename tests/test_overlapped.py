"""OverlappedBatches: batches compute back to back on a device thread, each recorded while the
next computes; a batch claimed ahead whose run never comes is given back."""

from __future__ import annotations

import threading
import time

from reprogrid.config import Settings
from reprogrid.models import DONE, PENDING, RUNNING, Batch, Database
from reprogrid.scheduler.jobs import create_job, form_batches
from reprogrid.scheduler.spec import validate_spec
from reprogrid.worker.execute import (
    GIVEN_BACK,
    OverlappedBatches,
    WorkerContext,
    generate_images,
)


def two_batches(db: Database, steps: int = 1) -> list[int]:
    spec = validate_spec(
        {
            "model": "builtin:tiny",
            "prompts": ["a fox"],
            "seeds": "0-3",
            "steps": steps,
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


def wait_for(condition, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_batch_announced_ahead_computes_and_records_before_its_run_is_called(
    db: Database, settings: Settings
):
    first, second = two_batches(db)
    ctx = WorkerContext.start(settings, db, "cpu", "w1")
    with OverlappedBatches(ctx, lambda _: None) as batches:
        batches.run(first, then=second)
        wait_for(lambda: batch_state(db, second) == (DONE, "w1"))
        ran = batches.run(second)  # computed already: it returns at once
    assert ran.computed and ran.claim.batch_id == second
    assert ran.recorded.result().status == "done"


def test_a_batch_claimed_ahead_by_another_worker_is_skipped_not_run_twice(
    db: Database, settings: Settings
):
    first, second = two_batches(db)
    ctx = WorkerContext.start(settings, db, "cpu", "w1")
    outcomes = []
    with OverlappedBatches(ctx, outcomes.append) as batches:
        batches.run(first, then=second)
        other = WorkerContext.start(settings, db, "cpu", "w2")
        with OverlappedBatches(other, outcomes.append) as theirs:
            theirs.run(second)  # w1 holds its lease: w2 does not take it
        batches.run(second)
    assert sorted((o.batch_id, o.status) for o in outcomes) == [
        (first, "done"),
        (second, "done"),
        (second, "skipped"),
    ]


def test_a_batch_claimed_ahead_whose_run_never_comes_is_stopped_and_given_back_on_close(
    db: Database, settings: Settings
):
    first, second = two_batches(db, steps=50)
    ctx = WorkerContext.start(settings, db, "cpu", "w1")
    outcomes = []
    with OverlappedBatches(ctx, outcomes.append) as batches:
        batches.claim_ahead(first)  # as a Celery worker does when a message is reserved
        batches.claim_ahead(second)
        batches.run(first)
        assert batch_state(db, second) == (RUNNING, "w1")  # computing now
    assert batch_state(db, first) == (DONE, "w1")
    assert batch_state(db, second) == (PENDING, None)
    with db.sessions() as session:
        assert session.get(Batch, second).attempts == 0  # the claim is not an attempt
    assert second not in ctx.active  # the heartbeat no longer renews its lease
    assert [(o.batch_id, o.status) for o in outcomes] == [(first, "done"), (second, GIVEN_BACK)]


def test_a_batch_claimed_ahead_runs_from_its_claim_without_claiming_again(
    db: Database, settings: Settings
):
    first, second = two_batches(db)
    ctx = WorkerContext.start(settings, db, "cpu", "w1")
    outcomes = []
    with OverlappedBatches(ctx, outcomes.append) as batches:
        batches.claim_ahead(first)
        batches.claim_ahead(second)
        batches.claim_ahead(second)  # a second copy of its message: one claim
        batches.run(first)
        batches.run(second)
    assert [(o.batch_id, o.status) for o in outcomes] == [(first, "done"), (second, "done")]
    with db.sessions() as session:
        assert session.get(Batch, second).attempts == 1


def test_a_computed_batch_is_handed_over_once_the_next_one_has_done_its_first_step(
    db: Database, settings: Settings
):
    first, second = two_batches(db, steps=2)
    ctx = WorkerContext.start(settings, db, "cpu", "w1")
    first_returned = threading.Event()
    returned_before_the_next_step = []

    def second_work(ctx, claim):
        returned_before_the_next_step.append(first_returned.wait(0.5))
        return generate_images(ctx, claim)

    with OverlappedBatches(ctx, lambda _: None) as batches:
        batches.claim_ahead(first)
        batches.claim_ahead(second, second_work)
        ran = batches.run(first)
        first_returned.set()
        assert ran.recorded.result().status == "done"
        assert batches.run(second).recorded.result().status == "done"
    assert returned_before_the_next_step == [False]


def test_a_computed_batch_is_handed_over_when_the_next_one_fails_before_its_first_step(
    db: Database, settings: Settings
):
    first, second = two_batches(db)
    ctx = WorkerContext.start(settings, db, "cpu", "w1")

    def failing(ctx, claim):
        raise RuntimeError("no step taken")

    outcomes = []
    with OverlappedBatches(ctx, outcomes.append) as batches:
        batches.claim_ahead(first)
        batches.claim_ahead(second, failing)
        batches.run(first)
        batches.run(second)
    assert [(o.batch_id, o.status) for o in outcomes] == [(first, "done"), (second, "retrying")]
