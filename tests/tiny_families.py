"""Tiny random-weight checkpoints of every pipeline family, built at test time.

Built like diffusers' own tests' ``get_dummy_components``: small configs, seeded
random weights, tokenizers made locally (a byte-level CLIP tokenizer, a
character-level T5 unigram tokenizer), saved with ``save_pretrained`` and later
loaded through the same ``from_pretrained`` path as a downloaded checkpoint.
``build(name, folder)`` writes one; ``tiny_lora(folder)`` writes a LoRA file for
the tiny SD checkpoint.
"""

from __future__ import annotations

import inspect
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    PixArtAlphaPipeline,
    PixArtSigmaPipeline,
    PixArtTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

from scripts.make_builtin_checkpoints import byte_level_tokenizer

HIDDEN = 32


def clip_tokenizer(workdir: Path) -> CLIPTokenizer:
    """builtin:tiny's byte-level CLIP tokenizer (256 byte symbols, no merges), in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    return byte_level_tokenizer(workdir)


def t5_tokenizer() -> T5Tokenizer:
    """A T5 unigram tokenizer over printable ASCII characters."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    pieces += [(c, -2.0) for c in string.printable.strip()]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=64)


def clip_text_encoder(tokenizer: CLIPTokenizer, projection: bool = False) -> Any:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=32,
        projection_dim=HIDDEN,
        hidden_act="gelu",
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def t5_text_encoder(tokenizer: T5Tokenizer) -> T5EncoderModel:
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=HIDDEN,
        d_kv=8,
        d_ff=64,
        num_layers=1,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config)


def vae(latent_channels: int = 4, **extra: Any) -> AutoencoderKL:
    """A two-block VAE: scale factor 2."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=latent_channels,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=32,
        **extra,
    )


def sd_unet(cross_attention_dim: int = HIDDEN, **extra: Any) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=4,
        norm_num_groups=8,
        **extra,
    )


def sd(workdir: Path, prediction_type: str = "epsilon") -> StableDiffusionPipeline:
    tokenizer = clip_tokenizer(workdir / "clip")
    sampler = EulerDiscreteScheduler(
        beta_schedule="scaled_linear", prediction_type=prediction_type, steps_offset=1
    )
    return StableDiffusionPipeline(
        vae=vae(),
        text_encoder=clip_text_encoder(tokenizer),
        tokenizer=tokenizer,
        unet=sd_unet(),
        scheduler=sampler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def sd2_v(workdir: Path) -> StableDiffusionPipeline:
    return sd(workdir, prediction_type="v_prediction")


def sdxl(workdir: Path) -> StableDiffusionXLPipeline:
    tokenizer = clip_tokenizer(workdir / "clip")
    unet = sd_unet(
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=HIDDEN + 6 * 8,
        cross_attention_dim=2 * HIDDEN,
    )
    return StableDiffusionXLPipeline(
        vae=vae(),
        text_encoder=clip_text_encoder(tokenizer),
        tokenizer=tokenizer,
        text_encoder_2=clip_text_encoder(tokenizer, projection=True),
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=DPMSolverMultistepScheduler(beta_schedule="scaled_linear"),
    )


def sd3(workdir: Path, **transformer_config: Any) -> StableDiffusion3Pipeline:
    tokenizer = clip_tokenizer(workdir / "clip")
    t5 = t5_tokenizer()
    transformer = SD3Transformer2DModel(
        **{
            "sample_size": 16,
            "patch_size": 1,
            "in_channels": 4,
            "num_layers": 1,
            "attention_head_dim": 8,
            "num_attention_heads": 4,
            "caption_projection_dim": HIDDEN,
            "joint_attention_dim": HIDDEN,
            "pooled_projection_dim": 2 * HIDDEN,
            "out_channels": 4,
            **transformer_config,
        }
    )
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae(shift_factor=0.0609, scaling_factor=1.5035, use_quant_conv=False),
        text_encoder=clip_text_encoder(tokenizer, projection=True),
        tokenizer=tokenizer,
        text_encoder_2=clip_text_encoder(tokenizer, projection=True),
        tokenizer_2=tokenizer,
        text_encoder_3=t5_text_encoder(t5),
        tokenizer_3=t5,
    )


def sd35(workdir: Path) -> StableDiffusion3Pipeline:
    """SD3.5's transformer: query-key RMS norm and a dual-attention layer."""
    return sd3(workdir, num_layers=2, dual_attention_layers=(0,), qk_norm="rms_norm")


def flux(workdir: Path, guidance_embeds: bool = True) -> FluxPipeline:
    tokenizer = clip_tokenizer(workdir / "clip")
    t5 = t5_tokenizer()
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=HIDDEN,
        pooled_projection_dim=HIDDEN,
        axes_dims_rope=[4, 4, 8],
        guidance_embeds=guidance_embeds,
    )
    sampler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=guidance_embeds,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return FluxPipeline(
        scheduler=sampler,
        vae=vae(
            latent_channels=1, shift_factor=0.0609, scaling_factor=1.5035, use_quant_conv=False
        ),
        text_encoder=clip_text_encoder(tokenizer),
        tokenizer=tokenizer,
        text_encoder_2=t5_text_encoder(t5),
        tokenizer_2=t5,
        transformer=transformer,
    )


def flux_schnell(workdir: Path) -> FluxPipeline:
    return flux(workdir, guidance_embeds=False)


def pixart_transformer() -> PixArtTransformer2DModel:
    return PixArtTransformer2DModel(
        sample_size=16,
        num_layers=1,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=3,
        caption_channels=HIDDEN,
        in_channels=4,
        cross_attention_dim=24,
        out_channels=8,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
    )


def pixart(workdir: Path, pipeline_class: type = PixArtAlphaPipeline) -> Any:
    t5 = t5_tokenizer()
    return pipeline_class(
        transformer=pixart_transformer(),
        vae=vae(),
        scheduler=DPMSolverMultistepScheduler(),
        text_encoder=t5_text_encoder(t5),
        tokenizer=t5,
    )


def pixart_sigma(workdir: Path) -> PixArtSigmaPipeline:
    return pixart(workdir, PixArtSigmaPipeline)


FAMILIES: dict[str, Callable[[Path], Any]] = {
    "sd": sd,
    "sd2-v": sd2_v,
    "sdxl": sdxl,
    "sd3": sd3,
    "sd35": sd35,
    "flux": flux,
    "flux-schnell": flux_schnell,
    "pixart": pixart,
    "pixart-sigma": pixart_sigma,
}


def builders() -> dict[str, Callable[[Path], Any]]:
    """Every tiny checkpoint's builder: these, and the newer families' in
    tests/tiny_families_flow.py and tests/tiny_families_dit.py (which import this module)."""
    import tiny_families_dit
    import tiny_families_flow

    return {**FAMILIES, **tiny_families_flow.FAMILIES, **tiny_families_dit.FAMILIES}


def build(name: str, folder: Path, seed: int = 0) -> Path:
    """Write the tiny checkpoint ``name`` (a key of ``builders()``) into ``folder``."""
    torch.manual_seed(seed)
    pipeline = builders()[name](folder.parent / f".{folder.name}-work")
    pipeline.save_pretrained(folder)
    return folder


def plain_diffusers_call(model: Path, call: dict[str, Any], threads: int) -> Any:
    """A plain diffusers call with exactly a recorded call's arguments and sampler config,
    on the recorded thread count (a CPU's float sums depend on it); pixels as uint8."""
    import diffusers
    import numpy as np

    torch.set_num_threads(threads)
    pipeline = diffusers.DiffusionPipeline.from_pretrained(model, local_files_only=True)
    sampler = call["sampler"]
    pipeline.scheduler = getattr(diffusers, sampler["class"]).from_config(sampler["config"])
    arguments = dict(call["arguments"])
    seed = arguments.pop("generator")["seed"]
    # JSON has no tuples: give back a tuple where the pipeline's own default is one.
    defaults = inspect.signature(pipeline.__call__).parameters
    for name, value in arguments.items():
        if isinstance(value, list) and isinstance(defaults[name].default, tuple):
            arguments[name] = tuple(value)
    pipeline.set_progress_bar_config(disable=True)
    images = pipeline(**arguments, generator=torch.Generator("cpu").manual_seed(seed)).images
    return (np.asarray(images, dtype=np.float32) * 255).round().astype(np.uint8)[0]


def tiny_lora(folder: Path, checkpoint: Path, rank: int = 4) -> Path:
    """Write a random LoRA for the UNet of the SD checkpoint at ``checkpoint``."""
    from peft import LoraConfig, get_peft_model_state_dict

    torch.manual_seed(1)
    unet = UNet2DConditionModel.from_pretrained(checkpoint / "unet")
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v"]))
    state = get_peft_model_state_dict(unet)
    # peft initialises LoRA's B to zero (no effect); random B makes the adapter change pixels.
    state = {k: torch.randn_like(v) * 0.5 for k, v in state.items()}
    folder.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=state)
    return folder / "pytorch_lora_weights.safetensors"
