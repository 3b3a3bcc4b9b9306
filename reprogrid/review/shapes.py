"""What a ``builtin:shapes`` picture shows: its vocabulary, and the colour and shape measured in it.

``builtin:shapes`` is trained (``scripts/train_shapes.py``) on flat coloured
shapes on flat backgrounds. This module names that world (colours with their
RGB values, shapes, background colours, how captions read), draws its
pictures as the training data set does, with their silhouettes, and
measures an image of it without a classifier: the background is the named
colour nearest the median of the image's border, the shape is every pixel far
from that median, and its outline (halfway between background and shape
colour, its largest piece) gives the rest: its kind, a star when it has dents
(it fills less than 0.735 of its convex hull: a drawn star 0.54, the other
shapes 0.93 or more), else the shape whose fill of its bounding box is
nearest (square 0.99, circle 0.78, triangle 0.53); its colour, the named hue
closest to the median of its inner half (the pixels farthest from the
background).
Needs numpy and Pillow only.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

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
SIZE = 64  # pixels a side
RADII = (9, 13, 17)  # half a shape's width: small, medium, large
# The README's refine example, as measure_refine.py and tests/test_shapes.py run it: each
# subject refined with this text appended, which should repaint only the background.
REFINE_SUBJECTS = ("a red circle", "a yellow star", "a blue square", "a purple triangle")
REFINE_APPEND = ", on a green background"
SUPERSAMPLE = 4  # drawn this many times larger, then reduced, for smooth edges
# Each shape as the training script draws it at 64x64, averaged over its three sizes: the
# fraction of its bounding box it fills (antialiased edges make a triangle fuller than 0.5),
# and of its convex hull (its solidity): 0.93 or more for the three convex shapes, 0.54 for a
# star. A star blurred fat fills as much of its box as a triangle, but keeps its dents.
SHAPE_FILL = {"square": 0.99, "circle": 0.78, "triangle": 0.53}
STAR_SOLIDITY, CONVEX_SOLIDITY = 0.54, 0.93

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


def shape_points(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """The polygon of ``shape`` centred at (cx, cy) with half-width ``r`` (circle: its box)."""
    if shape in ("circle", "square"):
        return [(cx - r, cy - r), (cx + r, cy + r)]
    if shape == "triangle":
        return [(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)]
    angles = np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, r, 0.4 * r)
    # Centre the star's bounding box (its points reach r up, 0.81 r down).
    cy += r * (1 - np.cos(np.pi / 5)) / 2
    return [(cx + q * np.cos(a), cy - q * np.sin(a)) for a, q in zip(angles, radii, strict=True)]


def draw(shape: str, colour: str, background: str, cx: float, cy: float, r: float) -> np.ndarray:
    """One 64x64 picture, drawn at 4x and reduced so that edges are smooth."""
    scale = SUPERSAMPLE
    big = Image.new("RGB", (SIZE * scale,) * 2, BACKGROUND_COLOURS[background])
    pen = ImageDraw.Draw(big)
    points = [(x * scale, y * scale) for x, y in shape_points(shape, cx, cy, r)]
    fill = SHAPE_COLOURS[colour]
    if shape == "circle":
        pen.ellipse(points, fill=fill)
    elif shape == "square":
        pen.rectangle(points, fill=fill)
    else:
        pen.polygon(points, fill=fill)
    return np.asarray(big.resize((SIZE, SIZE), Image.Resampling.BOX))


def silhouette(picture: np.ndarray, colour: str, background: str) -> np.ndarray:
    """How much of each 4x4 block of a drawn picture its shape covers: 16x16, 0 to 1.

    Each pixel of ``draw``'s picture is a mix of the two colours; its share of the
    shape colour, averaged over the block (a latent pixel's worth of pixels).
    """
    fg, bg = (
        np.array(c, dtype=np.float32)
        for c in (SHAPE_COLOURS[colour], BACKGROUND_COLOURS[background])
    )
    share = (picture.astype(np.float32) - bg) @ (fg - bg) / ((fg - bg) @ (fg - bg))
    blocks = np.clip(share, 0, 1).reshape(SIZE // 4, 4, SIZE // 4, 4)
    return blocks.mean(axis=(1, 3))


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
    piece = _largest_piece(outline)
    # Its colour from its inner half: blurred edges mix in the background (a yellow star's
    # edges on red are orange), and specks elsewhere are not the shape.
    inner = piece & (distance >= np.median(distance[piece]))
    return Measured(bg, _named_hue(pixels[inner]), _shape_kind(piece), centre, count)


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


def _largest_piece(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected piece of ``mask``: specks elsewhere do not change its kind."""
    unseen = mask.copy()
    best: list[tuple[int, int]] = []
    for start in zip(*np.nonzero(mask), strict=True):
        if not unseen[start]:
            continue
        unseen[start] = False
        piece, frontier = [start], [start]
        while frontier:
            y, x = frontier.pop()
            for near in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= near[0] < mask.shape[0] and 0 <= near[1] < mask.shape[1] and unseen[near]:
                    unseen[near] = False
                    piece.append(near)
                    frontier.append(near)
        best = max(best, piece, key=len)
    largest = np.zeros_like(mask)
    largest[tuple(np.array(best).T)] = True
    return largest


def _shape_kind(mask: np.ndarray) -> str:
    """A star when the shape has dents (solidity nearer a star's), else the nearest fill."""
    ys, xs = np.nonzero(mask)
    area = float(mask.sum())
    if area / _hull_area(mask) < (STAR_SOLIDITY + CONVEX_SOLIDITY) / 2:
        return "star"
    fill = area / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
    return min(SHAPE_FILL, key=lambda name: abs(SHAPE_FILL[name] - fill))


def _hull_area(mask: np.ndarray) -> float:
    """The area of the convex hull of the mask's pixels (their corners): Andrew's monotone chain."""
    rows = np.nonzero(mask.any(axis=1))[0]
    left = mask[rows].argmax(axis=1)
    right = mask.shape[1] - mask[rows, ::-1].argmax(axis=1)
    points = sorted(
        {(float(x), float(y + dy)) for y, a, b in zip(rows, left, right, strict=True)
         for x in (a, b) for dy in (0, 1)}
    )  # fmt: skip
    lower, upper = _half_hull(points), _half_hull(points[::-1])
    hull = lower[:-1] + upper[:-1]
    xs, ys = np.array([x for x, _ in hull]), np.array([y for _, y in hull])
    return float(abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))) / 2)


def _half_hull(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    chain: list[tuple[float, float]] = []
    for point in points:
        while len(chain) >= 2 and _cross(chain[-2], chain[-1], point) <= 0:
            chain.pop()
        chain.append(point)
    return chain


def _cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def centre_distance(a: Measured, b: Measured) -> float:
    """How far apart two measured shapes' centres are, in pixels (infinite without a shape)."""
    if a.centre is None or b.centre is None:
        return float("inf")
    return float(np.hypot(a.centre[0] - b.centre[0], a.centre[1] - b.centre[1]))
