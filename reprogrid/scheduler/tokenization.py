"""Tokenization at validation: how many tokens each prompt takes, and which are cut.

A text encoder reads at most so many tokens; diffusers' pipelines truncate the
rest silently, so two prompts that differ only past the limit give the same
pixels. Each distinct prompt and negative prompt of a job is tokenized once,
with every tokenizer of the checkpoint (``tokenizer/``, ``tokenizer_2/``,
``tokenizer_3/``), each against its own limit: the tokenizer's
``model_max_length``, or the job's ``max_sequence_length`` where that is lower
(the T5 encoders of SD3, Flux and PixArt).

A tokenizer saved with its ``tokenizer.json`` (what transformers writes for
every fast tokenizer) is read by the ``tokenizers`` package alone: that file
holds the whole pipeline transformers runs (normalizer, pre-tokenizer, model,
special tokens), so the counts are transformers' own, without its import (over
a second of ``submit``). A tokenizer without one, or whose config sets an
option transformers applies on top of the file when it loads
(``LOAD_TIME_OPTIONS``), goes through transformers' tokenizer class. Neither
imports torch.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TOKENIZER_FOLDERS = ("tokenizer", "tokenizer_2", "tokenizer_3")
PROMPT, NEGATIVE_PROMPT = "prompt", "negative_prompt"
_SHOWN = 3  # prompts named in the warning line; the rest are counted
# Texts tokenized per call: a tokenizer's encodings of a million prompts would take
# gigabytes, and only their lengths are kept.
TOKENIZE_CHUNK = 10_000


class TokenizerError(ValueError):
    """A tokenizer of the checkpoint cannot be loaded (the pipeline could not load it either)."""


@dataclass(frozen=True, slots=True)
class TokenCount:
    """One text's token counts per tokenizer folder, and the folders that cut it."""

    role: str  # PROMPT or NEGATIVE_PROMPT
    text: str
    tokens: dict[str, int]
    cut_by: tuple[str, ...]

    @property
    def truncated(self) -> bool:
        """True when some text encoder sees only the first part of the text."""
        return bool(self.cut_by)


@dataclass(frozen=True)
class TokenReport:
    """The token counts of a job's distinct prompts and negative prompts."""

    limits: dict[str, int]  # tokenizer folder -> tokens its text encoder reads
    counts: list[TokenCount] = field(default_factory=list)

    def merged(self, other: TokenReport) -> TokenReport:
        """The counts of the same texts under two checkpoints' tokenizers, as one report:
        per tokenizer folder the larger count and the smaller limit, cut where either cuts.
        A cell on a checkpoint axis may so be marked cut by the other checkpoint's
        tokenizer; never the reverse."""
        both = [self.limits, other.limits]
        limits = {
            name: min(limits[name] for limits in both if name in limits)
            for name in dict.fromkeys([*self.limits, *other.limits])
        }
        counts = []
        for mine, theirs in zip(self.counts, other.counts, strict=True):
            names = dict.fromkeys([*mine.tokens, *theirs.tokens])
            tokens = {n: max(mine.tokens.get(n, 0), theirs.tokens.get(n, 0)) for n in names}
            cut_by = tuple(n for n in names if n in mine.cut_by or n in theirs.cut_by)
            counts.append(TokenCount(mine.role, mine.text, tokens, cut_by))
        return TokenReport(limits, counts)

    def cut_texts(self, role: str) -> frozenset[str]:
        """The texts of ``role`` that some text encoder cuts."""
        return frozenset(c.text for c in self.counts if c.role == role and c.truncated)

    def warning(self) -> str | None:
        """One line saying how many prompts will be cut and where; None when none are."""
        cut = [c for c in self.counts if c.truncated]
        if not cut:
            return None
        prompts = sum(c.role == PROMPT for c in cut)
        negatives = len(cut) - prompts
        parts = [f"{prompts} prompt{'s' * (prompts != 1)}"] if prompts else []
        parts += [f"{negatives} negative prompt{'s' * (negatives != 1)}"] if negatives else []
        where = "; ".join(_where(c, self.limits) for c in cut[:_SHOWN])
        more = f"; and {len(cut) - _SHOWN} more" if len(cut) > _SHOWN else ""
        return (
            f"warning: {' and '.join(parts)} will be cut by the text encoder: {where}{more}"
            " (reprogrid query --truncated lists their cells)"
        )


def _where(count: TokenCount, limits: dict[str, int]) -> str:
    text = count.text if len(count.text) <= 40 else count.text[:37] + "..."
    cuts = ", ".join(f"{count.tokens[f]} tokens > {limits[f]} in {f}/" for f in count.cut_by)
    return f"{count.role} {text!r}: {cuts}"


def tokenize_texts(
    checkpoint: Path, texts: list[tuple[str, str]], max_sequence_length: int | None = None
) -> TokenReport | None:
    """Tokenize each distinct (role, text) once with every tokenizer of the checkpoint.

    None when the checkpoint has no tokenizer (an unconditional pipeline).
    """
    counters = {
        name: token_counter(checkpoint / name)
        for name in TOKENIZER_FOLDERS
        if (checkpoint / name / "tokenizer_config.json").is_file()
    }
    if not counters:
        return None
    limits = {name: c.limit(max_sequence_length) for name, c in counters.items()}
    distinct = list(dict.fromkeys(texts))
    lengths = {name: _lengths(counter, distinct) for name, counter in counters.items()}
    counts = []
    for index, (role, text) in enumerate(distinct):
        tokens = {name: lengths[name][index] for name in counters}
        cut_by = tuple(name for name in counters if tokens[name] > limits[name])
        counts.append(TokenCount(role, text, tokens, cut_by))
    return TokenReport(limits, counts)


def _lengths(counter: TokenCounter, texts: list[tuple[str, str]]) -> list[int]:
    """How many tokens each text takes, tokenized ``TOKENIZE_CHUNK`` texts at a time."""
    lengths: list[int] = []
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        lengths += counter.count([text for _, text in texts[start : start + TOKENIZE_CHUNK]])
    return lengths


def spec_texts(spec: Any) -> list[tuple[str, str]]:
    """A JobSpec's (role, text) pairs: its prompts and every negative prompt it sweeps."""
    negatives = spec.axes.get(NEGATIVE_PROMPT, (spec.negative_prompt,))
    pairs = [(PROMPT, p) for p in spec.prompts or ()]
    return pairs + [(NEGATIVE_PROMPT, n) for n in negatives if n]


# Options of tokenizer_config.json that transformers' tokenizer classes apply on top of
# tokenizer.json when they load (rebuilding its post-processor or pre-tokenizer).
LOAD_TIME_OPTIONS = frozenset(
    {"add_bos_token", "add_eos_token", "add_prefix_space", "do_lower_case", "legacy"}
)
# transformers' model_max_length when a tokenizer config names none: no limit.
NO_LIMIT = int(1e30)


@dataclass(frozen=True)
class TokenCounter:
    """One tokenizer folder: how many tokens texts take, and its ``model_max_length``."""

    count: Callable[[list[str]], list[int]]
    model_max_length: int

    def limit(self, max_sequence_length: int | None) -> int:
        """Tokens its text encoder reads: the job's ``max_sequence_length`` where lower."""
        if max_sequence_length is None:
            return self.model_max_length
        return min(self.model_max_length, max_sequence_length)


@functools.cache
def token_counter(folder: Path) -> TokenCounter:
    """The tokenizer saved in ``folder``, read from its ``tokenizer.json`` where that is
    the whole of it, else by the transformers class its config names (loaded once)."""
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    if (folder / "tokenizer.json").is_file() and not LOAD_TIME_OPTIONS & config.keys():
        return _file_counter(folder, config)
    return _transformers_counter(folder, config)


def _file_counter(folder: Path, config: dict[str, Any]) -> TokenCounter:
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    except Exception as exc:  # the tokenizers package raises plain Exceptions
        raise TokenizerError(f"{folder.name}/: tokenizer.json cannot load ({exc})") from None
    tokenizer.no_truncation()  # counting tokens past the limit is the point
    tokenizer.no_padding()

    def count(texts: list[str]) -> list[int]:
        return [len(e.ids) for e in tokenizer.encode_batch_fast(texts, add_special_tokens=True)]

    return TokenCounter(count, int(config.get("model_max_length") or NO_LIMIT))


def _transformers_counter(folder: Path, config: dict[str, Any]) -> TokenCounter:
    import transformers

    name = config.get("tokenizer_class") or "PreTrainedTokenizerFast"
    cls = getattr(transformers, name, None) or getattr(
        transformers, name.removesuffix("Fast"), None
    )
    if cls is None:
        raise TokenizerError(f"{folder.name}/: transformers has no tokenizer class {name!r}")
    try:
        tokenizer = cls.from_pretrained(folder)
    except (OSError, ValueError, ImportError) as exc:
        raise TokenizerError(f"{folder.name}/: {name} cannot load ({exc})") from None
    # Counting tokens past the limit is the point: silence "sequence length is longer".
    tokenizer.deprecation_warnings["sequence-length-is-longer-than-the-specified-maximum"] = True

    def count(texts: list[str]) -> list[int]:
        return list(map(len, tokenizer(texts)["input_ids"]))

    return TokenCounter(count, int(tokenizer.model_max_length))


def tokenize_spec(spec: Any) -> TokenReport | None:
    """:func:`tokenize_texts` for a validated JobSpec's checkpoints and texts.

    With a ``model`` or ``revision`` axis, every checkpoint's tokenizers count,
    merged so that no cut is missed (:meth:`TokenReport.merged`).
    """
    from reprogrid.scheduler.checkpoint_refs import resolve_checkpoint

    if spec.pipeline != "text-to-image":
        return None
    texts, limit = spec_texts(spec), spec.family_fields.get("max_sequence_length")
    models = spec.axes.get("model", (spec.model,))
    revisions = spec.axes.get("revision", (spec.revision,))
    reports = [
        tokenize_texts(resolve_checkpoint(model, revision, spec.config).path, texts, limit)
        for model in models
        for revision in revisions
    ]
    found = [report for report in reports if report is not None]
    return functools.reduce(TokenReport.merged, found) if found else None


def truncated_cells(spec: Any, report: TokenReport | None) -> Callable[[Any], bool | None]:
    """Whether a CellPlan's prompt or negative prompt is cut (None: not tokenized)."""
    if report is None:
        return lambda _cell: None
    prompts, negatives = report.cut_texts(PROMPT), report.cut_texts(NEGATIVE_PROMPT)

    def truncated(cell: Any) -> bool:
        negative = cell.params.get(NEGATIVE_PROMPT, spec.negative_prompt)
        return cell.prompt in prompts or negative in negatives

    return truncated
