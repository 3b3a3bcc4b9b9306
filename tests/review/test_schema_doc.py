"""docs/schema.md: every table and column is documented, every example query runs as written.

The examples run in the real shells, ``sqlite3`` on the night job's file and
``psql`` on a PostgreSQL copy of the night job, and their output is checked
against what the models and queries of reprogrid say about the same database.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import service_unavailable
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from reprogrid.models import Base, Image, Job, Verification, open_database
from reprogrid.models.queries import CellFilter, job_progress, query_cells
from reprogrid.review.export import EXPORT_COLUMNS, image_rows

from .night import FAILED_PROMPT, NightJob, make_night_job

SCHEMA_DOC = Path(__file__).resolve().parents[2] / "docs" / "schema.md"
Rows = list[tuple[str, ...]]


@dataclass(frozen=True)
class Example:
    """One example block of the doc: the shells it is for, its title and its SQL."""

    shells: tuple[str, ...]
    title: str
    sql: str


def doc_examples() -> list[Example]:
    """The ``sql`` blocks of docs/schema.md, each opening with ``-- shells: title``."""
    examples = []
    for block in re.findall(r"```sql\n(.*?)```", SCHEMA_DOC.read_text(encoding="utf-8"), re.S):
        shells, title = re.fullmatch(r"-- ([a-z0-9, ]+): (.+)", block.splitlines()[0]).groups()
        examples.append(Example(tuple(s.strip() for s in shells.split(",")), title, block))
    return examples


def _text(*values: object) -> tuple[str, ...]:
    return tuple("" if v is None else str(v) for v in values)


def _job_progress(session: Session, store: Path) -> Rows:
    statuses = ("cancelled", "done", "failed", "queued", "running")
    return [
        _text(job["job_id"], job["name"], job["status"], status, job[status])
        for job in job_progress(session)
        for status in statuses
        if job[status]
    ]


def _failed_seeds(session: Session, store: Path) -> Rows:
    failed = query_cells(session, CellFilter(prompt=FAILED_PROMPT, status="failed"), store)
    return [
        _text(c["job_id"], c["seed"], c["error"]) for c in failed if c["prompt"] == FAILED_PROMPT
    ]


def _images_per_environment(session: Session, store: Path) -> Rows:
    counts = Counter(image.environment for image in session.scalars(select(Image)))
    return [
        _text(e.id, e.device_type, e.torch, e.diffusers, n)
        for e, n in sorted(counts.items(), key=lambda item: item[0].id)
    ]


def _not_verified(session: Session, store: Path) -> Rows:
    verified = set(session.scalars(select(Verification.image_id)))
    images = session.scalars(select(Image).order_by(Image.id))
    return [_text(i.id, i.pixel_sha256) for i in images if i.id not in verified]


def _latest_verdicts(session: Session, store: Path) -> Rows:
    latest = {
        v.image_id: v for v in session.scalars(select(Verification).order_by(Verification.id))
    }
    return [_text(i, latest[i].mode, latest[i].verdict) for i in sorted(latest)]


def _images_per_sampler(session: Session, store: Path) -> Rows:
    counts = Counter((row["sampler"], row["steps"]) for row in image_rows(session, store))
    return [_text(sampler, steps, n) for (sampler, steps), n in sorted(counts.items())]


def _refine_jobs(session: Session, store: Path) -> Rows:
    jobs = session.scalars(select(Job).where(Job.parent_image_id.is_not(None)).order_by(Job.id))
    return [
        _text(j.id, j.name, j.parent_image_id, session.get(Image, j.parent_image_id).cell.prompt)
        for j in jobs
    ]


def _flat_view_of_the_night(session: Session, store: Path) -> Rows:
    rows = sorted(
        (row for row in image_rows(session, store) if row["job_name"] == "night"),
        key=lambda row: row["image_id"],
    )
    columns = ("image_id", "prompt", "seed", "sampler", "steps", "guidance_scale", "width")
    return [_text(*(r[c] for c in columns), r["height"], r["model"], r["verdict"]) for r in rows]


def _images_of_seed_3_per_job(session: Session, store: Path) -> Rows:
    counts = Counter(row["job_id"] for row in image_rows(session, store) if row["seed"] == 3)
    return [_text(job_id, n) for job_id, n in sorted(counts.items())]


def _night_images_from_seed_2_in_seed_order(session: Session, store: Path) -> Rows:
    rows = (r for r in image_rows(session, store) if r["job_name"] == "night" and r["seed"] >= 2)
    ordered = sorted(rows, key=lambda row: (row["seed"], row["image_id"]))
    return [_text(r["seed"], r["image_id"], r["prompt"]) for r in ordered]


def _images_per_library_versions(session: Session, store: Path) -> Rows:
    counts = Counter(
        (r["device_type"], r["torch"], r["diffusers"], r["transformers"], r["checkpoint_sha256"])
        for r in image_rows(session, store)
    )
    return [_text(*key, n) for key, n in sorted(counts.items())]


EXPECTED: dict[str, Callable[[Session, Path], Rows]] = {
    "how far each job is": _job_progress,
    f"all seeds of prompt '{FAILED_PROMPT}' that failed, with the error": _failed_seeds,
    "images per environment": _images_per_environment,
    "images not yet verified": _not_verified,
    "the latest verdict of every verified image": _latest_verdicts,
    "images per sampler and step count, read from the recipe": _images_per_sampler,
    "refine jobs and the image each one refines": _refine_jobs,
    "every image of the night job with its exact seed, sampler and latest verdict,"
    " from the flat view": _flat_view_of_the_night,
    "images per device and library versions, from the flat view": _images_per_library_versions,
    "images of seed 3 per job, from the flat view": _images_of_seed_3_per_job,
    "the night job's images of seed 2 and above in seed order, from the flat view": (
        _night_images_from_seed_2_in_seed_order
    ),
}


def test_every_table_and_column_is_documented():
    doc = SCHEMA_DOC.read_text(encoding="utf-8")
    for table in Base.metadata.sorted_tables:
        section = re.search(rf"^### {table.name} .*?(?=^##)", doc, re.S | re.M)
        assert section, f"no section for table {table.name}"
        for column in table.columns:
            assert f"`{column.name}`" in section.group(0), f"{table.name}.{column.name}"


def test_the_flat_view_columns_are_documented_in_order(night: NightJob):
    section = SCHEMA_DOC.read_text(encoding="utf-8").split("## The flat view: image_view")[1]
    rows = section.split("## ")[0].splitlines()
    documented = [re.match(r"\| `(\w+)`", row).group(1) for row in rows if row.startswith("| `")]
    with open_database(night.db_url).sessions() as session:
        columns = list(session.execute(text("SELECT * FROM image_view LIMIT 0")).keys())
    assert documented == columns


def test_the_flat_view_reads_seeds_above_2_to_the_63_exactly(night: NightJob):
    with open_database(night.db_url).sessions() as session:
        seeds = set(session.scalars(text("SELECT seed_text FROM image_view")))
    assert str(2**64 - 1) in seeds and "0" in seeds


def test_the_export_columns_are_documented_in_order():
    section = SCHEMA_DOC.read_text(encoding="utf-8").split("## Export columns")[1]
    rows = section.split("## ")[0].split("| --- |")[1].splitlines()
    first_cells = [row.split("|")[1] for row in rows if row.startswith("| `")]
    assert tuple(re.findall(r"`(\w+)`", "".join(first_cells))) == EXPORT_COLUMNS


def test_every_example_is_checked():
    titles = {example.title for example in doc_examples()}
    assert titles == set(EXPECTED)
    assert all(set(e.shells) <= {"sqlite3", "psql"} for e in doc_examples())


def _run(command: list[str], sql: str) -> Rows:
    result = subprocess.run(command, input=sql, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr, result.stderr
    return [tuple(line.split("|")) for line in result.stdout.splitlines()]


@pytest.mark.parametrize(
    "example", [e for e in doc_examples() if "sqlite3" in e.shells], ids=lambda e: e.title
)
def test_sqlite3_example_runs_as_written(night: NightJob, example: Example):
    if shutil.which("sqlite3") is None:
        service_unavailable("the sqlite3 shell", FileNotFoundError("sqlite3"))
    rows = _run(["sqlite3", "-bail", str(night.db_path)], example.sql)
    with open_database(night.db_url).sessions() as session:
        expected = EXPECTED[example.title](session, night.store)
    assert rows == expected and expected


@pytest.mark.postgres
def test_psql_examples_run_as_written(postgres_url: str, tmp_path: Path):
    if shutil.which("psql") is None:
        service_unavailable("the psql shell", FileNotFoundError("psql"))
    make_night_job(postgres_url, tmp_path / "store", (FAILED_PROMPT,))
    libpq_url = make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
    psql = ["psql", "-X", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1", "-d", libpq_url]
    db = open_database(postgres_url)
    for example in (e for e in doc_examples() if "psql" in e.shells):
        with db.sessions() as session:
            expected = EXPECTED[example.title](session, tmp_path / "store")
        assert _run(psql, example.sql) == expected and expected, example.title
    db.dispose()
