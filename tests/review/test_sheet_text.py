"""Contact sheet text: a font with non-ASCII glyphs, labels that scale, a chunk listing images;
and the report's verdicts summed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import service_unavailable
from PIL import Image

from reprogrid.review.fonts import font_file, sheet_font
from reprogrid.review.layout import Sheet
from reprogrid.review.sheet import SHEET_CHUNK, font_size, measure

from .night import NightJob

NON_ASCII = "café Ωμέγα Привет ñandú"


def _glyph(font, char: str) -> bytes:
    return bytes(font.getmask(char))


def test_the_sheet_font_draws_non_ascii_letters_not_boxes():
    if font_file() is None:
        service_unavailable("a font with non-ASCII glyphs (Debian fonts-dejavu-core)", OSError())
    font = sheet_font(14)
    missing = _glyph(font, "\U000f0000")  # a private-use code point: the font's missing-glyph box
    for char in set(NON_ASCII) - {" "}:
        assert _glyph(font, char) != missing, char


def _one_row_sheet(label: str) -> Sheet:
    return Sheet(1, "j", {}, [label], ["seed 0"], 64)


def test_labels_grow_with_the_tiles():
    assert font_size(64) < font_size(128) < font_size(512)
    small, large = measure(_one_row_sheet("a fox"), 64), measure(_one_row_sheet("a fox"), 512)
    assert large.header > small.header and large.label_width > small.label_width


def test_a_sheet_png_lists_its_job_axes_and_images(night: NightJob, tmp_path: Path):
    out = tmp_path / "sheet.png"
    assert night.cli("grid", str(night.job_id), "-o", str(out)).exit_code == 0
    contents = json.loads(Image.open(out).text[SHEET_CHUNK])
    assert contents["job_id"] == night.job_id and contents["job_name"] == "night"
    rows = json.loads(night.cli("query", "--job", str(night.job_id), "--format", "json").output)
    assert len(contents["rows"]) == 4 and len(contents["cols"]) == 8
    listed = {(t["image_id"], t["png_sha256"], t["status"]) for t in contents["tiles"]}
    assert listed == {(r["image_id"], r["png_sha256"], r["status"]) for r in rows}


@pytest.fixture(scope="module")
def page(night: NightJob, tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("report-text")
    assert night.cli("report", str(night.job_id), "-o", str(folder)).exit_code == 0
    return "".join(p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.html")))


def test_the_report_sums_the_verifications_per_verdict(page: str):
    verifications = page.split('id="verifications"')[1]
    head = "<th>verdict</th><th>verifications</th><th>images (latest verdict)</th>"
    assert head in verifications
    assert "<tr><td>identical</td><td>1</td><td>1</td></tr>" in verifications


def test_the_report_prints_no_none(page: str):
    assert "None" not in page
