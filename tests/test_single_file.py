"""Single-file checkpoints: one A1111/Civitai ``.safetensors`` file read with a diffusers config.

The file is builtin:tiny written in the original LDM layout by
``tests/single_file_checkpoints.py`` (once per session); its config is the
builtin:tiny folder. Jobs are 1 prompt x 2 seeds, 32x32, 2 steps, one CPU
thread, through the real command line and the real pipeline.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import Cli
from PIL import Image
from single_file_checkpoints import write_single_file
from sqlalchemy import select
from test_verify import fresh_process

from reprogrid.models import Checkpoint, open_database
from reprogrid.scheduler.checkpoint_refs import BUILTIN_DIR

TINY = BUILTIN_DIR / "tiny"
RECIPE = ["--prompt", "a red fox", "--seeds", "0-1", "--steps", "2"]
RECIPE += ["--width", "32", "--height", "32", "--batch-size", "2"]


@pytest.fixture(scope="session")
def tiny_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """builtin:tiny as one LDM-layout single file."""
    return write_single_file(TINY, tmp_path_factory.mktemp("single") / "tiny_ldm.safetensors")


@pytest.fixture
def own_file(tiny_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the single file this test may change, with a hash cache of its own."""
    monkeypatch.setenv("REPROGRID_HASH_CACHE", str(tmp_path / "hashes.json"))
    return Path(shutil.copy(tiny_file, tmp_path / "mine.safetensors"))


def run(cli: Cli, *flags: str) -> None:
    result = cli("run", *RECIPE, *flags)
    assert result.exit_code == 0, result.output


def images(cli: Cli, job: int) -> list[dict]:
    result = cli("query", "--job", str(job), "--format", "json")
    return sorted(json.loads(result.output), key=lambda row: row["seed"])


def parameters(row: dict) -> dict[str, str]:
    """The settings line of a PNG's ``parameters`` chunk, as ``Key: value`` pairs."""
    line = Image.open(row["path"]).text["parameters"].split("\n")[-1]
    return dict(pair.split(": ", 1) for pair in line.split(", "))


def test_the_converted_file_loads_into_exactly_the_folders_tensors(tiny_file: Path):
    import torch
    from diffusers import StableDiffusionPipeline

    single = StableDiffusionPipeline.from_single_file(
        str(tiny_file), config=str(TINY), local_files_only=True
    )
    folder = StableDiffusionPipeline.from_pretrained(TINY, local_files_only=True)
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(single, name).state_dict(), getattr(folder, name).state_dict()
        assert ours.keys() == theirs.keys(), name
        assert all(torch.equal(ours[key], theirs[key]) for key in ours), name


def test_a_single_file_job_makes_the_folder_checkpoints_pixels(cli: Cli, own_file: Path):
    run(cli, "--model", "builtin:tiny")
    run(cli, "--model", str(own_file), "--config", "builtin:tiny")
    folder, single = images(cli, 1), images(cli, 2)
    assert [r["pixel_sha256"] for r in single] == [r["pixel_sha256"] for r in folder]


def test_verify_in_a_fresh_process_finds_a_single_file_job_identical(cli: Cli, own_file: Path):
    run(cli, "--model", str(own_file), "--config", "builtin:tiny")
    result = fresh_process(cli, "verify", "1", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert {row["verdict"] for row in json.loads(result.stdout)} == {"identical"}


def test_the_png_names_the_file_by_its_stem_and_its_a1111_autov2_hash(cli: Cli, own_file: Path):
    run(cli, "--model", str(own_file), "--config", "builtin:tiny")
    fields = parameters(images(cli, 1)[0])
    assert fields["Model hash"] == hashlib.sha256(own_file.read_bytes()).hexdigest()[:10]
    assert fields["Model"] == "mine"


def test_the_record_holds_the_file_and_the_config_files_that_set_pixels(
    cli: Cli, own_file: Path, sqlite_url: str
):
    run(cli, "--model", str(own_file), "--config", "builtin:tiny")
    db = open_database(sqlite_url)
    with db.sessions() as session:
        checkpoint = session.scalars(select(Checkpoint)).one()
    db.dispose()
    assert checkpoint.model == str(own_file)
    assert checkpoint.files["mine.safetensors"] == hashlib.sha256(own_file.read_bytes()).hexdigest()
    # configs and tokenizer of the config folder, not the weights the file replaces
    assert {
        "config/model_index.json",
        "config/scheduler/scheduler_config.json",
        "config/tokenizer/tokenizer.json",
        "config/unet/config.json",
        "config/vae/config.json",
        "config/text_encoder/config.json",
    } <= checkpoint.files.keys()
    assert not [name for name in checkpoint.files if name.endswith("model.safetensors")]
    recipe = json.loads(cli("show", "1", "--format", "json").output)["recipe"]
    assert recipe["config"] == "builtin:tiny"


def test_a_single_file_changed_in_place_is_named_by_regenerate(cli: Cli, own_file: Path):
    from safetensors.numpy import load_file, save_file

    run(cli, "--model", str(own_file), "--config", "builtin:tiny")
    size = own_file.stat().st_size
    tensors = load_file(own_file)
    edited = {
        key: value * np.float32(1.5) if key.startswith("model.diffusion_model.") else value
        for key, value in tensors.items()
    }
    save_file(edited, own_file)
    assert own_file.stat().st_size == size

    result = cli("regenerate", "1")
    assert result.exit_code == 1
    assert "image 1: different" in result.output
    assert (
        "checkpoint files: changed since the original run: mine.safetensors (changed)"
        in result.output
    )


def test_a_changed_config_folder_is_named_by_verify(cli: Cli, own_file: Path, tmp_path: Path):
    config = Path(shutil.copytree(TINY, tmp_path / "config"))
    run(cli, "--model", str(own_file), "--config", str(config))
    sampler = config / "scheduler" / "scheduler_config.json"
    settings = json.loads(sampler.read_text(encoding="utf-8"))
    sampler.write_text(json.dumps(settings | {"beta_end": 0.02}), encoding="utf-8")

    result = cli("regenerate", "1")
    assert "config/scheduler/scheduler_config.json (changed)" in result.output


@pytest.mark.parametrize(
    ("model", "config", "field", "says"),
    [
        ("nope.safetensors", "builtin:tiny", "model", "no such file 'nope.safetensors'"),
        ("tiny.ckpt", "builtin:tiny", "model", "read as .safetensors only"),
        ("tiny.safetensors", None, "config", "set config to a diffusers pipeline folder"),
        ("tiny.safetensors", "empty", "config", "has no model_index.json"),
        ("tiny.safetensors", "builtin:shapes", "model", "does not fit config builtin:shapes"),
        ("tiny.safetensors", "builtin:tiny-ddpm", "model", "does not fit config builtin:tiny-ddpm"),
    ],
)
def test_a_single_file_that_cannot_run_is_one_line_exit_2_and_writes_nothing(
    cli: Cli, tiny_file: Path, model: str, config: str | None, field: str, says: str
):
    shutil.copy(tiny_file, cli.cwd / "tiny.safetensors")
    shutil.copy(tiny_file, cli.cwd / "tiny.ckpt")
    (cli.cwd / "empty").mkdir()
    flags = ["--model", model] + (["--config", config] if config else [])
    result = cli("run", *RECIPE, *flags)
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {field}: ") and result.output.count("\n") == 1
    assert says in result.output
    assert not (cli.cwd / "reprogrid.db").exists() and not cli.store.exists()


def test_a_revision_for_a_single_file_is_refused(cli: Cli, tiny_file: Path):
    flags = ["--model", str(tiny_file), "--config", "builtin:tiny", "--revision", "main"]
    result = cli("run", *RECIPE, *flags)
    assert result.exit_code == 2
    assert result.output.startswith("Error: revision: ") and result.output.count("\n") == 1


def test_a_config_for_a_folder_model_is_refused(cli: Cli):
    result = cli("run", *RECIPE, "--model", "builtin:tiny", "--config", "builtin:tiny")
    assert result.exit_code == 2
    assert result.output.startswith("Error: config: only a single-file model")
