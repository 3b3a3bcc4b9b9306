"""Re-hashing stored PNGs against their records, without regenerating anything (no torch).

A file whose bytes still hash to ``png_sha256`` is ``identical`` and is not even
decoded: its recorded pixels were hashed from those very bytes. Only a changed
file is decoded, to tell ``pixels-changed`` (the image itself is not the recorded
one) from ``file-changed`` (same pixels, other bytes: metadata edited or the
file re-encoded). A file that is gone is ``missing``; one that no longer decodes
as an image is ``unreadable``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import insert

from reprogrid.models import Database, Verification
from reprogrid.models.verifications import (
    FILE_CHANGED,
    FILES,
    IDENTICAL,
    MISSING,
    PIXELS_CHANGED,
    UNREADABLE,
    ImageRef,
)
from reprogrid.worker.store import file_sha256, pixel_sha256, read_png

INSERT_CHUNK = 5_000


def check_file(store: Path, ref: ImageRef) -> dict[str, Any]:
    """The verification row of one stored file, re-hashed against its image's record."""
    path = store / ref.path
    row: dict[str, Any] = {"image_id": ref.image_id, "environment_id": None, "mode": FILES}
    try:
        png_sha256 = file_sha256(path)
    except FileNotFoundError:
        return {**row, "verdict": MISSING, "pixel_sha256": None, "details": {"path": str(path)}}
    details = {"path": str(path), "png_sha256": png_sha256}
    if png_sha256 == ref.png_sha256:
        return {**row, "verdict": IDENTICAL, "pixel_sha256": ref.pixel_sha256, "details": details}
    try:
        pixels, _ = read_png(path)
    except (OSError, ValueError) as exc:  # PIL raises these for truncated or foreign files
        details["error"] = f"{type(exc).__name__}: {exc}"
        return {**row, "verdict": UNREADABLE, "pixel_sha256": None, "details": details}
    pixels_now = pixel_sha256(pixels)
    verdict = FILE_CHANGED if pixels_now == ref.pixel_sha256 else PIXELS_CHANGED
    return {**row, "verdict": verdict, "pixel_sha256": pixels_now, "details": details}


def check_files(db: Database, store: Path, refs: list[ImageRef]) -> list[dict[str, Any]]:
    """Re-hash every image's stored file and record one ``files`` verification each."""
    rows = [check_file(store, ref) for ref in refs]
    with db.sessions() as session:
        for start in range(0, len(rows), INSERT_CHUNK):
            session.execute(insert(Verification), rows[start : start + INSERT_CHUNK])
        session.commit()
    return rows
