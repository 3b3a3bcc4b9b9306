"""`reprogrid grid`: a labelled contact sheet of a job, prompts down and seeds across."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reprogrid.models import open_database
from reprogrid.models.queries import CellFilter, query_cells
from reprogrid.review.layout import ReviewError, job_sheets
from reprogrid.review.sheet import GREY, RED, SHEET_CHUNK, WHITE, check_size

from .images import find, pixels
from .night import FAILED_PROMPT, FAILED_SEEDS, NIGHT_PROMPTS, TINY_FLAGS, NightJob

TILE = 64 + 4  # a 64-pixel image and its white border


def _cells(night: NightJob, job_id: int) -> list[dict]:
    with open_database(night.db_url).sessions() as session:
        return list(query_cells(session, CellFilter(job=job_id), night.store))


def _sheet(night: NightJob, tmp_path: Path) -> tuple[np.ndarray, int, int]:
    """The night job's sheet, and the top-left corner of its first image."""
    result = night.cli("grid", str(night.job_id), "-o", str(tmp_path / "sheet.png"))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{tmp_path / 'sheet.png'}\n"
    sheet = pixels(tmp_path / "sheet.png")
    ((top, left),) = find(sheet, pixels(Path(_cells(night, night.job_id)[0]["path"])))
    return sheet, top, left


def test_each_image_sits_at_its_prompt_row_and_seed_column(night: NightJob, tmp_path: Path):
    sheet, top, left = _sheet(night, tmp_path)
    cells = _cells(night, night.job_id)
    seeds = sorted({cell["seed"] for cell in cells})
    for cell in (c for c in cells if c["status"] == "done"):
        row, column = NIGHT_PROMPTS.index(cell["prompt"]), seeds.index(cell["seed"])
        assert find(sheet, pixels(Path(cell["path"]))) == [(top + row * TILE, left + column * TILE)]


def test_rows_and_columns_carry_text_labels(night: NightJob, tmp_path: Path):
    sheet, top, left = _sheet(night, tmp_path)
    dark = (sheet < 100).all(axis=-1)
    label_lines = [
        _text_lines(dark[top + r * TILE : top + (r + 1) * TILE, :left]) for r in range(4)
    ]
    assert label_lines[0] == 1 and label_lines[2:] == [1, 1], "a short prompt is not one line"
    assert label_lines[1] >= 2, "the long prompt is not wrapped"
    above = [_text_lines(dark[:top, left + c * TILE : left + (c + 1) * TILE]) for c in range(8)]
    assert above[:7] == [1] * 7, "seed 0 to seed 6 are not one line each"
    assert above[7] >= 2, "seed 18446744073709551615 is not wrapped"


def _text_lines(dark: np.ndarray) -> int:
    """How many separate bands of ink run across a region."""
    inked = dark.any(axis=1).astype(int)
    return int(((inked[1:] - inked[:-1]) == 1).sum() + inked[0])


def test_failed_cells_are_crossed_out_blanks(night: NightJob, tmp_path: Path):
    sheet, top, left = _sheet(night, tmp_path)
    failed = [c for c in _cells(night, night.job_id) if c["status"] == "failed"]
    assert [(c["prompt"], c["seed"]) for c in failed] == [(FAILED_PROMPT, s) for s in FAILED_SEEDS]
    for cell in failed:
        column = cell["grid_index"] % 8
        tile = sheet[top : top + 64, left + column * TILE : left + column * TILE + 64]
        colours = {tuple(p) for p in tile.reshape(-1, 3)}
        assert {GREY, RED} <= colours and WHITE not in colours


def test_a_further_axis_gives_one_sheet_per_value(cli, tmp_path: Path):
    cli(
        "run",
        "--prompt",
        "a fox",
        "--seeds",
        "0-1",
        *TINY_FLAGS,
        "--axis",
        "guidance_scale=5,7.5",
    )
    result = cli("grid", "1", "-o", str(tmp_path / "sheet.png"))
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [
        str(tmp_path / "sheet-guidance_scale=5.0.png"),
        str(tmp_path / "sheet-guidance_scale=7.5.png"),
    ]
    chosen = cli("grid", "1", "-o", str(tmp_path / "xy.png"), "--rows", "guidance_scale")
    assert chosen.stdout.split() == [str(tmp_path / "xy.png")]
    assert (
        pixels(tmp_path / "xy.png").shape[0]
        < pixels(tmp_path / "sheet-guidance_scale=5.0.png").shape[0] * 2
    )


def test_a_sheet_over_the_size_limit_is_refused_and_names_a_size_that_fits(
    night: NightJob, tmp_path: Path
):
    result = night.cli("grid", str(night.job_id), "-o", str(tmp_path / "s.png"), "--thumb", "2048")
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: thumb: the sheet would be ")
    assert not (tmp_path / "s.png").exists()
    fitting = int(re.search(r"--thumb (\d+) or less", line).group(1))
    with open_database(night.db_url).sessions() as session:
        (sheet,) = job_sheets(session, night.job_id, night.store)
    check_size(sheet, fitting)
    with pytest.raises(ReviewError):
        check_size(sheet, fitting + 1)


def test_an_axis_the_job_lacks_is_bad_input(night: NightJob, tmp_path: Path):
    result = night.cli("grid", str(night.job_id), "-o", str(tmp_path / "s.png"), "--rows", "colour")
    assert result.exit_code == 2
    assert result.output == "Error: rows: the job has no axis 'colour' (its axes: prompt, seed)\n"
    assert not (tmp_path / "s.png").exists()


def test_chosen_rows_and_columns_put_each_image_at_its_own_values(cli, tmp_path: Path):
    axis = ("--axis", "guidance_scale=5,7.5", "--axis", "steps=1,2")
    assert cli("run", "--prompt", "a fox", "--seeds", "0-2", *TINY_FLAGS, *axis).exit_code == 0
    out = tmp_path / "xy.png"
    result = cli("grid", "1", "-o", str(out), "--rows", "guidance_scale", "--cols", "seed")
    assert result.exit_code == 0, result.output
    rows = {r["image_id"]: r for r in json.loads(cli("query", "--format", "json").output)}
    placed = 0
    for path in result.stdout.split():  # one sheet per number of steps
        contents = json.loads(Image.open(path).text[SHEET_CHUNK])
        for tile in contents["tiles"]:
            image = rows[tile["image_id"]]
            assert (
                contents["rows"][tile["row"]]
                == f"guidance_scale={image['params']['guidance_scale']}"
            )
            assert contents["cols"][tile["col"]] == f"seed {image['seed']}"
            assert contents["fixed"] == {"prompt": "a fox", "steps": image["params"]["steps"]}
            placed += 1
    assert placed == len(rows) == 12
