"""Contact sheets: a job's sheets drawn as labelled PNG grids.

Each image is fitted into a square tile of ``thumb`` pixels; cells without an
image (failed, cancelled, not yet run, file missing) are grey tiles crossed in
red and marked with the reason; an image the safety checker flagged has a red
border and says ``nsfw``. The tiles are assembled with diffusers'
``make_image_grid`` (imported only when a sheet is drawn: it loads torch), and
Pillow draws the title, the column labels across the top and the row labels
down the side, wrapping long prompts, in a font that covers non-ASCII text
(``fonts``) at a size that grows with the tiles. Each sheet PNG carries a
``reprogrid-sheet`` text chunk listing the job, axes and images it shows.
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageOps, PngImagePlugin

from reprogrid.review.fonts import Font, sheet_font
from reprogrid.review.layout import MIN_THUMB, ReviewError, Sheet, Tile, thumb_size

MAX_SIDE = 16_384  # pixels a side: beyond this many viewers refuse a PNG
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485  # Pillow's own decompression-bomb limit
DEFAULT_MAX_THUMB = 256
# Labels scale with the tiles: 14 pixels for 128-pixel tiles, within these bounds.
FONT_PER_THUMB, MIN_FONT, MAX_FONT = 14 / 128, 10, 40
TITLE_EXTRA = 2  # the title is this much larger
PAD = 2  # white border around every tile
MARGIN = 8
LABEL_WIDTH_PER_FONT = 360 / 14  # the row labels' column is at most this many font sizes wide
MAX_COL_LABEL_LINES = 4
SHEET_CHUNK = "reprogrid-sheet"  # PNG text chunk: the sheet's axes and images, as JSON
WHITE, BLACK, GREY, RED = (255, 255, 255), (0, 0, 0), (225, 225, 225), (200, 40, 40)


def font_size(thumb: int) -> int:
    """The labels' font size for tiles of ``thumb`` pixels."""
    return max(MIN_FONT, min(MAX_FONT, round(thumb * FONT_PER_THUMB)))


def _fonts(thumb: int) -> tuple[Font, Font]:
    size = font_size(thumb)
    return sheet_font(size), sheet_font(size + TITLE_EXTRA)


@dataclass(frozen=True)
class Geometry:
    """Where things go on a sheet drawn with tiles of ``thumb`` pixels."""

    thumb: int
    label_width: int  # the row labels' column, left of the tiles
    title_lines: list[str]
    col_lines: list[list[str]]
    header: int  # height above the tiles
    width: int
    height: int

    @property
    def cell(self) -> int:
        """The side of one tile, border included."""
        return self.thumb + 2 * PAD


def write_sheets(sheets: list[Sheet], output: Path, thumb: int | None = None) -> list[Path]:
    """Draw each sheet into its own file named after ``output``; return the paths.

    Checks every sheet's size before writing anything.
    """
    if output.suffix.lower() not in Image.registered_extensions():
        raise ReviewError(f"output: {output.name!r} has no image file extension, e.g. .png")
    thumb = thumb_size(thumb, sheets[0], DEFAULT_MAX_THUMB)
    for sheet in sheets:
        check_size(sheet, thumb)
    paths = sheet_paths(sheets, output)
    output.parent.mkdir(parents=True, exist_ok=True)
    for sheet, path in zip(sheets, paths, strict=True):
        info = PngImagePlugin.PngInfo()
        info.add_text(SHEET_CHUNK, json.dumps(sheet_contents(sheet), ensure_ascii=False))
        draw_sheet(sheet, thumb).save(path, pnginfo=info)
    return paths


def sheet_contents(sheet: Sheet) -> dict[str, Any]:
    """What a sheet shows, for its PNG chunk: job, axes, and each tile's image or status."""
    return {
        "job_id": sheet.job_id,
        "job_name": sheet.job_name,
        "fixed": sheet.fixed,
        "rows": sheet.row_labels,
        "cols": sheet.col_labels,
        "tiles": [
            {
                "row": row,
                "col": col,
                "image_id": tile.get("image_id"),
                "png_sha256": tile.get("png_sha256"),
                "status": tile["status"],
            }
            for row, tiles in enumerate(sheet.tiles)
            for col, tile in enumerate(tiles)
            if tile is not None
        ],
    }


def sheet_paths(sheets: list[Sheet], output: Path) -> list[Path]:
    """``output`` for a single sheet, else ``<stem>-<axis>=<value>...<suffix>`` for each."""
    if len(sheets) == 1:
        return [output]
    paths: list[Path] = []
    for number, sheet in enumerate(sheets, 1):
        fixed = "-".join(f"{name}={value}" for name, value in sheet.fixed.items())
        name = f"{output.stem}-{re.sub(r'[^A-Za-z0-9._=+-]+', '_', fixed)[:120]}"
        if output.with_name(name + output.suffix) in paths:  # values alike once sanitised
            name += f"-{number}"
        paths.append(output.with_name(name + output.suffix))
    return paths


def check_size(sheet: Sheet, thumb: int) -> None:
    """Refuse a sheet over the size limits, naming the largest ``--thumb`` that fits."""
    geometry = measure(sheet, thumb)
    if _fits(geometry):
        return
    smaller = range(MIN_THUMB, thumb)
    # sheets grow with the tile size: count the sizes that fit by bisection
    fitting = bisect.bisect_left(smaller, True, key=lambda t: not _fits(measure(sheet, t)))
    advice = (
        f"use --thumb {smaller[fitting - 1]} or less"
        if fitting
        else "it has too many rows or columns: choose other --rows/--cols"
    )
    raise ReviewError(
        f"thumb: the sheet would be {geometry.width} x {geometry.height} pixels, over the limit"
        f" of {MAX_SIDE} a side and {MAX_PIXELS} in all; {advice}"
    )


def _fits(geometry: Geometry) -> bool:
    return (
        max(geometry.width, geometry.height) <= MAX_SIDE
        and geometry.width * geometry.height <= MAX_PIXELS
    )


def measure(sheet: Sheet, thumb: int) -> Geometry:
    """The layout of a sheet drawn with tiles of ``thumb`` pixels."""
    font, title_font = _fonts(thumb)
    cell = thumb + 2 * PAD
    label_width = 0
    if any(sheet.row_labels):
        widest = max(font.getlength(label) for label in sheet.row_labels)
        max_width = round(LABEL_WIDTH_PER_FONT * font_size(thumb))
        label_width = min(max_width, int(widest) + 2 * MARGIN)
    width = label_width + len(sheet.col_labels) * cell + MARGIN
    title_lines = wrap(sheet.title, title_font, width - 2 * MARGIN, 3)
    col_lines = [wrap(label, font, cell - PAD, MAX_COL_LABEL_LINES) for label in sheet.col_labels]
    header = (
        MARGIN
        + len(title_lines) * _line_height(title_font)
        + max(map(len, col_lines)) * _line_height(font)
        + MARGIN
    )
    height = header + len(sheet.row_labels) * cell + MARGIN
    return Geometry(thumb, label_width, title_lines, col_lines, header, width, height)


def draw_sheet(sheet: Sheet, thumb: int) -> Image.Image:
    """The sheet as one RGB image: title, labels and tiles."""
    from diffusers.utils import make_image_grid

    geometry = measure(sheet, thumb)
    font, title_font = _fonts(thumb)
    canvas = Image.new("RGB", (geometry.width, geometry.height), WHITE)
    draw = ImageDraw.Draw(canvas)
    y = MARGIN
    for line in geometry.title_lines:
        draw.text((MARGIN, y), line, font=title_font, fill=BLACK)
        y += _line_height(title_font)
    line_height = _line_height(font)
    deepest = max(map(len, geometry.col_lines))
    for column, lines in enumerate(geometry.col_lines):  # bottom-aligned above the tiles
        x = geometry.label_width + column * geometry.cell + PAD
        for index, line in enumerate(lines, deepest - len(lines)):
            draw.text((x, y + index * line_height), line, font=font, fill=BLACK)
    for row, label in enumerate(sheet.row_labels):
        lines = wrap(label, font, geometry.label_width - 2 * MARGIN, geometry.cell // line_height)
        top = (
            geometry.header + row * geometry.cell + (geometry.cell - len(lines) * line_height) // 2
        )
        for index, line in enumerate(lines):
            draw.text((MARGIN, top + index * line_height), line, font=font, fill=BLACK)
    tiles = [tile_image(tile, thumb) for row in sheet.tiles for tile in row]
    grid = make_image_grid(tiles, rows=len(sheet.row_labels), cols=len(sheet.col_labels))
    canvas.paste(grid, (geometry.label_width, geometry.header))
    return canvas


def tile_image(tile: Tile | None, thumb: int) -> Image.Image:
    """One tile with its border: the image fitted to ``thumb``, a marked blank, or nothing."""
    if tile is None:
        return Image.new("RGB", (thumb + 2 * PAD,) * 2, WHITE)
    path = Path(tile["path"]) if tile["path"] else None
    if tile["status"] == "done" and path is not None and path.is_file():
        with Image.open(path) as image:
            fitted = ImageOps.pad(image.convert("RGB"), (thumb, thumb), color=WHITE)
        if tile.get("nsfw"):
            stamp(fitted, "nsfw")
    else:
        fitted = blank(thumb, tile["status"] if tile["status"] != "done" else "no file")
    return ImageOps.expand(fitted, border=PAD, fill=RED if tile.get("nsfw") else WHITE)


def stamp(image: Image.Image, text: str) -> None:
    """Write ``text`` in red on a grey box at the top of a tile (an image the checker flagged)."""
    draw = ImageDraw.Draw(image)
    font = sheet_font(max(8, min(font_size(image.width), image.width // 5)))
    left, top, right, bottom = draw.textbbox((image.width / 2, 2), text, font=font, anchor="mt")
    draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=GREY)
    draw.text((image.width / 2, 2), text, font=font, fill=RED, anchor="mt")


def blank(thumb: int, reason: str) -> Image.Image:
    """A grey square crossed in red, with the reason written across it."""
    image = Image.new("RGB", (thumb, thumb), GREY)
    draw = ImageDraw.Draw(image)
    draw.line((0, 0, thumb - 1, thumb - 1), fill=RED, width=2)
    draw.line((0, thumb - 1, thumb - 1, 0), fill=RED, width=2)
    font = sheet_font(max(8, min(font_size(thumb), thumb // 5)))
    left, top, right, bottom = draw.textbbox((thumb / 2, thumb / 2), reason, font=font, anchor="mm")
    draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=GREY)
    draw.text((thumb / 2, thumb / 2), reason, font=font, fill=RED, anchor="mm")
    return image


def wrap(text: str, font: Font, width: float, max_lines: int) -> list[str]:
    """Break text into lines at most ``width`` pixels wide; an ellipsis ends a cut text."""
    max_lines = max(max_lines, 1)
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        if font.getlength(candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        while len(word) > 1 and font.getlength(word) > width:  # a word wider than a line
            cut = max(1, _fitting_prefix(word, font, width))
            lines.append(word[:cut])
            word = word[cut:]
        line = word
    if line:
        lines.append(line)
    if len(lines) <= max_lines:
        return lines
    last = lines[max_lines - 1]
    while last and font.getlength(last + "…") > width:
        last = last[:-1]
    return [*lines[: max_lines - 1], last.rstrip() + "…"]


def _fitting_prefix(word: str, font: Font, width: float) -> int:
    return next((n for n in range(len(word), 0, -1) if font.getlength(word[:n]) <= width), 0)


def _line_height(font: Font) -> int:
    ascent, descent = font.getmetrics()
    return ascent + descent + 2
