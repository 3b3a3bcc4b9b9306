"""``python -m bench.traced_worker ARGS``: ``reprogrid ARGS`` with its pipeline calls traced.

Each call of ``StableDiffusionPipeline.__call__`` appends one line, its start
and end on ``time.monotonic()`` (one clock for every process of a machine), to
the file named by ``BENCH_CALLS``: ``bench/distributed.py`` reads the gaps of a
fleet worker's device between two pipeline calls from it.
"""

from __future__ import annotations

import os

from diffusers import StableDiffusionPipeline

from bench.throughput import traced_call
from reprogrid.cli import main


def trace_to(path: str) -> None:
    """Append each pipeline call's start and end to ``path``."""

    def seen(started: float, ended: float) -> None:
        with open(path, "a", encoding="ascii") as calls:
            calls.write(f"{started} {ended}\n")

    StableDiffusionPipeline.__call__ = traced_call(StableDiffusionPipeline.__call__, seen)


def read_calls(path: str) -> list[tuple[float, float]]:
    """The (start, end) pairs a traced worker wrote."""
    with open(path, encoding="ascii") as calls:
        return [(float(a), float(b)) for a, b in (line.split() for line in calls)]


if __name__ == "__main__":
    trace_to(os.environ["BENCH_CALLS"])
    main()
