"""Train ``builtin:shapes``, the small text-to-image checkpoint in ``reprogrid/builtin/shapes``.

Everything is made here from nothing, with fixed seeds: a synthetic data set
of flat coloured shapes (circle, square, triangle, star) in six colours on
nine background colours, in three sizes at random places, captioned like
"a red circle on a blue background" (or "a red circle", background unnamed);
a word-level CLIP tokenizer for that vocabulary; then, in order,

1. an AutoencoderTiny (TAESD's architecture: convolutions, no normalization)
   that maps 64x64 images to 16x16x4 latents, trained on L1 of the pixels and
   of their neighbour differences, so that edges and star points stay sharper;
   with ``--silhouette``, its first latent channel also held to the shape's
   silhouette, whatever the colours, so that a refined prompt that changes the
   colours finds the shape where the seed put it,
2. the latents of the whole data set and their scaling factor,
3. a small CLIP text encoder and UNet2DConditionModel trained together on
   epsilon prediction, the caption dropped 10% of the time so that
   classifier-free guidance works (with ``--detail-weight``, the error on
   latent channels 1-3 weighed more than on the silhouette's); then 600 steps
   more with offset noise (0.1) so that the caption, not the starting noise,
   sets the background,
4. a StableDiffusionPipeline (Euler sampler) saved with ``save_pretrained``,
5. what it measured: losses, time, prompt adherence at two guidance scales, named
   backgrounds, and how often the VAE gives a picture back with its colour and shape
   (``reprogrid.review.shapes`` names each image's colour and shape).

    python scripts/train_shapes.py --silhouette 1 --detail-weight 3 --threads 1
        # the shipped weights (README: how long)
    python scripts/train_shapes.py --quick --output DIR   # a few minutes, to try a change
    python scripts/train_shapes.py --resume 600 --output DIR  # train DIR's UNet further
    python scripts/train_shapes.py --zero-snr --unet-steps 3000 --output DIR
        # the zero-SNR experiment: follows background words, draws blobs (README)
    python scripts/train_shapes.py --silhouette 2 --output DIR
        # the silhouette alone: keeps refined shapes in place, draws few stars (README)

Every random draw is seeded, so the same library versions and thread count
should give the same weights.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    DDPMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from reprogrid.review.shapes import (
    BACKGROUND_COLOURS,
    RADII,
    SHAPE_COLOURS,
    SHAPES,
    SIZE,
    Measured,
    caption,
    draw,
    measure,
    silhouette,
)

TARGET = Path(__file__).resolve().parent.parent / "reprogrid" / "builtin" / "shapes"
MAX_TOKENS = 32
WORDS = ["a", "an", "on", "background", *SHAPES, *BACKGROUND_COLOURS]
SEED = 0


@dataclass(frozen=True)
class Settings:
    """How long each stage trains."""

    images: int
    vae_steps: int
    unet_steps: int
    offset_steps: int  # then this many more with offset noise, on a fresh learning-rate schedule
    batch: int = 32


FULL = Settings(images=8000, vae_steps=6000, unet_steps=3500, offset_steps=600)
QUICK = Settings(images=2000, vae_steps=300, unet_steps=300, offset_steps=100)
OFFSET_NOISE = 0.1


# 1. The data set ------------------------------------------------------------------------------


def make_dataset(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``count`` pictures (N, 64, 64, 3 uint8), their silhouettes (N, 16, 16) and captions."""
    images, silhouettes, captions = [], [], []
    colours, backgrounds = list(SHAPE_COLOURS), list(BACKGROUND_COLOURS)
    for _ in range(count):
        shape = SHAPES[rng.integers(len(SHAPES))]
        colour = colours[rng.integers(len(colours))]
        background = colour
        while background == colour:
            background = backgrounds[rng.integers(len(backgrounds))]
        r = RADII[rng.integers(len(RADII))]
        cx, cy = rng.uniform(r + 3, SIZE - r - 3, size=2)
        images.append(draw(shape, colour, background, cx, cy, r))
        silhouettes.append(silhouette(images[-1], colour, background))
        style = rng.random()
        named = caption(colour, shape, background, comma=style < 0.3)
        captions.append(named if style < 0.75 else caption(colour, shape))
    return np.stack(images), np.stack(silhouettes), captions


# 2. The tokenizer: CLIP's BPE with merges that make each vocabulary word one token ------------


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Greedy BPE on ``words`` until each is one symbol, most frequent pair first (ties sorted)."""
    split = [[*word[:-1], word[-1] + "</w>"] for word in words]
    merges = []
    while any(len(symbols) > 1 for symbols in split):
        pairs = Counter(p for symbols in split for p in itertools.pairwise(symbols))
        best = max(sorted(pairs), key=lambda p: pairs[p])
        merges.append(best)
        split = [_merge(symbols, best) for symbols in split]
    return merges


def _merge(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def word_tokenizer(workdir: Path) -> CLIPTokenizer:
    """A CLIP tokenizer: every byte symbol, plus one token per vocabulary word."""
    merges = learn_merges(WORDS)
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(pair) for pair in merges]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (workdir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (workdir / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(
        str(workdir / "vocab.json"), str(workdir / "merges.txt"), model_max_length=MAX_TOKENS
    )
    for word in WORDS:
        assert len(tokenizer(word, add_special_tokens=False).input_ids) == 1, word
    return tokenizer


def tokenize(tokenizer: CLIPTokenizer, captions: list[str]) -> torch.Tensor:
    """Token ids padded as StableDiffusionPipeline pads them."""
    return tokenizer(
        captions, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt"
    ).input_ids


# 3. The models --------------------------------------------------------------------------------


def new_vae() -> AutoencoderTiny:
    """Three stages of 16 channels (two halvings: 16x16 latents), one block each.

    TAESD's architecture rather than AutoencoderKL's: AutoencoderKL's group norms
    take away each picture's mean level, and in a short run it decoded red as
    brown and stars as blobs.
    """
    return AutoencoderTiny(
        encoder_block_out_channels=(16, 16, 16),
        decoder_block_out_channels=(16, 16, 16),
        num_encoder_blocks=(1, 1, 1),
        num_decoder_blocks=(1, 1, 1),
        latent_channels=4,
    )


def new_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MAX_TOKENS,
            projection_dim=64,
        )
    )


def new_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=SIZE // 4,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        # Attention at 8x8 only: at 16x16 it would cost more than all the convolutions.
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64,
        attention_head_dim=4,
        norm_num_groups=16,
    )


def new_noise_schedule(zero_snr: bool = False) -> DDPMScheduler:
    """SD's schedule on epsilon; with ``zero_snr``, rescaled to pure noise at t=999, on v.

    scaled_linear leaves 7% of the signal at t=999, so a model trained on it reads
    the background from the starting noise; zero SNR needs v-prediction.
    """
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        rescale_betas_zero_snr=zero_snr,
        prediction_type="v_prediction" if zero_snr else "epsilon",
    )


def target_and_weights(noise_schedule: DDPMScheduler) -> tuple[Callable, torch.Tensor]:
    """What the UNet predicts (from x0, noise, t) and min-SNR(5) weights per timestep.

    On v, min(SNR + 1, 5) / (SNR + 1) rather than min-SNR's min(SNR, 5) / (SNR + 1),
    which would give no weight to the zero-SNR step.
    """
    snr = noise_schedule.alphas_cumprod / (1 - noise_schedule.alphas_cumprod)
    if noise_schedule.config.prediction_type == "v_prediction":
        return noise_schedule.get_velocity, torch.clamp(snr + 1, max=5.0) / (snr + 1)
    return (lambda x0, noise, t: noise), torch.clamp(snr, max=5.0) / snr


# 4. Training ----------------------------------------------------------------------------------


def to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC to float NCHW in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def log(stage: str, step: int, steps: int, loss: float, started: float) -> None:
    print(f"{stage} step {step}/{steps} loss {loss:.5f} ({time.time() - started:.0f}s)", flush=True)


def neighbour_differences(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pixel minus the one above it, and minus the one to its left."""
    return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]


def train_vae(
    vae: AutoencoderTiny,
    images: np.ndarray,
    held: np.ndarray | None,
    steps: int,
    batch: int,
    gen: torch.Generator,
) -> None:
    """L1 of the pixels and of their neighbour differences, latents slightly noised; AdamW.

    The noise makes the decoder tolerate the small errors of a sampled latent.
    Given ``held`` (N, 16, 16: each picture's silhouette, an amplitude inside and
    minus it outside), latent channel 0 is also held to it (squared error),
    whatever the colours, so that where a seed's noise puts the shape does not
    depend on the colours a caption asks for (README: the silhouette).
    """
    optimizer = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    started, running = time.time(), 0.0
    for step in range(1, steps + 1):
        pick = torch.randint(len(images), (batch // 2,), generator=gen).numpy()
        x = to_unit(images[pick])
        z = vae.encode(x).latents
        decoded = vae.decode(z + 0.05 * torch.randn(z.shape, generator=gen)).sample
        edges = zip(neighbour_differences(decoded), neighbour_differences(x), strict=True)
        loss = (decoded - x).abs().mean() + sum((d - e).abs().mean() for d, e in edges)
        loss = loss + 1e-4 * (z**2).mean()
        if held is not None:
            loss = loss + ((z[:, 0] - torch.from_numpy(held[pick])) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        running = 0.9 * running + 0.1 * loss.item() if step > 1 else loss.item()
        if step % 100 == 0 or step == steps:
            log("vae", step, steps, running, started)


@torch.no_grad()
def encode_all(vae: AutoencoderTiny | AutoencoderKL, images: np.ndarray) -> torch.Tensor:
    """The latents of every image, unscaled (an AutoencoderKL's: its posterior mean)."""
    chunks = [vae.encode(to_unit(images[i : i + 256])) for i in range(0, len(images), 256)]
    return torch.cat([c.latents if hasattr(c, "latents") else c.latent_dist.mean for c in chunks])


def train_denoiser(
    unet: UNet2DConditionModel,
    text_encoder: CLIPTextModel,
    noise_schedule: DDPMScheduler,
    latents: torch.Tensor,
    ids: torch.Tensor,
    empty: torch.Tensor,
    steps: int,
    batch: int,
    gen: torch.Generator,
    progress: Callable[[], None],
    offset_noise: float = 0.0,
    detail_weight: float = 1.0,
) -> None:
    """Min-SNR(5) weighted denoising; 10% of captions dropped to the empty one.

    ``offset_noise`` adds that much of a per-channel constant to the noise (offset
    noise), so that at the noisiest steps the picture's mean colour cannot be read
    from the noise and the model learns to set it from the caption.
    ``detail_weight`` weighs the error on every latent channel after the first
    that many times the error on channel 0 (the weights averaging 1): with
    ``--silhouette``, channel 0 holds the silhouette and the others the colours
    and the details (a star's points) the silhouette's coarse blocks blur.
    """
    target_of, weights = target_and_weights(noise_schedule)
    channels = torch.full((latents.shape[1],), detail_weight)
    channels[0] = 1.0
    channels = (channels / channels.mean()).view(1, -1, 1, 1)
    params = [*unet.parameters(), *text_encoder.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2)
    warmup = max(1, steps // 50)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(s, steps) / steps)),
    )
    started, running = time.time(), 0.0
    for step in range(1, steps + 1):
        pick = torch.randint(len(latents), (batch,), generator=gen)
        x0, tokens = latents[pick], ids[pick].clone()
        tokens[torch.rand(batch, generator=gen) < 0.1] = empty
        noise = torch.randn(x0.shape, generator=gen)
        if offset_noise:
            noise += offset_noise * torch.randn((batch, x0.shape[1], 1, 1), generator=gen)
        t = torch.randint(0, 1000, (batch,), generator=gen)
        noisy = noise_schedule.add_noise(x0, noise, t)
        predicted = unet(noisy, t, encoder_hidden_states=text_encoder(tokens)[0]).sample
        target = target_of(x0, noise, t)
        loss = (weights[t] * (((predicted - target) ** 2) * channels).mean(dim=(1, 2, 3))).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        running = 0.98 * running + 0.02 * loss.item() if step > 1 else loss.item()
        if step % 250 == 0 or step == steps:
            log(
                f"unet, offset noise {offset_noise}" if offset_noise else "unet",
                step,
                steps,
                running,
                started,
            )
        if step % 500 == 0:
            progress()


# 5. Saving and measuring ----------------------------------------------------------------------


def pipeline_of(vae, text_encoder, tokenizer, unet, zero_snr: bool) -> StableDiffusionPipeline:
    config = new_noise_schedule(zero_snr).config
    sampler = EulerDiscreteScheduler.from_config(
        config, timestep_spacing="trailing", steps_offset=1
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=sampler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def drawn(
    pipeline: StableDiffusionPipeline, prompts: list[str], seeds: range, guidance: float
) -> list[Measured]:
    """Each prompt drawn with each seed (10 steps), measured."""
    images = pipeline(
        [prompt for prompt in prompts for _ in seeds], num_inference_steps=10,
        guidance_scale=guidance, height=SIZE, width=SIZE,
        generator=[torch.Generator().manual_seed(seed) for _ in prompts for seed in seeds],
    ).images  # fmt: skip
    return [measure(image) for image in images]


def adherence(
    pipeline: StableDiffusionPipeline, guidance: float, seeds: range
) -> tuple[float, float]:
    """Fractions of images whose measured colour, and shape, are the prompt's (all subjects)."""
    subjects = [(c, s) for c in SHAPE_COLOURS for s in SHAPES]
    found = drawn(pipeline, [caption(c, s) for c, s in subjects], seeds, guidance)
    expected = [subject for subject in subjects for _ in seeds]
    colours = np.mean([m.colour == c for m, (c, _) in zip(found, expected, strict=True)])
    shapes = np.mean([m.shape == s for m, (_, s) in zip(found, expected, strict=True)])
    return float(colours), float(shapes)


def background_adherence(pipeline: StableDiffusionPipeline, seeds: range) -> float:
    """Fraction of images with the named background: each background x shape, at guidance 4."""
    asked = []
    for background in BACKGROUND_COLOURS:
        others = [colour for colour in SHAPE_COLOURS if colour != background]
        asked += [(background, caption(others[i], s, background)) for i, s in enumerate(SHAPES)]
    found = drawn(pipeline, [prompt for _, prompt in asked], seeds, 4.0)
    expected = [background for background, _ in asked for _ in seeds]
    return float(np.mean([m.background == b for m, b in zip(found, expected, strict=True)]))


@torch.no_grad()
def reconstruction_adherence(vae: AutoencoderTiny | AutoencoderKL) -> dict[str, float]:
    """Fractions of pictures the VAE gives back with their colour and their shape.

    Every shape x colour x size, three times at random places on other backgrounds
    (216 pictures, seeded): what the UNet's pictures can be at best.
    """
    rng = np.random.default_rng(SEED + 2)
    subjects = list(itertools.product(SHAPES, SHAPE_COLOURS, RADII, range(3)))
    pictures = []
    for shape, colour, r, _ in subjects:
        backgrounds = [b for b in BACKGROUND_COLOURS if b != colour]
        background = backgrounds[rng.integers(len(backgrounds))]
        cx, cy = rng.uniform(r + 3, SIZE - r - 3, size=2)
        pictures.append(draw(shape, colour, background, cx, cy, r))
    decoded = (vae.decode(encode_all(vae, np.stack(pictures))).sample.clamp(-1, 1) + 1) * 127.5
    pixels = decoded.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    found = [measure(Image.fromarray(p)) for p in pixels]
    right = {"colour": np.mean([m.colour == s[1] for m, s in zip(found, subjects, strict=True)])}
    for shape, r in itertools.product(SHAPES, RADII):
        picked = [
            m.shape == shape for m, s in zip(found, subjects, strict=True) if s[::2] == (shape, r)
        ]
        right[f"{shape} {r}"] = np.mean(picked)
    right["shape"] = np.mean([m.shape == s[0] for m, s in zip(found, subjects, strict=True)])
    return {key: float(value) for key, value in right.items()}


def first_stages(
    images: np.ndarray,
    held: np.ndarray | None,
    settings: Settings,
    gen: torch.Generator,
    zero_snr: bool,
) -> tuple[StableDiffusionPipeline, torch.Tensor]:
    """The tokenizer and trained VAE in a pipeline with a new text encoder and UNet; the latents."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = word_tokenizer(Path(tmp))
    vae = new_vae()
    train_vae(vae, images, held, settings.vae_steps, settings.batch, gen)
    vae.eval().requires_grad_(False)
    latents = encode_all(vae, images)
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    latents = latents * vae.config.scaling_factor
    spread = ", ".join(f"{s:.2f}" for s in latents.std(dim=(0, 2, 3)))
    print(
        f"latents: mean {latents.mean():.3f}, scaling factor {vae.config.scaling_factor:.4f},"
        f" channel spreads {spread}"
    )
    pipeline = pipeline_of(vae, new_text_encoder(tokenizer), tokenizer, new_unet(), zero_snr)
    return pipeline, latents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run, to try a change")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=TARGET)
    parser.add_argument(
        "--resume",
        type=int,
        metavar="STEPS",
        help="train the text encoder and UNet saved in --output STEPS steps further",
    )
    parser.add_argument(
        "--zero-snr",
        action="store_true",
        help="zero-terminal-SNR schedule and v-prediction (an experiment: see the README)",
    )
    parser.add_argument(
        "--silhouette",
        type=float,
        metavar="AMPLITUDE",
        help="hold the VAE's first latent channel to the shape's silhouette, AMPLITUDE inside"
        " and minus it outside (the shipped weights: 1)",
    )
    parser.add_argument("--unet-steps", type=int, help="instead of the settings' UNet steps")
    parser.add_argument(
        "--detail-weight",
        type=float,
        default=1.0,
        metavar="W",
        help="weigh the UNet's error on latent channels 1-3 W times that on channel 0 (with"
        " --silhouette: the colours and details against the silhouette; the shipped weights: 3)",
    )
    parser.add_argument(
        "--offset-noise",
        type=float,
        default=OFFSET_NOISE,
        help="offset noise of the last phase (and of --resume): a per-channel constant added to"
        " the training noise, times a standard normal draw",
    )
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    started = time.time()

    images, silhouettes, captions = make_dataset(settings.images, np.random.default_rng(SEED))
    print(f"data set: {len(images)} images ({time.time() - started:.0f}s)", flush=True)
    if args.resume:
        pipeline = StableDiffusionPipeline.from_pretrained(args.output)
        gen = torch.Generator().manual_seed(SEED + 1)  # other batches than the first run's
        latents = encode_all(pipeline.vae, images) * pipeline.vae.config.scaling_factor
        phases = [(args.resume, args.offset_noise)]
    else:
        gen = torch.Generator().manual_seed(SEED)
        held = args.silhouette * (2 * silhouettes - 1) if args.silhouette else None
        pipeline, latents = first_stages(images, held, settings, gen, args.zero_snr)
        # Offset noise only at the end: trained with it from the start, the model drew
        # another picture when a refined prompt kept the seed (README).
        phases = [
            (args.unet_steps or settings.unet_steps, 0.0),
            (settings.offset_steps, args.offset_noise),
        ]
    tokenizer, text_encoder, unet = pipeline.tokenizer, pipeline.text_encoder, pipeline.unet
    text_encoder.train().requires_grad_(True)
    unet.train().requires_grad_(True)
    ids, empty = tokenize(tokenizer, captions), tokenize(tokenizer, [""])[0]
    pipeline.set_progress_bar_config(disable=True)

    def progress() -> None:
        colours, shapes = adherence(pipeline, 4.0, range(1))
        print(f"  at guidance 4: colour right {colours:.2f}, shape right {shapes:.2f}", flush=True)

    noise_schedule = DDPMScheduler.from_config(pipeline.scheduler.config)
    for steps, offset_noise in phases:
        train_denoiser(
            unet,
            text_encoder,
            noise_schedule,
            latents,
            ids,
            empty,
            steps,
            settings.batch,
            gen,
            progress,
            offset_noise,
            args.detail_weight,
        )
    print(f"trained in {time.time() - started:.0f}s", flush=True)

    shutil.rmtree(args.output, ignore_errors=True)
    pipeline.save_pretrained(args.output, safe_serialization=True)
    size = sum(f.stat().st_size for f in args.output.rglob("*") if f.is_file())
    print(f"{args.output}: {size / 1e6:.1f} MB")
    for guidance in (1.0, 4.0):
        colours, shapes = adherence(pipeline, guidance, range(4))
        print(f"guidance {guidance}: colour right {colours:.2f}, shape right {shapes:.2f}")
    print(f"guidance 4.0: named background right {background_adherence(pipeline, range(2)):.2f}")
    fractions = ", ".join(f"{k} {v:.2f}" for k, v in reconstruction_adherence(pipeline.vae).items())
    print(f"VAE reconstructions right: {fractions}")


if __name__ == "__main__":
    main()
