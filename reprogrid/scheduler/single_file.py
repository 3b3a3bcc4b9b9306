"""Single-file checkpoints (A1111, Civitai): one ``.safetensors`` file read with a diffusers config.

A single file holds the weights of a whole Stable Diffusion checkpoint in the
original LDM layout (``model.diffusion_model.*``, ``first_stage_model.*``,
``cond_stage_model.*``) and no configs. diffusers' ``from_single_file`` converts
it into a pipeline given ``config``: a local diffusers pipeline folder of the
same architecture, which gives every component's config, the tokenizer, the
sampler config and the weights of any component the file does not hold.
reprogrid ships no family configs, so a spec names one (``config``), and the
worker loads with ``local_files_only=True``: never a download.

Everything here is torch-free: the file's tensor names and shapes come from its
safetensors header (8 bytes of length, then JSON), never from its weights. That
is enough to refuse, when the spec is validated, a file whose tensors do not fit
the config's UNet, VAE or text encoder, and to say which components the file
replaces (their weights in the config folder then set no pixel and are not part
of the checkpoint's identity).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

SINGLE_FILE_SUFFIX = ".safetensors"
# A file named with one of these is meant as a single-file checkpoint.
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft", ".gguf")
MAX_HEADER_BYTES = 100 * 2**20
# Prefixes of each component's tensors in an LDM single file (SD 1.x/2.x, SDXL).
DENOISER_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
# The tensor whose presence makes diffusers convert a CLIP text encoder from the file
# (diffusers.loaders.single_file_utils.CHECKPOINT_KEY_NAMES and is_clip_model_in_single_file).
CLIP_KEYS = (
    "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight",
    "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight",
    "text_encoders.clip_l.transformer.text_model.embeddings.position_embedding.weight",
    "cond_stage_model.model.token_embedding.weight",
    "conditioner.embedders.1.model.token_embedding.weight",
    "conditioner.embedders.0.model.token_embedding.weight",
    "text_encoders.clip_g.transformer.text_model.embeddings.position_embedding.weight",
)
CLIP_CLASSES = ("CLIPTextModel", "CLIPTextModelWithProjection")
T5_KEY = "text_encoders.t5xxl.transformer.shared.weight"
# Model classes diffusers always converts from the single file (FromOriginalModelMixin)
# that reprogrid checks against the file's header.
CHECKED_MODELS = ("UNet2DConditionModel", "AutoencoderKL")
# Components from_single_file never loads (diffusers' SINGLE_FILE_OPTIONAL_COMPONENTS).
SKIPPED_COMPONENTS = ("safety_checker",)


class SingleFileError(ValueError):
    """The single file cannot run with its config; the message says why, in one line."""


def is_single_file(model: str) -> bool:
    """A model reference that names one weights file rather than a folder or a hub id."""
    return model.lower().endswith(SINGLE_FILE_SUFFIXES) or Path(model).expanduser().is_file()


def read_header(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape, from the safetensors header of ``path`` (no weight is read)."""
    name = str(path)
    try:
        with path.open("rb") as stream:
            start = stream.read(8)
            if len(start) < 8:
                raise SingleFileError(f"{name!r} is not a safetensors file (too short)")
            (length,) = struct.unpack("<Q", start)
            if length > MAX_HEADER_BYTES:
                raise SingleFileError(f"{name!r} is not a safetensors file (header too large)")
            header = json.loads(stream.read(length).decode("utf-8"))
    except OSError as exc:
        raise SingleFileError(f"cannot read {name!r}: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SingleFileError(f"{name!r} is not a safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise SingleFileError(f"{name!r} is not a safetensors file (unreadable header)")
    return {
        key: list(value.get("shape", []))
        for key, value in header.items()
        if key != "__metadata__" and isinstance(value, dict)
    }


def components(index: dict[str, Any]) -> dict[str, str]:
    """Component name -> class name of a pipeline's ``model_index.json``."""
    return {
        name: entry[1]
        for name, entry in index.items()
        if not name.startswith("_")
        and isinstance(entry, list)
        and len(entry) == 2
        and isinstance(entry[1], str)
    }


def replaced_components(index: dict[str, Any], keys: dict[str, list[int]]) -> set[str]:
    """The components whose weights ``from_single_file`` takes from the file, not the folder.

    Those it does not load at all (the safety checker) are included: their
    weights set no pixel either.
    """
    return {
        name
        for name, class_name in components(index).items()
        if name in SKIPPED_COMPONENTS or _from_file(class_name, keys)
    }


def _from_file(class_name: str, keys: dict[str, list[int]]) -> bool:
    """Whether diffusers builds a component of this class from the single file's weights."""
    if class_name in CLIP_CLASSES:
        return any(key in keys for key in CLIP_KEYS)
    if class_name == "T5EncoderModel":
        return T5_KEY in keys
    return class_name in CHECKED_MODELS or class_name.endswith("Transformer2DModel")


def check_fits(
    model: str, config: str, folder: Path, index: dict[str, Any], keys: dict[str, list[int]]
) -> None:
    """Raise SingleFileError when the file's tensors do not fit the config's architecture.

    Only UNet pipelines (SD 1.x/2.x, SDXL) are single files here: the UNet's
    first and last convolutions and its number of input blocks, and the VAE's
    first convolution and number of down blocks, are compared with the configs.
    """
    parts = components(index)
    if "unet" not in parts:
        raise SingleFileError(
            f"{model}: single files run with UNet pipelines here (SD 1.x/2.x, SDXL);"
            f" config {config} is {index.get('_class_name')}, give its diffusers folder as model"
        )
    unet = _config(folder / "unet")
    if not any(key.startswith(DENOISER_PREFIX) for key in keys):
        raise SingleFileError(
            f"{model} holds no UNet ({DENOISER_PREFIX}*): not an SD checkpoint in LDM layout"
        )
    channels = unet["block_out_channels"]
    in_kernel, out_kernel = unet.get("conv_in_kernel", 3), unet.get("conv_out_kernel", 3)
    layers = unet["layers_per_block"]
    per_block = layers if isinstance(layers, list) else [layers] * len(channels)
    expected = {
        f"{DENOISER_PREFIX}input_blocks.0.0.weight": [
            channels[0],
            unet["in_channels"],
            in_kernel,
            in_kernel,
        ],
        f"{DENOISER_PREFIX}out.2.weight": [
            unet["out_channels"],
            channels[0],
            out_kernel,
            out_kernel,
        ],
    }
    if parts.get("vae") == "AutoencoderKL":
        vae = _config(folder / "vae")
        expected[f"{VAE_PREFIX}encoder.conv_in.weight"] = [
            vae["block_out_channels"][0],
            vae["in_channels"],
            3,
            3,
        ]
    for key, shape in expected.items():
        if key not in keys:
            raise SingleFileError(f"{model} has no {key}: it does not fit config {config}")
        if keys[key] != shape:
            raise SingleFileError(
                f"{model} does not fit config {config}: {key} has shape {keys[key]},"
                f" the config needs {shape}"
            )
    counts = {
        "UNet input blocks": (
            _count(keys, f"{DENOISER_PREFIX}input_blocks."),
            1 + sum(per_block) + len(channels) - 1,
        ),
    }
    if parts.get("vae") == "AutoencoderKL":
        counts["VAE down blocks"] = (
            _count(keys, f"{VAE_PREFIX}encoder.down."),
            len(_config(folder / "vae")["block_out_channels"]),
        )
    for what, (found, needed) in counts.items():
        if found != needed:
            raise SingleFileError(
                f"{model} does not fit config {config}: {found} {what}, the config has {needed}"
            )
    attention = sorted(
        sum(per_block[:i]) + i + j + 1
        for i, kind in enumerate(unet["down_block_types"])
        if "CrossAttn" in kind
        for j in range(per_block[i])
    )
    found = sorted(
        {
            int(key[len(prefix) :].split(".", 1)[0])
            for key in keys
            if key.startswith(prefix := f"{DENOISER_PREFIX}input_blocks.")
            and key[len(prefix) :].split(".", 2)[1:2] == ["1"]
        }
    )
    if found != attention:
        raise SingleFileError(
            f"{model} does not fit config {config}: attention in UNet input blocks {found},"
            f" the config has it in {attention}"
        )
    _check_widths(model, config, folder, parts, keys, unet)


def _check_widths(
    model: str,
    config: str,
    folder: Path,
    parts: dict[str, str],
    keys: dict[str, list[int]],
    unet: dict[str, Any],
) -> None:
    """The UNet's cross-attention width and an SD 1.x CLIP text encoder's vocabulary and width."""
    cross = unet.get("cross_attention_dim")
    for key, shape in keys.items():
        if key.startswith(DENOISER_PREFIX) and key.endswith("attn2.to_k.weight"):
            if isinstance(cross, int) and shape[-1:] != [cross]:
                raise SingleFileError(
                    f"{model} does not fit config {config}: its UNet attends to {shape[-1:]}"
                    f"-wide text embeddings, the config's to {cross}"
                )
            break
    token_key = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
    if parts.get("text_encoder") in CLIP_CLASSES and token_key in keys:
        text = _config(folder / "text_encoder")
        needed = [text.get("vocab_size"), text.get("hidden_size")]
        if keys[token_key] != needed:
            raise SingleFileError(
                f"{model} does not fit config {config}: {token_key} has shape"
                f" {keys[token_key]}, the config needs {needed}"
            )


def _count(keys: dict[str, list[int]], prefix: str) -> int:
    """How many numbered blocks ``prefix<n>.`` the keys hold."""
    numbers = {
        int(rest.split(".", 1)[0])
        for key in keys
        if key.startswith(prefix) and (rest := key[len(prefix) :]).split(".", 1)[0].isdigit()
    }
    return len(numbers)


def _config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
