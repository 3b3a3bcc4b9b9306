"""Item 2: cells/s accepted by ``reprogrid submit`` (``validate_spec`` + ``create_job``).

Each (database, size) runs in a fresh process so that its peak RSS is its own:
the timed part is spec validation, grid expansion and the insert of every cell
in one transaction, as ``reprogrid submit`` does. Grids are N/1000 prompts x
1000 seeds on builtin:tiny, into a fresh SQLite file or a scratch PostgreSQL
database.

    python -m bench.submit --sizes 100000 1000000 --out results/submit.json
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from bench.common import (
    Row,
    arguments,
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


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument(
        "--one", nargs=2, metavar=("BACKEND", "CELLS"), help="internal: one measurement, as JSON"
    )
    args = parser.parse_args()
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
    write_rows(args.out, rows)


if __name__ == "__main__":
    main()
