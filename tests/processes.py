"""Real ``reprogrid`` processes for the fleet tests: schedulers, workers and embedded runs.

Every process runs ``python -m reprogrid`` with the test's database, broker and
store in its environment, logs to a file under the test's temporary folder, and
is killed when the test ends, whatever happens.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import func, select

from reprogrid.models import Batch, Cell, Checkpoint, Database, Image
from reprogrid.scheduler.control import cancel_job
from reprogrid.scheduler.jobs import form_batches
from reprogrid.worker import records

LEASE_SECONDS = 10  # the shortest lease the settings accept: lost work comes back fast


class Fleet:
    """Starts reprogrid processes against one database, broker and store."""

    def __init__(self, db_url: str, broker_url: str, tmp_path: Path) -> None:
        self.db_url, self.broker_url, self.tmp_path = db_url, broker_url, tmp_path
        self.store = tmp_path / "store"
        self.processes: list[tuple[subprocess.Popen, Path]] = []

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "REPROGRID_DB": self.db_url,
            "REPROGRID_BROKER": self.broker_url,
            "REPROGRID_STORE": str(self.store),
            "REPROGRID_THREADS": "1",
            "REPROGRID_LEASE_SECONDS": str(LEASE_SECONDS),
            "REPROGRID_MAX_STEPS": "100000",  # slow batches for the cancel and lease tests
        }

    def command(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run one command to completion."""
        return subprocess.run(
            [sys.executable, "-m", "reprogrid", *args],
            env=self.env,
            cwd=self.tmp_path,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, *args: str) -> subprocess.Popen:
        """Start a long-running command; its output goes to a log file."""
        log = self.tmp_path / f"{args[0]}-{len(self.processes)}.log"
        with log.open("w") as stream:
            process = subprocess.Popen(
                [sys.executable, "-m", "reprogrid", *args],
                env=self.env,
                cwd=self.tmp_path,
                stdout=stream,
                stderr=subprocess.STDOUT,
            )
        self.processes.append((process, log))
        return process

    def scheduler(self, *args: str) -> subprocess.Popen:
        return self.start("scheduler", "--interval", "0.2", *args)

    def worker(self, name: str, *args: str) -> subprocess.Popen:
        return self.start("worker", "--device", "cpu", "--name", name, *args)

    def logs(self) -> str:
        """Every process's log, for a failing test's report."""
        return "\n".join(f"--- {log.name}\n{log.read_text()}" for _, log in self.processes)

    def stop(self) -> None:
        """SIGTERM every process still running, then SIGKILL what does not stop."""
        for process, _ in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _ in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until(condition: Callable[[], Any], timeout: float, what: str, fleet: Fleet) -> Any:
    """Poll ``condition`` until it is truthy; fail with the processes' logs after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{fleet.logs()}")


def cell_counts(db: Database, job_id: int) -> dict[str, int]:
    """Cells of the job by status."""
    with db.sessions() as session:
        return dict(
            session.execute(
                select(Cell.status, func.count()).where(Cell.job_id == job_id).group_by(Cell.status)
            ).all()
        )


def all_done(db: Database, job_id: int, cells: int) -> bool:
    return cell_counts(db, job_id).get("done", 0) == cells


def images_by_cell(db: Database, job_id: int) -> dict[tuple[str | None, int], list[str]]:
    """Every image row of the job, as (prompt, seed) -> pixel hashes (one, if all is well)."""
    with db.sessions() as session:
        rows = session.execute(
            select(Cell.prompt, Cell.seed, Image.pixel_sha256)
            .join(Image, Image.cell_id == Cell.id)
            .where(Cell.job_id == job_id)
        ).all()
    found: dict[tuple[str | None, int], list[str]] = {}
    for prompt, seed, pixel in rows:
        found.setdefault((prompt, seed), []).append(pixel)
    return found


def store_files(store: Path) -> list[Path]:
    """The PNG files in the store (temporary files excluded)."""
    return [p for p in store.rglob("*.png") if not p.name.startswith(".tmp-")]


def running_batch_of(
    db: Database, worker: str, besides: Collection[tuple[int, int]] = ()
) -> tuple[int, int] | None:
    """(id, attempt) of a batch the worker is running now, other than ``besides``."""
    with db.sessions() as session:
        query = select(Batch.id, Batch.attempts).where(
            Batch.worker == worker, Batch.status == "running"
        )
        running = session.execute(query).all()
    return next((tuple(row) for row in running if tuple(row) not in besides), None)


def generating(db: Database, worker: str) -> int | None:
    """The batch the worker is running, once its checkpoint is loaded (so it is denoising)."""
    with db.sessions() as session:
        loaded = session.scalar(select(func.count()).select_from(Checkpoint))
    running = running_batch_of(db, worker) if loaded else None
    return running[0] if running else None


def image_batches(db: Database, job_id: int) -> set[int]:
    """The batches the job's images were computed in."""
    with db.sessions() as session:
        return set(
            session.scalars(
                select(Image.batch_id)
                .join(Cell, Cell.id == Image.cell_id)
                .where(Cell.job_id == job_id)
            )
        )


def queued_messages(broker_url: str, queue: str = "default") -> list[int]:
    """Batch ids of the messages waiting in a queue, in the order workers will get them."""
    client = redis.Redis.from_url(broker_url)
    ids = []
    for raw in reversed(client.lrange(queue, 0, -1)):  # LPUSH to publish, BRPOP to consume
        message = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        ids.append(args[0])
    return ids


def interrupted_by_cancel(db: Database, job_id: int) -> int:
    """Leave a one-batch job as a worker leaves it when the job is cancelled mid-batch.

    The same calls a worker makes, without the race: claim the batch, cancel the
    job, and record the batch as interrupted. Returns the batch id.
    """
    with db.sessions() as session:
        (batch_id,) = form_batches(session, job_id)
        session.commit()
    with db.sessions() as session:
        claim = records.claim_batch(session, batch_id, "interrupted", LEASE_SECONDS)
        cancel_job(session, job_id)
        records.cancel_batch(session, claim, "interrupted")
    return batch_id
