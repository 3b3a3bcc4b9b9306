"""What a spec's ``model`` names, found without loading torch.

A model is ``builtin:NAME`` (shipped in ``reprogrid/builtin``), a local
directory written by ``save_pretrained``, or a hub id whose files are in the
local Hugging Face cache. Reading its JSON configs is enough to know the kind
of pipeline, its default sampler and its default image size.

A folder is only taken when it is complete: every component ``model_index.json``
names has its folder, its config (``config.json`` for a model, the scheduler's,
tokenizer's or processor's own config otherwise) and, for a model, a weights
file (every shard a ``*.index.json`` lists). A partial copy or download is
refused when the spec is validated, not discovered by a worker at run time.

A model may also be one ``.safetensors`` file in the original LDM layout (A1111,
Civitai), read with ``config``: a diffusers folder of the same architecture
(``reprogrid.scheduler.single_file``). Its ref's ``path`` is then the config
folder, where every config is read, and ``file`` the single file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from reprogrid.families import CheckpointConfigs, Family, default_size, family_for
from reprogrid.scheduler import single_file

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "builtin"
BUILTIN_PREFIX = "builtin:"
DENOISER_FOLDERS = ("unet", "transformer")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".msgpack", ".pt", ".pth", ".ckpt", ".gguf")
# The config a component that is not a model keeps, by a part of its class name.
OTHER_CONFIGS = {
    "Scheduler": ("scheduler_config.json",),
    "Tokenizer": ("tokenizer_config.json", "tokenizer.json"),
    "Processor": ("preprocessor_config.json",),
    "FeatureExtractor": ("preprocessor_config.json",),
}


class CheckpointNotFound(ValueError):
    """The model names nothing that exists on this machine."""


class CheckpointIncomplete(CheckpointNotFound):
    """The model's folder lacks a component's config or weights: it cannot load."""


class ConfigNotFound(CheckpointNotFound):
    """A single file's ``config`` is missing or names no diffusers pipeline folder."""


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
    # A single-file checkpoint: the file, and its config as the spec names it
    # (``path`` is then the config's folder).
    file: Path | None = None
    config: str | None = None
    # Components whose weights the single file holds (their folder's weights are unused).
    replaced: frozenset[str] = frozenset()

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


def resolve_checkpoint(
    model: str, revision: str | None = None, config: str | None = None
) -> CheckpointRef:
    """Find the model's directory on this machine and read its configs.

    For a hub id the returned ``revision`` is the snapshot's commit hash. A
    single file is read with ``config`` (:func:`resolve_single_file`).
    """
    if single_file.is_single_file(model):
        return resolve_single_file(model, revision, config)
    path, pinned = _locate(model, revision)
    check_complete(model, path)
    return read_checkpoint(model, pinned, path)


def resolve_single_file(model: str, revision: str | None, config: str | None) -> CheckpointRef:
    """A single ``.safetensors`` checkpoint, read with the diffusers folder ``config`` names.

    Raises CheckpointNotFound, in one line, for a missing file, another format,
    no config, a config that is no complete diffusers pipeline, or a file whose
    tensors do not fit the config's architecture.
    """
    path = Path(model).expanduser()
    if not path.is_file():
        raise CheckpointNotFound(f"no such file {model!r}")
    if path.suffix.lower() != single_file.SINGLE_FILE_SUFFIX:
        convert = f" (convert a {path.suffix} file to safetensors first)" if path.suffix else ""
        raise CheckpointNotFound(
            f"{model!r}: single-file checkpoints are read as .safetensors only{convert}"
        )
    if config is None:
        raise ConfigNotFound(
            f"{model!r} is a single file: set config to a diffusers pipeline folder of the same"
            " architecture (reprogrid ships no bundled family configs)"
        )
    if single_file.is_single_file(config):
        raise ConfigNotFound(f"{config!r} is a file, not a diffusers pipeline folder")
    try:
        folder, _ = _locate(config, None)
    except CheckpointNotFound as exc:
        raise ConfigNotFound(str(exc)) from None
    try:
        keys = single_file.read_header(path)
        index = _read_json(folder / "model_index.json")
        single_file.check_fits(model, config, folder, index, keys)
    except single_file.SingleFileError as exc:
        raise CheckpointNotFound(str(exc)) from None
    replaced = frozenset(single_file.replaced_components(index, keys))
    try:
        check_complete(config, folder, replaced)
    except CheckpointIncomplete as exc:
        raise ConfigNotFound(str(exc)) from None
    ref = read_checkpoint(model, revision, folder)
    return replace(ref, file=path.resolve(), config=config, replaced=replaced)


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


def check_complete(model: str, path: Path, replaced: frozenset[str] | None = None) -> None:
    """Raise CheckpointIncomplete naming each component of ``path`` that cannot load.

    For the config of a single file, ``replaced`` names the components the file
    holds the weights of: they need only their config (and those diffusers does
    not load from a single file, nothing).
    """
    index = _read_json(path / "model_index.json")
    skipped = single_file.SKIPPED_COMPONENTS if replaced is not None else ()
    problems = [
        problem
        for name, entry in sorted(index.items())
        if _is_component(name, entry)
        and name not in skipped
        and (problem := _component_problem(path / name, entry[1], name in (replaced or ())))
    ]
    if problems:
        raise CheckpointIncomplete(
            f"{model!r} is incomplete: {'; '.join(problems)} (copy or download it again)"
        )


def _is_component(name: str, entry: object) -> bool:
    """A ``model_index.json`` entry that names a component to load: ``[library, class]``."""
    return (
        not name.startswith("_")
        and isinstance(entry, list)
        and len(entry) == 2
        and all(isinstance(part, str) for part in entry)
    )


def _component_problem(folder: Path, class_name: str, replaced: bool = False) -> str | None:
    """What keeps the component in ``folder`` from loading, or None (``replaced``: from
    a single file, so only its config is needed)."""
    if not folder.is_dir():
        return f"{folder.name}/ is missing"
    configs = next((c for part, c in OTHER_CONFIGS.items() if part in class_name), None)
    if configs is not None:
        found = any((folder / config).is_file() for config in configs)
        return None if found else f"{folder.name}/{configs[0]} is missing"
    if not (folder / "config.json").is_file():
        return f"{folder.name}/config.json is missing"
    return None if replaced else _weights_problem(folder)


def _weights_problem(folder: Path) -> str | None:
    """None when ``folder`` holds weights, and every shard its indexes list."""
    for index in folder.glob("*.index.json"):
        shards = set(_read_json(index).get("weight_map", {}).values())
        if missing := sorted(s for s in shards if not (folder / s).is_file()):
            return f"{folder.name}/{missing[0]} is missing ({index.name} lists it)"
    if any(p.suffix in WEIGHT_SUFFIXES and p.is_file() for p in folder.iterdir()):
        return None
    return f"{folder.name}/ holds no weights file"


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
