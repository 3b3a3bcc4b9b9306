"""Contact sheets: a job's sheets drawn as labelled PNG grids, a row of tiles at a time.

Each image is fitted into a square tile of ``thumb`` pixels; cells without an
image (failed, cancelled, not yet run, file missing) are grey tiles crossed in
red and marked with the reason; an image the safety checker flagged has a red
border and says ``nsfw``. Pillow draws the title, the column labels across the
top and the row labels down the side, wrapping long prompts, in a font that
covers non-ASCII text (``fonts``) at a size that grows with the tiles.

A sheet is never held whole: its header, then each row of tiles (read from the
database with ``layout.sheet_rows``) is drawn as a band the sheet's width and
one tile high, and streamed into the PNG file (``PngStream``: rows deflated as
they come). Memory is one band, whatever the number of rows. Each sheet PNG
carries a ``reprogrid-sheet`` text chunk, after its pixels, listing the job,
axes and images it shows; the list is spooled to a temporary file as the rows
are drawn.
"""

from __future__ import annotations

import bisect
import json
import os
import re
import struct
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from PIL import Image, ImageDraw, ImageOps
from sqlalchemy.orm import Session

from reprogrid.review.fonts import Font, sheet_font
from reprogrid.review.layout import (
    MIN_THUMB,
    ReviewError,
    Sheet,
    Tile,
    sheet_rows,
    thumb_size,
)

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


def write_sheets(
    session: Session,
    sheets: Sequence[Sheet],
    store: Path,
    output: Path,
    thumb: int | None = None,
) -> list[Path]:
    """Draw each sheet into its own file named after ``output``; return the paths.

    Checks every sheet's size before writing anything.
    """
    if output.suffix.lower() != ".png":
        raise ReviewError(f"output: {output.name!r} is not a .png file name")
    thumb = thumb_size(thumb, sheets[0], DEFAULT_MAX_THUMB)
    for sheet in sheets:
        check_size(sheet, thumb)
    paths = sheet_paths(sheets, output)
    output.parent.mkdir(parents=True, exist_ok=True)
    for sheet, path in zip(sheets, paths, strict=True):
        write_sheet(session, sheet, store, thumb, path)
    return paths


def sheet_paths(sheets: Sequence[Sheet], output: Path) -> list[Path]:
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


def write_sheet(session: Session, sheet: Sheet, store: Path, thumb: int, path: Path) -> None:
    """Draw one sheet into ``path``: its header, then its rows of tiles one band at a time."""
    geometry = measure(sheet, thumb)
    font, title_font = _fonts(thumb)
    line_height = _line_height(font)
    rows = range(len(sheet.row_labels))
    cols = range(len(sheet.col_labels))
    with PngStream(path, geometry.width, geometry.height) as png, tempfile.TemporaryFile() as spool:
        listing = Listing(sheet, spool)
        png.write(_header(geometry, font, title_font))
        for row, tiles in zip(rows, sheet_rows(session, sheet, store, rows, cols), strict=True):
            band = Image.new("RGB", (geometry.width, geometry.cell), WHITE)
            draw = ImageDraw.Draw(band)
            label = sheet.row_labels[row]
            lines = wrap(
                label, font, geometry.label_width - 2 * MARGIN, geometry.cell // line_height
            )
            top = (geometry.cell - len(lines) * line_height) // 2
            for index, line in enumerate(lines):
                draw.text((MARGIN, top + index * line_height), line, font=font, fill=BLACK)
            for col, tile in enumerate(tiles):
                band.paste(tile_image(tile, thumb), (geometry.label_width + col * geometry.cell, 0))
                listing.add(row, col, tile)
            png.write(band)
        png.write(Image.new("RGB", (geometry.width, MARGIN), WHITE))
        png.text(SHEET_CHUNK, listing.finish())


def _header(geometry: Geometry, font: Font, title_font: Font) -> Image.Image:
    """The band above the tiles: the title, then the column labels, bottom-aligned."""
    header = Image.new("RGB", (geometry.width, geometry.header), WHITE)
    draw = ImageDraw.Draw(header)
    y = MARGIN
    for line in geometry.title_lines:
        draw.text((MARGIN, y), line, font=title_font, fill=BLACK)
        y += _line_height(title_font)
    line_height = _line_height(font)
    deepest = max(map(len, geometry.col_lines))
    for column, lines in enumerate(geometry.col_lines):
        x = geometry.label_width + column * geometry.cell + PAD
        for index, line in enumerate(lines, deepest - len(lines)):
            draw.text((x, y + index * line_height), line, font=font, fill=BLACK)
    return header


class Listing:
    """What a sheet shows, for its PNG chunk, spooled to a file as it is drawn: job,
    axes, and each tile's image or status."""

    def __init__(self, sheet: Sheet, spool: IO[bytes]) -> None:
        head = {
            "job_id": sheet.job_id,
            "job_name": sheet.job_name,
            "fixed": sheet.fixed,
            "rows": sheet.row_labels,
            "cols": sheet.col_labels,
        }
        self.file = spool
        self.file.write(json.dumps(head, ensure_ascii=False)[:-1].encode() + b', "tiles": [')
        self.separator = b""

    def add(self, row: int, col: int, tile: Tile | None) -> None:
        """List one tile (nothing where the sheet has no cell)."""
        if tile is None:
            return
        entry = {
            "row": row,
            "col": col,
            "image_id": tile.get("image_id"),
            "png_sha256": tile.get("png_sha256"),
            "status": tile["status"],
        }
        self.file.write(self.separator + json.dumps(entry).encode())
        self.separator = b", "

    def finish(self) -> IO[bytes]:
        """The listing, complete and rewound."""
        self.file.write(b"]}")
        self.file.seek(0)
        return self.file


class PngStream:
    """A PNG file written band by band: 8-bit RGB rows deflated as they come, then
    text chunks, so that no more than a band of the image is ever in memory."""

    IDAT_BYTES = 1 << 16

    def __init__(self, path: Path, width: int, height: int) -> None:
        self.file = path.open("wb")
        self.width, self.height, self.rows = width, height, 0
        self.deflate = zlib.compressobj(6)
        self.pending = bytearray()
        self.file.write(b"\x89PNG\r\n\x1a\n")
        self._chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))

    def __enter__(self) -> PngStream:
        return self

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        if exc_type is None:
            self._close()
        self.file.close()

    def write(self, band: Image.Image) -> None:
        """Append a band of rows as wide as the image."""
        if band.size[0] != self.width or self.rows + band.size[1] > self.height:
            raise ValueError(f"band {band.size} does not fit a {self.width}x{self.height} PNG")
        raw, stride = band.convert("RGB").tobytes(), self.width * 3
        for start in range(0, len(raw), stride):  # filter type 0 (None) before each row
            self.pending += self.deflate.compress(b"\x00" + raw[start : start + stride])
        self.rows += band.size[1]
        if len(self.pending) >= self.IDAT_BYTES:
            self._chunk(b"IDAT", bytes(self.pending))
            self.pending.clear()

    def text(self, keyword: str, text: IO[bytes]) -> None:
        """An uncompressed international text chunk (iTXt) whose UTF-8 text is read from
        a file, copied through without being held whole."""
        self._finish_pixels()
        # keyword, then no compression, no language tag and no translated keyword
        prefix = keyword.encode("latin-1") + b"\x00\x00\x00\x00\x00"
        text.seek(0, 2)
        size = len(prefix) + text.tell()
        text.seek(0)
        self.file.write(struct.pack(">I", size) + b"iTXt" + prefix)
        crc = zlib.crc32(b"iTXt" + prefix)
        while piece := text.read(self.IDAT_BYTES):
            self.file.write(piece)
            crc = zlib.crc32(piece, crc)
        self.file.write(struct.pack(">I", crc))

    def _finish_pixels(self) -> None:
        if self.deflate is None:
            return
        if self.rows != self.height:
            raise ValueError(f"{self.rows} rows written of {self.height}")
        self._chunk(b"IDAT", bytes(self.pending + self.deflate.flush()))
        self.pending.clear()
        self.deflate = None

    def _close(self) -> None:
        self._finish_pixels()
        self._chunk(b"IEND", b"")

    def _chunk(self, kind: bytes, data: bytes) -> None:
        self.file.write(struct.pack(">I", len(data)) + kind + data)
        self.file.write(struct.pack(">I", zlib.crc32(kind + data)))


def tile_image(tile: Tile | None, thumb: int) -> Image.Image:
    """One tile with its border: the image fitted to ``thumb``, a marked blank, or nothing."""
    if tile is None:
        return Image.new("RGB", (thumb + 2 * PAD,) * 2, WHITE)
    path = tile["path"]  # a str: pathlib would intern the name of every file
    if tile["status"] == "done" and path is not None and os.path.isfile(path):
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
