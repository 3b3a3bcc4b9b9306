"""Measure the README's refine example on builtin:shapes: a new background, the shape kept in place.

In a scratch folder, runs 4 subjects x 4 seeds ("a red circle"...) with
``reprogrid run``, then ``reprogrid refine IMAGE --append ", on a green
background" --run`` on each of the 16 images, and measures parent and child
with ``reprogrid.review.shapes``: is the child's background green, is its
shape the parent's, and is it where the parent's was (centres within
``--distance`` pixels)? Prints each pair and the fractions:

    python scripts/measure_refine.py
    python scripts/measure_refine.py --model DIR   # another checkpoint folder
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path

from PIL import Image

from reprogrid.cli import main as cli
from reprogrid.review.shapes import REFINE_APPEND, REFINE_SUBJECTS, centre_distance, measure


def reprogrid(*args: str, cwd: Path) -> str:
    """Run the reprogrid command line on the database and store in ``cwd``; return its output.

    In this process, so the checkpoint is loaded once for all the refine jobs.
    """
    argv = ["--db", str(cwd / "reprogrid.db"), "--store", str(cwd / "store"), *args]
    with contextlib.redirect_stdout(io.StringIO()) as output:
        cli.main(argv, prog_name="reprogrid", standalone_mode=False)
    return output.getvalue()


def images(cwd: Path) -> list[dict]:
    return json.loads(reprogrid("query", "--format", "json", cwd=cwd))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin:shapes", help="a checkpoint to measure")
    parser.add_argument("--seeds", default="0-3")
    parser.add_argument("--steps", default="12")
    parser.add_argument("--guidance-scale", default="4.0")
    parser.add_argument("--distance", type=float, default=4.0, help="pixels a shape may move")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        prompts = [flag for subject in REFINE_SUBJECTS for flag in ("--prompt", subject)]
        reprogrid(
            "run", "--model", args.model, *prompts, "--seeds", args.seeds, "--threads", "1",
            "--steps", args.steps, "--guidance-scale", args.guidance_scale, cwd=cwd,
        )  # fmt: skip
        parents = images(cwd)
        for row in parents:
            image = str(row["image_id"])
            refine = ("refine", image, "--append", REFINE_APPEND, "--run", "--threads", "1")
            reprogrid(*refine, cwd=cwd)
        children = {(r["prompt"], r["seed"]): r for r in images(cwd)}
        green = kept = placed = 0
        for row in parents:
            child_row = children[(row["prompt"] + REFINE_APPEND, row["seed"])]
            parent = measure(Image.open(row["path"]))
            child = measure(Image.open(child_row["path"]))
            distance = centre_distance(parent, child)
            green += child.background == "green"
            kept += child.shape == parent.shape
            placed += distance <= args.distance
            print(
                f"{row['prompt']!r} seed {row['seed']}: background {parent.background}"
                f" -> {child.background}, shape {parent.shape} -> {child.shape},"
                f" moved {distance:.1f} px"
            )
    n = len(parents)
    print(f"background green: {green}/{n}, same shape: {kept}/{n}, "
          f"shape within {args.distance:g} px of its place: {placed}/{n}")  # fmt: skip


if __name__ == "__main__":
    main()
