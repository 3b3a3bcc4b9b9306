"""Print the machine and every result row as one Markdown table (the end of bench/run.sh).

python -m bench.report --seconds 812 bench-work/results/*.json
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
from importlib.metadata import version
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.common import POSTGRES_ADMIN, read_rows, table


def machine() -> list[str]:
    """Lines describing this machine and the versions measured."""
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        cpu = next(
            (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
            platform.processor(),
        )
    with open("/proc/meminfo", encoding="utf-8") as meminfo:
        memory_kib = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    packages = ", ".join(
        f"{name} {version(name)}"
        for name in ("torch", "diffusers", "transformers", "sqlalchemy", "psycopg", "pillow")
    )
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores, {memory_kib / 2**20:.0f} GiB memory",
        f"- load average at the end (1, 5, 15 min): {load}",
        f"- {platform.platform()}, Python {platform.python_version()}",
        f"- {packages}",
        f"- SQLite {sqlite3.sqlite_version}, {postgres_version()}",
    ]


def postgres_version() -> str:
    """The PostgreSQL server's version, or why it is unknown."""
    try:
        engine = create_engine(make_url(POSTGRES_ADMIN).set(drivername="postgresql+psycopg"))
        with engine.connect() as connection:
            return "PostgreSQL " + connection.execute(text("SHOW server_version")).scalar_one()
    except Exception as exc:  # the table is still worth printing without it
        return f"PostgreSQL unreachable ({type(exc).__name__})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+")
    parser.add_argument("--seconds", type=float, help="wall time of the whole run")
    args = parser.parse_args()
    rows = [row for path in args.results for row in read_rows(path)]
    print()
    print("\n".join(machine()))
    if args.seconds is not None:
        print(f"- whole run: {args.seconds / 60:.1f} min")
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
