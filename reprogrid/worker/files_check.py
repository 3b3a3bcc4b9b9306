"""Checking stored PNGs against their records, without regenerating anything (no torch).

An image's record and its stored file are held together by links, each of
which can break on its own, and each broken one is named:

- ``file missing``: no file at the recorded path;
- ``file changed``: the file's bytes no longer hash to ``png_sha256`` (a
  truncated, bit-flipped, re-encoded or edited file);
- ``record changed``: the file is as written, but its decoded pixels do not hash
  to the recorded ``pixel_sha256`` (the record was edited, or written wrong);
- ``pixels differ``: a regeneration's pixels do not hash to ``pixel_sha256``
  (``worker/verify.py`` adds it; files are not regenerated here).

Every file is read and decoded, whatever its bytes hash to. Its verdict is
``identical`` only when every link holds; otherwise ``missing``,
``unreadable`` (changed bytes that no longer decode), ``file-changed`` (other
bytes, the recorded pixels: metadata edited or the file re-encoded),
``pixels-changed`` (other bytes, other pixels) or ``record-changed``.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    RECORD_CHANGED,
    UNREADABLE,
    ImageRef,
)
from reprogrid.worker.store import file_sha256, pixel_sha256, read_png

INSERT_CHUNK = 5_000
FILE_MISSING_LINK = "file missing"
FILE_CHANGED_LINK = "file changed"
RECORD_CHANGED_LINK = "record changed"
PIXELS_DIFFER_LINK = "pixels differ"


@dataclass(frozen=True)
class FileCheck:
    """What one stored file showed: its verdict, the links broken, what was found."""

    verdict: str
    broken: tuple[str, ...]
    pixel_sha256: str | None  # what the file decodes to; None when missing or unreadable
    details: dict[str, Any]  # path, the file's png_sha256 and pixel_sha256, a read error


def check_stored_file(store: Path, ref: ImageRef) -> FileCheck:
    """Check the image's stored file: it exists, hashes to ``png_sha256``, decodes to
    ``pixel_sha256``."""
    path = store / ref.path
    details: dict[str, Any] = {"path": str(path)}
    try:
        details["png_sha256"] = png_now = file_sha256(path)
    except FileNotFoundError:
        return FileCheck(MISSING, (FILE_MISSING_LINK,), None, details)
    except OSError as exc:  # a folder, no permission: not the file that was recorded
        details["error"] = f"{type(exc).__name__}: {exc}"
        return FileCheck(UNREADABLE, (FILE_CHANGED_LINK,), None, details)
    file_as_written = png_now == ref.png_sha256
    try:
        pixels, _ = read_png(path)
    except (OSError, ValueError) as exc:  # PIL raises these for truncated or foreign files
        details["error"] = f"{type(exc).__name__}: {exc}"
        if file_as_written:
            return FileCheck(RECORD_CHANGED, (RECORD_CHANGED_LINK,), None, details)
        return FileCheck(UNREADABLE, (FILE_CHANGED_LINK,), None, details)
    details["pixel_sha256"] = pixels_now = pixel_sha256(pixels)
    pixels_as_recorded = pixels_now == ref.pixel_sha256
    if file_as_written:
        if pixels_as_recorded:
            return FileCheck(IDENTICAL, (), pixels_now, details)
        return FileCheck(RECORD_CHANGED, (RECORD_CHANGED_LINK,), pixels_now, details)
    verdict = FILE_CHANGED if pixels_as_recorded else PIXELS_CHANGED
    return FileCheck(verdict, (FILE_CHANGED_LINK,), pixels_now, details)


def check_file(store: Path, ref: ImageRef) -> dict[str, Any]:
    """The ``files`` verification row of one stored file (see :func:`check_stored_file`)."""
    check = check_stored_file(store, ref)
    return {
        "image_id": ref.image_id,
        "environment_id": None,
        "mode": FILES,
        "verdict": check.verdict,
        "pixel_sha256": check.pixel_sha256,
        "details": {**check.details, "broken": list(check.broken)},
    }


def check_files(db: Database, store: Path, refs: list[ImageRef]) -> list[dict[str, Any]]:
    """Check every image's stored file and record one ``files`` verification each."""
    rows = [check_file(store, ref) for ref in refs]
    with db.sessions() as session:
        for start in range(0, len(rows), INSERT_CHUNK):
            session.execute(insert(Verification), rows[start : start + INSERT_CHUNK])
        session.commit()
    return rows
