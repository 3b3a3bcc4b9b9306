"""Writing rows and records: tables for people, JSON and CSV for programs, streamed."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

# A CSV cell starting with one of these is a formula to spreadsheet programs (OWASP's
# "CSV injection"): export writes it with a leading ' so it is shown as text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# What ``status`` and ``workers`` show of each live worker.
WORKER_COLUMNS = [
    "name", "device", "queue", "state", "job_id", "batch_id", "checkpoints", "checkpoint_loads",
    "hostname",
]  # fmt: skip


def duration_text(seconds: float | None) -> str:
    """A duration for people: ``45s``, ``3m12s``, ``2h05m``; empty when unknown."""
    if seconds is None:
        return ""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


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
    out = sys.stdout
    out.write("[")
    for index, row in enumerate(rows):
        out.write(("," if index else "") + "\n" + json.dumps(row))
    out.write("\n]\n")


def write_json_lines(rows: Iterable[dict[str, Any]], out: TextIO | None = None) -> None:
    """Stream rows as JSON lines (to stdout unless ``out`` is given)."""
    out = out or sys.stdout
    for row in rows:
        out.write(json.dumps(row) + "\n")


def write_csv(
    rows: Iterable[dict[str, Any]], columns: Iterable[str], out: TextIO | None = None
) -> None:
    """Stream rows as CSV (to stdout unless ``out`` is given); nested values are written as JSON."""
    writer = csv.DictWriter(out or sys.stdout, fieldnames=list(columns))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(v) for k, v in row.items()})


def _csv_cell(value: Any) -> Any:
    """Nested values as JSON; text a spreadsheet would run as a formula starts with ``'``."""
    if isinstance(value, dict | list):
        value = json.dumps(value)
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def table_of(rows: list[dict[str, Any]], columns: list[str]) -> Table:
    """A rich table of the given columns (hashes shortened to 12 digits)."""
    from rich.table import Table

    table = Table(*columns, box=None, header_style="bold")
    for row in rows:
        table.add_row(*(_short(row.get(c)) for c in columns))
    return table


def stdout_console() -> Console:
    """A rich console on stdout; off a terminal (a pipe, a log) 240 columns, not 80."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 240)


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Print :func:`table_of` the rows."""
    stdout_console().print(table_of(rows, columns))


def _short(value: Any) -> str:
    text = _cell_text(value)
    is_hash = len(text) == 64 and all(c in "0123456789abcdef" for c in text)
    return text[:12] if is_hash else text
