"""Finding images inside bigger images (sheets, screenshots), pixel for pixel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def pixels(path: Path) -> np.ndarray:
    """An image file as an RGB array."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def find(haystack: np.ndarray, needle: np.ndarray) -> list[tuple[int, int]]:
    """Every (y, x) where ``needle`` appears in ``haystack`` exactly."""
    height, width = needle.shape[:2]
    starts = np.argwhere((haystack == needle[0, 0]).all(axis=-1))
    return [
        (int(y), int(x))
        for y, x in starts
        if y + height <= haystack.shape[0]
        and x + width <= haystack.shape[1]
        and np.array_equal(haystack[y : y + height, x : x + width], needle)
    ]
