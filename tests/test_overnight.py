"""Embedded runs that end with nobody awake: persistent failures, signals, incomplete checkpoints.

``reprogrid run`` and ``retry`` never hang on a failure that does not go away,
never end in a traceback, and always say how to carry on; an incomplete
checkpoint is refused before any job is made.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import Fleet, all_done, images_by_cell, store_files, wait_until
from services import OwnRedis
from sqlalchemy import func, select
from test_interrupt import SPEC, TINY, reprogrid, wait_for_images

from reprogrid.config import Settings
from reprogrid.models import Batch, Database, Image, Job, open_database
from reprogrid.scheduler.checkpoint_refs import BUILTIN_DIR, CheckpointIncomplete
from reprogrid.scheduler.jobs import create_job
from reprogrid.scheduler.spec import validate_spec
from reprogrid.worker.embedded import GIVE_UP_SECONDS, RunStopped, run_job
from reprogrid.worker.execute import BatchOutcome, WorkerContext
from reprogrid.worker.failures import PERMANENT, error_kind

ENV = {**os.environ, "REPROGRID_THREADS": "1"}


def one_job(db: Database, cells: int = 4, **fields) -> int:
    """A job of ``cells`` 32x32 images on builtin:tiny, all in one batch, not yet run."""
    raw = {"prompts": ["a fox"], "seeds": f"0-{cells - 1}", "steps": 2, "width": 32}
    spec = validate_spec({**raw, "height": 32, "batch_size": cells, **fields}, 1000)
    return create_job(db, spec)


def context(db: Database, store: Path) -> WorkerContext:
    settings = Settings(db_url="", store=store, threads=1, retry_delay_seconds=1)
    return WorkerContext.start(settings, db, "cpu", "run-test")


def running_batches(db: Database) -> int:
    with db.sessions() as session:
        return session.scalar(select(func.count()).where(Batch.status == "running"))


def test_a_run_sleeps_until_a_failed_batch_is_due_and_then_finishes(db: Database, tmp_path: Path):
    store = tmp_path / "store"
    store.write_text("a file where the store should be")
    job_id = one_job(db)

    def fix_the_store(outcome: BatchOutcome) -> None:
        if outcome.status == "retrying":
            store.unlink()

    assert run_job(context(db, store), job_id, on_batch=fix_the_store) == "done"
    with db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Image)) == 4


def test_a_failure_that_persists_stops_the_run_and_gives_its_claims_back(
    db: Database, tmp_path: Path
):
    store = tmp_path / "store"
    store.write_text("a file where the store should be")
    job_id = one_job(db)
    with pytest.raises(RunStopped) as stopped:
        run_job(context(db, store), job_id, give_up_seconds=2)
    assert stopped.value.error.startswith(("FileExistsError", "NotADirectoryError"))
    assert str(store) in stopped.value.error
    assert running_batches(db) == 0


def test_a_checkpoint_folder_with_only_model_index_json_is_refused_naming_model(
    tmp_path: Path,
):
    model = tmp_path / "half-copied"
    model.mkdir()
    shutil.copy(BUILTIN_DIR / "tiny" / "model_index.json", model)
    result = subprocess.run(
        reprogrid(tmp_path, f"sqlite:///{tmp_path / 'r.db'}", "run", "--model", str(model)),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: model: ")
    assert "unet/ is missing" in result.stderr


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ("unet/config.json", "unet/config.json is missing"),
        ("vae/diffusion_pytorch_model.safetensors", "vae/ holds no weights file"),
        ("scheduler/scheduler_config.json", "scheduler/scheduler_config.json is missing"),
    ],
)
def test_a_checkpoint_missing_a_config_or_weights_is_refused_when_validated(
    tmp_path: Path, missing: str, named: str
):
    model = tmp_path / "tiny-copy"
    shutil.copytree(BUILTIN_DIR / "tiny", model)
    (model / missing).unlink()
    with pytest.raises(ValueError, match=f"^model: .*{named}"):
        validate_spec({"model": str(model), "prompts": ["a fox"]}, 10)


def test_a_config_json_gone_at_run_time_fails_the_batch_at_once(db: Database, tmp_path: Path):
    model = tmp_path / "tiny-copy"
    shutil.copytree(BUILTIN_DIR / "tiny", model)
    job_id = one_job(db, model=str(model))
    (model / "unet" / "config.json").unlink()
    assert run_job(context(db, tmp_path / "store"), job_id) == "failed"
    with db.sessions() as session:
        (batch,) = session.scalars(select(Batch))
    assert batch.attempts == 1 and "unet/config.json is missing" in batch.error
    assert error_kind(CheckpointIncomplete("x")) == PERMANENT


@pytest.mark.parametrize(("signum", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_stop_run_as_ctrl_c_does(tmp_path: Path, signum: int, exit_code: int):
    db_url = f"sqlite:///{tmp_path / 'run.db'}"
    db = open_database(db_url)
    run = reprogrid(tmp_path, db_url, "run", *SPEC, *TINY)
    process = subprocess.Popen(run, env=ENV, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_images(db, 2, process)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == exit_code, stderr
    assert "Traceback" not in stderr
    (line,) = stderr.splitlines()
    assert line.startswith(f"job 1 stopped by {signal.Signals(signum).name}; ")
    assert line.endswith("images recorded; resume it with: reprogrid retry 1")
    with db.sessions() as session:
        assert session.get(Job, 1).status == "queued"
    assert running_batches(db) == 0
    db.dispose()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (about ten 32x32 PNGs), unmounted afterwards; needs root."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs: {mounted.stderr!r}")
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr!r}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def test_a_full_disk_ends_run_with_the_retry_hint_and_retry_then_completes(
    tmp_path: Path, small_disk: Path
):
    db_url = f"sqlite:///{tmp_path / 'run.db'}"
    store = ["--store", str(small_disk / "store")]
    grid = ["--prompt", "a fox", "--seeds", "0-39", "--steps", "2", "--batch-size", "4"]
    started = time.monotonic()
    result = subprocess.run(
        [*reprogrid(tmp_path, db_url, "run", *grid, *TINY), *store],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    seconds = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("job 1 stopped: OSError: [Errno 28] No space left on device")
    assert last.endswith("images recorded; resume it with: reprogrid retry 1")
    assert GIVE_UP_SECONDS <= seconds < 120, seconds

    subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)
    retry = subprocess.run(
        [*reprogrid(tmp_path, db_url, "retry", "1", "--device", "cpu"), *store],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert retry.returncode == 0, retry.stderr
    assert retry.stdout.startswith("job 1 done: 40 of 40 images")


def test_a_full_disk_holds_a_fleet_job_with_the_reason_in_status_until_space_is_freed(
    own_redis: OwnRedis, tmp_path: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch
):
    # Short backoffs, as many attempts as it takes: the defaults ride out 20 minutes.
    monkeypatch.setenv("REPROGRID_RETRY_DELAY_SECONDS", "1")
    monkeypatch.setenv("REPROGRID_RETRY_MAX_DELAY_SECONDS", "2")
    monkeypatch.setenv("REPROGRID_MAX_TRANSIENT_ATTEMPTS", "1000")
    fleet = Fleet(f"sqlite:///{tmp_path / 'fleet.db'}", own_redis.url, tmp_path)
    fleet.store = small_disk / "store"
    db = open_database(fleet.db_url)
    grid = ["--prompt", "a fox", "--seeds", "0-39", "--steps", "2", "--batch-size", "4"]
    try:
        submitted = fleet.command("submit", *grid, "--width", "32", "--height", "32")
        assert submitted.returncode == 0, submitted.stderr
        fleet.scheduler()
        fleet.worker("w1")
        wait_until(lambda: _retrying_for_space(db), 120, "a batch to wait for space", fleet)
        status = fleet.command("status")
        assert status.returncode == 0, status.stderr
        assert "to run again after OSError: [Errno 28] No space left on device" in status.stdout
        subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)
        wait_until(lambda: all_done(db, 1, 40), 180, "the job to finish", fleet)
        assert "to run again" not in fleet.command("status").stdout
    finally:
        fleet.stop()
    assert all(len(paths) == 1 for paths in images_by_cell(db, 1).values())
    assert len(store_files(fleet.store)) == 40
    db.dispose()


def _retrying_for_space(db: Database) -> bool:
    waiting = select(func.count()).where(
        Batch.status == "pending", Batch.error.contains("No space left on device")
    )
    with db.sessions() as session:
        return session.scalar(waiting) > 0
