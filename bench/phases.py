"""Where a ``reprogrid run`` process spends its time, phase by phase: item 1's breakdown.

Runs ``reprogrid run ARGS...`` in this process with a clock around each phase
(a diagnostic: the functions are wrapped here, nothing in reprogrid knows),
then prints one JSON line on stderr: wall and CPU seconds per phase, and the
whole process's. ``extra_imports`` compares two ``-X importtime`` logs: what
this process imported that a plain diffusers script did not (bench/process.py
runs both).

    python -X importtime bench/phases.py run spec.toml --db ... 2> reprogrid.log
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from typing import Any

STARTED_WALL, STARTED_CPU = time.perf_counter(), time.process_time()

# (module, attribute path, phase name), in the order a run meets them.
PHASES = (
    ("reprogrid.api", "Reprogrid.spec", "validate the spec"),
    ("reprogrid.api", "Reprogrid.tokens", "tokenize the prompts"),
    ("reprogrid.models.db", "upgrade", "open and migrate the database"),
    ("reprogrid.scheduler.jobs", "create_job", "create the job and its cells"),
    ("reprogrid.worker.execute", "pick_device", "import torch (pick the device)"),
    ("reprogrid.worker.execute", "WorkerContext.start", "configure determinism"),
    ("reprogrid.worker.execute", "load_pipeline", "load the checkpoint"),
    ("reprogrid.worker.execute", "WorkerContext.describe", "describe the environment"),
    ("reprogrid.worker.execute", "WorkerContext.checkpoint", "checkpoint row"),
    ("reprogrid.worker.execute", "generate", "pipeline calls"),
    ("reprogrid.worker.execute", "_claim", "claim batches (waiting for the recording process)"),
    ("reprogrid.worker.embedded", "form_batches", "form batches"),
    ("reprogrid.worker.execute", "_record", "store and record (waiting for the recording process)"),
)


def clocked(phases: dict[str, list[float]], name: str, function: Callable) -> Callable:
    """``function`` adding its wall and this thread's CPU seconds to ``phases[name]``."""

    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            total = phases.setdefault(name, [0.0, 0.0])
            total[0] += time.perf_counter() - wall
            total[1] += time.thread_time() - cpu

    return timed


def wrap_phases(phases: dict[str, list[float]]) -> None:
    """Put a clock around every phase's function, where its callers look it up."""
    import importlib

    for module_name, path, name in PHASES:
        owner: Any = importlib.import_module(module_name)
        *parents, attribute = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        setattr(owner, attribute, clocked(phases, name, getattr(owner, attribute)))


def import_times(log: str) -> dict[str, float]:
    """Self seconds per module from a ``-X importtime`` log."""
    times = {}
    with open(log, encoding="utf-8") as lines:
        for line in lines:
            if line.startswith("import time:") and "|" in line:
                own, _, name = line[len("import time:") :].split("|")
                if own.strip().isdigit():
                    times[name.strip()] = int(own) / 1e6
    return times


def extra_imports(ours: str, plain: str) -> dict[str, float]:
    """Seconds of imports per top-level package that only reprogrid's process made."""
    baseline = import_times(plain)
    extra: dict[str, float] = {}
    for module, seconds in import_times(ours).items():
        if module not in baseline:
            package = module.split(".")[0]
            extra[package] = extra.get(package, 0.0) + seconds
    return dict(sorted(extra.items(), key=lambda item: -item[1]))


def main() -> None:
    phases: dict[str, list[float]] = {}
    from reprogrid.cli import main as cli

    imported = time.perf_counter() - STARTED_WALL
    wrap_phases(phases)
    try:
        cli(sys.argv[1:], standalone_mode=False)
    finally:
        report = {
            "import reprogrid.cli": [imported, imported],
            **phases,
            "whole process": [
                time.perf_counter() - STARTED_WALL,
                time.process_time() - STARTED_CPU,
            ],
        }
        print(json.dumps(report), file=sys.stderr)


if __name__ == "__main__":
    main()
