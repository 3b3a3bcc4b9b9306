"""Checkpoint hashing and loading, with a per-process pipeline cache.

A checkpoint's identity is the SHA-256 of its files (weights and configs).
Hashing a multi-GB checkpoint takes a while, so each file's hash is cached
on disk keyed by its path, inode, size, modification time and status-change
time: it is hashed again whenever the file changes. The status-change time
(``st_ctime_ns``) is what ``cp -p``, ``rsync -t``, ``tar x`` and ``touch -r``
cannot set back, so weights swapped in with the old size and modification time
are hashed again. A Hugging Face cache blob named by its SHA-256 (every LFS
file: the weights) is not read at all: its name is its hash.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reprogrid import families
from reprogrid.adapters import check_unchanged, file_sha256
from reprogrid.scheduler.checkpoint_refs import CheckpointRef, resolve_checkpoint

# huggingface_hub names an LFS blob by the SHA-256 of its content.
_HEX64 = re.compile(r"[0-9a-f]{64}")
HASHED_SUFFIXES = {".safetensors", ".bin", ".json", ".txt", ".model", ".ckpt", ".pt", ".pth"}


@dataclass(frozen=True)
class CheckpointIdentity:
    """The hashes that identify a checkpoint's files."""

    model: str
    revision: str | None
    sha256: str
    files: dict[str, str]
    single_file: str | None = None  # the key in ``files`` of a single-file checkpoint's file

    @property
    def a1111_hash(self) -> str:
        """The ``Model hash`` A1111 writes: AutoV2 (a single file's SHA-256, 10 digits); for a
        folder the first 10 digits of :attr:`sha256`."""
        if self.single_file is not None:
            return self.files[self.single_file][:10]
        return self.sha256[:10]


CONFIG_PREFIX = "config/"


def hash_cache_path() -> Path:
    """Where file hashes are cached (``REPROGRID_HASH_CACHE`` or the XDG cache)."""
    if override := os.environ.get("REPROGRID_HASH_CACHE"):
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "reprogrid" / "file-hashes.json"


def checkpoint_identity(ref: CheckpointRef) -> CheckpointIdentity:
    """Hash every weight and config file under the checkpoint's directory.

    For a single file: the file, and its config folder's files under ``config/``
    but for the weights of the components the file replaces.
    """
    cache_path = hash_cache_path()
    cache = _read_cache(cache_path)
    files: dict[str, str] = {}
    prefix = "" if ref.file is None else CONFIG_PREFIX
    for path in sorted(ref.path.rglob("*")):
        if path.is_file() and path.suffix in HASHED_SUFFIXES:
            relative = path.relative_to(ref.path)
            if ref.file is not None and _replaced_weights(relative, ref.replaced):
                continue
            real = path.resolve()  # hub caches hold symlinks into a blob store
            files[prefix + relative.as_posix()] = cached_file_sha256(real, cache)
    if ref.file is not None:
        files[ref.file.name] = cached_file_sha256(ref.file, cache)
    _write_cache(cache_path, cache)
    combined = hashlib.sha256(
        "".join(f"{name}\0{digest}\n" for name, digest in sorted(files.items())).encode()
    ).hexdigest()
    single = None if ref.file is None else ref.file.name
    return CheckpointIdentity(ref.model, ref.revision, combined, files, single)


def _replaced_weights(relative: Path, replaced: frozenset[str]) -> bool:
    """A config folder's weights file of a component the single file replaces."""
    return (
        len(relative.parts) > 1
        and relative.parts[0] in replaced
        and relative.suffix in {".safetensors", ".bin", ".ckpt", ".pt", ".pth"}
    )


def cached_file_sha256(path: Path, cache: dict[str, str]) -> str:
    """A file's SHA-256: its blob name in a hub cache, else cached by what a change moves."""
    if path.parent.name == "blobs" and _HEX64.fullmatch(path.name):
        return path.name
    stat = path.stat()
    key = f"{path}:{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}"
    if key not in cache:
        cache[key] = file_sha256(path)
    return cache[key]


def _read_cache(path: Path) -> dict[str, str]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _write_cache(path: Path, cache: dict[str, str]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(f".{os.getpid()}.tmp")
        temp.write_text(json.dumps(cache), encoding="utf-8")
        temp.replace(path)
    except OSError:
        pass  # a read-only cache only costs re-hashing next time


@dataclass(frozen=True)
class PipelineKey:
    """What a loaded pipeline depends on: one cache entry per distinct key."""

    model: str
    revision: str | None
    dtype: str
    device: str
    safety_checker: bool = True  # False: loaded without the checkpoint's safety checker
    config: str | None = None  # a single file's config folder

    @classmethod
    def for_recipe(cls, recipe: dict[str, Any], device: str) -> PipelineKey:
        """The pipeline a recipe computes with on ``device``."""
        return cls(
            recipe["model"],
            recipe["revision"],
            recipe["dtype"],
            device,
            recipe.get("safety_checker", True),
            recipe.get("config"),
        )


@dataclass
class LoadedCheckpoint:
    """A pipeline in memory, with the identity of the files it came from."""

    pipeline: Any
    identity: CheckpointIdentity
    ref: CheckpointRef
    sampler_config: Any
    _unused_samplers: dict[str, Any] = field(default_factory=dict)
    _ready_samplers: dict[str, Any] = field(default_factory=dict)  # fresh copies, made ahead
    _sampler_lock: threading.Lock = field(default_factory=threading.Lock)
    _adapter_names: dict[str, str] = field(default_factory=dict)  # sha256 -> loaded adapter

    def set_adapters(self, recipe_adapters: list[dict[str, Any]]) -> None:
        """Make exactly the recipe's LoRA adapters active, at their scales.

        Adapters stay loaded, unfused, in the cached pipeline, keyed by the
        SHA-256 of their file (checked against the recipe when loaded): each
        batch activates its own, and a batch with none, or all at scale 0,
        runs with LoRA disabled, so it gets the base checkpoint's pixels exactly.
        """
        if not recipe_adapters and not self._adapter_names:
            return
        for adapter in recipe_adapters:
            if adapter["sha256"] not in self._adapter_names:
                self._load_adapter(adapter)
        active = [a for a in recipe_adapters if a["scale"] != 0]
        if not active:
            self.pipeline.disable_lora()
            return
        self.pipeline.enable_lora()
        self.pipeline.set_adapters(
            [self._adapter_names[a["sha256"]] for a in active],
            adapter_weights=[a["scale"] for a in active],
        )

    def _load_adapter(self, adapter: dict[str, Any]) -> None:
        check_unchanged([adapter])
        name = f"adapter_{adapter['sha256'][:16]}"
        path = Path(adapter["path"])
        self.pipeline.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
        self._adapter_names[adapter["sha256"]] = name

    def set_fresh_sampler(self, sampler: str | None, recipe: dict[str, Any]) -> None:
        """Give the pipeline a new sampler, of class ``sampler`` or the checkpoint's own,
        configured for the checkpoint's family and with the recipe's sampler options.

        A new instance for every batch: samplers keep state between steps, and
        a batch must not depend on what ran before it. The instance is a copy of
        one built by ``from_config`` and never used (copying costs a fifth as
        much), made now or, off the device's time, by ``prepare_sampler``.
        """
        key, unused = self._unused_sampler(sampler, recipe)
        with self._sampler_lock:
            fresh = self._ready_samplers.pop(key, None)
        self.pipeline.scheduler = copy.deepcopy(unused) if fresh is None else fresh

    def prepare_sampler(self, sampler: str | None, recipe: dict[str, Any]) -> None:
        """Make the fresh sampler a later ``set_fresh_sampler`` for this recipe takes (another
        thread does it while the batch before computes)."""
        key, unused = self._unused_sampler(sampler, recipe)
        fresh = copy.deepcopy(unused)
        with self._sampler_lock:
            self._ready_samplers[key] = fresh

    def _unused_sampler(self, sampler: str | None, recipe: dict[str, Any]) -> tuple[str, Any]:
        """The key of the sampler the recipe asks for, and the instance never used."""
        import diffusers

        name = sampler or self.sampler_config["_class_name"]
        config = families.sampler_config(name, self.sampler_config, recipe)
        key = json.dumps([name, config], sort_keys=True, default=str)
        with self._sampler_lock:
            if key not in self._unused_samplers:
                self._unused_samplers[key] = getattr(diffusers, name).from_config(config)
            return key, self._unused_samplers[key]


_loaded: dict[PipelineKey, LoadedCheckpoint] = {}
_lock = threading.Lock()
_loads = 0


def checkpoints_in_memory() -> int:
    """How many pipelines a process keeps (``REPROGRID_CHECKPOINTS_IN_MEMORY``, default 1).

    One by default, as in the A1111 web UI: a GPU rarely holds two large checkpoints.
    """
    return max(1, int(os.environ.get("REPROGRID_CHECKPOINTS_IN_MEMORY", "1")))


def load_checkpoint(
    model: str,
    revision: str | None,
    dtype: str,
    device: str,
    safety_checker: bool = True,
    config: str | None = None,
) -> LoadedCheckpoint:
    """Load (once per process) the pipeline for ``model`` through ``from_pretrained``, or
    a single file (with its ``config`` folder) through ``from_single_file``.

    Loading one more than :func:`checkpoints_in_memory` drops the least lately used.
    """
    return load_pipeline(PipelineKey(model, revision, dtype, device, safety_checker, config))


def load_pipeline(key: PipelineKey) -> LoadedCheckpoint:
    """:func:`load_checkpoint` for a pipeline's key."""
    global _loads
    with _lock:
        if key not in _loaded:
            while len(_loaded) >= checkpoints_in_memory():
                _loaded.pop(next(iter(_loaded)))
            _loaded[key] = _load(key)
            _loads += 1
        _loaded[key] = _loaded.pop(key)  # most lately used last
        return _loaded[key]


def in_memory(key: PipelineKey) -> LoadedCheckpoint | None:
    """The checkpoint :func:`load_pipeline` would give, if it is in memory (None: not
    loaded; nothing is loaded here)."""
    with _lock:
        return _loaded.get(key)


def checkpoint_loads() -> int:
    """How many times this process has loaded a checkpoint."""
    return _loads


def load_current_checkpoint(key: PipelineKey) -> LoadedCheckpoint:
    """:func:`load_pipeline`, loaded again if its files changed since this process loaded it."""
    loaded = load_pipeline(key)
    if checkpoint_identity(loaded.ref).sha256 == loaded.identity.sha256:
        return loaded
    with _lock:
        _loaded.pop(key, None)
    return load_pipeline(key)


def loaded_checkpoints() -> list[LoadedCheckpoint]:
    """Every checkpoint this process holds in memory."""
    return list(_loaded.values())


def _load(key: PipelineKey) -> LoadedCheckpoint:
    import torch
    import transformers
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    # Loading bars and advisory warnings would flood an overnight log, once per worker.
    diffusers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    ref = resolve_checkpoint(key.model, key.revision, key.config)
    # Without its safety checker: the components diffusers' own docs pass to turn it off.
    without_checker = {} if key.safety_checker else {"safety_checker": None}
    if without_checker:
        without_checker["requires_safety_checker"] = False
    if ref.file is not None:
        import diffusers

        # config: a local folder, so diffusers reads it and never downloads.
        pipeline = getattr(diffusers, ref.pipeline_class).from_single_file(
            str(ref.file),
            config=str(ref.path),
            local_files_only=True,
            torch_dtype=getattr(torch, key.dtype),
        )
    else:
        pipeline = DiffusionPipeline.from_pretrained(
            ref.path, dtype=getattr(torch, key.dtype), local_files_only=True, **without_checker
        )
    pipeline.set_progress_bar_config(disable=True)
    pipeline.to(key.device)
    return LoadedCheckpoint(pipeline, checkpoint_identity(ref), ref, pipeline.scheduler.config)
