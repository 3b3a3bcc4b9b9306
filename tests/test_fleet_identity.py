"""Fencing by fleet: a worker pointed at another database takes none of the fleet's work.

Two databases share one Redis. The worker of the wrong database refuses every
message loudly (log line, heartbeat row) and puts it back; the right worker
finishes the job.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from processes import Fleet, all_done, wait_until
from sqlalchemy import select

from reprogrid.models import Batch, Worker, open_database

pytestmark = pytest.mark.redis

GRID = ["--prompt", "a fox", "--seeds", "0-7", "--steps", "2", "--width", "32", "--height", "32"]


def test_a_worker_of_another_database_refuses_the_fleet_s_messages(
    redis_url: str, tmp_path: Path
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ours = Fleet(f"sqlite:///{tmp_path / 'a' / 'a.db'}", redis_url, tmp_path / "a")
    stray = Fleet(f"sqlite:///{tmp_path / 'b' / 'b.db'}", redis_url, tmp_path / "b")
    db, stray_db = open_database(ours.db_url), open_database(stray.db_url)
    try:
        submitted = ours.command("submit", "--json", *GRID, "--batch-size", "2")
        assert submitted.returncode == 0, submitted.stderr
        stray.worker("stray")
        wait_until(lambda: _worker_row(stray_db, "stray"), 60, "the stray worker", stray)
        ours.scheduler()
        wait_until(lambda: _state(stray_db, "stray"), 60, "a refused message", stray)
        ours.worker("ours")
        wait_until(lambda: all_done(db, 1, 8), 120, "the job to finish", ours)
    finally:
        ours.stop()
        stray.stop()
    with db.sessions() as session:
        assert set(session.scalars(select(Batch.worker))) == {"ours"}
    assert "refusing messages of fleet" in stray.logs()
    db.dispose()
    stray_db.dispose()


def _worker_row(db, name: str) -> Worker | None:
    with db.sessions() as session:
        return session.scalar(select(Worker).where(Worker.name == name))


def _state(db, name: str) -> str | None:
    row = _worker_row(db, name)
    return row.state if row and row.state and "refusing" in row.state else None
