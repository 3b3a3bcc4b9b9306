"""The content-addressed image store, PNG metadata and image hashes.

Identity of an image is ``pixel_sha256``: the SHA-256 of its shape as
``"HxWxC uint8\\n"`` followed by the raw RGB bytes. ``png_sha256`` is the hash
of the file itself, which also covers its metadata. Files live at
``<store>/<png_sha256[:2]>/<png_sha256>.png`` and are written to a temporary
name, then renamed, so a reader never sees half a file and a second writer of
the same bytes changes nothing. Files and folders follow the process's umask.
A process killed between the two leaves a
``.tmp-*.png`` file behind; every worker sweeps those older than an hour when
it starts (``remove_stale_temp_files``).

Files are never deleted once written under their name: a path is a content
hash, so a file written by a worker that lost its batch is the very file the
new owner records (or, if the pixels differed, a file no row names, which is
harmless); deleting one could remove a file another worker is recording.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from reprogrid.models.queries import store_path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Store files get the mode a plain ``open`` would give them (mkstemp's is 0600),
# so the other users of a shared store can read them. Read once: setting the
# umask to read it is process-wide, not safe while other threads create files.
FILE_MODE = 0o666 & ~_umask()
PARAMETERS_CHUNK = "parameters"  # the AUTOMATIC1111 web UI's metadata key
REPROGRID_CHUNK = "reprogrid"
TEMP_PREFIX = ".tmp-"
STALE_TEMP_SECONDS = 3600  # a write takes milliseconds: an hour-old temp file is an orphan


def pixel_sha256(pixels: np.ndarray) -> str:
    """Hash of an RGB uint8 array of shape (height, width, 3), shape included."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3:
        raise ValueError(f"expected an HxWxC uint8 array, got {pixels.dtype} {pixels.shape}")
    height, width, channels = pixels.shape
    digest = hashlib.sha256(f"{height}x{width}x{channels} uint8\n".encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()


def encode_png(pixels: np.ndarray, text_chunks: dict[str, str]) -> bytes:
    """PNG bytes of the pixels with text chunks (tEXt, or iTXt for non-Latin-1 text)."""
    info = PngImagePlugin.PngInfo()
    for key, value in text_chunks.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG", pnginfo=info, compress_level=4)
    return buffer.getvalue()


def read_png(path: Path) -> tuple[np.ndarray, dict[str, str]]:
    """Decoded RGB pixels and text chunks of a PNG file."""
    with Image.open(path) as image:
        chunks = {k: v for k, v in image.text.items() if isinstance(v, str)}
        return np.asarray(image.convert("RGB")), chunks


def write_png(store: Path, data: bytes) -> tuple[str, str]:
    """Write PNG bytes into the store atomically; return (relative path, png_sha256)."""
    digest = hashlib.sha256(data).hexdigest()
    relative = store_path(digest)
    target = store / relative
    if target.exists() and target.stat().st_size == len(data):
        return relative, digest
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".png", dir=target.parent)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temp, FILE_MODE)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return relative, digest


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def remove_stale_temp_files(store: Path, older_than: float = STALE_TEMP_SECONDS) -> int:
    """Delete temporary files left by killed writers; returns how many."""
    cutoff = time.time() - older_than
    removed = 0
    for temp in store.glob(f"*/{TEMP_PREFIX}*.png"):
        try:
            if temp.stat().st_mtime < cutoff:
                temp.unlink()
                removed += 1
        except FileNotFoundError:  # another worker swept it first
            continue
    return removed
