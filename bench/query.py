"""Item 3: p50/p95 latency of each ``reprogrid query`` filter over a million image rows.

The data: four jobs made by ``create_job`` (three of 300 prompts x 1000 seeds
on builtin:tiny, one of 125,000 seeds on builtin:tiny-ddpm), 1,025,000 cells,
and a fifth of 100,000 distinct prompts x 1 seed left queued, for prompt search
over many prompts (``job_prompt``: 100,900 rows).
Results are then written synthetically, a shortcut documented here: batches of
4 cells in grid order and one image row per cell, with the columns
``records.record_images`` writes (random-looking hashes), are bulk-inserted
rather than recorded batch by batch through ``execute_batch``, which would take
hours. Every 1000th cell is left ``failed`` without an image and the last
20,000 cells of the DDPM job ``queued``: 1,003,975 image rows.

PostgreSQL is ``ANALYZE``d after loading, as autovacuum would do within a
minute; SQLite is left as reprogrid leaves it (no ``ANALYZE``).

A query's time is what ``reprogrid query`` needs to print its first page: a new
session, ``query_cells`` with the filter, and the first 100 rows read (a filter
matching N rows costs N to read in full, whatever the index). ``show`` looks an
image up by hash prefix with ``find_image`` (6 hex digits). Each ``--prompt``
row names the index that serves it and whether the database's plan for the
prompt lookup used it (``EXPLAIN``).

    python -m bench.query --backends sqlite postgresql --out results/query.json
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Connection, and_, func, select, text, update

from bench.common import (
    Row,
    arguments,
    bench_spec,
    percentile,
    scratch_postgres,
    sqlite_url,
    verdict,
    write_rows,
)
from reprogrid.config import DEFAULT_MAX_CELLS
from reprogrid.models import DONE, FAILED, Batch, Cell, Database, Image, open_database, utcnow
from reprogrid.models.db import bulk_insert
from reprogrid.models.queries import (
    PROMPT_FTS,
    TRIGRAM_INDEX,
    CellFilter,
    NotFound,
    find_image,
    prompt_matches,
    prompt_search_index,
    query_cells,
)
from reprogrid.scheduler.jobs import create_job
from reprogrid.scheduler.spec import validate_spec
from reprogrid.worker import records

TARGET_P95_MS = 50.0
PAGE = 100
BATCH_SIZE = 4
TINY_JOBS, PROMPTS, SEEDS = 3, 300, 1000
DDPM_CELLS, DDPM_QUEUED = 125_000, 20_000
MANY_PROMPTS = 100_000
FAILED_EVERY = 1000
IMAGE_COLUMNS = (
    "cell_id",
    "batch_id",
    "index_in_batch",
    "batch_size",
    "pixel_sha256",
    "png_sha256",
    "recipe_sha256",
    "path",
    "width",
    "height",
    "environment_id",
    "checkpoint_id",
    "worker",
    "generate_seconds",
    "created_at",
)
BATCH_COLUMNS = ("id", "job_id", "kind", "cell_ids", "status", "queue", "attempts", "created_at")


FAKE_ENVIRONMENT: dict[str, Any] = {
    "hostname": "bench",
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


def prompt(i: int) -> str:
    """The i-th prompt of the synthetic jobs."""
    return f"a photo of subject {i}, studio light"


def many_prompt(i: int) -> str:
    """The i-th prompt of the job of many prompts."""
    return f"a drawing of item {i} in ink"


def fake_hash(kind: str, cell_id: int) -> str:
    """A deterministic, random-looking SHA-256 hex digest for a synthetic image."""
    return hashlib.sha256(f"{kind}:{cell_id}".encode()).hexdigest()


def load(db: Database, scale: float) -> list[int]:
    """Create the jobs and their synthetic results; return the job ids."""
    prompts = [prompt(i) for i in range(int(PROMPTS * scale))]
    seeds, ddpm_cells = f"0-{SEEDS - 1}", int(DDPM_CELLS * scale)
    specs = [bench_spec(prompts=prompts, seeds=seeds, steps=20) for _ in range(TINY_JOBS)]
    raw = {"model": "builtin:tiny-ddpm", "seeds": f"0-{ddpm_cells - 1}", "steps": 20}
    specs.append(validate_spec(raw, max_cells=DEFAULT_MAX_CELLS))
    job_ids = [create_job(db, spec) for spec in specs]
    many = [many_prompt(i) for i in range(int(MANY_PROMPTS * scale))]
    create_job(db, bench_spec(prompts=many, seeds="0", steps=20))  # left queued
    write_all_results(db, job_ids, left_queued={job_ids[-1]: int(DDPM_QUEUED * scale)})
    with db.engine.connect() as connection:
        if db.engine.dialect.name == "postgresql":
            connection.execute(text("ANALYZE"))
            connection.commit()
    return job_ids


def write_all_results(db: Database, job_ids: list[int], left_queued: dict[int, int]) -> None:
    """Synthetic results for the jobs' cells in grid order, but the last ``left_queued[job]``
    of a job, batches numbered from 1 (see :func:`write_results`)."""
    with db.sessions() as session:
        environment_id = records.environment_id(session, "bench" * 12 + "0000", FAKE_ENVIRONMENT)
        checkpoint_id = records.checkpoint_id(session, "builtin:tiny", None, "0" * 64, {})
    with db.sessions() as session:
        connection = session.connection()
        next_batch = 1
        for job_id in job_ids:
            cells = connection.execute(
                select(Cell.id, Cell.grid_index, Cell.recipe_sha256)
                .where(Cell.job_id == job_id)
                .order_by(Cell.grid_index)
            ).all()
            cells = cells[: len(cells) - left_queued.get(job_id, 0)]
            write_results(connection, job_id, cells, next_batch, environment_id, checkpoint_id)
            next_batch += (len(cells) + BATCH_SIZE - 1) // BATCH_SIZE
        session.commit()


def write_results(
    connection: Connection,
    job_id: int,
    cells: list[Any],
    first_batch: int,
    environment_id: int,
    checkpoint_id: int,
) -> None:
    """Bulk-insert batches and image rows for ``cells`` (grid order) and mark them done."""
    now = stored(connection, Image.__table__.c.created_at, utcnow())
    cell_ids_type = Batch.__table__.c.cell_ids
    batches = (
        (
            first_batch + n,
            job_id,
            "generate",
            stored(connection, cell_ids_type, [c.id for c in group]),
            DONE,
            "default",
            1,
            now,
        )
        for n, group in enumerate(
            cells[i : i + BATCH_SIZE] for i in range(0, len(cells), BATCH_SIZE)
        )
    )
    bulk_insert(connection, Batch.__table__, BATCH_COLUMNS, batches)
    done = and_(Cell.job_id == job_id, Cell.id <= cells[-1].id)
    connection.execute(
        update(Cell)
        .where(done)
        .values(status=DONE, batch_id=first_batch + Cell.grid_index // BATCH_SIZE)
    )
    connection.execute(
        update(Cell)
        .where(done, Cell.grid_index % FAILED_EVERY == FAILED_EVERY - 1)
        .values(status=FAILED, error="RuntimeError: synthetic failure")
    )

    def images() -> Iterator[tuple]:
        for cell in cells:
            if cell.grid_index % FAILED_EVERY == FAILED_EVERY - 1:
                continue
            png = fake_hash("png", cell.id)
            yield (
                cell.id,
                first_batch + cell.grid_index // BATCH_SIZE,
                cell.grid_index % BATCH_SIZE,
                BATCH_SIZE,
                fake_hash("pixel", cell.id),
                png,
                cell.recipe_sha256,
                f"{png[:2]}/{png}.png",
                64,
                64,
                environment_id,
                checkpoint_id,
                "bench",
                0.05,
                now,
            )

    bulk_insert(connection, Image.__table__, IMAGE_COLUMNS, images())


def stored(connection: Connection, column: Column, value: Any) -> Any:
    """``value`` as the column's type writes it on this connection's database."""
    dialect = connection.dialect
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    return process(value) if process else value


def filters(job_ids: list[int], rng: random.Random, scale: float) -> dict[str, Callable]:
    """Each measured query: a function drawing one random instance of it."""
    n_prompts, n_many = int(PROMPTS * scale), int(MANY_PROMPTS * scale)
    return {
        "--job": lambda: CellFilter(job=rng.choice(job_ids)),
        "--seed": lambda: CellFilter(seed=rng.randrange(SEEDS)),
        "--model builtin:tiny-ddpm": lambda: CellFilter(model="builtin:tiny-ddpm"),
        "--model builtin:tiny": lambda: CellFilter(model="builtin:tiny"),
        "--status done": lambda: CellFilter(status="done"),
        "--status failed": lambda: CellFilter(status="failed"),
        "--status queued": lambda: CellFilter(status="queued"),
        "--job --status failed": lambda: CellFilter(job=rng.choice(job_ids), status="failed"),
        "--prompt (substring)": lambda: CellFilter(prompt=f"subject {rng.randrange(n_prompts)},"),
        "--prompt (substring, job of many prompts)": lambda: CellFilter(
            prompt=f"item {rng.randrange(n_many)} in"
        ),
        "--prompt (no match)": lambda: CellFilter(prompt=f"zebra {rng.randrange(n_prompts)}"),
        "--prompt (2 characters, no match)": lambda: CellFilter(prompt=rng.choice(["zq", "qz"])),
    }


def prompt_plan(db: Database, needle: str) -> str:
    """Which index the database's plan for the prompt lookup of ``needle`` reads, if any."""
    with db.reads() as session:
        statement = prompt_matches(session, needle)
        sql = str(statement.compile(session.get_bind(), compile_kwargs={"literal_binds": True}))
        explain = "EXPLAIN QUERY PLAN " if db.is_sqlite else "EXPLAIN "
        cursor = session.connection().connection.driver_connection.cursor()
        cursor.execute(explain + sql)  # no parameters: '%' in the pattern is literal
        plan = " ".join(str(value) for row in cursor.fetchall() for value in row)
    used = PROMPT_FTS in plan if db.is_sqlite else TRIGRAM_INDEX in plan
    return "index used" if used else "index not used"


def time_query(db: Database, where: CellFilter, store: Path, matches: bool = True) -> float:
    """Seconds to the first page of ``reprogrid query`` output (which must not be empty
    where the filter ``matches``)."""
    started = time.perf_counter()
    with db.sessions() as session:
        rows = list(itertools.islice(query_cells(session, where, store), PAGE))
    seconds = time.perf_counter() - started
    if matches and not rows:
        raise RuntimeError(f"{where} matched nothing")
    return seconds


def time_lookup(db: Database, column: Any, rng: random.Random) -> float:
    """Seconds for ``find_image`` to find a random image by 6 hex digits of a hash."""
    with db.sessions() as session:
        total = session.scalar(select(func.max(Image.id)))
        image_id = rng.randrange(1, total + 1)
        value = session.scalar(
            select(column)
            .select_from(Image)
            .join(Cell, Cell.id == Image.cell_id)
            .where(Image.id == image_id)
        )
    started = time.perf_counter()
    with db.sessions() as session, contextlib.suppress(NotFound):  # 6 digits may match two
        find_image(session, f"sha:{value[:6]}")
    return time.perf_counter() - started


def measure(db: Database, job_ids: list[int], reps: int, scale: float, label: str) -> list[Row]:
    """p50/p95 of every filter and hash lookup, as rows."""
    rng = random.Random(0)
    store = Path("store")
    times: dict[str, list[float]] = {}
    draws = filters(job_ids, rng, scale)
    for name, draw in draws.items():
        matches = "no match" not in name
        time_query(db, draw(), store, matches)  # warm the cache
        times[name] = [time_query(db, draw(), store, matches) for _ in range(reps)]
    for name, column in {
        "show <pixel_sha256 prefix>": Image.pixel_sha256,
        "show <png_sha256 prefix>": Image.png_sha256,
        "show <recipe_sha256 prefix>": Image.recipe_sha256,
    }.items():
        times[name] = [time_lookup(db, column, rng) for _ in range(reps)]
    with db.reads() as session:
        index = prompt_search_index(session)
    rows = []
    for name, values in times.items():
        p50, p95 = percentile(values, 50) * 1000, percentile(values, 95) * 1000
        figure = f"p50 {p50:.1f} ms, p95 {p95:.1f} ms"
        if name.startswith("--prompt"):
            needle = draws[name]().prompt
            figure += f" [{index}: {prompt_plan(db, needle)} for {needle!r}]"
        target = f"p95 < {TARGET_P95_MS:g} ms"
        rows.append(Row("3 query", f"{label} {name}", figure, target, verdict(p95 < 50)))
    return rows


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--reps", type=int, default=20, help="queries per filter")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the 1M rows")
    args = parser.parse_args()
    rows = []
    for backend in args.backends:
        started = time.perf_counter()
        if backend == "sqlite":
            args.workdir.mkdir(parents=True, exist_ok=True)
            rows += run_backend(sqlite_url(args.workdir / "query.db"), backend, args)
        else:
            with scratch_postgres() as url:
                rows += run_backend(url, backend, args)
        print(f"{backend}: {time.perf_counter() - started:.0f} s", flush=True)
    write_rows(args.out, rows)


def run_backend(url: str, backend: str, args: Any) -> list[Row]:
    """Load one database and measure it."""
    db = open_database(url)
    started = time.perf_counter()
    job_ids = load(db, args.scale)
    with db.sessions() as session:
        images = session.scalar(select(func.count(Image.id)))
    load_row = Row(
        "3 query",
        f"{backend}: data",
        f"{images:,} image rows loaded in {time.perf_counter() - started:.0f} s",
    )
    rows = [load_row, *measure(db, job_ids, args.reps, args.scale, backend)]
    db.dispose()
    return rows


if __name__ == "__main__":
    main()
