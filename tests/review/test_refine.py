"""`reprogrid refine`: a new job keeping every recipe field of one image but the changed ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Cli

from reprogrid.models import Cell, Image, Job, open_database
from reprogrid.models.recipes import recipe_of
from reprogrid.review.sheet import GREY, RED

from .images import find, pixels
from .night import FAILED_PROMPT, REFINE_APPENDS, TINY_FLAGS, NightJob


@pytest.fixture(scope="module")
def parent_cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    """A database holding job 1: one prompt, two seeds, each image computed alone."""
    folder = tmp_path_factory.mktemp("refine")
    cli = Cli(f"sqlite:///{folder / 'reprogrid.db'}", folder / "store", folder)
    result = cli(
        "run",
        "--prompt",
        "a lighthouse",
        "--seeds",
        "3,9",
        *TINY_FLAGS,
        "--guidance-scale",
        "6",
        "--batch-invariant",
    )
    assert result.exit_code == 0, result.output
    return cli


def _job(cli: Cli, job_id: int) -> tuple[Job, list[Cell], list[dict]]:
    """The job, its cells in grid order and their recipes."""
    with open_database(cli.db_url).sessions() as session:
        job = session.get(Job, job_id)
        cells = session.query(Cell).filter_by(job_id=job_id).order_by(Cell.grid_index).all()
        return job, cells, [recipe_of(session, cell) for cell in cells]


def _new_job_id(output: str) -> int:
    return int(output.split()[1])


def test_a_refine_job_keeps_every_recipe_field_but_the_prompt(parent_cli: Cli):
    result = parent_cli("refine", "2", "--append", ", highly realistic", "--append", ", artsy")
    assert result.exit_code == 0, result.output
    job, cells, recipes = _job(parent_cli, _new_job_id(result.output))
    assert result.output == f"job {job.id} queued: 2 cells refining image 2\n"
    assert (job.status, job.parent_image_id) == ("queued", 2)
    _, _, (_, expected) = _job(parent_cli, 1)
    for cell, recipe, text in zip(cells, recipes, (", highly realistic", ", artsy"), strict=True):
        assert recipe == expected | {"prompt": "a lighthouse" + text}
        assert (cell.seed, cell.status) == (9, "queued")


def test_set_changes_a_field_and_is_validated_like_a_spec_field(parent_cli: Cli):
    result = parent_cli("refine", "1", "--set", "guidance_scale=9", "--set", "steps=3")
    assert result.exit_code == 0, result.output
    _, _, (recipe,) = _job(parent_cli, _new_job_id(result.output))
    _, _, (parent, _) = _job(parent_cli, 1)
    assert recipe == parent | {
        "guidance_scale": 9.0,
        "steps": 3,
    }

    jobs_before = len(parent_cli("status", "--format", "json").output)
    for change, error in [
        ("guidance_scale=loud", "Error: guidance_scale: expected a number, got 'loud'"),
        ("seeds=4", "Error: seeds: a refine job keeps the image's seed;"),
        ("colour=red", "Error: colour: unknown field"),
    ]:
        bad = parent_cli("refine", "1", "--set", change)
        assert bad.exit_code == 2
        assert bad.output.startswith(error) and bad.output.count("\n") == 1
    assert len(parent_cli("status", "--format", "json").output) == jobs_before


def test_a_refine_needs_something_to_change(parent_cli: Cli):
    result = parent_cli("refine", "1")
    assert result.exit_code == 2
    assert result.output == "Error: append: give at least one --append TEXT or --set FIELD=VALUE\n"


def test_run_with_an_empty_append_remakes_the_parent_bit_for_bit(parent_cli: Cli):
    result = parent_cli("refine", "1", "--append", "", "--run", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["status"], summary["done"]) == ("done", 1)
    progress = [json.loads(line) for line in result.stderr.splitlines()]
    assert progress[-1] | {"images_per_second": 0} == {
        "event": "progress",
        "job_id": summary["job_id"],
        "done": 1,
        "total": 1,
        "images_per_second": 0,
    }
    with open_database(parent_cli.db_url).sessions() as session:
        parent = session.get(Image, 1)
        (child,) = session.query(Image).join(Cell).filter(Cell.job_id == summary["job_id"]).all()
        assert child.cell.recipe_sha256 == parent.cell.recipe_sha256
        assert child.pixel_sha256 == parent.pixel_sha256


def test_the_sheet_of_a_refine_job_starts_with_its_parent(night: NightJob, tmp_path: Path):
    result = night.cli("grid", str(night.refine_job_id), "-o", str(tmp_path / "refine.png"))
    assert result.exit_code == 0, result.output
    sheet = pixels(tmp_path / "refine.png")
    with open_database(night.db_url).sessions() as session:
        parent = session.get(Image, night.verified_image_id)
        assert parent.cell.prompt == FAILED_PROMPT
        (place,) = find(sheet, pixels(night.store / parent.path))
    top, left = place
    for row in range(1, 1 + len(REFINE_APPENDS)):  # the variants, below the parent: not run yet
        tile = sheet[top + row * 68 : top + row * 68 + 64, left : left + 64]
        assert {GREY, RED} <= {tuple(p) for p in tile.reshape(-1, 3)}
