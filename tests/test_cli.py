"""The command line end to end: run, status, query, show, and bad input."""

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import reprogrid
from reprogrid.cli import main
from tests.conftest import Cli

QUERY_FIELDS = {
    "prompt", "seed", "recipe_sha256", "pixel_sha256", "png_sha256", "path",
    "environment_id", "device", "checkpoint_sha256",
}  # fmt: skip


@pytest.fixture
def finished(cli: Cli, tiny_spec: Path) -> list[dict]:
    result = cli("run", str(tiny_spec))
    assert result.exit_code == 0, result.output
    assert "job 1 done: 16 of 16 images" in result.output
    return json.loads(cli("query", "--format", "json").output)


def test_run_records_one_row_per_image_with_hashes_and_provenance(finished):
    assert len(finished) == 16
    assert all(row.keys() >= QUERY_FIELDS and row["status"] == "done" for row in finished)
    assert {(r["prompt"], r["seed"]) for r in finished} == {
        (p, s) for p in ("a red fox", "a blue bird") for s in range(8)
    }
    assert len({r["pixel_sha256"] for r in finished}) == 16


def test_every_png_carries_the_a1111_parameters_and_the_reprogrid_recipe(finished):
    row = finished[9]
    chunks = Image.open(row["path"]).text
    lines = chunks["parameters"].split("\n")
    assert lines[0] == "a blue bird" and len(lines) == 2  # no negative prompt: no line for it
    assert lines[1] == (
        "Steps: 3, Sampler: PLMS, CFG scale: 7.5, Seed: 1, Size: 64x64,"
        f" Model hash: {row['checkpoint_sha256'][:10]}, Model: tiny,"
        f" Version: reprogrid {reprogrid.__version__}"
    )
    metadata = json.loads(chunks["reprogrid"])
    assert metadata["recipe"]["seed"] == 1 and metadata["recipe_sha256"] == row["recipe_sha256"]
    assert metadata["cell_id"] == row["cell_id"]


def test_the_same_spec_in_two_databases_gives_the_same_pixels(finished, tiny_spec, tmp_path):
    other = Cli(f"sqlite:///{tmp_path / 'other.db'}", tmp_path / "other-store", tmp_path)
    assert other("run", str(tiny_spec)).exit_code == 0
    again = json.loads(other("query", "--format", "json").output)
    assert [r["pixel_sha256"] for r in again] == [r["pixel_sha256"] for r in finished]
    assert [r["recipe_sha256"] for r in again] == [r["recipe_sha256"] for r in finished]


def test_query_filters_by_prompt_substring_seed_and_status(cli, finished):
    rows = json.loads(cli("query", "--prompt", "fox", "--seed", "3", "--format", "json").output)
    assert [(r["prompt"], r["seed"]) for r in rows] == [("a red fox", 3)]
    assert json.loads(cli("query", "--status", "failed", "--format", "json").output) == []


def test_query_filters_by_model_and_job(cli, finished):
    assert len(json.loads(cli("query", "--model", "builtin:tiny", "--format", "json").output)) == 16
    assert json.loads(cli("query", "--job", "2", "--format", "json").output) == []


def test_query_csv_has_a_header_and_one_row_per_image(cli, finished):
    rows = list(csv.DictReader(io.StringIO(cli("query", "--format", "csv").output)))
    assert len(rows) == 16 and rows[0]["pixel_sha256"] == finished[0]["pixel_sha256"]


def test_show_finds_an_image_by_hash_prefix_and_prints_the_whole_record(cli, finished):
    target = finished[5]
    record = json.loads(
        cli("show", f"sha:{target['pixel_sha256'][:10]}", "--format", "json").output
    )
    assert record["image_id"] == target["image_id"]
    assert record["batch"] == {
        "batch_id": 2, "cell_ids": [5, 6, 7, 8], "index_in_batch": 1, "batch_size": 4,
    }  # fmt: skip
    assert record["environment"]["threads"] == 1
    assert record["environment"]["torch"].startswith("2.")
    assert "unet/diffusion_pytorch_model.safetensors" in record["checkpoint"]["files"]


def test_show_of_an_unknown_image_fails_with_one_line(cli, finished):
    result = cli("show", "ffffffffff")
    assert result.exit_code == 2 and result.output.count("\n") == 1


def test_status_reports_done_counts(cli, finished):
    (job,) = json.loads(cli("status", "--format", "json").output)
    assert (job["status"], job["cells"], job["done"], job["failed"]) == ("done", 16, 16, 0)


def test_run_takes_every_spec_field_as_a_flag(cli):
    result = cli(
        "run", "--prompt", "a cat", "--seeds", "3,5", "--steps", "2", "--width", "64",
        "--height", "64", "--axis", "guidance_scale=1.0,4", "--json",
    )  # fmt: skip
    summary = json.loads(result.stdout)
    assert (summary["status"], summary["done"]) == ("done", 4)
    rows = json.loads(cli("query", "--format", "json").output)
    assert [(r["seed"], r["params"]) for r in rows] == [
        (3, {"guidance_scale": 1.0}), (5, {"guidance_scale": 1.0}),
        (3, {"guidance_scale": 4.0}), (5, {"guidance_scale": 4.0}),
    ]  # fmt: skip


def test_flags_override_the_spec_file(cli, tiny_spec):
    result = cli("run", str(tiny_spec), "--seeds", "0", "--prompt", "only this", "--json")
    assert json.loads(result.stdout)["cells"] == 1


def test_unconditional_checkpoints_run_without_prompts(cli):
    result = cli("run", "--model", "builtin:tiny-ddpm", "--seeds", "0-1", "--steps", "2", "--json")
    assert json.loads(result.stdout)["done"] == 2


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--prompt", "a fox", "--seeds", "5-2"], "seeds"),
        (["--prompt", "a fox", "--width", "63"], "width"),
        (["--prompt", "a fox", "--steps", "0"], "steps"),
        (["--prompt", "a fox", "--batch-size", "0"], "batch_size"),
        (["--prompt", "a fox", "--sampler", "Nope"], "sampler"),
        (["--prompt", "a fox", "--dtype", "int8"], "dtype"),
        (["--prompt", "a fox", "--model", "/no/such/dir"], "model"),
        (["--prompt", " "], "prompts"),
        (["--seeds", "0"], "prompts"),
        (["--prompt", "a fox", "--axis", "steps"], "--axis"),
        (["--prompt", "a fox", "--seeds", "0-2000000"], "seeds"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_the_field_and_writes_nothing(cli, args, field):
    result = cli("run", *args)
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {field}:") and result.output.count("\n") == 1
    assert not (cli.cwd / "reprogrid.db").exists() and not cli.store.exists()


def test_bad_spec_files_are_refused_before_anything_is_written(cli, tmp_path):
    (tmp_path / "unknown.toml").write_text('prompts = ["a"]\ncolor = "red"\n', encoding="utf-8")
    (tmp_path / "broken.toml").write_text('prompts = ["a"\n', encoding="utf-8")
    for name, field in [("unknown.toml", "color"), ("broken.toml", "spec"), ("nope.toml", "spec")]:
        result = cli("run", str(tmp_path / name))
        assert result.exit_code == 2 and result.output.startswith(f"Error: {field}:"), name
    assert not (tmp_path / "reprogrid.db").exists()


def test_every_command_has_help_with_an_example():
    for name, command in main.commands.items():
        result = subprocess.run(
            [sys.executable, "-m", "reprogrid", name, "--help"], capture_output=True, text=True
        )
        assert result.returncode == 0 and "Example" in result.stdout, name
        assert command.help


def test_status_query_and_show_do_not_import_torch(finished, cli):
    code = (
        "import sys; from reprogrid.cli import main\n"
        "for args in (['status'], ['query'], ['show', '1']):\n"
        "    try: main(['--db', sys.argv[1], '--store', sys.argv[2], *args])\n"
        "    except SystemExit as e: assert e.code == 0, (args, e.code)\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, cli.db_url, str(cli.store)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("False")
