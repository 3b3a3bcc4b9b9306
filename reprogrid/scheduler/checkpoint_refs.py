"""What a spec's ``model`` names, found without loading torch.

A model is ``builtin:NAME`` (shipped in ``reprogrid/builtin``), a local
directory written by ``save_pretrained``, or a hub id whose files are in the
local Hugging Face cache. Reading its JSON configs is enough to know the kind
of pipeline, its default sampler and its default image size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from reprogrid.families import CheckpointConfigs, Family, default_size, family_for

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "builtin"
BUILTIN_PREFIX = "builtin:"
DENOISER_FOLDERS = ("unet", "transformer")


class CheckpointNotFound(ValueError):
    """The model names nothing that exists on this machine."""


@dataclass(frozen=True)
class CheckpointRef:
    """A model reference resolved to a local directory and read from its configs."""

    model: str
    revision: str | None
    path: Path
    pipeline_class: str
    default_sampler: str | None
    default_width: int | None
    default_height: int | None
    train_timesteps: int | None = None  # the sampler config's num_train_timesteps
    configs: CheckpointConfigs = field(
        default_factory=lambda: CheckpointConfigs({}, {}, {}), compare=False
    )

    @property
    def family(self) -> Family:
        """The pipeline family this checkpoint runs as (see reprogrid.families)."""
        return family_for(self.pipeline_class)

    @property
    def unconditional(self) -> bool:
        """True for pipelines that take no prompt (DDPM, DDIM)."""
        return not self.family.conditional


def builtin_names() -> list[str]:
    """Names of the checkpoints shipped with reprogrid, e.g. ``tiny``."""
    return sorted(p.name for p in BUILTIN_DIR.iterdir() if (p / "model_index.json").exists())


def looks_like_path(model: str) -> bool:
    """A model string meant as a directory rather than a hub id."""
    return model.startswith(("/", ".", "~")) or model.count("/") > 1 or "\\" in model


def resolve_checkpoint(model: str, revision: str | None = None) -> CheckpointRef:
    """Find the model's directory on this machine and read its configs.

    For a hub id the returned ``revision`` is the snapshot's commit hash.
    """
    path, pinned = _locate(model, revision)
    return read_checkpoint(model, pinned, path)


def locate_checkpoint(model: str, revision: str | None) -> Path:
    """The local directory holding the model's ``model_index.json``."""
    return _locate(model, revision)[0]


def _locate(model: str, revision: str | None) -> tuple[Path, str | None]:
    """The model's directory and its revision, pinned to a commit for hub ids."""
    if model.startswith(BUILTIN_PREFIX):
        name = model.removeprefix(BUILTIN_PREFIX)
        if name not in builtin_names():
            known = ", ".join(BUILTIN_PREFIX + n for n in builtin_names())
            raise CheckpointNotFound(f"unknown built-in checkpoint {model!r} (known: {known})")
        return BUILTIN_DIR / name, revision
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise CheckpointNotFound(
                f"{model!r} has no model_index.json (not a diffusers pipeline)"
            )
        return path.resolve(), revision
    if looks_like_path(model):
        raise CheckpointNotFound(f"no such directory {model!r}")
    snapshot = _hub_cache_dir(model, revision)
    return snapshot, snapshot.name  # huggingface_hub names each snapshot folder for its commit


def _hub_cache_dir(model: str, revision: str | None) -> Path:
    """The snapshot folder of ``model`` at ``revision`` (a ref or a commit) in the HF cache."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(model, "model_index.json", revision=revision)
    if isinstance(found, str):
        return Path(found).parent
    if revision is None:
        raise CheckpointNotFound(
            f"{model!r} is neither a directory nor in the local Hugging Face cache"
            f" (download it first: hf download {model})"
        )
    raise CheckpointNotFound(
        f"{model!r} at revision {revision} is not in the local Hugging Face cache"
        f" (download it first: hf download {model} --revision {revision})"
    )


def has_safety_checker(path: Path) -> bool:
    """True when the pipeline in ``path`` names a safety checker component."""
    component = _read_json(path / "model_index.json").get("safety_checker")
    return isinstance(component, list) and component[-1] is not None


def read_checkpoint(model: str, revision: str | None, path: Path) -> CheckpointRef:
    """Read pipeline class, default sampler, default size and timesteps from ``path``."""
    configs = CheckpointConfigs(
        index=_read_json(path / "model_index.json"),
        sampler=_read_json(path / "scheduler" / "scheduler_config.json"),
        denoisers={
            name: config
            for name in DENOISER_FOLDERS
            if (config := _read_json(path / name / "config.json"))
        },
        vae=_read_json(path / "vae" / "config.json"),
    )
    pipeline_class = configs.index.get("_class_name", "DiffusionPipeline")
    size = default_size(family_for(pipeline_class), configs)
    return CheckpointRef(
        model=model,
        revision=revision,
        path=path,
        pipeline_class=pipeline_class,
        default_sampler=configs.sampler.get("_class_name"),
        default_width=size,
        default_height=size,
        train_timesteps=configs.sampler.get("num_train_timesteps"),
        configs=configs,
    )


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))
