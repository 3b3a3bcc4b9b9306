"""Seed lists: parsing ``"0-99,200,300-309"`` and writing them back compactly.

Seeds are unsigned 64-bit integers, the range ``torch.Generator.manual_seed``
accepts without remapping.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_SEED = 2**64 - 1


class SeedError(ValueError):
    """A seed or seed range is malformed or out of range."""


def parse_seeds(value: str | int | Iterable[int | str]) -> list[int]:
    """Turn a range string, an int, or a list of ints/ranges into a list of seeds.

    Order is kept as written and duplicates are refused: a duplicated seed
    would make two identical cells.
    """
    if isinstance(value, bool):
        raise SeedError(f"expected integers or ranges, got {value!r}")
    if isinstance(value, int):
        parts: list[int | str] = [value]
    elif isinstance(value, str):
        parts = [p for p in value.split(",")]
    else:
        parts = list(value)
    seeds: list[int] = []
    for part in parts:
        seeds.extend(_parse_part(part))
    if not seeds:
        raise SeedError("no seeds given")
    if len(set(seeds)) != len(seeds):
        raise SeedError("a seed is listed twice")
    return seeds


def _parse_part(part: int | str) -> range | list[int]:
    if isinstance(part, bool) or not isinstance(part, int | str):
        raise SeedError(f"expected integers or ranges, got {part!r}")
    if isinstance(part, int):
        return [_check(part)]
    text = part.strip()
    start, sep, end = text.partition("-")
    try:
        numbers = [int(text)] if not sep else [int(start), int(end)]
    except ValueError:
        raise SeedError(f"malformed seed or range {text!r}") from None
    if not sep:
        return [_check(numbers[0])]
    first, last = _check(numbers[0]), _check(numbers[1])
    if first > last:
        raise SeedError(f"range {text!r} runs backwards")
    return range(first, last + 1)


def _check(seed: int) -> int:
    if not 0 <= seed <= MAX_SEED:
        raise SeedError(f"seed {seed} is outside 0..2**64-1")
    return seed


def format_seeds(seeds: Iterable[int]) -> str:
    """Write seeds back as the shortest range string that parses to the same list."""
    runs: list[list[int]] = []
    for seed in seeds:
        if runs and seed == runs[-1][1] + 1:
            runs[-1][1] = seed
        else:
            runs.append([seed, seed])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
