"""A fleet end to end: real scheduler and worker processes, PostgreSQL and Redis.

Whatever happens to a message or a worker (killed mid-batch, Redis emptied,
the same batch delivered twice, a pickle message), every cell ends with
exactly one image, whose pixels are those the same spec gives with
``reprogrid run``.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path

import pytest
import redis
from conftest import Cli
from kombu import Connection
from processes import (
    Fleet,
    all_done,
    cell_counts,
    generating,
    image_batches,
    images_by_cell,
    interrupted_by_cancel,
    queued_messages,
    running_batch_of,
    store_files,
    wait_until,
)
from sqlalchemy import select

from reprogrid.config import Settings
from reprogrid.models import Batch, Database, Job, open_database
from reprogrid.scheduler.broker import RUN_BATCH_TASK, celery_app, publish_batch
from reprogrid.scheduler.jobs import form_batches

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


def write_spec(tmp_path: Path, seeds: str, steps: int, batch_size: int = 4) -> Path:
    spec = tmp_path / "grid.toml"
    spec.write_text(
        f"""
        name = "fleet"
        model = "builtin:tiny"
        prompts = ["a red fox", "a lighthouse at dusk"]
        seeds = "{seeds}"
        steps = {steps}
        width = 64
        height = 64
        batch_size = {batch_size}
        """,
        encoding="utf-8",
    )
    return spec


def submit(fleet: Fleet, spec: Path) -> tuple[int, int]:
    """Submit the spec; return (job id, cell count)."""
    result = fleet.command("submit", str(spec), "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    return answer["job_id"], answer["cells"]


def embedded_pixels(spec: Path, tmp_path: Path) -> dict[tuple[str, int], str]:
    """(prompt, seed) -> pixel_sha256 of the same spec run with ``reprogrid run``."""
    cli = Cli(f"sqlite:///{tmp_path / 'embedded.db'}", tmp_path / "embedded-store", tmp_path)
    assert cli("run", str(spec), "--device", "cpu").exit_code == 0
    rows = json.loads(cli("query", "--format", "json").output)
    return {(row["prompt"], row["seed"]): row["pixel_sha256"] for row in rows}


def assert_each_cell_done_once(db: Database, fleet: Fleet, job_id: int, cells: int) -> dict:
    images = images_by_cell(db, job_id)
    assert len(images) == cells
    assert all(len(pixels) == 1 for pixels in images.values()), "a cell has two images"
    assert cell_counts(db, job_id) == {"done": cells}
    assert len(store_files(fleet.store)) == cells
    with db.sessions() as session:
        assert session.get(Job, job_id).status == "done"
    return {cell: pixels[0] for cell, pixels in images.items()}


@pytest.fixture
def db(postgres_url: str):
    database = open_database(postgres_url)
    yield database
    database.dispose()


@pytest.fixture
def fleet(db: Database, postgres_url: str, redis_url: str, tmp_path: Path):
    fleet = Fleet(postgres_url, redis_url, tmp_path)
    yield fleet
    fleet.stop()


def test_scheduler_and_worker_complete_a_grid_with_the_pixels_of_run(
    fleet: Fleet, db: Database, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path, seeds="0-5", steps=3)
    job_id, cells = submit(fleet, spec)
    fleet.scheduler()
    fleet.worker("w1")
    wait_until(lambda: all_done(db, job_id, cells), 120, "the job to finish", fleet)
    pixels = assert_each_cell_done_once(db, fleet, job_id, cells)
    assert pixels == embedded_pixels(spec, tmp_path)


def test_worker_killed_mid_batch_twice_loses_nothing_and_duplicates_nothing(
    fleet: Fleet, db: Database, tmp_path: Path
) -> None:
    # 6 batches, each long enough that the survivor cannot finish them all while the
    # victim restarts (a restart imports torch: several seconds on a busy machine)
    spec = write_spec(tmp_path, seeds="0-11", steps=100)
    job_id, cells = submit(fleet, spec)
    fleet.scheduler("--max-in-flight", "2")
    fleet.worker("survivor")
    victim = fleet.worker("victim")
    killed: list[tuple[int, int]] = []  # (batch, attempt)
    while len(killed) < 2:
        batch = wait_until(
            lambda: running_batch_of(db, "victim", besides=killed), 120, "victim to run", fleet
        )
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        if _status(db, batch[0]) == "running":  # not a batch that ended just before the kill
            killed.append(batch)
        victim = fleet.worker("victim")  # restarted under the same name
    wait_until(lambda: all_done(db, job_id, cells), 240, "the job to finish", fleet)
    pixels = assert_each_cell_done_once(db, fleet, job_id, cells)
    with db.sessions() as session:
        assert all(session.get(Batch, b).attempts > attempt for b, attempt in killed)
    assert pixels == embedded_pixels(spec, tmp_path)


def test_redis_emptied_mid_job_still_ends_with_every_cell_done_once(
    fleet: Fleet, db: Database, tmp_path: Path
) -> None:
    """FLUSHDB on the broker's own database: for this broker, the same as FLUSHALL."""
    # 16 batches of 30 steps: the worker holds 2 of the 4 in flight (one computing, one
    # claimed ahead), so 2 wait in Redis for seconds, not for the tenth of one a fast
    # batch leaves between two polls.
    spec = write_spec(tmp_path, seeds="0-15", steps=30, batch_size=2)
    job_id, cells = submit(fleet, spec)
    fleet.scheduler("--max-in-flight", "4")
    fleet.worker("w1")
    wait_until(
        lambda: cell_counts(db, job_id).get("done") and len(queued_messages(fleet.broker_url)) >= 2,
        120,
        "work done and messages waiting",
        fleet,
    )
    redis.Redis.from_url(fleet.broker_url).flushdb()
    wait_until(lambda: all_done(db, job_id, cells), 180, "the job to finish", fleet)
    assert_each_cell_done_once(db, fleet, job_id, cells)


def test_the_same_batch_delivered_twice_yields_one_image_per_cell(
    fleet: Fleet, db: Database, tmp_path: Path
) -> None:
    job_id, cells = submit(fleet, write_spec(tmp_path, seeds="0-1", steps=3))  # one batch
    with db.sessions() as session:
        (batch_id,) = form_batches(session, job_id)
        session.commit()
    broker = celery_app(Settings(broker_url=fleet.broker_url))
    publish_batch(broker, batch_id, "default")
    publish_batch(broker, batch_id, "default")
    fleet.worker("w1")
    fleet.worker("w2")
    wait_until(lambda: all_done(db, job_id, cells), 120, "the batch to finish", fleet)
    wait_until(lambda: f"batch {batch_id} skipped" in fleet.logs(), 60, "2nd delivery", fleet)
    assert_each_cell_done_once(db, fleet, job_id, cells)
    assert fleet.logs().count(f"batch {batch_id} done") == 1


def test_a_pickle_message_is_refused_and_has_no_effect(
    fleet: Fleet, db: Database, tmp_path: Path
) -> None:
    job_id, _ = submit(fleet, write_spec(tmp_path, seeds="0-3", steps=2))  # 2 batches of 4
    with db.sessions() as session:
        pickled, plain = form_batches(session, job_id)
        session.commit()
    with Connection(fleet.broker_url) as connection:
        connection.Producer().publish(
            [[pickled], {}, {}],
            serializer="pickle",
            exchange="",
            routing_key="default",
            headers={"task": RUN_BATCH_TASK, "id": str(uuid.uuid4()), "lang": "py"},
        )
    publish_batch(celery_app(Settings(broker_url=fleet.broker_url)), plain, "default")
    fleet.worker("w1")
    wait_until(lambda: _status(db, plain) == "done", 120, "the JSON message's batch", fleet)
    assert queued_messages(fleet.broker_url) == []
    assert _status(db, pickled) == "pending"
    assert len(store_files(fleet.store)) == 4
    assert "Refusing to deserialize untrusted content of type pickle" in fleet.logs()


def test_cancel_stops_a_running_batch_between_denoising_steps(
    fleet: Fleet, db: Database, tmp_path: Path
) -> None:
    # One batch of far more steps than any machine runs before the cancel lands.
    job_id, cells = submit(fleet, write_spec(tmp_path, seeds="0-1", steps=20000))
    fleet.scheduler()
    fleet.worker("w1")
    running = wait_until(lambda: generating(db, "w1"), 120, "the batch to generate", fleet)
    result = fleet.command("cancel", str(job_id))
    assert result.returncode == 0, result.stderr
    wait_until(lambda: _status(db, running) != "running", 60, "the batch to stop", fleet)
    assert _status(db, running) == "cancelled"
    assert images_by_cell(db, job_id) == {}
    assert cell_counts(db, job_id) == {"cancelled": cells}
    assert store_files(fleet.store) == []


def test_retry_has_the_fleet_rerun_a_batch_cancelled_mid_run(
    fleet: Fleet, db: Database, tmp_path: Path
) -> None:
    job_id, cells = submit(fleet, write_spec(tmp_path, seeds="0-1", steps=3))  # one batch
    batch = interrupted_by_cancel(db, job_id)
    result = fleet.command("retry", str(job_id))
    assert result.returncode == 0, result.stderr
    fleet.scheduler()
    fleet.worker("w1")
    wait_until(lambda: all_done(db, job_id, cells), 120, "the retried job", fleet)
    assert_each_cell_done_once(db, fleet, job_id, cells)
    assert image_batches(db, job_id) == {batch}


def test_a_worker_stopped_with_sigterm_mid_batch_records_it_before_exiting(
    fleet: Fleet, db: Database, tmp_path: Path
) -> None:
    job_id, cells = submit(fleet, write_spec(tmp_path, seeds="0-1", steps=300))  # one batch
    fleet.scheduler()
    worker = fleet.worker("w1")
    running = wait_until(lambda: generating(db, "w1"), 120, "the batch to generate", fleet)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=120) == 0
    assert _status(db, running) == "done"
    assert_each_cell_done_once(db, fleet, job_id, cells)


def _held_by(db: Database, worker: str) -> list[int]:
    """The batches a worker holds the lease on: the one it computes, the one claimed ahead."""
    with db.sessions() as session:
        return list(
            session.scalars(
                select(Batch.id)
                .where(Batch.worker == worker, Batch.status == "running")
                .order_by(Batch.id)
            )
        )


def _holding_two(db: Database, worker: str) -> list[int] | None:
    held = _held_by(db, worker)
    return held if len(held) == 2 else None


def test_a_worker_claims_its_next_batch_while_one_computes(
    fleet: Fleet, db: Database, tmp_path: Path
) -> None:
    job_id, cells = submit(fleet, write_spec(tmp_path, seeds="0-7", steps=100))  # 4 batches
    fleet.scheduler()
    fleet.worker("w1")
    wait_until(lambda: _holding_two(db, "w1"), 120, "a batch claimed ahead", fleet)
    wait_until(lambda: all_done(db, job_id, cells), 180, "the job to finish", fleet)
    assert_each_cell_done_once(db, fleet, job_id, cells)


def test_a_worker_killed_holding_a_batch_claimed_ahead_loses_neither_batch(
    fleet: Fleet, db: Database, tmp_path: Path
) -> None:
    job_id, cells = submit(fleet, write_spec(tmp_path, seeds="0-3", steps=100))  # 2 batches
    fleet.scheduler()
    victim = fleet.worker("victim")
    held = wait_until(lambda: _holding_two(db, "victim"), 120, "a batch claimed ahead", fleet)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed = time.monotonic()
    fleet.worker("survivor")
    seconds = {}
    for batch in held:
        wait_until(lambda b=batch: _status(db, b) == "done", 120, f"batch {batch} rerun", fleet)
        seconds[batch] = time.monotonic() - killed
    print("seconds from the kill to each held batch done:", seconds)
    wait_until(lambda: all_done(db, job_id, cells), 180, "the job to finish", fleet)
    assert_each_cell_done_once(db, fleet, job_id, cells)
    with db.sessions() as session:
        assert {session.get(Batch, b).worker for b in held} == {"survivor"}


def test_a_worker_stopped_with_sigterm_gives_back_the_batch_it_claimed_ahead(
    fleet: Fleet, db: Database, tmp_path: Path
) -> None:
    # 2 batches, long enough that the SIGTERM lands while the first computes
    job_id, cells = submit(fleet, write_spec(tmp_path, seeds="0-3", steps=300))
    fleet.scheduler()
    worker = fleet.worker("w1")
    computing, ahead = wait_until(lambda: _holding_two(db, "w1"), 120, "a batch ahead", fleet)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=120) == 0
    assert _held_by(db, "w1") == []
    assert _status(db, computing) == "done"
    assert _status(db, ahead) in ("pending", "queued")  # waiting, for whoever comes next
    fleet.worker("w2")
    wait_until(lambda: all_done(db, job_id, cells), 180, "the job to finish", fleet)
    assert_each_cell_done_once(db, fleet, job_id, cells)


def _status(db: Database, batch_id: int) -> str:
    with db.sessions() as session:
        return session.scalar(select(Batch.status).where(Batch.id == batch_id))


def test_verify_queue_has_the_fleet_regenerate_a_job_run_with_run(db, fleet, tmp_path):
    """`verify --queue` on a job made by `run`: workers replay its batches and record verdicts."""
    spec = write_spec(tmp_path, seeds="0-2", steps=2)
    assert fleet.command("run", str(spec), "--device", "cpu").returncode == 0
    queued = fleet.command("verify", "1", "--queue")
    assert queued.returncode == 0, queued.stderr
    fleet.scheduler()
    fleet.worker("auditor")

    def verdicts():
        result = fleet.command("query", "--job", "1", "--verdict", "identical", "--format", "json")
        return len(json.loads(result.stdout)) == 6

    wait_until(verdicts, timeout=120, what="6 identical verifications", fleet=fleet)
    with db.sessions() as session:
        kinds = session.execute(select(Batch.kind, Batch.status, Batch.worker)).all()
    assert {(k, s, w) for k, s, w in kinds if k == "verify"} == {("verify", "done", "auditor")}
