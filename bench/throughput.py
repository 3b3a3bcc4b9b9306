"""Item 1: images/s of reprogrid against a plain diffusers loop, measured side by side.

A *case* is a function ``case(workload, workdir) -> run``: it does its setup
untimed (load the pipeline, open the database, start services) and returns
``run(rep) -> seconds``, which makes repetition ``rep``'s images and returns its
wall time. Repetition ``rep`` uses seeds ``rep*n .. rep*n+n-1`` in every case, so
each case computes the same images and no case finds its files already written.

:func:`measure` sets every case up, runs one untimed warm-up repetition of each,
checks that every case made the same pixels as the baseline, then runs the
cases interleaved (rep 1 of each, rep 2 of each, ...) so that a change in the
machine's load hits all of them alike. images/s and ratios come from each
case's fastest repetition: other work on the machine only ever slows a run
down, so the fastest one is the least disturbed. The time a case spends
outside the pipeline's own call (median over repetitions) is what it adds to
the pipeline, the steadiest figure of all; the *steady* ratio combines it with
the baseline's pipeline time, and is the one held to the target.

To measure another path, write one more case and add it to ``CASES``; e.g. the
distributed path: in setup, a scratch PostgreSQL (``common.scratch_postgres``),
a worker process and the scheduler on Redis db 14; in ``run``, ``create_job``
then wait until the job is done.

    python bench/throughput.py --reps 7 --out results/throughput.json
"""

from __future__ import annotations

import cProfile
import functools
import itertools
import re
import shutil
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from bench.common import (
    Row,
    arguments,
    bench_spec,
    median,
    percentile,
    sqlite_url,
    verdict,
    write_rows,
)
from reprogrid.config import Settings
from reprogrid.models import Cell, Image, open_database
from reprogrid.scheduler.checkpoint_refs import resolve_checkpoint
from reprogrid.scheduler.jobs import create_job
from reprogrid.scheduler.spec import JobSpec
from reprogrid.worker.embedded import run_job
from reprogrid.worker.execute import WorkerContext
from reprogrid.worker.store import pixel_sha256

TARGET_RATIO = 0.95
Runner = Callable[[int], float]
Case = Callable[["Workload", Path], Runner]


@dataclass(frozen=True)
class Workload:
    """What every case computes in one repetition: prompts x seeds, in batches."""

    prompts: tuple[str, ...] = ("a red fox in the snow", "a blue bird on a wire")
    seeds_per_prompt: int = 16
    steps: int = 4
    size: int = 64
    batch_size: int = 4
    threads: int | None = 1
    model: str = "builtin:tiny"
    dtype: str = "float32"
    device: str = "cpu"

    @property
    def images(self) -> int:
        """Images per repetition."""
        return len(self.prompts) * self.seeds_per_prompt

    def seeds(self, rep: int) -> range:
        """The seeds of repetition ``rep``."""
        return range(rep * self.seeds_per_prompt, (rep + 1) * self.seeds_per_prompt)

    def spec(self, rep: int, **fields: Any) -> JobSpec:
        """The reprogrid spec of repetition ``rep``."""
        seeds = self.seeds(rep)
        return bench_spec(
            prompts=list(self.prompts),
            seeds=f"{seeds.start}-{seeds.stop - 1}",
            steps=self.steps,
            width=self.size,
            height=self.size,
            batch_size=self.batch_size,
            model=self.model,
            dtype=self.dtype,
            **fields,
        )

    def describe(self) -> str:
        """One line for the table."""
        model = self.model if self.model.startswith("builtin:") else Path(self.model).name
        return (
            f"{model} {self.size}x{self.size} {self.dtype} on {self.device}, {self.steps}"
            f" steps, batch {self.batch_size}, {self.images} images/rep, {self.threads} thread(s)"
        )


def plain_loop(workload: Workload, workdir: Path) -> Runner:
    """The loop a user would write: one pipeline, per-image CPU generators, Pillow PNGs."""
    import torch
    from diffusers import DiffusionPipeline

    pipeline = DiffusionPipeline.from_pretrained(
        resolve_checkpoint(workload.model).path, dtype=getattr(torch, workload.dtype)
    ).to(workload.device)
    pipeline.set_progress_bar_config(disable=True)
    out = workdir / "images"
    out.mkdir(parents=True, exist_ok=True)

    def run(rep: int) -> float:
        started = time.perf_counter()
        seeds = list(workload.seeds(rep))
        for p, prompt in enumerate(workload.prompts):
            for first in range(0, len(seeds), workload.batch_size):
                chunk = seeds[first : first + workload.batch_size]
                images = pipeline(
                    [prompt] * len(chunk),
                    num_inference_steps=workload.steps,
                    width=workload.size,
                    height=workload.size,
                    generator=[torch.Generator("cpu").manual_seed(s) for s in chunk],
                ).images
                for seed, image in zip(chunk, images, strict=True):
                    image.save(out / f"{p}-{seed}.png")
        return time.perf_counter() - started

    return run


def embedded(
    workload: Workload, workdir: Path, full_determinism: bool = True, **spec_fields: Any
) -> Runner:
    """``reprogrid run``: validate the spec, ``create_job``, then ``run_job`` on SQLite."""
    db = open_database(sqlite_url(workdir / "reprogrid.db"))
    settings = Settings(
        db_url=str(db.engine.url),
        store=workdir / "store",
        threads=workload.threads,
        full_determinism=full_determinism,
    )

    # Set up once, like the plain loop's pipeline: a process running batches starts its
    # recording process while it imports torch, which this process has done already.
    ctx = WorkerContext.start(settings, db, workload.device, "bench")

    def run(rep: int) -> float:
        started = time.perf_counter()
        job_id = create_job(db, workload.spec(rep, **spec_fields))
        status = run_job(ctx, job_id)
        seconds = time.perf_counter() - started
        if status != "done":
            raise RuntimeError(f"job {job_id} ended {status}")
        return seconds

    return run


BASELINE = "plain diffusers loop"
EMBEDDED = "reprogrid run (embedded, SQLite)"
CALL_CASE = "pipeline call while reprogrid run records (plain loop: nothing beside it)"
CASES: dict[str, Case] = {
    BASELINE: plain_loop,
    EMBEDDED: embedded,
    # determinism.py measures variants of the embedded case against it
}


def sqlite_url_of(path: Path) -> str:
    """The URL of an existing SQLite file (``common.sqlite_url`` starts a new one)."""
    return f"sqlite:///{path}"


def case_pixels(workdir: Path, workload: Workload, rep: int) -> list[str]:
    """pixel_sha256 of repetition ``rep``'s images in grid order, read from a case's output."""
    url_file = workdir / "db_url"  # a case on another database names it here
    if url_file.exists() or (workdir / "reprogrid.db").exists():
        url = url_file.read_text() if url_file.exists() else sqlite_url_of(workdir / "reprogrid.db")
        db = open_database(url, migrate=False)
        seeds = workload.seeds(rep)
        with db.sessions() as session:
            hashes = session.scalars(
                select(Image.pixel_sha256)
                .join(Cell, Cell.id == Image.cell_id)
                .where(Cell.seed >= seeds.start, Cell.seed < seeds.stop)
                .order_by(Cell.job_id, Cell.grid_index)
            ).all()
        db.dispose()
        return list(hashes)
    from PIL import Image as PILImage

    return [
        pixel_sha256(np.asarray(PILImage.open(workdir / "images" / f"{p}-{s}.png").convert("RGB")))
        for p in range(len(workload.prompts))
        for s in workload.seeds(rep)
    ]


Call = tuple[float, float]  # a pipeline call's start and end, on time.monotonic()


@dataclass
class Timings:
    """Seconds per repetition of one case: in all, and outside the pipeline's own call."""

    total: list[float] = field(default_factory=list)
    outside: list[float] = field(default_factory=list)
    # (start, end) of each timed repetition on time.monotonic(); the gaps between
    # the pipeline calls this process made during them, and those calls' seconds
    windows: list[Call] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    calls: list[float] = field(default_factory=list)


@dataclass
class PipelineClock:
    """What ``pipeline_clock`` saw: seconds inside the pipeline's call, and each call's
    (start, end) on ``time.monotonic()``, a clock all processes of this machine share."""

    inside: float = 0.0
    calls: list[Call] = field(default_factory=list)


def traced_call(original: Callable[..., Any], seen: Callable[[float, float], None]):
    """``StableDiffusionPipeline.__call__`` that tells ``seen`` each call's start and end."""

    @functools.wraps(original)  # keeps the signature generate_batch inspects
    def traced(*args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        try:
            return original(*args, **kwargs)
        finally:
            seen(started, time.monotonic())

    return traced


@contextmanager
def pipeline_clock() -> Iterator[PipelineClock]:
    """Time each call of ``StableDiffusionPipeline.__call__`` in this process (both
    paths call it).

    What a case spends outside it is what it adds to the pipeline: far steadier
    on a busy machine than the difference of two totals.
    """
    from diffusers import StableDiffusionPipeline

    clock = PipelineClock()
    original = StableDiffusionPipeline.__call__

    def seen(started: float, ended: float) -> None:
        clock.inside += ended - started
        clock.calls.append((started, ended))

    StableDiffusionPipeline.__call__ = traced_call(original, seen)
    try:
        yield clock
    finally:
        StableDiffusionPipeline.__call__ = original


def calls_within(calls: Iterable[Call], windows: Iterable[Call]) -> list[list[Call]]:
    """The calls made within each window (a repetition's start and end), in order."""
    ordered = sorted(calls)
    return [[c for c in ordered if first <= c[0] and c[1] <= last] for first, last in windows]


def idle_gaps(calls: Iterable[Call], windows: Iterable[Call]) -> list[float]:
    """Seconds from the end of one pipeline call to the start of the next, for
    consecutive calls within one window."""
    return [
        after[0] - before[1]
        for inside in calls_within(calls, windows)
        for before, after in itertools.pairwise(inside)
    ]


def measure(
    cases: dict[str, Case],
    workload: Workload,
    reps: int,
    workdir: Path,
    same_pixels: Collection[str] | None = None,
) -> dict[str, Timings]:
    """Seconds per repetition of every case, interleaved, after one warm-up each.

    The warm-up's images of the cases named in ``same_pixels`` (default: all)
    must be identical to the first case's: proof that they did the same work.
    """
    import torch

    if workload.threads is not None:
        torch.set_num_threads(workload.threads)
    dirs = {name: workdir / re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") for name in cases}
    for folder in dirs.values():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    runners = {name: case(workload, dirs[name]) for name, case in cases.items()}
    for run in runners.values():
        run(0)
    baseline = next(iter(cases))
    reference = case_pixels(dirs[baseline], workload, 0)
    for name in cases if same_pixels is None else same_pixels:
        if case_pixels(dirs[name], workload, 0) != reference:
            raise RuntimeError(f"{name} made other pixels than {baseline}")
    timings = {name: Timings() for name in cases}
    with pipeline_clock() as clock:
        for rep in range(1, reps + 1):
            for name, run in runners.items():
                clock.inside, clock.calls = 0.0, []
                started = time.monotonic()
                seconds = run(rep)
                window = (started, time.monotonic())
                timings[name].total.append(seconds)
                timings[name].outside.append(seconds - clock.inside)
                timings[name].windows.append(window)
                timings[name].gaps += idle_gaps(clock.calls, [window])
                timings[name].calls += [end - start for start, end in clock.calls]
    return timings


def ratio_rows(
    item: str,
    workload: Workload,
    timings: dict[str, Timings],
    baseline: str,
    target: float | None,
    same_pipeline: bool = True,
) -> list[Row]:
    """images/s of each case, its ratio to the baseline and its time outside the pipeline.

    The steady ratio is shown only where every case makes the same pipeline calls
    (``same_pipeline``), not where the variants change the pipeline's own work.
    """
    rows = []
    for name, times in timings.items():
        rate = workload.images / min(times.total)
        outside = median(times.outside) / workload.images * 1000
        figure = f"{rate:.1f} images/s; {outside:.1f} ms/image outside the pipeline call"
        if name == baseline:
            rows.append(Row(item, name, figure))
            continue
        ratio = min(timings[baseline].total) / min(times.total)
        if not same_pipeline:
            rows.append(Row(item, name, f"ratio {ratio:.3f} x; {figure}"))
            continue
        steady = steady_ratio(timings[baseline], times)
        figure = f"ratio {ratio:.3f} x (steady {steady:.3f} x); {figure}"
        if target is None:
            rows.append(Row(item, name, figure))
        else:
            rows.append(Row(item, name, figure, f"steady >= {target} x", verdict(steady >= target)))
    return rows


def call_row(item: str, name: str, calls: list[float], baseline_calls: list[float]) -> Row:
    """The pipeline call's own time in a case against the baseline's, for the same calls.

    What a case does beside the call (a recording thread, a scheduler) shows as a
    slower call; it is within noise when the case's median is at most the
    baseline's third quartile.
    """
    low, high = percentile(baseline_calls, 25), percentile(baseline_calls, 75)
    mine, theirs = median(calls), median(baseline_calls)
    figure = (
        f"p50 {mine * 1000:.1f} ms per call against {theirs * 1000:.1f} ms"
        f" ({mine / theirs - 1:+.1%}; baseline quartiles {low * 1000:.1f}-{high * 1000:.1f} ms)"
    )
    return Row(item, name, figure, "within the baseline's quartiles", verdict(mine <= high))


def steady_ratio(baseline: Timings, case: Timings) -> float:
    """The ratio both cases would have with the same pipeline time: the baseline's.

    Both call the pipeline for the same images (their pixels are checked equal),
    so they differ only by what they do outside it; medians of each part make
    this far less sensitive to a busy machine than a ratio of two totals.
    """
    inside = median([t - o for t, o in zip(baseline.total, baseline.outside, strict=True)])
    return (inside + median(baseline.outside)) / (inside + median(case.outside))


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--seeds", type=int, default=Workload.seeds_per_prompt, help="per prompt")
    parser.add_argument("--steps", type=int, default=Workload.steps)
    parser.add_argument("--batch-size", type=int, default=Workload.batch_size)
    parser.add_argument("--profile", type=Path, help="cProfile the embedded case into this file")
    args = parser.parse_args()
    workload = Workload(
        seeds_per_prompt=args.seeds,
        steps=args.steps,
        batch_size=args.batch_size,
        threads=args.threads,
    )
    workdir = args.workdir / "throughput"
    if args.profile:
        profile_embedded(workload, workdir, args.reps, args.profile)
        return
    print(f"throughput: {workload.describe()}, {args.reps} reps")
    timings = measure(CASES, workload, args.reps, workdir)
    # In-process and steady figures are diagnostics: the target is the whole process's.
    rows = [Row("1 in-process", "workload", workload.describe())]
    rows += ratio_rows("1 in-process", workload, timings, BASELINE, target=None)
    embedded_calls = timings[EMBEDDED].calls
    rows.append(call_row("2 recording", CALL_CASE, embedded_calls, timings[BASELINE].calls))
    write_rows(args.out, rows)


def profile_embedded(workload: Workload, workdir: Path, reps: int, path: Path) -> None:
    """Run the embedded case under cProfile (after a warm-up) and print where time goes."""
    import pstats

    run = embedded(workload, workdir / "profile")
    run(0)
    profiler = cProfile.Profile()
    profiler.runcall(lambda: [run(rep) for rep in range(1, reps + 1)])
    profiler.dump_stats(path)
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)


if __name__ == "__main__":
    main()
