"""The image store: pixel identity, PNG metadata, atomic content-addressed files."""

from pathlib import Path

import numpy as np
import pytest

from reprogrid.worker.store import encode_png, file_sha256, pixel_sha256, read_png, write_png


def image(seed=0, shape=(8, 16, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_pixel_hash_covers_the_shape_not_only_the_bytes():
    pixels = image()
    assert pixel_sha256(pixels) != pixel_sha256(pixels.reshape(16, 8, 3))


def test_pixel_hash_changes_with_one_pixel_level():
    pixels = image()
    changed = pixels.copy()
    changed[0, 0, 0] ^= 1
    assert pixel_sha256(pixels) != pixel_sha256(changed)


def test_pixel_hash_refuses_anything_but_uint8_rgb():
    with pytest.raises(ValueError):
        pixel_sha256(image().astype(np.float32))


def test_png_round_trips_pixels_and_text_chunks(tmp_path: Path):
    pixels = image()
    path, _ = write_png(tmp_path, encode_png(pixels, {"parameters": "a fox", "reprogrid": "ü"}))
    decoded, chunks = read_png(tmp_path / path)
    assert np.array_equal(decoded, pixels)
    assert chunks == {"parameters": "a fox", "reprogrid": "ü"}


def test_files_are_named_by_the_hash_of_their_bytes(tmp_path: Path):
    path, digest = write_png(tmp_path, encode_png(image(), {}))
    assert path == f"{digest[:2]}/{digest}.png"
    assert file_sha256(tmp_path / path) == digest


def test_writing_the_same_bytes_twice_leaves_one_file_and_no_temporary(tmp_path: Path):
    data = encode_png(image(), {"parameters": "x"})
    assert write_png(tmp_path, data) == write_png(tmp_path, data)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [
        f"{write_png(tmp_path, data)[1]}.png"
    ]


def test_the_same_pixels_and_metadata_encode_to_the_same_bytes():
    assert encode_png(image(), {"a": "b"}) == encode_png(image(), {"a": "b"})
