"""Item 6: reprogrid on an NVIDIA GPU, with a Stable-Diffusion-1.5-sized checkpoint.

Needs no network. The checkpoint is built from SD 1.5's configuration values
(UNet 860M, VAE 84M and CLIP text encoder 123M parameters) with random weights
and saved with ``save_pretrained`` in float16, so that both paths load it with
``from_pretrained`` like a downloaded one; the tokenizer is the built-in tiny
checkpoint's byte-level one, its ids well inside CLIP's vocabulary size.

1. images/s of a plain diffusers loop against the worker path (``create_job`` +
   ``run_job``: ``generate_batch``, PNGs, records in SQLite), 512x512 float16, at
   batch sizes 1, 4 and 8: the cases of ``bench/throughput.py``;
2. whether two runs of the same batch of 4 are bit-identical with full
   determinism on and with it off, and the speed of each;
3. the initial noise of one seed from a CPU generator and from a CUDA generator.

``--smoke`` runs the same code on the CPU with a tiny checkpoint built the same
way (64x64, 2 steps): it proves the script end to end where there is no GPU.

    bench/gpu.sh            # on the GPU machine, about 4 minutes on an H100
    bench/gpu.sh --smoke    # anywhere, about a minute
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import Row, arguments, median, table, write_rows
from bench.throughput import BASELINE, Workload, embedded, measure, plain_loop, ratio_rows
from reprogrid.scheduler.checkpoint_refs import BUILTIN_DIR
from reprogrid.scheduler.grid import expand
from reprogrid.worker.checkpoints import load_checkpoint
from reprogrid.worker.determinism import configure
from reprogrid.worker.generate import generate_batch
from reprogrid.worker.store import pixel_sha256

WORKER_PATH = "reprogrid worker path (run_job, SQLite)"
DETERMINISM_BATCH = 4


@dataclass(frozen=True)
class Architecture:
    """Constructor arguments of the three networks of a Stable Diffusion checkpoint."""

    name: str
    unet: dict[str, Any]
    vae: dict[str, Any]
    text_encoder: dict[str, Any]


SD15 = Architecture(
    name="sd15-random",
    unet={
        "sample_size": 64,
        "block_out_channels": (320, 640, 1280, 1280),
        "layers_per_block": 2,
        "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        "cross_attention_dim": 768,
        "attention_head_dim": 8,
    },
    vae={"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "sample_size": 512},
    text_encoder={
        "vocab_size": 49408,
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "projection_dim": 768,
        "hidden_act": "quick_gelu",
    },
)
SMOKE = Architecture(
    name="smoke-random",
    unet={
        "sample_size": 8,
        "block_out_channels": (32, 64),
        "layers_per_block": 1,
        "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
        "cross_attention_dim": 32,
        "attention_head_dim": 8,
    },
    vae={"block_out_channels": (32, 32, 32, 32), "layers_per_block": 1, "sample_size": 64},
    text_encoder={
        "vocab_size": 49408,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "projection_dim": 32,
    },
)


def build_checkpoint(arch: Architecture, folder: Path, device: str, dtype: str) -> Path:
    """Save a pipeline of this architecture with random (seeded) weights; reuse a saved one."""
    if (folder / "model_index.json").exists():
        return folder
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(
        BUILTIN_DIR / "tiny" / "tokenizer", model_max_length=77
    )
    with torch.device(device):  # initialise the 860M UNet where it is fast
        unet = UNet2DConditionModel(**arch.unet)
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * len(arch.vae["block_out_channels"]),
            up_block_types=("UpDecoderBlock2D",) * len(arch.vae["block_out_channels"]),
            **arch.vae,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                max_position_embeddings=77,
                **arch.text_encoder,
            )
        )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler(  # SD 1.5's own sampler settings
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            skip_prk_steps=True,
            steps_offset=1,
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.to(getattr(torch, dtype)).save_pretrained(folder, safe_serialization=True)
    return folder


def determinism_rows(workload: Workload, reps: int) -> list[Row]:
    """Two runs of one batch, full determinism on and off: identical? how fast?"""
    loaded = load_checkpoint(workload.model, None, workload.dtype, workload.device)
    recipes = [json.loads(cell.recipe) for cell in expand(workload.spec(0))][:DETERMINISM_BATCH]
    outputs: dict[bool, list[np.ndarray]] = {True: [], False: []}
    seconds: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(reps + 2):  # the first run of each mode is a warm-up (cuDNN autotuning)
        for full in (True, False):
            configure(None, full)
            started = time.perf_counter()
            outputs[full].append(generate_batch(loaded, recipes, workload.device))
            seconds[full].append(time.perf_counter() - started)
    configure(None, True)
    rows = []
    for full, label in ((True, "on"), (False, "off")):
        first, second = outputs[full][1], outputs[full][2]
        same = [pixel_sha256(a) == pixel_sha256(b) for a, b in zip(first, second, strict=True)]
        diff = int(np.abs(first.astype(int) - second.astype(int)).max())
        rows.append(
            Row(
                "6 gpu determinism",
                f"full determinism {label}: two runs of a batch of {len(recipes)}",
                f"{sum(same)}/{len(same)} images bit-identical (max diff {diff} levels),"
                f" {len(recipes) / median(seconds[full][2:]):.2f} images/s",
            )
        )
    on, off = median(seconds[True][2:]), median(seconds[False][2:])
    across = sum(
        pixel_sha256(a) == pixel_sha256(b)
        for a, b in zip(outputs[True][1], outputs[False][1], strict=True)
    )
    rows.append(
        Row(
            "6 gpu determinism",
            "speed with full determinism on / off",
            f"{off / on:.3f} x; images identical on vs off: {across}/{len(recipes)}",
        )
    )
    return rows


def generator_row(workload: Workload) -> Row:
    """Initial noise of one seed from a CPU and from a CUDA generator."""
    import torch

    name = "noise of seed 0: CPU generator vs CUDA generator"
    if workload.device != "cuda":
        return Row("6 gpu generators", name, "n/a: no CUDA device (smoke run)")
    latent = workload.size // 8
    shape = (1, 4, latent, latent)
    cpu = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(0))
    cuda = torch.randn(shape, generator=torch.Generator("cuda").manual_seed(0), device="cuda")
    diff = (cpu - cuda.cpu()).abs().max().item()
    verdict = "identical" if diff == 0 else f"different (max abs diff {diff:.3f})"
    return Row("6 gpu generators", name, f"{verdict}; reprogrid always uses CPU generators")


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--steps", type=int, help="denoising steps (default 20; smoke 2)")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    # Before CUDA starts: full determinism needs CUBLAS_WORKSPACE_CONFIG set by then.
    configure(None, True)
    smoke = args.smoke
    device, dtype, size = ("cpu", "float32", 64) if smoke else ("cuda", "float16", 512)
    arch = SMOKE if smoke else SD15
    workdir = args.workdir / "gpu"
    folder = build_checkpoint(arch, workdir / arch.name, device, dtype)
    print(f"checkpoint {folder} ready after {time.perf_counter() - started:.0f} s", flush=True)
    rows: list[Row] = []
    for batch_size in args.batch_sizes:
        workload = Workload(
            seeds_per_prompt=batch_size,
            steps=args.steps or (2 if smoke else 20),
            size=size,
            batch_size=batch_size,
            threads=args.threads if smoke else None,
            model=str(folder.resolve()),
            dtype=dtype,
            device=device,
        )
        cases = {BASELINE: plain_loop, WORKER_PATH: embedded}
        timings = measure(cases, workload, args.reps, workdir / f"batch-{batch_size}", ())
        item = f"6 gpu batch {batch_size}"
        rows += [Row(item, "workload", workload.describe())]
        rows += ratio_rows(item, workload, timings, BASELINE, target=None)
        print(f"batch {batch_size} done after {time.perf_counter() - started:.0f} s", flush=True)
    rows += determinism_rows(workload, args.reps)
    rows.append(generator_row(workload))
    rows.append(Row("6 gpu", "whole run", f"{(time.perf_counter() - started) / 60:.1f} min"))
    write_rows(args.out, rows)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
