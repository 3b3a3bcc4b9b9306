"""Item 2: cells/s accepted by ``reprogrid submit`` (``validate_spec`` + ``create_job``),
and the front door: each command's wall time, start to exit.

Each (database, size) runs in a fresh process so that its peak RSS is its own:
the timed part is spec validation, grid expansion and the insert of every cell
in one transaction, as ``reprogrid submit`` does. Grids are N/1000 prompts x
1000 seeds on builtin:tiny, into a fresh SQLite file or a scratch PostgreSQL
database.

The front door is what a user waits for at the shell: ``reprogrid submit`` of
the README's job (``examples/shapes.toml``) into a SQLite file that exists (and
into a new one, which is created and migrated), then ``status`` and ``query``
on it, and ``--help`` (the floor: Python, click and the package's imports),
each as a new process, the median of ``--front-door-runs``.

    python -m bench.submit --sizes 100000 1000000 --out results/submit.json
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from bench.common import (
    README_JOB,
    Row,
    arguments,
    compile_reprogrid,
    median,
    peak_rss_mib,
    rss_mib,
    scratch_postgres,
    sqlite_url,
    verdict,
    write_rows,
)
from reprogrid.config import DEFAULT_MAX_CELLS
from reprogrid.models import open_database
from reprogrid.scheduler.jobs import create_job
from reprogrid.scheduler.spec import validate_spec

TARGET_SECONDS = {1_000_000: 10.0}
BACKENDS = ("sqlite", "postgresql")
SUBMIT_TARGET_SECONDS = 0.5


def submit_once(backend: str, cells: int, workdir: Path) -> dict[str, float]:
    """Time validation + expansion + insert of a ``cells``-cell grid, in this process."""
    raw = {
        "model": "builtin:tiny",
        "prompts": [f"a photo of subject {i}, studio light" for i in range(cells // 1000)],
        "seeds": "0-999",
        "steps": 20,
        "width": 64,
        "height": 64,
    }

    def timed(url: str) -> dict[str, float]:
        db = open_database(url)
        before = rss_mib()
        started = time.perf_counter()
        create_job(db, validate_spec(raw, max_cells=DEFAULT_MAX_CELLS))
        seconds = time.perf_counter() - started
        db.dispose()
        return {"seconds": seconds, "rss_before": before, "peak_rss": peak_rss_mib()}

    if backend == "sqlite":
        workdir.mkdir(parents=True, exist_ok=True)
        return timed(sqlite_url(workdir / f"submit-{cells}.db"))
    with scratch_postgres() as url:
        return timed(url)


def wall_seconds(argv: list[str]) -> float:
    """Start to exit of ``reprogrid ARGV`` as a new process, which must succeed."""
    program = str(Path(sys.executable).with_name("reprogrid"))
    started = time.perf_counter()
    subprocess.run([program, *argv], check=True, capture_output=True)
    return time.perf_counter() - started


def front_door_rows(workdir: Path, runs: int) -> list[Row]:
    """Median wall time of each command a user types before and after a night's work."""
    workdir.mkdir(parents=True, exist_ok=True)
    existing = workdir / "front-door.db"
    existing.unlink(missing_ok=True)
    db = ["--db", sqlite_url(existing)]
    wall_seconds([*db, "submit", str(README_JOB)])  # creates the database; warms the caches

    def fresh_submit(run: int) -> float:
        new = workdir / f"new-{run}.db"
        new.unlink(missing_ok=True)
        return wall_seconds(["--db", sqlite_url(new), "submit", str(README_JOB)])

    commands = {
        "reprogrid submit examples/shapes.toml (the README's job), existing SQLite file": (
            lambda _: wall_seconds([*db, "submit", str(README_JOB)]),
            SUBMIT_TARGET_SECONDS,
        ),
        "reprogrid submit examples/shapes.toml, new SQLite file": (fresh_submit, None),
        "reprogrid status": (lambda _: wall_seconds([*db, "status"]), None),
        "reprogrid query --limit 5": (lambda _: wall_seconds([*db, "query", "--limit", "5"]), None),
        "reprogrid --help": (lambda _: wall_seconds(["--help"]), None),
    }
    rows = []
    for name, (measure, limit) in commands.items():
        seconds = sorted(measure(run) for run in range(runs))
        figure = (
            f"{median(seconds):.2f} s start to exit (median of {runs};"
            f" {seconds[0]:.2f}-{seconds[-1]:.2f})"
        )
        target, ok = (f"< {limit:g} s", verdict(median(seconds) < limit)) if limit else ("", "-")
        rows.append(Row("2 front door", name, figure, target, ok))
    return rows


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument(
        "--front-door-runs", type=int, default=5, help="processes per front-door command"
    )
    parser.add_argument(
        "--one", nargs=2, metavar=("BACKEND", "CELLS"), help="internal: one measurement, as JSON"
    )
    args = parser.parse_args()
    compile_reprogrid()
    workdir = args.workdir / "submit"
    if args.one:
        print(json.dumps(submit_once(args.one[0], int(args.one[1]), workdir)))
        return
    rows = []
    for backend in args.backends:
        for cells in args.sizes:
            command = [sys.executable, "-m", "bench.submit", "--workdir", str(args.workdir)]
            output = subprocess.run(
                [*command, "--one", backend, str(cells)], check=True, capture_output=True, text=True
            ).stdout
            result = json.loads(output.strip().splitlines()[-1])
            seconds = result["seconds"]
            figure = (
                f"{seconds:.1f} s = {cells / seconds:,.0f} cells/s, peak RSS"
                f" {result['peak_rss']:.0f} MiB ({result['peak_rss'] - result['rss_before']:+.0f})"
            )
            limit = TARGET_SECONDS.get(cells)
            rows.append(
                Row(
                    "2 submit",
                    f"{cells:,} cells into {backend}",
                    figure,
                    f"< {limit:g} s" if limit else "",
                    verdict(seconds < limit) if limit else "-",
                )
            )
    if args.front_door_runs > 0:
        rows += front_door_rows(workdir, args.front_door_runs)
    write_rows(args.out, rows)


if __name__ == "__main__":
    main()
