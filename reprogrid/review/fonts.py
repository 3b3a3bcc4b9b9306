"""The font of contact sheets: one that covers non-ASCII text, found on this machine.

Pillow's built-in font draws Latin letters only (others come out as boxes), so
sheets use DejaVu Sans where it is installed (Debian's ``fonts-dejavu-core``,
Fedora's and Arch's packages, or the copy matplotlib ships), else a broad
system font, and only then Pillow's own. Nothing is ever downloaded.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

from PIL import ImageFont

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

SYSTEM_FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",  # Debian, Ubuntu: fonts-dejavu-core
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",  # Fedora
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",  # Arch
    "/System/Library/Fonts/Supplemental/Arial Unicode.ttf",  # macOS
    "/Library/Fonts/Arial Unicode.ttf",
    "C:/Windows/Fonts/seguisym.ttf",
    "C:/Windows/Fonts/arial.ttf",
)


def _matplotlib_font() -> Path | None:
    """matplotlib's DejaVu Sans, located without importing matplotlib."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"


@functools.cache
def font_file() -> Path | None:
    """The first font file found of the candidates; None: Pillow's own font."""
    candidates = [Path(p) for p in SYSTEM_FONTS] + [_matplotlib_font()]
    return next((p for p in candidates if p is not None and p.is_file()), None)


@functools.cache
def sheet_font(size: int) -> Font:
    """The sheet font at ``size`` pixels."""
    path = font_file()
    if path is not None:
        try:
            return ImageFont.truetype(str(path), size=size)
        except OSError:  # unreadable or not a font: fall back rather than fail the sheet
            pass
    return ImageFont.load_default(size=size)
