"""The scheduler: what it publishes, in which order, how much, and what it recovers.

These run real ``reprogrid scheduler`` processes (or its dispatch pass) against
real Redis, and read the published messages back from the queue; no worker is
running, so the messages stay where the scheduler put them.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from processes import LEASE_SECONDS, Fleet, queued_messages, wait_until
from sqlalchemy import func, select, update

from reprogrid.config import Settings
from reprogrid.models import Batch, Cell, Database, Job, Worker, open_database, utcnow
from reprogrid.scheduler.broker import celery_app, publish_batch
from reprogrid.scheduler.dispatch import DispatchLimits, dispatch_once

pytestmark = pytest.mark.redis

GRID = ["--prompt", "a red fox", "--steps", "2", "--width", "64", "--height", "64"]


def submit(fleet: Fleet, *args: str) -> int:
    result = fleet.command("submit", "--json", *GRID, *args)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split('"job_id": ')[1].split(",")[0])


def batches(db_url: str) -> list[tuple[int, int, str, list[int]]]:
    db = open_database(db_url)
    with db.sessions() as session:
        rows = session.execute(
            select(Batch.id, Batch.job_id, Batch.status, Batch.cell_ids).order_by(Batch.id)
        ).all()
    db.dispose()
    return [tuple(row) for row in rows]


@pytest.fixture
def fleet(sqlite_url: str, redis_url: str, tmp_path: Path):
    fleet = Fleet(sqlite_url, redis_url, tmp_path)
    yield fleet
    fleet.stop()


def once(fleet: Fleet, *args: str) -> None:
    result = fleet.command("scheduler", "--once", *args)
    assert result.returncode == 0, result.stderr


def test_scheduler_keeps_at_most_max_in_flight_batches_per_queue(fleet: Fleet) -> None:
    submit(fleet, "--seeds", "0-23", "--batch-size", "4")  # 6 batches
    once(fleet, "--max-in-flight", "2")
    once(fleet, "--max-in-flight", "2")
    assert len(queued_messages(fleet.broker_url)) == 2
    assert [status for _, _, status, _ in batches(fleet.db_url)] == ["queued", "queued"]


def test_a_queue_holds_two_batches_per_live_worker_whatever_max_in_flight(
    fleet: Fleet,
) -> None:
    """One batch computing and one claimed ahead each: with fewer, one worker that
    reserved two messages would leave another idle."""
    submit(fleet, "--seeds", "0-23", "--batch-size", "4")  # 6 batches
    db = open_database(fleet.db_url)
    with db.sessions() as session:
        session.add_all(_worker_row(name, utcnow(), "default") for name in ("w1", "w2"))
        session.commit()
    db.dispose()
    once(fleet, "--max-in-flight", "2")
    assert len(queued_messages(fleet.broker_url)) == 4


def test_a_job_s_batches_go_to_the_queue_it_was_submitted_to(fleet: Fleet) -> None:
    submit(fleet, "--seeds", "0-3", "--queue", "big-gpus")
    once(fleet)
    ((batch_id, _, _, _),) = batches(fleet.db_url)
    assert queued_messages(fleet.broker_url, "big-gpus") == [batch_id]
    assert queued_messages(fleet.broker_url, "default") == []


def test_higher_priority_runs_first_then_submission_order(fleet: Fleet) -> None:
    low = submit(fleet, "--seeds", "0-3", "--priority", "0")
    high = submit(fleet, "--seeds", "0-3", "--priority", "5")
    later_high = submit(fleet, "--seeds", "0-3", "--priority", "5")
    once(fleet, "--max-in-flight", "3")
    jobs_of = {batch_id: job_id for batch_id, job_id, _, _ in batches(fleet.db_url)}
    assert [jobs_of[b] for b in queued_messages(fleet.broker_url)] == [high, later_high, low]


def test_job_is_held_until_its_not_before_time(fleet: Fleet) -> None:
    held = submit(fleet, "--seeds", "0-3", "--not-before", "+2h")
    due = submit(fleet, "--seeds", "0-3", "--not-before", "2000-01-01T00:00:00+00:00")
    once(fleet)
    assert [job for _, job, _, _ in batches(fleet.db_url)] == [due]
    assert len(queued_messages(fleet.broker_url)) == 1
    db = open_database(fleet.db_url)
    with db.sessions() as session:
        assert session.get(Job, held).status == "queued"
        assert session.scalar(select(func.count()).where(Cell.batch_id.is_not(None))) == 4
    db.dispose()


def test_a_queued_batch_whose_message_was_lost_is_published_again_for_an_idle_worker(
    fleet: Fleet,
) -> None:
    batch_id, db = _published_then_lost(fleet)
    _age_batches(db, published=timedelta(seconds=LEASE_SECONDS + 1))
    once(fleet)
    assert queued_messages(fleet.broker_url) == [], "re-sent with no worker to take it"
    _idle_worker(db, "default")
    once(fleet)
    assert queued_messages(fleet.broker_url) == [batch_id]
    db.dispose()


def test_a_batch_whose_worker_died_is_published_again_then_failed_after_max_attempts(
    fleet: Fleet,
) -> None:
    batch_id, db = _published_then_lost(fleet)
    settings = Settings(db_url=fleet.db_url, broker_url=fleet.broker_url, lease_seconds=10)
    limits = DispatchLimits(max_in_flight=8, lease_seconds=10, max_attempts=2)
    broker = celery_app(settings)

    def publish(batch: int, queue: str) -> None:
        publish_batch(broker, batch, queue)

    _idle_worker(db, "default")
    for attempt in (1, 2):
        _claimed_by_a_dead_worker(db, batch_id, attempt)
        report = dispatch_once(db, publish, limits)
        if attempt == 1:
            assert report.republished == 1
            assert queued_messages(fleet.broker_url) == [batch_id]
    assert report.failed == 1
    with db.sessions() as session:
        batch = session.get(Batch, batch_id)
        assert batch.status == "failed"
        assert "lease expired" in batch.error
        assert {c.status for c in session.scalars(select(Cell))} == {"failed"}
        assert session.scalar(select(Job.status)) == "failed"
    db.dispose()


def test_a_batch_whose_worker_s_heartbeat_stopped_is_sent_again_before_its_lease_ends(
    fleet: Fleet,
) -> None:
    batch_id, db = _published_then_lost(fleet)
    broker = celery_app(Settings(db_url=fleet.db_url, broker_url=fleet.broker_url))
    limits = DispatchLimits(max_in_flight=8, lease_seconds=600, max_attempts=3)
    _idle_worker(db, "default")
    with db.sessions() as session:
        session.add(_worker_row("dead-worker", beat=utcnow() - timedelta(seconds=16)))
        session.execute(
            update(Batch)
            .where(Batch.id == batch_id)
            .values(
                status="running",
                worker="dead-worker",
                attempts=1,
                lease_until=utcnow() + timedelta(seconds=580),
                published_at=utcnow() - timedelta(seconds=21),
            )
        )
        session.commit()
    report = dispatch_once(db, lambda b, q: publish_batch(broker, b, q), limits)
    assert report.republished == 1
    assert queued_messages(fleet.broker_url) == [batch_id]
    with db.sessions() as session:  # claimable at once by the worker that gets the message
        assert session.get(Batch, batch_id).lease_until <= utcnow()
    db.dispose()


def test_a_batch_whose_worker_beats_keeps_its_lease(fleet: Fleet) -> None:
    batch_id, db = _published_then_lost(fleet)
    broker = celery_app(Settings(db_url=fleet.db_url, broker_url=fleet.broker_url))
    limits = DispatchLimits(max_in_flight=8, lease_seconds=600, max_attempts=3)
    _idle_worker(db, "default")
    with db.sessions() as session:
        session.add(_worker_row("busy-worker", beat=utcnow()))
        session.execute(
            update(Batch)
            .where(Batch.id == batch_id)
            .values(
                status="running",
                worker="busy-worker",
                lease_until=utcnow() + timedelta(seconds=580),
                published_at=utcnow() - timedelta(seconds=300),
            )
        )
        session.commit()
    assert dispatch_once(db, lambda b, q: publish_batch(broker, b, q), limits).republished == 0
    db.dispose()


def test_nothing_is_re_sent_to_a_queue_no_live_worker_consumes_and_it_is_reported(
    fleet: Fleet,
) -> None:
    _, db = _published_then_lost(fleet)
    _age_batches(db, published=timedelta(seconds=LEASE_SECONDS + 1))
    with db.sessions() as session:
        row = _worker_row("cut-off", beat=utcnow())
        row.queue, row.state = "default", "not consuming: the broker restarted"
        session.add(row)
        session.commit()
    limits = DispatchLimits(max_in_flight=8, lease_seconds=600, max_attempts=3)
    report = dispatch_once(db, lambda b, q: pytest.fail("sent to a queue nobody reads"), limits)
    assert report.republished == 0 and report.unserved == {"default": 1}
    db.dispose()


@pytest.mark.postgres
def test_two_schedulers_at_once_never_make_two_copies_of_a_batch(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    fleet = Fleet(postgres_url, redis_url, tmp_path)
    try:
        jobs = [submit(fleet, "--seeds", "0-99", "--batch-size", "1") for _ in range(8)]
        command = [sys.executable, "-m", "reprogrid", "scheduler", "--once"]
        both = [
            subprocess.Popen([*command, "--max-in-flight", "10000"], env=fleet.env, cwd=tmp_path)
            for _ in range(2)
        ]
        for process in both:
            assert process.wait(timeout=120) == 0
        once(fleet, "--max-in-flight", "10000")  # whatever both skipped
    finally:
        fleet.stop()
    formed = batches(postgres_url)
    cells = [cell for _, _, _, cell_ids in formed for cell in cell_ids]
    assert len(cells) == len(set(cells)) == 800
    assert {job for _, job, _, _ in formed} == set(jobs)
    messages = queued_messages(redis_url)
    assert sorted(messages) == [batch_id for batch_id, _, _, _ in formed]


def _published_then_lost(fleet: Fleet) -> tuple[int, Database]:
    """One batch published, its message then lost by Redis; and the open database."""
    submit(fleet, "--seeds", "0-3")
    once(fleet)
    (batch_id,) = queued_messages(fleet.broker_url)
    redis.Redis.from_url(fleet.broker_url).flushdb()
    return batch_id, open_database(fleet.db_url)


def _age_batches(db, published: timedelta) -> None:
    with db.sessions() as session:
        session.execute(update(Batch).values(published_at=utcnow() - published))
        session.commit()


def _idle_worker(db, queue: str) -> None:
    """The heartbeat row of a live worker of the queue with nothing to do."""
    with db.sessions() as session:
        row = Worker(name="idle", hostname="h", pid=1, device="cpu", queue=queue, checkpoints=[])
        session.add(row)
        session.commit()


def _worker_row(name: str, beat, queue: str = "q") -> Worker:
    return Worker(
        name=name, hostname="h", pid=2, device="cpu", queue=queue, checkpoints=[], heartbeat_at=beat
    )


def _claimed_by_a_dead_worker(db, batch_id: int, attempts: int) -> None:
    """The state a worker killed mid-batch leaves: running, its lease run out."""
    with db.sessions() as session:
        session.execute(
            update(Batch)
            .where(Batch.id == batch_id)
            .values(
                status="running",
                worker="dead-worker",
                attempts=attempts,
                lease_until=utcnow() - timedelta(seconds=1),
                published_at=utcnow() - timedelta(seconds=LEASE_SECONDS + 1),
            )
        )
        session.execute(update(Cell).values(status="running"))
        session.commit()


def test_scheduler_stops_cleanly_on_sigterm(fleet: Fleet) -> None:
    submit(fleet, "--seeds", "0-3")
    scheduler = fleet.scheduler()
    wait_until(lambda: queued_messages(fleet.broker_url), 60, "a published batch", fleet)
    scheduler.send_signal(signal.SIGTERM)
    assert scheduler.wait(timeout=30) == 0
