"""A fleet started as the README starts it heals itself: nobody supervises the worker.

The test owns its Redis (own port, no persistence) and kills it mid-job: each
restart comes back empty, so the queued messages are gone. The bare worker
(``reprogrid worker --device cpu --name w1``) finishes its batch, restarts in
place (same pid) and the scheduler re-sends the lost batches; the job ends
with every image once and every file in the store. A job whose queue no worker
consumes is named as stalled by ``status`` and ``workers`` instead of an ETA.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta
from pathlib import Path

from processes import Fleet, all_done, images_by_cell, store_files, wait_until
from services import OwnRedis
from sqlalchemy import func, select, update

from reprogrid.models import Batch, Database, Image, Job, Worker, open_database, utcnow
from reprogrid.scheduler.control import stalled_jobs
from reprogrid.scheduler.dispatch import StallLog
from reprogrid.worker.broker_watch import restart_delay

GRID = ["--prompt", "a fox", "--steps", "2", "--width", "32", "--height", "32"]
CELLS = 400  # enough that the job outlasts two restarts at 0.05 s an image
STALLED = "stalled: no worker consuming queue default since "


def _restarts(fleet: Fleet) -> int:
    """How many times the worker has said it restarts in place."""
    return fleet.logs().count("restarting this worker in")


def _starts(fleet: Fleet) -> int:
    """How many times worker w1's Celery consumer has said it is ready."""
    return len(re.findall(r"w1@\S+ ready\.", fleet.logs()))


def _images(db: Database, claimed_after: datetime | None = None) -> int:
    """Images recorded, or those of batches claimed after a time."""
    query = select(func.count()).select_from(Image).join(Batch, Batch.id == Image.batch_id)
    if claimed_after is not None:
        query = query.where(Batch.started_at > claimed_after)
    with db.sessions() as session:
        return session.scalar(query)


def test_a_bare_worker_keeps_serving_through_two_empty_broker_restarts(
    own_redis: OwnRedis, tmp_path: Path
) -> None:
    fleet = Fleet(f"sqlite:///{tmp_path / 'fleet.db'}", own_redis.url, tmp_path)
    db = open_database(fleet.db_url)
    try:
        submitted = fleet.command("submit", *GRID, "--seeds", f"0-{CELLS - 1}", "--batch-size", "1")
        assert submitted.returncode == 0, submitted.stderr
        fleet.scheduler()
        worker = fleet.worker("w1")
        costs = []
        wait_until(lambda: _images(db) >= 4, 90, "4 images", fleet)
        for restart in (1, 2):
            # The second restart comes after the worker started afresh from the
            # first: two restarts within one watch interval are one to the worker.
            # Its old consumer may reconnect and run batches before the worker
            # notices: the images counted are those of the fresh process.
            own_redis.restart()
            restarted = time.monotonic()
            wait_until(lambda n=restart: _restarts(fleet) >= n, 60, f"restart {restart}", fleet)
            wait_until(lambda n=restart: _starts(fleet) > n, 60, "the fresh worker", fleet)
            when = utcnow()
            wait_until(lambda w=when: _images(db, w), 90, "a batch claimed after it", fleet)
            costs.append(time.monotonic() - restarted)
        wait_until(lambda: all_done(db, 1, CELLS), 120, "the job to finish", fleet)
        assert worker.poll() is None, "the worker exited\n" + fleet.logs()
    finally:
        fleet.stop()
    print(
        "seconds from each restart to an image of the fresh worker:",
        ", ".join(f"{cost:.1f}" for cost in costs),
    )
    assert all(len(pixels) == 1 for pixels in images_by_cell(db, 1).values())
    assert len(store_files(fleet.store)) == CELLS
    db.dispose()


def test_restarts_in_place_back_off_and_calm_down() -> None:
    assert restart_delay({}, 1000.0) == (1, 1.0)
    assert restart_delay({"REPROGRID_WORKER_RESTARTS": "3 990"}, 1000.0) == (4, 8.0)
    assert restart_delay({"REPROGRID_WORKER_RESTARTS": "9 990"}, 1000.0) == (10, 60.0)
    assert restart_delay({"REPROGRID_WORKER_RESTARTS": "9 100"}, 1000.0) == (1, 1.0)


def _worker_on(
    db: Database, queue: str, state: str | None = None, beat: datetime | None = None
) -> None:
    with db.sessions() as session:
        session.add(
            Worker(
                name=f"w-{queue}", hostname="h", pid=1, device="cpu", queue=queue,
                checkpoints=[], heartbeat_at=beat or utcnow(), state=state,
            )
        )  # fmt: skip
        session.commit()


def test_status_says_a_job_is_stalled_when_no_worker_consumes_its_queue(cli, db) -> None:
    assert cli("submit", *GRID, "--seeds", "0-3").exit_code == 0
    (row,) = json.loads(cli("status", "--format", "json").output)
    assert row["stalled"].startswith(STALLED)
    assert row["eta_seconds"] is None


def test_workers_lists_each_stalled_job_below_the_table(cli, db) -> None:
    assert cli("submit", *GRID, "--seeds", "0-3").exit_code == 0
    assert f"job 1 {STALLED}" in cli("workers").output


def test_a_worker_that_is_not_consuming_leaves_its_queue_stalled(cli, db) -> None:
    assert cli("submit", *GRID, "--seeds", "0-3").exit_code == 0
    _worker_on(db, "default", state="not consuming: the broker restarted")
    with db.reads() as session:
        assert set(stalled_jobs(session)) == {1}


def test_a_job_is_stalled_since_the_last_beat_of_a_worker_consuming_its_queue(cli, db) -> None:
    assert cli("submit", *GRID, "--seeds", "0-3").exit_code == 0
    with db.sessions() as session:
        session.execute(update(Job).values(created_at=utcnow() - timedelta(hours=1)))
        session.commit()
    last_beat = utcnow() - timedelta(minutes=3)
    _worker_on(db, "default", beat=last_beat)  # dead since
    with db.reads() as session:
        assert stalled_jobs(session)[1].since == last_beat


def test_a_job_whose_queue_a_live_worker_consumes_is_not_stalled(cli, db) -> None:
    assert cli("submit", *GRID, "--seeds", "0-3").exit_code == 0
    _worker_on(db, "default")
    (row,) = json.loads(cli("status", "--format", "json").output)
    assert row["stalled"] is None


def test_the_scheduler_logs_a_stalled_job_once_a_minute(cli, db, caplog) -> None:
    assert cli("submit", *GRID, "--seeds", "0-3").exit_code == 0
    stalls = StallLog()
    with caplog.at_level("WARNING"):
        stalls.log(db)
        stalls.log(db)  # a pass later: within the minute
    assert caplog.text.count(f"job 1 {STALLED}") == 1
