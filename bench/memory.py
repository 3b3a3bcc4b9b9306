"""Item 4: resident memory of one worker process over 1,000 batches.

One job of 1,000 single-image batches (builtin:tiny, 64x64, one step) is run
batch by batch through ``OverlappedBatches`` in this process, as a worker does
(each batch recorded on the recording thread while the next one computes),
with a SQLite database and the PNG store; RSS is sampled every 10 batches.
The first 100 batches are warm-up (allocator pools, caches filling); the slope
over the rest is a least-squares fit. A leak of one 64x64 image per batch
(12 KiB) would show as 11 MiB over the 900 measured batches: the target is a
growth under a third of that.

    python -m bench.memory --batches 1000 --out results/memory.json
"""

from __future__ import annotations

import time

from bench.common import Row, arguments, bench_spec, rss_mib, sqlite_url, verdict, write_rows
from reprogrid.config import Settings
from reprogrid.models import open_database
from reprogrid.scheduler.jobs import create_job, form_batches
from reprogrid.worker.execute import BatchOutcome, OverlappedBatches, WorkerContext

WARM_UP = 100
SAMPLE_EVERY = 10
TARGET_KIB_PER_BATCH = 4.0


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs."""
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    return covariance / sum((x - mean_x) ** 2 for x in xs)


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=1000)
    args = parser.parse_args()
    workdir = args.workdir / "memory"
    workdir.mkdir(parents=True, exist_ok=True)
    db = open_database(sqlite_url(workdir / "memory.db"))
    settings = Settings(db_url=str(db.engine.url), store=workdir / "store", threads=args.threads)
    spec = bench_spec(prompts=["a red fox"], seeds=f"0-{args.batches - 1}", steps=1, batch_size=1)
    job_id = create_job(db, spec)
    with db.sessions() as session:
        batch_ids = form_batches(session, job_id)
        session.commit()
    ctx = WorkerContext.start(settings, db, "cpu", "bench-memory")
    started = time.perf_counter()
    samples: list[tuple[int, float]] = []

    def on_outcome(outcome: BatchOutcome) -> None:
        if outcome.status != "done":
            raise RuntimeError(f"batch {outcome.batch_id}: {outcome.status} {outcome.error}")

    with OverlappedBatches(ctx, on_outcome) as batches:
        for done, batch_id in enumerate(batch_ids, start=1):
            batches.run(batch_id)
            if done % SAMPLE_EVERY == 0:
                samples.append((done, rss_mib()))
    seconds = time.perf_counter() - started
    measured = [(n, rss) for n, rss in samples if n >= WARM_UP]
    kib_per_batch = slope([n for n, _ in measured], [rss for _, rss in measured]) * 1024
    start_rss = next(rss for n, rss in samples if n >= WARM_UP)
    rows = [
        Row(
            "4 memory",
            f"RSS over {len(batch_ids)} batches",
            f"{samples[0][1]:.0f} MiB after {samples[0][0]}, {start_rss:.0f} after {WARM_UP},"
            f" {samples[-1][1]:.0f} after {samples[-1][0]} ({seconds:.0f} s)",
        ),
        Row(
            "4 memory",
            f"RSS slope after batch {WARM_UP}",
            f"{kib_per_batch:+.2f} KiB/batch"
            f" = {kib_per_batch * (len(batch_ids) - WARM_UP) / 1024:+.1f} MiB over the rest",
            f"< {TARGET_KIB_PER_BATCH:g} KiB/batch",
            verdict(kib_per_batch < TARGET_KIB_PER_BATCH),
        ),
    ]
    write_rows(args.out, rows)


if __name__ == "__main__":
    main()
