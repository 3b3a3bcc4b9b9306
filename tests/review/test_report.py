"""`reprogrid report`: an offline page per job (index.html, reprogrid.js and the grid's
data in data/) linking into the store, checked in its files and in headless Chromium
(the page's controls: test_report_page.py)."""

from __future__ import annotations

import hashlib
import html
import io
import json
import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from conftest import Cli
from PIL import Image as PILImage

from reprogrid.models import Image, open_database
from reprogrid.models.queries import CellFilter, image_record, query_cells

from .browser import open_page, ready
from .images import find, pixels
from .night import FAILED_ERROR, FAILED_SEEDS, TINY_FLAGS, NightJob


@pytest.fixture(scope="module")
def report(night: NightJob, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The night job's report folder, written with progress as JSON lines."""
    folder = tmp_path_factory.mktemp("report")
    result = night.cli("report", str(night.job_id), "-o", str(folder), "--json")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{folder / 'index.html'}\n"
    return folder


def _page(report: Path, name: str = "index.html") -> str:
    return (report / name).read_text(encoding="utf-8")


def _data(path: Path) -> dict:
    """The record a data file hands to the page."""
    text = path.read_text(encoding="utf-8")
    return json.loads(text[text.index(".push(") + 6 : text.rindex(");")])


def _tiles(report: Path) -> list[dict]:
    """Every tile of the report's data, in grid order."""
    chunks = sorted((report / "data").glob("tiles-*.js"))
    return [tile for chunk in chunks for tile in _data(chunk)["tiles"]]


def _tile_links(report: Path) -> list[str]:
    return [unquote(t[k]) for t in _tiles(report) for k in ("src", "href") if k in t]


def _done_cells(night: NightJob, job_id: int) -> list[dict]:
    with open_database(night.db_url).sessions() as session:
        return list(query_cells(session, CellFilter(job=job_id, status="done"), night.store))


def _links(page: str) -> list[str]:
    return [unquote(html.unescape(link)) for link in re.findall(r'(?:src|href)="([^"]*)"', page)]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def screenshot(chromium, page: Path) -> np.ndarray:
    """What headless Chromium shows of the page's grid (prompts down, seeds across)."""
    from selenium.webdriver.common.by import By

    open_page(chromium, page.as_uri())
    grid = chromium.find_element(By.ID, "grid-table")
    return np.asarray(PILImage.open(io.BytesIO(grid.screenshot_as_png)).convert("RGB"))


def test_chromium_shows_the_grid_with_every_image(chromium, night: NightJob, report: Path):
    shot = screenshot(chromium, report / "index.html")
    assert shot.std() > 20, "the page renders blank"
    places = [find(shot, pixels(Path(c["path"]))) for c in _done_cells(night, night.job_id)]
    assert len(places) == 28 and all(len(p) == 1 for p in places)
    rows = {p[0][0] for p in places}
    cols = {p[0][1] for p in places}
    assert (len(rows), len(cols)) == (4, 8)


def test_every_link_is_relative_and_reaches_a_file(night: NightJob, report: Path):
    index = _page(report)
    assert re.findall(r'<script src="([^"]*)"', index) == ["data/axes.js", "reprogrid.js"]
    assert "://" not in index and "<link" not in index
    assert "://" not in (report / "reprogrid.js").read_text(encoding="utf-8")
    for link in [*_links(index), *_tile_links(report)]:
        assert "://" not in link and not link.startswith("/")
        assert (report / link).is_file(), link
    stored = {(report / link).resolve() for link in _tile_links(report)}
    assert stored == {Path(c["path"]).resolve() for c in _done_cells(night, night.job_id)}


def test_no_original_png_is_copied_into_the_report(night: NightJob, report: Path):
    files = {p.relative_to(report).as_posix() for p in report.rglob("*") if p.is_file()}
    assert files == {"index.html", "reprogrid.js", "data/axes.js", "data/calls.js"} | {
        "data/tiles-000.js"
    }


def test_images_larger_than_the_thumbnail_get_a_thumbnail_written_once(
    night: NightJob, tmp_path: Path
):
    assert (
        night.cli("report", str(night.job_id), "-o", str(tmp_path), "--thumb", "32").exit_code == 0
    )
    thumbs = sorted((tmp_path / "thumbs").rglob("*.png"))
    cells = _done_cells(night, night.job_id)
    assert {t.stem for t in thumbs} == {c["png_sha256"] for c in cells}
    assert all(PILImage.open(t).size == (32, 32) for t in thumbs)
    assert not {_sha256(t) for t in thumbs} & {c["png_sha256"] for c in cells}
    written = {t: t.stat().st_mtime_ns for t in thumbs}
    assert (
        night.cli("report", str(night.job_id), "-o", str(tmp_path), "--thumb", "32").exit_code == 0
    )
    assert {t: t.stat().st_mtime_ns for t in thumbs} == written


def test_a_report_moved_with_its_store_still_shows_its_images(chromium, cli: Cli, tmp_path: Path):
    assert cli("run", "--prompt", "a fox", "--seeds", "0-3", *TINY_FLAGS).exit_code == 0
    result = cli("report", "1", "-o", str(tmp_path / "report"))
    assert result.exit_code == 0, result.output
    moved = tmp_path / "elsewhere" / "night"
    moved.mkdir(parents=True)
    shutil.move(tmp_path / "report", moved / "report")
    shutil.move(cli.store, moved / "store")
    stored = sorted((moved / "store").rglob("*.png"))
    assert len(stored) == 4 and not cli.store.exists()
    shot = screenshot(chromium, moved / "report" / "index.html")
    assert all(len(find(shot, pixels(png))) == 1 for png in stored)


def test_the_grid_data_is_cut_into_chunks_of_page_tiles_in_grid_order(
    night: NightJob, tmp_path: Path
):
    result = night.cli("report", str(night.job_id), "-o", str(tmp_path), "--page-tiles", "8")
    assert result.exit_code == 0, result.output
    chunks = [_data(p) for p in sorted((tmp_path / "data").glob("tiles-*.js"))]
    assert [(c["chunk"], c["first"], len(c["tiles"])) for c in chunks] == [
        (n, 8 * n, 8) for n in range(4)
    ]
    assert [t["i"] for t in _tiles(tmp_path)] == list(range(32))
    axes = _data(tmp_path / "data" / "axes.js")
    assert (axes["chunks"], axes["chunk_tiles"], axes["cells"]) == (4, 8, 32)
    assert [(a["name"], len(a["labels"]), a["step"]) for a in axes["axes"]] == [
        ("prompt", 4, 8),
        ("seed", 8, 1),
    ]


def test_a_view_larger_than_page_tiles_is_paged(chromium, night: NightJob, tmp_path: Path):
    from selenium.webdriver.common.by import By

    night.cli("report", str(night.job_id), "-o", str(tmp_path), "--page-tiles", "8")
    open_page(chromium, (tmp_path / "index.html").as_uri())
    seen = []
    for row in range(1, 5):
        assert chromium.find_element(By.ID, "extent").text.startswith(
            f"rows {row}-{row} of 4, columns 1-8 of 8"
        )
        seen += [e.text for e in chromium.find_elements(By.CSS_SELECTOR, "td.tile .name")]
        if row < 4:
            chromium.find_element(By.CSS_SELECTOR, ".move-down").click()
            ready(chromium)
    assert len(seen) == len(set(seen)) == 32


def test_a_report_written_again_with_fewer_chunks_drops_the_chunks_left_over(
    night: NightJob, tmp_path: Path
):
    night.cli("report", str(night.job_id), "-o", str(tmp_path), "--page-tiles", "8")
    assert len(list((tmp_path / "data").glob("tiles-*.js"))) == 4
    (tmp_path / "grid-1.html").write_text("a page of an earlier version")
    assert night.cli("report", str(night.job_id), "-o", str(tmp_path)).exit_code == 0
    assert sorted(p.name for p in (tmp_path / "data").glob("tiles-*.js")) == ["tiles-000.js"]
    assert not list(tmp_path.glob("grid-*.html"))


def test_each_image_has_its_recipe_and_hashes(night: NightJob, report: Path):
    tiles = {t["image"]: t for t in _tiles(report) if t["image"]}
    with open_database(night.db_url).sessions() as session:
        for cell in _done_cells(night, night.job_id):
            tile = tiles[cell["image_id"]]
            for key in ("pixel_sha256", "png_sha256", "recipe_sha256"):
                assert tile[key] == cell[key]
            recipe = {k: json.loads(v) for k, v in tile["recipe"]}
            record = image_record(session, session.get(Image, cell["image_id"]), night.store)
            assert recipe == record["recipe"]
            assert tile["seed"] == str(record["seed"])  # exact above 2**53


def test_each_call_is_in_the_calls_data(report: Path):
    calls = _data(report / "data" / "calls.js")["calls"]
    assert {t["call_id"] for t in _tiles(report) if t["image"]} == {int(c) for c in calls}
    assert all(isinstance(json.loads(call), dict) for call in calls.values())


def test_failures_are_listed_with_their_error_text(report: Path):
    failures = _page(report).split('id="failures"')[1].split('id="verifications"')[0]
    assert f"Failures ({len(FAILED_SEEDS)})" in failures
    assert failures.count(FAILED_ERROR) == len(FAILED_SEEDS)
    for seed in FAILED_SEEDS:
        assert f"<td>{seed}</td>" in failures


def test_verdicts_are_shown(night: NightJob, report: Path):
    (tile,) = [t for t in _tiles(report) if t["image"] == night.verified_image_id]
    assert tile["verdict"] == "identical"
    verifications = _page(report).split('id="verifications"')[1]
    assert "Verifications (1)" in verifications
    assert (
        f"<td>{night.verified_image_id}</td><td>regenerate</td><td>identical</td>" in verifications
    )


def test_the_summary_names_workers_devices_checkpoint_and_libraries(report: Path):
    summary = _page(report).split('id="summary"')[1].split("</table>")[0]
    for text in ("32: 28 done, 4 failed, 0 cancelled", "night-cpu-0", "cpu (", "builtin:tiny"):
        assert text in summary
    assert re.search(r"sha256 [0-9a-f]{64}", summary)
    assert re.search(r"torch \S+, diffusers \S+, transformers \S+", summary)
    assert re.search(r"<th>images/s</th><td>\d+\.\d{3}</td>", summary)


def test_prompts_are_escaped(report: Path):
    axes = (report / "data" / "axes.js").read_text(encoding="utf-8")
    assert "a cat wearing a \\u003ctiny> hat & scarf" in axes
    assert "<tiny>" not in axes and "<tiny>" not in _page(report)
    assert (
        "a cat wearing a <tiny> hat & scarf"
        in _data(report / "data" / "axes.js")["axes"][0]["labels"]
    )


def test_the_report_of_a_refine_job_starts_with_the_parent(
    chromium, night: NightJob, tmp_path: Path
):
    from selenium.webdriver.common.by import By

    result = night.cli("report", str(night.refine_job_id), "-o", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # no progress off a terminal without --json
    open_page(chromium, (tmp_path / "index.html").as_uri())
    rows = chromium.find_elements(By.CSS_SELECTOR, "#grid-table tbody tr")
    label = f"parent: image {night.verified_image_id}: a red fox in the snow"
    assert rows[0].find_element(By.TAG_NAME, "th").text == label
    (image,) = rows[0].find_elements(By.TAG_NAME, "img")
    parent = next(
        c for c in _done_cells(night, night.job_id) if c["image_id"] == night.verified_image_id
    )
    src = unquote(image.get_attribute("src")).removeprefix("file://")
    assert Path(src).resolve() == Path(parent["path"]).resolve()
    assert [row.find_element(By.TAG_NAME, "th").text for row in rows[1:3]] == [
        "a red fox in the snow, highly realistic",
        "a red fox in the snow, artsy",
    ]
    assert all(row.find_element(By.CSS_SELECTOR, ".blank").text == "queued" for row in rows[1:3])


def test_progress_goes_to_stderr_as_json_lines_a_line_per_page(night: NightJob, tmp_path: Path):
    folder = str(tmp_path)
    result = night.cli("report", str(night.job_id), "-o", folder, "--json", "--page-tiles", "8")
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [line["done"] for line in lines] == [4, 12, 20, 28]  # the fox lost 4 of its 8
    assert {(line["event"], line["job_id"], line["total"]) for line in lines} == {
        ("progress", night.job_id, 28)
    }


def test_a_page_size_below_one_is_bad_input(night: NightJob, tmp_path: Path):
    out = tmp_path / "r"
    result = night.cli("report", str(night.job_id), "-o", str(out), "--page-tiles", "0")
    assert result.exit_code == 2
    assert result.output == "Error: page-tiles: must be at least 1, got 0\n"
    assert not out.exists()


def test_a_standalone_report_holds_a_thumbnail_of_every_image_and_links_originals_absolutely(
    night: NightJob, tmp_path: Path
):
    result = night.cli("report", str(night.job_id), "-o", str(tmp_path), "--standalone")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # asked for: no notice
    tiles = [t for t in _tiles(tmp_path) if "src" in t]
    assert len(tiles) == 28
    assert all(t["src"].startswith("thumbs/") and (tmp_path / t["src"]).is_file() for t in tiles)
    originals = {Path(c["path"]).resolve().as_uri() for c in _done_cells(night, night.job_id)}
    assert {t["href"] for t in tiles} == originals
