"""Item 5: the throughput cost of full-determinism mode and of batch-invariant jobs.

Variants of the embedded case of ``bench/throughput.py`` (``reprogrid run`` on
SQLite), measured side by side against the default (full determinism on,
batches of ``batch_size``). On the CPU, full determinism only switches
``torch.use_deterministic_algorithms`` (cuDNN, cuBLAS and TF32 settings act on
CUDA only), so its cost here should be nil; ``bench/gpu.sh`` measures it on a
GPU. A batch-invariant job computes every image alone, so it loses what
batching gains. The pixels with full determinism off must equal those with it
on; batch-invariant pixels may differ (docs/determinism.md).

    python -m bench.determinism --reps 5 --out results/determinism.json
"""

from __future__ import annotations

from functools import partial

from bench.common import Row, arguments, write_rows
from bench.throughput import Case, Workload, embedded, measure, ratio_rows

BASELINE = "full determinism on, batched (default)"
CASES: dict[str, Case] = {
    BASELINE: embedded,
    "full determinism off": partial(embedded, full_determinism=False),
    "batch_invariant = true": partial(embedded, batch_invariant=True),
}


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=Workload.seeds_per_prompt, help="per prompt")
    args = parser.parse_args()
    workload = Workload(seeds_per_prompt=args.seeds, threads=args.threads)
    print(f"determinism: {workload.describe()}, {args.reps} reps")
    timings = measure(
        CASES, workload, args.reps, args.workdir / "determinism", {"full determinism off"}
    )
    rows = ratio_rows("5 determinism", workload, timings, BASELINE, None, same_pipeline=False)
    rows.append(Row("5 determinism", "pixels, full determinism off vs on", "identical"))
    write_rows(args.out, rows)


if __name__ == "__main__":
    main()
