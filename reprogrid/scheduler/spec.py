"""Job specs: the TOML file (or CLI flags) a user writes, validated into a JobSpec.

Every check names the field it is about, so a bad spec gets a one-line error
such as ``seeds: range '9-2' runs backwards``. Validation reads the
checkpoint's JSON configs to fill in its default sampler and size; it never
imports torch.
"""

from __future__ import annotations

import math
import re
import stat
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from reprogrid import adapters, families
from reprogrid.a1111 import parse_a1111_sampler
from reprogrid.families import (
    SAMPLER_OPTIONS,
    SCHEDULE_TYPES,
    TIMESTEP_SPACINGS,
    SamplerMismatch,
)
from reprogrid.scheduler.checkpoint_refs import (
    CheckpointNotFound,
    CheckpointRef,
    ConfigNotFound,
    has_safety_checker,
    resolve_checkpoint,
)
from reprogrid.scheduler.seeds import SeedError, SeedRanges, parse_seeds
from reprogrid.scheduler.single_file import is_single_file

# Samplers that refuse more inference steps than the timesteps the checkpoint
# was trained on (tests/test_spec.py checks this list against diffusers).
STEP_LIMITED_SAMPLERS = frozenset(
    {"DDIMScheduler", "DDPMScheduler", "LCMScheduler", "TCDScheduler"}
)
DTYPES = frozenset({"float32", "float16", "bfloat16"})
# The widths of the columns these fields are stored in (models/tables.py).
MAX_NAME_LENGTH = 200
MAX_MODEL_LENGTH = 500
# Recipe fields a user may sweep in [axes], in addition to prompts and seeds.
AXIS_FIELDS = (
    "model",
    "revision",
    "sampler",
    *SAMPLER_OPTIONS,
    "negative_prompt",
    "steps",
    "guidance_scale",
    "distilled_guidance_scale",
    "adapter_scale",
    "width",
    "height",
)
# Recipe fields that only some families have (reprogrid.families.Family.extras).
FAMILY_FIELDS = (
    "distilled_guidance_scale",
    "resolution_binning",
    "clean_caption",
    "max_sequence_length",
)
SPEC_FIELDS = frozenset(
    {
        "name",
        "model",
        "revision",
        "config",
        "sampler",
        "prompts",
        "prompts_file",
        "negative_prompt",
        "seeds",
        "steps",
        "guidance_scale",
        "width",
        "height",
        "dtype",
        "batch_size",
        "batch_invariant",
        "safety_checker",
        "axes",
        *SAMPLER_OPTIONS,
        *FAMILY_FIELDS,
        "adapters",
    }
)


@dataclass(frozen=True)
class SpecLimits:
    """Upper bounds a spec is checked against before anything runs.

    The defaults are generous for every family reprogrid runs; raise them with
    ``REPROGRID_MAX_STEPS``, ``REPROGRID_MAX_IMAGE_SIDE`` and
    ``REPROGRID_MAX_BATCH_SIZE`` (see :class:`reprogrid.config.Settings`).
    """

    max_steps: int = 10_000
    max_image_side: int = 4096
    max_batch_size: int = 64


class SpecError(ValueError):
    """A spec field is missing or has a value reprogrid cannot run."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class JobSpec:
    """A validated job: every default resolved, ready to expand into cells."""

    name: str
    model: str
    revision: str | None
    pipeline: str  # "text-to-image" or "unconditional"
    sampler: str | None
    prompts: tuple[str, ...] | None
    negative_prompt: str
    seeds: SeedRanges
    steps: int
    guidance_scale: float | None
    width: int
    height: int
    dtype: str
    batch_size: int
    batch_invariant: bool
    axes: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    # None for jobs submitted before families: their recipes keep the old fields.
    family: str | None = None
    sampler_options: dict[str, Any] = field(default_factory=dict)
    family_fields: dict[str, Any] = field(default_factory=dict)
    adapters: tuple[dict[str, Any], ...] = ()  # {"path", "scale", "sha256"} (LoRA)
    # A model axis over checkpoints whose own samplers differ, with no sampler
    # set: each model's default sampler (its recipes name it).
    model_samplers: dict[str, str | None] = field(default_factory=dict)
    # whether the checkpoint's safety checker runs; None: the checkpoint has none
    safety_checker: bool | None = None
    # the diffusers folder a single-file model is read with (as written in the spec)
    config: str | None = None

    @property
    def cell_count(self) -> int:
        """How many images the grid holds."""
        axes = math.prod(len(v) for v in self.axes.values())
        return len(self.prompts or [None]) * self.seeds.count * axes

    def to_json(self) -> dict[str, Any]:
        """The spec as stored in the job row (seeds written as ranges)."""
        data = asdict(self)
        data["seeds"] = str(self.seeds)
        data["prompts"] = list(self.prompts) if self.prompts is not None else None
        data["axes"] = {k: list(v) for k, v in self.axes.items()}
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobSpec:
        """Rebuild a spec stored by :meth:`to_json`."""
        values = dict(data)
        values["seeds"] = parse_seeds(values["seeds"])
        if values["prompts"] is not None:
            values["prompts"] = tuple(values["prompts"])
        values["axes"] = {k: tuple(v) for k, v in values["axes"].items()}
        values["adapters"] = tuple(values.get("adapters", ()))
        return cls(**values)


# Input limits: what one spec may hold, refused before it can fill memory.
MAX_SPEC_FILE_BYTES = 16 * 2**20
MAX_PROMPTS_FILE_BYTES = 64 * 2**20
MAX_PROMPT_LENGTH = 10_000  # characters


def read_spec_file(path: Path) -> dict[str, Any]:
    """Parse a TOML spec file into raw fields (not yet validated).

    At most ``MAX_SPEC_FILE_BYTES`` are read; any reason the file cannot be read
    or parsed is one SpecError naming ``spec``.
    """
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_SPEC_FILE_BYTES + 1)
    except FileNotFoundError:
        raise SpecError("spec", f"no such file {str(path)!r}") from None
    except OSError as exc:
        raise SpecError("spec", f"cannot read {str(path)!r}: {exc.strerror}") from None
    if len(data) > MAX_SPEC_FILE_BYTES:
        raise SpecError("spec", f"{str(path)!r} is larger than {_size_text(MAX_SPEC_FILE_BYTES)}")
    try:
        return tomllib.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise SpecError("spec", f"{str(path)!r} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError("spec", f"TOML syntax error in {path.name}: {exc}") from None
    except RecursionError:
        raise SpecError("spec", f"{path.name} nests arrays or tables too deeply") from None


def _size_text(size: int) -> str:
    return f"{size // 2**20} MiB"


def validate_spec(
    raw: Mapping[str, Any],
    max_cells: int,
    base_dir: Path | None = None,
    limits: SpecLimits = SpecLimits(),
) -> JobSpec:
    """Check every field of a raw spec and resolve defaults from the checkpoint.

    ``base_dir`` is where relative ``prompts_file`` paths are read from (the
    spec file's folder); ``max_cells`` caps the grid size and ``limits`` the
    steps, image sides and batch size. With a ``model`` axis, every checkpoint
    must be of one family and agree on the defaults used. Every check takes time
    proportional to the spec, never to the grid it describes.
    """
    unknown = sorted(set(raw) - SPEC_FIELDS)
    if unknown:
        raise SpecError(unknown[0], f"unknown field (known: {', '.join(sorted(SPEC_FIELDS))})")
    raw_axes = raw.get("axes", {})
    if not isinstance(raw_axes, dict):
        raise SpecError("axes", "expected a table of lists, e.g. guidance_scale = [5.0, 7.5]")
    raw, raw_axes = _a1111_samplers(raw, raw_axes)
    checkpoints = _checkpoints(raw, raw_axes)
    checkpoint = checkpoints[0]
    family = checkpoint.family
    pipeline = "unconditional" if checkpoint.unconditional else "text-to-image"
    prompts = _prompts(raw, base_dir or Path.cwd(), checkpoint)
    axes = _axes(raw_axes, checkpoint, limits)
    spec = JobSpec(
        name=_string(raw, "name", "job", MAX_NAME_LENGTH),
        model=checkpoint.model,
        revision=checkpoint.revision,
        pipeline=pipeline,
        sampler=_sampler(raw.get("sampler", checkpoint.default_sampler), "sampler"),
        prompts=prompts,
        negative_prompt=_negative_prompt(raw.get("negative_prompt", ""), "negative_prompt"),
        seeds=_seeds(raw.get("seeds", 0)),
        steps=_bounded_int(raw.get("steps", 20), "steps", limits.max_steps, "REPROGRID_MAX_STEPS"),
        guidance_scale=None
        if checkpoint.unconditional
        else _guidance(raw.get("guidance_scale", family.default_guidance), "guidance_scale"),
        width=_size(raw.get("width", checkpoint.default_width), "width", checkpoint, limits),
        height=_size(raw.get("height", checkpoint.default_height), "height", checkpoint, limits),
        dtype=_dtype(raw.get("dtype", "float32")),
        batch_size=_bounded_int(
            raw.get("batch_size", 4),
            "batch_size",
            limits.max_batch_size,
            "REPROGRID_MAX_BATCH_SIZE",
        ),
        batch_invariant=_bool(raw.get("batch_invariant", False), "batch_invariant"),
        axes=axes,
        family=family.key,
        sampler_options={
            name: _sampler_option(name, raw.get(name), name) for name in SAMPLER_OPTIONS
        },
        family_fields=_family_fields(raw, checkpoint),
        adapters=_adapters(raw.get("adapters", []), base_dir or Path.cwd(), checkpoint),
        safety_checker=_safety_checker(raw, checkpoint),
        config=_config(raw, checkpoints),
    )
    _check_same_defaults(raw, checkpoints)
    if "sampler" not in raw and "sampler" not in spec.axes:
        spec = _with_model_samplers(spec, checkpoints)
    for other in checkpoints:
        _check_samplers(spec, other)
    _check_step_limit(spec, checkpoint)
    _check_negative_prompt(spec, family)
    if "adapter_scale" in spec.axes and not spec.adapters:
        raise SpecError("axes.adapter_scale", "list adapters to sweep their scale")
    if spec.cell_count > max_cells:
        raise SpecError(
            _largest_dimension(spec, raw),
            f"the grid has {spec.cell_count} cells, more than the limit of {max_cells}"
            " (raise it with REPROGRID_MAX_CELLS)",
        )
    return spec


def _checkpoints(raw: Mapping[str, Any], axes: Mapping[str, Any]) -> list[CheckpointRef]:
    """Every checkpoint the job runs: the model (and revision) or the axis values."""
    models = _axis_strings(axes, "model") or [
        _string(raw, "model", "builtin:tiny", MAX_MODEL_LENGTH)
    ]
    revisions = _axis_strings(axes, "revision") or [_optional_string(raw, "revision")]
    config = _optional_string(raw, "config")
    where = "axes.model" if "model" in axes else "model"
    return [_checkpoint(m, r, where, config) for m in models for r in revisions]


def _config(raw: Mapping[str, Any], checkpoints: list[CheckpointRef]) -> str | None:
    """The spec's ``config``, refused unless a model is a single file."""
    config = _optional_string(raw, "config")
    if config is not None and not any(c.file for c in checkpoints):
        raise SpecError(
            "config", "only a single-file model (.safetensors) is read with a config folder"
        )
    return config


def _axis_strings(axes: Mapping[str, Any], name: str) -> list[str] | None:
    values = axes.get(name)
    if values is None:
        return None
    where = f"axes.{name}"
    if not isinstance(values, list) or not values:
        raise SpecError(where, "expected a non-empty list of values")
    for value in values:
        if not isinstance(value, str) or not value.strip():
            raise SpecError(where, f"expected non-empty strings, got {value!r}")
    return values


def _a1111_samplers(
    raw: Mapping[str, Any], axes: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The spec with A1111 sampler names (``DPM++ 2M Karras``, ``Euler a``) read as the
    diffusers class and the sampler options they mean."""
    raw = dict(raw)
    name = raw.get("sampler")
    parsed = parse_a1111_sampler(name) if isinstance(name, str) else None
    if parsed is not None:
        raw["sampler"], options = parsed
        for option, value in options.items():
            if raw.get(option, value) != value:
                raise SpecError(
                    option, f"{raw[option]!r} contradicts sampler {name!r}, which means {value!r}"
                )
            raw[option] = value
    values = axes.get("sampler")
    if isinstance(values, list):
        axes = {**axes, "sampler": [_a1111_axis_sampler(v) for v in values]}
    return raw, axes


def _a1111_axis_sampler(value: Any) -> Any:
    """A sampler axis value: an A1111 name that means a class alone becomes that class."""
    parsed = parse_a1111_sampler(value) if isinstance(value, str) else None
    if parsed is None:
        return value
    sampler, options = parsed
    if options.get("schedule_type") or (
        options and options != {"algorithm_type": "dpmsolver++", "solver_order": 2}
    ):
        set_here = ", ".join(f"{k} {v}" for k, v in options.items())
        raise SpecError(
            "axes.sampler",
            f"{value!r} also sets {set_here}: sweep {sampler} with those options as their own"
            " fields or axes",
        )
    return sampler


def _check_same_defaults(raw: Mapping[str, Any], checkpoints: list[CheckpointRef]) -> None:
    """Checkpoints on one model axis share one family, and every default the spec relies on."""
    first = checkpoints[0]
    for other in checkpoints[1:]:
        if other.family.key != first.family.key:
            raise SpecError(
                "axes.model",
                f"{first.model} is family {first.family.key} but {other.model} is"
                f" {other.family.key}; a model axis sweeps checkpoints of one family",
            )
        for name in ("width", "height"):
            mine, theirs = getattr(first, f"default_{name}"), getattr(other, f"default_{name}")
            if name not in raw and mine != theirs:
                raise SpecError(
                    "axes.model",
                    f"{first.model} and {other.model} differ in default {name}"
                    f" ({mine} vs {theirs}); set {name}",
                )


def _with_model_samplers(spec: JobSpec, checkpoints: list[CheckpointRef]) -> JobSpec:
    """Each model runs with its own default sampler where the models' defaults differ."""
    samplers = {c.model: c.default_sampler for c in checkpoints}
    if len(set(samplers.values())) < 2:
        return spec
    if any(len({c.default_sampler for c in checkpoints if c.model == m}) > 1 for m in samplers):
        raise SpecError(
            "axes.revision", "the revisions of one model differ in default sampler; set sampler"
        )
    return replace(spec, model_samplers=samplers)


def spec_sampler(spec: JobSpec, model: str) -> str | None:
    """The sampler the job's recipes name for ``model``."""
    return spec.model_samplers.get(model, spec.sampler)


def _check_samplers(spec: JobSpec, checkpoint: CheckpointRef) -> None:
    """Refuse samplers and sampler options that cannot run correctly on the checkpoint."""
    samplers = spec.axes.get("sampler", (spec_sampler(spec, checkpoint.model),))
    for sampler in samplers:
        for name in SAMPLER_OPTIONS:
            for value in spec.axes.get(name, (spec.sampler_options[name],)):
                try:
                    families.check_sampler(
                        sampler, {name: value}, checkpoint.family, checkpoint.configs
                    )
                except SamplerMismatch as exc:
                    field_name, message = str(exc).split(": ", 1)
                    where = f"axes.{field_name}" if field_name in spec.axes else field_name
                    raise SpecError(where, f"{message} ({checkpoint.model})") from None


def _check_negative_prompt(spec: JobSpec, family: families.Family) -> None:
    """A negative prompt only acts through classifier-free guidance: refuse it where no
    cell of the grid runs guidance by the family's own rule (cells at 1 run without)."""
    negatives = [n for n in spec.axes.get("negative_prompt", (spec.negative_prompt,)) if n]
    if spec.guidance_scale is None or not negatives:
        return
    where = "axes.negative_prompt" if "negative_prompt" in spec.axes else "negative_prompt"
    if not family.negative_prompt:
        raise SpecError(where, f"family {family.key} pipelines take no negative prompt")
    scales = spec.axes.get("guidance_scale", (spec.guidance_scale,))
    if not any(families.guidance_applies(family, scale) for scale in scales):
        rule = (
            f"above {family.cfg_above:g}"
            if family.cfg_above is not None
            else "never (its guidance is distilled)"
        )
        raise SpecError(
            where,
            f"has no effect with guidance_scale {max(scales):g} (family {family.key} applies"
            f" a negative prompt only with classifier-free guidance, which runs {rule})",
        )


def _adapters(value: Any, base_dir: Path, checkpoint: CheckpointRef) -> tuple[dict, ...]:
    """LoRA adapters: each a path (scale 1) or a table {path, scale}, resolved and hashed."""
    if not isinstance(value, list):
        raise SpecError("adapters", "expected a list of paths or {path, scale} tables")
    if value and not checkpoint.family.lora:
        raise SpecError("adapters", f"family {checkpoint.family.key} takes no LoRA adapters")
    found = []
    for index, entry in enumerate(value):
        where = f"adapters[{index}]"
        table = {"path": entry} if isinstance(entry, str) else entry
        # A recipe's adapters (refine) also carry the sha256 of the file they recorded.
        if not isinstance(table, dict) or set(table) - {"path", "scale", "sha256"}:
            raise SpecError(where, f"expected a path or {{path, scale}}, got {entry!r}")
        try:
            path = adapters.resolve_adapter_file(_string(table, "path", ""), base_dir)
        except adapters.AdapterNotFound as exc:
            raise SpecError(where, str(exc)) from None
        digest = adapters.file_sha256(path)
        if table.get("sha256", digest) != digest:
            raise SpecError(where, f"{str(path)!r} changed since it was recorded")
        scale = _number(table.get("scale", 1.0), where)
        found.append({"path": str(path), "scale": scale, "sha256": digest})
    if len({a["path"] for a in found}) != len(found):
        raise SpecError("adapters", "an adapter is listed twice")
    return tuple(found)


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SpecError(name, f"expected a number, got {value!r}")
    return float(value)


def _family_fields(raw: Mapping[str, Any], checkpoint: CheckpointRef) -> dict[str, Any]:
    """The family's extra fields (e.g. PixArt's resolution_binning), checked, with defaults."""
    family = checkpoint.family
    defaults = families.extra_defaults(family, checkpoint.configs)
    for name in FAMILY_FIELDS:
        if name in raw and name not in defaults:
            raise SpecError(name, f"family {family.key} ({checkpoint.model}) has no {name}")
    if (
        raw.get("distilled_guidance_scale") is not None
        and defaults.get("distilled_guidance_scale") is None
    ):
        raise SpecError(
            "distilled_guidance_scale",
            f"{checkpoint.model} has no guidance embedding (schnell-style); it takes none",
        )
    values = {name: _family_value(name, raw.get(name, d), name) for name, d in defaults.items()}
    for name, value in values.items():
        if value is not None and (
            why := families.check_family_field(family, checkpoint.configs, name, value)
        ):
            raise SpecError(name, why)
    return values


def _family_value(name: str, value: Any, where: str) -> Any:
    if value is None:
        return None
    if name == "distilled_guidance_scale":
        return _guidance(value, where)
    if name == "max_sequence_length":
        return _positive_int(value, where)
    return _bool(value, where)


def _sampler_option(name: str, value: Any, where: str) -> Any:
    """A sampler option's value, checked by kind (whether the sampler has it comes later)."""
    if value is None:
        return None
    if name == "solver_order":
        value = _positive_int(value, where)
        if value > 3:
            raise SpecError(where, f"must be 1, 2 or 3, got {value}")
        return value
    known = {"schedule_type": SCHEDULE_TYPES, "timestep_spacing": TIMESTEP_SPACINGS}.get(name)
    if known is not None and value not in known:
        raise SpecError(where, f"unknown value {value!r} (known: {', '.join(known)})")
    if not isinstance(value, str) or not value:
        raise SpecError(where, f"expected a name, got {value!r}")
    return value


def _largest_dimension(spec: JobSpec, raw: Mapping[str, Any]) -> str:
    """The field that contributes most cells: the one an over-limit error names."""
    prompts_field = "prompts_file" if "prompts_file" in raw else "prompts"
    sizes = {"seeds": spec.seeds.count, prompts_field: len(spec.prompts or ())}
    sizes |= {f"axes.{name}": len(values) for name, values in spec.axes.items()}
    return max(sizes, key=lambda name: sizes[name])


def _check_step_limit(spec: JobSpec, checkpoint: CheckpointRef) -> None:
    """Refuse step counts that the job's samplers would only refuse at run time."""
    limit = checkpoint.train_timesteps
    samplers = spec.axes.get("sampler", (spec_sampler(spec, checkpoint.model),))
    limited = sorted(s for s in samplers if s in STEP_LIMITED_SAMPLERS)
    if limit is None or not limited:
        return
    where = "axes.steps" if "steps" in spec.axes else "steps"
    too_many = max(spec.axes.get("steps", (spec.steps,)))
    if too_many > limit:
        raise SpecError(
            where,
            f"at most {limit} with {limited[0]} ({checkpoint.model}'s sampler was trained"
            f" on {limit} timesteps), got {too_many}",
        )


def _safety_checker(raw: Mapping[str, Any], checkpoint: CheckpointRef) -> bool | None:
    """Whether to run the checkpoint's safety checker (on unless turned off); None without one."""
    wanted = _bool(raw.get("safety_checker", True), "safety_checker")
    # diffusers' from_single_file loads no safety checker, whatever the config folder holds.
    return wanted if checkpoint.file is None and has_safety_checker(checkpoint.path) else None


def _checkpoint(
    model: str, revision: str | None, where: str = "model", config: str | None = None
) -> CheckpointRef:
    if revision is not None and is_single_file(model):
        raise SpecError("revision", f"{model}: a single file has no revision (a hub id has)")
    try:
        checkpoint = resolve_checkpoint(model, revision, config)
    except ConfigNotFound as exc:
        raise SpecError("config", str(exc)) from None
    except CheckpointNotFound as exc:
        raise SpecError(where, str(exc)) from None
    if why := families.not_text_to_image(checkpoint.pipeline_class):
        raise SpecError(where, f"{model}: {why}")
    return checkpoint


def _string(
    raw: Mapping[str, Any], name: str, default: str, max_length: int = MAX_NAME_LENGTH
) -> str:
    value = raw.get(name, default)
    if not isinstance(value, str) or not value.strip():
        raise SpecError(name, f"expected a non-empty string, got {value!r}")
    if len(value) > max_length:
        raise SpecError(name, f"at most {max_length} characters, got {len(value)}")
    _refuse_control_characters(value, name, f"the {name}")
    return value


def _optional_string(raw: Mapping[str, Any], name: str) -> str | None:
    value = raw.get(name)
    return None if value is None else _string(raw, name, "")


def _prompts(
    raw: Mapping[str, Any], base_dir: Path, checkpoint: CheckpointRef
) -> tuple[str, ...] | None:
    if "prompts" in raw and "prompts_file" in raw:
        raise SpecError("prompts_file", "give either prompts or prompts_file, not both")
    if checkpoint.unconditional:
        for name in ("prompts", "prompts_file", "negative_prompt"):
            if raw.get(name):
                raise SpecError(name, f"{checkpoint.model} is unconditional and takes no prompts")
        return None
    if "prompts_file" in raw:
        return _prompts_from_file(raw["prompts_file"], base_dir)
    prompts = raw.get("prompts")
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, list) or not prompts:
        raise SpecError("prompts", "give at least one prompt (prompts or prompts_file)")
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise SpecError("prompts", f"prompt {index + 1} is empty")
        _check_prompt(prompt, "prompts", index + 1)
    return tuple(prompts)


def _check_prompt(prompt: str, name: str, number: int) -> None:
    """Refuse a prompt over ``MAX_PROMPT_LENGTH`` characters or holding control characters."""
    if len(prompt) > MAX_PROMPT_LENGTH:
        raise SpecError(
            name,
            f"prompt {number} has {len(prompt)} characters, more than the limit of"
            f" {MAX_PROMPT_LENGTH}",
        )
    _refuse_control_characters(prompt, name, f"prompt {number}")


def _refuse_control_characters(text: str, name: str, what: str) -> None:
    """Refuse NUL and other control characters (tab and line feed are kept), and a line
    that A1111's infotext would read as the start of the negative prompt.

    PNG text chunks cannot hold NUL. A prompt of several lines is written into
    the infotext as A1111 writes it, and read back the same, unless one of its
    lines starts with ``Negative prompt:``: that one is refused.
    """
    if found := _CONTROL_CHARACTERS.search(text):
        raise SpecError(
            name,
            f"{what} holds the control character U+{ord(found.group()):04X} at position"
            f" {found.start() + 1} (NUL, carriage returns and control characters cannot be"
            " recorded)",
        )
    if found := _NEGATIVE_LINE.search(text):
        raise SpecError(
            name,
            f"{what} has a line starting 'Negative prompt:' at position {found.start() + 2}:"
            " A1111 would read it as the negative prompt",
        )


# Unicode's categories Cc (C0 and C1 controls), Zl and Zp, tab and line feed excepted:
# one regular expression scans a million prompts in a fraction of a second.
_CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_NEGATIVE_LINE = re.compile("\nNegative prompt:")


def _prompts_from_file(value: Any, base_dir: Path) -> tuple[str, ...]:
    """The non-empty lines of a regular UTF-8 file of at most ``MAX_PROMPTS_FILE_BYTES``,
    stripped, each checked as it is read."""
    if not isinstance(value, str) or not value:
        raise SpecError("prompts_file", f"expected a file path, got {value!r}")
    path = (base_dir / value).expanduser()
    try:
        _check_prompts_file(path)
        with path.open(encoding="utf-8-sig") as stream:
            prompts = tuple(_file_prompts(stream))
    except FileNotFoundError:
        raise SpecError("prompts_file", f"no such file {str(path)!r}") from None
    except UnicodeDecodeError:
        raise SpecError("prompts_file", f"{str(path)!r} is not UTF-8 text") from None
    except OSError as exc:
        raise SpecError("prompts_file", f"cannot read {str(path)!r}: {exc.strerror}") from None
    if not prompts:
        raise SpecError("prompts_file", f"{str(path)!r} holds no prompt")
    return prompts


def _check_prompts_file(path: Path) -> None:
    """Refuse what is not a regular file (a FIFO, a device, a folder) or is too large."""
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise SpecError(
            "prompts_file", f"{str(path)!r} is not a regular file (a FIFO, a device, a folder)"
        )
    if info.st_size > MAX_PROMPTS_FILE_BYTES:
        raise SpecError(
            "prompts_file",
            f"{str(path)!r} holds {info.st_size} bytes, more than the limit of"
            f" {_size_text(MAX_PROMPTS_FILE_BYTES)}",
        )


def _file_prompts(lines: Iterable[str]) -> Iterator[str]:
    """Each non-empty line stripped and checked, numbered among the prompts."""
    number = 0
    for line in lines:
        if prompt := line.strip():
            number += 1
            _check_prompt(prompt, "prompts_file", number)
            yield prompt


def _negative_prompt(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise SpecError(name, f"expected a string, got {value!r}")
    if len(value) > MAX_PROMPT_LENGTH:
        raise SpecError(
            name,
            f"the negative prompt has {len(value)} characters, more than the limit of"
            f" {MAX_PROMPT_LENGTH}",
        )
    _refuse_control_characters(value, name, "the negative prompt")
    return value


def _seeds(value: Any) -> SeedRanges:
    try:
        return parse_seeds(value)
    except SeedError as exc:
        raise SpecError("seeds", str(exc)) from None


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(name, f"expected an integer, got {value!r}")
    if value < 1:
        raise SpecError(name, f"must be at least 1, got {value}")
    return value


def _bounded_int(value: Any, name: str, maximum: int, setting: str) -> int:
    value = _positive_int(value, name)
    if value > maximum:
        raise SpecError(name, f"at most {maximum} (raise it with {setting}), got {value}")
    return value


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(name, f"expected true or false, got {value!r}")
    return value


def _guidance(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SpecError(name, f"expected a number, got {value!r}")
    if value < 0:
        raise SpecError(name, f"must not be negative, got {value}")
    return float(value)


def _size(
    value: Any, name: str, checkpoint: CheckpointRef, limits: SpecLimits, where: str = ""
) -> int:
    """Check a width or height; ``where`` names the field in errors if not ``name``."""
    where = where or name
    if value is None:
        raise SpecError(where, f"{checkpoint.model} has no default size; set {name}")
    value = _bounded_int(value, where, limits.max_image_side, "REPROGRID_MAX_IMAGE_SIDE")
    multiple = families.size_multiple(checkpoint.family, checkpoint.configs)
    if value % multiple:
        raise SpecError(where, f"must be a multiple of {multiple}, got {value}")
    default = getattr(checkpoint, f"default_{name}")
    if checkpoint.unconditional and value != default:
        raise SpecError(where, f"{checkpoint.model} makes {default}x{default} images only")
    return value


def _sampler(value: Any, name: str) -> str | None:
    """A sampler name; whether it fits the checkpoint is checked by _check_samplers."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise SpecError(name, f"expected a sampler class name, got {value!r}")
    return value


def _dtype(value: Any) -> str:
    if value not in DTYPES:
        raise SpecError("dtype", f"unknown dtype {value!r} (known: {', '.join(sorted(DTYPES))})")
    return value


def _axes(
    value: dict[str, Any], checkpoint: CheckpointRef, limits: SpecLimits
) -> dict[str, tuple[Any, ...]]:
    axes: dict[str, tuple[Any, ...]] = {}
    for name, values in value.items():
        where = f"axes.{name}"
        if name not in AXIS_FIELDS:
            raise SpecError(where, f"not a sweepable field (sweepable: {', '.join(AXIS_FIELDS)})")
        if not isinstance(values, list) or not values:
            raise SpecError(where, "expected a non-empty list of values")
        checked = tuple(_axis_value(name, v, where, checkpoint, limits) for v in values)
        if len(set(checked)) != len(checked):
            raise SpecError(where, "a value is listed twice")
        axes[name] = checked
    return axes


def _axis_value(
    name: str, value: Any, where: str, checkpoint: CheckpointRef, limits: SpecLimits
) -> Any:
    if checkpoint.unconditional and name in {"negative_prompt", "guidance_scale"}:
        raise SpecError(where, f"{checkpoint.model} is unconditional and takes no {name}")
    if name in {"model", "revision"}:
        return value  # checked by _checkpoints
    if name == "sampler":
        return _sampler(value, where)
    if name in SAMPLER_OPTIONS:
        return _sampler_option(name, value, where)
    if name == "adapter_scale":
        return _number(value, where)
    if name == "distilled_guidance_scale":
        if checkpoint.family.extra(name) is None:
            raise SpecError(where, f"family {checkpoint.family.key} has no {name}")
        return _guidance(value, where)
    if name == "negative_prompt":
        return _negative_prompt(value, where)
    if name == "steps":
        return _bounded_int(value, where, limits.max_steps, "REPROGRID_MAX_STEPS")
    if name == "guidance_scale":
        return _guidance(value, where)
    return _size(value, name, checkpoint, limits, where)
