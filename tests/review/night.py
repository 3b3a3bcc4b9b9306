"""The night job of the review tests: a finished grid with a failure, a verification
and a queued refine job.

The job is 4 prompts x 8 seeds (one seed above 2**63) on builtin:tiny, 64x64,
2 steps, batches of 4. One batch failed the way a worker records a failure on
its last attempt (claimed, then failed with the error text), one image carries
a verification, and a refine job of that image waits in the queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from conftest import Cli
from sqlalchemy import select

from reprogrid.config import Settings
from reprogrid.models import Cell, Database, Image, Verification, open_database
from reprogrid.review.refine import refine_spec
from reprogrid.scheduler.jobs import create_job, form_batches
from reprogrid.scheduler.spec import validate_spec

NIGHT_PROMPTS = (
    "a red fox in the snow",
    "a lighthouse at dusk on a rocky coast, dramatic clouds, oil painting in the style"
    " of the old masters, highly detailed",
    "a bowl of ramen, studio photo",
    "a cat wearing a <tiny> hat & scarf",
)
NIGHT_SEEDS = "0-6,18446744073709551615"
FAILED_PROMPT = NIGHT_PROMPTS[0]
FAILED_SEEDS = (4, 5, 6, 2**64 - 1)  # the second batch: the fox's last four seeds
FAILED_ERROR = "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
REFINE_APPENDS = (", highly realistic", ", artsy")
TINY_FLAGS = ("--steps", "2", "--width", "64", "--height", "64")  # for `reprogrid run`


@dataclass(frozen=True)
class NightJob:
    """Where the night job lives and the ids of what it holds."""

    db_url: str
    store: Path
    job_id: int
    verified_image_id: int
    refine_job_id: int
    cli: Cli

    @property
    def db_path(self) -> Path:
        """The SQLite file (for the sqlite3 shell)."""
        return Path(self.db_url.removeprefix("sqlite:///"))


def make_night_job(db_url: str, store: Path, prompts: tuple[str, ...]) -> tuple[int, int, int]:
    """Run the night job into a database; return (job id, verified image id, refine job id)."""
    from reprogrid.worker import records
    from reprogrid.worker.embedded import run_job
    from reprogrid.worker.execute import WorkerContext

    settings = Settings(db_url=db_url, store=store, threads=1)
    db = open_database(db_url)
    raw = {"name": "night", "prompts": list(prompts), "seeds": NIGHT_SEEDS, "steps": 2}
    spec = validate_spec(raw | {"width": 64, "height": 64, "batch_size": 4}, settings.max_cells)
    job_id = create_job(db, spec)
    with db.sessions() as session:
        batch_ids = form_batches(session, job_id)
        session.commit()
    with db.sessions() as session:
        claim = records.claim_batch(session, batch_ids[1], "night-gpu-0", 600)
    with db.sessions() as session:
        records.fail_batch(session, claim, "night-gpu-0", FAILED_ERROR, retry_at=None)
    run_job(WorkerContext.start(settings, db, "cpu", "night-cpu-0"), job_id)
    image_id = _verify_first_image(db, job_id)
    with db.sessions() as session:
        spec = refine_spec(session.get(Image, image_id), REFINE_APPENDS, {}, settings.max_cells)
    refine_job_id = create_job(db, spec, parent_image_id=image_id)
    db.dispose()
    return job_id, image_id, refine_job_id


def _verify_first_image(db: Database, job_id: int) -> int:
    """Record a verification of the job's first image, as a verifier would."""
    with db.sessions() as session:
        image = session.scalars(
            select(Image).join(Cell).where(Cell.job_id == job_id).order_by(Cell.grid_index)
        ).first()
        session.add(
            Verification(
                image_id=image.id,
                environment_id=image.environment_id,
                mode="regenerate",
                verdict="identical",
                pixel_sha256=image.pixel_sha256,
                max_abs_diff=0.0,
                mean_abs_diff=0.0,
                details={},
            )
        )
        session.commit()
        return image.id
