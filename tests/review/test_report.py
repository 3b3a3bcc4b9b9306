"""`reprogrid report`: static HTML pages per job linking into the store, checked in
headless Chromium."""

from __future__ import annotations

import hashlib
import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from conftest import Cli, service_unavailable
from PIL import Image as PILImage

from reprogrid.models import Image, open_database
from reprogrid.models.queries import CellFilter, image_record, query_cells

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


def _grid(report: Path) -> str:
    """The first (for the night job, the only) page of the grid."""
    return _page(report, "grid-1.html")


def _done_cells(night: NightJob, job_id: int) -> list[dict]:
    with open_database(night.db_url).sessions() as session:
        return list(query_cells(session, CellFilter(job=job_id, status="done"), night.store))


def _links(page: str) -> list[str]:
    return [unquote(html.unescape(link)) for link in re.findall(r'(?:src|href)="([^"]*)"', page)]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def screenshot(page: Path, folder: Path) -> np.ndarray:
    """What headless Chromium shows of a page in a 1400x1100 window."""
    chromium = shutil.which("chromium")
    if chromium is None:
        service_unavailable("Chromium (Debian package chromium)", FileNotFoundError("chromium"))
    shot = folder / "screenshot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    flags += [f"--user-data-dir={folder / 'chromium-profile'}", "--force-device-scale-factor=1"]
    flags += ["--hide-scrollbars", f"--screenshot={shot}", "--window-size=1400,1100"]
    subprocess.run([chromium, *flags, page.as_uri()], check=True, capture_output=True, timeout=120)
    return pixels(shot)


def test_chromium_shows_the_grid_with_every_image(night: NightJob, report: Path, tmp_path: Path):
    shot = screenshot(report / "grid-1.html", tmp_path)
    assert shot.std() > 20, "the page renders blank"
    places = [find(shot, pixels(Path(c["path"]))) for c in _done_cells(night, night.job_id)]
    assert len(places) == 28 and all(len(p) == 1 for p in places)
    rows = {p[0][0] for p in places}
    cols = {p[0][1] for p in places}
    assert (len(rows), len(cols)) == (4, 8)


def test_every_link_is_relative_and_reaches_a_file(night: NightJob, report: Path):
    pages = sorted(report.glob("*.html"))
    assert [p.name for p in pages] == ["grid-1.html", "index.html"]
    for page in pages:
        assert "<script" not in _page(report, page.name) and "<link" not in _page(report, page.name)
        for link in _links(_page(report, page.name)):
            assert "://" not in link and not link.startswith("/")
            assert (report / link).is_file(), link
    stored = {(report / link).resolve() for link in _links(_grid(report)) if link.endswith(".png")}
    assert stored == {Path(c["path"]).resolve() for c in _done_cells(night, night.job_id)}


def test_no_original_png_is_copied_into_the_report(night: NightJob, report: Path):
    assert not [p for p in report.rglob("*") if p.is_file() and p.suffix != ".html"]


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


def test_a_report_moved_with_its_store_still_shows_its_images(cli: Cli, tmp_path: Path):
    assert cli("run", "--prompt", "a fox", "--seeds", "0-3", *TINY_FLAGS).exit_code == 0
    result = cli("report", "1", "-o", str(tmp_path / "report"))
    assert result.exit_code == 0, result.output
    moved = tmp_path / "elsewhere" / "night"
    moved.mkdir(parents=True)
    shutil.move(tmp_path / "report", moved / "report")
    shutil.move(cli.store, moved / "store")
    stored = sorted((moved / "store").rglob("*.png"))
    assert len(stored) == 4 and not cli.store.exists()
    shot = screenshot(moved / "report" / "grid-1.html", tmp_path)
    assert all(len(find(shot, pixels(png))) == 1 for png in stored)


def test_the_grid_is_paged_with_links_between_pages(night: NightJob, tmp_path: Path):
    result = night.cli("report", str(night.job_id), "-o", str(tmp_path), "--page-tiles", "8")
    assert result.exit_code == 0, result.output
    index = _page(tmp_path).split('id="grid"')[1].split("</table>")[0]
    assert re.findall(r'href="(grid-\d+\.html)"', index) == [f"grid-{n}.html" for n in range(1, 5)]
    assert "rows 2-2 of 4, columns 1-8 of 8" in index
    seen, name, number = [], "grid-1.html", 1
    while name:
        page = _page(tmp_path, name)
        assert 'href="index.html"' in page and f"page {number} of 4" in page
        seen += re.findall(r"<summary>(image \d+|cell \d+)", page)
        following = re.search(r'href="(grid-\d+\.html)" rel="next"', page)
        name, number = (following.group(1) if following else ""), number + 1
    assert number == 5 and len(seen) == len(set(seen)) == 32


def test_a_report_written_again_with_fewer_pages_drops_the_pages_left_over(
    night: NightJob, tmp_path: Path
):
    night.cli("report", str(night.job_id), "-o", str(tmp_path), "--page-tiles", "8")
    assert len(list(tmp_path.glob("grid-*.html"))) == 4
    assert night.cli("report", str(night.job_id), "-o", str(tmp_path)).exit_code == 0
    assert sorted(p.name for p in tmp_path.glob("grid-*.html")) == ["grid-1.html"]


def test_each_image_has_its_recipe_and_hashes_a_click_away(night: NightJob, report: Path):
    page = _grid(report)
    with open_database(night.db_url).sessions() as session:
        for cell in _done_cells(night, night.job_id):
            block = re.search(
                rf"<details><summary>image {cell['image_id']}\b.*?<pre>(.*?)</pre></details>",
                page,
                re.S,
            )
            assert block is not None
            details = html.unescape(block.group(1))
            for key in ("pixel_sha256", "png_sha256", "recipe_sha256"):
                assert f"{key}: {cell[key]}" in details
            recipe = json.loads(details.split("recipe:\n", 1)[1])
            record = image_record(session, session.get(Image, cell["image_id"]), night.store)
            assert recipe == record["recipe"]


def test_failures_are_listed_with_their_error_text(report: Path):
    failures = _page(report).split('id="failures"')[1].split('id="verifications"')[0]
    assert f"Failures ({len(FAILED_SEEDS)})" in failures
    assert failures.count(FAILED_ERROR) == len(FAILED_SEEDS)
    for seed in FAILED_SEEDS:
        assert f"<td>{seed}</td>" in failures


def test_verdicts_are_shown(night: NightJob, report: Path):
    tile = f'image {night.verified_image_id} <span class="identical">identical</span>'
    assert tile in _grid(report)
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
    assert "a cat wearing a &lt;tiny&gt; hat &amp; scarf" in _grid(report)
    assert "<tiny>" not in _grid(report) and "<tiny>" not in _page(report)


def test_the_report_of_a_refine_job_starts_with_the_parent(night: NightJob, tmp_path: Path):
    result = night.cli("report", str(night.refine_job_id), "-o", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # no progress off a terminal without --json
    rows = re.findall(r"<tr><th>(.*?)</th>(.*?)</tr>", _grid(tmp_path).split("<tbody>")[1], re.S)
    assert rows[0][0] == f"parent: image {night.verified_image_id}: a red fox in the snow"
    (src,) = re.findall(r'<img src="([^"]*)"', rows[0][1])
    parent = next(
        c for c in _done_cells(night, night.job_id) if c["image_id"] == night.verified_image_id
    )
    assert (tmp_path / unquote(src)).resolve() == Path(parent["path"]).resolve()
    assert [row[0] for row in rows[1:3]] == [
        "a red fox in the snow, highly realistic",
        "a red fox in the snow, artsy",
    ]
    assert all('class="blank"' in row[1] and "queued" in row[1] for row in rows[1:3])


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
    grid = _grid(tmp_path)
    sources = re.findall(r'<img src="([^"]*)"', grid)
    targets = re.findall(r'<a href="(file://[^"]*)"', grid)
    assert len(sources) == len(targets) == 28
    assert all(src.startswith("thumbs/") and (tmp_path / src).is_file() for src in sources)
    originals = {Path(c["path"]).resolve().as_uri() for c in _done_cells(night, night.job_id)}
    assert set(targets) == originals
