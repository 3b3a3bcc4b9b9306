"""`reprogrid grid`: a labelled contact sheet of a job, prompts down and seeds across."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from reprogrid.models import open_database
from reprogrid.models.queries import CellFilter, query_cells
from reprogrid.review.layout import ReviewError, job_sheets
from reprogrid.review.sheet import GREY, RED, WHITE, check_size

from .images import find, pixels
from .night import FAILED_PROMPT, FAILED_SEEDS, NIGHT_PROMPTS, NightJob


def _cells(night: NightJob, job_id: int) -> list[dict]:
    db = open_database(night.db_url)
    with db.sessions() as session:
        return list(query_cells(session, CellFilter(job=job_id), night.store))


def _sheet(night: NightJob, tmp_path: Path, *options: str) -> tuple[np.ndarray, str]:
    result = night.cli("grid", str(night.job_id), "-o", str(tmp_path / "sheet.png"), *options)
    assert result.exit_code == 0, result.output
    return pixels(Path(result.stdout.strip())), result.stdout


def test_each_image_sits_at_its_prompt_row_and_seed_column(night: NightJob, tmp_path: Path):
    sheet, _ = _sheet(night, tmp_path)
    places = {}
    for cell in _cells(night, night.job_id):
        if cell["status"] == "done":
            (places[cell["prompt"], cell["seed"]],) = find(sheet, pixels(Path(cell["path"])))
    rows = sorted({y for y, _ in places.values()})
    cols = sorted({x for _, x in places.values()})
    assert len(rows) == len(NIGHT_PROMPTS) and len(cols) == 8
    for (prompt, seed), (y, x) in places.items():
        assert rows.index(y) == NIGHT_PROMPTS.index(prompt)
        assert cols.index(x) == sorted({c["seed"] for c in _cells(night, night.job_id)}).index(seed)


def test_rows_and_columns_carry_text_labels(night: NightJob, tmp_path: Path):
    sheet, _ = _sheet(night, tmp_path)
    first = pixels(Path(_cells(night, night.job_id)[0]["path"]))
    ((top, left),) = find(sheet, first)
    dark = (sheet < 100).all(axis=-1)
    row_height = first.shape[0] + 4
    for row in range(len(NIGHT_PROMPTS)):
        band = dark[top + row * row_height : top + (row + 1) * row_height, :left]
        assert band.sum() > 50, f"no label left of row {row}"
    label_lines = [
        _text_lines(dark[top + r * row_height : top + (r + 1) * row_height, :left])
        for r in range(4)
    ]
    assert label_lines[1] >= 2 > label_lines[0], "the long prompt is not wrapped"
    for column in range(8):
        x = left + column * row_height
        assert dark[:top, x : x + row_height].sum() > 30, f"no label above column {column}"


def _text_lines(dark: np.ndarray) -> int:
    inked = dark.any(axis=1).astype(int)
    return int(((inked[1:] - inked[:-1]) == 1).sum() + inked[0])


def test_failed_cells_are_crossed_out_blanks(night: NightJob, tmp_path: Path):
    sheet, _ = _sheet(night, tmp_path)
    cells = _cells(night, night.job_id)
    ((top, left),) = find(sheet, pixels(Path(cells[0]["path"])))
    size = 64 + 4
    failed = [c for c in cells if c["status"] == "failed"]
    assert [(c["prompt"], c["seed"]) for c in failed] == [(FAILED_PROMPT, s) for s in FAILED_SEEDS]
    for cell in failed:
        column = cell["grid_index"] % 8
        tile = sheet[top : top + 64, left + column * size : left + column * size + 64]
        colours = {tuple(p) for p in tile.reshape(-1, 3)}
        assert {GREY, RED} <= colours and WHITE not in colours


def test_a_further_axis_gives_one_sheet_per_value(cli, tmp_path: Path):
    cli(
        "run",
        "--prompt",
        "a fox",
        "--seeds",
        "0-1",
        "--steps",
        "2",
        "--width",
        "64",
        "--height",
        "64",
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
