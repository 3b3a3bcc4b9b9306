"""Verdicts and metrics of a regenerated image against its record (uint8 levels, PSNR)."""

from __future__ import annotations

import math

import numpy as np

from reprogrid.worker.compare import compare
from reprogrid.worker.store import pixel_sha256

RNG = np.random.default_rng(7)
RECORDED = RNG.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)


def off_by(levels: int) -> np.ndarray:
    """The recorded image with one channel of one pixel moved by ``levels``."""
    pixels = RECORDED.copy()
    value = int(pixels[2, 3, 1])
    pixels[2, 3, 1] = value + levels if value + levels <= 255 else value - levels
    return pixels


def test_same_pixels_are_identical_whatever_the_stored_file():
    result = compare(pixel_sha256(RECORDED), RECORDED.copy(), lambda: None, tolerance=0)
    assert (result.verdict, result.max_abs_diff, result.psnr) == ("identical", 0.0, None)


def test_a_difference_is_measured_in_levels_and_psnr():
    result = compare(pixel_sha256(RECORDED), off_by(3), lambda: RECORDED, tolerance=255)
    values = RECORDED.size
    assert result.max_abs_diff == 3
    assert math.isclose(result.mean_abs_diff, 3 / values)
    assert math.isclose(result.psnr, 10 * math.log10(255**2 / (3**2 / values)))


def test_within_the_tolerance_is_close_and_beyond_it_different():
    recorded = pixel_sha256(RECORDED)
    moved = off_by(2)
    assert compare(recorded, moved, lambda: RECORDED, tolerance=2).verdict == "close"
    assert compare(recorded, moved, lambda: RECORDED, tolerance=1).verdict == "different"


def test_without_the_recorded_pixels_a_mismatch_is_different_and_unmeasured():
    result = compare(pixel_sha256(RECORDED), off_by(1), lambda: None, tolerance=255)
    assert (result.verdict, result.max_abs_diff, result.psnr) == ("different", None, None)
