"""`reprogrid export`: every image record as a flat row, recipe fields as columns, streamed."""

from __future__ import annotations

import csv
import gc
import json
import tracemalloc
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from reprogrid.models import Batch, Cell, Checkpoint, Environment, Image, open_database
from reprogrid.models.queries import CellFilter, query_cells
from reprogrid.models.recipes import job_recipes
from reprogrid.review.export import EXPORT_COLUMNS, RECIPE_COLUMNS, image_rows
from reprogrid.scheduler.grid import cell_recipe
from reprogrid.scheduler.jobs import create_job
from reprogrid.scheduler.spec import validate_spec

from .night import FAILED_PROMPT, NightJob, make_night_job


def _recipes(night: NightJob) -> dict[int, dict]:
    """Image id -> the recipe recorded for its cell."""
    with open_database(night.db_url).sessions() as session:
        images = dict(session.execute(select(Image.cell_id, Image.id)).all())
        recipes = job_recipes(session, night.job_id)
        return {images[c]: json.loads(recipe) for c, recipe in recipes.items() if c in images}


def test_csv_loads_with_one_row_per_image_and_recipe_fields_as_columns(
    night: NightJob, tmp_path: Path
):
    result = night.cli("export", str(night.job_id), "--format", "csv", "-o", str(tmp_path / "x"))
    assert result.exit_code == 0, result.output
    with (tmp_path / "x").open(newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        rows = list(reader)
    assert tuple(reader.fieldnames) == EXPORT_COLUMNS
    with open_database(night.db_url).sessions() as session:
        done = list(query_cells(session, CellFilter(job=night.job_id, status="done"), night.store))
    assert [int(row["image_id"]) for row in rows] == [cell["image_id"] for cell in done]
    recipes = _recipes(night)
    for row, cell in zip(rows, done, strict=True):
        recipe = recipes[cell["image_id"]]
        assert {k: row[k] for k in recipe} == {
            k: "" if v is None else str(v) for k, v in recipe.items()
        }
        assert (row["pixel_sha256"], row["path"]) == (cell["pixel_sha256"], cell["path"])
    assert {row["seed"] for row in rows} >= {"0", "18446744073709551615"}


def test_jsonl_keeps_numbers_and_the_latest_verdict(night: NightJob):
    result = night.cli("export", str(night.job_id), "--format", "jsonl")
    assert result.stderr == ""  # no progress off a terminal without --json
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 28
    assert 2**64 - 1 in {row["seed"] for row in rows}
    assert {type(row["guidance_scale"]) for row in rows} == {float}
    verdicts = {row["image_id"]: row["verdict"] for row in rows}
    assert verdicts.pop(night.verified_image_id) == "identical"
    assert set(verdicts.values()) == {None}


def test_all_exports_every_job_s_images(night: NightJob):
    result = night.cli("export", "--all", "--format", "jsonl")
    exported = [json.loads(line)["image_id"] for line in result.stdout.splitlines()]
    assert sorted(exported) == sorted(_recipes(night))


def test_a_job_or_all_must_be_given(night: NightJob):
    for args in ([], [str(night.job_id), "--all"]):
        result = night.cli("export", *args)
        assert result.exit_code == 2
        assert result.output == "Error: job: give a job id or --all (not both)\n"


def test_recipe_columns_cover_every_recipe_field():
    text_to_image = validate_spec({"prompts": ["p"], "width": 64, "height": 64}, 10)
    unconditional = validate_spec({"model": "builtin:tiny-ddpm"}, 10)
    for spec, prompt in ((text_to_image, "p"), (unconditional, None)):
        recipe = json.loads(cell_recipe(spec, prompt, 1, {}))
        assert set(recipe) <= set(RECIPE_COLUMNS)


def test_memory_stays_flat_as_the_export_grows(tmp_path: Path):
    db = open_database(f"sqlite:///{tmp_path / 'big.db'}")
    spec = validate_spec({"prompts": ["p"], "seeds": "0-19999", "width": 64, "height": 64}, 10**6)
    job_id = create_job(db, spec)
    with db.sessions() as session:
        cell_ids = session.scalars(select(Cell.id).where(Cell.job_id == job_id)).all()
        refs = _fake_references(session, job_id)
        _insert_images(session, cell_ids[:2_000], refs)
        small = min(_export_peak(session, tmp_path, job_id) for _ in range(2))
        _insert_images(session, cell_ids[2_000:], refs)
        large = _export_peak(session, tmp_path, job_id)
    assert large < 3 * small  # rows held in memory would take ten times as much for 10x rows


def _fake_references(session, job_id: int) -> dict[str, int]:
    """An environment, a checkpoint and a batch for made-up image rows."""
    environment = Environment(
        fingerprint="f" * 64,
        hostname="h",
        device_type="cpu",
        device_name="cpu",
        torch="t",
        diffusers="d",
        transformers="t",
        python="p",
        threads=1,
        dtype="float32",
        full_determinism=True,
        details={},
    )
    checkpoint = Checkpoint(model="m", revision_key="", sha256="c" * 64, files={})
    batch = Batch(job_id=job_id, cell_ids=[])
    session.add_all([environment, checkpoint, batch])
    session.flush()
    return {"environment_id": environment.id, "checkpoint_id": checkpoint.id, "batch_id": batch.id}


def _insert_images(session, cell_ids: list[int], refs: dict[str, int]) -> None:
    rows = [
        {
            "cell_id": cell_id,
            "index_in_batch": 0,
            "batch_size": 1,
            "pixel_sha256": f"{cell_id:064x}",
            "png_sha256": f"{cell_id:064x}",
            "path": f"{cell_id}.png",
            "width": 64,
            "height": 64,
            "generate_seconds": 0.1,
            **refs,
        }
        for cell_id in cell_ids
    ]
    session.execute(insert(Image), rows)
    session.commit()


def _export_peak(session, tmp_path: Path, job_id: int) -> int:
    """Peak Python memory while exporting the job to a CSV file."""
    from reprogrid.review.export import write_csv

    gc.collect()
    tracemalloc.start()
    with (tmp_path / "export.csv").open("w", newline="") as out:
        write_csv(image_rows(session, tmp_path, job_id), EXPORT_COLUMNS, out)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


@pytest.mark.postgres
def test_export_reads_postgresql_with_a_server_side_cursor(postgres_url: str, tmp_path: Path):
    job_id, _, _ = make_night_job(postgres_url, tmp_path / "store", (FAILED_PROMPT,))
    db = open_database(postgres_url)
    with db.sessions() as session:
        rows = image_rows(session, tmp_path / "store", job_id)
        first = next(rows)
        cursor = session.connection().exec_driver_sql("SELECT count(*) FROM pg_cursors").scalar()
        assert cursor == 1  # the export's rows stay on the server until fetched
        rest = list(rows)
    db.dispose()
    assert [row["seed"] for row in [first, *rest]] == [0, 1, 2, 3]
