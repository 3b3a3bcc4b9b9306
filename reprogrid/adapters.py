"""LoRA adapters: what a spec's ``adapters`` names, resolved and hashed without torch.

A spec lists adapters as a path (a ``.safetensors`` file, or a folder holding
one, as diffusers' ``save_lora_weights`` writes it) and a scale. The recipe
records each as ``{"path", "scale", "sha256"}``: the file's absolute path and
the SHA-256 of its bytes at submission, so the record names the exact weights,
and a worker refuses a file whose bytes changed since (``AdapterChanged``).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LORA_FILE = "pytorch_lora_weights.safetensors"  # the name save_lora_weights writes
_CHUNK = 8 * 1024 * 1024


class AdapterNotFound(ValueError):
    """An adapter path names no LoRA file."""


class AdapterChanged(RuntimeError):
    """An adapter file's bytes are not those the recipe recorded."""


def resolve_adapter_file(path: str, base_dir: Path) -> Path:
    """The ``.safetensors`` file a spec's adapter path names."""
    found = (base_dir / path).expanduser().resolve()
    if found.is_dir():
        files = sorted(found.glob("*.safetensors"))
        preferred = [f for f in files if f.name == LORA_FILE] or files
        if len(preferred) != 1:
            raise AdapterNotFound(f"{path!r} holds {len(files)} .safetensors files, not one")
        found = preferred[0]
    if not found.is_file():
        raise AdapterNotFound(f"no such file or folder {path!r}")
    if found.suffix != ".safetensors":
        raise AdapterNotFound(f"{path!r} is not a .safetensors file")
    return found


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def changed_adapters(adapters: Sequence[dict[str, Any]]) -> list[str]:
    """Paths of recorded adapters whose file is gone or holds other bytes now."""
    changed = []
    for adapter in adapters:
        path = Path(adapter["path"])
        if not path.is_file() or file_sha256(path) != adapter["sha256"]:
            changed.append(adapter["path"])
    return changed


def check_unchanged(adapters: Sequence[dict[str, Any]]) -> None:
    """Raise :class:`AdapterChanged` naming every adapter file that changed since the record."""
    changed = changed_adapters(adapters)
    if changed:
        raise AdapterChanged(f"adapters: changed since the record: {', '.join(changed)}")


@functools.lru_cache(maxsize=64)
def a1111_lora_hash(path: str, sha256: str) -> str:
    """The short hash A1111 and Civitai know a LoRA file by (``Lora hashes``, AutoV3).

    The ``sshs_model_hash`` its safetensors metadata names, else the SHA-256 of the
    file after its safetensors header (A1111's ``addnet_hash_safetensors``); its
    first 12 hex digits. ``sha256``, the whole file's, keys the cache: a changed
    file is read again.
    """
    with open(path, "rb") as file:
        header_length = int.from_bytes(file.read(8), "little")
        header = json.loads(file.read(header_length) or b"{}")
        recorded = header.get("__metadata__", {}).get("sshs_model_hash")
        if recorded:
            return recorded[:12]
        digest = hashlib.sha256()
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]
