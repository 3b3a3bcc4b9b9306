"""Comparing regenerated pixels with the recorded image: the verdict and the metrics behind it.

Identity is decided by ``pixel_sha256`` alone. When the hashes differ, the
regenerated pixels are measured against the stored PNG, provided its pixels
still hash to the record: largest and mean absolute difference per channel, in
uint8 levels, and PSNR in dB. Within the tolerance the verdict is ``close``,
beyond it ``different``; without a trustworthy stored file nothing can be
measured and the verdict is ``different``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reprogrid.models.verifications import CLOSE, DIFFERENT, IDENTICAL
from reprogrid.worker.store import pixel_sha256, read_png


@dataclass(frozen=True)
class Comparison:
    """A verdict and what was measured; ``psnr`` is None when infinite (no difference)."""

    verdict: str
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    psnr: float | None = None


def compare(
    recorded_sha256: str,
    regenerated: np.ndarray,
    recorded_pixels: Callable[[], np.ndarray | None],
    tolerance: float,
) -> Comparison:
    """Compare regenerated pixels with the record.

    ``recorded_pixels`` is only called when the hashes differ; it returns the
    recorded pixels, or None when they cannot be had.
    """
    if pixel_sha256(regenerated) == recorded_sha256:
        return Comparison(IDENTICAL, 0.0, 0.0)
    stored = recorded_pixels()
    if stored is None or stored.shape != regenerated.shape:
        return Comparison(DIFFERENT)
    diff = np.abs(regenerated.astype(np.int16) - stored.astype(np.int16))
    largest = float(diff.max())
    mse = float(np.mean(diff.astype(np.float64) ** 2))
    psnr = 10 * math.log10(255**2 / mse) if mse else None
    verdict = CLOSE if largest <= tolerance else DIFFERENT
    return Comparison(verdict, largest, float(diff.mean()), psnr)


def stored_pixels(path: Path, expected_sha256: str) -> np.ndarray | None:
    """The pixels of a stored PNG if they still hash to the record, else None."""
    try:
        pixels, _ = read_png(path)
    except (OSError, ValueError):
        return None
    return pixels if pixel_sha256(pixels) == expected_sha256 else None
