"""Helpers shared by the benchmark scripts: result rows, statistics, memory, scratch databases.

Every script writes its results as rows (measurement, figure, target, verdict)
to a JSON file given by ``--out``; ``bench/report.py`` prints all of them as one
table. Rows are the only thing the scripts share, so a new measurement is a new
row, never a new table format.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

import reprogrid
from reprogrid.config import DEFAULT_MAX_CELLS
from reprogrid.scheduler.spec import JobSpec, validate_spec

POSTGRES_ADMIN = os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/14")
PASS, MISSED, INFO = "ok", "MISSED", "-"
README_JOB = Path(__file__).parents[1] / "examples" / "shapes.toml"  # the README's first command


@dataclass(frozen=True)
class Row:
    """One line of the final table."""

    item: str  # the measurement number and name, e.g. "1 throughput"
    name: str
    figure: str
    target: str = ""
    verdict: str = INFO


def verdict(ok: bool) -> str:
    """``ok`` or ``MISSED``."""
    return PASS if ok else MISSED


def write_rows(path: Path | None, rows: Sequence[Row]) -> None:
    """Print the rows and, when ``path`` is given, save them for ``report.py``."""
    for row in rows:
        print(
            f"  {row.name}: {row.figure}"
            + (f"  [{row.target}: {row.verdict}]" if row.target else "")
        )
    if path is not None:
        path.write_text(json.dumps([asdict(r) for r in rows], indent=1), encoding="utf-8")


def table(rows: Sequence[Row]) -> str:
    """The rows as one Markdown table, with a last line counting missed targets."""
    lines = ["| # | measurement | figure | target | verdict |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r.item} | {r.name} | {r.figure} | {r.target} | {r.verdict} |" for r in rows]
    missed = sum(row.verdict == MISSED for row in rows)
    lines.append(f"\n{missed} target(s) missed" if missed else "\nevery target met")
    return "\n".join(lines)


def read_rows(path: Path) -> list[Row]:
    """Rows saved by :func:`write_rows`."""
    return [Row(**r) for r in json.loads(path.read_text(encoding="utf-8"))]


def arguments(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every script takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, help="write result rows to this JSON file")
    parser.add_argument("--workdir", type=Path, default=Path("bench-work"), help="scratch folder")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return parser


def compile_reprogrid() -> None:
    """Write reprogrid's bytecode, as an install or a user's first command does, before
    timing new processes: where ``PYTHONDONTWRITEBYTECODE`` is set (as on the
    development machine), an editable checkout is otherwise compiled at every start."""
    compileall.compile_dir(Path(reprogrid.__file__).parent, quiet=1)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linearly interpolated."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    """The median."""
    return statistics.median(values)


def rss_mib() -> float:
    """This process's resident set size now, in MiB."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """The largest resident set size this process has had, in MiB."""
    return memory_mib("VmHWM")


def memory_mib(field: str) -> float:
    """A memory figure of this process from /proc/self/status, in MiB: ``VmHWM`` (peak
    RSS) or ``VmRSS``. Not ``ru_maxrss``: Linux carries that across exec from the
    process that spawned this one, so a child would report its parent's peak."""
    with open("/proc/self/status", encoding="ascii") as status:
        line = next(line for line in status if line.startswith(f"{field}:"))
    return int(line.split()[1]) / 1024


def bench_spec(**fields: Any) -> JobSpec:
    """A validated spec; fields override the defaults (builtin:tiny, 64x64)."""
    raw: dict[str, Any] = {"model": "builtin:tiny", "width": 64, "height": 64, **fields}
    return validate_spec(raw, max_cells=DEFAULT_MAX_CELLS)


def sqlite_url(path: Path) -> str:
    """A SQLAlchemy URL for a SQLite file, removing any previous file and its WAL."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{path.resolve()}"


@contextmanager
def scratch_postgres() -> Iterator[str]:
    """A new, empty PostgreSQL database for one measurement, dropped afterwards."""
    admin_url = make_url(POSTGRES_ADMIN).set(drivername="postgresql+psycopg")
    name = f"reprogrid_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
