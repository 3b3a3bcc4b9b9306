"""Throughput cost of ``batch_invariant = true`` against normal batching, measured in one run.

The same grid runs through the embedded path (``create_job`` + ``run_job`` on a
temporary SQLite file and store, PNGs and records included) in two ways: batched
(``--batch-size`` images per pipeline call) and batch-invariant (one image per
call). Both are warmed up once, then alternate for ``--rounds`` rounds so that
they see the same machine state; the script prints each one's median images/s
and the ratio batch-invariant / batched (below 1: the cost of invariance).

    python bench/batch_invariance.py
    python bench/batch_invariance.py --device cuda --seeds 64 --steps 20 --width 256 --height 256
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from reprogrid.config import Settings
from reprogrid.models import open_database
from reprogrid.scheduler.jobs import create_job
from reprogrid.scheduler.spec import validate_spec
from reprogrid.worker.embedded import run_job
from reprogrid.worker.execute import WorkerContext, pick_device


def parse_args() -> argparse.Namespace:
    """Grid and machine settings of the measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:tiny")
    parser.add_argument("--prompts", type=int, default=2, help="number of distinct prompts")
    parser.add_argument("--seeds", type=int, default=16, help="seeds per prompt")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (pinned)")
    parser.add_argument("--device", default="auto")
    return parser.parse_args()


def main() -> None:
    """Measure both modes in this process and print the ratio."""
    args = parse_args()
    raw = {
        "model": args.model,
        "prompts": [f"a lighthouse at dusk, study {i}" for i in range(args.prompts)],
        "seeds": f"0-{args.seeds - 1}",
        "steps": args.steps,
        "width": args.width,
        "height": args.height,
        "batch_size": args.batch_size,
    }
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            db_url=f"sqlite:///{tmp}/bench.db", store=Path(tmp) / "store", threads=args.threads
        )
        db = open_database(settings.db_url)
        ctx = WorkerContext.start(settings, db, pick_device(args.device), "bench")

        def images_per_second(invariant: bool) -> float:
            spec = validate_spec({**raw, "batch_invariant": invariant}, settings.max_cells)
            job_id = create_job(db, spec)
            started = time.perf_counter()
            if run_job(ctx, job_id) != "done":
                raise SystemExit(f"job {job_id} did not finish")
            return spec.cell_count / (time.perf_counter() - started)

        images_per_second(False)  # warm-up: loads the checkpoint, fills caches
        images_per_second(True)
        batched, alone = [], []
        for _ in range(args.rounds):
            batched.append(images_per_second(False))
            alone.append(images_per_second(True))
        db.dispose()
    batched_rate, alone_rate = statistics.median(batched), statistics.median(alone)
    print(
        f"{args.model} {args.width}x{args.height}, {args.steps} steps,"
        f" {args.prompts * args.seeds} images per run, device {ctx.device},"
        f" threads {ctx.determinism.threads}, median of {args.rounds} rounds"
    )
    print(f"batched (batch size {args.batch_size}): {batched_rate:.2f} images/s")
    print(f"batch-invariant (batch size 1): {alone_rate:.2f} images/s")
    print(f"ratio batch-invariant / batched: {alone_rate / batched_rate:.2f}")


if __name__ == "__main__":
    main()
