"""What ``status`` and ``workers`` report: an ETA from observed throughput, the live workers."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest
from processes import Fleet, wait_until
from sqlalchemy import select

from reprogrid.config import Settings
from reprogrid.models import Batch, Database, Worker, open_database, utcnow
from reprogrid.models.queries import job_progress, live_workers
from reprogrid.scheduler.jobs import create_job, form_batches
from reprogrid.scheduler.spec import validate_spec
from reprogrid.worker import records
from reprogrid.worker.execute import WorkerContext, execute_batch
from reprogrid.worker.heartbeat import HEARTBEAT_HOLD_SECONDS, Heartbeat

SPEC = {"model": "builtin:tiny", "prompts": ["a red fox"], "seeds": "0-7", "steps": 2}


def test_status_estimates_the_time_left_from_recent_throughput(
    db: Database, settings: Settings, cli
) -> None:
    job_id = create_job(db, validate_spec({**SPEC, "width": 64, "height": 64}, 100))
    with db.sessions() as session:
        first, _second = form_batches(session, job_id)
        session.commit()
    execute_batch(WorkerContext.start(settings, db, "cpu", "w"), first)
    with db.sessions() as session:
        (row,) = job_progress(session, job_id)
    assert (row["done"], row["queued"]) == (4, 4)
    assert row["images_per_second"] > 0
    assert row["eta_seconds"] == pytest.approx(4 / row["images_per_second"], abs=1)
    (listed,) = json.loads(cli("status", "--format", "json").output)
    assert listed["eta_seconds"] is not None


def test_a_finished_job_has_no_eta(db: Database, settings: Settings, cli) -> None:
    result = cli("run", "--prompt", "a fox", "--steps", "2", "--width", "64", "--height", "64")
    assert result.exit_code == 0
    with db.sessions() as session:
        (row,) = job_progress(session)
    assert row["status"] == "done"
    assert row["eta_seconds"] is None


@pytest.mark.redis
def test_a_live_worker_is_listed_until_it_stops_on_sigterm(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    fleet = Fleet(sqlite_url, redis_url, tmp_path)
    db = open_database(sqlite_url)
    try:
        worker = fleet.worker("w1", "--queue", "night")
        (listed,) = wait_until(lambda: _live(db), 120, "the worker's heartbeat", fleet)
        assert (listed["name"], listed["device"], listed["queue"]) == ("w1", "cpu", "night")
        assert "w1" in fleet.command("status").stdout
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
        assert _live(db) == []
    finally:
        fleet.stop()
        db.dispose()


def test_a_second_worker_with_a_live_workers_name_is_refused(
    db: Database, settings: Settings, sqlite_url: str, tmp_path: Path
) -> None:
    heartbeat = Heartbeat(WorkerContext.start(settings, db, "cpu", "w1"), "default")
    heartbeat.start()
    try:
        fleet = Fleet(sqlite_url, "redis://127.0.0.1:1/0", tmp_path)
        result = fleet.command("worker", "--device", "cpu", "--name", "w1")
        with db.sessions() as session:
            assert session.scalar(select(Worker.pid)) == os.getpid()
    finally:
        heartbeat.stop()
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("Error: name: worker name 'w1'")


def _live(db: Database) -> list[dict]:
    with db.sessions() as session:
        return live_workers(session)


def test_a_heartbeat_renews_the_leases_of_the_batches_its_worker_holds(
    db: Database, settings: Settings
) -> None:
    job_id = create_job(db, validate_spec({**SPEC, "width": 64, "height": 64}, 100))
    with db.sessions() as session:
        held, other = form_batches(session, job_id)
        session.commit()
    ctx = WorkerContext.start(settings.with_overrides(lease_seconds=600), db, "cpu", "w1")
    with db.sessions() as session:
        for batch_id in (held, other):
            records.claim_batch(session, batch_id, "w1", lease_seconds=10)
    ctx.active[held] = time.monotonic()  # e.g. loading its checkpoint; `other` was given up
    Heartbeat(ctx, "default").beat()
    with db.sessions() as session:
        leases = {b.id: b.lease_until for b in session.scalars(select(Batch))}
    assert leases[held] > utcnow() + timedelta(seconds=500)
    assert leases[other] < utcnow() + timedelta(seconds=11)


def test_a_heartbeat_stops_renewing_a_batch_held_past_the_hold_limit(
    db: Database, settings: Settings
) -> None:
    """A worker whose main thread hangs keeps beating, but loses its batch in the end."""
    job_id = create_job(db, validate_spec({**SPEC, "width": 64, "height": 64}, 100))
    with db.sessions() as session:
        held, _ = form_batches(session, job_id)
        session.commit()
    ctx = WorkerContext.start(settings.with_overrides(lease_seconds=600), db, "cpu", "w1")
    with db.sessions() as session:
        records.claim_batch(session, held, "w1", lease_seconds=10)
    ctx.active[held] = time.monotonic() - HEARTBEAT_HOLD_SECONDS - 1
    Heartbeat(ctx, "default").beat()
    with db.sessions() as session:
        assert session.get(Batch, held).lease_until < utcnow() + timedelta(seconds=11)
