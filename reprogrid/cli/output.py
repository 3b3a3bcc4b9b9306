"""Printing rows and records: tables for people that fit the terminal, JSON for programs."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

# What ``status`` and ``workers`` show of each live worker.
WORKER_COLUMNS = [
    "name", "device", "queue", "state", "job_id", "batch_id", "checkpoints", "checkpoint_loads",
    "hostname",
]  # fmt: skip
# Left out first, in this order, where a terminal is too narrow for all of them.
WORKER_DROP_FIRST = ["hostname", "checkpoint_loads", "batch_id", "queue", "device"]


# Columns whose text is long by nature (prompts, paths, errors): they wrap in a narrow
# terminal, while every other column keeps its values whole.
WRAPPING_COLUMNS = frozenset(
    {"name", "model", "prompt", "params", "path", "error", "eta", "checkpoints", "hostname"}
    | {"differs_in", "checkpoint_changes", "call_differences", "broken"}
)
MIN_WRAPPED_WIDTH = 10


def duration_text(seconds: float | None) -> str:
    """A duration for people: ``45s``, ``3m12s``, ``2h05m``; empty when unknown."""
    if seconds is None:
        return ""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def rate_text(images_per_second: float | None) -> str:
    """A rate as every command prints it: ``1.23`` (images per second); empty when unknown."""
    return "" if images_per_second is None else f"{images_per_second:.2f}"


def text_lines(value: Any, indent: str = "") -> Iterator[str]:
    """A nested record as indented ``key: value`` lines."""
    for key, item in value.items():
        if isinstance(item, dict) and item:
            yield f"{indent}{key}:"
            yield from text_lines(item, indent + "  ")
        elif isinstance(item, list) and item and isinstance(item[0], dict):
            yield f"{indent}{key}:"
            for entry in item:
                yield from text_lines(entry, indent + "  - ")
        else:
            yield f"{indent}{key}: {_cell_text(item)}"


def _cell_text(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value)
    return "" if value is None else str(value)


def write_json_array(rows: Iterable[dict[str, Any]]) -> None:
    """Stream rows as one JSON array, without holding them all in memory."""
    from reprogrid.review.export import json_default

    out = sys.stdout
    out.write("[")
    for index, row in enumerate(rows):
        out.write(("," if index else "") + "\n" + json.dumps(row, default=json_default))
    out.write("\n]\n")


def json_text(value: Any) -> str:
    """``value`` as indented JSON, times as ISO 8601."""
    from reprogrid.review.export import json_default

    return json.dumps(value, indent=2, default=json_default)


def table_of(
    rows: list[dict[str, Any]],
    columns: list[str],
    drop_first: Sequence[str] = (),
    width: int | None = None,
) -> Table:
    """A rich table of the given columns that fits ``width`` (the console's by default).

    Short values (ids, counts, statuses, hashes shortened to 12 digits) are never
    cut: long text (prompts, paths, errors) wraps, and while the table is still too
    wide the columns of ``drop_first`` are left out in that order, named in a caption.
    """
    from rich.table import Table

    cells = [{c: _short(row.get(c)) for c in columns} for row in rows]
    width = width or stdout_console().width
    shown, dropped = list(columns), []
    for column in drop_first:
        if _least_width(cells, shown) <= width:
            break
        shown.remove(column)
        dropped.append(column)
    caption = None
    if dropped:
        caption = f"left out to fit {width} columns: {', '.join(dropped)} (--format json has all)"
    table = Table(box=None, header_style="bold", caption=caption, caption_justify="left")
    for column in shown:
        wraps = column in WRAPPING_COLUMNS
        table.add_column(column, no_wrap=not wraps, overflow="fold" if wraps else "ellipsis")
    for row in cells:
        table.add_row(*(row[c] for c in shown))
    return table


def _least_width(cells: list[dict[str, str]], columns: list[str]) -> int:
    """The narrowest the table of ``columns`` can be drawn with no short value cut:
    whole values in the short columns, ``MIN_WRAPPED_WIDTH`` in each wrapping one, and
    one space either side of every column."""
    total = 0
    for column in columns:
        longest = max((len(row[column]) for row in cells), default=0)
        whole = max(len(column), longest)
        total += 2 + (min(whole, MIN_WRAPPED_WIDTH) if column in WRAPPING_COLUMNS else whole)
    return total


def no_color() -> bool:
    """Whether ``NO_COLOR`` is set (to anything but empty): then no escape codes at all,
    not even bold (https://no-color.org)."""
    return bool(os.environ.get("NO_COLOR"))


def stdout_console() -> Console:
    """A rich console on stdout; off a terminal (a pipe, a log) ``COLUMNS`` or 240
    columns wide, not 80."""
    return console(sys.stdout)


def console(stream: TextIO) -> Console:
    """A rich console on ``stream`` (stdout or stderr) that honours ``NO_COLOR``."""
    from rich.console import Console

    width = None if stream.isatty() else _columns() or 240
    return Console(
        file=stream, width=width, color_system=None if no_color() else "auto", highlight=False
    )


def _columns() -> int | None:
    value = os.environ.get("COLUMNS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def print_table(
    rows: list[dict[str, Any]], columns: list[str], drop_first: Sequence[str] = ()
) -> None:
    """Print :func:`table_of` the rows."""
    stdout_console().print(table_of(rows, columns, drop_first))


def _short(value: Any) -> str:
    text = _cell_text(value)
    is_hash = len(text) == 64 and all(c in "0123456789abcdef" for c in text)
    return text[:12] if is_hash else text
