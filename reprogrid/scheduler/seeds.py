"""Seed lists: parsing ``"0-99,200,300-309"`` and writing them back compactly.

Seeds are unsigned 64-bit integers, the range ``torch.Generator.manual_seed``
accepts without remapping. A seed list is kept as its ranges, never as the
seeds themselves: counting it and checking it for duplicates take time
proportional to the number of ranges, so ``0-18446744073709551615`` is counted
(and refused by the cell limit) as fast as ``0-3``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

MAX_SEED = 2**64 - 1


class SeedError(ValueError):
    """A seed or seed range is malformed or out of range."""


@dataclass(frozen=True)
class SeedRanges:
    """Seeds as inclusive ``(first, last)`` runs, in the order written."""

    runs: tuple[tuple[int, int], ...]

    @property
    def count(self) -> int:
        """How many seeds the runs hold (may exceed ``sys.maxsize``)."""
        return sum(last - first + 1 for first, last in self.runs)

    def __iter__(self) -> Iterator[int]:
        for first, last in self.runs:
            yield from range(first, last + 1)

    def __str__(self) -> str:
        """The shortest range string that parses to the same seeds."""
        merged: list[list[int]] = []
        for first, last in self.runs:
            if merged and first == merged[-1][1] + 1:
                merged[-1][1] = last
            else:
                merged.append([first, last])
        return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in merged)


def parse_seeds(value: str | int | Iterable[int | str]) -> SeedRanges:
    """Turn a range string, an int, or a list of ints/ranges into seed ranges.

    Order is kept as written and overlaps are refused: a duplicated seed
    would make two identical cells.
    """
    if isinstance(value, bool):
        raise SeedError(f"expected integers or ranges, got {value!r}")
    if isinstance(value, int):
        parts: list[int | str] = [value]
    elif isinstance(value, str):
        parts = list(value.split(","))
    else:
        parts = list(value)
    runs = tuple(_parse_part(part) for part in parts)
    if not runs:
        raise SeedError("no seeds given")
    _refuse_overlaps(runs)
    return SeedRanges(runs)


def _refuse_overlaps(runs: tuple[tuple[int, int], ...]) -> None:
    ordered = sorted(runs)
    for (_, last), (first, _) in itertools.pairwise(ordered):
        if first <= last:
            raise SeedError(f"seed {first} is listed twice")


def _parse_part(part: int | str) -> tuple[int, int]:
    if isinstance(part, bool) or not isinstance(part, int | str):
        raise SeedError(f"expected integers or ranges, got {part!r}")
    if isinstance(part, int):
        return _check(part), part
    text = part.strip()
    start, sep, end = text.partition("-")
    try:
        numbers = [int(text)] if not sep else [int(start), int(end)]
    except ValueError:
        raise SeedError(f"malformed seed or range {text[:40]!r}") from None
    if not sep:
        return _check(numbers[0]), numbers[0]
    first, last = _check(numbers[0]), _check(numbers[1])
    if first > last:
        raise SeedError(f"range {text!r} runs backwards")
    return first, last


def _check(seed: int) -> int:
    if not 0 <= seed <= MAX_SEED:
        raise SeedError(f"seed {seed} is outside 0..2**64-1")
    return seed


def format_seeds(seeds: Iterable[int]) -> str:
    """Write seeds back as the shortest range string that parses to the same list."""
    return str(SeedRanges(tuple((seed, seed) for seed in seeds)))
