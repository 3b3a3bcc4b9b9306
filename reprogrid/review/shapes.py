"""What a ``builtin:shapes`` picture shows: its vocabulary, and the colour and shape measured in it.

``builtin:shapes`` is trained (``scripts/train_shapes.py``) on flat coloured
shapes on flat backgrounds. This module names that world (colours with their
RGB values, shapes, background colours, how captions read) and measures an
image of it without a classifier: the background is the named colour nearest
the median of the image's border, the shape is every pixel far from that
median, its colour is the named hue closest to the shape pixels' median hue,
and its kind follows from how much of its bounding box its outline (halfway
between background and shape colour) fills: square 0.99, circle 0.78,
triangle 0.53, star 0.39.
Needs numpy and Pillow only.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from PIL import Image

# Hue colours a shape may have; backgrounds are these plus the grey ones.
SHAPE_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 30),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "purple": (150, 50, 200),
}
BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = SHAPE_COLOURS | {
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
}
SHAPES = ("circle", "square", "triangle", "star")
# Fraction of its bounding box each shape fills, as the training script draws it at 64x64
# (antialiased edges make a triangle fuller than 0.5 and a star than its 0.34).
SHAPE_FILL = {"square": 0.99, "circle": 0.78, "triangle": 0.53, "star": 0.39}

# A pixel belongs to the shape when it is this far (RGB distance, 0..441) from the background.
SHAPE_DISTANCE = 45.0
MIN_SHAPE_PIXELS = 12


def article(word: str) -> str:
    """``a`` or ``an`` before ``word``."""
    return "an" if word[0] in "aeiou" else "a"


def caption(colour: str, shape: str, background: str | None = None, comma: bool = False) -> str:
    """``a red circle``, ``a red circle on a blue background`` or ``..., on a blue background``."""
    subject = f"{article(colour)} {colour} {shape}"
    if background is None:
        return subject
    return f"{subject}{',' if comma else ''} on {article(background)} {background} background"


@dataclass(frozen=True)
class Measured:
    """What an image shows, measured: ``None`` where there is no shape to measure."""

    background: str  # the named background colour nearest the border's median
    colour: str | None
    shape: str | None
    centre: tuple[float, float] | None  # (x, y) of the shape's pixels, in pixels
    shape_pixels: int


def measure(image: Image.Image) -> Measured:
    """The background, the shape's named colour and kind, and where it is."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    background = _border_median(pixels)
    distance = np.linalg.norm(pixels - background, axis=-1)
    far = distance > SHAPE_DISTANCE
    count = int(far.sum())
    bg = _named_background(background)
    if count < MIN_SHAPE_PIXELS:
        return Measured(bg, None, None, None, count)
    # The outline halfway between background and shape colour, wherever blur put the edge.
    outline = distance > 0.5 * np.median(distance[far])
    ys, xs = np.nonzero(outline)
    centre = (float(xs.mean()), float(ys.mean()))
    return Measured(bg, _named_hue(pixels[far]), _shape_kind(outline, ys, xs), centre, count)


def _border_median(pixels: np.ndarray) -> np.ndarray:
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return np.median(border, axis=0)


def _named_background(rgb: np.ndarray) -> str:
    distances = {n: np.linalg.norm(rgb - c) for n, c in BACKGROUND_COLOURS.items()}
    return min(distances, key=lambda name: distances[name])


def _hue(rgb: np.ndarray) -> float:
    return colorsys.rgb_to_hsv(*(rgb / 255.0))[0] * 360.0


def _named_hue(shape_pixels: np.ndarray) -> str:
    hue = _hue(np.median(shape_pixels, axis=0))
    hues = {name: _hue(np.array(rgb)) for name, rgb in SHAPE_COLOURS.items()}
    return min(hues, key=lambda name: _hue_distance(hue, hues[name]))


def _hue_distance(a: float, b: float) -> float:
    return min(abs(a - b), 360.0 - abs(a - b))


def _shape_kind(mask: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> str:
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    fill = mask.sum() / box
    return min(SHAPE_FILL, key=lambda name: abs(SHAPE_FILL[name] - fill))
