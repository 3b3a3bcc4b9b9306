"""Database connections a fleet holds: one per idle process, and PgBouncer works.

The tests own their PostgreSQL (``max_connections = 5``, no slots reserved for
superusers, so every role sees the same limit), Redis and PgBouncer. An idle
scheduler and two workers, one of which just ran a job, hold one connection
each, which leaves room for ``reprogrid status`` and a psql session; a fleet
job runs through PgBouncer in transaction mode as it does straight to PostgreSQL.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from conftest import service_unavailable
from processes import Fleet, all_done, store_files, wait_until
from services import OwnPostgres, OwnRedis, free_port
from sqlalchemy import func, select

from reprogrid.models import Cell, Worker, open_database

GRID = ["--prompt", "a fox", "--seeds", "0-7", "--steps", "2", "--width", "32", "--height", "32"]
IDLE_PROCESSES = 3  # a scheduler and two workers
STATUS_CALLS = 8


@pytest.fixture
def small_postgres():
    """A PostgreSQL of the test's own that takes 5 connections, from any role."""
    database = OwnPostgres()
    with (database.data / "postgresql.auto.conf").open("a") as conf:
        conf.write("max_connections = 5\nsuperuser_reserved_connections = 0\n")
    database.start()
    yield database
    database.remove()


class OwnPgBouncer:
    """PgBouncer in transaction mode in front of a test's own PostgreSQL."""

    def __init__(self, database: OwnPostgres) -> None:
        if shutil.which("pgbouncer") is None:
            service_unavailable("PgBouncer", FileNotFoundError("pgbouncer is not installed"))
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        folder = database.folder
        self.config = folder / "pgbouncer.ini"
        self.config.write_text(
            f"[databases]\npostgres = host=127.0.0.1 port={database.port} dbname=postgres\n"
            f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {self.port}\n"
            f"unix_socket_dir =\nauth_type = trust\nauth_file = {folder / 'users.txt'}\n"
            f"pool_mode = transaction\nlogfile = {folder / 'pgbouncer.log'}\n"
        )
        (folder / "users.txt").write_text('"postgres" ""\n')
        for path in (self.config, folder / "users.txt"):
            shutil.chown(path, "postgres")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start it (as the postgres user: PgBouncer refuses to run as root) and wait for it."""
        self.process = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", "pgbouncer", "--quiet", str(self.config)],
            stderr=subprocess.DEVNULL,  # runuser's "Session terminated"; the log has the rest
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                psycopg.connect(self.url, prepare_threshold=None).close()
                return
            except psycopg.OperationalError:
                time.sleep(0.1)
        raise AssertionError("own pgbouncer did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait()


def client_connections(url: str) -> int:
    """Client connections to the server, this one excepted."""
    with psycopg.connect(url) as connection:
        return connection.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        ).fetchone()[0]


def count_in(url: str, query) -> int:
    """One count, on a connection closed at once (the test's own must not linger)."""
    db = open_database(url)
    try:
        with db.sessions() as session:
            return session.scalar(query)
    finally:
        db.dispose()


def test_a_fleet_idle_after_a_job_leaves_room_for_status_and_psql_within_five_connections(
    small_postgres: OwnPostgres, own_redis: OwnRedis, tmp_path: Path
) -> None:
    fleet = Fleet(small_postgres.url, own_redis.url, tmp_path)
    done = select(func.count()).where(Cell.status == "done")
    try:
        assert fleet.command("submit", *GRID, "--batch-size", "1").returncode == 0
        fleet.scheduler()
        fleet.worker("w1")
        wait_until(lambda: count_in(fleet.db_url, done) == 8, 120, "the job", fleet)
        fleet.worker("w2")
        workers = select(func.count()).select_from(Worker)
        wait_until(lambda: count_in(fleet.db_url, workers) == 2, 60, "two workers", fleet)
        time.sleep(6)  # a heartbeat and many scheduler passes
        held = client_connections(fleet.db_url)
        with psycopg.connect(fleet.db_url):  # a psql session stays open meanwhile
            statuses = [fleet.command("status") for _ in range(STATUS_CALLS)]
    finally:
        fleet.stop()
    print(f"an idle scheduler and 2 workers (one idle after a job) hold {held} connections")
    assert held <= IDLE_PROCESSES
    assert [s.returncode for s in statuses] == [0] * STATUS_CALLS, statuses[-1].stderr


def test_a_fleet_job_finishes_through_pgbouncer_in_transaction_mode(
    small_postgres: OwnPostgres, own_redis: OwnRedis, tmp_path: Path
) -> None:
    bouncer = OwnPgBouncer(small_postgres)
    bouncer.start()
    fleet = Fleet(bouncer.url, own_redis.url, tmp_path)
    db = open_database(bouncer.url)
    try:
        assert fleet.command("submit", *GRID, "--batch-size", "2").returncode == 0
        fleet.scheduler()
        fleet.worker("w1")
        wait_until(lambda: all_done(db, 1, 8), 120, "the job to finish", fleet)
        status = fleet.command("status", "1")
    finally:
        fleet.stop()
        db.dispose()
        bouncer.stop()
    assert status.returncode == 0, status.stderr
    assert len(store_files(fleet.store)) == 8
