"""Single-file checkpoints for tests: a diffusers SD 1.x folder written as one LDM file.

Civitai and the A1111 web UI keep a Stable Diffusion checkpoint as one
``.safetensors`` file in the original LDM layout: ``model.diffusion_model.*``
(the UNet), ``first_stage_model.*`` (the VAE) and ``cond_stage_model.transformer.*``
(the CLIP text encoder). No such file can be downloaded here, so
:func:`write_single_file` makes one from a diffusers folder: the inverse of
diffusers' ``convert_ldm_unet_checkpoint``, ``convert_ldm_vae_checkpoint`` and
CLIP text-encoder conversion, as diffusers' own
``scripts/convert_diffusers_to_original_stable_diffusion.py`` does for SD 1.x,
with the block and layer counts read from the folder's configs instead of SD
1.5's fixed four blocks of two layers. ``tests/test_single_file.py`` proves it
right: diffusers loads the file back into exactly the folder's tensors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

# (original LDM, diffusers) names, as in diffusers' conversion script.
UNET_NAMES = [
    ("time_embed.0.weight", "time_embedding.linear_1.weight"),
    ("time_embed.0.bias", "time_embedding.linear_1.bias"),
    ("time_embed.2.weight", "time_embedding.linear_2.weight"),
    ("time_embed.2.bias", "time_embedding.linear_2.bias"),
    ("input_blocks.0.0.weight", "conv_in.weight"),
    ("input_blocks.0.0.bias", "conv_in.bias"),
    ("out.0.weight", "conv_norm_out.weight"),
    ("out.0.bias", "conv_norm_out.bias"),
    ("out.2.weight", "conv_out.weight"),
    ("out.2.bias", "conv_out.bias"),
]
UNET_RESNET_PARTS = [
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2"),
    ("emb_layers.1", "time_emb_proj"),
    ("skip_connection", "conv_shortcut"),
]
VAE_ATTENTION_PARTS = [
    ("norm.", "group_norm."),
    ("q.", "to_q."),
    ("k.", "to_k."),
    ("v.", "to_v."),
    ("proj_out.", "to_out.0."),
]


def unet_prefixes(config: dict[str, Any]) -> list[tuple[str, str]]:
    """(LDM, diffusers) prefixes of a UNet2DConditionModel's blocks, from its config."""
    blocks = len(config["block_out_channels"])
    layers = config["layers_per_block"]
    down_attention = ["CrossAttn" in t for t in config["down_block_types"]]
    up_attention = ["CrossAttn" in t for t in config["up_block_types"]]
    prefixes = []
    for i in range(blocks):
        for j in range(layers):
            ldm = f"input_blocks.{(layers + 1) * i + j + 1}"
            prefixes.append((f"{ldm}.0.", f"down_blocks.{i}.resnets.{j}."))
            if down_attention[i]:
                prefixes.append((f"{ldm}.1.", f"down_blocks.{i}.attentions.{j}."))
        for j in range(layers + 1):
            ldm = f"output_blocks.{(layers + 1) * i + j}"
            prefixes.append((f"{ldm}.0.", f"up_blocks.{i}.resnets.{j}."))
            if up_attention[i]:
                prefixes.append((f"{ldm}.1.", f"up_blocks.{i}.attentions.{j}."))
        if i < blocks - 1:
            downsample = f"input_blocks.{(layers + 1) * (i + 1)}.0.op."
            prefixes.append((downsample, f"down_blocks.{i}.downsamplers.0.conv."))
            upsample = f"output_blocks.{(layers + 1) * i + layers}.{2 if up_attention[i] else 1}."
            prefixes.append((upsample, f"up_blocks.{i}.upsamplers.0."))
    prefixes.append(("middle_block.1.", "mid_block.attentions.0."))
    prefixes += [(f"middle_block.{2 * j}.", f"mid_block.resnets.{j}.") for j in range(2)]
    return prefixes


def unet_to_ldm(state: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A diffusers UNet's state dict under the original SD names."""
    prefixes = unet_prefixes(config)
    renamed = {}
    for key, tensor in state.items():
        name = dict((hf, ldm) for ldm, hf in UNET_NAMES).get(key, key)
        if "resnets" in name:
            for ldm, hf in UNET_RESNET_PARTS:
                name = name.replace(hf, ldm)
        for ldm, hf in prefixes:
            name = name.replace(hf, ldm)
        renamed[name] = tensor
    return renamed


def vae_to_ldm(state: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A diffusers AutoencoderKL's state dict under the original SD names."""
    blocks = len(config["block_out_channels"])
    layers = config["layers_per_block"]
    parts = [
        ("nin_shortcut", "conv_shortcut"),
        ("norm_out", "conv_norm_out"),
        ("mid.attn_1.", "mid_block.attentions.0."),
    ]
    for i in range(blocks):
        for j in range(layers):
            parts.append((f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}."))
        if i < blocks - 1:
            parts.append((f"down.{i}.downsample.", f"down_blocks.{i}.downsamplers.0."))
            parts.append((f"up.{blocks - 1 - i}.upsample.", f"up_blocks.{i}.upsamplers.0."))
        for j in range(layers + 1):
            parts.append(
                (f"decoder.up.{blocks - 1 - i}.block.{j}.", f"decoder.up_blocks.{i}.resnets.{j}.")
            )
    parts += [(f"mid.block_{i + 1}.", f"mid_block.resnets.{i}.") for i in range(2)]
    renamed = {}
    for key, tensor in state.items():
        name = key
        for ldm, hf in parts:
            name = name.replace(hf, ldm)
        if "attentions" in key:
            for ldm, hf in VAE_ATTENTION_PARTS:
                name = name.replace(hf, ldm)
            if name.endswith(".weight") and tensor.ndim == 2:  # a linear layer was a 1x1 conv
                tensor = tensor.reshape(*tensor.shape, 1, 1)
        renamed[name] = tensor
    return renamed


def ldm_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """The SD 1.x pipeline in ``folder`` as one LDM-layout state dict."""

    def part(name: str, weights: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        config = json.loads((folder / name / "config.json").read_text(encoding="utf-8"))
        return load_file(folder / name / weights), config

    unet, unet_config = part("unet", "diffusion_pytorch_model.safetensors")
    vae, vae_config = part("vae", "diffusion_pytorch_model.safetensors")
    text, _ = part("text_encoder", "model.safetensors")
    state = {f"model.diffusion_model.{k}": v for k, v in unet_to_ldm(unet, unet_config).items()}
    state |= {f"first_stage_model.{k}": v for k, v in vae_to_ldm(vae, vae_config).items()}
    # transformers 5 saves a CLIPTextModel without its ``text_model.`` prefix; LDM files have it.
    text = {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in text.items()}
    state |= {f"cond_stage_model.transformer.{k}": v for k, v in text.items()}
    return {k: v.contiguous() for k, v in state.items()}


def write_single_file(folder: Path, path: Path) -> Path:
    """Write the SD 1.x pipeline in ``folder`` as one LDM-layout safetensors file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(ldm_state_dict(folder), path)
    return path
