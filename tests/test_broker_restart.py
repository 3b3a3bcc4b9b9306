"""A broker restarted empty mid-job, several times, under an external supervisor.

The test owns its Redis (own port, no persistence) and kills it. The worker,
started with ``--exit-on-broker-loss``, notices the restart (the broker's run
id changed), exits with code 3, and the test's loop restarts it as a
supervisor would (Docker's ``restart: unless-stopped``); the scheduler
re-sends the batches whose messages died with Redis once a worker consumes
again. (A bare worker restarts itself: test_self_healing.py.)
"""

from __future__ import annotations

from pathlib import Path

from processes import Fleet, all_done, images_by_cell, store_files
from services import OwnRedis
from sqlalchemy import func, select

from reprogrid.models import Image, open_database
from reprogrid.worker.broker_watch import (
    EXIT_BROKER_RESTARTED,
    RESTARTED,
    UNREACHABLE,
    BrokerWatch,
)

IMAGES = 32
GRID = ["--prompt", "a fox", "--steps", "20", "--width", "32", "--height", "32"]


def test_a_job_finishes_through_broker_restarts_with_nobody_acting(
    own_redis: OwnRedis, tmp_path: Path
) -> None:
    fleet = Fleet(f"sqlite:///{tmp_path / 'fleet.db'}", own_redis.url, tmp_path)
    db = open_database(fleet.db_url)
    try:
        submitted = fleet.command(
            "submit", *GRID, "--seeds", f"0-{IMAGES - 1}", "--batch-size", "1"
        )
        assert submitted.returncode == 0, submitted.stderr
        fleet.scheduler()
        supervisor = Supervisor(fleet)
        for restart in (1, 2):
            # Each restart comes once the worker started afresh from the last one has
            # made images: two restarts within one watch interval are one to the worker
            # (a fresh worker takes the broker it meets as the one to watch).
            wanted = _images(db) + 4
            supervisor.wait(lambda n=wanted: _images(db) >= n, f"{wanted} images")
            assert _images(db) < IMAGES, "the job finished before the broker restarted"
            own_redis.restart()
            supervisor.wait(lambda n=restart: supervisor.restarts >= n, f"worker restart {restart}")
        supervisor.wait(lambda: all_done(db, 1, IMAGES), "the job to finish")
    finally:
        fleet.stop()
    assert all(len(p) == 1 for p in images_by_cell(db, 1).values())
    assert len(store_files(fleet.store)) == IMAGES
    db.dispose()


class Supervisor:
    """Keeps one worker running, restarting it when it exits (as systemd or Docker would)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet, self.restarts = fleet, 0
        self.worker = fleet.worker("w1", "--exit-on-broker-loss")

    def wait(self, condition, what: str, timeout: float = 150) -> None:
        import time

        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.fleet.logs()}")
            code = self.worker.poll()
            if code is not None:
                assert code == EXIT_BROKER_RESTARTED, self.fleet.logs()
                self.restarts += 1
                self.worker = self.fleet.worker("w1", "--exit-on-broker-loss")
            time.sleep(0.1)


def _images(db) -> int:
    with db.sessions() as session:
        return session.scalar(select(func.count()).select_from(Image))


def test_the_watch_tells_a_restarted_broker_from_an_unreachable_one(own_redis: OwnRedis) -> None:
    watch = BrokerWatch(own_redis.url)
    assert watch.check() is None
    own_redis.stop()
    assert watch.check() == UNREACHABLE
    own_redis.start()
    assert watch.check() == RESTARTED
