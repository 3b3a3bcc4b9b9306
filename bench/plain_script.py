"""The plain diffusers script a user would write: every prompt x every seed, PNGs on disk.

The baseline of ``bench/process.py``, run as a process of its own and timed from
start to exit. It does what ``reprogrid run`` does for the same grid, and no
more: one pipeline loaded with ``from_pretrained``, one CPU generator per
image, batches of seeds in grid order (guidance scales, then prompts, then
seeds), Pillow PNGs.

    python bench/plain_script.py CHECKPOINT OUT --prompt "a cat" --seeds 32 --steps 4
"""

import argparse
from pathlib import Path

import torch
from diffusers import DiffusionPipeline

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("checkpoint")
parser.add_argument("out", type=Path)
parser.add_argument("--prompt", action="append", required=True)
parser.add_argument("--seeds", type=int, required=True)
parser.add_argument("--steps", type=int, default=4)
parser.add_argument("--size", type=int, default=64)
parser.add_argument("--batch-size", type=int, default=8)
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--guidance", type=float, action="append", help="guidance scales (an axis)")
args = parser.parse_args()

torch.set_num_threads(args.threads)
pipeline = DiffusionPipeline.from_pretrained(args.checkpoint)
pipeline.set_progress_bar_config(disable=True)
args.out.mkdir(parents=True, exist_ok=True)
for g, guidance in enumerate(args.guidance or [None]):
    extra = {} if guidance is None else {"guidance_scale": guidance}
    for p, prompt in enumerate(args.prompt):
        for first in range(0, args.seeds, args.batch_size):
            seeds = range(first, min(first + args.batch_size, args.seeds))
            images = pipeline(
                [prompt] * len(seeds),
                num_inference_steps=args.steps,
                width=args.size,
                height=args.size,
                generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
                **extra,
            ).images
            for seed, image in zip(seeds, images, strict=True):
                image.save(args.out / f"{g}-{p}-{seed}.png")
