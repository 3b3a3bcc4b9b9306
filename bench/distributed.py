"""Items 1 and 2, the fleet: throughput of submit + scheduler + one worker, and dispatch rate.

*Throughput*: the same workload as ``bench/throughput.py``, measured against
the same plain diffusers loop in the same run, but through the distributed
path: ``create_job`` on a queue (what ``reprogrid submit`` does), one
``reprogrid scheduler`` and one ``reprogrid worker`` process over Redis, on a
scratch PostgreSQL database; a repetition ends when the job is done. The
pipeline runs in the worker process, so the "outside the pipeline call" figure
of this case is its whole time and is left out. A second ratio leaves out the
wait for the scheduler's next pass before the first batch: it is taken from
the job's own ``started_at`` (its first claim) to its ``finished_at``, the
part of a night's run that grows with the number of images.

*Idle gap*: the time from the end of one pipeline call to the start of the
next within a repetition, p50 and p95, for the plain loop (in this process)
and for the fleet's worker (run through ``bench/traced_worker.py``, which
writes each call's start and end; both on ``time.monotonic()``).

*Dispatch rate*: batches per second that ``dispatch_once`` forms and publishes
to Redis with no worker attached, for one job of many small batches.

    python -m bench.distributed --reps 5 --out results/distributed.json
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import redis
from sqlalchemy import select

from bench.common import (
    Row,
    arguments,
    bench_spec,
    percentile,
    scratch_postgres,
    verdict,
    write_rows,
)
from bench.throughput import (
    BASELINE,
    TARGET_RATIO,
    Runner,
    Workload,
    call_row,
    calls_within,
    idle_gaps,
    measure,
    plain_loop,
)
from bench.traced_worker import read_calls
from reprogrid.config import Settings
from reprogrid.models import FINISHED, Job, open_database
from reprogrid.scheduler.broker import celery_app, publish_batch
from reprogrid.scheduler.dispatch import DispatchLimits, dispatch_once
from reprogrid.scheduler.jobs import create_job

BROKER = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/14")
CASE = "reprogrid fleet (submit, scheduler, 1 worker, Redis, PostgreSQL)"
CALLS = "pipeline-calls.txt"  # the worker's pipeline calls (bench/traced_worker.py)
GAP_TARGET_MS = 2.0
CALL_CASE = "pipeline call in the fleet's worker (plain loop: nothing beside it)"
POLL_SECONDS = 0.05


@dataclass
class FleetLog:
    """What the fleet case leaves besides its wall times."""

    # seconds from each repetition's first claim to its end, as the database recorded them
    working: list[float] = field(default_factory=list)
    calls: Path | None = None  # the worker's pipeline calls, one "start end" line each


def fleet(resources: ExitStack, workload: Workload, workdir: Path, fleet_log: FleetLog) -> Runner:
    """Start a scheduler and a worker on a scratch database; run(rep) submits and waits."""
    url = resources.enter_context(scratch_postgres())
    (workdir / "db_url").write_text(url, encoding="utf-8")  # read by throughput.case_pixels
    db = open_database(url)
    redis.Redis.from_url(BROKER).flushdb()
    env = {
        **os.environ,
        "REPROGRID_DB": url,
        "REPROGRID_BROKER": BROKER,
        "REPROGRID_STORE": str(workdir / "store"),
        "REPROGRID_THREADS": str(workload.threads or ""),
    }
    processes = []
    fleet_log.calls = workdir / CALLS
    env["BENCH_CALLS"] = str(fleet_log.calls)
    for command in (
        ["bench.traced_worker", "worker", "--device", workload.device, "--name", "bench-worker"],
        ["reprogrid", "scheduler", "--interval", "0.1"],
    ):
        log = (workdir / f"{command[1]}.log").open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", *command], env=env, stdout=log, stderr=log
        )
        resources.callback(_stop, process)
        processes.append(process)

    def run(rep: int) -> float:
        started = time.perf_counter()
        job_id = create_job(db, workload.spec(rep), queue="default")
        while True:
            with db.sessions() as session:
                status = session.scalar(select(Job.status).where(Job.id == job_id))
            if status in FINISHED:
                break
            if any(process.poll() is not None for process in processes):
                raise RuntimeError(f"a fleet process exited; see {workdir}/*.log")
            time.sleep(POLL_SECONDS)
        seconds = time.perf_counter() - started
        if status != "done":
            raise RuntimeError(f"job {job_id} ended {status}; see {workdir}/*.log")
        with db.sessions() as session:
            job = session.get(Job, job_id)
            fleet_log.working.append((job.finished_at - job.started_at).total_seconds())
        return seconds

    return run


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def dispatch_rate(cells: int) -> Row:
    """Batches/s that one ``dispatch_once`` pass forms and publishes, no worker attached."""
    with scratch_postgres() as url:
        db = open_database(url)
        redis.Redis.from_url(BROKER).flushdb()
        spec = bench_spec(prompts=["a red fox"], seeds=f"0-{cells - 1}", batch_size=4)
        create_job(db, spec, queue="default")
        broker = celery_app(Settings(broker_url=BROKER))
        batches = cells // 4
        limits = DispatchLimits(max_in_flight=batches, lease_seconds=600, max_attempts=3)
        started = time.perf_counter()
        report = dispatch_once(db, lambda b, q: publish_batch(broker, b, q), limits)
        seconds = time.perf_counter() - started
        db.dispose()
        redis.Redis.from_url(BROKER).flushdb()
    return Row(
        "2 dispatch",
        f"scheduler pass: {report.published} batches of 4 formed and published",
        f"{report.published / seconds:.0f} batches/s ({seconds:.2f} s), PostgreSQL + Redis",
    )


def gap_row(name: str, gaps: list[float], target_ms: float | None = None) -> Row:
    """p50 and p95 of the device's idle time between two pipeline calls of a repetition."""
    p50, p95 = percentile(gaps, 50) * 1000, percentile(gaps, 95) * 1000
    figure = f"p50 {p50:.1f} ms, p95 {p95:.1f} ms ({len(gaps)} gaps)"
    if target_ms is None:
        return Row("1 idle gap", name, figure)
    return Row("1 idle gap", name, figure, f"p50 < {target_ms:g} ms", verdict(p50 < target_ms))


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--dispatch-cells", type=int, default=20_000)
    args = parser.parse_args()
    workload = Workload(threads=args.threads)
    workdir = args.workdir / "distributed"
    print(f"distributed: {workload.describe()}, {args.reps} reps")
    fleet_log = FleetLog()
    with ExitStack() as resources:
        cases = {
            BASELINE: plain_loop,
            CASE: lambda w, d: fleet(resources, w, d, fleet_log),
        }
        timings = measure(cases, workload, args.reps, workdir)
    # As in bench/throughput.py: each case's fastest repetition, the least disturbed.
    fastest = min(timings[BASELINE].total)
    ratio = fastest / min(timings[CASE].total)
    from_first_claim = fastest / min(fleet_log.working[1:])  # working[0]: the warm-up
    rate = workload.images / min(timings[CASE].total)
    worker_calls = read_calls(str(fleet_log.calls))
    worker_gaps = idle_gaps(worker_calls, timings[CASE].windows)
    per_rep = calls_within(worker_calls, timings[CASE].windows)
    timed = [end - start for rep in per_rep for start, end in rep]
    rows = [
        Row(
            "1 fleet",
            CASE,
            f"ratio {from_first_claim:.3f} x from first claim to end (whole job {ratio:.3f} x);"
            f" {rate:.1f} images/s",
            f">= {TARGET_RATIO} x from first claim",
            verdict(from_first_claim >= TARGET_RATIO),
        ),
        gap_row(BASELINE, timings[BASELINE].gaps),
        gap_row("reprogrid fleet worker", worker_gaps, GAP_TARGET_MS),
        call_row("2 recording", CALL_CASE, timed, timings[BASELINE].calls),
        dispatch_rate(args.dispatch_cells),
    ]
    write_rows(args.out, rows)


if __name__ == "__main__":
    main()
