"""Build the tiny built-in checkpoints shipped in ``reprogrid/builtin``.

Run once by a developer; the output is committed. Weights are random but
seeded, so the files are the same on every run with the same library versions.
The checkpoints are saved with ``save_pretrained`` and loaded at run time through
``DiffusionPipeline.from_pretrained``, exactly like a hub checkpoint.

    python scripts/make_builtin_checkpoints.py
"""

import json
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMPipeline,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
    UNet2DModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

BUILTIN = Path(__file__).resolve().parent.parent / "reprogrid" / "builtin"


def byte_level_tokenizer(workdir: Path) -> CLIPTokenizer:
    """A CLIP tokenizer whose vocabulary is the 256 byte symbols, without merges."""
    symbols = list(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (workdir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (workdir / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return CLIPTokenizer(
        str(workdir / "vocab.json"), str(workdir / "merges.txt"), model_max_length=32
    )


def tiny_text_to_image() -> StableDiffusionPipeline:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=16,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
    )
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = byte_level_tokenizer(Path(tmp))
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=32,
            projection_dim=32,
        )
    )
    sampler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        steps_offset=1,
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


def tiny_unconditional() -> DDPMPipeline:
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=16,
    )
    return DDPMPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=1000))


def main() -> None:
    for name, build in [("tiny", tiny_text_to_image), ("tiny-ddpm", tiny_unconditional)]:
        target = BUILTIN / name
        shutil.rmtree(target, ignore_errors=True)
        build().save_pretrained(target, safe_serialization=True)
        size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
        print(f"{target}: {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
