"""Ctrl-C of ``reprogrid run``: claims given back at once, and ``retry`` finishes the job.

A real ``reprogrid run`` process is sent SIGINT mid-job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select

from reprogrid.models import Batch, Database, Image, Job, open_database

SPEC = ["--prompt", "a fox", "--seeds", "0-11", "--steps", "4", "--batch-size", "1"]
TINY = ["--width", "32", "--height", "32", "--device", "cpu"]


def reprogrid(tmp_path: Path, db_url: str, *args: str) -> list[str]:
    store = str(tmp_path / "store")
    return [sys.executable, "-m", "reprogrid", "--db", db_url, "--store", store, *args]


def wait_for_images(db: Database, count: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        with db.sessions() as session:
            if session.scalar(select(func.count()).select_from(Image)) >= count:
                return
        time.sleep(0.05)
    raise AssertionError(f"no {count} images: {process.communicate()}")


def test_ctrl_c_gives_the_claims_back_and_retry_finishes_the_job(tmp_path: Path):
    db_url = f"sqlite:///{tmp_path / 'run.db'}"
    db = open_database(db_url)
    env = {**os.environ, "REPROGRID_THREADS": "1"}
    run = reprogrid(tmp_path, db_url, "run", *SPEC, *TINY)
    process = subprocess.Popen(run, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_images(db, 2, process)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "resume it with: reprogrid retry 1" in stderr and "Traceback" not in stderr
    with db.sessions() as session:
        assert session.get(Job, 1).status == "queued"
        assert session.scalar(select(func.count()).where(Batch.status == "running")) == 0
    retry = reprogrid(tmp_path, db_url, "retry", "1", "--device", "cpu")
    result = subprocess.run(retry, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("job 1 done: 12 of 12 images")
    with db.sessions() as session:
        assert sorted(session.scalars(select(Image.cell_id))) == list(range(1, 13))
    db.dispose()


def test_retry_takes_back_the_batches_of_a_run_that_was_killed(tmp_path: Path):
    db_url = f"sqlite:///{tmp_path / 'run.db'}"
    db = open_database(db_url)
    env = {**os.environ, "REPROGRID_THREADS": "1"}
    run = reprogrid(tmp_path, db_url, "run", *SPEC, *TINY)
    process = subprocess.Popen(run, env=env, cwd=tmp_path, stderr=subprocess.DEVNULL)
    try:
        wait_for_images(db, 1, process)
        process.send_signal(signal.SIGKILL)  # no chance to give anything back
        process.wait(timeout=60)
    finally:
        process.kill()
    retry = reprogrid(tmp_path, db_url, "retry", "1", "--device", "cpu")
    result = subprocess.run(retry, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("job 1 done: 12 of 12 images")
    db.dispose()
