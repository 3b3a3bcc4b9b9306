"""`reprogrid report`: a static HTML page per job, checked in headless Chromium."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import service_unavailable

from reprogrid.models import open_database
from reprogrid.models.queries import CellFilter, query_cells

from .images import find, pixels
from .night import FAILED_ERROR, FAILED_SEEDS, NightJob


@pytest.fixture(scope="module")
def report(night: NightJob, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The night job's report folder, written with progress as JSON lines."""
    folder = tmp_path_factory.mktemp("report")
    result = night.cli("report", str(night.job_id), "-o", str(folder), "--json")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{folder / 'index.html'}\n"
    return folder


def _page(report: Path) -> str:
    return (report / "index.html").read_text(encoding="utf-8")


def _done_cells(night: NightJob, job_id: int) -> list[dict]:
    with open_database(night.db_url).sessions() as session:
        return list(query_cells(session, CellFilter(job=job_id, status="done"), night.store))


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
    shot = screenshot(report / "index.html", tmp_path)
    assert shot.std() > 20, "the page renders blank"
    places = [find(shot, pixels(Path(c["path"]))) for c in _done_cells(night, night.job_id)]
    assert len(places) == 28 and all(len(p) == 1 for p in places)
    rows = {p[0][0] for p in places}
    cols = {p[0][1] for p in places}
    assert (len(rows), len(cols)) == (4, 8)


def test_the_page_loads_nothing_from_outside_its_folder(report: Path):
    links = re.findall(r'(?:src|href)="([^"]*)"', _page(report))
    assert len(links) == 2 * 28
    for link in links:
        assert "://" not in link and not link.startswith("/")
        assert (report / link).is_file()
    assert "<script" not in _page(report) and "<link" not in _page(report)


def test_each_image_has_its_recipe_and_hashes_a_click_away(night: NightJob, report: Path):
    page = _page(report)
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
        assert f'"seed": {cell["seed"]}' in details


def test_failures_are_listed_with_their_error_text(report: Path):
    failures = _page(report).split('id="failures"')[1].split('id="verifications"')[0]
    assert f"Failures ({len(FAILED_SEEDS)})" in failures
    assert failures.count(FAILED_ERROR) == len(FAILED_SEEDS)
    for seed in FAILED_SEEDS:
        assert f"<td>{seed}</td>" in failures


def test_verdicts_are_shown(night: NightJob, report: Path):
    page = _page(report)
    assert f'image {night.verified_image_id} <span class="identical">identical</span>' in page
    verifications = page.split('id="verifications"')[1]
    assert "Verifications (1)" in verifications
    assert f"<td>{night.verified_image_id}</td><td>regenerate</td><td>identical</td>" in page


def test_the_summary_names_workers_devices_checkpoint_and_libraries(report: Path):
    summary = _page(report).split('id="summary"')[1].split("</table>")[0]
    for text in ("32: 28 done, 4 failed, 0 cancelled", "night-cpu-0", "cpu (", "builtin:tiny"):
        assert text in summary
    assert re.search(r"sha256 [0-9a-f]{64}", summary)
    assert re.search(r"torch \S+, diffusers \S+, transformers \S+", summary)
    assert re.search(r"<th>images/s</th><td>\d+\.\d{3}</td>", summary)


def test_prompts_are_escaped(report: Path):
    assert "a cat wearing a &lt;tiny&gt; hat &amp; scarf" in _page(report)
    assert "<tiny>" not in _page(report)


def test_the_report_of_a_refine_job_starts_with_the_parent(night: NightJob, tmp_path: Path):
    result = night.cli("report", str(night.refine_job_id), "-o", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # no progress off a terminal without --json
    rows = re.findall(r"<tr><th>(.*?)</th>(.*?)</tr>", _page(tmp_path).split("<tbody>")[1], re.S)
    assert rows[0][0] == f"parent: image {night.verified_image_id}: a red fox in the snow"
    assert '<img src="thumbs/' in rows[0][1]
    assert [row[0] for row in rows[1:3]] == [
        "a red fox in the snow, highly realistic",
        "a red fox in the snow, artsy",
    ]
    assert all('class="blank"' in row[1] and "queued" in row[1] for row in rows[1:3])


def test_progress_goes_to_stderr_as_json_lines(night: NightJob, tmp_path: Path):
    result = night.cli("report", str(night.job_id), "-o", str(tmp_path), "--json")
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [line["done"] for line in lines] == list(range(1, 29))
    assert {(line["event"], line["job_id"], line["total"]) for line in lines} == {
        ("progress", night.job_id, 28)
    }
