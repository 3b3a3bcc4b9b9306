"""Issue 13 item 4: wall time and peak RSS of ``reprogrid report`` and ``reprogrid grid``
on a job of 10,000 and one of 100,000 images, each command in a process of its own.

The data: two jobs made by ``create_job`` on builtin:tiny, 64x64, in one SQLite
file: 100 prompts x 100 seeds (10,000 cells) and the same times 10 guidance
scales (100,000 cells), so that both lay out as sheets of 100 x 100 tiles (one
sheet, or ten). Results are then written synthetically, the shortcut
``bench/query.py`` documents: batches of 4 and one image row per cell,
bulk-inserted by ``bench.query.write_results`` (every 1000th cell ``failed``),
plus a real 64x64 PNG per image row in a store, each of its own colour, at the
path its row names (named by a fake hash, not the file's own: nothing here
verifies). 9,990 and 99,900 images.

Each measurement runs ``reprogrid --db ... --store ... report JOB -o DIR`` or
``grid JOB -o sheet.png`` (default thumbnail size: the images are 64 pixels, so
the report links to them without thumbnails) in a fresh Python process, timed
from start to exit; its peak RSS is the process's own ``VmHWM``. The target:
peak RSS at 100k within a few MiB of 10k, time about 10x (linear).

    python -m bench.review --workdir bench-work --out results/review.json
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from PIL import Image as PILImage
from sqlalchemy import select

from bench.common import Row, arguments, bench_spec, memory_mib, sqlite_url, verdict, write_rows
from bench.query import write_all_results
from reprogrid.models import Image, open_database
from reprogrid.scheduler.jobs import create_job

SEEDS = 100
GUIDANCE = [round(1.0 + 0.5 * n, 1) for n in range(10)]  # the large job: 10 sheets
TARGET_RSS_MIB = 8.0  # the most peak RSS may grow from 10k to 100k images
TARGET_TIME_RATIO = 13.0  # 10x images: linear time, with room for noise


def make_jobs(url: str, store: Path, prompts: int) -> dict[int, int]:
    """The small and the large synthetic job and their PNGs; their ids by cell count."""
    db = open_database(url)
    texts = [f"a photo of subject {i}, studio light" for i in range(prompts)]
    job_ids = {}
    for scales in (GUIDANCE[:1], GUIDANCE):
        size = prompts * SEEDS * len(scales)
        spec = bench_spec(prompts=texts, seeds=f"0-{SEEDS - 1}", axes={"guidance_scale": scales})
        job_ids[size] = create_job(db, spec)
    write_all_results(db, list(job_ids.values()), left_queued={})
    with db.sessions() as session:
        for n, path in enumerate(session.scalars(select(Image.path).order_by(Image.id))):
            target = store / path
            target.parent.mkdir(parents=True, exist_ok=True)
            colour = (n % 256, n // 256 % 256, n // 65536 % 256)
            PILImage.new("RGB", (64, 64), colour).save(target, compress_level=1)
    db.dispose()
    return job_ids


def command_line(url: str, store: Path, command: str, job_id: int, out: Path) -> list[str]:
    """The reprogrid arguments of one measured command."""
    target = out / "sheet.png" if command == "grid" else out
    return ["--db", url, "--store", str(store), command, str(job_id), "-o", str(target)]


def run_one(arguments_: list[str]) -> None:
    """Run one reprogrid command in this process; print its RSS before and peak, as JSON."""
    from reprogrid.cli import main

    before = memory_mib("VmRSS")
    main(arguments_, standalone_mode=False)
    print(json.dumps({"rss_before": before, "peak_rss": memory_mib("VmHWM")}))


def measure(url: str, store: Path, command: str, job_id: int, out: Path) -> dict[str, Any]:
    """Wall time (start to exit) and peak RSS of one command in a fresh process."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    started = time.perf_counter()
    output = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.review",
            "--one",
            json.dumps(command_line(url, store, command, job_id, out)),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    seconds = time.perf_counter() - started
    return {"seconds": seconds, **json.loads(output.strip().splitlines()[-1])}


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument(
        "--prompts", type=int, default=100, help="prompts per job (100: 10,000 and 100,000 cells)"
    )
    parser.add_argument("--one", help="internal: reprogrid arguments (JSON) to run and measure")
    args = parser.parse_args()
    if args.one:
        run_one(json.loads(args.one))
        return
    work = args.workdir / "review"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    url, store = sqlite_url(work / "review.db"), work / "store"
    started = time.perf_counter()
    job_ids = make_jobs(url, store, args.prompts)
    loaded = (
        f"2 jobs, {sum(job_ids):,} cells, PNGs written in {time.perf_counter() - started:.0f} s"
    )
    rows = [Row("4 review", "data", loaded)]
    for command in ("report", "grid"):
        results = {}
        for size, job_id in job_ids.items():
            result = results[size] = measure(
                url, store, command, job_id, work / f"{command}-{size}"
            )
            rows.append(
                Row(
                    "4 review",
                    f"{command} of {size:,} images",
                    f"{result['seconds']:.1f} s, peak RSS {result['peak_rss']:.1f} MiB"
                    f" ({result['peak_rss'] - result['rss_before']:+.1f} over the process"
                    " once imported)",
                )
            )
        small, large = results[min(job_ids)], results[max(job_ids)]
        growth = large["peak_rss"] - small["peak_rss"]
        ratio = large["seconds"] / small["seconds"]
        rows.append(
            Row(
                "4 review",
                f"{command}: {max(job_ids):,} against {min(job_ids):,} images",
                f"peak RSS {growth:+.1f} MiB, time x{ratio:.1f}",
                f"RSS +{TARGET_RSS_MIB:g} MiB at most, time x{TARGET_TIME_RATIO:g} at most",
                verdict(growth <= TARGET_RSS_MIB and ratio <= TARGET_TIME_RATIO),
            )
        )
    write_rows(args.out, rows)


if __name__ == "__main__":
    main()
