"""A 128-image job through every fault at once: worker SIGKILLs, a broker and a database restart.

Two workers, kept running by the test as a supervisor would, a scheduler, a
Redis and a PostgreSQL of the test's own. Mid-job the test SIGKILLs a worker
that is computing, ``KILLS`` times, restarts Redis empty once and restarts
PostgreSQL once. At the end every cell is done exactly once, every file is in
the store and hashes as recorded, and the job is done. The seconds each fault
cost are printed: for a kill, until the killed batch was recorded by another
worker; for a restart, until the fleet recorded its next image.
"""

from __future__ import annotations

import signal
import time
from datetime import datetime
from pathlib import Path

import pytest
from processes import Fleet, all_done, images_by_cell, running_batch_of
from services import OwnPostgres, OwnRedis
from sqlalchemy import func, select

from reprogrid.models import Batch, Image, Job, open_database, utcnow
from reprogrid.worker.broker_watch import EXIT_BROKER_RESTARTED
from reprogrid.worker.store import file_sha256

GRID = ["--prompt", "a fox", "--prompt", "an owl", "--seeds", "0-63", "--batch-size", "1"]
TINY = ["--steps", "2", "--width", "32", "--height", "32"]
CELLS = 128
KILLS = 10
WORKERS = ("w1", "w2")


@pytest.fixture
def services(tmp_path: Path):
    broker, database = OwnRedis(tmp_path), OwnPostgres()
    broker.start()
    database.start()
    yield broker, database
    broker.stop()
    database.remove()


def test_a_job_survives_kills_and_restarts_with_each_cell_done_once(services, tmp_path):
    broker, database = services
    fleet = DefaultsFleet(database.url, broker.url, tmp_path)
    db = open_database(database.url)
    costs: list[tuple[str, float]] = []
    kills: list[tuple[tuple[int, int], datetime]] = []
    try:
        assert fleet.command("submit", *GRID, *TINY).returncode == 0
        fleet.scheduler()
        workers = {name: fleet.worker(name) for name in WORKERS}
        for kill in range(KILLS):
            name = WORKERS[kill % 2]
            # each batch is killed once at most: killed max_attempts times, it would fail
            killed = [(batch_id, a) for (batch_id, _), _ in kills for a in range(1, KILLS + 2)]
            running = _supervise(
                fleet, workers, lambda n=name, k=killed: _running_or_done(db, n, k), db
            )
            if running is True:
                break  # the job is done: no batch left to kill
            workers[name].send_signal(signal.SIGKILL)
            kills.append((running, utcnow()))
        for fault, restart in (("Redis", broker.restart), ("PostgreSQL", database.restart)):
            restart()
            costs.append((f"{fault} restart", _cost(fleet, workers, db)))
        _supervise(fleet, workers, lambda: all_done(db, 1, CELLS), db, timeout=240)
    finally:
        fleet.stop()
    with db.sessions() as session:
        for (batch_id, _), killed_at in kills:
            finished = session.get(Batch, batch_id).finished_at
            costs.append((f"SIGKILL in batch {batch_id}", (finished - killed_at).total_seconds()))
    print("\n".join(f"{fault}: {seconds:.1f} s" for fault, seconds in costs))
    images = images_by_cell(db, 1)
    assert len(images) == CELLS and all(len(pixels) == 1 for pixels in images.values())
    with db.sessions() as session:
        assert session.get(Job, 1).status == "done"
        for path, png_sha256 in session.execute(select(Image.path, Image.png_sha256)):
            assert file_sha256(fleet.store / path) == png_sha256
    db.dispose()


class DefaultsFleet(Fleet):
    """The fleet with default leases: recovery must not wait for one."""

    @property
    def env(self) -> dict[str, str]:
        env = super().env
        del env["REPROGRID_LEASE_SECONDS"]
        return env


def _running_or_done(db, name: str, killed: list[tuple[int, int]]):
    """(id, attempt) of a batch the worker runs, other than ``killed``; True once the
    job is done; None otherwise."""
    return all_done(db, 1, CELLS) or running_batch_of(db, name, besides=killed)


def _images(db) -> int:
    try:
        with db.sessions() as session:
            return session.scalar(select(func.count()).select_from(Image))
    except Exception:  # the database is restarting
        return 0


def _cost(fleet: Fleet, workers: dict, db) -> float:
    """Seconds until the fleet records an image after the fault (or the job is done)."""
    started, before = time.monotonic(), _images(db)
    _supervise(fleet, workers, lambda: _images(db) > before or before == CELLS, db)
    return time.monotonic() - started


def _supervise(fleet: Fleet, workers: dict, condition, db, timeout: float = 120):
    """Wait for ``condition`` and return its value, restarting any worker that exited,
    as systemd or Docker would."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; {_images(db)} images\n{fleet.logs()}")
        for name, process in workers.items():
            code = process.poll()
            if code is not None:
                assert code in (-signal.SIGKILL, EXIT_BROKER_RESTARTED), fleet.logs()
                workers[name] = fleet.worker(name)
        time.sleep(0.05)
    return value
