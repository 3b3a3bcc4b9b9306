"""Every error is one line, no traceback, with consistent exit codes.

2: input the user can fix in the command (a bad option, an unknown job or image);
1: a database that cannot be reached or used, an output that cannot be written.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Cli
from test_bad_input import one_line_error

TINY_RUN = ["run", "--prompt", "a fox", "--seeds", "0-3", "--steps", "1"]
TINY_RUN += ["--width", "32", "--height", "32"]


@pytest.fixture
def finished(cli: Cli) -> Cli:
    assert cli(*TINY_RUN).exit_code == 0
    return cli


def test_export_to_a_full_device_is_one_line_and_exit_1(finished: Cli):
    result = finished("export", "1", "-o", "/dev/full")
    assert "output: cannot write '/dev/full': No space left on device" in one_line_error(result, 1)


def damage_one_page(path: Path, damaged: Path) -> None:
    """A copy of the database with the job table's first page overwritten."""
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page into the file
        (page,) = connection.execute(
            "SELECT rootpage FROM sqlite_master WHERE type = 'table' AND name = 'job'"
        ).fetchone()
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    shutil.copy(path, damaged)
    with damaged.open("r+b") as stream:
        stream.seek((page - 1) * page_size)
        stream.write(b"\xff" * 64)


def test_status_on_a_database_with_a_damaged_page_is_one_line_and_exit_1(
    finished: Cli, tmp_path: Path
):
    damaged = tmp_path / "damaged.db"
    damage_one_page(tmp_path / "reprogrid.db", damaged)
    result = Cli(str(damaged), finished.store, tmp_path)("status")
    assert "database disk image is malformed" in one_line_error(result, 1)


def test_a_database_url_without_its_driver_is_one_line_and_exit_1(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "reprogrid", "--db", "mysql://me:secret@127.0.0.1/x", "status"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "its driver is not installed" in result.stderr and "secret" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("show", "999"),
        ("regenerate", "999"),
        ("status", "999"),
        ("export", "999"),
        ("grid", "999", "-o", "sheet.png"),
        ("verify", "999"),
    ],
)
def test_an_unknown_job_or_image_is_one_line_and_exit_2(finished: Cli, args: tuple[str, ...]):
    assert "no " in one_line_error(finished(*args), 2)
