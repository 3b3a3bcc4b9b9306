"""Broker trouble in the logs: one line that says what is wrong, never a traceback.

The tests own their Redis. A scheduler given a wrong password says so once,
keeps trying less often, and dispatches as soon as the password is right; a
worker of another database refuses each message in one line.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from processes import Fleet, all_done, wait_until
from services import OwnRedis

from reprogrid.models import open_database

GRID = ["--prompt", "a fox", "--seeds", "0-3", "--steps", "2", "--width", "32", "--height", "32"]
PASSWORD = "right"
WRONG_PASSWORD = "invalid username-password pair"


@pytest.fixture
def locked_redis(tmp_path: Path):
    """An own Redis that requires ``PASSWORD``."""
    server = OwnRedis(tmp_path)
    server.start()
    redis.Redis.from_url(server.url).config_set("requirepass", PASSWORD)
    yield server
    server.stop()


def _with_password(url: str, password: str) -> str:
    return url.replace("redis://", f"redis://:{password}@")


def _scheduler_with_wrong_password(server: OwnRedis, tmp_path: Path) -> Fleet:
    fleet = Fleet(
        f"sqlite:///{tmp_path / 'fleet.db'}", _with_password(server.url, "wrong"), tmp_path
    )
    assert fleet.command("submit", *GRID).returncode == 0
    fleet.scheduler()
    return fleet


def test_a_scheduler_with_a_wrong_broker_password_says_so_once_and_keeps_running(
    locked_redis: OwnRedis, tmp_path: Path
) -> None:
    fleet = _scheduler_with_wrong_password(locked_redis, tmp_path)
    try:
        wait_until(lambda: WRONG_PASSWORD in fleet.logs(), 30, "the error", fleet)
        time.sleep(3)  # passes every 0.2 s: a line each would show by now
        running = fleet.processes[0][0].poll() is None
    finally:
        fleet.stop()
    assert running
    assert fleet.logs().count(WRONG_PASSWORD) == 1, fleet.logs()
    assert "Traceback" not in fleet.logs()


def test_a_scheduler_dispatches_once_the_broker_password_is_right(
    locked_redis: OwnRedis, tmp_path: Path
) -> None:
    fleet = _scheduler_with_wrong_password(locked_redis, tmp_path)
    try:
        wait_until(lambda: WRONG_PASSWORD in fleet.logs(), 30, "the error", fleet)
        redis.Redis.from_url(_with_password(locked_redis.url, PASSWORD)).config_set(
            "requirepass", "wrong"
        )
        wait_until(lambda: "dispatching again" in fleet.logs(), 90, "the recovery", fleet)
    finally:
        fleet.stop()
    assert "published 1," in fleet.logs()


def test_a_worker_of_another_database_refuses_each_message_in_one_line(tmp_path: Path) -> None:
    server = OwnRedis(tmp_path)
    server.start()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ours = Fleet(f"sqlite:///{tmp_path / 'a' / 'a.db'}", server.url, tmp_path / "a")
    stray = Fleet(f"sqlite:///{tmp_path / 'b' / 'b.db'}", server.url, tmp_path / "b")
    db = open_database(ours.db_url)
    try:
        assert ours.command("submit", *GRID, "--batch-size", "2").returncode == 0
        stray.worker("stray")
        ours.scheduler()
        wait_until(lambda: "refusing messages" in stray.logs(), 60, "a refusal", stray)
        ours.worker("ours")
        wait_until(lambda: all_done(db, 1, 4), 120, "the job to finish", ours)
    finally:
        ours.stop()
        stray.stop()
        server.stop()
        db.dispose()
    log = stray.logs()
    assert "Traceback" not in log and "Reject" not in log, log
    assert log.count("refusing messages") == log.count(" received"), log
