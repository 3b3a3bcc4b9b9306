"""Item 1, the headline: ``reprogrid run`` against a plain diffusers script, as whole processes.

What a user feels is the whole process, from the shell's prompt to the next
one: interpreter start, imports, opening (and creating) the database, loading
the checkpoint, every image, every record, exit. Both sides run as processes of
their own, on the same grid, with one torch thread: the README's job
(``examples/shapes.toml``: 4 prompts x 8 seeds x 2 guidance scales of
builtin:shapes, 12 steps), and 4 prompts x N seeds of builtin:tiny (64x64, 4
steps, batches of 8) for a short grid and one ten times longer. The plain script is
``bench/plain_script.py``; reprogrid is ``reprogrid run SPEC`` with a new
store each time, on a fresh copy of an empty database of the current schema
(what every run after a store's first finds: nothing already made, nothing to
migrate). The breakdown's run starts with no database, as the README's first
command does, and shows what creating one costs.

Each grid runs one untimed warm-up of each side (the page cache, compiled
bytecode), whose pixels must be the same on both sides, then ``--pairs``
pairs, alternating which side goes first. A pair's ratio is the plain script's
time over reprogrid's: adjacent in time, both see the same load. The figure is
the median of the pairs' ratios, for wall time and for CPU time (user + system,
from ``wait4``).

    python -m bench.process --pairs 5 --long-pairs 5 --out results/process.json
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from sqlalchemy import select

from bench.common import (
    README_JOB,
    Row,
    arguments,
    compile_reprogrid,
    median,
    sqlite_url,
    verdict,
    write_rows,
)
from bench.phases import extra_imports
from reprogrid.config import DEFAULT_MAX_CELLS
from reprogrid.models import Cell, Image, open_database
from reprogrid.scheduler.checkpoint_refs import resolve_checkpoint
from reprogrid.scheduler.spec import read_spec_file, validate_spec
from reprogrid.worker.store import pixel_sha256

PROMPTS = ("a red fox in the snow", "a blue bird on a wire", "a green frog", "a white cat")
PLAIN_SCRIPT = Path(__file__).with_name("plain_script.py")
PHASES_SCRIPT = Path(__file__).with_name("phases.py")
TARGETS = {"short": 0.98, "long": 0.98, "readme": 0.98}


@dataclass(frozen=True)
class Grid:
    """One grid both sides make: prompts x ``seeds`` (x guidance scales) at 64x64."""

    name: str
    seeds: int
    steps: int = 4
    size: int = 64
    batch_size: int = 8
    threads: int = 1
    model: str = "builtin:tiny"
    prompts: tuple[str, ...] = PROMPTS
    guidance_scales: tuple[float, ...] = ()  # none: the pipeline's default, no axis

    @classmethod
    def of_spec(cls, name: str, path: Path, threads: int) -> Grid:
        """The grid of a spec file such as the README's (seeds ``"0-N"``, square images,
        at most a guidance scale axis), as ``reprogrid`` reads and validates it."""
        spec = validate_spec(read_spec_file(path), DEFAULT_MAX_CELLS, base_dir=path.parent)
        if (
            spec.seeds.runs != ((0, spec.seeds.count - 1),)
            or spec.width != spec.height
            or set(spec.axes) - {"guidance_scale"}
        ):
            raise ValueError(f"{path}: the plain script cannot make this grid")
        return cls(
            name,
            spec.seeds.count,
            steps=spec.steps,
            size=spec.width,
            batch_size=spec.batch_size,
            threads=threads,
            model=spec.model,
            prompts=spec.prompts or (),
            guidance_scales=spec.axes.get("guidance_scale", ()),
        )

    @property
    def images(self) -> int:
        return len(self.prompts) * self.seeds * max(1, len(self.guidance_scales))

    @property
    def described(self) -> str:
        scales = f" x {len(self.guidance_scales)} guidance scales" if self.guidance_scales else ""
        shape = f"{len(self.prompts)} prompts x {self.seeds} seeds{scales}"
        return f"{shape} of {self.model}, {self.steps} steps ({self.images} images)"

    def spec_toml(self) -> str:
        prompts = ", ".join(f'"{p}"' for p in self.prompts)
        toml = (
            f'name = "process-{self.name}"\nmodel = "{self.model}"\nprompts = [{prompts}]\n'
            f'seeds = "0-{self.seeds - 1}"\nsteps = {self.steps}\nwidth = {self.size}\n'
            f"height = {self.size}\nbatch_size = {self.batch_size}\n"
        )
        if self.guidance_scales:
            toml += f"[axes]\nguidance_scale = {list(self.guidance_scales)}\n"
        return toml


@dataclass(frozen=True)
class Timed:
    """One process's wall and CPU seconds."""

    wall: float
    cpu: float


def timed(command: list[str], env: dict[str, str], log: Path) -> Timed:
    """Run a command to its exit; its wall time and its own CPU time."""
    with log.open("w") as output:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{command[:3]} exited {process.returncode}; see {log}")
    return Timed(wall, usage.ru_utime + usage.ru_stime)


class Sides:
    """The two commands for one grid, each run in a clean folder."""

    def __init__(self, grid: Grid, workdir: Path) -> None:
        self.grid, self.workdir = grid, workdir
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        self.spec = workdir / "spec.toml"
        self.spec.write_text(grid.spec_toml(), encoding="utf-8")
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.env.pop("REPROGRID_DB", None)

    def plain(self, prefix: tuple[str, ...] = ()) -> Timed:
        out = self._fresh("plain")
        grid = self.grid
        command = [*(prefix or (sys.executable,)), str(PLAIN_SCRIPT)]
        command.append(str(resolve_checkpoint(grid.model).path))
        command += [str(out), "--seeds", str(grid.seeds), "--steps", str(grid.steps)]
        command += ["--size", str(grid.size), "--batch-size", str(grid.batch_size)]
        command += ["--threads", str(grid.threads)]
        for prompt in grid.prompts:
            command += ["--prompt", prompt]
        for scale in grid.guidance_scales:
            command += ["--guidance", str(scale)]
        return timed(command, self.env, self.workdir / "plain.log")

    def reprogrid(self, prefix: tuple[str, ...] = (), new_database: bool = False) -> Timed:
        """``reprogrid run`` with a new store, on an empty database of the current schema
        (as every run after the first finds it), or on none (``new_database``)."""
        out = self._fresh("reprogrid")
        if not new_database:
            shutil.copyfile(self._empty_database(), out / "reprogrid.db")
        program = prefix or (str(Path(sys.executable).with_name("reprogrid")),)
        command = [*program, "run", str(self.spec)]
        command += ["--db", f"sqlite:///{out / 'reprogrid.db'}", "--store", str(out / "store")]
        command += ["--threads", str(self.grid.threads)]
        return timed(command, self.env, self.workdir / "reprogrid.log")

    def breakdown(self) -> tuple[dict[str, list[float]], dict[str, float]]:
        """One run of each side with ``-X importtime``, reprogrid's under bench/phases.py:
        its seconds per phase, and the imports the plain script does not make."""
        plain_log, ours_log = self.workdir / "plain.log", self.workdir / "reprogrid.log"
        self.plain(prefix=(sys.executable, "-X", "importtime"))
        phases_script = (sys.executable, "-X", "importtime", str(PHASES_SCRIPT))
        self.reprogrid(prefix=phases_script, new_database=True)
        lines = ours_log.read_text(encoding="utf-8").splitlines()
        phases = json.loads(next(line for line in reversed(lines) if line.startswith("{")))
        return phases, extra_imports(str(ours_log), str(plain_log))

    def same_pixels(self) -> bool:
        """Whether the last runs of both sides made the same images, in grid order."""
        grid = self.grid
        plain = [
            pixel_sha256(np.asarray(PILImage.open(self.workdir / "plain" / f"{g}-{p}-{s}.png")))
            for g in range(max(1, len(grid.guidance_scales)))
            for p in range(len(grid.prompts))
            for s in range(grid.seeds)
        ]
        db = open_database(f"sqlite:///{self.workdir / 'reprogrid' / 'reprogrid.db'}", False)
        with db.reads() as session:
            made = session.scalars(
                select(Image.pixel_sha256)
                .join(Cell, Cell.id == Image.cell_id)
                .order_by(Cell.grid_index)
            ).all()
        db.dispose()
        return list(made) == plain

    def _empty_database(self) -> Path:
        """A database file migrated to the current schema, with no job: made once."""
        empty = self.workdir / "empty.db"
        if not empty.exists():
            open_database(sqlite_url(empty)).dispose()
        return empty

    def _fresh(self, name: str) -> Path:
        folder = self.workdir / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        return folder


def measure(grid: Grid, pairs: int, workdir: Path) -> list[tuple[Timed, Timed]]:
    """(plain, reprogrid) timings of ``pairs`` pairs, after one checked warm-up of each."""
    sides = Sides(grid, workdir / grid.name)
    sides.plain(), sides.reprogrid()
    if not sides.same_pixels():
        raise RuntimeError(f"{grid.name} grid: reprogrid made other pixels than the plain script")
    results = []
    for pair in range(pairs):
        if pair % 2 == 0:
            plain, ours = sides.plain(), sides.reprogrid()
        else:
            ours, plain = sides.reprogrid(), sides.plain()
        print(
            f"  {grid.name} pair {pair + 1}: plain {plain.wall:.2f} s, reprogrid {ours.wall:.2f} s"
        )
        results.append((plain, ours))
    return results


def ratio_row(grid: Grid, results: list[tuple[Timed, Timed]]) -> Row:
    """The grid's row: median ratios of wall and CPU time, and each side's median wall time."""
    wall = median([plain.wall / ours.wall for plain, ours in results])
    cpu = median([plain.cpu / ours.cpu for plain, ours in results])
    plain_s = median([plain.wall for plain, _ in results])
    ours_s = median([ours.wall for _, ours in results])
    target = TARGETS[grid.name]
    return Row(
        "1 whole process",
        f"reprogrid run, {grid.name} grid: {grid.described}",
        f"ratio {wall:.3f} x wall, {cpu:.3f} x CPU (median of {len(results)} pairs;"
        f" plain script {plain_s:.2f} s, reprogrid {ours_s:.2f} s)",
        f">= {target} x",
        verdict(wall >= target),
    )


def breakdown_rows(grid: Grid, workdir: Path) -> list[Row]:
    """Where reprogrid's process spends its time on the grid, and what it imports extra."""
    phases, extra = Sides(grid, workdir / f"{grid.name}-breakdown").breakdown()
    item = "1 whole process (breakdown)"
    shown = ", ".join(f"{name} {seconds:.3f}" for name, seconds in list(extra.items())[:5])
    rows = [
        Row(item, "imports the plain script does not make", f"{sum(extra.values()):.3f} s: {shown}")
    ]
    rows += [
        Row(item, name, f"{wall:.3f} s wall, {cpu:.3f} s CPU")
        for name, (wall, cpu) in phases.items()
    ]
    return rows


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5, help="timed pairs on the short grid")
    parser.add_argument("--long-pairs", type=int, default=3, help="timed pairs on the long grid")
    parser.add_argument(
        "--readme-pairs", type=int, default=5, help="timed pairs on the README's job"
    )
    parser.add_argument("--seeds", type=int, default=32, help="seeds per prompt, short grid")
    parser.add_argument(
        "--no-breakdown", dest="breakdown", action="store_false", help="skip the phase breakdown"
    )
    args = parser.parse_args()
    compile_reprogrid()
    grids = [
        (Grid("short", args.seeds, threads=args.threads), args.pairs),
        (Grid("long", args.seeds * 10, threads=args.threads), args.long_pairs),
        (Grid.of_spec("readme", README_JOB, args.threads), args.readme_pairs),
    ]
    rows = []
    for grid, pairs in grids:
        if pairs > 0:
            print(f"process: {grid.name} grid, {grid.images} images, {pairs} pairs")
            rows.append(ratio_row(grid, measure(grid, pairs, args.workdir / "process")))
    if args.breakdown:
        rows += breakdown_rows(grids[0][0], args.workdir / "process")
    write_rows(args.out, rows)


if __name__ == "__main__":
    main()
