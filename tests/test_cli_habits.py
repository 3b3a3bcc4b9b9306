"""Habits a user of other command-line tools expects: options anywhere, no silent creation,
true paths, full provenance in rows, shared-store permissions, a live status."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from reprogrid.cli import main
from tests.conftest import Cli

SPEC = ["--prompt", "a fox", "--seeds", "0-1", "--steps", "2", "--width", "64", "--height", "64"]


@pytest.fixture
def ran(cli: Cli) -> Cli:
    result = cli("run", *SPEC)
    assert result.exit_code == 0, result.output
    return cli


def _invoke(*args: str, cwd: Path):
    old = Path.cwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(main, list(args), env={"REPROGRID_THREADS": "1"})
    finally:
        os.chdir(old)


def test_db_and_store_work_after_the_subcommand(ran: Cli, tmp_path: Path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = _invoke(
        "query", "--db", ran.db_url, "--store", str(ran.store), "--format", "json", cwd=elsewhere
    )
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)) == 2
    assert not (elsewhere / "reprogrid.db").exists()


@pytest.mark.parametrize(
    "command",
    [["status"], ["query"], ["show", "1"], ["export", "1"], ["workers"], ["cancel", "1"],
     ["retry", "1"]],
)  # fmt: skip
def test_a_command_on_existing_jobs_refuses_a_database_that_does_not_exist(tmp_path: Path, command):
    result = _invoke(*command, cwd=tmp_path)
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: db: no database at {tmp_path / 'reprogrid.db'}")
    assert not (tmp_path / "reprogrid.db").exists()


def test_printed_paths_are_where_the_image_was_written_whatever_the_current_store(
    ran: Cli, tmp_path
):
    moved = Cli(ran.db_url, tmp_path / "some-other-store", tmp_path)
    rows = json.loads(moved("query", "--format", "json").output)
    assert all(Path(row["path"]).is_file() for row in rows)
    assert all(Path(row["path"]).is_relative_to(ran.store) for row in rows)
    shown = json.loads(moved("show", "1", "--format", "json").output)
    exported = moved("export", "1", "--format", "jsonl").output.splitlines()
    assert shown["path"] == rows[0]["path"] == json.loads(exported[0])["path"]


def test_query_and_export_rows_carry_the_device_and_library_versions(ran: Cli):
    (row, _) = json.loads(ran("query", "--format", "json").output)
    exported = json.loads(ran("export", "1", "--format", "jsonl").output.splitlines()[0])
    for fields in (row, exported):
        assert fields["torch"].startswith("2.") and fields["diffusers"] and fields["transformers"]
        assert fields["python"].count(".") == 2
    assert row["device"] and exported["device_name"] == row["device"]


def test_store_files_and_folders_follow_the_umask(ran: Cli):
    mask = os.umask(0)
    os.umask(mask)
    (row, _) = json.loads(ran("query", "--format", "json").output)
    png = Path(row["path"])
    assert stat.S_IMODE(png.stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE(png.parent.stat().st_mode) == 0o777 & ~mask


def test_status_watch_of_a_finished_job_draws_once_and_returns(ran: Cli):
    result = ran("status", "1", "--watch", "--interval", "0.2")
    assert result.exit_code == 0, result.output
    assert result.output.count("job_id") == 1 and " done " in result.output


def test_status_watch_refuses_json(ran: Cli):
    result = ran("status", "--watch", "--format", "json")
    assert result.exit_code == 2 and "watch:" in result.output


def test_grid_reads_the_images_of_a_store_moved_since_under_the_current_store(ran: Cli, tmp_path):
    from tests.review.images import find, pixels

    (row, _) = json.loads(ran("query", "--format", "json").output)
    image = pixels(Path(row["path"]))
    moved = ran.store.rename(tmp_path / "moved-store")
    sheet = tmp_path / "sheet.png"
    result = Cli(ran.db_url, moved, tmp_path)("grid", "1", "-o", str(sheet))
    assert result.exit_code == 0, result.output
    assert len(find(pixels(sheet), image)) == 1
