"""Review at scale: `report` and `grid` read a job's cells as a stream, so the memory
they peak at does not grow with the job (tracemalloc, no timing):
five times the images, no more memory than the bound of one fetch or page."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image as PILImage
from sqlalchemy import insert, select, update

from reprogrid.config import DEFAULT_MAX_CELLS
from reprogrid.models import DONE, Batch, Cell, Database, Image, open_database
from reprogrid.review.layout import job_sheets
from reprogrid.review.report import write_report
from reprogrid.review.sheet import write_sheets
from reprogrid.scheduler.jobs import create_job
from reprogrid.scheduler.spec import validate_spec
from reprogrid.worker import records

SEEDS = 100  # columns: every sheet and page is this wide, whatever the job's size
ENVIRONMENT = {
    "hostname": "test",
    "device_type": "cpu",
    "device_name": "synthetic",
    "torch": "0",
    "diffusers": "0",
    "transformers": "0",
    "python": "3",
    "threads": 1,
    "dtype": "float32",
    "full_determinism": True,
}


def synthetic_job(db: Database, store: Path, prompts: int) -> int:
    """A done job of ``prompts`` x 100 seeds whose images are rows written directly,
    all pointing at one real 64x64 PNG in the store."""
    raw = {"model": "builtin:tiny", "width": 64, "height": 64, "seeds": f"0-{SEEDS - 1}"}
    raw["prompts"] = [f"subject {i}" for i in range(prompts)]
    job_id = create_job(db, validate_spec(raw, max_cells=DEFAULT_MAX_CELLS))
    png = store / "ab" / f"{'ab' * 32}.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    PILImage.new("RGB", (64, 64), (30, 120, 200)).save(png)
    with db.sessions() as session:
        environment = records.environment_id(session, "e" * 64, ENVIRONMENT)
        checkpoint = records.checkpoint_id(session, "builtin:tiny", None, "0" * 64, {})
        cell_ids = session.scalars(select(Cell.id).where(Cell.job_id == job_id)).all()
        batch = Batch(job_id=job_id, cell_ids=list(cell_ids), status=DONE)
        session.add(batch)
        session.flush()
        session.execute(update(Cell).where(Cell.job_id == job_id).values(status=DONE))
        rows = [
            {
                "cell_id": cell_id,
                "batch_id": batch.id,
                "index_in_batch": n,
                "batch_size": len(cell_ids),
                "pixel_sha256": f"{cell_id:064x}",
                "png_sha256": f"{cell_id:064x}",
                "path": str(png.relative_to(store)),
                "store": str(store),
                "width": 64,
                "height": 64,
                "environment_id": environment,
                "checkpoint_id": checkpoint,
                "generate_seconds": 0.0,
            }
            for n, cell_id in enumerate(cell_ids)
        ]
        session.execute(insert(Image), rows)
        session.commit()
    return job_id


def _peak(work: Callable[[], object]) -> int:
    """The most memory Python allocated while ``work`` ran, in bytes."""
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Database, Path, int, int]:
    """A job of 600 images and one of 3,000, in one database: both more than one
    fetch (``FETCH_CELLS``) holds."""
    folder = tmp_path_factory.mktemp("scale")
    db, store = open_database(f"sqlite:///{folder / 'reprogrid.db'}"), folder / "store"
    small, large = synthetic_job(db, store, 6), synthetic_job(db, store, 30)
    yield db, store, small, large
    db.dispose()


def test_a_report_of_3000_images_peaks_no_higher_than_one_of_600(jobs, tmp_path: Path):
    db, store, small, large = jobs

    def report(job_id: int) -> Callable[[], object]:
        def write() -> object:
            with db.reads() as session:
                return write_report(session, job_id, store, tmp_path / str(job_id), page_tiles=200)

        return write

    report(small)()  # warm caches (fonts, compiled statements) outside the measurement
    peaks = _peak(report(small)), _peak(report(large))
    assert len(list((tmp_path / str(large) / "data").glob("tiles-*.js"))) == 15
    assert peaks[1] < peaks[0] * 1.25, peaks


def test_a_sheet_of_3000_images_peaks_no_higher_than_one_of_600(jobs, tmp_path: Path):
    db, store, small, large = jobs

    def grid(job_id: int) -> Callable[[], object]:
        def write() -> object:
            with db.reads() as session:
                sheets = job_sheets(session, job_id, store)
                return write_sheets(session, sheets, store, tmp_path / f"{job_id}.png", 16)

        return write

    grid(small)()
    peaks = _peak(grid(small)), _peak(grid(large))
    assert PILImage.open(tmp_path / f"{large}.png").size[1] > 30 * (16 + 4)  # 30 rows drawn
    assert peaks[1] < peaks[0] * 1.25, peaks
