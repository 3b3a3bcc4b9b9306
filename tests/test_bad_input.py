"""Bad input and unusable databases: one line naming the cause, never a traceback.

Exit code 2 for input the user can fix in the command, 1 for a database that
cannot be used.
"""

from __future__ import annotations

import csv
import io
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Cli

from reprogrid.config import Settings
from reprogrid.models import DatabaseUnavailable, open_database


def one_line_error(result, exit_code: int) -> str:
    assert result.exit_code == exit_code, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("Error: ")
    return result.output


def test_a_plain_path_in_reprogrid_db_is_a_sqlite_file(tmp_path: Path):
    settings = Settings.from_env({"REPROGRID_DB": str(tmp_path / "x.db")})
    assert settings.db_url == f"sqlite:///{tmp_path / 'x.db'}"
    open_database(settings.db_url).dispose()
    assert (tmp_path / "x.db").exists()


def test_a_damaged_database_is_one_line(tmp_path: Path):
    (tmp_path / "bad.db").write_bytes(b"not a database" * 1000)
    cli = Cli(str(tmp_path / "bad.db"), tmp_path / "store", tmp_path)
    assert "file is not a database" in one_line_error(cli("status"), 1)


def test_a_database_of_a_newer_schema_is_refused_in_one_line(tmp_path: Path):
    path = tmp_path / "newer.db"
    open_database(f"sqlite:///{path}").dispose()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999'")
    cli = Cli(str(path), tmp_path / "store", tmp_path)
    assert "(revision 9999) is newer" in one_line_error(cli("status"), 1)


def test_a_refused_postgresql_login_is_one_line_with_the_password_hidden():
    with pytest.raises(DatabaseUnavailable) as caught:
        open_database("postgresql://no_such_role:secret@127.0.0.1:5432/test")
    assert "secret" not in str(caught.value) and "\n" not in str(caught.value)


def test_export_into_a_missing_folder_is_bad_input(cli, tiny_spec: Path, tmp_path: Path):
    assert cli("run", str(tiny_spec), "--seeds", "0", "--steps", "1").exit_code == 0
    result = cli("export", "1", "-o", str(tmp_path / "no" / "such" / "out.csv"))
    assert "output: cannot write" in one_line_error(result, 2)


def test_csv_export_neutralises_cells_a_spreadsheet_would_run(cli, tmp_path: Path):
    formula = '=HYPERLINK("http://x","y")'
    run = cli("run", "--prompt", formula, "--prompt", "@x", "--seeds", "0", "--steps", "1")
    assert run.exit_code == 0, run.output
    rows = list(csv.DictReader(io.StringIO(cli("export", "1", "--format", "csv").output)))
    assert sorted(row["prompt"] for row in rows) == ['\'=HYPERLINK("http://x","y")', "'@x"]


def test_a_name_longer_than_its_column_is_refused_naming_the_field(cli):
    result = cli("run", "--name", "n" * 300, "--prompt", "a fox")
    assert one_line_error(result, 2) == "Error: name: at most 200 characters, got 300\n"


def test_a_billion_seeds_are_refused_by_the_command_in_one_line(tmp_path: Path):
    command = ["run", "--prompt", "a fox", "--seeds", "0-18446744073709551615"]
    result = subprocess.run(
        [sys.executable, "-m", "reprogrid", "--db", str(tmp_path / "x.db"), *command],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("Error: seeds: the grid has 18446744073709551616 cells")
    assert result.stderr.count("\n") == 1
