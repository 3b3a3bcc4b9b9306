"""Verification runs: regenerate recorded images, compare them, write one verification row each.

``verify_images`` runs in this process (``reprogrid verify``);
``verify_batch`` computes a batch of kind ``verify`` on a worker, claimed,
leased and finished like a generation batch. Both replay each original batch
once, however many of its images are checked. An original batch that cannot be
replayed (checkpoint gone, no such device) gives ``error`` rows that say why.

Each image's stored file is checked too (``files_check``), so a verdict covers
every link between record, file and regeneration: a file missing, changed or
no longer matching its record gives the file's verdict (never ``identical``),
and ``details.broken`` names each broken link, ``pixels differ`` included when
the regeneration is ``different``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

from reprogrid.models import Batch, Database, Verification
from reprogrid.models.verifications import (
    DIFFERENT,
    IDENTICAL,
    ImageRef,
    group_by_batch,
    images_to_verify,
)
from reprogrid.worker import records
from reprogrid.worker.environment import fingerprint
from reprogrid.worker.execute import LeaseKeeper, RecordingContext, WorkerContext
from reprogrid.worker.files_check import PIXELS_DIFFER_LINK, check_stored_file
from reprogrid.worker.regenerate import (
    Replay,
    ReplayError,
    error_row,
    load_recorded_batch,
    regenerate,
)


def verify_images(
    db: Database, store: Path, images: list[ImageRef], replay: Replay, verifier: str
) -> list[dict[str, Any]]:
    """Regenerate and compare the images, batch by batch; record and return one row each."""
    rows: list[dict[str, Any]] = []
    for batch_id, targets in group_by_batch(images).items():
        batch_rows = verification_rows(db, store, batch_id, targets, replay, verifier=verifier)
        with db.sessions() as session:
            session.execute(insert(Verification), batch_rows)
            session.commit()
        rows += batch_rows
    return rows


def verification_rows(
    db: Database,
    store: Path,
    batch_id: int,
    images: list[ImageRef],
    replay: Replay,
    should_stop: Callable[[], bool] | None = None,
    **details: Any,
) -> list[dict[str, Any]]:
    """Replay one original batch for ``images`` and turn the results into verification rows."""
    with db.sessions() as session:
        recorded = load_recorded_batch(session, batch_id)
    try:
        results = regenerate(recorded, images, replay, store, should_stop)
    except ReplayError as exc:
        rows = [error_row(image, replay.mode, str(exc), **details) for image in images]
    else:
        environment = results[0].environment
        with db.sessions() as session:
            environment_id = records.environment_id(session, fingerprint(environment), environment)
        rows = [result.verification_row(environment_id, **details) for result in results]
    return [with_file_links(row, store, image) for row, image in zip(rows, images, strict=True)]


def with_file_links(row: dict[str, Any], store: Path, image: ImageRef) -> dict[str, Any]:
    """A regeneration's row with its stored file checked: the file's verdict where a file
    link is broken, and every broken link named in ``details.broken``."""
    check = check_stored_file(store, image)
    broken = [*check.broken, *([PIXELS_DIFFER_LINK] if row["verdict"] == DIFFERENT else [])]
    verdict = row["verdict"] if check.verdict == IDENTICAL else check.verdict
    details = {**row["details"], "file": check.details, "broken": broken}
    return {**row, "verdict": verdict, "details": details}


def verify_batch(ctx: WorkerContext, claim: records.ClaimedBatch) -> Verifications:
    """Regenerate and compare a claimed ``verify`` batch; return its verdicts, to be recorded."""
    with ctx.db.sessions() as session:
        images = images_to_verify(session, cell_ids=[cell_id for cell_id, _, _ in claim.cells])
        options = session.scalar(select(Batch.replay).where(Batch.id == claim.batch_id))
    replay = Replay(**{**(options or {}), "device": ctx.device})
    keeper = LeaseKeeper(ctx, claim.batch_id)
    rows: list[dict[str, Any]] = []
    for original_batch, targets in group_by_batch(images).items():
        rows += verification_rows(
            ctx.db,
            ctx.store,
            original_batch,
            targets,
            replay,
            keeper,
            verifier=ctx.name,
            verify_batch_id=claim.batch_id,
        )
    return Verifications(claim, rows)


@dataclass(frozen=True)
class Verifications:
    """A verify batch's verification rows, waiting to be recorded."""

    claim: records.ClaimedBatch
    rows: list[dict[str, Any]]

    def record(self, ctx: RecordingContext) -> int:
        """Insert the rows and finish the batch; how many were recorded."""
        with ctx.db.sessions() as session:
            kept = records.record_verifications(session, self.claim, ctx.name, self.rows)
        return len(self.rows) if kept else 0
