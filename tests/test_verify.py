"""Regenerate and verify: images rebuilt from their records, and checks of the stored files.

Jobs here are 2 prompts x 4 seeds on builtin:tiny (64x64, 2 steps), batch size
4, run with one CPU thread; regeneration runs the real pipeline.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import Cli
from sqlalchemy import select

from reprogrid.config import Settings
from reprogrid.models import Batch, Environment, Verification, Worker, open_database
from reprogrid.scheduler.checkpoint_refs import BUILTIN_DIR
from reprogrid.worker.store import encode_png, file_sha256, read_png

GRID = [
    "--prompt",
    "a red fox",
    "--prompt",
    "a blue bird",
    "--seeds",
    "0-3",
    "--steps",
    "2",
    "--width",
    "64",
    "--height",
    "64",
    "--batch-size",
    "4",
]


def run_job(cli: Cli, *flags: str) -> None:
    result = cli("run", *GRID, *flags)
    assert result.exit_code == 0, result.output


def fresh_process(cli: Cli, *args: str) -> subprocess.CompletedProcess[str]:
    """``reprogrid`` in a new Python process, against the same database and store."""
    argv = [sys.executable, "-m", "reprogrid", "--db", cli.db_url, "--store", str(cli.store)]
    return subprocess.run(
        [*argv, *args], cwd=cli.cwd, capture_output=True, text=True, timeout=300, check=False
    )


def verdicts(rows: list[dict]) -> dict[int, str]:
    return {row["image_id"]: row["verdict"] for row in rows}


def stored_image(cli: Cli, image_id: int) -> tuple[Path, dict]:
    shown = cli("show", str(image_id), "--format", "json")
    record = json.loads(shown.output)
    return Path(record["path"]), record


def test_verify_in_a_fresh_process_finds_every_image_of_a_batched_job_identical(cli: Cli):
    run_job(cli)
    result = fresh_process(cli, "verify", "1", "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert verdicts(rows) == dict.fromkeys(range(1, 9), "identical")
    assert {(row["mode"], row["details"]["batch_size"]) for row in rows} == {("batch", 4)}
    assert all(row["details"]["environment_differences"] == {} for row in rows)


def test_a_batch_invariant_job_regenerates_every_image_alone_bit_for_bit(cli: Cli):
    run_job(cli, "--batch-invariant")
    result = fresh_process(cli, "verify", "1", "--alone", "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert verdicts(rows) == dict.fromkeys(range(1, 9), "identical")
    assert {(row["mode"], row["details"]["batch_size"]) for row in rows} == {("alone", 1)}


def test_verify_checks_only_the_asked_images_each_in_a_replay_of_its_batch(
    cli: Cli, sqlite_url: str
):
    run_job(cli)
    result = cli("verify", "--image", "2", "--image", "3", "--image", "6", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(r["image_id"], r["details"]["original_batch_id"]) for r in rows] == [
        (2, 1),
        (3, 1),
        (6, 2),
    ]
    assert {row["details"]["batch_size"] for row in rows} == {4}
    db = open_database(sqlite_url)
    with db.sessions() as session:
        assert session.scalar(select(Verification.id).order_by(Verification.id.desc())) == 3


def test_regenerate_out_writes_the_original_png_byte_for_byte(cli: Cli, tmp_path: Path):
    run_job(cli)
    path, record = stored_image(cli, 6)
    out = tmp_path / "again.png"
    result = cli("regenerate", "6", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "image 6: identical" in result.output
    assert "its original batch 2: 4 images, this one at position 2" in result.output
    assert file_sha256(out) == record["png_sha256"] == file_sha256(path)


def test_another_thread_count_is_reported_as_an_environment_difference_with_its_real_verdict(
    cli: Cli,
):
    import torch

    run_job(cli)
    threads_before = torch.get_num_threads()
    result = cli("regenerate", "1", "--threads", "2", "--format", "json")
    row = json.loads(result.output)
    assert row["details"]["environment_differences"]["threads"] == [1, 2]
    assert row["environment"]["threads"] == 2
    _, record = stored_image(cli, 1)
    if row["pixel_sha256"] == record["pixel_sha256"]:
        assert row["verdict"] == "identical"
    else:
        expected = "close" if row["max_abs_diff"] <= row["details"]["tolerance"] else "different"
        assert row["verdict"] == expected
    assert result.exit_code == (0 if row["verdict"] in {"identical", "close"} else 1)
    assert torch.get_num_threads() == threads_before  # the process-wide setting is put back


def test_regenerate_alone_reports_a_batch_of_one(cli: Cli):
    run_job(cli)
    result = cli("regenerate", "2", "--alone", "--format", "json")
    row = json.loads(result.output)
    assert (row["mode"], row["details"]["batch_size"]) == ("alone", 1)
    assert row["verdict"] in {"identical", "close", "different"}


def copy_of_tiny(tmp_path: Path) -> Path:
    model = tmp_path / "tiny-copy"
    shutil.copytree(BUILTIN_DIR / "tiny", model)
    return model


def test_changed_checkpoint_files_are_reported_by_name(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from safetensors.numpy import load_file, save_file

    monkeypatch.setenv("REPROGRID_HASH_CACHE", str(tmp_path / "hashes.json"))
    model = copy_of_tiny(tmp_path)
    run_job(cli, "--model", str(model))
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    save_file({k: v * np.float32(1.5) for k, v in tensors.items()}, weights, {"format": "pt"})

    result = cli("regenerate", "1")
    assert result.exit_code == 1
    assert "image 1: different" in result.output
    assert (
        "checkpoint files: changed since the original run:"
        " unet/diffusion_pytorch_model.safetensors (changed)" in result.output
    )


def test_verify_records_an_error_naming_the_checkpoint_when_it_is_gone(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("REPROGRID_HASH_CACHE", str(tmp_path / "hashes.json"))
    model = copy_of_tiny(tmp_path)
    run_job(cli, "--model", str(model))
    shutil.rmtree(model)
    result = cli("verify", "1", "--format", "json")
    assert result.exit_code == 1
    rows = json.loads(result.output)
    assert set(verdicts(rows).values()) == {"error"}
    assert all(row["details"]["error"].startswith("checkpoint: ") for row in rows)


def rewrite_png(path: Path, pixels: np.ndarray, chunks: dict[str, str]) -> None:
    path.write_bytes(encode_png(pixels, chunks))


def test_files_only_names_the_image_whose_pixel_changed(cli: Cli):
    run_job(cli)
    path, _ = stored_image(cli, 3)
    pixels, chunks = read_png(path)
    pixels = pixels.copy()
    pixels[10, 20, 0] ^= 1
    rewrite_png(path, pixels, chunks)
    result = cli("verify", "1", "--files-only")
    assert result.exit_code == 1
    flagged = [line.split() for line in result.output.splitlines() if "pixels-changed" in line]
    assert [line[0] for line in flagged if line[0].isdigit()] == ["3"]
    assert "7 of 8 files as recorded" in result.output


def test_files_only_reports_a_metadata_change_as_a_file_change(cli: Cli):
    run_job(cli)
    path, _ = stored_image(cli, 5)
    pixels, chunks = read_png(path)
    rewrite_png(path, pixels, {**chunks, "parameters": "edited by hand"})
    result = cli("verify", "1", "--files-only", "--format", "json")
    assert result.exit_code == 1
    rows = json.loads(result.output)
    assert verdicts(rows) == {**dict.fromkeys(range(1, 9), "identical"), 5: "file-changed"}


def test_files_only_reports_a_missing_file(cli: Cli):
    run_job(cli)
    path, _ = stored_image(cli, 8)
    path.unlink()
    result = cli("verify", "--image", "8", "--image", "1", "--files-only", "--format", "json")
    assert result.exit_code == 1
    assert verdicts(json.loads(result.output)) == {1: "identical", 8: "missing"}


def test_files_only_never_imports_torch(cli: Cli):
    run_job(cli)
    script = (
        "import sys\n"
        "from reprogrid.cli import main\n"
        f"argv = ['--db', {cli.db_url!r}, '--store', {str(cli.store)!r}, 'verify', '1',"
        " '--files-only']\n"
        "try:\n"
        "    main(argv)\n"
        "except SystemExit as exit:\n"
        "    print('exit', exit.code)\n"
        "print('torch loaded:', 'torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert "8 of 8 files as recorded" in result.stdout, result.stderr
    assert "exit 0" in result.stdout
    assert "torch loaded: False" in result.stdout


def test_query_filters_images_by_verdict(cli: Cli):
    run_job(cli)
    path, _ = stored_image(cli, 4)
    pixels, _ = read_png(path)
    rewrite_png(path, pixels, {})
    cli("verify", "1", "--files-only")
    result = cli("query", "--job", "1", "--verdict", "file-changed", "--format", "json")
    assert [row["image_id"] for row in json.loads(result.output)] == [4]


def test_show_lists_every_verification_of_an_image(cli: Cli):
    run_job(cli)
    cli("verify", "--image", "2")
    cli("verify", "--image", "2", "--files-only")
    _, record = stored_image(cli, 2)
    assert [(v["mode"], v["verdict"]) for v in record["verifications"]] == [
        ("batch", "identical"),
        ("files", "identical"),
    ]


def test_verifications_counts_images_once_per_pair_of_environments(cli: Cli):
    run_job(cli)
    cli("verify", "1")
    cli("verify", "1")
    cli("verify", "1", "--threads", "2")
    result = cli("verifications", "--format", "json")
    rows = json.loads(result.output)
    same, other = rows
    assert (same["original_env"], same["verifier_env"], same["identical"]) == (1, 1, 8)
    assert same["differs_in"] == ""
    assert other["original_env"] == 1 and other["verifier_env"] != 1
    assert other["differs_in"] == "threads"
    assert sum(other[v] for v in ("identical", "close", "different", "error")) == 8


def test_verify_queue_forms_one_pending_verify_batch_per_original_batch(cli: Cli, sqlite_url: str):
    run_job(cli)
    result = cli("verify", "1", "--queue", "--format", "json")
    assert result.exit_code == 0, result.output
    queued = json.loads(result.output)
    db = open_database(sqlite_url)
    with db.sessions() as session:
        batches = {b.id: b for b in session.scalars(select(Batch))}
    made = [batches[1].cell_ids, batches[2].cell_ids]
    assert [batches[i].cell_ids for i in queued["batch_ids"]] == made
    states = {(batches[i].kind, batches[i].status, batches[i].queue) for i in queued["batch_ids"]}
    assert states == {("verify", "pending", "default")}


def test_verify_worker_queues_on_that_workers_queue(cli: Cli, sqlite_url: str):
    run_job(cli)
    db = open_database(sqlite_url)
    with db.sessions() as session:
        session.add(
            Worker(
                name="h100-1", hostname="gpu", pid=1, device="cuda", queue="h100", checkpoints=[]
            )
        )
        session.commit()
    result = cli("verify", "--image", "7", "--worker", "h100-1", "--format", "json")
    (batch_id,) = json.loads(result.output)["batch_ids"]
    with db.sessions() as session:
        assert session.get(Batch, batch_id).queue == "h100"


def test_a_worker_runs_a_verify_batch_and_records_one_row_per_image(
    cli: Cli, settings: Settings, sqlite_url: str
):
    from reprogrid.worker.execute import WorkerContext, execute_batch
    from reprogrid.worker.verify import verify_batch

    run_job(cli)
    assert cli("verify", "--image", "5", "--image", "6", "--queue").exit_code == 0
    db = open_database(sqlite_url)
    with db.sessions() as session:
        (batch_id,) = session.scalars(select(Batch.id).where(Batch.kind == "verify"))
    ctx = WorkerContext.start(settings, db, "cpu", "worker-1")
    outcome = execute_batch(ctx, batch_id, work=verify_batch)
    assert (outcome.status, outcome.images) == ("done", 2)
    with db.sessions() as session:
        rows = session.scalars(select(Verification).order_by(Verification.image_id)).all()
        assert [(v.image_id, v.verdict, v.mode) for v in rows] == [
            (5, "identical", "batch"),
            (6, "identical", "batch"),
        ]
        assert {v.details["verify_batch_id"] for v in rows} == {batch_id}
        assert session.get(Batch, batch_id).status == "done"
    assert execute_batch(ctx, batch_id, work=verify_batch).status == "skipped"


def test_a_queued_verification_carries_its_replay_options_to_the_worker(
    cli: Cli, settings: Settings, sqlite_url: str
):
    from reprogrid.worker.execute import WorkerContext, execute_batch
    from reprogrid.worker.verify import verify_batch

    run_job(cli)
    queued = cli(
        "verify", "--image", "5", "--queue", "--alone", "--threads", "2", "--tolerance", "0"
    )
    assert queued.exit_code == 0, queued.output
    db = open_database(sqlite_url)
    with db.sessions() as session:
        (batch,) = session.scalars(select(Batch).where(Batch.kind == "verify"))
    assert batch.replay == {"alone": True, "threads": 2, "tolerance": 0}
    ctx = WorkerContext.start(settings, db, "cpu", "worker-1")
    assert execute_batch(ctx, batch.id, work=verify_batch).status == "done"
    with db.sessions() as session:
        (row,) = session.scalars(select(Verification))
        assert (row.image_id, row.mode) == (5, "alone")
        assert session.get(Environment, row.environment_id).threads == 2
        assert row.verdict in ("identical", "different")  # no "close" at tolerance 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "Error: job: give a JOB or --image IDs"),
        (("1", "--image", "2"), "Error: job: give a JOB or --image IDs"),
        (("9",), "Error: job: no job 9"),
        (("--image", "99"), "Error: image: no image 99"),
        (("1", "--worker", "nobody"), "Error: worker: no worker named 'nobody'"),
        (("1", "--files-only", "--alone"), "Error: files-only: regeneration options"),
        (("1", "--queue", "--device", "cpu"), "Error: device: a queued verification runs"),
    ],
)
def test_bad_verify_input_is_one_line_and_exit_code_2(cli: Cli, args: tuple[str, ...], message):
    run_job(cli)
    result = cli("verify", *args)
    assert result.exit_code == 2
    assert result.output.strip().startswith(message)
    assert len(result.output.strip().splitlines()) == 1


def test_regenerate_an_unknown_image_is_bad_input(cli: Cli, db):
    result = cli("regenerate", "42")
    assert result.exit_code == 2
    assert result.output.startswith("Error: image: no image")


@pytest.mark.postgres
def test_verify_report_and_verdict_filter_work_on_postgresql(postgres_url: str, tmp_path: Path):
    cli = Cli(postgres_url, tmp_path / "store", tmp_path)
    run_job(cli)
    assert cli("verify", "1", "--sample", "3").exit_code == 0
    (row,) = json.loads(cli("verifications", "--job", "1", "--format", "json").output)
    assert (row["mode"], row["identical"]) == ("batch", 3)
    shown = json.loads(cli("query", "--verdict", "identical", "--format", "json").output)
    assert len(shown) == 3
